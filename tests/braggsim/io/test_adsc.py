"""The real ADSC Quantum-4 frame (tests/data/adsc_q4_2002.img.bz2) through read_frame."""

import numpy as np
import pytest

import braggsim
from braggsim import resolution, spots
from braggsim.io import read_frame
from tests.conftest import DATA

ADSC = DATA / "adsc_q4_2002.img.bz2"
PIXEL = 0.0816


@pytest.fixture(scope="module")
def frame():
    return read_frame(ADSC, beamstop="auto")


def test_geometry_matches_header(frame):
    assert frame.format == "smv"
    assert frame.shape == (2304, 2304)
    assert frame.pixel_size_mm == pytest.approx(0.0816)
    assert frame.distance_mm == pytest.approx(250.0)
    assert frame.wavelength_A == pytest.approx(1.0)
    assert frame.saturation == 65535
    assert frame.header["BEAM_CENTER_X"] == "99.30" and frame.header["BEAM_CENTER_Y"] == "94.70"
    # ADSC (ADXV convention) -> MOSFLM: Xbeam = 2304*px - 94.70 - px/2, Ybeam = 99.30 - px/2
    x_beam, y_beam = frame.beam_center_mm
    assert x_beam == pytest.approx(2304 * PIXEL - 94.70 - PIXEL / 2, abs=1e-9)
    assert y_beam == pytest.approx(99.30 - PIXEL / 2, abs=1e-9)
    # the header's own DENZO beam (Sbeam, Fbeam, no half pixel) agrees to its 0.01 mm rounding
    assert x_beam + PIXEL / 2 == pytest.approx(float(frame.header["DENZO_XBEAM"]), abs=0.01)
    assert y_beam + PIXEL / 2 == pytest.approx(float(frame.header["DENZO_YBEAM"]), abs=0.01)
    detector = braggsim.Detector(**frame.detector_kwargs())
    slow, fast = spots.beam_center_px(detector)
    assert (slow, fast) == pytest.approx((x_beam / PIXEL, y_beam / PIXEL), abs=1e-6)
    assert frame.data.dtype == np.float32 and frame.data.max() == 14872
    assert np.median(frame.data) == 72


def test_tile_seams_are_masked(frame):
    # the 2x2 tiles meet in rows and columns 1150..1154, all zero
    for seam in range(1150, 1155):
        assert not frame.mask[seam, :].any()
        assert not frame.mask[:, seam].any()
    assert frame.mask[1140, 100] and frame.mask[100, 1160]
    assert 0.95 < frame.mask.mean() < 0.999


def test_beamstop_shadow_is_masked(frame):
    plain = read_frame(ADSC)
    shadow = plain.mask & ~frame.mask
    slow, fast = spots.beam_center_px(frame)
    # a blob of about 60 px radius around the beam, much darker than the frame
    radius = np.sqrt(shadow.sum() / np.pi)
    assert 40 < radius < 90
    rows, cols = np.nonzero(shadow)
    assert abs(rows.mean() - slow) < 30 and abs(cols.mean() - fast) < 30
    assert np.median(plain.data[shadow]) < 0.5 * np.median(plain.data[plain.mask])
    # pixels just outside the shadow stay trusted
    assert frame.mask[int(slow), int(fast) + 150] and frame.mask[int(slow) + 150, int(fast)]


def test_solvent_ring_falls_at_3_to_4_angstrom(frame):
    d_A = resolution.resolution_map(frame)
    assert d_A.shape == frame.shape
    edges = np.linspace(2.2, 8.0, 59)
    which = np.digitize(d_A, edges)
    centres = 0.5 * (edges[1:] + edges[:-1])
    profile = np.array([np.median(frame.data[frame.mask & (which == i)]) for i in range(1, len(edges))])
    peak_d = centres[np.argmax(profile)]
    assert 3.0 < peak_d < 4.0, peak_d
    # the ring stands clearly above the background on both sides
    assert profile.max() > 1.3 * profile[np.argmin(abs(centres - 6.0))]
    assert profile.max() > 1.3 * profile[np.argmin(abs(centres - 2.4))]
    # a ring drawn at that d-spacing lies where the image's ring is brightest
    ring = resolution.ring_points(peak_d, frame)
    inside = (ring[:, 0] > 0) & (ring[:, 0] < 2303) & (ring[:, 1] > 0) & (ring[:, 1] < 2303)
    on_ring = frame.data[ring[inside, 0].astype(int), ring[inside, 1].astype(int)]
    assert np.median(on_ring) > 1.2 * np.median(frame.data[frame.mask])
