"""The crystal: unit cell, orientation (misset, phi), size and mosaicity.

Lengths are in Angstrom, angles in degrees at the interface and radians inside.
``Crystal`` only holds numbers; the tensors are built by the functions below on the
dtype and device the caller asks for, so nothing goes stale when a field changes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import numpy as np
import torch

from . import _validate as v
from ._memo import BoundedMemo
from .mosaic import DEFAULT_MOSAIC_SEED, mosaic_rotations
from .rotation import rotation_about_axis, rotation_xyz
from .structure_factors import HKLTable, read_hkl

SHAPES = ("square", "round", "gauss", "tophat")
DEG = math.pi / 180.0


@dataclasses.dataclass
class Crystal:
    """A small crystal in the beam.

    Scalars may be floats or 0-d tensors; tuple fields may hold tensors.  A tensor with
    ``requires_grad`` receives its gradient from :func:`braggsim.simulate`.

    cell: (a, b, c, alpha, beta, gamma) in Angstrom and degrees.
    mosflm_matrix: optional MOSFLM A matrix (3x3 array, or a path to a ``.mat`` file)
        that sets the reciprocal axes instead of ``cell``; it includes the wavelength,
        so ``matrix_wavelength_A`` must be given with it.
    N_cells: unit cells along a, b, c (continuous values are allowed for refinement).
    default_F: structure factor for every hkl not in ``hkl``.
    hkl: path of an ``h k l F`` text file, or an :class:`HKLTable`.
    misset_deg: rotations about lab x, then y, then z, applied to the reciprocal axes.
    mosaic_spread_deg, mosaic_domains, mosaic_seed: nanoBragg's mosaic model.
    shape: lattice transform, one of "square", "round", "gauss", "tophat".
    phi_start_deg, osc_deg, phi_steps: rotation about ``spindle_axis``; phi_step_deg: the
        spacing of the steps (None = osc_deg / phi_steps), as nanoBragg's -phistep.
    interpolate: tricubic interpolation of F; None = nanoBragg's rule (on if any N <= 2).
    """

    cell: Sequence = (100.0, 100.0, 100.0, 90.0, 90.0, 90.0)
    N_cells: Sequence = (5, 5, 5)
    default_F: Union[float, torch.Tensor] = 0.0
    hkl: Union[None, str, Path, HKLTable] = None
    misset_deg: Sequence = (0.0, 0.0, 0.0)
    mosaic_spread_deg: Union[float, torch.Tensor] = 0.0
    mosaic_domains: int | None = None
    mosaic_seed: int = DEFAULT_MOSAIC_SEED
    shape: str = "square"
    phi_start_deg: Union[float, torch.Tensor] = 0.0
    osc_deg: Union[float, torch.Tensor] = 0.0
    phi_steps: int | None = None
    spindle_axis: Sequence | None = None
    mosflm_matrix: Union[None, str, Path, np.ndarray] = None
    matrix_wavelength_A: float | None = None
    interpolate: bool | None = None
    fudge: float = 1.0
    phi_step_deg: Union[float, torch.Tensor, None] = None

    def __post_init__(self):
        self.validate()
        if isinstance(self.hkl, (str, Path)):
            self.hkl = read_hkl(self.hkl)
        if isinstance(self.mosflm_matrix, (str, Path)):
            self.mosflm_matrix = read_mosflm_matrix(self.mosflm_matrix)

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        if self.mosflm_matrix is None:
            cell = tuple(self.cell)
            if len(cell) != 6:
                raise ValueError(f"cell must have 6 entries (a b c alpha beta gamma), got {len(cell)}")
            for name, value in zip(("a", "b", "c"), cell[:3], strict=False):
                v.check_positive(f"cell edge {name}", value, unit="A")
            angles = [
                v.check_finite(f"cell angle {n}", x) for n, x in zip(("alpha", "beta", "gamma"), cell[3:], strict=False)
            ]
            for name, angle in zip(("alpha", "beta", "gamma"), angles, strict=False):
                if not 0.0 < angle < 180.0:
                    raise ValueError(f"cell angle {name} must lie in (0, 180) deg, got {angle!r}")
            al, be, ga = (x * DEG for x in angles)
            if cell_volume_factor(al, be, ga) <= 1e-12:  # rounding leaves flat cells at ~+1e-15
                raise ValueError(
                    f"impossible cell angles alpha={angles[0]!r}, beta={angles[1]!r}, gamma={angles[2]!r}: "
                    "each must be smaller than the sum of the other two and their sum below 360 deg"
                )
            edges = [v.as_number(x) for x in cell[:3]]
            volume = math.prod(edges) * math.sqrt(cell_volume_factor(al, be, ga))
            if not (math.isfinite(volume) and volume > 0 and math.isfinite(1.0 / volume)):
                raise ValueError(f"cell {tuple(edges)} A has volume {volume!r} A^3, which is not a usable number")
        elif self.matrix_wavelength_A is None:
            raise ValueError("mosflm_matrix needs matrix_wavelength_A (the A matrix includes the wavelength)")
        else:
            v.check_positive("matrix_wavelength_A", self.matrix_wavelength_A, unit="A")
            if not isinstance(self.mosflm_matrix, (str, Path)):
                v.check_matrix3("mosflm_matrix", self.mosflm_matrix)
        cells = tuple(self.N_cells) if not isinstance(self.N_cells, (int, float, torch.Tensor)) else (self.N_cells,) * 3
        if len(cells) != 3:
            raise ValueError(f"N_cells must have 3 entries (Na Nb Nc), got {len(cells)}")
        for name, value in zip(("Na", "Nb", "Nc"), cells, strict=False):
            if v.check_finite(f"N_cells {name}", value) < 1:
                raise ValueError(f"N_cells {name} must be >= 1, got {v.as_number(value)!r}")
        self.N_cells = cells
        v.check_non_negative("default_F", self.default_F)
        v.check_triple("misset_deg", self.misset_deg)
        v.check_non_negative("mosaic_spread_deg", self.mosaic_spread_deg)
        if self.mosaic_domains is not None:
            v.check_int("mosaic_domains", self.mosaic_domains, minimum=1)
        v.check_int("mosaic_seed", self.mosaic_seed, minimum=-(2**31))
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {self.shape!r}")
        v.check_finite("phi_start_deg", self.phi_start_deg)
        v.check_non_negative("osc_deg", self.osc_deg)
        if self.phi_steps is not None:
            v.check_int("phi_steps", self.phi_steps, minimum=1)
        if self.phi_step_deg is not None:
            v.check_positive("phi_step_deg", self.phi_step_deg, unit="deg")
        if self.spindle_axis is not None:
            axis = v.check_triple("spindle_axis", self.spindle_axis)
            if all(v.as_number(x) == 0 for x in axis):
                raise ValueError("spindle_axis must not be the zero vector")
        v.check_positive("fudge", self.fudge)

    # ---------------------------------------------------------- derived counts
    @property
    def n_domains(self) -> int:
        """nanoBragg's rule: 10 domains for a finite spread with no count, 1 for zero spread."""
        spread = v.as_number(self.mosaic_spread_deg)
        if spread == 0.0 and not _requires_grad(self.mosaic_spread_deg):
            return 1
        return self.mosaic_domains if self.mosaic_domains is not None else 10

    @property
    def n_phi(self) -> int:
        if self.phi_steps is not None:
            return self.phi_steps
        return 2 if v.as_number(self.osc_deg) > 0 else 1

    def use_interpolation(self) -> bool:
        if self.interpolate is not None:
            return bool(self.interpolate)
        return any(v.as_number(n) <= 2 for n in self.N_cells)

    def replace(self, **changes) -> Crystal:
        return dataclasses.replace(self, **changes)


