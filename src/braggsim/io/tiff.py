"""TIFF frames through tifffile, with the layout checked against the bytes present.

tifffile (the TIFF reader napari and scikit-image use) parses the image directory
without touching the pixels, so the declared shape, sample type and strip table can be
checked against the file before anything is allocated.  fabio's TIFF path (its own
TiffIO, then PIL) reads a file whose ImageLength or strip table is off by one byte as a
frame of another shape, zero-filled or read from the directory's bytes; here such a file
is an error naming what does not add up.
"""

from __future__ import annotations

import io
import math
import struct

import numpy as np

from ._bytes import check_frame_memory
from .errors import FrameReadError

MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_UNCOMPRESSED = 1


def looks_like_tiff(raw: bytes) -> bool:
    return raw[:4] in MAGICS


def read_tiff(path: str, raw: bytes):
    """(pixels (slow, fast) as stored, header dict) of the first image in ``raw``."""
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(raw)) as tif:
            if len(tif.pages) == 0:
                raise FrameReadError(path, "TIFF holds no image")
            page = tif.pages.first
            _check_layout(path, raw, tif, page)
            data = page.asarray()
            header = {tag.name: _short(tag.value) for tag in page.tags.values()}
    except FrameReadError:
        raise
    except MemoryError:
        raise FrameReadError(path, "ran out of memory decoding the TIFF") from None
    except Exception as exc:  # tifffile raises many kinds; all mean "this file is bad"  # noqa: BLE001  any failure becomes a message, never a traceback
        raise FrameReadError(path, f"cannot decode it as TIFF ({type(exc).__name__}: {exc})") from None
    data = np.squeeze(data)
    if data.ndim != 2:
        raise FrameReadError(path, f"expected a 2-D image, the TIFF holds shape {data.shape}")
    return data, header


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _check_layout(path: str, raw: bytes, tif, page) -> None:
    shape = tuple(int(n) for n in page.shape)
    if len([n for n in shape if n != 1]) > 2 or len(shape) < 2:
        raise FrameReadError(path, f"TIFF image has shape {shape}, not a 2-D frame")
    dtype = page.dtype
    if dtype is None or np.dtype(dtype).kind not in "uif" or page.bitspersample % 8:
        raise FrameReadError(
            path, f"TIFF sample type ({page.bitspersample} bits, format {page.sampleformat!r}) is not a pixel number"
        )
    pixels = math.prod(shape)
    itemsize = np.dtype(dtype).itemsize
    check_frame_memory(path, f"a {'x'.join(map(str, shape))} {np.dtype(dtype).name} TIFF", pixels * (2 * itemsize + 5))
    offsets, counts = tuple(page.dataoffsets), tuple(page.databytecounts)
    if not offsets or len(offsets) != len(counts):
        raise FrameReadError(path, "TIFF image has no strip or tile table")
    header_end = 16 if tif.tiff.version == 43 else 8
    directory = _directory_span(raw, tif, page.offset)
    for offset, count in zip(offsets, counts, strict=True):
        if count == 0 or offset < header_end or offset + count > len(raw):
            raise FrameReadError(
                path,
                f"truncated or damaged TIFF: pixel data at bytes {offset}..{offset + count} of a {len(raw)}-byte file",
            )
        if offset < directory[1] and offset + count > directory[0]:
            raise FrameReadError(path, f"damaged TIFF: pixel data at byte {offset} overlaps the image directory")
    expected = pixels * itemsize
    if int(page.compression) == _UNCOMPRESSED and sum(counts) != expected:
        raise FrameReadError(
            path,
            f"TIFF header promises {'x'.join(map(str, shape))} {np.dtype(dtype).name} pixels ({expected} bytes), "
            f"its strips hold {sum(counts)}",
        )


def _directory_span(raw: bytes, tif, offset: int) -> tuple:
    """[start, end) of the image file directory at ``offset``."""
    fmt = tif.tiff
    try:
        (count,) = struct.unpack(fmt.tagnoformat, raw[offset : offset + fmt.tagnosize])
    except struct.error:
        return (offset, offset)
    return (offset, offset + fmt.tagnosize + count * fmt.tagsize + fmt.offsetsize)
