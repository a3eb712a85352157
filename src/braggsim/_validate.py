"""Input checks shared by the model components.

Every public constructor funnels its numbers through these helpers so that bad
input fails early with a ValueError that names the offending field and value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Union

import torch

Scalar = Union[float, int, torch.Tensor]


def as_number(value: Scalar) -> float:
    """Plain float view of a float or 0-d tensor (for checks only, never for maths)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"expected a scalar, got a tensor of shape {tuple(value.shape)}")
        return float(value.detach().reshape(()).cpu())
    return float(value)


def check_finite(name: str, value: Scalar) -> float:
    number = as_number(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {number!r}")
    return number


def check_positive(name: str, value: Scalar, *, unit: str = "") -> float:
    number = check_finite(name, value)
    if number <= 0:
        suffix = f" {unit}" if unit else ""
        raise ValueError(f"{name} must be > 0, got {number!r}{suffix}")
    return number


def check_non_negative(name: str, value: Scalar) -> float:
    number = check_finite(name, value)
    if number < 0:
        raise ValueError(f"{name} must be >= 0, got {number!r}")
    return number


def check_triple(name: str, values: Sequence[Scalar]) -> tuple:
    try:
        items = tuple(values)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of 3 numbers, got {values!r}") from None
    if len(items) != 3:
        raise ValueError(f"{name} must have 3 entries, got {len(items)}: {values!r}")
    for axis, item in zip("xyz", items, strict=False):
        check_finite(f"{name}[{axis}]", item)
    return items


def check_int(name: str, value, *, minimum: int) -> int:
    if isinstance(value, torch.Tensor):
        value = as_number(value)
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        value = int(value)
    if not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def to_tensor(value: Scalar, dtype: torch.dtype, device) -> torch.Tensor:
    """A float or tensor as a tensor of ``dtype`` on ``device``, keeping autograd links."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype=dtype, device=device)
    return torch.tensor(float(value), dtype=dtype, device=device)


def stack3(values: Sequence[Scalar], dtype: torch.dtype, device) -> torch.Tensor:
    """Three floats or 0-d tensors as one (3,) tensor that keeps each entry's gradient."""
    return torch.stack([to_tensor(v, dtype, device).reshape(()) for v in values])


SUPPORTED_DTYPES = (torch.float32, torch.float64)


def check_float_dtype(dtype) -> torch.dtype:
    """``dtype`` if braggsim computes in it; float16/bfloat16 underflow the physics (r_e^2 is
    7.9e-30) to an all-NaN image, so they are refused, as is anything else."""
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(
            f"dtype {dtype} is not supported: braggsim computes in float32 or float64 "
            "(pass dtype=torch.float32, or convert the tensor fields)"
        )
    return dtype


def check_matrix3(name: str, matrix):
    """A finite, non-singular 3x3 matrix as a float64 numpy array; ValueError otherwise."""
    import numpy as np

    try:
        array = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a 3x3 matrix of numbers, got {matrix!r:.200}") from None
    if array.shape != (3, 3):
        raise ValueError(f"{name} must be 3x3, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite, got {array.tolist()!r}")
    scale = float(np.abs(array).max())
    if scale == 0 or abs(float(np.linalg.det(array / scale))) < 1e-9:
        raise ValueError(f"{name} is singular (its rows do not span 3-D space): {array.tolist()!r}")
    return array


def revalidate(*parts) -> None:
    """Re-run the construction checks of model parts (Crystal, Detector, Beam, ...).

    The dataclasses are mutable, and a field changed after construction was never
    checked; ``simulate`` and the writers call this at use, so whatever a part's
    ``__post_init__`` checks (including fields added later) is checked again.  At use
    rather than in ``__setattr__``: several fields are only valid together (a MOSFLM
    matrix needs its wavelength, a beam centre needs its convention), which one-field-at-a-
    time assignment cannot respect, and a refinement replaces parts every step, which
    already re-runs the checks through ``dataclasses.replace``.

    So a part's ``__post_init__`` must be idempotent: running it twice leaves the same
    field values (tests/braggsim/test_reliability.py checks this for every model part).
    """
    for part in parts:
        post_init = getattr(type(part), "__post_init__", None)
        if post_init is None:
            continue
        try:
            post_init(part)
        except ValueError as exc:
            raise ValueError(f"{type(part).__name__}: {exc}") from None


def resolve_device(name) -> torch.device:
    """The torch device called ``name`` ("cpu", "cuda", "cuda:1", "mps"); ValueError
    when torch does not know it or this machine does not have it."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"-device {name!r} is not a torch device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"-device {name!r}: CUDA is not available here")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"-device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"-device {name!r}: MPS is not available here")
    return device
