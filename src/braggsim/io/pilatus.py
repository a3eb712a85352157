"""Geometry from CBF (Pilatus miniCBF header lines) and EDF (pyFAI/ESRF keys) headers.

Pilatus ``Beam_xy (x, y) pixels`` counts from the first pixel's outer edge along fast (x)
and slow (y), as dxtbx reads it: Fbeam = x * pixel, Sbeam = y * pixel, so MOSFLM's
Xbeam = (y - 0.5) * pixel and Ybeam = (x - 0.5) * pixel.  EDF ``Center_1/Center_2`` (fast,
slow, pixels) are read the same way.
"""

from __future__ import annotations

import math
import re

from .errors import FrameReadError

_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_LINES = {
    "pixel": re.compile(r"Pixel_size\s+" + _NUMBER + r"\s*m"),
    "distance": re.compile(r"Detector_distance\s+" + _NUMBER + r"\s*m"),
    "wavelength": re.compile(r"Wavelength\s+" + _NUMBER + r"\s*A"),
    "beam": re.compile(r"Beam_xy\s*\(\s*" + _NUMBER + r"\s*,\s*" + _NUMBER + r"\s*\)\s*pixels"),
    "cutoff": re.compile(r"Count_cutoff\s+" + _NUMBER),
}


def _finite(path, what, text) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise FrameReadError(path, f"header {what} {text!r} is not finite")
    return value


def _positive(path, what, value):
    if value is not None and not value > 0:
        raise FrameReadError(path, f"header {what} {value!r} must be positive")
    return value


def center_px_to_mosflm_mm(x_fast_px: float, y_slow_px: float, pixel_mm: float) -> tuple:
    return ((y_slow_px - 0.5) * pixel_mm, (x_fast_px - 0.5) * pixel_mm)


def cbf_geometry(path: str, header: dict) -> dict:
    text = "\n".join(str(v) for v in header.values())
    found = {name: pattern.search(text) for name, pattern in _LINES.items()}
    pixel = (
        _positive(path, "Pixel_size", _finite(path, "Pixel_size", found["pixel"].group(1)) * 1000.0)
        if found["pixel"]
        else None
    )
    distance = (
        _positive(path, "Detector_distance", _finite(path, "Detector_distance", found["distance"].group(1)) * 1000.0)
        if found["distance"]
        else None
    )
    wavelength = (
        _positive(path, "Wavelength", _finite(path, "Wavelength", found["wavelength"].group(1)))
        if found["wavelength"]
        else None
    )
    center = None
    if found["beam"] and pixel is not None:
        x = _finite(path, "Beam_xy", found["beam"].group(1))
        y = _finite(path, "Beam_xy", found["beam"].group(2))
        center = center_px_to_mosflm_mm(x, y, pixel)
    saturation = _finite(path, "Count_cutoff", found["cutoff"].group(1)) if found["cutoff"] else None
    return {
        "distance_mm": distance,
        "pixel_size_mm": pixel,
        "wavelength_A": wavelength,
        "beam_center_mm": center,
        "saturation": saturation,
    }


def edf_geometry(path: str, header: dict) -> dict:
    def number(key, scale=1.0):
        if key not in header:
            return None
        try:
            return _finite(path, key, str(header[key]).split()[0]) * scale
        except (ValueError, IndexError):
            raise FrameReadError(path, f"header {key}={header[key]!r} is not a number") from None

    pixel = _positive(path, "PSize_1", number("PSize_1", 1000.0))
    distance = _positive(path, "SampleDistance", number("SampleDistance", 1000.0))
    wavelength = _positive(path, "WaveLength", number("WaveLength", 1e10))
    center = None
    x, y = number("Center_1"), number("Center_2")
    if x is not None and y is not None and pixel is not None:
        center = center_px_to_mosflm_mm(x, y, pixel)
    return {
        "distance_mm": distance,
        "pixel_size_mm": pixel,
        "wavelength_A": wavelength,
        "beam_center_mm": center,
        "saturation": number("Saturation"),
    }
