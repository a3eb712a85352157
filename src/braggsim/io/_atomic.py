"""Safe output files: a reader never sees a half-written file, and nothing the user
protects is replaced.

Rules, for every writer in braggsim:
- the data go to a temporary file in the target's directory, renamed over the target
  only once complete (``os.replace`` is atomic on one file system); on failure the
  temporary is removed and the target is untouched;
- an existing target keeps its permission bits; a new one gets 0666 less the umask, as
  ``open()`` would give it (``tempfile`` alone would leave 0600);
- a target the user made read-only (no write bit, or no write access) is refused, as
  nanoBragg's ``fopen`` refuses it, rather than replaced by a rename;
- a target that is one of the run's inputs (same file, through a symlink or a hard link
  too) is refused;
- a symlink target is followed: the file it points to is replaced, the link stays.

:func:`atomic_group` writes several files (``.bin`` + sidecar, ``-floatfile`` +
``-intfile``) completely before renaming any of them.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import uuid


class OutputPathError(ValueError):
    """An output path that cannot or must not be written; the message names it and why."""


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: read it the only other way there is
    os.umask(mask)
    return mask


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_output_path(path, *, inputs=()) -> str:
    """The real path ``path`` will be written at; OutputPathError if it must not be."""
    given = os.fspath(path)
    if not given:
        raise OutputPathError("output path is empty")
    real = os.path.realpath(given)
    for source in inputs:
        if source is not None and os.path.exists(os.fspath(source)) and _same_file(given, os.fspath(source)):
            raise OutputPathError(f"refusing to write {given!r}: it is the input {os.fspath(source)!r}")
    parent = os.path.dirname(real) or "."
    if not os.path.isdir(parent):
        raise OutputPathError(f"cannot write {given!r}: directory {os.path.dirname(given) or '.'!r} does not exist")
    if os.path.isdir(real):
        raise OutputPathError(f"cannot write {given!r}: it is a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write {given!r}: directory {parent!r} is not writable")
    if os.path.lexists(real):
        mode = os.stat(real).st_mode
        if not stat.S_ISREG(mode):
            raise OutputPathError(f"refusing to replace {given!r}: it is not a regular file")
        if not (mode & 0o222) or not os.access(real, os.W_OK):
            raise OutputPathError(
                f"refusing to replace read-only {given!r} (mode {stat.S_IMODE(mode):04o}); "
                "remove it or make it writable first"
            )
    return real


def _target_mode(real: str) -> int:
    try:
        return stat.S_IMODE(os.stat(real).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _temporary_path(real: str) -> str:
    directory, name = os.path.split(real)
    return os.path.join(directory, f".{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part")


@contextlib.contextmanager
def atomic_output(path, *, inputs=()):
    """Yield a binary file object; on success it replaces ``path`` (see the module rules),
    on failure nothing changes."""
    real = check_output_path(path, inputs=inputs)
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115  closed in the block below / by the generator
        "wb", dir=os.path.dirname(real), prefix="." + os.path.basename(real) + ".", suffix=".part", delete=False
    )
    try:
        with handle:
            yield handle
            handle.flush()
            os.fchmod(handle.fileno(), _target_mode(real))
            os.fsync(handle.fileno())
        check_output_path(path, inputs=inputs)  # still writable after the work
        os.replace(handle.name, real)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(handle.name)
        raise


@contextlib.contextmanager
def atomic_group(paths, *, inputs=()):
    """Yield ``{path: temporary path}``; the caller writes every temporary.  On success
    all are renamed into place together (each keeping its target's mode); on failure all
    temporaries are removed and no target changes.

    The renames are one after another, so a reader can still meet the first file new and
    the second old in between; pairs that must agree carry a checksum of each other (see
    :func:`braggsim.io.write_float`'s sidecar)."""
    given = [os.fspath(p) for p in paths]
    reals = [check_output_path(p, inputs=inputs) for p in given]
    if len(set(reals)) < len(reals):
        raise OutputPathError(f"two outputs name the same file: {given!r}")
    temporaries = {p: _temporary_path(r) for p, r in zip(given, reals, strict=True)}
    try:
        yield dict(temporaries)
        for p, r in zip(given, reals, strict=True):
            if not os.path.isfile(temporaries[p]):
                raise OutputPathError(f"nothing was written for {p!r}")
            check_output_path(p, inputs=inputs)
            os.chmod(temporaries[p], _target_mode(r))
        for p, r in zip(given, reals, strict=True):
            os.replace(temporaries[p], r)
    finally:
        for temporary in temporaries.values():
            with contextlib.suppress(OSError):
                os.unlink(temporary)
