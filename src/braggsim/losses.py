"""Losses comparing a predicted image with an observed frame over trusted pixels.

All take predicted and observed (n_pixels,) tensors of the masked pixels and return a
0-d tensor.  They are means over pixels, so their size does not depend on the frame.
"""

from __future__ import annotations

import torch

__all__ = ["LOSSES", "mse", "pixel_weights", "poisson_nll"]

LOSSES = ("mse", "poisson")


def mse(predicted: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    residual = predicted - observed
    return (residual * residual).mean()


def poisson_nll(
    predicted: torch.Tensor, observed: torch.Tensor, *, gain: float = 1.0, readout_noise: float = 0.0
) -> torch.Tensor:
    """Negative log-likelihood of counts, up to a constant.

    ``observed`` is in detector units (ADU) with ``gain`` ADU per photon and Gaussian
    ``readout_noise`` in ADU.  Readout noise enters through the shifted-Poisson
    approximation: y/gain + s ~ Poisson(mu + s) with s = (readout_noise / gain)^2,
    which is exact Poisson when readout_noise is 0.
    """
    shift = (readout_noise / gain) ** 2
    rate = predicted + shift
    counts = torch.clamp(observed / gain + shift, min=0.0)
    # a floor keeps log finite where the model predicts nothing
    rate = torch.clamp(rate, min=1e-12)
    return (rate - counts * torch.log(rate)).mean()


def pixel_weights(predicted: torch.Tensor, loss: str, *, gain: float = 1.0, readout_noise: float = 0.0) -> torch.Tensor:
    """Inverse variance of each pixel in photon units for the curvature (Fisher) matrix."""
    if loss == "poisson":
        shift = (readout_noise / gain) ** 2
        return 1.0 / torch.clamp(predicted + shift, min=1e-6)
    return torch.ones_like(predicted)
