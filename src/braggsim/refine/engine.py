"""How the refinement moves: steppers, stages, the orientation search, and the descent loop.

Nothing here knows about crystals or pixels.  The engine sees internal coordinates (a
1-D tensor), an objective ``x -> (loss, gradient)`` and a loss-only evaluation, and
reports each accepted step.  The Refiner turns the steps into states.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import threading
from collections.abc import Callable, Iterator, Sequence

import torch

from ..optim import LBFGS, AdamStepper, Objective
from .parameters import ParameterTransform

__all__ = ["OPTIMIZERS", "Outcome", "Stage", "Step", "descend", "make_stepper", "search_orientation", "stages"]

OPTIMIZERS = ("auto", "lbfgs", "adam")
GEOMETRY_SHARE = 0.4  # the staged strategy's first stage gets this share of the iterations


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str  # "geometry" | "all"
    active: list[int]  # indices of the parameters it moves
    budget: int  # iterations


@dataclasses.dataclass(frozen=True)
class Step:
    iteration: int
    stage: str
    loss: float
    grad: torch.Tensor
    x: torch.Tensor


@dataclasses.dataclass
class Outcome:
    """How a descent ended: converged | max_iter | stopped | failed, and why."""

    status: str = "converged"
    message: str = ""
    iterations: int = 0


def stages(names: Sequence[str], broadening: set[str], staged: bool, max_iter: int) -> list[Stage]:
    """The staged strategy: geometry first with the spot-broadening parameters held, then
    everything; a single stage when not staged or when one of the two sets is empty."""
    everything = list(range(len(names)))
    geometry = [i for i, n in enumerate(names) if n not in broadening]
    if not staged or not geometry or len(geometry) == len(names):
        return [Stage("all", everything, max_iter)]
    first = max(1, int(round(GEOMETRY_SHARE * max_iter)))
    return [Stage("geometry", geometry, first), Stage("all", everything, max_iter - first)]


def make_stepper(optimizer: str, objective: Objective, x0: torch.Tensor, learning_rate: float | None):
    if optimizer == "adam":
        return AdamStepper(objective, x0, learning_rate or 0.1)
    return LBFGS(objective, x0, max_step=learning_rate or 2.0)


def descend(
    plan: Sequence[Stage],
    objective_for: Callable[[torch.Tensor], Objective],
    start: Callable[[], torch.Tensor],
    *,
    n_parameters: int,
    optimizer: str,
    learning_rate: float | None,
    tolerance: float,
    stop: threading.Event,
    outcome: Outcome,
    dtype: torch.dtype,
    device: torch.device | None = None,
) -> Iterator[Step]:
    """Run the stages, yielding every accepted step; ``outcome`` says how it ended.

    objective_for(active mask) gives the stage's objective (its gradient zero outside
    the active parameters); start() the point a stage begins from (the best so far).
    A stage ends when the relative loss change falls below ``tolerance`` or its budget
    is spent; ``stop`` ends the run between steps; any exception inside a step ends it
    as failed, with the exception in the message.
    """
    iteration = 0
    for stage in plan:
        if stage.budget <= 0:
            continue
        active_mask = torch.zeros(n_parameters, dtype=dtype, device=device)
        active_mask[stage.active] = 1.0
        try:
            stepper = make_stepper(optimizer, objective_for(active_mask), start(), learning_rate)
        except Exception as exc:  # noqa: BLE001  whatever it is, the run ends with the best parameters
            outcome.status = "failed"
            outcome.message = f"{describe(exc)} at iteration {iteration}; kept the last good parameters"
            break
        stage_status = "max_iter"
        for _ in range(stage.budget):
            if stop.is_set():
                stage_status, outcome.message = "stopped", f"stopped by request after {iteration} iterations"
                break
            previous = stepper.loss
            try:
                loss_value, grad = stepper.step()
            except Exception as exc:  # noqa: BLE001  whatever it is, the run ends with the best parameters
                stage_status = "failed"
                outcome.message = f"{describe(exc)} at iteration {iteration}; kept the last good parameters"
                break
            yield Step(iteration, stage.name, loss_value, grad, stepper.x)
            iteration += 1
            if abs(previous - loss_value) <= tolerance * max(abs(loss_value), 1e-300):
                stage_status = "converged"
                break
        if stage_status in ("stopped", "failed"):
            outcome.status = stage_status
            break
        if stage_status == "max_iter":
            outcome.status = "max_iter"
    outcome.iterations = iteration


def search_orientation(
    names: Sequence[str],
    transforms: Sequence[ParameterTransform],
    best: dict,
    step_deg: float,
    evaluate: Callable[[torch.Tensor], float],
    stop: threading.Event,
) -> dict | None:
    """Coarse grid over the refined misset axes around ``best["internal"]``; updates ``best``.

    Gradient descent from a start a few degrees off can settle where only some spots
    overlap; the lowest-loss grid point lies in the right basin far more often (with
    4 deg steps, 60 of 60 random truths within +-5 deg against 56 without, 56 of 60
    within +-8 deg against 35; benchmarks/refine_robustness.py, docs/refinement.md).
    Tries the start shifted by -step, 0, +step on each axis (3**k - 1 forward passes,
    no gradient); points outside a parameter's bounds are skipped; ``stop`` ends the
    search early.  Returns what it tried and chose, or None when no misset is refined.
    """
    axes = [i for i, n in enumerate(names) if n.startswith("misset_")]
    if not axes:
        return None
    start = best["internal"].clone()
    start_loss = best["loss"]
    shifts = (-step_deg, 0.0, step_deg)
    start_deg = {i: float(transforms[i].to_physical(start[i])) for i in axes}
    tried = 0
    with torch.no_grad():
        for offsets in itertools.product(shifts, repeat=len(axes)):
            if stop.is_set():
                break
            if not any(offsets):
                continue  # the start itself: its loss is known
            candidate = start.clone()
            inside = True
            for i, offset in zip(axes, offsets, strict=True):
                transform = transforms[i]
                physical = start_deg[i] + offset
                if transform.bounds is not None and not transform.bounds[0] < physical < transform.bounds[1]:
                    inside = False
                    break
                candidate[i] = transform.to_internal(physical)
            if not inside:
                continue
            try:
                loss = evaluate(candidate)
            except ValueError:  # no valid model there
                continue
            except Exception:  # noqa: BLE001  e.g. out of memory: the descent will meet it and report it
                break
            tried += 1
            if math.isfinite(loss) and loss < best["loss"]:
                best["loss"], best["internal"] = loss, candidate
    chosen = {names[i]: float(transforms[i].to_physical(best["internal"][i])) for i in axes}
    return {
        "step_deg": step_deg,
        "points_tried": tried + 1,
        "start_loss": start_loss,
        "chosen_loss": best["loss"],
        "chosen": chosen,
    }


def describe(exc: BaseException) -> str:
    """The message of a numerical failure as is; other exceptions with their type."""
    if isinstance(exc, FloatingPointError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
