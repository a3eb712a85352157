"""The incident beam: wavelength, fluence, polarization, divergence and bandwidth."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Union

import torch

from . import _validate as v
from .sources import Sources, grid_sources, kept_grid_points, resolve_steps

DEFAULT_FLUENCE = 1.25932015286227e29  # photons/m^2; nanoBragg's default, r_e^2 * fluence = 1
R_E_SQ = 7.94079248018965e-30  # classical electron radius squared, m^2

Scalar = Union[float, torch.Tensor]


@dataclasses.dataclass
class Beam:
    """The incident beam.

    wavelength_A: Angstrom (the central wavelength lambda0); fluence: photons/m^2;
    polarization: Kahn factor (0 = unpolarized, 1 = fully polarized along the
    convention's polarization axis); nopolar: drop the polarization factor altogether.

    Sources (nanoBragg's divergence and dispersion; see :mod:`braggsim.sources`):

    divergence_mrad: (horizontal, vertical) full ranges in mrad; divergence_steps: grid
        points along each; divergence_step_mrad: spacing, None = range / (steps - 1);
        round_divergence: drop grid corners outside the ellipse (nanoBragg's default).
    dispersion_pct: full spectral width delta-lambda/lambda in percent, sampled at
        dispersion_steps wavelengths (spacing dispersion_step_pct, None = width /
        (steps - 1)) from lambda0 * (1 - width/2).
    sources: an explicit :class:`~braggsim.sources.Sources` list instead of the grid.

    The ranges, widths and wavelength may be tensors; the image is differentiable in
    them.  With one step along an axis its single point sits at -range/2, as in nanoBragg.
    """

    wavelength_A: Scalar = 1.0
    fluence: Scalar = DEFAULT_FLUENCE
    polarization: Scalar = 0.0
    nopolar: bool = False
    divergence_mrad: Sequence = (0.0, 0.0)
    divergence_steps: Sequence = (1, 1)
    divergence_step_mrad: Sequence | None = None
    round_divergence: bool = True
    dispersion_pct: Scalar = 0.0
    dispersion_steps: int = 1
    dispersion_step_pct: Scalar | None = None
    sources: Sources | None = None

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Check every field; raises ValueError naming the first bad one."""
        v.check_positive("wavelength_A", self.wavelength_A, unit="A")
        v.check_positive("fluence", self.fluence, unit="photons/m^2")
        kahn = v.check_finite("polarization", self.polarization)
        if not -1.0 <= kahn <= 1.0:
            raise ValueError(f"polarization (Kahn factor) must lie in [-1, 1], got {kahn!r}")
        ranges = _pair("divergence_mrad", self.divergence_mrad)
        for name, value in zip(("horizontal", "vertical"), ranges, strict=True):
            v.check_non_negative(f"divergence_mrad ({name})", value)
        self.divergence_steps = tuple(
            v.check_int(f"divergence_steps ({n})", s, minimum=1)
            for n, s in zip(("horizontal", "vertical"), _pair("divergence_steps", self.divergence_steps), strict=True)
        )
        if self.divergence_step_mrad is not None:
            for name, value in zip(
                ("horizontal", "vertical"), _pair("divergence_step_mrad", self.divergence_step_mrad), strict=True
            ):
                v.check_positive(f"divergence_step_mrad ({name})", value, unit="mrad")
        width = v.check_non_negative("dispersion_pct", self.dispersion_pct)
        if width >= 200.0:
            raise ValueError(f"dispersion_pct must be below 200 % (wavelengths stay > 0), got {width!r}")
        self.dispersion_steps = v.check_int("dispersion_steps", self.dispersion_steps, minimum=1)
        if self.dispersion_step_pct is not None:
            v.check_positive("dispersion_step_pct", self.dispersion_step_pct, unit="%")
        if self.sources is not None:
            if not isinstance(self.sources, Sources):
                raise ValueError(f"sources must be a braggsim.sources.Sources, got {type(self.sources).__name__}")
            if self.has_grid():
                raise ValueError("give either explicit sources or a divergence/dispersion grid, not both")
        elif self.has_grid():
            _ = self.n_sources  # a grid the round cut empties is an error now, not at simulate time

    def replace(self, **changes) -> Beam:
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------------- sources
    def has_grid(self) -> bool:
        """True when divergence or dispersion asks for more than the central source."""
        return (
            any(v.as_number(x) != 0 or _grad(x) for x in _pair("divergence_mrad", self.divergence_mrad))
            or tuple(self.divergence_steps) != (1, 1)
            or v.as_number(self.dispersion_pct) != 0
            or _grad(self.dispersion_pct)
            or self.dispersion_steps != 1
        )

    def source_grid_axes(self) -> tuple:
        """((h_range, steps, h_step), (v ...), (dispersion, steps, step)) after nanoBragg's
        rules, in radians and fractions; range and step entries keep tensors."""
        ranges = _pair("divergence_mrad", self.divergence_mrad)
        given = _pair("divergence_step_mrad", self.divergence_step_mrad) if self.divergence_step_mrad else (None, None)
        axes = [
            _grid_axis(ranges[k], self.divergence_steps[k], given[k], 1e-3, self.round_divergence) for k in range(2)
        ]
        axes.append(_grid_axis(self.dispersion_pct, self.dispersion_steps, self.dispersion_step_pct, 1e-2, False))
        return tuple(axes)

    @property
    def n_sources(self) -> int:
        """How many sources a pixel sums over (the grid after the round cut, or the list)."""
        if self.sources is not None:
            return len(self.sources)
        h, v_, dispersion = self.source_grid_axes()
        numbers = [tuple(v.as_number(x) if isinstance(x, torch.Tensor) else x for x in axis) for axis in (h, v_)]
        return len(kept_grid_points(numbers[0], numbers[1], self.round_divergence)) * dispersion[1]

    def source_tensors(self, beam_axis: torch.Tensor, polar_axis: torch.Tensor, dtype, device) -> tuple:
        """(incident (S, 3) unit vectors, wavelengths (S,) in A, weights (S,)).

        beam_axis, polar_axis: the convention's (3,) unit vectors, around which the grid
        is built.  Differentiable in every tensor field.
        """
        if self.sources is not None:
            return self.sources.tensors(self.wavelength_A, dtype, device)
        wavelength = v.to_tensor(self.wavelength_A, dtype, device)
        if not self.has_grid():
            return beam_axis[None, :].to(dtype), wavelength.reshape(1), torch.ones(1, dtype=dtype, device=device)
        h, v_, dispersion = self.source_grid_axes()
        incident, wavelengths = grid_sources(
            beam_axis.to(dtype), polar_axis.to(dtype), wavelength, h, v_, self.round_divergence, dispersion
        )
        return incident, wavelengths, torch.ones(wavelengths.shape, dtype=dtype, device=device)


def _pair(name: str, values) -> tuple:
    return v.check_entries(name, values, 2, "a pair (horizontal, vertical)")


def _grad(value) -> bool:
    return isinstance(value, torch.Tensor) and value.requires_grad


def _grid_axis(range_value, steps: int, step, scale: float, _round: bool) -> tuple:
    """(range, steps, step) in radians/fractions; tensors stay tensors (for gradients)."""
    keep = _grad(range_value) or _grad(step)
    number = v.as_number(range_value) * scale
    step_number = None if step is None else v.as_number(step) * scale
    resolved_range, resolved_steps, resolved_step = resolve_steps(number, steps, step_number, keep)
    if resolved_steps == 1 and resolved_range == 0.0 and not keep:
        return (0.0, 1, 0.0)
    range_out = range_value * scale
    default_step = range_out / (steps - 1) if steps > 1 else range_out
    step_out = step * scale if step is not None else default_step
    return (range_out, resolved_steps, step_out)


def fluence_from_flux(flux_ph_s: float, exposure_s: float, beamsize_mm: float) -> float:
    """nanoBragg's -flux/-exposure/-beamsize rule: flux * exposure / beamsize^2 (photons/m^2)."""
    beamsize_m = beamsize_mm / 1000.0
    return flux_ph_s * exposure_s / beamsize_m / beamsize_m


def polarization_factor(
    kahn: torch.Tensor, incident: torch.Tensor, diffracted: torch.Tensor, polar_axis: torch.Tensor
) -> torch.Tensor:
    """nanoBragg's polarization factor 0.5 (1 + cos^2 2th - K cos(2 psi) sin^2 2th).

    incident: (3,) unit; diffracted: (..., 3) unit; polar_axis: (3,) unit. Returns (...).
    """
    b_in = torch.linalg.cross(polar_axis, incident)
    b_in = b_in / torch.linalg.vector_norm(b_in)
    e_in = torch.linalg.cross(incident, b_in)
    e_in = e_in / torch.linalg.vector_norm(e_in)
    # one matrix product gives cos 2theta and the E and B components of every ray
    cos2theta, e_out, b_out = (diffracted @ torch.stack([incident, e_in, b_in], dim=1)).unbind(-1)
    cos2theta_sq = cos2theta * cos2theta
    # cos(2 psi) with psi = -atan2(B, E), written without atan2 so it is smooth at 0
    e_sq, b_sq = e_out * e_out, b_out * b_out
    radius_sq = e_sq + b_sq
    cos_2psi = torch.where(radius_sq > 0, (e_sq - b_sq) / torch.where(radius_sq > 0, radius_sq, 1.0), 1.0)
    return 0.5 * (1 + cos2theta_sq - kahn * cos_2psi * (1 - cos2theta_sq))
