"""Where Bragg spots fall on the detector, and the resolution of any detector point.

Geometry only (no intensities): each reciprocal-lattice point near the Ewald sphere is
projected along its diffracted ray onto the detector plane.  Pixel coordinates follow
the image convention used everywhere in braggsim: (slow, fast) arrays whose pixel
``i`` covers ``[i, i + 1) * pixel_size_mm`` from ``pix0``, so its centre is at array
index ``i`` (napari's pixel-centre convention) after subtracting half a pixel.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from .beam import Beam
from .crystal import Crystal, oriented_real_axes, phi_angles_rad, real_from_reciprocal
from .detector import Detector, detector_frame
from .rotation import rotation_about_axis

__all__ = [
    "Spots",
    "as_beam",
    "as_detector",
    "beam_center_px",
    "corner_d_min_A",
    "default_excitation_tolerance",
    "frame_arrays",
    "predict_spots",
    "resolution_at_px",
    "resolution_ring_px",
]

_DTYPE = torch.float64
_DEVICE = "cpu"


class Spots(NamedTuple):
    """Predicted reflections; n of them.

    px: (n, 2) float, (slow, fast) pixel coordinates (pixel centres at integers).
    hkl: (n, 3) int Miller indices.
    d_A: (n,) resolution in Angstrom.
    excitation_error: (n,) distance of the relp from the Ewald sphere, 1/Angstrom.
    """

    px: np.ndarray
    hkl: np.ndarray
    d_A: np.ndarray
    excitation_error: np.ndarray


def as_detector(geometry) -> Detector:
    """A :class:`Detector` from a Detector, a dict of its keyword arguments, a frame's
    layer metadata (``{"braggsim_frame": ...}``) or anything with ``detector_kwargs()``
    (a :class:`braggsim.io.Frame`)."""
    if isinstance(geometry, Detector):
        return geometry
    if hasattr(geometry, "detector_kwargs"):
        return Detector(**geometry.detector_kwargs())
    if isinstance(geometry, dict):
        if "braggsim_frame" in geometry:
            from .io.frame import frame_from_metadata

            return Detector(**frame_from_metadata(geometry)["detector"])
        return Detector(**geometry)
    raise ValueError(f"geometry must be a Detector, a Frame or Detector kwargs, got {type(geometry).__name__}")


def as_beam(beam, geometry=None) -> Beam:
    """A :class:`Beam` from a Beam, a wavelength in Angstrom, a dict of Beam keyword
    arguments, or None for the beam of ``geometry`` (a Frame or layer metadata)."""
    if isinstance(beam, Beam):
        return beam
    if isinstance(beam, (int, float)):
        return Beam(wavelength_A=float(beam))
    if isinstance(beam, dict):
        return Beam(**beam)
    if beam is None:
        kwargs = None
        if hasattr(geometry, "beam_kwargs"):
            kwargs = geometry.beam_kwargs()
        elif isinstance(geometry, dict) and "braggsim_frame" in geometry:
            from .io.frame import frame_from_metadata

            kwargs = frame_from_metadata(geometry)["beam"]
        if kwargs:
            return Beam(**kwargs)
        raise ValueError("no wavelength: pass beam= (a Beam or wavelength_A) for geometry without one")
    raise ValueError(f"beam must be a Beam, a wavelength in A or None, got {beam!r}")


def frame_arrays(detector: Detector) -> dict[str, np.ndarray]:
    """The detector's lab-frame geometry (:class:`braggsim.detector.DetectorFrame`) as
    float64 numpy arrays: fast, slow, normal, pix0_mm, beam, polar_axis, spindle_axis
    ((3,) each) and close_distance_mm (0-d)."""
    with torch.no_grad():
        frame = detector_frame(detector, _DTYPE, _DEVICE)
    return {name: np.asarray(getattr(frame, name).detach().numpy(), dtype=float) for name in frame._fields}


def _pixel_mm(detector: Detector) -> float:
    return float(detector.pixel_size_mm)


def _project(directions: np.ndarray, detector: Detector, frame: dict) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates where rays from the sample along ``directions`` (n, 3) meet the
    detector plane; returns ((n, 2) px, (n,) bool hits-the-plane-in-front)."""
    normal, pix0 = frame["normal"], frame["pix0_mm"]
    along_normal = directions @ normal
    plane = float(pix0 @ normal)
    in_front = along_normal * np.sign(plane) > 1e-12
    t = np.where(in_front, plane / np.where(in_front, along_normal, 1.0), np.nan)
    points = directions * t[:, None] - pix0
    pixel = _pixel_mm(detector)
    slow = points @ frame["slow"] / pixel - 0.5
    fast = points @ frame["fast"] / pixel - 0.5
    return np.stack([slow, fast], axis=-1), in_front


