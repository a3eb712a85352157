"""The plugin's build step, Qt-free: a value dict -> (crystal, detector, beam with its
sources, sensor), amorphous background, noise -> the frame the Simulate widget shows."""

import numpy as np
import pytest
import torch

import braggsim
from braggsim.noise import DetectorModel, noisify
from napari_braggsim._model import (
    AIR_DENSITY_G_CM3,
    AIR_MOLECULAR_WEIGHT,
    DEFAULTS,
    SCENE_DEFAULTS,
    build_backgrounds,
    build_model,
    check_scene,
)
from napari_braggsim._render import Cancelled, render

R_E_SQ = 7.94079248018965e-30
AVOGADRO = 6.02214179e23


def _spots(crystal, detector, beam) -> np.ndarray:
    with torch.no_grad():
        return braggsim.simulate(crystal, detector, beam).numpy()


def test_the_scene_is_off_by_default_and_changes_nothing():
    crystal, detector, beam = build_model(DEFAULTS)
    assert beam.n_sources == 1 and not beam.has_grid() and not detector.has_sensor
    frame = render(DEFAULTS)
    assert frame.noise is None and frame.background_mean == 0.0 and frame.unit == "photons"
    assert frame.image.sum() == pytest.approx(1113.6537, rel=1e-4)  # nanoBragg's total for p02
    np.testing.assert_array_equal(frame.image, _spots(crystal, detector, beam))
    assert set(SCENE_DEFAULTS) <= set(frame.values) and frame.values["psf"] == "none"


def test_divergence_bandwidth_and_sensor_are_the_apis():
    values = {
        **DEFAULTS,
        "divergence_h_mrad": 2.0,
        "divergence_v_mrad": 1.0,
        "divergence_steps": 3,
        "dispersion_pct": 0.5,
        "dispersion_steps": 3,
        "sensor_on": True,
        "sensor_thickness_um": 300.0,
        "sensor_attenuation_um": 200.0,
        "sensor_layers": 3,
    }
    crystal, detector, beam = build_model(values)
    plain_crystal, plain_detector, plain_beam = build_model(DEFAULTS)
    expected_beam = plain_beam.replace(
        divergence_mrad=(2.0, 1.0), divergence_steps=(3, 3), dispersion_pct=0.5, dispersion_steps=3
    )
    expected_detector = plain_detector.replace(sensor_thickness_um=300.0, sensor_attenuation_um=200.0, sensor_layers=3)
    # 3x3 directions, the 4 corners outside the ellipse dropped, times 3 wavelengths
    assert beam.n_sources == expected_beam.n_sources == 15
    assert detector.n_layers == 3
    frame = render(values)
    expected = _spots(plain_crystal, expected_detector, expected_beam)
    np.testing.assert_allclose(frame.image, expected, rtol=1e-6, atol=1e-9)
    plain = _spots(plain_crystal, plain_detector, plain_beam)
    assert np.abs(frame.image - plain).max() > 0.1 * plain.max()  # the settings change the spots
    assert "15 sources" in frame.describe() and "300 µm sensor" in frame.describe()


def test_a_range_gets_at_least_two_points_and_a_zero_range_one():
    _, _, beam = build_model({**DEFAULTS, "divergence_h_mrad": 1.0, "divergence_steps": 1})
    assert beam.divergence_steps == (2, 1) and beam.n_sources == 2  # nanoBragg: max(steps, 2) with a range
    _, _, beam = build_model({**DEFAULTS, "divergence_steps": 7, "dispersion_steps": 5})
    assert beam.n_sources == 1 and not beam.has_grid()  # steps without a range: still one source


def test_water_adds_nonbraggs_level():
    values = {**DEFAULTS, "water_um": 1.0}
    crystal, detector, beam = build_model(values)
    frame = render(values)
    background = frame.photons - _spots(crystal, detector, beam)
    cube = braggsim.AmorphousBackground("water", thickness_mm=0.001, width_mm=0.001, height_mm=0.001)
    with torch.no_grad():
        expected = braggsim.simulate_background(detector, beam, cube).numpy()
    np.testing.assert_allclose(background, expected, rtol=2e-6)
    assert frame.background_mean == pytest.approx(float(expected.mean()), rel=1e-6)
    # by hand at the beam: r_e^2 * fluence * molecules * F(0)^2 * pixel solid angle, water's F(0) = 2.57
    molecules = (1e-6) ** 3 * 1e6 * AVOGADRO / 18.0
    at_beam = R_E_SQ * 1e28 * molecules * 2.57**2 * (0.1 / 100.0) ** 2
    assert background[32, 32] == pytest.approx(at_beam, rel=2e-4)  # the beam hits the corner of (32, 32)
    assert background.min() == background[32, 32]  # water's F rises towards its ring (stol 0.16 1/A)
    # and what braggsim simulate -water renders with the spots (oversampled as they are)
    with torch.no_grad():
        together = braggsim.simulate(crystal, detector, beam, background=cube).numpy()
    np.testing.assert_allclose(frame.photons, together, rtol=1e-4)


