"""EDF (ESRF data format) layout check, before fabio decodes the pixels.

fabio fills a data block that is shorter than its header promises with zeros (it logs
"Data stream is incomplete" and carries on), so a truncated or header-only EDF would
read as a frame of zeros.  This module reads the first image block's header (``{`` ...
``}`` then a newline; ``key = value ;`` entries, keys case-insensitive) and checks that
the bytes after it hold what Dim_1, Dim_2, DataType and Size declare.
"""

from __future__ import annotations

import math
import re

from ._bytes import check_frame_memory
from .errors import FrameReadError

_MAX_BLOCKS = 64
_HEADER_END = re.compile(rb"}\r?\n")  # as fabio ends a header block


def _parse_block(text: bytes) -> dict:
    fields = {}
    for entry in text.split(b";"):
        if b"=" in entry:
            key, value = entry.split(b"=", 1)
            fields[key.strip(b" \t\r\n\x00{").decode("ascii", "replace").upper()] = value.strip().decode(
                "ascii", "replace"
            )
    return fields


def _int(path, fields, key, default=None) -> int | None:
    text = fields.get(key)
    if text is None:
        return default
    try:
        value = int(text.split()[0])
    except (ValueError, IndexError):
        raise FrameReadError(path, f"EDF header {key}={text!r} is not an integer") from None
    if value < 0:
        raise FrameReadError(path, f"EDF header {key}={value} is negative")
    return value


def check_layout(path: str, raw: bytes) -> dict:
    """Shape, dtype and data offset of the first image block; FrameReadError when the
    bytes present do not hold it."""
    from fabio.edfimage import DATA_TYPES

    start = 0
    for _ in range(_MAX_BLOCKS):
        opening = raw.find(b"{", start)
        if opening < 0 or raw[start:opening].strip(b" \t\r\n\x00"):
            raise FrameReadError(
                path, "not an EDF file (no '{' header block)" if start == 0 else "EDF data is truncated"
            )
        end = _HEADER_END.search(raw, opening)
        if end is None:
            raise FrameReadError(path, "EDF header block is not closed by '}' and a newline (truncated header)")
        closing, data_start = end.start(), end.end()
        fields = _parse_block(raw[opening + 1 : closing])
        if "DIM_1" in fields:
            break
        # a general block without an image: skip its binary part, if any
        start = data_start + (_int(path, fields, "EDF_BINARYSIZE", 0) or 0)
    else:
        raise FrameReadError(path, f"no image block among the first {_MAX_BLOCKS} EDF header blocks")
    dims = []
    for index in range(1, 4):
        value = _int(path, fields, f"DIM_{index}")
        if value is not None:
            dims.append(value)
    if not dims or min(dims) < 1:
        raise FrameReadError(path, f"EDF header dimensions {dims} are not positive")
    type_name = fields.get("DATATYPE", "UnsignedShort").strip()
    types = {k.upper(): v for k, v in DATA_TYPES.items()}
    if type_name.upper() not in types:
        raise FrameReadError(path, f"unknown EDF DataType={type_name!r}")
    import numpy as np

    itemsize = np.dtype(types[type_name.upper()]).itemsize
    pixels = math.prod(dims)
    shape = "x".join(str(n) for n in dims)
    check_frame_memory(path, f"a {shape} {type_name} EDF frame", pixels * (2 * itemsize + 5))
    expected = pixels * itemsize
    available = len(raw) - data_start
    compression = fields.get("COMPRESSION", "NONE").strip().upper()
    declared = _int(path, fields, "SIZE", _int(path, fields, "EDF_BINARYSIZE"))
    if compression in ("", "NONE") or compression.startswith("NO"):
        if declared is not None and declared < expected:
            raise FrameReadError(
                path, f"EDF header Size={declared} is less than {shape} {type_name} pixels need ({expected} bytes)"
            )
        if available < expected:
            raise FrameReadError(
                path,
                f"truncated: EDF header promises {shape} {type_name} pixels ({expected} bytes), "
                f"the file has {max(0, available)} after its header",
            )
    elif declared is not None and available < declared:
        raise FrameReadError(
            path, f"truncated: EDF header promises {declared} compressed bytes, the file has {max(0, available)}"
        )
    return {"data_start": data_start, "dims": tuple(dims), "itemsize": itemsize}
