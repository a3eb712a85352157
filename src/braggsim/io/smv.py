"""SMV (ADSC and nanoBragg ``-intfile``) frames: header checks and geometry.

fabio decodes the pixels and the header; this module refuses files whose header does not
account for their size before any pixels are allocated, and maps the header onto braggsim's
MOSFLM beam centre.

Beam centre, in order of preference:
1. ``MOSFLM_CENTER_X/Y`` (written by nanoBragg and braggsim): already MOSFLM Xbeam/Ybeam.
2. ``BEAM_CENTER_X/Y`` (ADSC): the ADXV convention, in mm: X along the fast axis from the
   first pixel's outer edge, Y along the slow axis measured from the far (last-row) edge.
   So Fbeam = X and Sbeam = SIZE2 * pixel - Y, and MOSFLM's Xbeam = Sbeam - pixel/2,
   Ybeam = Fbeam - pixel/2.  The real ADSC Quantum-4 frame in tests/data confirms this:
   its own DENZO_XBEAM/YBEAM (Sbeam, Fbeam) agree, and the solvent ring's fitted centre lies
   0.5 mm from it (the transposed reading, X along slow, lies 4.8 mm away).
"""

from __future__ import annotations

import io
import math
import re

import numpy as np

from ._bytes import check_frame_memory
from .errors import FrameReadError

BYTES_PER_TYPE = {
    "unsigned_short": (2, "u2"),
    "signed_short": (2, "i2"),
    "short": (2, "i2"),
    "unsigned_int": (4, "u4"),
    "unsigned_long": (4, "u4"),
    "signed_int": (4, "i4"),
    "signed_long": (4, "i4"),
    "int": (4, "i4"),
    "long": (4, "i4"),
    "float": (4, "f4"),
    "float_ieee": (4, "f4"),
    "double": (8, "f8"),
}
BYTE_ORDERS = {"little_endian": "<", "big_endian": ">"}
MAX_SIDE = 65536
_KEY_VALUE = re.compile(rb"([A-Za-z0-9_]+)\s*=\s*([^;\n]*);")


def header_fields(header: bytes) -> dict:
    """The ``KEY=value;`` pairs of (part of) an SMV header: {KEY upper-cased: value text}."""
    return {
        k.decode("ascii", "replace").upper(): v.strip().decode("ascii", "replace")
        for k, v in _KEY_VALUE.findall(header)
    }


def looks_like_smv(raw: bytes) -> bool:
    return raw[:1] == b"{" and b"HEADER_BYTES" in raw[:128]


def check_layout(path: str, raw: bytes) -> dict:
    """The header's HEADER_BYTES, SIZE1, SIZE2, TYPE and BYTE_ORDER, checked against the
    file's length; raises FrameReadError naming what is wrong."""
    if not raw:
        raise FrameReadError(path, "empty file")
    if not looks_like_smv(raw):
        raise FrameReadError(path, "not an SMV file (no '{ HEADER_BYTES=' header)")
    fields = header_fields(raw[:512])
    header_bytes = _int(path, fields, "HEADER_BYTES", 1, len(raw))
    if header_bytes > 512:  # long headers: read the remaining keys too
        fields.update(header_fields(raw[512:header_bytes]))
    if b"}" not in raw[:header_bytes]:
        raise FrameReadError(path, f"header is not closed by '}}' within HEADER_BYTES={header_bytes}")
    fast = _int(path, fields, "SIZE1", 1, MAX_SIDE)
    slow = _int(path, fields, "SIZE2", 1, MAX_SIDE)
    kind = fields.get("TYPE", "unsigned_short").lower()
    if kind not in BYTES_PER_TYPE:
        raise FrameReadError(path, f"unknown pixel TYPE={fields.get('TYPE')!r}")
    order = fields.get("BYTE_ORDER", "").lower()
    if order not in BYTE_ORDERS:
        raise FrameReadError(path, f"BYTE_ORDER must be little_endian or big_endian, got {fields.get('BYTE_ORDER')!r}")
    size, code = BYTES_PER_TYPE[kind]
    check_frame_memory(path, f"a {fast}x{slow} {kind} SMV frame", fast * slow * (2 * size + 5))
    expected = header_bytes + fast * slow * size
    if len(raw) < expected:
        raise FrameReadError(
            path, f"truncated: header promises {fast}x{slow} {kind} pixels ({expected} bytes), file has {len(raw)}"
        )
    if len(raw) > expected:
        raise FrameReadError(
            path,
            f"header does not match the file size: {fast}x{slow} {kind} pixels after a "
            f"{header_bytes}-byte header make {expected} bytes, file has {len(raw)}",
        )
    return {"header_bytes": header_bytes, "shape": (slow, fast), "dtype": BYTE_ORDERS[order] + code, "order": order}


def _int(path, fields, key, low, high) -> int:
    text = fields.get(key)
    if text is None:
        raise FrameReadError(path, f"header has no {key}")
    try:
        value = int(text)
    except ValueError:
        raise FrameReadError(path, f"header {key}={text!r} is not an integer") from None
    if not low <= value <= high:
        raise FrameReadError(path, f"header {key}={value} is outside [{low}, {high}]")
    return value


