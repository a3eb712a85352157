"""The one-step L-BFGS: convergence on a known minimum, and how it treats points where
the objective cannot be evaluated."""

import pytest
import torch

from braggsim.optim import LBFGS

MINIMUM = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
WEIGHTS = torch.tensor([1.0, 10.0, 100.0], dtype=torch.float64)


def _quadratic(x):
    d = x - MINIMUM
    return float((WEIGHTS * d * d).sum()), 2 * WEIGHTS * d


def test_converges_to_the_minimum_of_an_ill_scaled_quadratic():
    optimizer = LBFGS(_quadratic, torch.zeros(3, dtype=torch.float64))
    for _ in range(30):
        loss, _ = optimizer.step()
    assert loss < 1e-20
    torch.testing.assert_close(optimizer.x, MINIMUM, rtol=0, atol=1e-10)


def test_backs_off_from_points_it_cannot_evaluate():
    """Undefined beyond x0 > 1.3: overlong trial steps land there and are shrunk, not fatal."""
    failed = []

    def objective(x):
        if float(x[0]) > 1.3:
            failed.append(float(x[0]))
            raise FloatingPointError("undefined here")
        return _quadratic(x)

    start = torch.tensor([-5.0, -2.0, 0.5], dtype=torch.float64)  # off the minimum in x0 only
    optimizer = LBFGS(objective, start, max_step=20.0)
    for _ in range(40):
        loss, _ = optimizer.step()
    assert failed, "the test must exercise an undefined trial point"
    assert loss < 1e-20
    torch.testing.assert_close(optimizer.x, MINIMUM, rtol=0, atol=1e-10)


def test_raises_when_no_trial_point_can_be_evaluated():
    start = torch.zeros(3, dtype=torch.float64)

    def objective(x):
        if torch.equal(x, start):
            return _quadratic(x)
        raise FloatingPointError("loss became nan")

    optimizer = LBFGS(objective, start)
    with pytest.raises(FloatingPointError, match="loss became nan"):
        optimizer.step()
    assert torch.equal(optimizer.x, start)  # nothing moved
