"""Lattice transforms (the "shape factor" F_latt) of a finite crystal.

All functions take fractional Miller indices and are evaluated on the distance from the
nearest integer, so float32 stays accurate at large indices.  Near the removable
singularities they switch to Taylor series, which keeps values and gradients finite.
"""

from __future__ import annotations

import math

import torch

ROUND_NORMALISATION = 0.723601254558268
GAUSS_WIDTH = 0.63
TOPHAT_RADIUS_SQ = 0.3969


def _taylor_threshold(dtype: torch.dtype) -> float:
    # where the quotient's gradient loses digits to cancellation, use the series instead
    return 1e-2 if dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-4


def nearest_integer(h: torch.Tensor) -> torch.Tensor:
    """nanoBragg's rounding: h0 = ceil(h - 0.5)."""
    return torch.ceil(h - 0.5)


def sincg(dh: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """sin(N pi dh) / sin(pi dh), the grating transform, for dh = h - h0 in [-0.5, 0.5].

    Equal to nanoBragg's sin(N pi h)/sin(pi h) up to a sign that squaring removes.
    dh: (...); n: broadcastable to dh. Returns (...).
    """
    x = math.pi * dh
    small = x.abs() < _taylor_threshold(dh.dtype)
    x_safe = torch.where(small, torch.ones_like(x), x)
    exact = torch.sin(n * x_safe) / torch.sin(x_safe)
    n2 = n * n
    x2 = x * x
    series = n * (1 + x2 * (1 - n2) / 6 + x2 * x2 * (3 * n2 * n2 - 10 * n2 + 7) / 360)
    return torch.where(small, series, exact)


def sinc3_of_square(x2: torch.Tensor) -> torch.Tensor:
    """3 (sin x / x - cos x) / x^2 as a function of x^2 (smooth at 0). (...)->(...)."""
    small = x2 < 1e-4
    x2_safe = torch.where(small, torch.ones_like(x2), x2)
    x = torch.sqrt(x2_safe)
    exact = 3 * (torch.sin(x) / x - torch.cos(x)) / x2_safe
    series = 1 - x2 / 10 + x2 * x2 / 280
    return torch.where(small, series, exact)


def lattice_factor(
    dhkl: torch.Tensor,
    n_cells: torch.Tensor,
    shape: str,
    reciprocal_axes: torch.Tensor | None = None,
    fudge: float = 1.0,
) -> torch.Tensor:
    """F_latt for offsets from the nearest reciprocal-lattice point.

    dhkl: (..., 3) = (h - h0, k - k0, l - l0); n_cells: (3,);
    reciprocal_axes: (3, 3) rows a*, b*, c* in 1/Angstrom (gauss and tophat only).
    Returns (...).
    """
    if shape == "square":
        factors = sincg(dhkl, n_cells)
        return factors[..., 0] * factors[..., 1] * factors[..., 2]
    volume = n_cells[0] * n_cells[1] * n_cells[2]
    if shape == "round":
        hrad_sq = ((dhkl * n_cells) ** 2).sum(-1)
        return volume * ROUND_NORMALISATION * sinc3_of_square(math.pi**2 * hrad_sq * fudge)
    if reciprocal_axes is None:
        raise ValueError(f"lattice shape {shape!r} needs the reciprocal axes")
    delta = dhkl @ reciprocal_axes  # (..., 3) in 1/Angstrom
    rad_star_sq = (delta * delta).sum(-1) * volume * volume
    if shape == "gauss":
        return volume * torch.exp(-rad_star_sq / GAUSS_WIDTH * fudge)
    if shape == "tophat":
        return volume * (rad_star_sq * fudge < TOPHAT_RADIUS_SQ).to(dhkl.dtype)
    raise ValueError(f"unknown lattice shape {shape!r}")