def decode(path: str, raw: bytes, layout: dict):
    """(pixels as stored, fabio's header dict)."""
    import fabio

    try:
        image = fabio.open(io.BytesIO(raw))
        data = np.asarray(image.data)
        header = {str(k): str(v) for k, v in image.header.items()}
    except Exception as exc:  # fabio raises many kinds; all mean "this file is bad"  # noqa: BLE001  any failure becomes a message, never a traceback
        raise FrameReadError(path, f"fabio cannot decode it as SMV ({type(exc).__name__}: {exc})") from None
    if data.shape != layout["shape"]:
        raise FrameReadError(path, f"decoded shape {data.shape} differs from the header's {layout['shape']}")
    check_byte_order(path, raw, layout, data)
    return data, header


def check_byte_order(path: str, raw: bytes, layout: dict, data: np.ndarray) -> None:
    """Raise if the pixels are far smoother read with the other byte order: the header's
    BYTE_ORDER is then wrong.  Images vary smoothly at the scale of the low byte;
    swapped bytes turn that into noise 256 times larger."""
    if data.dtype.kind not in "ui" or data.dtype.itemsize < 2 or data.size < 16:
        return
    declared = _roughness(data)
    other = np.frombuffer(raw, dtype=np.dtype(layout["dtype"]).newbyteorder(), offset=layout["header_bytes"])
    swapped = _roughness(other.reshape(layout["shape"]))
    if swapped * 8 < declared:
        wrong = layout["order"]
        right = "big_endian" if wrong == "little_endian" else "little_endian"
        raise FrameReadError(path, f"wrong byte order: header says BYTE_ORDER={wrong} but the pixels read as {right}")


def _roughness(image: np.ndarray) -> float:
    sample = image[:: max(1, image.shape[0] // 256), :].astype(np.float64)
    return float(np.mean(np.abs(np.diff(sample, axis=1)))) if sample.shape[1] > 1 else 0.0


def header_float(path: str, header: dict, key: str):
    """header[key] as a finite float, None if absent; FrameReadError if unreadable."""
    text = header.get(key)
    if text is None or str(text).strip() == "":
        return None
    try:
        value = float(str(text).strip())
    except ValueError:
        raise FrameReadError(path, f"header {key}={text!r} is not a number") from None
    if not math.isfinite(value):
        raise FrameReadError(path, f"header {key}={text!r} is not finite")
    return value


def positive(path: str, key: str, value):
    if value is not None and not value > 0:
        raise FrameReadError(path, f"header {key}={value!r} must be positive")
    return value


def geometry(path: str, header: dict, shape: tuple) -> dict:
    """distance_mm, pixel_size_mm, wavelength_A, beam_center_mm (MOSFLM), saturation."""
    pixel = positive(path, "PIXEL_SIZE", header_float(path, header, "PIXEL_SIZE"))
    distance = positive(path, "DISTANCE", header_float(path, header, "DISTANCE"))
    wavelength = positive(path, "WAVELENGTH", header_float(path, header, "WAVELENGTH"))
    center = None
    mx, my = header_float(path, header, "MOSFLM_CENTER_X"), header_float(path, header, "MOSFLM_CENTER_Y")
    bx, by = header_float(path, header, "BEAM_CENTER_X"), header_float(path, header, "BEAM_CENTER_Y")
    if mx is not None and my is not None:
        center = (mx, my)
    elif bx is not None and by is not None and pixel is not None:
        center = adsc_to_mosflm_mm(bx, by, shape[0], pixel)
    saturation = None
    # duplicates: the geometry dict below is the one every header reader returns (pilatus.py too):
    # the fields of Frame, named once there
    for key in ("SATURATED_VALUE", "CCD_IMAGE_SATURATION", "SATURATION"):
        saturation = header_float(path, header, key)
        if saturation is not None:
            break
    return {
        "distance_mm": distance,
        "pixel_size_mm": pixel,
        "wavelength_A": wavelength,
        "beam_center_mm": center,
        "saturation": saturation,
    }


def adsc_to_mosflm_mm(beam_center_x: float, beam_center_y: float, spixels: int, pixel_mm: float) -> tuple:
    """ADSC BEAM_CENTER_X/Y (ADXV convention, mm) -> MOSFLM (Xbeam, Ybeam), mm."""
    f_beam = beam_center_x
    s_beam = spixels * pixel_mm - beam_center_y
    return (s_beam - 0.5 * pixel_mm, f_beam - 0.5 * pixel_mm)


def mosflm_to_adsc_mm(x_beam: float, y_beam: float, spixels: int, pixel_mm: float) -> tuple:
    """Inverse of :func:`adsc_to_mosflm_mm`."""
    s_beam = x_beam + 0.5 * pixel_mm
    f_beam = y_beam + 0.5 * pixel_mm
    return (f_beam, spixels * pixel_mm - s_beam)