def _requires_grad(value) -> bool:
    return isinstance(value, torch.Tensor) and value.requires_grad


def cell_volume_factor(alpha: float, beta: float, gamma: float) -> float:
    """1 - cos^2 a - cos^2 b - cos^2 g + 2 cos a cos b cos g: > 0 for a possible cell."""
    ca, cb, cg = math.cos(alpha), math.cos(beta), math.cos(gamma)
    return 1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg


def read_mosflm_matrix(path) -> np.ndarray:
    """The 3x3 A matrix of a MOSFLM ``.mat`` file; its columns are a*, b*, c* (times lambda)."""
    path = Path(path)
    try:
        numbers = path.read_text().split()[:9]
        matrix = np.array([float(x) for x in numbers]).reshape(3, 3)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read a MOSFLM matrix (3 lines of 3 numbers): {exc}") from exc
    try:
        return v.check_matrix3("MOSFLM matrix", matrix)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def reciprocal_axes_from_cell(cell: torch.Tensor) -> torch.Tensor:
    """nanoBragg's default orientation: a* along x, b* in the x-y plane.

    cell: (6,) lengths in Angstrom, angles in radians. Returns (3, 3), rows a*, b*, c*
    in 1/Angstrom.
    """
    a, b, c, al, be, ga = cell.unbind()
    ca, cb, cg = torch.cos(al), torch.cos(be), torch.cos(ga)
    sa, sb, sg = torch.sin(al), torch.sin(be), torch.sin(ga)
    volume = a * b * c * torch.sqrt(1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg)
    a_star = b * c * sa / volume
    b_star = c * a * sb / volume
    c_star = a * b * sg / volume
    cos_ga_star = (ca * cb - cg) / (sa * sb)
    sin_ga_star = torch.sqrt(1 - cos_ga_star * cos_ga_star)
    cos_be_star = (cg * ca - cb) / (sg * sa)
    cos_al_star = (cb * cg - ca) / (sb * sg)
    zero = torch.zeros_like(a)
    row_a = torch.stack([a_star, zero, zero])
    row_b = torch.stack([b_star * cos_ga_star, b_star * sin_ga_star, zero])
    row_c = torch.stack(
        [
            c_star * cos_be_star,
            c_star * (cos_al_star - cos_be_star * cos_ga_star) / sin_ga_star,
            c_star * volume / (a * b * c * sin_ga_star),
        ]
    )
    return torch.stack([row_a, row_b, row_c])


