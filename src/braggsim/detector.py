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

import numpy as np
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
    # nanoBragg's CUSTOM convention starts from these vectors; any of them may be replaced
    "custom": ((1, 0, 0), (0, 0, 1), (0, -1, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, 1), "beam"),
}
CONVENTIONS = tuple(_CONVENTIONS)
# Detector fields that replace a CUSTOM-convention vector, and their ConventionAxes names
CUSTOM_VECTORS = {
    "beam_axis": "beam",
    "fast_axis": "fast",
    "slow_axis": "slow",
    "normal_axis": "normal",
    "twotheta_axis": "twotheta_axis",
    "polarization_axis": "polar_axis",
}


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

    Arbitrary geometry (nanoBragg's CUSTOM convention, ``convention="custom"``):
    fast_axis, slow_axis, normal_axis, beam_axis, polarization_axis, twotheta_axis:
        lab-frame vectors (normalised here) replacing nanoBragg's CUSTOM defaults beam
        +x, fast +z, slow -y, two-theta axis +y, polarization +z; normal_axis None =
        fast x slow.  beam_center_mm is then (Fbeam, Sbeam) = (Fclose, Sclose) along fast
        and slow, default half the detector size (or from orgx_px/orgy_px).
    pix0_mm: lab position of the first pixel's outer corner (custom only, no rotations):
        the detector origin taken as given instead of placed from the beam centre.
    close_distance_mm: sample-to-detector-plane distance; overrides distance_mm (which
        is along the beam), as nanoBragg's -close_distance.
    curved: every pixel at the same distance from the sample (nanoBragg's -curved_det).

    Sensor (parallax and capture fraction):
    sensor_thickness_um: 0 = an infinitely thin sensor that absorbs every photon.
    sensor_attenuation_um: attenuation length; None = the thickness (nanoBragg's default).
    sensor_layers: depth samples, each thickness/layers thick (None = 2).  Layer k
        absorbs exp(-k t/(mu cos)) - exp(-(k+1) t/(mu cos)) of the photons, t its
        thickness and cos the obliquity along the normal; each layer sits k * t deeper.
    oversample_thick: capture fraction per subpixel and layer (otherwise nanoBragg's
        rule: the deepest layer's, at the pixel's first subpixel, scales the pixel).

    Pixels:
    roi: (xmin, xmax, ymin, ymax) inclusive fast/slow pixel ranges to simulate; the
        rest of the image is 0.
    pixel_mask: (spixels, fpixels) booleans, False = not simulated (0), as nanoBragg's
        -mask image.
    d_min_A: skip every sample whose resolution 1 / (2 sin(theta)/lambda) is finer than
        this (nanoBragg's -dmin); None = no cut.
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
    fast_axis: Sequence | None = None
    slow_axis: Sequence | None = None
    normal_axis: Sequence | None = None
    beam_axis: Sequence | None = None
    polarization_axis: Sequence | None = None
    twotheta_axis: Sequence | None = None
    pix0_mm: Sequence | None = None
    close_distance_mm: Scalar | None = None
    curved: bool = False
    sensor_thickness_um: Scalar = 0.0
    sensor_attenuation_um: Scalar | None = None
    sensor_layers: int | None = None
    oversample_thick: bool = False
    roi: Sequence | None = None
    pixel_mask: object = None
    d_min_A: float | None = None

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
        self._validate_custom()
        self._validate_sensor()
        self._validate_pixels()

    def _validate_custom(self) -> None:
        given = [name for name in (*CUSTOM_VECTORS, "pix0_mm") if getattr(self, name) is not None]
        if given and self.convention != "custom":
            raise ValueError(f"{', '.join(given)} need convention='custom' (nanoBragg's CUSTOM convention)")
        for name in given:
            vector = v.check_triple(name, getattr(self, name))
            if name != "pix0_mm" and all(v.as_number(x) == 0 for x in vector):
                raise ValueError(f"{name} must not be the zero vector")
        if self.pix0_mm is not None and (
            any(v.as_number(x) != 0 for x in self.rotation_deg) or v.as_number(self.twotheta_deg) != 0
        ):
            raise ValueError("pix0_mm places the detector as given: rotation_deg and twotheta_deg must be 0 with it")
        if self.close_distance_mm is not None:
            v.check_positive("close_distance_mm", self.close_distance_mm, unit="mm")

    def _validate_sensor(self) -> None:
        thickness = v.check_non_negative("sensor_thickness_um", self.sensor_thickness_um)
        if self.sensor_attenuation_um is not None:
            v.check_positive("sensor_attenuation_um", self.sensor_attenuation_um, unit="um")
        if self.sensor_layers is not None:
            self.sensor_layers = v.check_int("sensor_layers", self.sensor_layers, minimum=1)
        if thickness == 0 and self.sensor_layers not in (None, 1) and not _requires_grad(self.sensor_thickness_um):
            raise ValueError(f"sensor_layers={self.sensor_layers} needs sensor_thickness_um > 0")

    def _validate_pixels(self) -> None:
        if self.d_min_A is not None:
            self.d_min_A = v.check_positive("d_min_A", self.d_min_A, unit="A")
        if self.roi is not None:
            roi = tuple(self.roi)
            if len(roi) != 4:
                raise ValueError(f"roi must be (xmin, xmax, ymin, ymax), got {self.roi!r}")
            self.roi = tuple(v.check_int(f"roi {n}", x, minimum=-(2**31)) for n, x in zip(_ROI_NAMES, roi, strict=True))
        if self.pixel_mask is not None:
            mask = np.asarray(self.pixel_mask)
            if mask.shape != self.shape:
                raise ValueError(f"pixel_mask has shape {mask.shape}, the detector is {self.shape} (spixels, fpixels)")
            self.pixel_mask = mask.astype(bool)

    @property
    def has_sensor(self) -> bool:
        """A sensor of finite thickness (parallax and capture fraction are modelled)."""
        return v.as_number(self.sensor_thickness_um) > 0 or _requires_grad(self.sensor_thickness_um)

    @property
    def n_layers(self) -> int:
        """Depth samples of the sensor: 1 without one, else sensor_layers (default 2)."""
        if not self.has_sensor:
            return 1
        return self.sensor_layers if self.sensor_layers is not None else 2

    def simulated_pixels(self) -> np.ndarray | None:
        """(spixels, fpixels) bool of the pixels simulated (roi and pixel_mask), None = all."""
        if self.roi is None and self.pixel_mask is None:
            return None
        keep = np.ones(self.shape, dtype=bool)
        if self.roi is not None:
            xmin, xmax, ymin, ymax = self.roi
            fast = np.arange(self.fpixels)
            slow = np.arange(self.spixels)
            keep &= ((fast >= xmin) & (fast <= xmax))[None, :] & ((slow >= ymin) & (slow <= ymax))[:, None]
        if self.pixel_mask is not None:
            keep &= self.pixel_mask
        return keep

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
        if self.convention == "custom":
            # nanoBragg: Xbeam defaults to Xclose = Fclose, from ORGX when given
            x = (v.as_number(self.orgx_px) - 0.5) * pixel if self.orgx_px is not None else size_f / 2
            y = (v.as_number(self.orgy_px) - 0.5) * pixel if self.orgy_px is not None else size_s / 2
            return (x, y)
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


_ROI_NAMES = ("xmin", "xmax", "ymin", "ymax")


def _requires_grad(value) -> bool:
    return isinstance(value, torch.Tensor) and value.requires_grad


class DetectorFrame(NamedTuple):
    """Lab-frame detector geometry ((3,) tensors; close_distance_mm and distance_mm 0-d).

    distance_mm is the distance along the beam, close_distance_mm / (beam . normal)."""

    fast: torch.Tensor
    slow: torch.Tensor
    normal: torch.Tensor
    pix0_mm: torch.Tensor
    beam: torch.Tensor
    polar_axis: torch.Tensor
    spindle_axis: torch.Tensor
    close_distance_mm: torch.Tensor
    distance_mm: torch.Tensor


def _vec(values, dtype, device) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, device=device)


def _unit(vector: torch.Tensor) -> torch.Tensor:
    return vector / torch.linalg.vector_norm(vector)


def frame_vectors(detector: Detector, dtype, device) -> dict:
    """The convention's unit vectors before rotations, with any CUSTOM replacements:
    beam, fast, slow, normal, twotheta_axis, polar_axis, spindle_axis ((3,) tensors)."""
    axes = convention_axes(detector.convention)
    vectors = {name: _vec(getattr(axes, name), dtype, device) for name in axes._fields if name != "pivot"}
    for field, name in CUSTOM_VECTORS.items():
        given = getattr(detector, field)
        if given is not None:
            vectors[name] = _unit(v.stack3(given, dtype, device))
    if detector.convention == "custom" and detector.normal_axis is None:
        vectors["normal"] = _unit(torch.linalg.cross(vectors["fast"], vectors["slow"]))
    return vectors


def detector_frame(detector: Detector, dtype, device) -> DetectorFrame:
    """Rotate the detector and place its origin as nanoBragg does for its pivot."""
    axes = convention_axes(detector.convention)
    vectors = frame_vectors(detector, dtype, device)
    beam, fast0, slow0, normal0 = vectors["beam"], vectors["fast"], vectors["slow"], vectors["normal"]
    pixel = v.to_tensor(detector.pixel_size_mm, dtype, device)
    distance = v.to_tensor(detector.distance_mm, dtype, device)
    pivot = detector.pivot or axes.pivot

    rotation = rotation_xyz(v.stack3(detector.rotation_deg, dtype, device) * DEG)
    twotheta = rotation_about_axis(vectors["twotheta_axis"], v.to_tensor(detector.twotheta_deg, dtype, device) * DEG)
    full = twotheta @ rotation
    fast, slow, normal = full @ fast0, full @ slow0, full @ normal0

    # nanoBragg relates the two distances through the detector tilt without two-theta
    ratio = torch.dot(beam, rotation @ normal0)
    if detector.close_distance_mm is not None:
        close_distance = v.to_tensor(detector.close_distance_mm, dtype, device)
    else:
        close_distance = torch.abs(ratio * distance)
    beam_distance = close_distance / ratio

    if detector.pix0_mm is not None:
        pix0 = v.stack3(detector.pix0_mm, dtype, device)
    elif pivot == "sample":
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
        vectors["polar_axis"],
        vectors["spindle_axis"],
        close_distance,
        close_distance / ratio,
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
    if detector.convention == "custom":
        return _beam_center(detector, dtype, device)  # nanoBragg: Fclose = Fbeam = Xbeam
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
