"""Detector geometry in nanoBragg's conventions.

Lengths are in mm.  ``detector_frame`` returns the rotated fast/slow/normal unit vectors
and the position of the first pixel's corner (``pix0``), exactly as nanoBragg derives
them for each convention and pivot.  ``subpixel_positions`` turns a block of pixel rows
into lab-frame positions, so large detectors can be processed in chunks.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import NamedTuple, Union

import torch

from . import _validate as v
from .rotation import rotation_about_axis, rotation_xyz

Scalar = Union[float, torch.Tensor]
DEG = math.pi / 180.0

# beam, fast, slow, normal, twotheta axis, polarization axis, spindle, pivot
_CONVENTIONS = {
    "mosflm": ((1, 0, 0), (0, 0, 1), (0, -1, 0), (1, 0, 0), (0, 0, -1), (0, 0, 1), (0, 0, 1), "beam"),
    "denzo": ((1, 0, 0), (0, 0, 1), (0, -1, 0), (1, 0, 0), (0, 0, -1), (0, 0, 1), (0, 0, 1), "beam"),
    "adxv": ((0, 0, 1), (1, 0, 0), (0, -1, 0), (0, 0, 1), (-1, 0, 0), (1, 0, 0), (1, 0, 0), "beam"),
    "xds": ((0, 0, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 0), (1, 0, 0), (1, 0, 0), "sample"),
    "dials": ((0, 0, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 1, 0), (0, 1, 0), (0, 1, 0), "sample"),
}
CONVENTIONS = tuple(_CONVENTIONS)


class ConventionAxes(NamedTuple):
    beam: tuple
    fast: tuple
    slow: tuple
    normal: tuple
    twotheta_axis: tuple
    polar_axis: tuple
    spindle_axis: tuple
    pivot: str


def convention_axes(convention: str) -> ConventionAxes:
    return ConventionAxes(*_CONVENTIONS[convention])


@dataclasses.dataclass
class Detector:
    """A flat pixel-array detector.

    beam_center_mm: (Xbeam, Ybeam) in the convention's own meaning (nanoBragg's -Xbeam
        -Ybeam); for XDS and DIALS it is the point of closest approach (Xclose, Yclose).
        None = nanoBragg's default for the convention.
    orgx_px, orgy_px: XDS origin in pixels (overrides beam_center_mm for XDS/DIALS).
    rotation_deg: detector rotations about lab x, y, z; twotheta_deg about the
        convention's two-theta axis.
    pivot: "beam" or "sample"; None = the convention's default.
    oversample: subpixels per pixel edge; None = nanoBragg's automatic rule.
    point_pixel: solid angle 1/R^2 instead of the pixel's true solid angle.
    oversample_omega, oversample_polar: evaluate those factors per subpixel rather than
        once per pixel.
    """

    fpixels: int = 1024
    spixels: int = None  # type: ignore[assignment]  # None: square, set to fpixels below
    pixel_size_mm: Scalar = 0.1
    distance_mm: Scalar = 100.0
    beam_center_mm: Sequence | None = None
    convention: str = "mosflm"
    rotation_deg: Sequence = (0.0, 0.0, 0.0)
    twotheta_deg: Scalar = 0.0
    oversample: int | None = None
    point_pixel: bool = False
    pivot: str | None = None
    orgx_px: Scalar | None = None
    orgy_px: Scalar | None = None
    oversample_omega: bool = False
    oversample_polar: bool = False

    def __post_init__(self):
        if self.spixels is None:
            self.spixels = self.fpixels
        self.fpixels = v.check_int("fpixels", self.fpixels, minimum=1)
        self.spixels = v.check_int("spixels", self.spixels, minimum=1)
        v.check_positive("pixel_size_mm", self.pixel_size_mm, unit="mm")
        v.check_positive("distance_mm", self.distance_mm, unit="mm")
        self.convention = str(self.convention).lower()
        if self.convention not in _CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {self.convention!r}")
        if self.beam_center_mm is not None:
            center = tuple(self.beam_center_mm)
            if len(center) != 2:
                raise ValueError(f"beam_center_mm must be (Xbeam, Ybeam), got {self.beam_center_mm!r}")
            for name, value in zip(("Xbeam", "Ybeam"), center, strict=False):
                v.check_finite(f"beam_center_mm {name}", value)
        v.check_triple("rotation_deg", self.rotation_deg)
        v.check_finite("twotheta_deg", self.twotheta_deg)
        if self.oversample is not None:
            self.oversample = v.check_int("oversample", self.oversample, minimum=1)
        if self.pivot is not None and self.pivot not in ("beam", "sample"):
            raise ValueError(f"pivot must be 'beam' or 'sample', got {self.pivot!r}")
        for name in ("orgx_px", "orgy_px"):
            if getattr(self, name) is not None:
                v.check_finite(name, getattr(self, name))

    @property
    def shape(self) -> tuple:
        """(spixels, fpixels), the (slow, fast) shape of images."""
        return (self.spixels, self.fpixels)

    def default_beam_center_mm(self) -> tuple:
        """nanoBragg's (Xbeam, Ybeam) when none is given, in mm."""
        pixel = v.as_number(self.pixel_size_mm)
        size_f, size_s = self.fpixels * pixel, self.spixels * pixel
        if self.convention in ("mosflm", "denzo"):
            return ((size_s + pixel) / 2, (size_f + pixel) / 2)
        if self.convention == "adxv":
            return ((size_f + pixel) / 2, (size_s - pixel) / 2)
        return (size_f / 2, size_s / 2)

    def beam_center_or_default_mm(self) -> tuple:
        """(Xbeam, Ybeam) in mm: the given centre as a 2-tuple, else nanoBragg's default.

        Accepts any 2-sequence (tuple, numpy array, 1-d tensor) without testing its
        truth value, which numpy arrays and tensors refuse.
        """
        if self.beam_center_mm is None:
            return self.default_beam_center_mm()
        return tuple(self.beam_center_mm)

    def replace(self, **changes) -> Detector:
        return dataclasses.replace(self, **changes)


