"""Mosaic domains: counts, rotation geometry, reparameterization in the spread."""

from __future__ import annotations

import math

import pytest
import torch

import braggsim
from braggsim.crystal import lattice_axes, oriented_real_axes
from braggsim.mosaic import mosaic_draws, mosaic_rotations

F64 = torch.float64
DEG = math.pi / 180


def crystal(**kwargs) -> braggsim.Crystal:
    return braggsim.Crystal(cell=(100, 100, 100, 90, 90, 90), default_F=100, **kwargs)


def test_domain_counts_follow_nanobragg():
    assert crystal().n_domains == 1  # no spread: one domain
    assert crystal(mosaic_spread_deg=0.3).n_domains == 10  # -mosaic without -mosaic_dom
    assert crystal(mosaic_spread_deg=0.3, mosaic_domains=7).n_domains == 7
    assert crystal(mosaic_spread_deg=0.0, mosaic_domains=7).n_domains == 1
    # a spread that is being refined keeps its domains even when it starts at zero
    spread = torch.tensor(0.0, dtype=F64, requires_grad=True)
    assert crystal(mosaic_spread_deg=spread, mosaic_domains=7).n_domains == 7


@pytest.mark.parametrize("seed,n", [(42, 5), (12345678, 20), (7, 50)])
def test_domains_are_proper_rotations_and_domain_zero_is_identity(seed, n):
    rotations = mosaic_rotations(torch.tensor(2.0 * DEG, dtype=F64), seed, n)
    assert rotations.shape == (n, 3, 3)
    eye = torch.eye(3, dtype=F64)
    assert torch.equal(rotations[0], eye)
    torch.testing.assert_close(rotations @ rotations.transpose(-1, -2), eye.expand(n, 3, 3), rtol=0, atol=1e-14)
    torch.testing.assert_close(torch.linalg.det(rotations), torch.ones(n, dtype=F64), rtol=0, atol=1e-14)
    # every rotation turns about its frozen axis, so the axis is a fixed point
    axes, _ = mosaic_draws(seed, n)
    axes = torch.as_tensor(axes, dtype=F64)
    torch.testing.assert_close((rotations @ axes[..., None])[..., 0], axes, rtol=0, atol=1e-14)


def test_angles_stay_inside_the_spread_and_fill_it():
    spread_deg = 1.0
    rotations = mosaic_rotations(torch.tensor(spread_deg * DEG, dtype=F64), 12345678, 400)
    cosines = ((torch.diagonal(rotations, dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    angles_deg = torch.rad2deg(torch.arccos(cosines))[1:]
    assert float(angles_deg.max()) <= spread_deg
    # (1 - r3^2)^(1/3) with r3 uniform on [-1, 1] has mean ~0.84: most domains near the cap edge
    assert 0.80 < float(angles_deg.mean()) / spread_deg < 0.88
    assert float(angles_deg.max()) > 0.99 * spread_deg


def test_angle_is_linear_in_the_spread():
    # reparameterization: the frozen draws scale with the spread, nothing is redrawn
    small = mosaic_rotations(torch.tensor(0.1 * DEG, dtype=F64), 42, 5)
    large = mosaic_rotations(torch.tensor(0.3 * DEG, dtype=F64), 42, 5)

    def angles(r):
        return torch.arccos(((torch.diagonal(r, dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1))

    torch.testing.assert_close(angles(large)[1:], 3 * angles(small)[1:], rtol=1e-6, atol=0)


def test_spread_gradient_matches_finite_difference():
    def loss(spread_rad):
        return (mosaic_rotations(spread_rad, 42, 5) * torch.arange(45, dtype=F64).reshape(5, 3, 3)).sum()

    spread = torch.tensor(0.5 * DEG, dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(loss(spread), spread)
    h = 1e-7
    numeric = (loss(spread.detach() + h) - loss(spread.detach() - h)) / (2 * h)
    assert float(grad) == pytest.approx(float(numeric), rel=1e-6)
    assert abs(float(grad)) > 1.0


def test_mosaic_is_applied_after_phi(device):
    # nanoBragg: a' = M_domain (R_phi a); the two rotations do not commute
    c = crystal(misset_deg=(10, 20, 30), mosaic_spread_deg=3.0, mosaic_domains=3, mosaic_seed=5, phi_start_deg=25.0)
    spindle = torch.tensor([0.0, 0.0, 1.0], dtype=F64)
    axes = lattice_axes(c, spindle, F64, device)  # (3 domains, 3, 3)
    real = oriented_real_axes(c, F64, device)
    phi = 25 * DEG
    r_phi = torch.tensor([[math.cos(phi), -math.sin(phi), 0], [math.sin(phi), math.cos(phi), 0], [0, 0, 1]], dtype=F64)
    mosaic = mosaic_rotations(torch.tensor(3.0 * DEG, dtype=F64), 5, 3)
    expected = torch.einsum("dij,jk,ak->dai", mosaic, r_phi, real)
    torch.testing.assert_close(axes, expected, rtol=0, atol=1e-12)
    wrong_order = torch.einsum("ij,djk,ak->dai", r_phi, mosaic, real)
    assert float((axes - wrong_order).abs().max()) > 1e-3


def test_mosaic_spread_broadens_spots_but_keeps_the_domain_average():
    detector = braggsim.Detector(fpixels=64, pixel_size_mm=0.1, distance_mm=100, oversample=1)
    sharp = braggsim.simulate(crystal(N_cells=(10, 10, 10), misset_deg=(1, 2, 3)), detector, dtype=F64)
    mosaic = braggsim.simulate(
        crystal(N_cells=(10, 10, 10), misset_deg=(1, 2, 3), mosaic_spread_deg=1.0, mosaic_domains=20),
        detector,
        dtype=F64,
    )
    # intensity spread over more pixels: the peak drops, more pixels are lit
    assert float(mosaic.max()) < float(sharp.max())
    lit = lambda image: int((image > 0.01 * float(sharp.max())).sum())  # noqa: E731
    assert lit(mosaic) > lit(sharp)
