"""torch.autograd.gradcheck through the full ``simulate`` (float64).

Each check runs on a 10 x 10 detector whose window holds one Bragg spot and its
flanks (the direct beam lies just off the corner), so intensities change to first
order with every parameter and the gradients are far from zero.  Each test also
asserts that the gradient is non-zero, so a check cannot pass on a flat function.
"""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

import braggsim

pytestmark = pytest.mark.torch_path  # CI runs these on the torch path too (BRAGGSIM_NATIVE=0)

F64 = torch.float64


def param(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=F64, requires_grad=True)


def model(
    *,
    cell=(100.0, 100.0, 100.0, 90.0, 90.0, 90.0),
    misset=(5.0, 3.0, -2.0),
    spread=0.0,
    domains=None,
    distance=100.0,
    center=(-0.6, -0.6),
    wavelength=1.0,
    pixels=10,
    shape="square",
) -> torch.Tensor:
    crystal = braggsim.Crystal(
        cell=cell,
        N_cells=(5, 5, 5),
        default_F=100.0,
        misset_deg=misset,
        shape=shape,
        mosaic_spread_deg=spread,
        mosaic_domains=domains,
        mosaic_seed=42,
    )
    # explicit oversample: the automatic rule is an integer step function of the inputs
    detector = braggsim.Detector(
        fpixels=pixels, pixel_size_mm=0.1, distance_mm=distance, beam_center_mm=center, oversample=1
    )
    return braggsim.simulate(crystal, detector, braggsim.Beam(wavelength_A=wavelength), dtype=F64)


def check(function, inputs) -> None:
    """gradcheck, then insist the gradient carries signal."""
    assert gradcheck(function, inputs, eps=1e-6, atol=1e-5, rtol=1e-3)
    image = function(*inputs)
    assert float(image.detach().max()) > 10.0, "the window should hold a Bragg spot"
    # a weighted sum, so a spot that only moves still changes the objective
    ramp = torch.linspace(1.0, 2.0, image.numel(), dtype=F64).reshape(image.shape)
    grads = torch.autograd.grad((image * ramp).sum(), inputs)
    for grad in grads:
        assert torch.isfinite(grad).all()
        assert float(grad.abs().max()) > 0.1, f"gradient {grad} is (nearly) zero"


@pytest.mark.parametrize("spread_deg", [0.5, 0.001])
def test_mosaic_spread(spread_deg):
    check(lambda s: model(spread=s, domains=5), (param(spread_deg),))


@pytest.mark.parametrize("axis", [0, 1, 2], ids=["misset_x", "misset_y", "misset_z"])
def test_each_misset_angle(axis):
    base = [5.0, 3.0, -2.0]

    def image(angle):
        misset = list(base)
        misset[axis] = angle
        return model(misset=misset)

    check(image, (param(base[axis]),))


def test_cell_edges():
    check(lambda a, b, c: model(cell=(a, b, c, 90.0, 90.0, 90.0)), (param(100.0), param(99.0), param(101.0)))


def test_cell_angles():
    check(
        lambda al, be, ga: model(cell=(100.0, 100.0, 100.0, al, be, ga)),
        (param(88.0), param(91.0), param(92.5)),
    )


def test_distance_and_beam_centre():
    check(lambda d, x, y: model(distance=d, center=(x, y)), (param(100.0), param(-0.6), param(-0.55)))


def test_wavelength():
    check(lambda lam: model(wavelength=lam), (param(1.0),))


def test_misset_and_spread_together_with_round_shape():
    # several parameters at once, through a different lattice transform
    check(
        lambda rx, s: model(misset=(rx, 3.0, -2.0), spread=s, domains=3, shape="round"),
        (param(5.0), param(0.3)),
    )
