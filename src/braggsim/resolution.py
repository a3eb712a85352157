"""Resolution (d-spacing) over the detector, and resolution rings, from braggsim geometry.

Every function takes the geometry as a ``braggsim.Detector``, a dict of Detector keyword
arguments, a frame's layer metadata (``{"braggsim_frame": ...}``) or anything with
``detector_kwargs()`` / ``beam_kwargs()`` (a :class:`braggsim.io.Frame`).  The beam is a
``braggsim.Beam``, a wavelength in Angstrom, or None to take it from the frame.

Pixel coordinates are (slow, fast) with pixel centres at integers, as in braggsim.spots
and napari.  All geometry goes through ``braggsim.detector.detector_frame``, so every
convention, pivot and detector rotation is honoured.
"""

from __future__ import annotations

import math
from typing import Union

import numpy as np

from . import spots
from .beam import Beam
from .spots import as_beam, as_detector

__all__ = [
    "as_beam",
    "as_detector",
    "d_spacing_A",
    "mosflm_beam_center_mm",
    "resolution_map",
    "ring_points",
    "ring_radius_px",
]


def mosflm_beam_center_mm(geometry) -> tuple:
    """MOSFLM (Xbeam, Ybeam) in mm for any convention: Xbeam = slow pixel coordinate x pixel
    size, Ybeam = fast pixel coordinate x pixel size (from the first pixel's centre)."""
    detector = as_detector(geometry)
    if detector.convention == "mosflm":  # exact: no round trip through the geometry
        return tuple(float(x) for x in (detector.beam_center_or_default_mm()))
    slow, fast = spots.beam_center_px(detector)
    pixel = float(detector.pixel_size_mm)
    return (float(slow) * pixel, float(fast) * pixel)


def resolution_map(geometry, beam: Union[Beam, float, None] = None) -> np.ndarray:
    """d-spacing in Angstrom at every pixel centre, (spixels, fpixels) float64; inf where
    the direct beam hits."""
    detector = as_detector(geometry)
    wavelength = float(as_beam(beam, geometry).wavelength_A)
    frame = spots.frame_arrays(detector)
    pixel = float(detector.pixel_size_mm)
    along_s = (np.arange(detector.spixels) + 0.5) * pixel  # (S,)
    along_f = (np.arange(detector.fpixels) + 0.5) * pixel  # (F,)
    pix0, slow, fast, incident = frame["pix0_mm"], frame["slow"], frame["fast"], frame["beam"]
    # |p|^2 and p.beam of p = pix0 + s*slow + f*fast, without a (S, F, 3) array
    norm_sq = (
        pix0 @ pix0
        + (along_s**2 + 2 * along_s * (pix0 @ slow))[:, None]
        + (along_f**2 + 2 * along_f * (pix0 @ fast))[None, :]
        + 2 * (slow @ fast) * along_s[:, None] * along_f[None, :]
    )
    projection = (pix0 @ incident) + (along_s * (slow @ incident))[:, None] + (along_f * (fast @ incident))[None, :]
    cos2theta = np.clip(projection / np.sqrt(norm_sq), -1.0, 1.0)
    sin_theta = np.sqrt((1.0 - cos2theta) / 2.0)
    with np.errstate(divide="ignore"):
        return wavelength / (2.0 * sin_theta)


def d_spacing_A(slow, fast, geometry, beam: Union[Beam, float, None] = None) -> np.ndarray:
    """d-spacing (Angstrom) at (slow, fast) pixel coordinates (arrays broadcast together)."""
    slow, fast = np.broadcast_arrays(np.asarray(slow, dtype=float), np.asarray(fast, dtype=float))
    px = np.stack([slow, fast], axis=-1)
    return spots.resolution_at_px(as_detector(geometry), as_beam(beam, geometry), px)


def ring_points(d_A: float, geometry, beam: Union[Beam, float, None] = None, n_points: int = 180) -> np.ndarray:
    """The resolution ring of ``d_A`` as (m, 2) (slow, fast) pixel coordinates (closed path)."""
    return spots.resolution_ring_px(as_detector(geometry), as_beam(beam, geometry), float(d_A), n_points)


def ring_radius_px(d_A: float, geometry, beam: Union[Beam, float, None] = None) -> float:
    """Mean distance in pixels from the direct beam to the ring of ``d_A``
    (exactly distance * tan(2 theta) / pixel for an untilted detector)."""
    points = ring_points(d_A, geometry, beam, n_points=360)[:-1]
    if len(points) == 0:
        return math.nan
    center = spots.beam_center_px(geometry)
    return float(np.mean(np.hypot(points[:, 0] - center[0], points[:, 1] - center[1])))
