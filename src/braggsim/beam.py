"""The incident beam: wavelength, fluence and polarization."""

from __future__ import annotations

import dataclasses
from typing import Union

import torch

from . import _validate as v

DEFAULT_FLUENCE = 1.25932015286227e29  # photons/m^2; nanoBragg's default, r_e^2 * fluence = 1
R_E_SQ = 7.94079248018965e-30  # classical electron radius squared, m^2

Scalar = Union[float, torch.Tensor]


@dataclasses.dataclass
class Beam:
    """wavelength_A: Angstrom; fluence: photons/m^2; polarization: Kahn factor (0 =
    unpolarized, 1 = fully polarized along the convention's polarization axis);
    nopolar: drop the polarization factor altogether."""

    wavelength_A: Scalar = 1.0
    fluence: Scalar = DEFAULT_FLUENCE
    polarization: Scalar = 0.0
    nopolar: bool = False

    def __post_init__(self):
        v.check_positive("wavelength_A", self.wavelength_A, unit="A")
        v.check_positive("fluence", self.fluence, unit="photons/m^2")
        kahn = v.check_finite("polarization", self.polarization)
        if not -1.0 <= kahn <= 1.0:
            raise ValueError(f"polarization (Kahn factor) must lie in [-1, 1], got {kahn!r}")

    def replace(self, **changes) -> Beam:
        return dataclasses.replace(self, **changes)


def polarization_factor(
    kahn: torch.Tensor, incident: torch.Tensor, diffracted: torch.Tensor, polar_axis: torch.Tensor
) -> torch.Tensor:
    """nanoBragg's polarization factor 0.5 (1 + cos^2 2th - K cos(2 psi) sin^2 2th).

    incident: (3,) unit; diffracted: (..., 3) unit; polar_axis: (3,) unit. Returns (...).
    """
    cos2theta = diffracted @ incident
    cos2theta_sq = cos2theta * cos2theta
    sin2theta_sq = 1 - cos2theta_sq
    b_in = torch.linalg.cross(polar_axis, incident)
    b_in = b_in / torch.linalg.vector_norm(b_in)
    e_in = torch.linalg.cross(incident, b_in)
    e_in = e_in / torch.linalg.vector_norm(e_in)
    e_out = diffracted @ e_in
    b_out = diffracted @ b_in
    # cos(2 psi) with psi = -atan2(B, E), written without atan2 so it is smooth at 0
    radius_sq = e_out * e_out + b_out * b_out
    cos_2psi = torch.where(
        radius_sq > 0, (e_out * e_out - b_out * b_out) / torch.where(radius_sq > 0, radius_sq, 1.0), 1.0
    )
    return 0.5 * (1 + cos2theta_sq - kahn * cos_2psi * sin2theta_sq)
