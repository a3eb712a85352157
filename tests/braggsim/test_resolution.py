"""braggsim.resolution: d-spacing maps and rings against closed-form geometry."""

import math

import numpy as np
import pytest

import braggsim
from braggsim import resolution, spots


def test_resolution_map_matches_bragg_law_on_a_flat_detector():
    detector = braggsim.Detector(fpixels=50, spixels=40, pixel_size_mm=0.2, distance_mm=80.0, beam_center_mm=(3.0, 5.0))
    d_A = resolution.resolution_map(detector, 1.5)
    slow, fast = np.indices((40, 50))
    radius_mm = np.hypot(slow * 0.2 - 3.0, fast * 0.2 - 5.0)  # MOSFLM: beam on pixel (15, 25)
    expected = 1.5 / (2 * np.sin(np.arctan(radius_mm / 80.0) / 2))
    assert np.isinf(d_A[15, 25])
    finite = np.isfinite(expected)
    np.testing.assert_allclose(d_A[finite], expected[finite], rtol=1e-10)
    np.testing.assert_allclose(resolution.d_spacing_A([3, 39], [7, 0], detector, 1.5), d_A[[3, 39], [7, 0]], rtol=1e-12)


def test_ring_radius_is_distance_tan_two_theta():
    detector = braggsim.Detector(fpixels=300, pixel_size_mm=0.1, distance_mm=100.0)
    two_theta = 2 * math.asin(1.0 / (2 * 3.0))
    assert resolution.ring_radius_px(3.0, detector, 1.0) == pytest.approx(100 * math.tan(two_theta) / 0.1, rel=1e-9)


@pytest.mark.parametrize("convention", ["mosflm", "xds"])
def test_ring_points_lie_at_their_resolution_on_a_tilted_detector(convention):
    detector = braggsim.Detector(
        fpixels=200,
        spixels=180,
        pixel_size_mm=0.1,
        distance_mm=90.0,
        convention=convention,
        rotation_deg=(2.0, -3.0, 1.0),
        twotheta_deg=8.0,
    )
    beam = braggsim.Beam(wavelength_A=1.2)
    ring = resolution.ring_points(4.0, detector, beam)
    assert len(ring) > 100
    np.testing.assert_allclose(resolution.d_spacing_A(ring[:, 0], ring[:, 1], detector, beam), 4.0, rtol=1e-9)


def test_mosflm_beam_center_reproduces_the_beam_position_of_any_convention():
    xds = braggsim.Detector(fpixels=96, pixel_size_mm=0.1, distance_mm=100.0, convention="xds", orgx_px=40, orgy_px=55)
    mosflm = braggsim.Detector(
        fpixels=96, pixel_size_mm=0.1, distance_mm=100.0, beam_center_mm=resolution.mosflm_beam_center_mm(xds)
    )
    assert spots.beam_center_px(mosflm) == pytest.approx(spots.beam_center_px(xds), abs=1e-9)
    # XDS ORGX/ORGY are 1-based pixel centres along fast/slow
    assert spots.beam_center_px(xds) == pytest.approx((54.0, 39.0), abs=1e-9)


def test_geometry_without_wavelength_is_refused():
    with pytest.raises(ValueError, match="wavelength"):
        resolution.resolution_map({"fpixels": 4, "pixel_size_mm": 0.1, "distance_mm": 10.0})
