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
        # mkstemp makes the file 0600; give the result the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(handle.name, 0o666 & ~umask)
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(handle.name)
        raise
