"""Steppers whose iterations can be driven one at a time: a small L-BFGS, and Adam.

torch.optim.LBFGS keeps the wrong gradient in its curvature history when called with
``max_iter=1`` repeatedly (it stores the gradient from before the line search), and
stalls; a GUI needs one accepted step per call, so braggsim keeps its own.  Problems
are small (a handful to a few dozen parameters), so the two-loop recursion is cheap.
The line search backtracks until the Armijo condition holds and expands the step while
the slope stays steeply negative, which carries it quickly across flat or concave
stretches of a diffraction loss.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["LBFGS", "AdamStepper", "Objective"]

Objective = Callable[[torch.Tensor], tuple[float, torch.Tensor]]


class LBFGS:
    """Minimise ``objective(x) -> (loss, gradient)`` over a 1-D tensor ``x``.

    ``step()`` performs one iteration and returns (loss, gradient) at the new point.
    The objective raises FloatingPointError where it cannot be evaluated; a trial point
    that does so is backed off from, and ``step()`` raises only when every trial did.
    """

    def __init__(self, objective: Objective, x0: torch.Tensor, *, history: int = 20, max_step: float = 2.0):
        self.objective = objective
        self.x = x0.detach().clone()
        self.history = history
        self.max_step = max_step  # largest first trial step (internal units, inf-norm)
        self.pairs: list = []
        self.loss, self.grad = objective(self.x)
        self.evaluations = 1

    def _direction(self) -> torch.Tensor:
        q = -self.grad.clone()
        alphas = []
        for s, y, rho in reversed(self.pairs):
            alpha = rho * torch.dot(s, q)
            q -= alpha * y
            alphas.append(alpha)
        if self.pairs:
            s, y, _ = self.pairs[-1]
            q *= torch.dot(s, y) / torch.dot(y, y)
        for (s, y, rho), alpha in zip(self.pairs, reversed(alphas), strict=False):
            beta = rho * torch.dot(y, q)
            q += (alpha - beta) * s
        return q

    def step(self, c1: float = 1e-4, c2: float = 0.9, max_trials: int = 25):
        direction = self._direction()
        slope = float(torch.dot(direction, self.grad))
        if not slope < 0:  # not a descent direction: fall back to steepest descent
            self.pairs.clear()
            direction = -self.grad.clone()
            slope = float(torch.dot(direction, self.grad))
        largest = float(direction.abs().max())
        t = 1.0 if self.pairs else min(1.0, self.max_step / max(largest, 1e-30))
        if largest * t > 10 * self.max_step:
            t = 10 * self.max_step / largest
        best = None
        low, high = 0.0, None
        failures = []
        for _ in range(max_trials):
            x_new = self.x + t * direction
            self.evaluations += 1
            try:
                loss_new, grad_new = self.objective(x_new)
            except FloatingPointError as exc:
                # an overlong trial step can leave the model's valid region (a NaN, an
                # impossible cell): treat it like a rise in the loss and shrink the step
                failures.append(exc)
                high = t
                t = 0.5 * (low + high)
                continue
            if loss_new > self.loss + c1 * t * slope or loss_new != loss_new:
                high = t  # too far: shrink
            else:
                if best is None or loss_new < best[0]:
                    best = (loss_new, grad_new, x_new, t)
                new_slope = float(torch.dot(grad_new, direction))
                if new_slope >= c2 * slope:
                    break  # curvature condition holds too: accept
                low = t  # still steeply downhill: try further
            t = 0.5 * (low + high) if high is not None else 2.0 * t
        if best is None:
            if len(failures) == max_trials:
                raise failures[-1]  # nowhere along the line is the objective finite
            return self.loss, self.grad  # no decrease found; caller sees zero progress
        loss_new, grad_new, x_new, _ = best
        s, y = x_new - self.x, grad_new - self.grad
        sy = float(torch.dot(s, y))
        if sy > 1e-10 * float(torch.linalg.vector_norm(s) * torch.linalg.vector_norm(y)):
            self.pairs.append((s, y, 1.0 / sy))
            self.pairs = self.pairs[-self.history :]
        self.x, self.loss, self.grad = x_new, loss_new, grad_new
        return self.loss, self.grad


class AdamStepper:
    """torch.optim.Adam behind the same one-step interface as :class:`LBFGS`."""

    def __init__(self, objective: Objective, x0: torch.Tensor, learning_rate: float):
        self.objective = objective
        self.x = x0.detach().clone().requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.x], lr=learning_rate)
        self.loss, self.grad = objective(self.x)

    def step(self):
        self.x.grad = self.grad.clone()
        self.optimizer.step()
        self.loss, self.grad = self.objective(self.x)
        return self.loss, self.grad
