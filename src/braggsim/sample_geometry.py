"""Where every sample of a pixel sits: sensor layers, subpixels, a curved detector.

nanoBragg visits, for every pixel, each sensor layer, then each subpixel (slow-major),
then each source.  This module builds the first three axes for a block of pixel rows as
torch tensors (differentiable in every detector field):

- layer ``k`` lies ``k * t`` behind the front face along the detector normal, ``t`` the
  layer thickness (sensor_thickness / layers);
- ``curved``: nanoBragg's curved detector takes the flat position's lab y and z (mm) as
  angles ``y / distance`` about the slow axis and ``z / distance`` about the fast axis
  and swings the point ``distance * beam`` through them, so every pixel lies at the
  same distance from the sample;
- the capture fraction of layer ``k`` is ``exp(-k t / (mu_len * p)) - exp(-(k + 1) t /
  (mu_len * p))`` with ``p = d . normal`` (parallax: the obliquity of the ray) and
  ``mu_len`` the attenuation length.

Shapes: (rows, fpixels, layers, oversample^2[, 3]).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from . import _validate as v
from .beam import polarization_factor
from .detector import Detector, DetectorFrame, subpixel_positions
from .rotation import rotate_vectors


class SampleGeometry(NamedTuple):
    """diffracted: (r, f, L, o2, 3) unit vectors; airpath_mm, omega: (r, f, L, o2);
    capture: (r, f, L, o2), or None without a sensor (every photon is captured)."""

    diffracted: torch.Tensor
    airpath_mm: torch.Tensor
    omega: torch.Tensor
    capture: torch.Tensor | None


def layer_thickness_mm(detector: Detector, dtype, device) -> torch.Tensor:
    """Thickness of one sensor layer in mm (0-d; zero without a sensor)."""
    thickness = v.to_tensor(detector.sensor_thickness_um, dtype, device) * 1e-3
    return thickness / detector.n_layers


def attenuation_mm(detector: Detector, dtype, device) -> torch.Tensor:
    """Attenuation length in mm; nanoBragg's default is the sensor thickness."""
    if detector.sensor_attenuation_um is None:
        return v.to_tensor(detector.sensor_thickness_um, dtype, device) * 1e-3
    return v.to_tensor(detector.sensor_attenuation_um, dtype, device) * 1e-3


def sample_positions(
    detector: Detector, frame: DetectorFrame, pixel_mm: torch.Tensor, rows: range, oversample: int
) -> torch.Tensor:
    """Lab positions (mm) of every (row, fast pixel, layer, subpixel), (r, f, L, o2, 3)."""
    flat = subpixel_positions(frame, pixel_mm, detector.fpixels, rows, oversample)  # (r, f, o2, 3)
    layers = detector.n_layers
    if layers > 1:
        depth = layer_thickness_mm(detector, pixel_mm.dtype, pixel_mm.device) * torch.arange(
            layers, dtype=pixel_mm.dtype, device=pixel_mm.device
        )
        positions = flat[:, :, None, :, :] + depth[:, None, None] * frame.normal
    else:
        positions = flat[:, :, None, :, :]
    if detector.curved:
        distance = frame.distance_mm
        start = (distance * frame.beam).expand(positions.shape)
        swung = rotate_vectors(start, frame.slow, positions[..., 1] / distance)
        positions = rotate_vectors(swung, frame.fast, positions[..., 2] / distance)
    return positions


def sample_geometry(
    detector: Detector, frame: DetectorFrame, pixel_mm: torch.Tensor, rows: range, oversample: int
) -> SampleGeometry:
    """Unit diffracted rays, air paths, solid angles and capture fractions of every sample."""
    positions = sample_positions(detector, frame, pixel_mm, rows, oversample)
    airpath = torch.linalg.vector_norm(positions, dim=-1)
    diffracted = positions / airpath[..., None]
    if detector.point_pixel:
        omega = 1e6 / (airpath * airpath)  # 1 / R^2 with R in metres
    else:
        omega = (pixel_mm * pixel_mm * frame.close_distance_mm) / (airpath * airpath * airpath)
    if detector.has_sensor:
        step = layer_thickness_mm(detector, pixel_mm.dtype, pixel_mm.device)
        mu_len = attenuation_mm(detector, pixel_mm.dtype, pixel_mm.device)
        parallax = diffracted @ frame.normal  # (r, f, L, o2)
        k = torch.arange(detector.n_layers, dtype=pixel_mm.dtype, device=pixel_mm.device)[:, None]
        per_depth = step / (mu_len * parallax)
        capture = torch.exp(-k * per_depth) - torch.exp(-(k + 1) * per_depth)
    else:
        capture = None
    return SampleGeometry(diffracted, airpath, omega, capture)


def polarization(kahn: torch.Tensor, incident: torch.Tensor, diffracted: torch.Tensor, polar_axis: torch.Tensor):
    """nanoBragg's polarization factor for broadcastable incident (..., 3) and diffracted
    (..., 3) unit vectors, polar_axis (3,); returns (...).  See beam.polarization_factor."""
    if incident.ndim == 1:
        return polarization_factor(kahn, incident, diffracted, polar_axis)  # matrix-vector products: fast
    cos2theta = (diffracted * incident).sum(-1)
    cos2theta_sq = cos2theta * cos2theta
    b_in = torch.linalg.cross(polar_axis.expand_as(incident), incident)
    b_in = b_in / torch.linalg.vector_norm(b_in, dim=-1, keepdim=True)
    e_in = torch.linalg.cross(incident, b_in)
    e_in = e_in / torch.linalg.vector_norm(e_in, dim=-1, keepdim=True)
    e_out = (diffracted * e_in).sum(-1)
    b_out = (diffracted * b_in).sum(-1)
    radius_sq = e_out * e_out + b_out * b_out
    cos_2psi = torch.where(
        radius_sq > 0, (e_out * e_out - b_out * b_out) / torch.where(radius_sq > 0, radius_sq, 1.0), 1.0
    )
    return 0.5 * (1 + cos2theta_sq - kahn * cos_2psi * (1 - cos2theta_sq))
