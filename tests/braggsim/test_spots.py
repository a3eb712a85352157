"""Predicted spot positions, beam centre and resolution geometry (no Qt)."""

import math

import numpy as np
import pytest
from scipy import ndimage

import braggsim
from braggsim.spots import beam_center_px, predict_spots, resolution_at_px, resolution_ring_px


@pytest.fixture(scope="module")
def truth():
    crystal = braggsim.Crystal(
        cell=(100, 100, 100, 90, 90, 90),
        N_cells=(5, 5, 5),
        default_F=100,
        misset_deg=(5, 3, -2),
        mosaic_spread_deg=0.8,
        mosaic_domains=5,
        mosaic_seed=42,
    )
    detector = braggsim.Detector(fpixels=64, spixels=64, pixel_size_mm=0.1, distance_mm=100)
    beam = braggsim.Beam(wavelength_A=1.0, fluence=1e28)
    return crystal, detector, beam


def test_every_bright_spot_has_a_prediction_within_one_pixel(truth):
    image = braggsim.simulate(*truth).numpy()
    peaks = np.argwhere((image == ndimage.maximum_filter(image, 5)) & (image > 0.2 * image.max()))
    # drop the 0 0 0 term (default_F lights the direct beam) and edge peaks whose spot
    # centre lies just off the detector
    inside = (peaks > 0).all(axis=1) & (peaks < 63).all(axis=1)
    peaks = peaks[inside & (np.linalg.norm(peaks - [32.5, 32.5], axis=1) > 2)]
    spots = predict_spots(*truth)
    assert len(peaks) >= 25
    distances = np.linalg.norm(peaks[:, None, :] - spots.px[None, :, :], axis=-1).min(axis=1)
    assert distances.max() < 1.0, distances


def test_spot_hkl_and_resolution_agree(truth):
    spots = predict_spots(*truth)
    # cubic 100 A cell: d = 100 / |hkl|
    expected = 100.0 / np.linalg.norm(spots.hkl, axis=-1)
    np.testing.assert_allclose(spots.d_A, expected, rtol=1e-9)
    # misset 5 3 -2 puts the 0 0 1 reflection just right of the beam centre
    row = np.flatnonzero((spots.hkl == [0, 0, 1]).all(axis=-1))
    assert len(row) == 1
    np.testing.assert_allclose(spots.px[row[0]], [33.4, 42.4], atol=0.1)


def test_beam_centre_is_nanobraggs_default(truth):
    _, detector, _ = truth
    # MOSFLM default Xbeam = Ybeam = (64 + 1) * 0.1 / 2 mm; Fbeam = Ybeam + pixel/2
    np.testing.assert_allclose(beam_center_px(detector), [32.5, 32.5], atol=1e-9)
    shifted = detector.replace(beam_center_mm=(2.0, 4.0))
    np.testing.assert_allclose(beam_center_px(shifted), [20.0, 40.0], atol=1e-9)


def test_resolution_at_a_pixel(truth):
    _, detector, beam = truth
    # the centre of pixel (0, 0) lies 3.25 mm along both axes from the beam at 100 mm
    radius = math.hypot(3.25, 3.25)
    expected = 1.0 / (2 * math.sin(math.atan2(radius, 100.0) / 2))
    assert resolution_at_px(detector, beam, np.array([0.0, 0.0])) == pytest.approx(expected, rel=1e-12)
    assert np.isinf(resolution_at_px(detector, beam, np.array([32.5, 32.5])))


def test_resolution_ring_is_a_circle_of_the_right_radius(truth):
    _, detector, beam = truth
    ring = resolution_ring_px(detector, beam, 40.0, n_points=90)
    assert ring.shape == (91, 2)
    radius_px = 100.0 * math.tan(2 * math.asin(1.0 / 80.0)) / 0.1
    np.testing.assert_allclose(np.linalg.norm(ring - [32.5, 32.5], axis=-1), radius_px, rtol=1e-9)
    np.testing.assert_allclose(resolution_at_px(detector, beam, ring), 40.0, rtol=1e-9)
    with pytest.raises(ValueError, match="d_A"):
        resolution_ring_px(detector, beam, 0.4)