def _on_detector(px: np.ndarray, detector: Detector) -> np.ndarray:
    slow, fast = px[:, 0], px[:, 1]
    return (slow >= -0.5) & (slow < detector.spixels - 0.5) & (fast >= -0.5) & (fast < detector.fpixels - 0.5)


def default_excitation_tolerance(crystal: Crystal, d_min_A: float) -> float:
    """How far (1/Angstrom) a relp may sit off the Ewald sphere and still light up: the
    half-width of the lattice transform, 1 / (N * edge), plus the arc the mosaic spread
    sweeps at the highest resolution."""
    with torch.no_grad():
        lengths = torch.linalg.vector_norm(oriented_real_axes(crystal, _DTYPE, _DEVICE), dim=-1).numpy()
    sizes = np.array([float(n) for n in crystal.N_cells]) * lengths
    mosaic_rad = float(crystal.mosaic_spread_deg) * math.pi / 180.0
    return float(1.0 / sizes.min() + mosaic_rad / d_min_A)


def corner_d_min_A(detector: Detector, beam: Beam) -> float:
    """The best resolution anywhere on the detector (its corners and edge midpoints), A."""
    s, f = detector.spixels - 1, detector.fpixels - 1
    corners = np.array([[0, 0], [0, f], [s, 0], [s, f], [s / 2, 0], [s / 2, f], [0, f / 2], [s, f / 2]], float)
    return float(np.min(resolution_at_px(detector, beam, corners)))


def predict_spots(
    crystal: Crystal,
    detector: Detector,
    beam: Beam,
    *,
    d_min_A: float | None = None,
    excitation_tolerance: float | None = None,
    max_index: int = 60,
) -> Spots:
    """Reflections whose relp lies within ``excitation_tolerance`` of the Ewald sphere and
    whose diffracted ray meets the detector.

    Uses the crystal's orientation at ``phi_start_deg`` without mosaic rotations (the
    mean orientation).  d_min_A: resolution cut; None = the detector's corner resolution.
    excitation_tolerance: 1/Angstrom; None = :func:`default_excitation_tolerance`.
    """
    wavelength = float(beam.wavelength_A)
    if d_min_A is None:
        d_min_A = corner_d_min_A(detector, beam)
    if not d_min_A > 0:
        raise ValueError(f"d_min_A must be > 0, got {d_min_A!r}")
    d_min_A = max(d_min_A, wavelength / 2)
    if excitation_tolerance is None:
        excitation_tolerance = default_excitation_tolerance(crystal, d_min_A)
    frame = frame_arrays(detector)
    with torch.no_grad():
        real = oriented_real_axes(crystal, _DTYPE, _DEVICE)
        spindle = torch.as_tensor(frame["spindle_axis"], dtype=_DTYPE)
        if crystal.spindle_axis is not None:
            spindle = torch.as_tensor(np.asarray(crystal.spindle_axis, float), dtype=_DTYPE)
        phi0 = phi_angles_rad(crystal, _DTYPE, _DEVICE)[:1]
        real = real @ rotation_about_axis(spindle, phi0)[0].T
        reciprocal = real_from_reciprocal(real).numpy()  # rows a*, b*, c*, 1/A
    lengths = np.linalg.norm(real.numpy(), axis=-1)
    limits = [min(max_index, int(math.ceil(length / d_min_A))) for length in lengths]
    grids = np.meshgrid(*(np.arange(-m, m + 1) for m in limits), indexing="ij")
    hkl = np.stack([g.ravel() for g in grids], axis=-1)
    hkl = hkl[np.any(hkl != 0, axis=-1)]
    g = hkl @ reciprocal  # (n, 3) 1/A
    g_len = np.linalg.norm(g, axis=-1)
    keep = g_len <= 1.0 / d_min_A
    hkl, g, g_len = hkl[keep], g[keep], g_len[keep]
    incident = frame["beam"] / wavelength
    k_out = incident + g  # ray from the sphere centre through the relp
    k_len = np.linalg.norm(k_out, axis=-1)
    excitation = k_len - 1.0 / wavelength
    near = np.abs(excitation) <= excitation_tolerance
    hkl, g_len, k_out, k_len, excitation = hkl[near], g_len[near], k_out[near], k_len[near], excitation[near]
    px, hit = _project(k_out / k_len[:, None], detector, frame)
    on = hit & _on_detector(np.nan_to_num(px, nan=-1e9), detector)
    return Spots(px[on], hkl[on].astype(int), 1.0 / g_len[on], excitation[on])


