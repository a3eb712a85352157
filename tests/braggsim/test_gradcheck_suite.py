"""gradcheck through ``simulate`` for the beam, sensor and background parameters (float64).

As in test_gradcheck.py, a 10 x 10 window holds one Bragg spot and its flanks, and each
test insists the gradient is far from zero, so a check cannot pass on a flat function.
"""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

import braggsim
from braggsim.background import AmorphousBackground

pytestmark = pytest.mark.torch_path  # CI runs these on the torch path too (BRAGGSIM_NATIVE=0)

F64 = torch.float64


def param(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=F64, requires_grad=True)


def crystal() -> braggsim.Crystal:
    return braggsim.Crystal(cell=(100, 100, 100, 90, 90, 90), N_cells=(5, 5, 5), default_F=100.0, misset_deg=(5, 3, -2))


def detector(**changes) -> braggsim.Detector:
    fields = {
        "fpixels": 10,
        "pixel_size_mm": 0.1,
        "distance_mm": 100.0,
        "beam_center_mm": (-0.6, -0.6),
        "oversample": 1,
    }
    fields.update(changes)
    return braggsim.Detector(**fields)


def check(function, inputs, *, floor: float = 0.1) -> None:
    """gradcheck, then insist the gradient carries signal."""
    assert gradcheck(function, inputs, eps=1e-6, atol=1e-5, rtol=1e-3)
    image = function(*inputs)
    assert float(image.detach().max()) > 1.0, "the window should hold a Bragg spot"
    ramp = torch.linspace(1.0, 2.0, image.numel(), dtype=F64).reshape(image.shape)
    grads = torch.autograd.grad((image * ramp).sum(), inputs)
    for grad in grads:
        assert torch.isfinite(grad).all()
        assert float(grad.abs().max()) > floor, f"gradient {grad} is (nearly) zero"


@pytest.mark.parametrize("width_pct", [0.5, 2.0])
def test_dispersion_width(width_pct):
    def image(width):
        beam = braggsim.Beam(dispersion_pct=width, dispersion_steps=3)
        return braggsim.simulate(crystal(), detector(), beam, dtype=F64)

    check(image, (param(width_pct),))


def test_divergence_ranges():
    def image(h_mrad, v_mrad):
        beam = braggsim.Beam(divergence_mrad=(h_mrad, v_mrad), divergence_steps=(3, 3))
        return braggsim.simulate(crystal(), detector(), beam, dtype=F64)

    check(image, (param(3.0), param(2.0)), floor=0.01)


def test_explicit_source_directions_and_wavelengths():
    def image(tilt, wavelength):
        directions = torch.stack([torch.ones((), dtype=F64), tilt, torch.zeros((), dtype=F64)])[None, :]
        sources = braggsim.Sources(directions.expand(2, 3), None, torch.stack([wavelength, wavelength * 1.01]))
        return braggsim.simulate(crystal(), detector(), braggsim.Beam(sources=sources), dtype=F64)

    check(image, (param(0.002), param(1.0)))


def test_sensor_thickness_and_attenuation_length():
    def image(thickness_um, attenuation_um):
        tilted = detector(
            rotation_deg=(8.0, 5.0, 0.0),
            sensor_thickness_um=thickness_um,
            sensor_attenuation_um=attenuation_um,
            sensor_layers=3,
        )
        return braggsim.simulate(crystal(), tilted, braggsim.Beam(), dtype=F64)

    check(image, (param(450.0), param(300.0)), floor=1e-3)


def test_sensor_per_subpixel_capture_fraction():
    def image(thickness_um):
        tilted = detector(rotation_deg=(8.0, 0.0, 0.0), sensor_thickness_um=thickness_um, oversample_thick=True)
        return braggsim.simulate(crystal(), tilted, braggsim.Beam(), dtype=F64)

    check(image, (param(300.0),), floor=1e-3)


def test_background_scale_thickness_and_density():
    def image(scale, thickness_mm, density):
        background = AmorphousBackground("water", thickness_mm=thickness_mm, density_g_cm3=density, scale=scale)
        beam = braggsim.Beam(fluence=1e24)
        return braggsim.simulate(crystal(), detector(), beam, background=background, dtype=F64)

    check(image, (param(1.0), param(0.05), param(1.0)))


def test_sources_through_checkpointed_blocks():
    """Small blocks: every block is checkpointed, and the sources still get gradients."""

    def image(width):
        beam = braggsim.Beam(
            dispersion_pct=width, dispersion_steps=3, divergence_mrad=(2.0, 0.0), divergence_steps=(2, 1)
        )
        return braggsim.simulate(crystal(), detector(), beam, dtype=F64, block_evaluations=60)

    check(image, (param(1.0),), floor=0.01)
