"""Refinement of a still against its pixels: recovery of known parameters (no Qt)."""

import math
import types

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from braggsim.dials_geometry import StillGeometry, predict_still_px
from braggsim.spot_refine import SpotFit, real_space_from
from braggsim.spotfind import StrongSpots
from braggsim.still_refine import PixelRefineOptions, Shoeboxes, _ProfileModel, refine_still_pixels

CELL = (57.8, 57.8, 150.0, 90.0, 90.0, 90.0)
TRUTH = {"mosaic_deg": 0.08, "domain_A": 1500.0}


def small_still():
    geometry = StillGeometry(
        wavelength_A=0.97,
        beam_direction=np.array([0.0, 0.0, 1.0]),
        origin=np.array([-250.5 * 0.172, 250.5 * 0.172, -100.0]),
        fast=np.array([1.0, 0.0, 0.0]),
        slow=np.array([0.0, -1.0, 0.0]),
        pixel_size_mm=(0.172, 0.172),
        image_size=(501, 501),
    )
    real = real_space_from(Rotation.from_rotvec([0.4, -1.1, 0.7]).as_matrix(), CELL)
    limits = [int(np.linalg.norm(r) / 2.2) + 1 for r in real]
    hkl = np.stack(np.meshgrid(*(np.arange(-m, m + 1) for m in limits), indexing="ij"), -1).reshape(-1, 3)
    q = hkl @ np.linalg.inv(real).T
    length = np.linalg.norm(q, axis=1)
    excitation = np.abs(np.linalg.norm(geometry.s0 + q, axis=1) - np.linalg.norm(geometry.s0))
    allowed = 2.5 * (math.radians(TRUTH["mosaic_deg"]) * length + 0.4 / TRUTH["domain_A"])
    keep = (excitation < allowed) & (length > 1 / 30) & (length < 1 / 2.2)
    hkl = hkl[keep]
    px, _, valid = predict_still_px(real, hkl, geometry)
    inside = valid & np.all((px > 8) & (px < 492), axis=1)
    return geometry, real, hkl[inside], px[inside]


def fit_for(geometry, real, hkl, px, observed):
    n = len(hkl)
    return SpotFit(
        real_space=real,
        geometry=geometry,
        cell=CELL,
        cell_sigma=(0.0,) * 6,
        orientation_sigma_deg=(0.0,) * 3,
        detector={},
        detector_sigma={},
        hkl=hkl,
        indexed=np.ones(n, bool),
        inlier=np.ones(n, bool),
        rmsd_px=0.0,
        rmsd_indexed_px=0.0,
        delpsi_rmsd_deg=0.0,
        predicted_px=px,
        observed_px=observed,
    )


def synthetic_frame(seed=0):
    """An image drawn from the model itself at known parameters, with Poisson noise."""
    geometry, real, hkl, px = small_still()
    truth_fit = fit_for(geometry, real, hkl, px, px)
    options = PixelRefineOptions(start_mosaic_deg=TRUTH["mosaic_deg"], start_domain_A=TRUTH["domain_A"])
    boxes = Shoeboxes(np.zeros((501, 501)), np.ones((501, 501), bool), px, hkl, options.half_width_px, 1.0)
    with torch.no_grad():
        profile = (
            _ProfileModel(boxes, truth_fit, "P 41 21 2", options)
            .profiles(_ProfileModel(boxes, truth_fit, "P 41 21 2", options).theta0())
            .numpy()
        )
    rng = np.random.default_rng(seed)
    photons = rng.uniform(300, 3000, size=len(hkl))
    expected = np.full((501, 501), 3.0)
    np.add.at(expected, (boxes.slow, boxes.fast), photons[:, None] * profile)
    data = rng.poisson(expected).astype(np.float32)
    centre = np.rint(px).astype(int)
    spots = StrongSpots(
        px,
        photons,
        np.full(len(px), 3.0),
        np.full(len(px), 9),
        photons,
        np.stack([centre[:, 0] - 1, centre[:, 0] + 2, centre[:, 1] - 1, centre[:, 1] + 2], axis=1),
    )
    frame = types.SimpleNamespace(data=data, mask=np.ones(data.shape, bool))
    return frame, spots, geometry, real, hkl, px