class DetectorFrame(NamedTuple):
    """Lab-frame detector geometry (all (3,) tensors except close_distance_mm, 0-d)."""

    fast: torch.Tensor
    slow: torch.Tensor
    normal: torch.Tensor
    pix0_mm: torch.Tensor
    beam: torch.Tensor
    polar_axis: torch.Tensor
    spindle_axis: torch.Tensor
    close_distance_mm: torch.Tensor


def _vec(values, dtype, device) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, device=device)


def detector_frame(detector: Detector, dtype, device) -> DetectorFrame:
    """Rotate the detector and place its origin as nanoBragg does for its pivot."""
    axes = convention_axes(detector.convention)
    beam = _vec(axes.beam, dtype, device)
    fast0, slow0, normal0 = (_vec(a, dtype, device) for a in (axes.fast, axes.slow, axes.normal))
    pixel = v.to_tensor(detector.pixel_size_mm, dtype, device)
    distance = v.to_tensor(detector.distance_mm, dtype, device)
    pivot = detector.pivot or axes.pivot

    rotation = rotation_xyz(v.stack3(detector.rotation_deg, dtype, device) * DEG)
    twotheta = rotation_about_axis(
        _vec(axes.twotheta_axis, dtype, device), v.to_tensor(detector.twotheta_deg, dtype, device) * DEG
    )
    full = twotheta @ rotation
    fast, slow, normal = full @ fast0, full @ slow0, full @ normal0

    # nanoBragg relates the two distances through the detector tilt without two-theta
    ratio = torch.dot(beam, rotation @ normal0)
    close_distance = torch.abs(ratio * distance)
    beam_distance = close_distance / ratio

    if pivot == "sample":
        f_close, s_close = _close_point_mm(detector, pixel, dtype, device)
        pix0 = full @ (-f_close * fast0 - s_close * slow0 + close_distance * normal0)
    else:
        f_beam, s_beam = _beam_point_mm(detector, pixel, dtype, device)
        pix0 = -f_beam * fast - s_beam * slow + beam_distance * beam
    close_distance = torch.dot(pix0, normal)
    return DetectorFrame(
        fast,
        slow,
        normal,
        pix0,
        beam,
        _vec(axes.polar_axis, dtype, device),
        _vec(axes.spindle_axis, dtype, device),
        close_distance,
    )


def _beam_center(detector: Detector, dtype, device):
    center = detector.beam_center_or_default_mm()
    return v.to_tensor(center[0], dtype, device), v.to_tensor(center[1], dtype, device)


def _beam_point_mm(detector: Detector, pixel, dtype, device):
    """(Fbeam, Sbeam): where the direct beam meets the detector, along fast and slow."""
    x_beam, y_beam = _beam_center(detector, dtype, device)
    if detector.convention == "mosflm":
        return y_beam + 0.5 * pixel, x_beam + 0.5 * pixel
    if detector.convention == "denzo":
        return y_beam, x_beam
    if detector.convention == "adxv":
        return x_beam, detector.spixels * pixel - y_beam
    return x_beam, y_beam


def _close_point_mm(detector: Detector, pixel, dtype, device):
    """(Fclose, Sclose): the foot of the normal from the sample, along fast and slow."""
    if detector.convention in ("xds", "dials"):
        x_close, y_close = _beam_center(detector, dtype, device)
        if detector.orgx_px is not None:
            x_close = (v.to_tensor(detector.orgx_px, dtype, device) - 0.5) * pixel
        if detector.orgy_px is not None:
            y_close = (v.to_tensor(detector.orgy_px, dtype, device) - 0.5) * pixel
        return x_close, y_close
    return _beam_point_mm(detector, pixel, dtype, device)


def subpixel_positions(
    frame: DetectorFrame, pixel_size_mm: torch.Tensor, fpixels: int, rows: range, oversample: int
) -> torch.Tensor:
    """Lab positions of subpixel centres for pixel rows ``rows``.

    Returns (len(rows), fpixels, oversample^2, 3) in mm; the subpixel axis runs
    slow-major, so index 0 is the first subpixel nanoBragg visits.
    """
    dtype, device = pixel_size_mm.dtype, pixel_size_mm.device
    sub = pixel_size_mm / oversample
    steps = torch.arange(oversample, dtype=dtype, device=device)
    s_idx = torch.arange(rows.start, rows.stop, dtype=dtype, device=device)
    f_idx = torch.arange(fpixels, dtype=dtype, device=device)
    s_mm = sub * (s_idx[:, None] * oversample + steps[None, :]) + sub / 2  # (rows, o)
    f_mm = sub * (f_idx[:, None] * oversample + steps[None, :]) + sub / 2  # (fpixels, o)
    s_part = s_mm[:, None, :, None, None] * frame.slow  # (rows, 1, o, 1, 3)
    f_part = f_mm[None, :, None, :, None] * frame.fast  # (1, f, 1, o, 3)
    positions = s_part + f_part + frame.pix0_mm
    return positions.reshape(len(rows), fpixels, oversample * oversample, 3)
