"""Read a file's bytes, undoing .gz/.bz2 compression, with a size cap (no decompression bombs)."""

from __future__ import annotations

import bz2
import gzip
import lzma
import zlib

from .errors import FrameReadError

MAX_BYTES = 4 << 30  # a frame larger than 4 GiB unpacked is refused rather than read

_OPENERS: dict = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def compression_suffix(path: str) -> str:
    lower = path.lower()
    for suffix in _OPENERS:
        if lower.endswith(suffix):
            return suffix
    return ""


def strip_compression(path: str) -> str:
    suffix = compression_suffix(path)
    return path[: -len(suffix)] if suffix else path


def read_bytes(path: str, limit: int = MAX_BYTES) -> bytes:
    """The file's (decompressed) bytes; FrameReadError if it is corrupt or too large."""
    opener = _OPENERS.get(compression_suffix(path), open)
    try:
        with opener(path, "rb") as handle:
            raw = handle.read(limit + 1)
    except (EOFError, OSError, zlib.error, lzma.LZMAError, ValueError) as exc:
        if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)):
            raise
        raise FrameReadError(path, f"cannot decompress or read it ({exc})") from None
    if len(raw) > limit:
        raise FrameReadError(path, f"more than {limit} bytes unpacked; refusing to read it")
    return raw
