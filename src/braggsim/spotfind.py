"""Strong-spot finding on a measured frame: DIALS' dispersion threshold, then connected regions.

A pixel is *strong* when, in the (2k+1) x (2k+1) window around it (trusted pixels only),

- the local index of dispersion is too large for Poisson noise,
  ``var / mean > gain * (1 + sigma_background * sqrt(2 / (n - 1)))``, and
- the pixel itself stands out, ``value - mean > sigma_strong * sqrt(gain * mean)``, and
- at least ``min_local`` trusted pixels lie in the window and ``value > global_threshold``.

These are the tests of DIALS' ``dispersion`` algorithm with its parameter names and defaults
(kernel 3 -> 7 x 7 window, 6 / 3 sigma, gain 1).  The window sums come from summed-area tables
in exact integer arithmetic when the pixels are counts, so a 6M-pixel frame costs a few
cumulative sums.  Strong pixels are grouped into 4-connected regions with
``scipy.ndimage.label`` (the field's labeller) and regions outside
``[min_spot_size, max_spot_size]`` pixels are dropped (a Pilatus hot pixel is one pixel).

Coordinates are braggsim's: ``(slow, fast)`` with pixel centres at integers (DIALS puts them
at +0.5; :mod:`braggsim.io.expt` converts).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np
from scipy import ndimage

__all__ = [
    "SpotFinderOptions",
    "StrongSpots",
    "dispersion_threshold",
    "find_spots",
]


@dataclasses.dataclass(frozen=True)
class SpotFinderOptions:
    """The dispersion threshold's knobs (DIALS' names and defaults) and the size filter.

    kernel_size: half-width k of the (2k+1)^2 window, pixels.
    gain: detector gain, ADU per photon (1 for a photon-counting Pilatus).
    min_spot_size, max_spot_size: region size limits, pixels (DIALS uses 3 on pixel-array
        detectors; a hot pixel is 1).
    background_margin: gap in pixels between a spot's box and the eight local-mean windows
        around it whose median is its background.
    """

    kernel_size: int = 3
    sigma_background: float = 6.0
    sigma_strong: float = 3.0
    min_local: int = 2
    gain: float = 1.0
    global_threshold: float = 0.0
    min_spot_size: int = 3
    max_spot_size: int = 1000
    background_margin: int = 2

    def __post_init__(self):
        if int(self.kernel_size) != self.kernel_size or self.kernel_size < 1:
            raise ValueError(f"kernel_size must be an integer >= 1, got {self.kernel_size!r}")
        for name in ("sigma_background", "sigma_strong", "global_threshold"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        if not (math.isfinite(self.gain) and self.gain > 0):
            raise ValueError(f"gain must be > 0 (ADU per photon), got {self.gain!r}")
        if int(self.min_local) != self.min_local or self.min_local < 2:
            raise ValueError(f"min_local must be an integer >= 2, got {self.min_local!r}")
        if not 1 <= self.min_spot_size <= self.max_spot_size:
            raise ValueError(
                f"need 1 <= min_spot_size <= max_spot_size, got {self.min_spot_size!r}, {self.max_spot_size!r}"
            )


class StrongSpots(NamedTuple):
    """Strong spots found on a frame; n of them, brightest first.

    px: (n, 2) float, (slow, fast) centroid of the background-subtracted counts.
    intensity: (n,) summed counts above the local background, ADU.
    background: (n,) local background per pixel (median of eight local means around the spot), ADU.
    size: (n,) pixels in the region.
    peak: (n,) highest pixel value, ADU.
    bbox: (n, 4) int, slow0, slow1, fast0, fast1 (half-open).
    """

    px: np.ndarray
    intensity: np.ndarray
    background: np.ndarray
    size: np.ndarray
    peak: np.ndarray
    bbox: np.ndarray

    def __len__(self) -> int:  # a NamedTuple's len is its field count otherwise
        return int(self.px.shape[0])

    def take(self, index) -> StrongSpots:
        return StrongSpots(*(np.asarray(field)[index] for field in self))

    @staticmethod
    def empty() -> StrongSpots:
        return StrongSpots(
            np.zeros((0, 2)), np.zeros(0), np.zeros(0), np.zeros(0, int), np.zeros(0), np.zeros((0, 4), int)
        )


def _window_sums(values: np.ndarray, half: int, integral: bool) -> np.ndarray:
    """Sum of ``values`` over the (2 half + 1)^2 window around every pixel (zero outside).

    values: (S, F) float32 or float64. Returns (S, F) float64.  scipy's running means work
    in double precision, so for integer values the sums come back exact after rounding.
    """
    width = 2 * half + 1
    out = np.empty(values.shape, dtype=np.float64)
    ndimage.uniform_filter1d(values, width, axis=1, output=out, mode="constant")
    ndimage.uniform_filter1d(out, width, axis=0, output=out, mode="constant")
    out *= width * width
    if integral:
        np.rint(out, out=out)
    return out


def dispersion_threshold(data: np.ndarray, mask: np.ndarray, options: SpotFinderOptions | None = None) -> np.ndarray:
    """The strong-pixel mask, (S, F) bool.

    data: (S, F) pixel values; mask: (S, F) bool, True = trusted.  Untrusted pixels are
    never strong and never enter a window.
    """
    return _threshold(data, mask, options or SpotFinderOptions())[0]


def _threshold(data: np.ndarray, mask: np.ndarray, options: SpotFinderOptions):
    """(strong (S, F) bool, window count (S, F), window sum (S, F))."""
    data = np.asarray(data)
    mask = np.asarray(mask, dtype=bool)
    if data.shape != mask.shape or data.ndim != 2:
        raise ValueError(f"data {data.shape} and mask {mask.shape} must be the same 2-D shape")
    values = np.multiply(data, mask, dtype=np.float64 if data.dtype == np.float64 else np.float32)
    # counts (integers below 2^24) are exact in float32; sums of squares need doubles
    integral = data.dtype.kind in "iu" or bool(np.array_equal(values, np.rint(values)))
    half = int(options.kernel_size)
    count = _window_sums(mask.view(np.uint8), half, True)
    total = _window_sums(values, half, integral)
    gain = float(options.gain)
    # the cheap test first (x - mean > s_s sqrt(g mean), i.e. n x - sum > s_s sqrt(g sum n)):
    # it passes a few per cent of the pixels, and only those need the window variance
    with np.errstate(invalid="ignore"):
        candidate = count * data
        candidate -= total
        bound = total * count
        bound *= gain
        np.sqrt(bound, out=bound)
        bound *= options.sigma_strong
        candidate = candidate > bound
    del bound
    candidate &= mask
    candidate &= count >= options.min_local
    candidate &= total > 0
    if options.global_threshold > 0:
        candidate &= data > options.global_threshold
    index = np.flatnonzero(candidate)
    strong = np.zeros(data.shape, dtype=bool)
    if index.size:
        # sum of squares over each candidate's window, gathered from a zero-padded copy
        width = 2 * half + 1
        padded = np.pad(values, half)
        stride = padded.shape[1]
        rows, cols = np.divmod(index, data.shape[1])
        offsets = (np.arange(width)[:, None] * stride + np.arange(width)[None, :]).ravel()
        window = padded.ravel()[(rows * stride + cols)[:, None] + offsets[None, :]].astype(np.float64)
        squares = np.einsum("ij,ij->i", window, window)
        n, total_i = count.ravel()[index], total.ravel()[index]
        # var/mean > g (1 + s_b sqrt(2/(n-1)))  <=>  n sum2 - sum^2 > g sum (n - 1 + s_b sqrt(2 (n-1)));
        # exact in doubles for counts: every term is an integer below 2^53
        spread = n * squares - total_i * total_i
        dispersed = spread > gain * total_i * (n - 1 + options.sigma_background * np.sqrt(2 * (n - 1)))
        strong.ravel()[index[dispersed]] = True
    return strong, count, total


def find_spots(
    data: np.ndarray,
    mask: np.ndarray,
    options: SpotFinderOptions | None = None,
) -> StrongSpots:
    """Strong spots of a frame: thresholded pixels grouped into regions, with centroids.

    data: (S, F) pixel values (ADU); mask: (S, F) bool, True = trusted (gaps, bad and
    saturated pixels, beamstop and user masks already applied by the caller).
    Centroids weight each pixel by its counts above the spot's local background (the median of
    the threshold's window means at eight points just clear of the spot; raw counts when that
    sum is not positive);
    intensities are the background-subtracted sums over the spot's pixels.
    """
    options = options or SpotFinderOptions()
    data = np.asarray(data)
    mask = np.asarray(mask, dtype=bool)
    strong, window_count, window_sum = _threshold(data, mask, options)
    labels, count = ndimage.label(strong)
    if count == 0:
        return StrongSpots.empty()
    rows, cols = np.nonzero(labels)
    ids = labels[rows, cols] - 1
    size = np.bincount(ids, minlength=count)
    keep_region = (size >= options.min_spot_size) & (size <= options.max_spot_size)
    keep = keep_region[ids]
    rows, cols, ids = rows[keep], cols[keep], ids[keep]
    if rows.size == 0:
        return StrongSpots.empty()
    # renumber the kept regions 0..m-1
    kept = np.flatnonzero(keep_region)
    new_id = np.full(count, -1)
    new_id[kept] = np.arange(kept.size)
    ids = new_id[ids]
    m = kept.size
    bbox = np.stack(
        [
            _group_extreme(ids, rows, m, np.minimum, np.iinfo(np.int64).max),
            _group_extreme(ids, rows, m, np.maximum, -1) + 1,
            _group_extreme(ids, cols, m, np.minimum, np.iinfo(np.int64).max),
            _group_extreme(ids, cols, m, np.maximum, -1) + 1,
        ],
        axis=1,
    )
    window_mean = window_sum / np.maximum(window_count, 1)
    background = _ring_background(window_mean, bbox, int(options.kernel_size), options.background_margin)
    value = data[rows, cols].astype(np.float64)
    signal = value - background[ids]
    weight = np.clip(signal, 0.0, None)
    w_sum = np.bincount(ids, weight, m)
    raw_sum = np.bincount(ids, value, m)
    use_raw = w_sum <= 0
    w = np.where(use_raw[ids], value, weight)
    w_sum = np.where(use_raw, raw_sum, w_sum)
    w_sum = np.where(w_sum > 0, w_sum, 1.0)
    slow = np.bincount(ids, w * rows, m) / w_sum
    fast = np.bincount(ids, w * cols, m) / w_sum
    n_pix = np.bincount(ids, minlength=m)
    intensity = np.bincount(ids, signal, m)
    peak = np.full(m, -np.inf)
    np.maximum.at(peak, ids, value)
    order = np.argsort(-intensity, kind="stable")
    spots = StrongSpots(np.stack([slow, fast], axis=1), intensity, background, n_pix, peak, bbox)
    return spots.take(order)


def _ring_background(window_mean: np.ndarray, bbox: np.ndarray, half: int, gap: int) -> np.ndarray:
    """Each spot's background: the median of the window means (the threshold's own local
    means, (S, F)) of eight windows around the spot, placed ``gap`` pixels clear of its box
    so they hold none of its tails; the median shrugs off a neighbour in one of them.  (m,)"""
    shape = window_mean.shape
    centre_s = (bbox[:, 0] + bbox[:, 1] - 1) / 2.0
    centre_f = (bbox[:, 2] + bbox[:, 3] - 1) / 2.0
    reach_s = (bbox[:, 1] - bbox[:, 0]) / 2.0 + gap + half + 0.5
    reach_f = (bbox[:, 3] - bbox[:, 2]) / 2.0 + gap + half + 0.5
    samples = []
    for ds, df in ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)):
        s = np.clip(np.rint(centre_s + ds * reach_s).astype(int), 0, shape[0] - 1)
        f = np.clip(np.rint(centre_f + df * reach_f).astype(int), 0, shape[1] - 1)
        samples.append(window_mean[s, f])
    return np.median(np.stack(samples, axis=1), axis=1)


def _group_extreme(ids: np.ndarray, values: np.ndarray, m: int, op, start) -> np.ndarray:
    out = np.full(m, start, dtype=np.int64)
    op.at(out, ids, values.astype(np.int64))
    return out
