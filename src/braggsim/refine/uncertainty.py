"""Standard errors of refined parameters from the Gauss-Newton curvature at the optimum.

The Jacobian of the predicted values with respect to the physical parameters is taken
by central differences (two forward passes per parameter).  The covariance is the
inverse curvature ``(J^T W J)^-1`` times the target's noise variance: for MSE the
residual variance ``RSS / (n - p)`` (W = 1); for the Poisson loss W holds the model's
inverse variances (Fisher information) and the factor is 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch

from .parameters import Parameter
from .target import Target

__all__ = ["jacobian_column", "standard_errors"]

# physical values {name: 0-d tensor} -> (n,) predicted values; ValueError where no valid model
PredictValues = Callable[[Mapping[str, torch.Tensor]], torch.Tensor]


def standard_errors(
    names: Sequence[str],
    parameters: Mapping[str, Parameter],
    physical: Mapping[str, torch.Tensor],
    predict: PredictValues,
    target: Target,
    step: float = 1e-4,
) -> dict[str, float]:
    """{name: standard error in physical units}; NaN where the frame does not determine it."""
    with torch.no_grad():
        physical = {n: x.detach().clone() for n, x in physical.items()}
        predicted = predict(physical)
        columns, kept = [], []
        for name in names:
            column = jacobian_column(predict, physical, parameters[name], predicted, step)
            if column is not None:
                columns.append(column)
                kept.append(name)
        if not columns:
            return dict.fromkeys(names, math.nan)
        jacobian = torch.stack(columns, dim=1)  # (n_values, p)
        p = jacobian.shape[1]
        weights = target.fisher_weights(predicted)
        information = jacobian.T @ (weights[:, None] * jacobian)
        sigma_sq = target.noise_variance(predicted, p)
        try:
            covariance = torch.linalg.inv(information) * sigma_sq
            variances = torch.diagonal(covariance)
        except RuntimeError:  # singular curvature: some combination is not determined
            variances = torch.full((p,), math.nan, dtype=jacobian.dtype)
    errors = {n: math.sqrt(float(x)) if float(x) >= 0 else math.nan for n, x in zip(kept, variances, strict=True)}
    return {n: errors.get(n, math.nan) for n in names}


def jacobian_column(
    predict: PredictValues,
    physical: Mapping[str, torch.Tensor],
    parameter: Parameter,
    predicted: torch.Tensor,
    step: float,
) -> torch.Tensor | None:
    """d(predicted values)/d(parameter), shape (n,), by finite differences.

    Central where both sides are valid models; one-sided at the edge of the valid
    region (a spread near 0, N near 1); None where neither side is valid.
    """
    name = parameter.name
    value = float(physical[name])
    # a relative step for positive quantities keeps value - h positive
    h = step * parameter.step * (abs(value) if parameter.kind == "log" and value > 0 else 1.0)

    def shifted(shift: float) -> torch.Tensor:
        return predict(dict(physical, **{name: physical[name] + shift}))

    for high, low in ((h, -h), (h, 0.0), (0.0, -h)):
        try:
            upper = predicted if high == 0.0 else shifted(high)
            lower = predicted if low == 0.0 else shifted(low)
        except ValueError:
            continue
        return (upper - lower) / (high - low)
    return None
