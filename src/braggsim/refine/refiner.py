"""The Refiner: assembles parameters, target, engine, uncertainty and gates, and yields states.

A :class:`Refiner` drives a differentiable forward model with L-BFGS (or Adam) and
yields one :class:`RefineState` per iteration, so a GUI or script can follow and stop
it.  The default strategy first searches a coarse grid of misset angles around the
start (no gradients) and descends from the best point.  It is then staged: the geometry
(orientation, cell, detector, scale) is refined first with the spot-broadening
parameters (mosaic spread, crystal size) held at their starting values, because a wrong
orientation otherwise drags the mosaic spread upwards to smear spots over the misfit;
then everything is refined together.  Standard errors come from the Gauss-Newton
curvature at the optimum.  Every run ends through the sanity gates
(:mod:`braggsim.refine.gates`): a frame without signal is not refined, and a result that
explains the frame no better than a flat background, or whose values left their physical
range, gets that status instead of "converged".
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

from .._validate import resolve_device
from ..beam import Beam
from ..crystal import Crystal
from ..detector import Detector
from . import engine, gates
from .parameters import Model, ModelPart, ParameterSet, ParameterTransform, default_parts
from .target import PixelTarget, Target
from .uncertainty import standard_errors

__all__ = ["RefineResult", "RefineState", "Refiner"]

# how a run can end; a failed gate replaces "converged" / "max_iter" by its own status
STATUSES = ("converged", "max_iter", "stopped", "failed", *gates.GATE_STATUSES)


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
    """The outcome of a run: the best parameters seen and how the run ended.

    status: one of STATUSES.  ending: how the descent itself ended (converged,
    max_iter, stopped, failed; "not-run" when the no-signal gate refused the frame).
    gates: the failed sanity gates, [{"status", "reason"}], first one = the status.
    standard_errors_note: why there are no standard errors, when there are none.
    """

    parameters: dict[str, float]
    standard_errors: dict[str, float]
    initial_parameters: dict[str, float]
    crystal: Crystal
    detector: Detector
    beam: Beam
    scale: float
    history: list[dict]
    status: str
    message: str
    initial_loss: float
    final_loss: float
    # the orientation search's outcome: step_deg, points_tried, start_loss, chosen_loss,
    # chosen {misset name: deg}; None when no search ran
    search: dict | None = None
    ending: str = ""
    gates: list[dict] = dataclasses.field(default_factory=list)
    standard_errors_note: str = ""
    background: float | None = None

    @property
    def ok(self) -> bool:
        """True when the run converged or used its iterations and passed every gate."""
        return self.status in ("converged", "max_iter")

    def to_dict(self) -> dict:
        return {
            "parameters": self.parameters,
            "standard_errors": self.standard_errors,
            "standard_errors_note": self.standard_errors_note,
            "initial_parameters": self.initial_parameters,
            "status": self.status,
            "message": self.message,
            "ending": self.ending,
            "gates": self.gates,
            "initial_loss": self.initial_loss,
            "final_loss": self.final_loss,
            "search": self.search,
            "history": self.history,
        }


class Refiner:
    """Refine ``refine`` parameters of a starting model against ``observed``.

    observed: (spixels, fpixels) array or tensor, or a :class:`~braggsim.refine.target.Target`
    (then mask, loss, gain and readout_noise belong to it); mask: optional bool array of
    the same shape, True = use the pixel.  refine: group and parameter names
    (:data:`~braggsim.refine.parameters.PARAMETER_GROUPS`).  initial / bounds:
    {name: value} / {name: (low, high)} in physical units.  loss: "mse" or "poisson"
    (with ``gain`` ADU/photon and ``readout_noise`` ADU).  optimizer: "auto" (= staged
    L-BFGS), "lbfgs" or "adam".  predict_every: put the predicted image in every k-th
    state (and always the last).  search_deg: with the default strategy, before refining,
    try the start misset shifted by -search_deg, 0, +search_deg on each refined misset
    axis (3**k forward passes, no gradient) and start from the lowest loss; 0 or None
    skips the search.  space_group: constrains the cell (tetragonal: b = a, angles 90).
    parts: the model parts (default: every registered one); give extra parts for extra
    nuisance parameters.  gates: False skips the sanity gates.  device: torch device of
    the computation (default: the CPU).
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
        space_group: str | None = None,
        parts: Iterable[ModelPart] | None = None,
        gates: bool = True,
        device: torch.device | str | None = None,
    ):
        if optimizer not in engine.OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {engine.OPTIMIZERS}, got {optimizer!r}")
        if predict_every < 1:
            raise ValueError(f"predict_every must be >= 1, got {predict_every!r}")
        if search_deg is not None and not (math.isfinite(search_deg) and search_deg >= 0):
            raise ValueError(f"search_deg must be >= 0 deg (0 or None: no search), got {search_deg!r}")
        if parts is not None and space_group is not None:
            raise ValueError("give the space group to the UnitCell part when you give parts")
        self.parameter_set = ParameterSet(parts if parts is not None else default_parts(space_group))
        self.names = self.parameter_set.expand(refine)
        initial = dict(initial or {})
        bounds = dict(bounds or {})
        for name in list(initial) + list(bounds):
            if name not in self.names:
                raise ValueError(f"initial value or bounds given for {name!r}, which is not refined ({self.names})")
        self.crystal, self.detector, self.beam = crystal, detector, beam
        self.model = Model(crystal, detector, beam)
        self.parameter_set.check(self.names, self.model)
        self.dtype = dtype
        self.device = resolve_device(device) if device is not None else None
        if isinstance(observed, Target):
            if mask is not None or loss != "mse" or gain != 1.0 or readout_noise != 0.0:
                raise ValueError("mask, loss, gain and readout_noise belong to the Target when one is given")
            self.target = observed
        else:
            observed_t = torch.as_tensor(
                np.asarray(observed, dtype=np.float64) if not isinstance(observed, torch.Tensor) else observed
            )
            if observed_t.ndim == 2 and tuple(observed_t.shape) != detector.shape:
                raise ValueError(
                    f"observed frame has shape {tuple(observed_t.shape)} but the detector model is "
                    f"{detector.shape} (spixels, fpixels)"
                )
            self.target = PixelTarget(
                observed_t,
                mask,
                loss=loss,
                gain=gain,
                readout_noise=readout_noise,
                dtype=dtype,
                device=self.device,
            )
        self.optimizer_name = "lbfgs" if optimizer == "auto" else optimizer
        self.staged = staged and optimizer == "auto"
        self.learning_rate = learning_rate
        self.predict_every = predict_every
        self.tolerance = tolerance
        self.use_gates = gates
        # the orientation search belongs to the staged default strategy only
        self.search_deg = float(search_deg or 0.0) if self.staged else 0.0
        self.search: dict | None = None  # what the last run's orientation search found

        self.transforms = []
        for name in self.names:
            start = float(initial.get(name, self.parameter_set.read(name, self.model)))
            if not math.isfinite(start):
                raise ValueError(f"start value of {name} must be finite, got {start!r}")
            self.transforms.append(ParameterTransform(self.parameter_set.parameters[name], start, bounds.get(name)))
        self.initial_parameters = {t.name: t.start for t in self.transforms}
        self._internal = torch.tensor(
            [t.to_internal(t.start) for t in self.transforms], dtype=dtype, device=self.device, requires_grad=True
        )
        self._stop = threading.Event()
        self._best_image: np.ndarray | None = None
        self.result: RefineResult | None = None
        self.history: list[dict] = []

    # ------------------------------------------------------------ compatibility
    @property
    def mask(self) -> torch.Tensor | None:
        """(spixels, fpixels) bool: the trusted pixels (None for a target without one)."""
        return getattr(self.target, "mask", None)

    @property
    def observed(self) -> torch.Tensor:
        """(n,) the observed values the loss compares with."""
        return self.target.observed

    @property
    def loss_name(self) -> str:
        return self.target.loss_name

    @property
    def start(self) -> torch.Tensor:
        """Internal coordinates of the start, (p,) (a copy)."""
        return self._internal.detach().clone()

    # ------------------------------------------------------------------ model
    def physical(self, internal: torch.Tensor) -> dict[str, torch.Tensor]:
        return {t.name: t.to_physical(internal[i]) for i, t in enumerate(self.transforms)}

    def model_at(self, physical: Mapping[str, Any]) -> Model:
        """The model with the physical values ``physical`` set."""
        return self.parameter_set.apply(physical, self.model)

    def predict(self, internal: torch.Tensor) -> torch.Tensor:
        """The target's prediction (for pixels: the (spixels, fpixels) image) at ``internal``."""
        return self.target.render(self.model_at(self.physical(internal)), self.dtype, self.device)

    def loss_of(self, predicted_image: torch.Tensor) -> torch.Tensor:
        return self.target.loss(self.target.select(predicted_image))

    def stop(self) -> None:
        """Ask the run to end; it does so cleanly before the next iteration."""
        self._stop.set()

    # -------------------------------------------------------------------- run
    def run(self, max_iter: int = 100) -> Iterator[RefineState]:
        """Refine for at most ``max_iter`` iterations, yielding a state after each.

        The last state (stage "done") carries the kept parameters and their image;
        ``self.result`` then holds the :class:`RefineResult`, whatever ended the run.
        """
        if int(max_iter) < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter!r}")
        self._stop.clear()
        self.history = []
        self.search = None
        self.result = None
        try:
            with torch.no_grad():
                initial_loss = float(self.loss_of(self.predict(self._internal)))
        except Exception as exc:  # noqa: BLE001  out of memory on a big frame, say: a failed result, not a traceback
            self._finish("failed", f"{engine.describe(exc)} in the starting model's loss", math.nan, None)
            yield self._final_state(0)
            return
        if not math.isfinite(initial_loss):
            self._finish("failed", f"the starting model gives a non-finite loss ({initial_loss})", initial_loss, None)
            yield self._final_state(0)
            return
        best: dict[str, Any] = {"loss": initial_loss, "internal": self._internal.detach().clone()}
        no_signal = self.target.check_signal() if self.use_gates else None
        if no_signal is not None:
            self._finish("not-run", "", initial_loss, best, refused=no_signal)
            yield self._final_state(0)
            return
        if self.search_deg > 0:
            self.search = engine.search_orientation(
                self.names, self.transforms, best, self.search_deg, self._evaluate, self._stop
            )
        outcome = engine.Outcome()
        # duplicates pairs this keyword list with nonbragg_cli's Detector(...) and nanobragg_flags'
        # FlagSet(...): alike in shape only
        steps = engine.descend(
            engine.stages(self.names, self.parameter_set.broadening(), self.staged, int(max_iter)),
            lambda active_mask: self._objective(active_mask, best),
            lambda: best["internal"],
            n_parameters=len(self.names),
            optimizer=self.optimizer_name,
            learning_rate=self.learning_rate,
            tolerance=self.tolerance,
            stop=self._stop,
            outcome=outcome,
            dtype=self.dtype,
            device=self.device,
        )
        try:
            for step in steps:
                grad_norm = float(torch.linalg.vector_norm(step.grad))
                params = {n: float(x.detach()) for n, x in self.physical(step.x).items()}
                image = None
                if step.iteration % self.predict_every == 0:
                    image = self._snapshot(step.x)
                self.history.append(
                    {"iteration": step.iteration, "loss": step.loss, "stage": step.stage, "parameters": params}
                )
                yield RefineState(step.iteration, step.loss, params, grad_norm, image, step.stage)
        except KeyboardInterrupt:
            # Ctrl-C in a console: keep the best parameters in self.result, then let it through
            message = f"interrupted (KeyboardInterrupt) after {len(self.history)} iterations"
            self._finish("stopped", message, initial_loss, best, uncertainties=False)
            raise
        self._finish(outcome.status, outcome.message, initial_loss, best)
        yield self._final_state(outcome.iterations)

    def _snapshot(self, internal: torch.Tensor) -> np.ndarray | None:
        """The image of a state, or None when it cannot be made (the run goes on)."""
        try:
            with torch.no_grad():
                return self.target.image(self.predict(internal))
        except Exception:  # noqa: BLE001  out of memory, say: a state without a picture
            return None

    def _evaluate(self, internal: torch.Tensor) -> float:
        return float(self.loss_of(self.predict(internal)))

    def _final_state(self, iteration: int) -> RefineState:
        final = self.result
        assert final is not None
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

    def _finish(
        self,
        ending: str,
        message: str,
        initial_loss: float,
        best: dict | None,
        refused: gates.GateFailure | None = None,
        uncertainties: bool = True,
    ) -> None:
        """Build ``self.result`` from the best point; nothing here may lose it.

        The final image and the standard errors are extras: when either fails (out of
        memory on a big frame, say) the result keeps the parameters and says why.
        """
        internal = best["internal"] if best else self._internal.detach()
        with torch.no_grad():
            physical = self.physical(internal)
            model = self.model_at(physical)
        params = {n: float(x) for n, x in physical.items()}
        notes = []
        self._best_image = None
        if best and refused is None and uncertainties:
            try:
                with torch.no_grad():
                    self._best_image = self.target.image(self.target.render(model, self.dtype, self.device))
            except Exception as exc:  # noqa: BLE001  the parameters matter more than their picture
                notes.append(f"no final image ({engine.describe(exc)})")
        errors = dict.fromkeys(self.names, math.nan)
        errors_note = "not computed: the refinement did not run" if not best or refused else ""
        if not uncertainties:
            errors_note = "not computed: interrupted"
        elif best and refused is None:
            try:
                errors = self.standard_errors(internal)
            except Exception as exc:  # noqa: BLE001  out of memory, say: keep the parameters without errors
                errors_note = f"not computed ({engine.describe(exc)})"
                notes.append(f"standard errors {errors_note}")
        if not message:
            message = {
                "converged": f"relative loss change below {self.tolerance:g}",
                "max_iter": "reached the iteration limit before the loss settled",
                "not-run": "the frame was not refined",
            }.get(ending, ending)
        final_loss = best["loss"] if best else initial_loss
        failures = []
        if refused is not None:
            failures.append(refused)
        elif self.use_gates and best is not None:
            failures += [
                f
                for f in (
                    gates.check_ranges(params, self.parameter_set.parameters),
                    gates.check_fit(
                        final_loss,
                        self.target.null_loss(),
                        n_values=self.target.n_values,
                        n_parameters=len(self.names),
                        loss=self.target.loss_name,
                    ),
                )
                if f is not None
            ]
        status = ending
        if failures and ending in ("converged", "max_iter", "not-run"):
            status = failures[0].status
        if failures:
            message = "; ".join(f"{f.status}: {f.reason}" for f in failures) + f" [descent: {ending}, {message}]"
        if notes:
            message = f"{message}; " + "; ".join(notes)
        background = model.background
        self.result = RefineResult(
            parameters=params,
            standard_errors=errors,
            initial_parameters=dict(self.initial_parameters),
            crystal=_plain(model.crystal),
            detector=_plain(model.detector),
            beam=_plain(model.beam),
            scale=float(model.scale),
            history=list(self.history),
            status=status,
            message=message,
            initial_loss=initial_loss,
            final_loss=final_loss,
            search=self.search,
            ending=ending,
            gates=[f.to_dict() for f in failures],
            standard_errors_note=errors_note,
            background=None if background is None else float(background),
        )

    # ---------------------------------------------------------- uncertainties
    def standard_errors(self, internal: torch.Tensor, step: float = 1e-4) -> dict[str, float]:
        """Standard errors in physical units at ``internal`` (:mod:`braggsim.refine.uncertainty`)."""
        with torch.no_grad():
            physical = self.physical(internal)
        return standard_errors(
            self.names,
            self.parameter_set.parameters,
            physical,
            lambda values: self.target.select(self.target.render(self.model_at(values), self.dtype, self.device)),
            self.target,
            step,
        )


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
