"""Writers for nanoBragg's output files: ``-intfile`` (SMV) and ``-floatfile`` (raw float32).

Both write to a temporary file in the target directory and rename it into place, so a
crash never leaves a half-written frame behind; they stream through the image in row
blocks, so writing needs no whole-frame copy (see :mod:`braggsim.io._atomic` for the
rules on modes, read-only targets and inputs).
"""

from __future__ import annotations

import json
import os
import zlib

import numpy as np

from ._atomic import atomic_group, atomic_output
from .read import sidecar_path

SMV_HEADER_BYTES = 512
INT_FILE_TARGET_MAX = 55000.0  # nanoBragg scales -intfile so the brightest pixel reads 55000
BLOCK_PIXELS = 1 << 22


def _as_image(image) -> np.ndarray:
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"image must be a non-empty (slow, fast) array, got shape {image.shape}")
    return image


def _number(value) -> str:
    """Shortest text that reads back as the same float (lossless header geometry)."""
    value = float(value)
    return repr(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _derived(value) -> str:
    """Values other programs derive from the geometry: 10 significant digits keep the
    header within 512 bytes; the exact geometry is in the primary keys."""
    return f"{float(value):.10g}"


def smv_geometry(detector, beam) -> dict:
    """The header's geometry keys for ``detector`` (any convention) and ``beam``."""
    from .. import spots

    pixel = float(detector.pixel_size_mm)
    slow_px, fast_px = spots.beam_center_px(detector)
    f_beam, s_beam = (fast_px + 0.5) * pixel, (slow_px + 0.5) * pixel
    frame = spots.frame_arrays(detector)
    close = float(frame["pix0_mm"] @ frame["normal"])
    foot = close * frame["normal"] - frame["pix0_mm"]
    f_close, s_close = float(foot @ frame["fast"]), float(foot @ frame["slow"])
    x_beam, y_beam = detector.beam_center_or_default_mm()
    # for MOSFLM itself write the given numbers, not a recomputation, so they read back exactly
    mosflm = (x_beam, y_beam) if detector.convention == "mosflm" else (s_beam - 0.5 * pixel, f_beam - 0.5 * pixel)
    return {
        "SIZE1": str(detector.fpixels),
        "SIZE2": str(detector.spixels),
        "PIXEL_SIZE": _number(pixel),
        "DISTANCE": _number(detector.distance_mm),
        "WAVELENGTH": _number(beam.wavelength_A),
        "BEAM_CENTER_X": _number(x_beam),
        "BEAM_CENTER_Y": _number(y_beam),
        "ADXV_CENTER_X": _derived(f_beam),
        "ADXV_CENTER_Y": _derived(detector.spixels * pixel - s_beam),
        "MOSFLM_CENTER_X": _number(mosflm[0]),
        "MOSFLM_CENTER_Y": _number(mosflm[1]),
        "DENZO_X_BEAM": _derived(s_beam),
        "DENZO_Y_BEAM": _derived(f_beam),
        "XDS_ORGX": _derived(f_close / pixel + 0.5),
        "XDS_ORGY": _derived(s_close / pixel + 0.5),
        "CLOSE_DISTANCE": _derived(close),
        "TWOTHETA": _number(detector.twotheta_deg),
        "DETECTOR_CONVENTION": detector.convention,
    }


def smv_header(fields: dict, header_bytes: int = SMV_HEADER_BYTES) -> bytes:
    """``{`` KEY=value; lines ``}`` + form feed, padded with spaces to a multiple of 512."""
    body = "".join(f"{key}={value};\n" for key, value in fields.items())
    for key, value in fields.items():
        if any(c in f"{key}{value}" for c in ";\n{}=\f") and key:
            raise ValueError(f"SMV header entry {key}={value!r} contains a reserved character")
    size = header_bytes
    while True:
        text = ("{\n" + f"HEADER_BYTES={size};\n" + body + "}\f").encode("ascii")
        if len(text) <= size:
            return text + b" " * (size - len(text))
        size += SMV_HEADER_BYTES


def _row_blocks(image: np.ndarray):
    """Row slices of about BLOCK_PIXELS pixels: writers and statistics stream through a
    frame instead of making whole-frame float64 copies (a 16384^2 frame is 1 GiB)."""
    rows = max(1, BLOCK_PIXELS // max(1, image.shape[1]))
    for start in range(0, image.shape[0], rows):
        yield image[start : start + rows]


def intfile_scale(image) -> float:
    """nanoBragg's -intfile scale: 55000 / the brightest finite pixel (1 for a dark image)."""
    peak = 0.0
    for block in _row_blocks(_as_image(image)):
        data = np.asarray(block, dtype=np.float64)
        finite = data[np.isfinite(data)]
        if finite.size:
            peak = max(peak, float(finite.max()))
    return INT_FILE_TARGET_MAX / peak if peak > 0 else 1.0


def write_smv(
    path,
    image,
    *,
    detector=None,
    beam=None,
    scale: float | None = None,
    header_extra: dict | None = None,
    adc_offset: float = 0.0,
) -> float:
    """Write ``image`` (slow, fast) as an unsigned-short SMV file, as nanoBragg's ``-intfile``.

    Pixels are floor(image * scale + adc_offset + 0.5) clipped to 0..65535 (non-finite
    pixels as 0), scale = 55000 / max(image) unless given (nanoBragg's -intfile adds its
    -adc offset, default 40).  The header carries the full geometry of ``detector`` (a
    braggsim.Detector; None = nanoBragg's defaults for the image's shape) and ``beam``
    (None = 1 A), PHI/OSC_START/OSC_RANGE = 0 unless ``header_extra`` sets them.  Written
    atomically (see :mod:`braggsim.io._atomic`); a read-only target is refused.  Returns
    the scale used.
    """
    from .._validate import revalidate
    from ..beam import Beam
    from ..detector import Detector

    data = _as_image(image)
    spixels, fpixels = data.shape
    detector = detector if detector is not None else Detector(fpixels=fpixels, spixels=spixels)
    beam = beam if beam is not None else Beam()
    revalidate(detector, beam)
    if detector.shape != data.shape:
        raise ValueError(f"image shape {data.shape} does not match the detector's (spixels, fpixels) {detector.shape}")
    if scale is None:
        scale = intfile_scale(data)
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    if not np.isfinite(adc_offset):
        raise ValueError(f"adc_offset must be a finite number, got {adc_offset!r}")
    fields = {"DIM": "2", "BYTE_ORDER": "little_endian", "TYPE": "unsigned_short"}
    fields.update(smv_geometry(detector, beam))
    fields.update({"PHI": "0", "OSC_START": "0", "OSC_RANGE": "0", "DETECTOR_SN": "000", "BEAMLINE": "fake"})
    for key, value in (header_extra or {}).items():
        key = str(key).upper()
        if key in ("HEADER_BYTES", "DIM", "BYTE_ORDER", "TYPE", "SIZE1", "SIZE2"):
            raise ValueError(f"header_extra may not set {key}: it describes the pixel layout")
        fields[key] = value if isinstance(value, str) else _number(value)
    header = smv_header(fields)
    with atomic_output(path) as handle:
        handle.write(header)
        for block in _row_blocks(data):
            values = np.nan_to_num(np.asarray(block, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
            handle.write(np.clip(np.floor(values * scale + adc_offset + 0.5), 0, 65535).astype("<u2").tobytes())
    return float(scale)


def write_float(path, image, *, sidecar: bool = False, detector=None, beam=None) -> None:
    """Write ``image`` (slow, fast) as raw float32 little-endian, slow axis first (nanoBragg's
    ``-floatfile``).  ``sidecar=True`` also writes NAME.json with "shape_slow_fast", the
    .bin's size and CRC-32 and, when given, the geometry, so :func:`read_frame` can read it
    back alone.  The two files are written completely before either is renamed, and a
    reader refuses a .bin whose CRC-32 differs from its sidecar's, so a pair caught
    between the renames (or mixed from two runs) is never read as one frame."""
    data = _as_image(image)
    targets = [os.fspath(path)] + ([sidecar_path(os.fspath(path))] if sidecar else [])
    with atomic_group(targets) as temporary:
        crc = 0
        with open(temporary[targets[0]], "wb") as handle:
            for block in _row_blocks(data):
                raw = np.ascontiguousarray(block, dtype="<f4")
                crc = zlib.crc32(raw.data, crc)
                handle.write(raw.data)
            handle.flush()
            os.fsync(handle.fileno())
        if not sidecar:
            return
        info: dict = {
            "shape_slow_fast": list(data.shape),
            "dtype": "float32 little-endian, row = slow axis",
            "data_bytes": int(data.size) * 4,
            "data_crc32": crc,
        }
        if detector is not None:
            from ..resolution import mosflm_beam_center_mm

            info.update(
                pixel_size_mm=float(detector.pixel_size_mm),
                distance_mm=float(detector.distance_mm),
                beam_center_mm=list(mosflm_beam_center_mm(detector)),
            )
        if beam is not None:
            info["wavelength_A"] = float(beam.wavelength_A)
        with open(temporary[targets[1]], "w", encoding="utf-8") as handle:
            json.dump(info, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
