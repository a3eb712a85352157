"""DIALS ExperimentList (.expt) read/write and the DIALS <-> braggsim frame mapping (no Qt).

The predictor below is written here from DIALS' definitions, independently of braggsim:
s0 = -direction / wavelength, q = A h with A = inv([a; b; c]), a ray s1 meets the panel at
origin + x fast + y slow, and DIALS pixel coordinates put the first pixel's centre at 0.5.
"""

import json
import math

import numpy as np
import pytest

import braggsim
from braggsim.dials_geometry import predict_still_px, still_geometry_from_header
from braggsim.io.expt import StillExperiment, experiment_to_dict, from_braggsim, read_expt, to_braggsim, write_expt
from braggsim.spots import predict_spots


def dials_panel_px(document, s1):
    """DIALS pixel coordinates (x, y) of rays s1 (n, 3) on panel 0 of an ExperimentList dict."""
    panel = document["detector"][0]["panels"][0]
    fast, slow, origin = (np.array(panel[k], float) for k in ("fast_axis", "slow_axis", "origin"))
    normal = np.cross(fast, slow)
    t = (origin @ normal) / (s1 @ normal)
    point = s1 * t[:, None] - origin
    pixel = np.array(panel["pixel_size"], float)
    return np.stack([point @ fast / pixel[0], point @ slow / pixel[1]], axis=1)


def dials_predict(document, hkl, *, still_rotation=False):
    """(x, y) DIALS pixel coordinates of reflections hkl (n, 3).

    still_rotation=False: along s0 + q.  True: DIALS' stills predictor, q turned onto the
    Ewald sphere about q x s0 (its length and azimuth kept)."""
    beam = document["beam"][0]
    s0 = -np.array(beam["direction"], float) / np.linalg.norm(beam["direction"]) / beam["wavelength"]
    crystal = document["crystal"][0]
    real = np.array([crystal[f"real_space_{k}"] for k in "abc"], float)
    q = np.asarray(hkl, float) @ np.linalg.inv(real).T
    if still_rotation:
        k = np.linalg.norm(s0)
        unit = s0 / k
        q_len = np.linalg.norm(q, axis=1)
        # on the sphere |s0 + q'| = k with |q'| = |q|: q'.unit = -|q|^2 / (2k)
        along = -(q_len**2) / (2 * k)
        perpendicular = q - np.outer(q @ unit, unit)
        perpendicular /= np.linalg.norm(perpendicular, axis=1)[:, None]
        q = np.outer(along, unit) + np.sqrt(q_len**2 - along**2)[:, None] * perpendicular
    return dials_panel_px(document, s0 + q)


def tilted_model():
    crystal = braggsim.Crystal(
        cell=(61.0, 74.0, 88.0, 90.0, 103.0, 90.0),
        N_cells=(8, 8, 8),
        default_F=100,
        misset_deg=(12.0, -33.0, 71.0),
    )
    detector = braggsim.Detector(
        fpixels=420,
        spixels=380,
        pixel_size_mm=0.172,
        distance_mm=180.0,
        beam_center_mm=(30.1, 37.7),
        rotation_deg=(1.5, -2.0, 0.7),
        convention="mosflm",
    )
    beam = braggsim.Beam(wavelength_A=0.97)
    return crystal, detector, beam


def test_braggsim_spots_equal_an_independent_dials_predictor_from_the_written_expt(tmp_path):
    crystal, detector, beam = tilted_model()
    path = tmp_path / "model.expt"
    write_expt(path, from_braggsim(crystal, detector, beam, space_group_hall="C 2y"))
    document = json.loads(path.read_text())  # read back as plain JSON: no braggsim in the way
    spots = predict_spots(crystal, detector, beam, excitation_tolerance=2e-3)
    assert len(spots.hkl) > 100
    xy = dials_predict(document, spots.hkl)
    braggsim_xy = spots.px[:, ::-1] + 0.5  # (slow, fast) centres at 0 -> DIALS (x, y) centres at 0.5
    assert np.abs(xy - braggsim_xy).max() < 0.01


def test_dials_expt_written_by_hand_predicts_what_braggsim_predicts(tmp_path):
    """A Pilatus as dxtbx models one (fast +x, slow -y, X-rays along -z), a crystal in DIALS' frame."""
    rng = np.random.default_rng(4)
    axes, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    axes *= np.sign(np.linalg.det(axes))
    real = axes.T * np.array([[57.8], [57.8], [150.0]])
    document = {
        "__id__": "ExperimentList",
        "experiment": [{"__id__": "Experiment", "beam": 0, "detector": 0, "crystal": 0}],
        "beam": [{"direction": [0.0, 0.0, 1.0], "wavelength": 0.96859, "polarization_fraction": 0.99}],
        "detector": [
            {
                "panels": [
                    {
                        "origin": [-1261.61 * 0.172, 1306.96 * 0.172, -351.0],
                        "fast_axis": [1.0, 0.0, 0.0],
                        "slow_axis": [0.0, -1.0, 0.0],
                        "pixel_size": [0.172, 0.172],
                        "image_size": [2463, 2527],
                        "trusted_range": [-1, 115897],
                    }
                ]
            }
        ],
        "crystal": [
            {
                "__id__": "crystal",
                "real_space_a": real[0].tolist(),
                "real_space_b": real[1].tolist(),
                "real_space_c": real[2].tolist(),
                "space_group_hall_symbol": " P 4abw 2nw",
            }
        ],
    }
    path = tmp_path / "hand.expt"
    path.write_text(json.dumps(document))
    (experiment,) = read_expt(path)
    assert experiment.space_group_hall == "P 4abw 2nw"
    crystal, detector, beam = to_braggsim(experiment, N_cells=(20, 20, 20))
    spots = predict_spots(crystal, detector, beam, excitation_tolerance=1e-3, d_min_A=2.0)
    assert len(spots.hkl) > 200
    xy = dials_predict(document, spots.hkl)
    assert np.abs(xy - (spots.px[:, ::-1] + 0.5)).max() < 0.01
    # the header reading gives the same panel: beam at Beam_xy (1261.61, 1306.96) px
    header = still_geometry_from_header(
        wavelength_A=0.96859,
        distance_mm=351.0,
        pixel_size_mm=0.172,
        beam_center_mm=((1306.96 - 0.5) * 0.172, (1261.61 - 0.5) * 0.172),
        shape=(2527, 2463),
    )
    np.testing.assert_allclose(header.origin, document["detector"][0]["panels"][0]["origin"], atol=1e-9)
    np.testing.assert_allclose(header.beam_centre_px(), [1306.96 - 0.5, 1261.61 - 0.5], atol=1e-9)