def real_from_reciprocal(reciprocal: torch.Tensor) -> torch.Tensor:
    """The dual basis: real rows from reciprocal rows, or reciprocal from real. (3,3)->(3,3)."""
    a_star, b_star, c_star = reciprocal.unbind()
    volume_star = torch.dot(a_star, torch.linalg.cross(b_star, c_star))
    return (
        torch.stack(
            [
                torch.linalg.cross(b_star, c_star),
                torch.linalg.cross(c_star, a_star),
                torch.linalg.cross(a_star, b_star),
            ]
        )
        / volume_star
    )


def oriented_real_axes(crystal: Crystal, dtype, device) -> torch.Tensor:
    """Real axes after the misset (before phi and mosaic), rows a, b, c in Angstrom. (3, 3).

    For a ``cell``, nanoBragg takes each real axis along the cross product of the two
    other reciprocal axes and forces its length to the cell edge.  Its default
    reciprocal frame is not exactly reciprocal to a triclinic cell, so the real angles
    differ slightly from the requested ones; the golden images show that behaviour,
    and it is kept.
    """
    misset = v.stack3(crystal.misset_deg, dtype, device) * DEG
    rotation = rotation_xyz(misset)
    return unrotated_real_axes(crystal, dtype, device) @ rotation.T


_UNROTATED = BoundedMemo(32)


def unrotated_real_axes(crystal: Crystal, dtype, device) -> torch.Tensor:
    """Real axes before the misset, rows a, b, c in Angstrom, (3, 3).

    Memoised on the cell's values when none of them is a tensor: a refinement of
    orientation and mosaicity re-simulates with the same fixed cell every step.
    """
    key = None
    if crystal.mosflm_matrix is None and not any(isinstance(x, torch.Tensor) for x in crystal.cell):
        key = (tuple(float(x) for x in crystal.cell), dtype, str(device))
    return _UNROTATED.get_or_build(key, lambda: _build_unrotated_real_axes(crystal, dtype, device))


