"""Errors raised while reading or writing detector frames."""

from __future__ import annotations

import errno
import os


class FrameReadError(ValueError):
    """A frame file exists but cannot be read: the message names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def check_readable_file(path) -> str:
    """Return ``path`` as str, or raise an OSError subclass naming it (missing, a directory)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, "frame file not found", path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a frame file", path)
    return path
