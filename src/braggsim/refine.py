"""Refinement: recover crystal, detector and scale parameters from an observed frame.

A :class:`Refiner` drives a differentiable :func:`braggsim.simulate` with L-BFGS (or
Adam) and yields one :class:`RefineState` per iteration, so a GUI or script can follow
and stop it.  The default strategy first searches a coarse grid of misset angles
around the start (no gradients) and descends from the best point.  It is then staged:
the geometry (orientation, cell,
detector, scale) is refined first with the spot-broadening parameters (mosaic spread,
crystal size) held at their starting values, because a wrong orientation otherwise
drags the mosaic spread upwards to smear spots over the misfit; then everything is
refined together.  Standard errors come from the Gauss-Newton curvature at the optimum.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import threading
from collections.abc import Iterator

import numpy as np
import torch

from .beam import Beam
from .crystal import Crystal
from .detector import Detector
from .losses import LOSSES, mse, pixel_weights, poisson_nll
from .optim import LBFGS
from .refine_params import (
    BROADENING,
    PARAMETER_GROUPS,
    PARAMETERS,
    ParameterTransform,
    apply_parameters,
    expand_names,
    read_parameter,
)
from .simulate import simulate

__all__ = ["Refiner", "RefineState", "RefineResult", "PARAMETER_GROUPS", "PARAMETERS"]
OPTIMIZERS = ("auto", "lbfgs", "adam")


@dataclasses.dataclass
class RefineState:
    """One iteration, as plain Python/numpy values (safe to hand to another thread)."""

    iteration: int
    loss: float
    parameters: dict[str, float]
    grad_norm: float
    predicted: np.ndarray | None  # float32 (spixels, fpixels), or None between snapshots
    stage: str
    message: str = ""


@dataclasses.dataclass
class RefineResult:
    parameters: dict[str, float]
    standard_errors: dict[str, float]
    initial_parameters: dict[str, float]
    crystal: Crystal
    detector: Detector
    beam: Beam
    scale: float
    history: list[dict]
    status: str  # "converged" | "max_iter" | "stopped" | "failed"
    message: str
    initial_loss: float
    final_loss: float
    # the orientation search's outcome: step_deg, points_tried, start_loss, chosen_loss,
    # chosen {misset name: deg}; None when no search ran
    search: dict | None = None

    def to_dict(self) -> dict:
        return {
            "parameters": self.parameters,
            "standard_errors": self.standard_errors,
            "initial_parameters": self.initial_parameters,
            "status": self.status,
            "message": self.message,
            "initial_loss": self.initial_loss,
            "final_loss": self.final_loss,
            "search": self.search,
            "history": self.history,
        }


class Refiner:
    """Refine ``refine`` parameters of a starting model against ``observed``.

    observed: (spixels, fpixels) array or tensor; mask: optional bool array of the same
    shape, True = use the pixel.  initial / bounds: {name: value} / {name: (low, high)} in
    physical units.  loss: "mse" or "poisson" (with ``gain`` ADU/photon and
    ``readout_noise`` ADU).  optimizer: "auto" (= staged L-BFGS), "lbfgs" or "adam".
    predict_every: put the predicted image in every k-th state (and always the last).
    search_deg: with the default strategy, before refining, try the start misset shifted
    by -search_deg, 0, +search_deg on each refined misset axis (3**k forward passes, no
    gradient) and start from the lowest loss; 0 or None skips the search.
    """

    def __init__(
        self,
        crystal: Crystal,
        detector: Detector,
        beam: Beam,
        observed,
        mask=None,
        *,
        refine=("mosaic", "misset"),
        loss: str = "mse",
        optimizer: str = "auto",
        initial: dict[str, float] | None = None,
        bounds: dict[str, tuple] | None = None,
        staged: bool = True,
        gain: float = 1.0,
        readout_noise: float = 0.0,
        learning_rate: float | None = None,
        predict_every: int = 1,
        tolerance: float = 1e-10,
        search_deg: float | None = 4.0,
        dtype: torch.dtype = torch.float64,
    ):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if gain <= 0 or not math.isfinite(gain):
            raise ValueError(f"gain must be > 0 ADU/photon, got {gain!r}")
        if readout_noise < 0 or not math.isfinite(readout_noise):
            raise ValueError(f"readout_noise must be >= 0 ADU, got {readout_noise!r}")
        if predict_every < 1:
            raise ValueError(f"predict_every must be >= 1, got {predict_every!r}")
        if search_deg is not None and not (math.isfinite(search_deg) and search_deg >= 0):
            raise ValueError(f"search_deg must be >= 0 deg (0 or None: no search), got {search_deg!r}")
        self.names = expand_names(refine)
        initial = dict(initial or {})
        bounds = dict(bounds or {})
        for name in list(initial) + list(bounds):
            if name not in self.names:
                raise ValueError(f"initial value or bounds given for {name!r}, which is not refined ({self.names})")
        self.crystal, self.detector, self.beam = crystal, detector, beam
        self.dtype = dtype
        observed_t = torch.as_tensor(
            np.asarray(observed, dtype=np.float64) if not isinstance(observed, torch.Tensor) else observed
        )
        if observed_t.ndim != 2:
            raise ValueError(f"observed must be a 2-D image, got shape {tuple(observed_t.shape)}")
        if tuple(observed_t.shape) != detector.shape:
            raise ValueError(
                f"observed frame has shape {tuple(observed_t.shape)} but the detector model is "
                f"{detector.shape} (spixels, fpixels)"
            )
        if mask is None:
            mask_t = torch.ones(detector.shape, dtype=torch.bool)
        else:
            mask_t = torch.as_tensor(np.asarray(mask)).to(torch.bool)
            if tuple(mask_t.shape) != detector.shape:
                raise ValueError(f"mask has shape {tuple(mask_t.shape)}, expected {detector.shape}")
        mask_t = mask_t & torch.isfinite(observed_t)
        if int(mask_t.sum()) == 0:
            raise ValueError("the mask leaves no pixel to refine against")
        self.mask = mask_t
        self.observed = observed_t.to(dtype)[mask_t]
        self.loss_name, self.gain, self.readout_noise = loss, float(gain), float(readout_noise)
        self.optimizer_name = "lbfgs" if optimizer == "auto" else optimizer
        self.staged = staged and optimizer == "auto"
        self.learning_rate = learning_rate
        self.predict_every = predict_every
        self.tolerance = tolerance
        # the orientation search belongs to the staged default strategy only
        self.search_deg = float(search_deg or 0.0) if self.staged else 0.0
        self.search: dict | None = None  # what the last run's orientation search found

        scale0 = 1.0
        self.transforms = []
        for name in self.names:
            start = float(initial.get(name, read_parameter(name, crystal, detector, beam, scale0)))
            if not math.isfinite(start):
                raise ValueError(f"start value of {name} must be finite, got {start!r}")
            self.transforms.append(ParameterTransform(name, start, bounds.get(name)))
        self.initial_parameters = {t.name: t.start for t in self.transforms}
        self._internal = torch.tensor(
            [t.to_internal(t.start) for t in self.transforms], dtype=dtype, requires_grad=True
        )
        self._stop = threading.Event()
        self.result: RefineResult | None = None
        self.history: list[dict] = []

    # ------------------------------------------------------------------ model
    def physical(self, internal: torch.Tensor) -> dict[str, torch.Tensor]:
        return {t.name: t.to_physical(internal[i]) for i, t in enumerate(self.transforms)}

    def predict(self, internal: torch.Tensor) -> torch.Tensor:
        """Predicted image (spixels, fpixels) at internal coordinates ``internal``."""
        crystal, detector, beam, scale = apply_parameters(
            self.physical(internal), self.crystal, self.detector, self.beam
        )
        return scale * simulate(crystal, detector, beam, dtype=self.dtype)

    def loss_of(self, predicted_image: torch.Tensor) -> torch.Tensor:
        predicted = predicted_image[self.mask]
        if self.loss_name == "poisson":
            return poisson_nll(predicted, self.observed, gain=self.gain, readout_noise=self.readout_noise)
        return mse(predicted, self.observed)

    def stop(self) -> None:
        """Ask the run to end; it does so cleanly before the next iteration."""
        self._stop.set()

    # -------------------------------------------------------------------- run
    def _stages(self, max_iter: int) -> list:
        geometry = [i for i, n in enumerate(self.names) if n not in BROADENING]
        if not self.staged or not geometry or len(geometry) == len(self.names):
            return [("all", list(range(len(self.names))), max_iter)]
        first = max(1, int(round(0.4 * max_iter)))
        return [("geometry", geometry, first), ("all", list(range(len(self.names))), max_iter - first)]

    def run(self, max_iter: int = 100) -> Iterator[RefineState]:
        """Refine for at most ``max_iter`` iterations, yielding a state after each.

        The last state (stage "done") carries the kept parameters and their image.
        """
        if int(max_iter) < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter!r}")
        self._stop.clear()
        self.history = []
        with torch.no_grad():
            initial_loss = float(self.loss_of(self.predict(self._internal)))
        if not math.isfinite(initial_loss):
            self._finish("failed", f"the starting model gives a non-finite loss ({initial_loss})", initial_loss, None)
            yield self._final_state(0)
            return
        best = {"loss": initial_loss, "internal": self._internal.detach().clone()}
        self.search = None
        if self.search_deg > 0:
            self._search_orientation(best)
        status, message = "converged", ""
        iteration = 0
        for stage, active, budget in self._stages(int(max_iter)):
            if budget <= 0:
                continue
            active_mask = torch.zeros(len(self.names), dtype=self.dtype)
            active_mask[active] = 1.0
            objective = self._objective(active_mask, best)
            try:
                stepper = self._make_stepper(objective, best["internal"])
            except Exception as exc:  # whatever it is, the run ends with the best parameters  # noqa: BLE001  any failure becomes a message, never a traceback
                status, message = "failed", f"{_describe(exc)} at iteration {iteration}; kept the last good parameters"
                break
            stage_status = "max_iter"
            for _ in range(budget):
                if self._stop.is_set():
                    stage_status, message = "stopped", f"stopped by request after {iteration} iterations"
                    break
                previous = stepper.loss
                try:
                    loss_value, grad = stepper.step()
                except Exception as exc:  # whatever it is, the run ends with the best parameters  # noqa: BLE001  any failure becomes a message, never a traceback
                    stage_status = "failed"
                    message = f"{_describe(exc)} at iteration {iteration}; kept the last good parameters"
                    break
                internal = stepper.x
                grad_norm = float(torch.linalg.vector_norm(grad))
                params = {n: float(x) for n, x in self.physical(internal).items()}
                snapshot = iteration % self.predict_every == 0
                image = None
                if snapshot:
                    with torch.no_grad():
                        image = self.predict(internal).to(torch.float32).numpy()
                self.history.append({"iteration": iteration, "loss": loss_value, "stage": stage, "parameters": params})
                yield RefineState(iteration, loss_value, params, grad_norm, image, stage)
                iteration += 1
                if abs(previous - loss_value) <= self.tolerance * max(abs(loss_value), 1e-300):
                    stage_status = "converged"
                    break
            if stage_status in ("stopped", "failed"):
                status = stage_status
                break
            if stage_status == "max_iter":
                status = "max_iter"
        self._finish(status, message, initial_loss, best)
        yield self._final_state(iteration)

    def _search_orientation(self, best: dict) -> None:
        """Coarse grid over the refined misset axes around the start; updates ``best``.

        Gradient descent from a start a few degrees off can settle where only some spots
        overlap; the lowest-loss grid point lies in the right basin far more often (with
        4 deg steps, 60 of 60 random truths within +-5 deg against 56 without, 56 of 60
        within +-8 deg against 35; benchmarks/refine_robustness.py, docs/refinement.md).
        Points outside a parameter's bounds are skipped; ``stop()`` ends the search early.
        """
        axes = [i for i, n in enumerate(self.names) if n.startswith("misset_")]
        if not axes:
            return
        start = best["internal"].clone()
        start_loss = best["loss"]
        shifts = (-self.search_deg, 0.0, self.search_deg)
        start_deg = {i: float(self.transforms[i].to_physical(start[i])) for i in axes}
        tried = 0
        with torch.no_grad():
            for offsets in itertools.product(shifts, repeat=len(axes)):
                if self._stop.is_set():
                    break
                if not any(offsets):
                    continue  # the start itself: its loss is known
                candidate = start.clone()
                inside = True
                for i, offset in zip(axes, offsets, strict=False):
                    transform = self.transforms[i]
                    physical = start_deg[i] + offset
                    if transform.bounds is not None and not transform.bounds[0] < physical < transform.bounds[1]:
                        inside = False
                        break
                    candidate[i] = transform.to_internal(physical)
                if not inside:
                    continue
                try:
                    loss = float(self.loss_of(self.predict(candidate)))
                except ValueError:  # no valid model there
                    continue
                except Exception:  # e.g. out of memory: the descent will meet it and report it  # noqa: BLE001  any failure becomes a message, never a traceback
                    break
                tried += 1
                if math.isfinite(loss) and loss < best["loss"]:
                    best["loss"], best["internal"] = loss, candidate
        chosen = self.physical(best["internal"])
        self.search = {
            "step_deg": self.search_deg,
            "points_tried": tried + 1,
            "start_loss": start_loss,
            "chosen_loss": best["loss"],
            "chosen": {self.names[i]: float(chosen[self.names[i]]) for i in axes},
        }

    def _final_state(self, iteration: int) -> RefineState:
        final = self.result
        return RefineState(
            iteration, final.final_loss, dict(final.parameters), 0.0, self._best_image, "done", final.message
        )

    def _objective(self, active_mask: torch.Tensor, best: dict):
        """(loss, gradient masked to the active parameters) at internal coordinates x."""

        def objective(x: torch.Tensor):
            x = x.detach().clone().requires_grad_(True)
            try:
                loss = self.loss_of(self.predict(x))
            except ValueError as exc:  # e.g. cell angles that close no cell
                raise FloatingPointError(f"the model is invalid there ({exc})") from exc
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {float(loss.detach())}")
            (grad,) = torch.autograd.grad(loss, x)
            if not torch.isfinite(grad).all():
                raise FloatingPointError("gradient became non-finite")
            value = float(loss.detach())
            if value < best["loss"]:
                best["loss"], best["internal"] = value, x.detach().clone()
            return value, grad * active_mask

        return objective

    def _make_stepper(self, objective, x0: torch.Tensor):
        if self.optimizer_name == "adam":
            return _AdamStepper(objective, x0, self.learning_rate or 0.1)
        return LBFGS(objective, x0, max_step=self.learning_rate or 2.0)

    def _finish(self, status: str, message: str, initial_loss: float, best: dict | None) -> None:
        internal = best["internal"] if best else self._internal.detach()
        with torch.no_grad():
            physical = self.physical(internal)
            crystal, detector, beam, scale = apply_parameters(physical, self.crystal, self.detector, self.beam)
            image = float(scale) * simulate(crystal, detector, beam, dtype=self.dtype) if best else None
        params = {n: float(x) for n, x in physical.items()}
        errors = self.standard_errors(internal) if best else dict.fromkeys(self.names, math.nan)
        self._best_image = image.to(torch.float32).numpy() if image is not None else None
        if not message:
            message = {
                "converged": f"relative loss change below {self.tolerance:g}",
                "max_iter": "reached the iteration limit before the loss settled",
            }.get(status, status)
        self.result = RefineResult(
            parameters=params,
            standard_errors=errors,
            initial_parameters=dict(self.initial_parameters),
            crystal=_plain(crystal),
            detector=_plain(detector),
            beam=beam,
            scale=float(scale),
            history=list(self.history),
            status=status,
            message=message,
            initial_loss=initial_loss,
            final_loss=best["loss"] if best else initial_loss,
            search=self.search,
        )

    # ---------------------------------------------------------- uncertainties
    def standard_errors(self, internal: torch.Tensor, step: float = 1e-4) -> dict[str, float]:
        """Standard errors in physical units from the Gauss-Newton curvature.

        The Jacobian of the predicted pixels with respect to the physical parameters is
        taken by central differences (two forward passes per parameter).  For MSE the
        noise variance is estimated from the residuals, sigma^2 = RSS / (n - p); for the
        Poisson loss the pixel variances come from the model (Fisher information).
        """
        with torch.no_grad():
            physical = {n: x.detach().clone() for n, x in self.physical(internal).items()}
            predicted = self._image_at(physical)[self.mask]
            columns, kept = [], []
            for name in self.names:
                column = self._jacobian_column(physical, name, predicted, step)
                if column is not None:
                    columns.append(column)
                    kept.append(name)
            if not columns:
                return dict.fromkeys(self.names, math.nan)
            jacobian = torch.stack(columns, dim=1)  # (n_pixels, p)
            n_pixels, p = jacobian.shape
            if self.loss_name == "poisson":
                weights = pixel_weights(predicted, "poisson", gain=self.gain, readout_noise=self.readout_noise)
                information = jacobian.T @ (weights[:, None] * jacobian)
                sigma_sq = 1.0
            else:
                residual = predicted - self.observed
                sigma_sq = float((residual * residual).sum()) / max(n_pixels - p, 1)
                information = jacobian.T @ jacobian
            try:
                covariance = torch.linalg.inv(information) * sigma_sq
                variances = torch.diagonal(covariance)
            except RuntimeError:
                variances = torch.full((p,), math.nan, dtype=jacobian.dtype)
        errors = {n: math.sqrt(float(x)) if float(x) >= 0 else math.nan for n, x in zip(kept, variances, strict=False)}
        return {n: errors.get(n, math.nan) for n in self.names}

    def _jacobian_column(self, physical: dict, name: str, predicted: torch.Tensor, step: float):
        """d(predicted masked pixels)/d(name), shape (n_pixels,), by finite differences.

        Central where both sides are valid models; one-sided at the edge of the valid
        region (a spread near 0, N near 1); None where neither side is valid.
        """
        value = float(physical[name])
        kind, typical = PARAMETERS[name]
        # a relative step for positive quantities keeps value - h positive
        h = step * typical * (abs(value) if kind == "log" and value > 0 else 1.0)

        def image(shift: float) -> torch.Tensor:
            return self._image_at(dict(physical, **{name: physical[name] + shift}))[self.mask]

        for high, low in ((h, -h), (h, 0.0), (0.0, -h)):
            try:
                upper = predicted if high == 0.0 else image(high)
                lower = predicted if low == 0.0 else image(low)
            except ValueError:
                continue
            return (upper - lower) / (high - low)
        return None

    def _image_at(self, physical: dict[str, torch.Tensor]) -> torch.Tensor:
        crystal, detector, beam, scale = apply_parameters(physical, self.crystal, self.detector, self.beam)
        return scale * simulate(crystal, detector, beam, dtype=self.dtype)


def _plain(component):
    """A copy of a model component with every tensor replaced by a float."""
    changes = {}
    for field in dataclasses.fields(component):
        value = getattr(component, field.name)
        if isinstance(value, torch.Tensor):
            changes[field.name] = float(value.detach())
        elif isinstance(value, tuple) and any(isinstance(x, torch.Tensor) for x in value):
            changes[field.name] = tuple(float(x.detach()) if isinstance(x, torch.Tensor) else x for x in value)
    return dataclasses.replace(component, **changes) if changes else component


class _AdamStepper:
    """torch.optim.Adam behind the same one-step interface as :class:`LBFGS`."""

    def __init__(self, objective, x0: torch.Tensor, learning_rate: float):
        self.objective = objective
        self.x = x0.detach().clone().requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.x], lr=learning_rate)
        self.loss, self.grad = objective(self.x)

    def step(self):
        self.x.grad = self.grad.clone()
        self.optimizer.step()
        self.loss, self.grad = self.objective(self.x)
        return self.loss, self.grad


def _describe(exc: BaseException) -> str:
    """The message of a numerical failure as is; other exceptions with their type."""
    if isinstance(exc, FloatingPointError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
