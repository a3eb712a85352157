"""A still in DIALS' laboratory frame: beam, one flat panel, crystal, and DIALS' stills predictor.

DIALS (dxtbx) conventions, kept exactly so an ``.expt`` written from these numbers predicts
what we predict:

- ``s0 = -beam_direction / wavelength``; ``beam_direction`` points from the sample to the
  source (``(0, 0, 1)`` for the usual setup, so the X-rays travel along -z).
- A panel point at ``(x_mm, y_mm)`` is ``origin + x_mm * fast + y_mm * slow``; ``origin`` is
  the outer corner of the first pixel.  DIALS pixel coordinates put the first pixel's centre
  at ``(0.5, 0.5)``; braggsim's ``(slow, fast)`` arrays put it at ``(0, 0)``.
- The crystal's ``A = U B`` has columns a*, b*, c*; ``q = A h``; the real axes are the rows
  of ``inv(A)`` (``h = a . q``).

braggsim's own physics runs in nanoBragg's MOSFLM frame (beam along +x).  The proper rotation
:data:`MOSFLM_TO_DIALS` carries one into the other (x -> -z, y -> y, z -> x), so a Pilatus
read as nanoBragg reads it (fast = +z, slow = -y) becomes dxtbx's (fast = +x, slow = -y).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = [
    "MOSFLM_TO_DIALS",
    "StillGeometry",
    "fractional_hkl",
    "predict_still_px",
    "reciprocal_matrix",
    "still_geometry_from_header",
]

#: v_dials = MOSFLM_TO_DIALS @ v_mosflm (columns are the images of the MOSFLM axes)
MOSFLM_TO_DIALS = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])


@dataclasses.dataclass
class StillGeometry:
    """Beam and a single flat panel in DIALS' frame (lengths in mm, wavelength in Angstrom).

    beam_direction: (3,) unit, sample -> source.  origin, fast, slow: (3,) panel vectors.
    pixel_size_mm: (fast, slow).  image_size: (fast, slow) pixel counts.
    """

    wavelength_A: float
    beam_direction: np.ndarray
    origin: np.ndarray
    fast: np.ndarray
    slow: np.ndarray
    pixel_size_mm: tuple
    image_size: tuple

    def __post_init__(self):
        if not (math.isfinite(self.wavelength_A) and self.wavelength_A > 0):
            raise ValueError(f"wavelength_A must be > 0, got {self.wavelength_A!r}")
        self.beam_direction = _unit("beam_direction", self.beam_direction)
        self.fast = _unit("fast", self.fast)
        self.slow = _unit("slow", self.slow)
        self.origin = np.asarray(self.origin, dtype=float).reshape(3)
        if not np.all(np.isfinite(self.origin)):
            raise ValueError(f"origin must be finite, got {self.origin!r}")
        if abs(float(self.fast @ self.slow)) > 1e-6:
            raise ValueError(f"fast and slow must be perpendicular (fast.slow = {float(self.fast @ self.slow):.3g})")
        self.pixel_size_mm = tuple(float(x) for x in self.pixel_size_mm)
        self.image_size = tuple(int(x) for x in self.image_size)
        if len(self.pixel_size_mm) != 2 or min(self.pixel_size_mm) <= 0:
            raise ValueError(f"pixel_size_mm must be two positive numbers, got {self.pixel_size_mm!r}")

    @property
    def s0(self) -> np.ndarray:
        """(3,) incident wave vector, 1/Angstrom."""
        return -self.beam_direction / self.wavelength_A

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.fast, self.slow)

    def lab_mm(self, px: np.ndarray) -> np.ndarray:
        """Lab positions (n, 3) of braggsim (slow, fast) pixel coordinates (n, 2)."""
        px = np.asarray(px, dtype=float).reshape(-1, 2)
        x_mm = (px[:, 1] + 0.5) * self.pixel_size_mm[0]
        y_mm = (px[:, 0] + 0.5) * self.pixel_size_mm[1]
        return self.origin + x_mm[:, None] * self.fast + y_mm[:, None] * self.slow

    def q_vectors(self, px: np.ndarray) -> np.ndarray:
        """Scattering vectors (n, 3), 1/Angstrom, of spots at (slow, fast) px, taken on the Ewald sphere."""
        position = self.lab_mm(px)
        s1 = position / np.linalg.norm(position, axis=1, keepdims=True) / self.wavelength_A
        return s1 - self.s0

    def px_from_rays(self, s1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where rays from the sample along s1 (n, 3) meet the panel: ((n, 2) (slow, fast) px,
        (n,) bool hits in front of the sample)."""
        d_matrix = np.stack([self.fast, self.slow, self.origin], axis=1)
        v = np.asarray(s1, dtype=float).reshape(-1, 3) @ np.linalg.inv(d_matrix).T
        hit = v[:, 2] > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            x_mm = v[:, 0] / v[:, 2]
            y_mm = v[:, 1] / v[:, 2]
        px = np.stack([y_mm / self.pixel_size_mm[1] - 0.5, x_mm / self.pixel_size_mm[0] - 0.5], axis=1)
        return px, hit

    def beam_centre_px(self) -> np.ndarray:
        """(slow, fast) pixel coordinates where the direct beam meets the panel, (2,)."""
        return self.px_from_rays(self.s0[None, :])[0][0]

    def distance_mm(self) -> float:
        """Distance from the sample to the panel plane along its normal, mm."""
        return abs(float(self.origin @ self.normal))

    def copy(self) -> StillGeometry:
        return dataclasses.replace(
            self,
            beam_direction=self.beam_direction.copy(),
            origin=self.origin.copy(),
            fast=self.fast.copy(),
            slow=self.slow.copy(),
        )