def test_air_and_the_beam_size():
    values = {**DEFAULTS, "air_mm": 20.0, "beam_size_mm": 0.05, "water_um": 100.0}
    water, air = build_backgrounds(values)
    assert (water.thickness_mm, water.width_mm, water.height_mm) == (0.1, 0.05, 0.05)  # clipped to the beam
    assert (air.thickness_mm, air.width_mm, air.density_g_cm3) == (20.0, 0.05, AIR_DENSITY_G_CM3)
    assert air.molecular_weight == AIR_MOLECULAR_WEIGHT and air.table.F[0] == pytest.approx(14.0954)
    assert build_backgrounds(DEFAULTS) == []


def test_noise_is_noisifys_and_the_seed_repeats_it():
    values = {**DEFAULTS, "noise_on": True, "noise_seed": 1, "readout_noise_adu": 3.0, "psf": "gauss"}
    first, again = render(values), render(values)
    np.testing.assert_array_equal(first.image, again.image)
    other = render({**values, "noise_seed": 2})
    assert np.count_nonzero(other.image != first.image) > 1000
    model = DetectorModel(readout_noise_adu=3.0, psf="gauss", psf_fwhm_um=46.0)
    expected = noisify(first.photons, pixel_size_mm=0.1, seed=1, model=model)
    np.testing.assert_array_equal(first.image, expected.counts.astype(np.float32))
    np.testing.assert_array_equal(first.photons, render(DEFAULTS).image)  # the noiseless photons are kept
    assert first.unit == "ADU" and first.noise.seed == 1
    # ADC offset 40 and the photons (gain 1), truncated to whole ADU: with 3 ADU of readout
    # noise dithering the fraction, truncation takes 0.5 off the mean; 0.15 is 3 sigma of
    # the readout noise's mean over 4096 pixels
    assert first.image.mean() == pytest.approx(40.0 + first.photons.mean() - 0.5, abs=0.15)
    assert "showing the noisy image (seed 1, readout 3 ADU, gauss PSF 46 µm)" in first.describe()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"divergence_steps": 0}, "divergence steps must be at least 1 (-divsteps), got 0"),
        ({"dispersion_steps": -2}, "bandwidth steps must be at least 1 (-dispsteps), got -2"),
        (
            {"sensor_on": True, "sensor_thickness_um": 0.0},
            "sensor thickness must be above 0 µm with the thick sensor on (-detector_thick), got 0 µm",
        ),
        ({"sensor_on": True, "sensor_layers": 0}, "sensor layers must be at least 1 with the thick sensor on"),
        (
            {"noise_on": True, "psf": "fiber", "psf_fwhm_um": 0.0},
            "PSF FWHM must be above 0 µm with a fiber PSF (noisify -psf_fwhm), got 0 µm",
        ),
        ({"water_um": -5.0}, "water must be between 0 and 1000 µm (-water), got -5 µm"),
        ({"air_mm": float("nan")}, "air path must be between 0 and 10000 mm"),
        ({"psf": "airy"}, "PSF must be one of none, gauss, fiber (noisify -psf), got 'airy'"),
    ],
)
def test_bad_values_are_refused_by_name(changes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        render({**DEFAULTS, **changes})


def test_values_that_are_not_used_are_not_checked():
    # a zero thickness or PSF width is fine while the sensor or the PSF is off
    check_scene({**DEFAULTS, "sensor_thickness_um": 0.0, "psf_fwhm_um": 0.0, "psf": "gauss"})


def test_a_cancelled_render_stops():
    asked = []

    def cancelled():
        asked.append(1)
        return len(asked) >= 2  # the second block of rows

    with pytest.raises(Cancelled):
        render({**DEFAULTS, "fpixels": 128, "spixels": 128}, cancelled)
    assert len(asked) == 2
    frame = render({**DEFAULTS, "water_um": 1.0}, cancelled=lambda: False)  # asked, never stopped
    np.testing.assert_allclose(frame.image, render({**DEFAULTS, "water_um": 1.0}).image, rtol=1e-6)
