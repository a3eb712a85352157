"""Sanity gates: a refinement that ends on garbage says so instead of reporting success.

Three checks, each returning None (passed) or a :class:`GateFailure` whose ``status`` is
the refinement's status and whose ``reason`` says why in one sentence:

- ``no-signal`` (:func:`check_signal`): no pixel of the frame stands out from its noise,
  so there is nothing to refine against (an empty or blank frame, pure noise);
- ``diverged`` (:func:`check_fit`): the refined model explains the data no better than
  the best flat (background-only) model does, beyond what chance gives;
- ``out-of-range`` (:func:`check_ranges`): a refined parameter left its physical range
  (mosaic spread in (0, 90) deg, N >= 1, positive cell edges, ...; the ranges are
  declared with the parameters in :mod:`braggsim.refine.parameters`).

The Refiner applies them to every run, ``braggsim refine`` exits non-zero on them, and
batch processing of many frames uses the same functions for its per-frame statuses.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
from scipy import special  # (scipy.stats would cost a second of start-up for three quantiles)

from .parameters import Parameter

__all__ = ["GATE_STATUSES", "GateFailure", "check_fit", "check_ranges", "check_signal"]

GATE_STATUSES = ("no-signal", "diverged", "out-of-range")
# expected number of pure-noise pixels above the signal threshold, per frame
FALSE_PIXELS = 0.01
# pixels that must stand out: a hot pixel or two is not a diffraction pattern
MIN_SIGNAL_PIXELS = 3
# chance that a flat frame's noise alone passes the diverged gate
FIT_FALSE_PASS = 1e-3
_CLIP_SIGMA = 3.0
# the standard deviation of a normal distribution clipped at +-3 sigma, in sigma
_CLIPPED_STD = 0.98658
_CLIP_TAIL = 0.0013499  # the normal tail beyond 3 sigma


@dataclasses.dataclass(frozen=True)
class GateFailure:
    status: str  # one of GATE_STATUSES
    reason: str

    def to_dict(self) -> dict:
        return {"status": self.status, "reason": self.reason}


def check_signal(
    observed,
    *,
    loss: str = "mse",
    gain: float = 1.0,
    readout_noise: float = 0.0,
    false_pixels: float = FALSE_PIXELS,
    min_pixels: int = MIN_SIGNAL_PIXELS,
) -> GateFailure | None:
    """``no-signal`` unless at least ``min_pixels`` of ``observed`` (any shape; the trusted
    pixels) lie above the noise of the frame's background.

    The background and its noise come from the pixels themselves, iteratively clipping
    the bright ones: for the MSE loss as a mean and standard deviation (3-sigma clipping),
    for the Poisson loss as the mean count of a Poisson background (counts = ADU / gain +
    (readout_noise / gain)^2).  The threshold is set so that pure noise puts about
    ``false_pixels`` pixels of the whole frame above it.
    """
    values = np.asarray(observed, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    n = values.size
    if n == 0:
        return GateFailure("no-signal", "the frame has no trusted finite pixel")
    tail = false_pixels / n
    if loss == "poisson":
        shift = (readout_noise / gain) ** 2
        counts = np.maximum(values / gain + shift, 0.0)
        keep = np.ones(n, bool)
        for _ in range(50):
            rate = max(float(counts[keep].mean()), 1e-12)
            clipped = counts <= _poisson_upper(_CLIP_TAIL, rate)
            if np.array_equal(clipped, keep) or not clipped.any():
                break
            keep = clipped
        threshold = _poisson_upper(tail, rate)
        bright = int(np.count_nonzero(counts > threshold))
        noise = f"a Poisson background of {rate:.3g} photons/px (threshold {threshold:g} photons)"
    else:
        keep = np.ones(n, bool)
        for _ in range(50):
            mean, std = float(values[keep].mean()), float(values[keep].std())
            clipped = np.abs(values - mean) <= _CLIP_SIGMA * std
            if np.array_equal(clipped, keep) or not clipped.any():
                break
            keep = clipped
        sigma = std / _CLIPPED_STD if keep.sum() < n else std
        z = -float(special.ndtri(tail))
        threshold = mean + z * sigma
        bright = int(np.count_nonzero(values > threshold))
        noise = f"a background of {mean:.4g} +- {sigma:.3g} (threshold {z:.2g} sigma)"
    if bright >= min_pixels:
        return None
    if float(values.max()) == float(values.min()):
        return GateFailure("no-signal", f"the frame is flat: every one of its {n} trusted pixels reads {values[0]:g}")
    return GateFailure(
        "no-signal",
        f"{bright} of {n} trusted pixels stand out from {noise}; at least {min_pixels} are needed",
    )


def check_fit(
    final_loss: float,
    null_loss: float,
    *,
    n_values: int,
    n_parameters: int,
    loss: str = "mse",
    false_pass: float = FIT_FALSE_PASS,
) -> GateFailure | None:
    """``diverged`` unless the refined model's loss beats the best flat model's by more
    than noise would: the likelihood-ratio statistic (n ln(null / final) for MSE,
    2 n (null - final) for the mean Poisson negative log-likelihood) must exceed the
    chi-square quantile for ``n_parameters`` degrees of freedom at ``false_pass``."""
    if not math.isfinite(final_loss):
        return GateFailure("diverged", f"the refined model's loss is {final_loss}")
    if loss == "poisson":
        statistic = 2.0 * n_values * (null_loss - final_loss)
    elif final_loss <= 0.0:
        statistic = math.inf if null_loss > 0 else 0.0
    else:
        statistic = n_values * math.log(null_loss / final_loss) if null_loss > 0 else -math.inf
    needed = float(special.chdtri(max(int(n_parameters), 1), false_pass))
    if statistic > needed:
        return None
    return GateFailure(
        "diverged",
        f"the refined model explains the frame no better than a flat background: loss {final_loss:.6g} "
        f"against {null_loss:.6g} for the best constant (likelihood-ratio statistic {statistic:.3g}; "
        f"{needed:.3g} needed for {n_parameters} parameters)",
    )


def check_ranges(values: Mapping[str, float], parameters: Mapping[str, Parameter]) -> GateFailure | None:
    """``out-of-range`` when any value lies outside its parameter's physical range."""
    outside = []
    for name, value in values.items():
        parameter = parameters.get(name)
        if parameter is not None and value not in parameter.physical:
            unit = f" {parameter.unit}" if parameter.unit else ""
            outside.append(f"{name} = {value:.6g}{unit} outside {parameter.physical}")
    if not outside:
        return None
    return GateFailure("out-of-range", "refined values left their physical range: " + "; ".join(outside))


def _poisson_upper(tail: float, rate: float) -> float:
    """The smallest count k with P(X > k) <= ``tail`` for X ~ Poisson(``rate``)."""
    counts = np.arange(0.0, math.ceil(rate + 40.0 * math.sqrt(rate + 1.0) + 40.0))
    above = special.pdtrc(counts, rate)  # P(X > k)
    return float(counts[np.argmax(above <= tail)])