def _unit(name: str, vector) -> np.ndarray:
    vector = np.asarray(vector, dtype=float).reshape(3)
    length = float(np.linalg.norm(vector))
    if not (math.isfinite(length) and length > 0):
        raise ValueError(f"{name} must be a finite nonzero 3-vector, got {vector!r}")
    return vector / length


def still_geometry_from_header(
    *, wavelength_A: float, distance_mm: float, pixel_size_mm: float, beam_center_mm: tuple, shape: tuple
) -> StillGeometry:
    """dxtbx's model of a flat detector normal to the beam, as it builds one from a miniCBF or
    SMV header: fast = +x, slow = -y, beam along -z.

    beam_center_mm: braggsim's MOSFLM (Xbeam, Ybeam) (as :class:`braggsim.io.Frame` holds it);
    shape: (slow, fast) pixels.
    """
    x_beam, y_beam = (float(v) for v in beam_center_mm)
    # the beam meets the panel Fbeam = Ybeam + pixel/2 along fast, Sbeam = Xbeam + pixel/2 along slow
    f_beam = y_beam + 0.5 * pixel_size_mm
    s_beam = x_beam + 0.5 * pixel_size_mm
    return StillGeometry(
        wavelength_A=float(wavelength_A),
        beam_direction=np.array([0.0, 0.0, 1.0]),
        origin=np.array([-f_beam, s_beam, -float(distance_mm)]),
        fast=np.array([1.0, 0.0, 0.0]),
        slow=np.array([0.0, -1.0, 0.0]),
        pixel_size_mm=(pixel_size_mm, pixel_size_mm),
        image_size=(int(shape[1]), int(shape[0])),
    )


def cross_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cross product of (n, 3) arrays (or one (3,)), without np.cross's axis shuffling."""
    a = np.asarray(a)
    b = np.asarray(b)
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    return np.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis=-1)


def reciprocal_matrix(real_space: np.ndarray) -> np.ndarray:
    """A = (columns a*, b*, c*) from real axes as rows a, b, c (3, 3)."""
    return np.linalg.inv(np.asarray(real_space, dtype=float))


def predict_still_px(
    real_space: np.ndarray, hkl: np.ndarray, geometry: StillGeometry
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DIALS' stills predictor: each relp is rotated onto the Ewald sphere about the axis normal
    to it and to the beam (keeping its resolution and azimuth), then projected.

    real_space: (3, 3) rows a, b, c in Angstrom (DIALS frame); hkl: (n, 3).
    Returns ((n, 2) (slow, fast) px, (n,) DeltaPsi in radians as DIALS signs it, (n,) bool valid).
    """
    hkl = np.asarray(hkl, dtype=float).reshape(-1, 3)
    q = hkl @ reciprocal_matrix(real_space).T
    s0 = geometry.s0
    unit_s0 = s0 / np.linalg.norm(s0)
    wavelength = 1.0 / np.linalg.norm(s0)
    qq = np.einsum("ij,ij->i", q, q)
    e1 = cross_rows(q, unit_s0[None, :])
    e1_len = np.sqrt(np.einsum("ij,ij->i", e1, e1))
    half = 0.5 * qq * wavelength
    radicand = qq - half * half
    valid = (e1_len > 1e-12) & (radicand > 0)
    e1 = e1 / np.where(valid, e1_len, 1.0)[:, None]
    # c0 = s0^ x e1 is already a unit vector (e1 is normal to s0^)
    c0 = cross_rows(unit_s0[None, :], e1)
    rotated = -half[:, None] * unit_s0 + np.sqrt(np.where(valid, radicand, 0.0))[:, None] * c0
    # DeltaPsi: the angle from q to its rotated image, about e1 (q1 = q^ x e1 is a unit vector)
    q_len = np.sqrt(np.where(qq > 0, qq, 1.0))
    q1 = cross_rows(q, e1) / q_len[:, None]
    delta_psi = -np.arctan2(np.einsum("ij,ij->i", rotated, q1), np.einsum("ij,ij->i", rotated, q) / q_len)
    px, hit = geometry.px_from_rays(s0 + rotated)
    return px, delta_psi, valid & hit


def fractional_hkl(real_space: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Fractional Miller indices (n, 3) of scattering vectors q (n, 3): h = a . q."""
    return np.asarray(q, dtype=float) @ np.asarray(real_space, dtype=float).T
