"""Atomic file writes: a reader never sees a half-written file."""

from __future__ import annotations

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_output(path):
    """Yield a binary file object; on success it replaces ``path``, on failure nothing changes.

    The temporary file lives in the target's directory so ``os.replace`` is a rename."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115  closed in the block below / by the generator
        "wb", dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".part", delete=False
    )
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(handle.name)
        raise


@contextlib.contextmanager
def atomic_paths(*paths):
    """Yield one temporary path per target in ``paths`` for writers that take a path.

    When the block succeeds, every temporary file replaces its target (renamed one after
    the other, only once all are complete); on failure the targets stay as they were and
    the temporary files are removed."""
    finals = [os.fspath(p) for p in paths]
    temporaries = []
    try:
        for final in finals:
            directory = os.path.dirname(os.path.abspath(final))
            fd, temporary = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(final) + ".", suffix=".part")
            os.close(fd)
            temporaries.append(temporary)
        yield list(temporaries)
        for temporary, final in zip(temporaries, finals, strict=True):
            os.replace(temporary, final)
    finally:
        for temporary in temporaries:
            with contextlib.suppress(OSError):
                os.unlink(temporary)


def check_output_paths(outputs, inputs=()) -> None:
    """Refuse, before any work, outputs that cannot or must not be written: ValueError.

    An output must name a file (not a folder) in an existing folder this process may
    write to, must not be a read-only file (the user protected it), must not be one of
    ``inputs`` (never write over an input), and no two outputs may be the same file."""
    seen: dict = {}
    input_keys = {_file_key(p): os.fspath(p) for p in inputs if p is not None}
    for output in outputs:
        path = os.fspath(output)
        key = _file_key(path)
        if key in seen:
            raise ValueError(f"{seen[key]!r} and {path!r} name the same output file")
        seen[key] = path
        if key in input_keys:
            raise ValueError(
                f"cannot write {path!r}: it is the input {input_keys[key]!r}; braggsim never writes over an input"
            )
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise ValueError(f"cannot write {path!r}: it is a folder")
        if not os.path.isdir(folder):
            raise ValueError(f"cannot write {path!r}: folder {folder!r} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(f"cannot write {path!r}: folder {folder!r} is not writable")
        if os.path.exists(path) and (not os.access(path, os.W_OK) or not os.stat(path).st_mode & 0o222):
            raise ValueError(f"cannot write {path!r}: the file is read-only; braggsim leaves it alone")


def _file_key(path) -> tuple:
    """What identifies a file: (device, inode) when it exists, else its resolved path."""
    path = os.fspath(path)
    try:
        info = os.stat(path)
    except OSError:
        return ("path", os.path.realpath(path))
    return ("inode", info.st_dev, info.st_ino)
