"""Strong-spot finding: DIALS' dispersion threshold, regions, centroids, masks (no Qt)."""

import bz2
import io

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from braggsim.spotfind import SpotFinderOptions, dispersion_threshold, find_spots
from tests.conftest import DATA


def reference_threshold(data, mask, options):
    """The dispersion tests written out per pixel over explicit windows (slow but plain)."""
    k = options.kernel_size
    values = np.pad(np.where(mask, data, 0).astype(float), k)
    trusted = np.pad(mask.astype(float), k)
    windows = sliding_window_view(values, (2 * k + 1, 2 * k + 1))
    counts = sliding_window_view(trusted, (2 * k + 1, 2 * k + 1)).sum(axis=(-1, -2))
    total = windows.sum(axis=(-1, -2))
    squares = (windows * windows).sum(axis=(-1, -2))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / counts
        variance = (squares - total * total / counts) / (counts - 1)
        dispersed = variance / mean > options.gain * (1 + options.sigma_background * np.sqrt(2 / (counts - 1)))
        standout = data - mean > options.sigma_strong * np.sqrt(options.gain * mean)
    return mask & (counts >= options.min_local) & (total > 0) & dispersed & standout


@pytest.fixture(scope="module")
def crop():
    """A 256 x 256 piece of a real Pilatus still (thau_3_2_0013) with a module gap (-1)."""
    data = np.load(io.BytesIO(bz2.decompress((DATA / "thau_0013_crop_1380_1400.npy.bz2").read_bytes())))
    return data.astype(np.float32), data >= 0


def test_threshold_equals_the_written_out_dispersion_tests_on_real_pixels(crop):
    data, mask = crop
    options = SpotFinderOptions()
    fast = dispersion_threshold(data, mask, options)
    expected = reference_threshold(data, mask, options)
    assert expected.sum() > 50  # the crop holds real spots
    np.testing.assert_array_equal(fast, expected)


def test_gap_pixels_are_never_strong_and_never_counted(crop):
    data, mask = crop
    assert (~mask).sum() > 1000
    strong = dispersion_threshold(data, mask, SpotFinderOptions())
    assert not strong[~mask].any()
    # making the gap wildly bright changes nothing: untrusted pixels do not enter a window
    loud = data.copy()
    loud[~mask] = 1e6
    np.testing.assert_array_equal(dispersion_threshold(loud, mask, SpotFinderOptions()), strong)


def synthetic_frame(seed=3, n_spots=25, shape=(400, 400), background=4.0):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(20, shape[0] - 20, size=(n_spots, 2))
    photons = rng.uniform(400, 3000, size=n_spots)
    slow, fast = np.mgrid[: shape[0], : shape[1]]
    expected = np.full(shape, background)
    for (cs, cf), n in zip(centres, photons, strict=True):
        expected += n / (2 * np.pi * 1.1**2) * np.exp(-((slow - cs) ** 2 + (fast - cf) ** 2) / (2 * 1.1**2))
    return rng.poisson(expected).astype(np.float32), centres, photons


def test_centroids_and_intensities_of_synthetic_spots():
    data, centres, photons = synthetic_frame()
    spots = find_spots(data, np.ones(data.shape, bool))
    assert len(spots) == len(centres)
    distance = np.linalg.norm(spots.px[:, None, :] - centres[None, :, :], axis=-1)
    match = distance.argmin(axis=1)
    assert np.unique(match).size == len(centres)
    assert distance.min(axis=1).max() < 0.15
    # the strong pixels hold most of a spot's photons (~75 % of a sigma = 1.1 px Gaussian),
    # and the background is the spot's surroundings, not the spot itself
    ratio = spots.intensity / photons[match]
    assert ratio.min() > 0.6 and ratio.max() < 1.0
    assert 0.7 < ratio.mean() < 0.9
    np.testing.assert_allclose(spots.background, 4.0, atol=0.6)
    assert np.all(spots.intensity[:-1] >= spots.intensity[1:])  # brightest first


def test_pure_noise_and_hot_pixels_give_no_spots():
    rng = np.random.default_rng(0)
    data = rng.poisson(3.0, size=(512, 512)).astype(np.float32)
    data[100, 100] = 5000  # a hot pixel: one pixel, below min_spot_size
    data[300, 301] = 4000
    assert len(find_spots(data, np.ones(data.shape, bool))) == 0


def test_masked_spot_and_saturated_core_are_respected():
    data, centres, _ = synthetic_frame(n_spots=3)
    mask = np.ones(data.shape, bool)
    s, f = np.rint(centres[0]).astype(int)
    mask[s - 6 : s + 7, f - 6 : f + 7] = False
    spots = find_spots(data, mask)
    assert len(spots) == 2
    assert np.linalg.norm(spots.px - centres[0], axis=1).min() > 5


@pytest.mark.parametrize(
    "field, value",
    [("kernel_size", 0), ("sigma_strong", -1.0), ("gain", 0.0), ("min_local", 1), ("min_spot_size", 0)],
)
def test_bad_options_name_the_value(field, value):
    with pytest.raises(ValueError, match=field):
        SpotFinderOptions(**{field: value})


def test_shape_mismatch_is_a_value_error():
    with pytest.raises(ValueError, match="same 2-D shape"):
        find_spots(np.zeros((10, 10)), np.ones((10, 11), bool))
