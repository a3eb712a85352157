"""Read a file's bytes, undoing .gz/.bz2/.xz compression, with memory proportional to the
frame: a plain file's size is checked against the budget before one byte is read, and a
compressed one is unpacked in 1 MiB pieces up to the limit (no decompression bombs)."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import zlib

from .._resources import ResourceLimitError, check_memory, format_bytes
from .errors import FrameReadError

MAX_BYTES = 4 << 30  # a frame larger than 4 GiB unpacked is refused rather than read
CHUNK_BYTES = 1 << 20

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


def check_frame_memory(path: str, what: str, needed_bytes: float) -> None:
    """FrameReadError naming the file when reading it needs more than the memory budget."""
    try:
        check_memory(what, needed_bytes)
    except ResourceLimitError as exc:
        raise FrameReadError(path, str(exc)) from None


def read_bytes(path: str, limit: int = MAX_BYTES) -> bytes:
    """The file's (decompressed) bytes; FrameReadError if it is corrupt or too large.

    Memory: the file's size for a plain file (checked against ``limit`` and the memory
    budget first); for a compressed one, at most ``limit`` plus one 1 MiB piece, twice
    over while the pieces are joined."""
    suffix = compression_suffix(path)
    try:
        if not suffix:
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size > limit:
                    raise FrameReadError(
                        path, f"{format_bytes(size)} is more than the {format_bytes(limit)} a frame may have"
                    )
                check_frame_memory(path, f"reading {path}", size)
                raw = handle.read(size + 1)  # +1: a file that grew while being read is noticed
            if len(raw) != size:
                raise FrameReadError(path, f"changed size while being read ({size} then {len(raw)} bytes)")
            return raw
        pieces, total = [], 0
        with _OPENERS[suffix](path, "rb") as handle:
            while True:
                piece = handle.read(CHUNK_BYTES)
                if not piece:
                    break
                total += len(piece)
                if total > limit:
                    raise FrameReadError(path, f"more than {format_bytes(limit)} unpacked; refusing to read it")
                pieces.append(piece)
    except (EOFError, OSError, zlib.error, lzma.LZMAError, ValueError) as exc:
        if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError, FrameReadError)):
            raise
        raise FrameReadError(path, f"cannot decompress or read it ({exc})") from None
    except MemoryError:
        raise FrameReadError(path, "ran out of memory while unpacking it") from None
    check_frame_memory(path, f"unpacking {path}", total)
    return b"".join(pieces)
