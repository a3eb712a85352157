"""Incident-beam sources: nanoBragg's divergence grid and spectral dispersion, or a list.

nanoBragg sums every pixel over a set of sources, each an incident direction and a
wavelength.  It either reads them from ``-sourcefile`` or builds a grid:

- divergence: ``hdiv = hstep * i - hrange / 2`` for ``i < hsteps`` (and the same for
  ``vdiv``); the source direction ``-beam`` is rotated by ``vdiv`` about the polarization
  axis, then by ``hdiv`` about ``beam x polarization``.  With round divergence (the
  default) grid points outside the ellipse ``4 * (hdiv'^2 / hrange^2 + vdiv'^2 /
  vrange^2) <= 1.1`` are dropped, where ``hdiv'^2 = hdiv^2 - hstep^2 / 4`` for an even
  number of steps (nanoBragg's centring correction); a zero range switches the cut off.
- dispersion: ``lambda = lambda0 * (1 + dstep * k - dispersion / 2)`` for ``k < dsteps``,
  one source per wavelength at every kept direction.

With the steps implied by the ranges (``step = range / (steps - 1)``) every source is a
smooth function of the ranges and of the dispersion, so they are differentiable; the
round cut does not depend on the ranges then.  Angles in radians inside, mrad at the
interface; dispersion as a fraction inside, percent at the interface.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch

from . import _validate as v
from ._text_table import read_rows
from .rotation import rotate_vectors

SOURCE_DISTANCE_M = 10.0  # nanoBragg's source_distance: only a direction survives


@dataclasses.dataclass
class Sources:
    """An explicit list of S incident-beam sources (nanoBragg's ``-sourcefile``).

    directions: (S, 3) propagation direction of each incident beam in the lab frame
        (normalised here; the sample sits at the origin).
    weights: (S,) or None (all 1).  A pixel is (1/S) * sum_s weight_s * I_s, so weight 1
        everywhere is nanoBragg's plain average over sources.
    wavelengths_A: (S,) or None (all equal to ``Beam.wavelength_A``).
    Any of them may be a tensor; gradients flow through it.
    """

    directions: object
    weights: object = None
    wavelengths_A: object = None

    def __post_init__(self):
        directions = torch.as_tensor(self.directions, dtype=torch.float64).detach()
        if directions.ndim != 2 or directions.shape[-1] != 3 or directions.shape[0] < 1:
            raise ValueError(f"Sources.directions must have shape (S, 3) with S >= 1, got {tuple(directions.shape)}")
        if not torch.isfinite(directions).all():
            raise ValueError("Sources.directions must be finite")
        if (torch.linalg.vector_norm(directions, dim=-1) == 0).any():
            raise ValueError("Sources.directions has a zero vector")
        count = directions.shape[0]
        for name in ("weights", "wavelengths_A"):
            value = getattr(self, name)
            if value is None:
                continue
            values = torch.as_tensor(value, dtype=torch.float64).detach().reshape(-1)
            if values.numel() != count:
                raise ValueError(f"Sources.{name} must have {count} entries (one per direction), got {values.numel()}")
            if not torch.isfinite(values).all():
                raise ValueError(f"Sources.{name} must be finite")
            if name == "weights" and (values < 0).any():
                raise ValueError("Sources.weights must be >= 0")
            if name == "wavelengths_A" and (values <= 0).any():
                raise ValueError("Sources.wavelengths_A must be > 0")

    def __len__(self) -> int:
        return int(torch.as_tensor(self.directions).shape[0])

    def tensors(self, wavelength_A, dtype, device) -> tuple:
        """(incident (S, 3) unit, wavelengths (S,) in A, weights (S,)) on dtype/device."""
        directions = _as(self.directions, dtype, device)
        incident = directions / torch.linalg.vector_norm(directions, dim=-1, keepdim=True)
        count = incident.shape[0]
        if self.wavelengths_A is None:
            wavelengths = v.to_tensor(wavelength_A, dtype, device).expand(count)
        else:
            wavelengths = _as(self.wavelengths_A, dtype, device).reshape(count)
        if self.weights is None:
            weights = torch.ones(count, dtype=dtype, device=device)
        else:
            weights = _as(self.weights, dtype, device).reshape(count)
        return incident, wavelengths, weights


def _as(value, dtype, device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.to(dtype=dtype, device=device)
    return torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=dtype, device=device)


def read_source_file(path, *, beam_axis: Sequence = (1.0, 0.0, 0.0), wavelength_A: float = 1.0) -> Sources:
    """nanoBragg's ``-sourcefile``: one source a line, ``X Y Z weight wavelength``.

    X, Y, Z: the source's position in metres relative to the sample (the beam travels
    from there to the origin); weight; wavelength in metres.  Trailing columns may be
    left out: the position defaults to 10 m upstream along ``beam_axis``, the weight to 1,
    the wavelength to ``wavelength_A``.  A garbled line or a source at the origin raises
    ValueError naming the file and line.
    """
    rows = read_rows(path, "source file", 5, required=1)
    beam = np.asarray(beam_axis, dtype=np.float64)
    beam = beam / np.linalg.norm(beam)
    directions, weights, wavelengths = [], [], []
    for number, (x, y, z, weight, wavelength_m) in rows:
        position = np.array([x, y, z])
        missing = np.isnan(position)
        position[missing] = -SOURCE_DISTANCE_M * beam[missing]
        if not np.any(position):
            raise ValueError(f"source file {path}, line {number}: the source sits at the sample (X = Y = Z = 0)")
        if not math.isnan(weight) and weight < 0:
            raise ValueError(f"source file {path}, line {number}: weight must be >= 0, got {weight!r}")
        if not math.isnan(wavelength_m) and wavelength_m <= 0:
            raise ValueError(f"source file {path}, line {number}: wavelength must be > 0 m, got {wavelength_m!r}")
        directions.append(-position / np.linalg.norm(position))
        weights.append(1.0 if math.isnan(weight) else weight)
        wavelengths.append(wavelength_A if math.isnan(wavelength_m) else wavelength_m * 1e10)
    return Sources(np.array(directions), np.array(weights), np.array(wavelengths))


# ----------------------------------------------------------------------- the grid
def resolve_steps(range_value: float, steps: int, step: float | None, keep: bool = False) -> tuple[float, int, float]:
    """(range, steps, step) of one grid axis after nanoBragg's defaults and sanity rule.

    ``step`` None means range / (steps - 1) (the range itself for one step).  A zero or
    negative range or step collapses the axis to one point at zero, unless ``keep``
    (a range being refined keeps its grid even at zero).
    """
    if step is None:
        step = range_value / (steps - 1) if steps > 1 else range_value
    if not keep and (range_value <= 0 or step <= 0 or steps <= 0):
        return 0.0, 1, 0.0
    return range_value, steps, step


def kept_grid_points(h: tuple, v_: tuple, round_div: bool) -> list[tuple[int, int]]:
    """(i, j) grid indices nanoBragg keeps; h and v_ are (range, steps, step) in radians."""
    (h_range, h_steps, h_step), (v_range, v_steps, v_step) = h, v_
    kept = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(h_steps):
            for j in range(v_steps):
                hdiv = np.float64(h_step * i - h_range / 2.0)
                vdiv = np.float64(v_step * j - v_range / 2.0)
                test = (hdiv * hdiv - h_step * h_step / 4.0 * (1 - h_steps % 2)) / np.float64(h_range) / h_range
                test += (vdiv * vdiv - v_step * v_step / 4.0 * (1 - v_steps % 2)) / np.float64(v_range) / v_range
                # NaN (a zero range) compares false, so nothing is cut: nanoBragg's behaviour
                if round_div and test * 4.0 > 1.1:
                    continue
                kept.append((i, j))
    if not kept:
        raise ValueError(
            "the round divergence cut leaves no source (each axis's single point sits at -range/2); "
            "use round_divergence=False (-square_div) or more steps"
        )
    return kept


def grid_sources(
    beam_axis: torch.Tensor,
    polar_axis: torch.Tensor,
    wavelength_A: torch.Tensor,
    h: tuple,
    v_: tuple,
    round_div: bool,
    dispersion: tuple,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The grid's incident directions (S, 3) and wavelengths (S,), differentiable.

    beam_axis, polar_axis: (3,) unit; h, v_: (range_rad, steps, step_rad) where range
    and step may be tensors; dispersion: (fraction, steps, step).  Source order is
    nanoBragg's: h outermost, then v, then wavelength.
    """
    dtype, device = beam_axis.dtype, beam_axis.device
    numbers = [tuple(v.as_number(x) if isinstance(x, torch.Tensor) else x for x in axis) for axis in (h, v_)]
    kept = kept_grid_points(numbers[0], numbers[1], round_div)
    i = torch.tensor([p[0] for p in kept], dtype=dtype, device=device)
    j = torch.tensor([p[1] for p in kept], dtype=dtype, device=device)
    h_range, _, h_step = (v.to_tensor(x, dtype, device) if k != 1 else x for k, x in enumerate(h))
    v_range, _, v_step = (v.to_tensor(x, dtype, device) if k != 1 else x for k, x in enumerate(v_))
    hdiv = h_step * i - h_range / 2.0
    vdiv = v_step * j - v_range / 2.0
    vert = torch.linalg.cross(beam_axis, polar_axis)
    vert = vert / torch.linalg.vector_norm(vert)
    toward_source = -beam_axis.expand(len(kept), 3)
    toward_source = rotate_vectors(rotate_vectors(toward_source, polar_axis, vdiv), vert, hdiv)
    incident = -toward_source / torch.linalg.vector_norm(toward_source, dim=-1, keepdim=True)
    width, d_steps, d_step = dispersion
    width = v.to_tensor(width, dtype, device)
    d_step = v.to_tensor(d_step, dtype, device)
    k = torch.arange(d_steps, dtype=dtype, device=device)
    wavelengths = wavelength_A * (1.0 + d_step * k - width / 2.0)  # (D,)
    incident = incident[:, None, :].expand(len(kept), d_steps, 3).reshape(-1, 3)
    wavelengths = wavelengths[None, :].expand(len(kept), d_steps).reshape(-1)
    return incident, wavelengths