def test_stills_predictor_equals_an_independent_one():
    crystal, detector, beam = tilted_model()
    experiment = from_braggsim(crystal, detector, beam)
    document = {
        "beam": [{"direction": experiment.geometry.beam_direction.tolist(), "wavelength": 0.97}],
        "detector": [
            {
                "panels": [
                    {
                        "origin": experiment.geometry.origin.tolist(),
                        "fast_axis": experiment.geometry.fast.tolist(),
                        "slow_axis": experiment.geometry.slow.tolist(),
                        "pixel_size": [0.172, 0.172],
                    }
                ]
            }
        ],
        "crystal": [{f"real_space_{k}": row.tolist() for k, row in zip("abc", experiment.real_space, strict=True)}],
    }
    hkl = predict_spots(crystal, detector, beam, excitation_tolerance=3e-3).hkl
    px, delta_psi, valid = predict_still_px(experiment.real_space, hkl, experiment.geometry)
    assert valid.all()
    expected = dials_predict(document, hkl, still_rotation=True)
    assert np.abs(px[:, ::-1] + 0.5 - expected).max() < 1e-6
    # DeltaPsi is the turn that brings the relp onto the sphere: zero only for relps on it
    q = hkl @ np.linalg.inv(experiment.real_space).T
    excitation = np.linalg.norm(experiment.geometry.s0 + q, axis=1) - 1 / 0.97
    assert np.all(np.sign(delta_psi[np.abs(excitation) > 1e-4]) != 0)
    assert np.corrcoef(delta_psi, excitation)[0, 1] ** 2 > 0.5


def test_round_trip_keeps_every_number(tmp_path, device):
    crystal, detector, beam = tilted_model()
    first = from_braggsim(crystal, detector, beam, space_group_hall="C 2y", image="/data/x.cbf")
    first.half_mosaicity_deg, first.domain_size_A = 0.05, 2500.0
    path = tmp_path / "a.expt"
    write_expt(path, first)
    (second,) = read_expt(path)
    for name in ("origin", "fast", "slow", "beam_direction"):
        np.testing.assert_allclose(getattr(second.geometry, name), getattr(first.geometry, name), atol=1e-12)
    np.testing.assert_allclose(second.real_space, first.real_space, atol=1e-12)
    assert (second.image, second.half_mosaicity_deg, second.domain_size_A) == ("/data/x.cbf", 0.05, 2500.0)
    # and back to braggsim: the same detector frame and crystal axes
    crystal2, detector2, beam2 = to_braggsim(second, N_cells=(8, 8, 8))
    import torch

    from braggsim.crystal import oriented_real_axes
    from braggsim.detector import detector_frame

    frame1, frame2 = (detector_frame(d, torch.float64, device) for d in (detector, detector2))
    for name in ("fast", "slow", "pix0_mm"):
        np.testing.assert_allclose(getattr(frame2, name).numpy(), getattr(frame1, name).numpy(), atol=1e-9)
    np.testing.assert_allclose(
        oriented_real_axes(crystal2, torch.float64, device).numpy(),
        oriented_real_axes(crystal, torch.float64, device).numpy(),
        atol=1e-9,
    )
    assert math.isclose(float(beam2.wavelength_A), 0.97)
    assert math.isclose(float(crystal2.mosaic_spread_deg), 0.1)


@pytest.mark.parametrize(
    "document, message",
    [
        ({"__id__": "Nope"}, "not a DIALS ExperimentList"),
        ({"__id__": "ExperimentList", "experiment": []}, "holds no experiment"),
        (
            {"__id__": "ExperimentList", "experiment": [{"beam": 0, "detector": 0}], "beam": [], "detector": []},
            "beam index 0",
        ),
    ],
)
def test_bad_expt_files_are_value_errors_naming_the_file(tmp_path, document, message):
    path = tmp_path / "bad.expt"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=message) as caught:
        read_expt(path)
    assert "bad.expt" in str(caught.value)


def test_two_panel_detector_is_refused(tmp_path):
    crystal, detector, beam = tilted_model()
    document = experiment_to_dict(from_braggsim(crystal, detector, beam))
    document["detector"][0]["panels"].append(document["detector"][0]["panels"][0])
    path = tmp_path / "two.expt"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match="2 detector panels"):
        read_expt(path)


def test_experiment_without_crystal_converts_to_a_detector_and_beam():
    crystal, detector, beam = tilted_model()
    experiment = from_braggsim(None, detector, beam)
    assert isinstance(experiment, StillExperiment) and experiment.real_space is None
    none, detector2, _ = to_braggsim(experiment)
    assert none is None and detector2.shape == detector.shape
