"""Beam sources (divergence, dispersion, lists), the sensor, arbitrary geometry, pixel
selection: the API's rules, checked against nanoBragg's numbers and against each other."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import braggsim
from braggsim import Beam, Crystal, Detector, Sources, read_source_file, simulate
from braggsim.detector import detector_frame

pytestmark = pytest.mark.torch_path  # CI runs these on the torch path too (BRAGGSIM_NATIVE=0)

F64 = torch.float64
CRYSTAL = Crystal(cell=(100, 100, 100, 90, 90, 90), N_cells=(5, 5, 5), default_F=100.0, misset_deg=(5, 3, -2))


def small(**changes) -> Detector:
    fields = {"fpixels": 48, "pixel_size_mm": 0.1, "distance_mm": 100.0, "oversample": 1}
    fields.update(changes)
    return Detector(**fields)


# ------------------------------------------------------------------- the grid
@pytest.mark.parametrize(
    "steps,round_div,count",
    [((5, 3), True, 7), ((4, 4), True, 12), ((4, 4), False, 16), ((3, 3), True, 5), ((1, 1), False, 1)],
)
def test_divergence_grid_counts_follow_nanobragg(steps, round_div, count):
    # p09 (5 x 3 over 2 x 1 mrad) makes nanoBragg print "created a total of 7 sources"
    beam = Beam(divergence_mrad=(2.0, 1.0), divergence_steps=steps, round_divergence=round_div)
    assert beam.n_sources == count
    incident, wavelengths, weights = beam.source_tensors(
        torch.tensor([1.0, 0, 0]), torch.tensor([0, 0, 1.0]), F64, "cpu"
    )
    assert incident.shape == (count, 3) and torch.allclose(
        torch.linalg.vector_norm(incident, dim=-1), torch.ones(count, dtype=F64)
    )
    assert (weights == 1).all() and (wavelengths == 1).all()


def test_a_zero_range_cuts_nothing_and_one_step_sits_at_minus_half_the_range():
    beam = Beam(divergence_mrad=(1.0, 0.0), divergence_steps=(1, 1), divergence_step_mrad=(3.0, 1.0))
    incident, _, _ = beam.source_tensors(
        torch.tensor([1.0, 0, 0], dtype=F64), torch.tensor([0, 0, 1.0], dtype=F64), F64, "cpu"
    )
    # nonBragg's n02: one source, rotated by -0.5 mrad about beam x polarization (-y)
    assert incident.shape == (1, 3)
    assert abs(float(torch.atan2(incident[0, 2], incident[0, 0]))) == pytest.approx(5e-4, rel=1e-9)
    assert float(incident[0, 1]) == 0.0


def test_a_round_cut_that_leaves_no_source_is_an_error():
    # one step per axis sits at (-range/2, -range/2): outside nanoBragg's ellipse
    with pytest.raises(ValueError, match="no source"):
        Beam(divergence_mrad=(2.0, 1.0), divergence_steps=(1, 1), divergence_step_mrad=(3.0, 3.0))


def test_dispersion_wavelengths():
    beam = Beam(wavelength_A=1.2, dispersion_pct=2.0, dispersion_steps=5)
    _, wavelengths, _ = beam.source_tensors(
        torch.tensor([1.0, 0, 0], dtype=F64), torch.tensor([0, 0, 1.0], dtype=F64), F64, "cpu"
    )
    np.testing.assert_allclose(wavelengths.numpy(), 1.2 * np.array([0.99, 0.995, 1.0, 1.005, 1.01]), rtol=1e-14)


def test_one_explicit_source_along_the_beam_equals_the_plain_beam():
    # the sample path (lattice_sum over samples) and the fused single-source path agree
    plain = simulate(CRYSTAL, small(), Beam(), dtype=F64)
    listed = simulate(CRYSTAL, small(), Beam(sources=Sources([[1.0, 0.0, 0.0]])), dtype=F64)
    torch.testing.assert_close(listed, plain, rtol=1e-9, atol=0)


def test_source_weights_scale_their_contribution():
    one = simulate(CRYSTAL, small(), Beam(sources=Sources([[1.0, 0, 0]])), dtype=F64)
    half = simulate(CRYSTAL, small(), Beam(sources=Sources([[1.0, 0, 0], [1.0, 0, 0]], [1.0, 0.0])), dtype=F64)
    torch.testing.assert_close(half, one / 2, rtol=1e-9, atol=0)


def test_read_source_file_defaults(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("-10 0 0.001 0.5 1.1e-10\n# a comment\n\n-1,0.002\n")
    sources = read_source_file(path, beam_axis=(1, 0, 0), wavelength_A=0.9)
    directions = np.asarray(sources.directions)
    # missing Z takes -10 m x beam_z = 0; missing weight 1, wavelength the default
    np.testing.assert_allclose(directions[1], np.array([1.0, -0.002, 0.0]) / math.hypot(1.0, 0.002))
    np.testing.assert_allclose(sources.weights, [0.5, 1.0])
    np.testing.assert_allclose(sources.wavelengths_A, [1.1, 0.9])


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("", "no data"),
        ("# only a comment\n", "no data"),
        ("-10 0 0 1 1e-10\n-10 x 0\n", "line 2: 'x' is not a number"),
        ("0 0 0\n", "line 1: the source sits at the sample"),
        ("-10 0 0 -1\n", "line 1: weight must be >= 0"),
        ("-10 0 0 1 0\n", "line 1: wavelength must be > 0"),
        ("-10 0 nan\n", "line 1: 'nan' is not a finite number"),
    ],
)
def test_bad_source_files_name_the_file_and_line(tmp_path, text, fragment):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        read_source_file(path)
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_missing_source_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="absent.txt"):
        read_source_file(tmp_path / "absent.txt")


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"divergence_mrad": (-1.0, 0.0)}, "divergence_mrad"),
        ({"divergence_mrad": (1.0,)}, "pair"),
        ({"divergence_steps": (0, 1)}, "divergence_steps"),
        ({"divergence_step_mrad": (0.0, 1.0)}, "divergence_step_mrad"),
        ({"dispersion_pct": 250.0}, "below 200"),
        ({"dispersion_steps": 0}, "dispersion_steps"),
        ({"dispersion_pct": float("nan")}, "dispersion_pct"),
        ({"sources": Sources([[1, 0, 0]]), "dispersion_pct": 1.0}, "either explicit sources"),
    ],
)
def test_bad_beam_fields(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        Beam(**kwargs)


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"directions": [[0, 0, 0]]}, "zero vector"),
        ({"directions": [1, 0, 0]}, "shape"),
        ({"directions": [[1, 0, 0]], "weights": [1, 2]}, "1 entries"),
        ({"directions": [[1, 0, 0]], "wavelengths_A": [-1]}, "wavelengths_A"),
    ],
)
def test_bad_sources(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        Sources(**kwargs)


# ------------------------------------------------------------------ the sensor
def test_one_layer_captures_one_minus_exp_of_the_oblique_path():
    thin = simulate(CRYSTAL, small(rotation_deg=(10, 0, 0)), Beam(), dtype=F64)
    thick_detector = small(
        rotation_deg=(10, 0, 0), sensor_thickness_um=200.0, sensor_attenuation_um=150.0, sensor_layers=1
    )
    thick = simulate(CRYSTAL, thick_detector, Beam(), dtype=F64)
    frame = detector_frame(thick_detector, F64, "cpu")
    # first-subpixel ray of each pixel (oversample 1: the pixel centre)
    f = (torch.arange(48, dtype=F64) + 0.5) * 0.1
    positions = frame.pix0_mm + f[:, None, None] * frame.slow + f[None, :, None] * frame.fast
    parallax = (positions / torch.linalg.vector_norm(positions, dim=-1, keepdim=True)) @ frame.normal
    expected = thin * (1 - torch.exp(-200.0 / (150.0 * parallax)))
    torch.testing.assert_close(thick, expected, rtol=1e-10, atol=1e-12)


def test_capture_fractions_of_all_layers_add_up_with_oversample_thick():
    # a uniform image (no lattice: N = 1, flat F) so only the sensor shapes it
    flat = Crystal(cell=(20, 20, 20, 90, 90, 90), N_cells=(1, 1, 1), default_F=1.0, interpolate=False)
    layers = simulate(flat, small(sensor_thickness_um=300.0, sensor_layers=6, oversample_thick=True), Beam(), dtype=F64)
    one = simulate(flat, small(sensor_thickness_um=300.0, sensor_layers=1), Beam(), dtype=F64)
    # six thinner layers deeper in the sensor see the same total capture, slightly moved
    assert float(layers.sum() / one.sum()) == pytest.approx(1.0, rel=2e-3)


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"sensor_thickness_um": -1.0}, "sensor_thickness_um"),
        ({"sensor_thickness_um": 100.0, "sensor_attenuation_um": 0.0}, "sensor_attenuation_um"),
        ({"sensor_thickness_um": 100.0, "sensor_layers": 0}, "sensor_layers"),
        ({"sensor_layers": 3}, "needs sensor_thickness_um"),
        ({"fast_axis": (1, 0, 0)}, "convention='custom'"),
        ({"convention": "custom", "slow_axis": (0, 0, 0)}, "zero vector"),
        ({"convention": "custom", "pix0_mm": (100, 0, 0), "rotation_deg": (1, 0, 0)}, "pix0_mm"),
        ({"close_distance_mm": 0.0}, "close_distance_mm"),
        ({"roi": (1, 2, 3)}, "roi"),
        ({"pixel_mask": np.ones((3, 3))}, "pixel_mask"),
        ({"d_min_A": -1.0}, "d_min_A"),
    ],
)
def test_bad_detector_fields(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        small(**kwargs)


# --------------------------------------------------------- arbitrary geometry
def test_custom_convention_with_mosflm_vectors_is_mosflm():
    mosflm = small(beam_center_mm=(2.0, 3.0))
    custom = small(
        convention="custom",
        fast_axis=(0, 0, 1),
        slow_axis=(0, -1, 0),
        twotheta_axis=(0, 0, -1),
        beam_center_mm=(3.0 + 0.05, 2.0 + 0.05),  # (Fbeam, Sbeam) = (Ybeam, Xbeam) + half a pixel
    )
    torch.testing.assert_close(simulate(CRYSTAL, custom, dtype=F64), simulate(CRYSTAL, mosflm, dtype=F64))


def test_pix0_places_a_custom_detector_as_given():
    tilted = small(rotation_deg=(3, -2, 1), twotheta_deg=4.0, beam_center_mm=(2.0, 2.5))
    frame = detector_frame(tilted, F64, "cpu")
    custom = small(
        convention="custom",
        fast_axis=tuple(frame.fast.tolist()),
        slow_axis=tuple(frame.slow.tolist()),
        normal_axis=tuple(frame.normal.tolist()),
        twotheta_axis=(0, 0, -1),
        pix0_mm=tuple(frame.pix0_mm.tolist()),
    )
    torch.testing.assert_close(simulate(CRYSTAL, custom, dtype=F64), simulate(CRYSTAL, tilted, dtype=F64))


def test_curved_detector_keeps_every_pixel_at_the_distance():
    detector = small(curved=True, distance_mm=80.0)
    from braggsim.sample_geometry import sample_positions

    frame = detector_frame(detector, F64, "cpu")
    positions = sample_positions(detector, frame, torch.tensor(0.1, dtype=F64), range(48), 1)
    torch.testing.assert_close(torch.linalg.vector_norm(positions, dim=-1), torch.full((48, 48, 1, 1), 80.0, dtype=F64))


def test_roi_and_mask_zero_the_other_pixels_and_keep_the_rest():
    full = simulate(CRYSTAL, small(), dtype=F64)
    mask = np.ones((48, 48), dtype=bool)
    mask[10:20, 5:40] = False
    cut = simulate(CRYSTAL, small(roi=(3, 40, 6, 30), pixel_mask=mask), dtype=F64)
    keep = np.zeros((48, 48), dtype=bool)
    keep[6:31, 3:41] = True
    keep &= mask
    np.testing.assert_array_equal(cut.numpy()[~keep], 0.0)
    np.testing.assert_allclose(cut.numpy()[keep], full.numpy()[keep], rtol=1e-9)


def test_d_min_cuts_high_resolution_samples():
    full = simulate(CRYSTAL, small(distance_mm=40.0), dtype=F64)
    cut = simulate(CRYSTAL, small(distance_mm=40.0, d_min_A=20.0), dtype=F64)
    from braggsim import resolution

    d = resolution.resolution_map(small(distance_mm=40.0), Beam())
    assert np.all(cut.numpy()[d < 19.9] == 0) and float(full.numpy()[d < 19.9].sum()) > 0
    np.testing.assert_allclose(cut.numpy()[d > 20.1], full.numpy()[d > 20.1], rtol=1e-9)


def test_the_core_exports_the_new_api():
    for name in ("Sources", "AmorphousBackground", "StolTable", "read_stol", "simulate_background", "read_source_file"):
        assert name in braggsim.__all__ and hasattr(braggsim, name)