@pytest.fixture(scope="module")
def recovered():
    frame, spots, geometry, real, hkl, px = synthetic_frame()
    assert len(hkl) > 60
    # start 0.05 deg off in orientation, 0.3 % off in the cell, mosaic and size 2x off
    turn = Rotation.from_rotvec(np.radians(0.05) * np.array([0.6, -0.48, 0.64])).as_matrix()
    start_real = (turn @ (real.T * 1.003)).T
    start_px = predict_still_px(start_real, hkl, geometry)[0]
    start = fit_for(geometry, start_real, hkl, start_px, px)
    start.cell = tuple(c * 1.003 if i < 3 else c for i, c in enumerate(CELL))
    options = PixelRefineOptions(start_mosaic_deg=0.16, start_domain_A=800.0, iterations=60, refine_detector=False)
    return refine_still_pixels(frame, spots, start, "P 41 21 2", CELL, options), real


def test_pixel_refinement_recovers_mosaicity_and_domain_size(recovered):
    result, _ = recovered
    assert result.final_nll < result.initial_nll
    assert abs(result.mosaic_deg / TRUTH["mosaic_deg"] - 1) < 0.1
    assert abs(result.domain_size_A / TRUTH["domain_A"] - 1) < 0.15
    for name in ("mosaic_spread_deg", "domain_size_A"):
        sigma = result.parameters[name]["sigma"]
        assert 0 < sigma < 0.1 * result.parameters[name]["value"]


def test_pixel_refinement_recovers_orientation_and_cell(recovered):
    result, real = recovered
    turned = result.real_space.T @ np.linalg.inv(real.T)
    u, _, vt = np.linalg.svd(turned)
    assert math.degrees(Rotation.from_matrix(u @ vt).magnitude()) < 0.01
    assert abs(result.cell[0] / 57.8 - 1) < 5e-4 and abs(result.cell[2] / 150.0 - 1) < 5e-4
    assert result.cell[0] == result.cell[1]  # tetragonal


def test_pixel_refinement_options_are_checked():
    with pytest.raises(ValueError, match="gain"):
        PixelRefineOptions(gain=0)
    with pytest.raises(ValueError, match="half_width_px"):
        PixelRefineOptions(half_width_px=0)


def test_progress_follows_every_iteration_and_can_stop_the_run():
    """The GUI's hook: a step at the start and after each iteration, with the model there;
    a true return ends the run, which keeps the best parameters so far."""
    frame, spots, geometry, real, hkl, px = synthetic_frame(seed=1)
    start = fit_for(geometry, real, hkl, px, px)
    options = PixelRefineOptions(start_mosaic_deg=0.16, start_domain_A=800.0, iterations=30, refine_detector=False)
    steps = []
    full = refine_still_pixels(frame, spots, start, "P 41 21 2", CELL, options, progress=steps.append)
    assert [s.iteration for s in steps] == list(range(len(steps))) and len(steps) > 3
    assert steps[0].nll == pytest.approx(full.initial_nll)
    assert steps[-1].nll == pytest.approx(full.final_nll, rel=1e-9)
    assert steps[-1].mosaic_deg == pytest.approx(full.mosaic_deg) and steps[-1].cell == full.cell
    assert steps[0].mosaic_deg == pytest.approx(0.16) and steps[0].domain_size_A == pytest.approx(800.0)

    seen = []
    stopped = refine_still_pixels(
        frame, spots, start, "P 41 21 2", CELL, options, progress=lambda s: seen.append(s) or s.iteration >= 2
    )
    assert [s.iteration for s in seen] == [0, 1, 2]
    assert stopped.final_nll == pytest.approx(seen[-1].nll, rel=1e-9)
    assert full.final_nll < stopped.final_nll < stopped.initial_nll