def _build_unrotated_real_axes(crystal: Crystal, dtype, device) -> torch.Tensor:
    if crystal.mosflm_matrix is not None:
        matrix = torch.as_tensor(np.asarray(crystal.mosflm_matrix, dtype=float), dtype=dtype, device=device)
        wavelength_A = crystal.matrix_wavelength_A
        assert wavelength_A is not None  # validate() demands it with a matrix
        return real_from_reciprocal(matrix.T / float(wavelength_A))
    lengths = v.stack3(crystal.cell[:3], dtype, device)
    angles = v.stack3(crystal.cell[3:], dtype, device) * DEG
    a_star, b_star, c_star = reciprocal_axes_from_cell(torch.cat([lengths, angles])).unbind()
    directions = torch.stack(
        [torch.linalg.cross(b_star, c_star), torch.linalg.cross(c_star, a_star), torch.linalg.cross(a_star, b_star)]
    )
    return directions / torch.linalg.vector_norm(directions, dim=-1, keepdim=True) * lengths[:, None]


def oriented_reciprocal_axes(crystal: Crystal, dtype, device) -> torch.Tensor:
    """Reciprocal axes of :func:`oriented_real_axes`, rows a*, b*, c* in 1/Angstrom. (3, 3)."""
    return real_from_reciprocal(oriented_real_axes(crystal, dtype, device))


def phi_angles_rad(crystal: Crystal, dtype, device) -> torch.Tensor:
    """Spindle angles phi0 + k * step for k < steps, step = phi_step_deg or osc/steps, (n_phi,)."""
    n_phi = crystal.n_phi
    start = v.to_tensor(crystal.phi_start_deg, dtype, device)
    if crystal.phi_step_deg is not None:
        step = v.to_tensor(crystal.phi_step_deg, dtype, device)
    else:
        step = v.to_tensor(crystal.osc_deg, dtype, device) / n_phi
    steps = torch.arange(n_phi, dtype=dtype, device=device)
    return (start + step * steps) * DEG


def lattice_axes(crystal: Crystal, spindle_axis: torch.Tensor, dtype, device) -> torch.Tensor:
    """Real axes of every (phi step, mosaic domain), (n_phi * n_domains, 3, 3), rows a, b, c.

    nanoBragg rotates about the spindle first and applies the mosaic rotation after.
    """
    real = oriented_real_axes(crystal, dtype, device)
    phi_rot = _phi_rotations(crystal, spindle_axis, dtype, device)
    spread = v.to_tensor(crystal.mosaic_spread_deg, dtype, device) * DEG
    mosaic = mosaic_rotations(spread, crystal.mosaic_seed, crystal.n_domains)
    combined = mosaic[None, :, :, :] @ phi_rot[:, None, :, :]  # (phi, domain, 3, 3)
    axes = real[None, None] @ combined.transpose(-1, -2)  # rows rotated: a' = R a
    return axes.reshape(-1, 3, 3)


_PHI = BoundedMemo(32)


def _phi_rotations(crystal: Crystal, spindle_axis: torch.Tensor, dtype, device) -> torch.Tensor:
    """Spindle rotations of every phi step, (n_phi, 3, 3); memoised when all inputs are plain numbers."""
    given_axis = () if crystal.spindle_axis is None else tuple(crystal.spindle_axis)
    fields = (crystal.phi_start_deg, crystal.osc_deg, crystal.phi_step_deg or 0.0, *given_axis)
    key = None
    if not spindle_axis.requires_grad and not any(isinstance(x, torch.Tensor) for x in fields):
        key = (
            crystal.n_phi,
            tuple(float(x) for x in fields),
            crystal.spindle_axis is None,
            tuple(float(x) for x in spindle_axis.detach().cpu().reshape(-1)),
            dtype,
            str(device),
        )

    def build() -> torch.Tensor:
        axis = v.stack3(crystal.spindle_axis, dtype, device) if crystal.spindle_axis is not None else spindle_axis
        return rotation_about_axis(axis.to(dtype=dtype, device=device), phi_angles_rad(crystal, dtype, device))

    return _PHI.get_or_build(key, build)
