"""What a refinement fits: observed data, the mask that picks it, weights, and the loss.

A target turns a :class:`~braggsim.refine.parameters.Model` into a prediction
(:meth:`Target.render`), picks the compared values out of it (:meth:`Target.select`),
and scores them (:meth:`Target.loss`).  The same object supplies the pixel weights and
the noise level of the standard errors, the best flat model the ``diverged`` gate
compares with, and the signal test of the ``no-signal`` gate, so a different kind of
data (a subset of pixels around predicted spots, per-reflection intensities as extra
parameters) is one subclass overriding :meth:`render` and :meth:`select`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..losses import LOSSES, mse, pixel_weights, poisson_nll
from ..simulate import simulate
from . import gates
from .parameters import Model

__all__ = ["PixelTarget", "Target"]


class Target:
    """Base of every target: observed values, loss, weights and gates.

    observed: (n,) tensor of the compared values; loss: "mse" or "poisson" (with ``gain``
    ADU/photon and ``readout_noise`` ADU); weights: optional (n,) tensor of per-value
    weights in the MSE (None: all 1).
    """

    def __init__(
        self,
        observed: torch.Tensor,
        *,
        loss: str = "mse",
        gain: float = 1.0,
        readout_noise: float = 0.0,
        weights: torch.Tensor | None = None,
    ):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if gain <= 0 or not math.isfinite(gain):
            raise ValueError(f"gain must be > 0 ADU/photon, got {gain!r}")
        if readout_noise < 0 or not math.isfinite(readout_noise):
            raise ValueError(f"readout_noise must be >= 0 ADU, got {readout_noise!r}")
        if observed.ndim != 1 or observed.numel() == 0:
            raise ValueError(f"observed values must be a non-empty (n,) tensor, got shape {tuple(observed.shape)}")
        if weights is not None and (weights.shape != observed.shape or not bool(torch.all(weights >= 0))):
            raise ValueError(f"weights must be (n,) = {tuple(observed.shape)} and >= 0")
        self.observed = observed
        self.loss_name, self.gain, self.readout_noise = loss, float(gain), float(readout_noise)
        self.weights = weights

    @property
    def n_values(self) -> int:
        return int(self.observed.numel())

    # ------------------------------------------------------- the prediction
    def render(self, model: Model, dtype: torch.dtype, device: torch.device | None = None) -> torch.Tensor:
        """The model's prediction in whatever form :meth:`select` takes."""
        raise NotImplementedError

    def select(self, rendered: torch.Tensor) -> torch.Tensor:
        """The (n,) predicted values compared with ``observed``."""
        raise NotImplementedError

    def image(self, rendered: torch.Tensor) -> np.ndarray | None:
        """A float32 (spixels, fpixels) picture of ``rendered`` for display, or None."""
        return None

    # ------------------------------------------------------------- the score
    def loss(self, predicted: torch.Tensor) -> torch.Tensor:
        """0-d loss of the (n,) predicted values."""
        if self.loss_name == "poisson":
            return poisson_nll(predicted, self.observed, gain=self.gain, readout_noise=self.readout_noise)
        if self.weights is not None:
            residual = predicted - self.observed
            return (self.weights * residual * residual).mean()
        return mse(predicted, self.observed)

    def fisher_weights(self, predicted: torch.Tensor) -> torch.Tensor:
        """(n,) inverse variances of the values for the curvature (Fisher) matrix."""
        weights = pixel_weights(predicted, self.loss_name, gain=self.gain, readout_noise=self.readout_noise)
        return weights if self.weights is None or self.loss_name == "poisson" else weights * self.weights

    def noise_variance(self, predicted: torch.Tensor, n_parameters: int) -> float:
        """The variance that scales the inverse curvature: RSS / (n - p) for MSE, 1 for
        the Poisson likelihood (its weights are already inverse variances)."""
        if self.loss_name == "poisson":
            return 1.0
        residual = predicted - self.observed
        squares = residual * residual if self.weights is None else self.weights * residual * residual
        return float(squares.sum()) / max(self.n_values - n_parameters, 1)

    # ------------------------------------------------------------- the gates
    def null_loss(self) -> float:
        """Loss of the best flat model (one constant for every value), which a refined
        model must beat by more than chance to pass the ``diverged`` gate."""
        observed = self.observed.detach()
        if self.loss_name == "poisson":
            shift = (self.readout_noise / self.gain) ** 2
            counts = torch.clamp(observed / self.gain + shift, min=0.0)
            constant = torch.clamp(counts.mean(), min=1e-12) - shift  # the rate's MLE, as a prediction
        elif self.weights is not None:
            constant = (self.weights * observed).sum() / torch.clamp(self.weights.sum(), min=1e-300)
        else:
            constant = observed.mean()
        return float(self.loss(torch.full_like(observed, float(constant))))

    def check_signal(self) -> gates.GateFailure | None:
        """The ``no-signal`` gate on the observed values."""
        return gates.check_signal(
            self.observed.detach().cpu().numpy(), loss=self.loss_name, gain=self.gain, readout_noise=self.readout_noise
        )


class PixelTarget(Target):
    """Every trusted pixel of one frame against ``scale * simulate(...) + background``.

    observed: (spixels, fpixels) array or tensor; mask: optional bool array of the same
    shape, True = use the pixel (non-finite observed pixels are dropped as well).
    """

    def __init__(
        self,
        observed,
        mask=None,
        *,
        loss: str = "mse",
        gain: float = 1.0,
        readout_noise: float = 0.0,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        weights=None,
    ):
        observed_t = torch.as_tensor(
            np.asarray(observed, dtype=np.float64) if not isinstance(observed, torch.Tensor) else observed
        )
        if observed_t.ndim != 2:
            raise ValueError(f"observed must be a 2-D image, got shape {tuple(observed_t.shape)}")
        self.shape = tuple(observed_t.shape)
        if mask is None:
            mask_t = torch.ones(self.shape, dtype=torch.bool)
        else:
            mask_t = torch.as_tensor(np.asarray(mask)).to(torch.bool)
            if tuple(mask_t.shape) != self.shape:
                raise ValueError(f"mask has shape {tuple(mask_t.shape)}, expected {self.shape}")
        mask_t = mask_t & torch.isfinite(observed_t.cpu())
        if int(mask_t.sum()) == 0:
            raise ValueError("the mask leaves no pixel to refine against")
        self.device = torch.device(device) if device is not None else observed_t.device
        self.mask = mask_t.to(self.device)
        weights_t = None
        if weights is not None:
            weights_t = torch.as_tensor(np.asarray(weights, dtype=np.float64)).to(dtype=dtype, device=self.device)
            if tuple(weights_t.shape) != self.shape:
                raise ValueError(f"weights have shape {tuple(weights_t.shape)}, expected {self.shape}")
            weights_t = weights_t[self.mask]
        super().__init__(
            observed_t.to(dtype=dtype, device=self.device)[self.mask],
            loss=loss,
            gain=gain,
            readout_noise=readout_noise,
            weights=weights_t,
        )

    def render(self, model, dtype, device=None):
        """(spixels, fpixels) predicted image."""
        image = model.scale * simulate(model.crystal, model.detector, model.beam, dtype=dtype, device=device)
        if model.background is not None:
            image = image + model.background
        return image

    def select(self, rendered):
        return rendered[self.mask]

    def image(self, rendered):
        return rendered.detach().to(torch.float32).cpu().numpy()