def beam_center_px(geometry) -> np.ndarray:
    """(slow, fast) pixel coordinates where the direct beam meets the detector plane, (2,);
    NaN if the beam misses the plane.  ``geometry``: anything :func:`as_detector` takes."""
    detector = as_detector(geometry)
    frame = frame_arrays(detector)
    px, _ = _project(frame["beam"][None, :], detector, frame)
    return px[0]


def resolution_at_px(detector: Detector, beam: Beam, px: np.ndarray) -> np.ndarray:
    """d-spacing (Angstrom) at (slow, fast) pixel coordinates ``px`` (..., 2) -> (...).

    d = lambda / (2 sin theta); inf at the direct beam."""
    px = np.asarray(px, dtype=float)
    frame = frame_arrays(detector)
    pixel = _pixel_mm(detector)
    position = (
        frame["pix0_mm"]
        + ((px[..., 0:1] + 0.5) * pixel) * frame["slow"]
        + ((px[..., 1:2] + 0.5) * pixel) * frame["fast"]
    )
    direction = position / np.linalg.norm(position, axis=-1, keepdims=True)
    cos2theta = np.clip(direction @ frame["beam"], -1.0, 1.0)
    sin_theta = np.sqrt((1.0 - cos2theta) / 2.0)
    with np.errstate(divide="ignore"):
        return float(beam.wavelength_A) / (2.0 * sin_theta)


def resolution_ring_px(detector: Detector, beam: Beam, d_A: float, n_points: int = 180) -> np.ndarray:
    """The ring of resolution ``d_A`` on the detector as a closed path of (slow, fast)
    pixel coordinates, (m, 2) with m <= n_points + 1; empty (0, 2) if it misses the plane.
    Points outside the image are kept (napari clips them), so the ring stays whole."""
    wavelength = float(beam.wavelength_A)
    if not d_A > wavelength / 2:
        raise ValueError(f"d_A must exceed lambda/2 = {wavelength / 2} A, got {d_A!r}")
    two_theta = 2.0 * math.asin(wavelength / (2.0 * d_A))
    frame = frame_arrays(detector)
    axis = frame["beam"]
    helper = np.array([0.0, 0.0, 1.0]) if abs(axis[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(axis, helper)
    u /= np.linalg.norm(u)
    w = np.cross(axis, u)
    azimuth = np.linspace(0.0, 2.0 * math.pi, n_points + 1)
    directions = math.cos(two_theta) * axis[None, :] + math.sin(two_theta) * (
        np.cos(azimuth)[:, None] * u + np.sin(azimuth)[:, None] * w
    )
    px, hit = _project(directions, detector, frame)
    return px[hit]
