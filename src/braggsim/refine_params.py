"""Refinable parameters: names, physical units, internal coordinates, and the model they set.

Every parameter reads and writes in physical units (degrees, Angstrom, mm).  The
optimizer sees internal coordinates chosen so that one unit is a comparable, sensible
step for every parameter: a degree for angles, a pixel for the beam centre, a factor
e for positive quantities (log), and a logistic map inside user bounds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import torch

from . import _validate as v
from .beam import Beam
from .crystal import Crystal
from .detector import Detector

# name -> (kind, typical step in physical units); kind "linear" or "log" (positive only)
PARAMETERS: dict[str, tuple[str, float]] = {
    "mosaic_spread_deg": ("log", 1.0),
    "misset_x_deg": ("linear", 1.0),
    "misset_y_deg": ("linear", 1.0),
    "misset_z_deg": ("linear", 1.0),
    "cell_a_A": ("linear", 0.5),
    "cell_b_A": ("linear", 0.5),
    "cell_c_A": ("linear", 0.5),
    "cell_alpha_deg": ("linear", 0.5),
    "cell_beta_deg": ("linear", 0.5),
    "cell_gamma_deg": ("linear", 0.5),
    "N_a": ("log", 1.0),
    "N_b": ("log", 1.0),
    "N_c": ("log", 1.0),
    "distance_mm": ("linear", 1.0),
    "beam_x_mm": ("linear", 0.1),
    "beam_y_mm": ("linear", 0.1),
    "scale": ("log", 1.0),
}
PARAMETER_GROUPS: dict[str, list] = {
    "mosaic": ["mosaic_spread_deg"],
    "misset": ["misset_x_deg", "misset_y_deg", "misset_z_deg"],
    "cell": ["cell_a_A", "cell_b_A", "cell_c_A", "cell_alpha_deg", "cell_beta_deg", "cell_gamma_deg"],
    "N": ["N_a", "N_b", "N_c"],
    "distance": ["distance_mm"],
    "beam_center": ["beam_x_mm", "beam_y_mm"],
    "scale": ["scale"],
}
# parameters that broaden or scale spots; refined after the geometry has settled
BROADENING = {"mosaic_spread_deg", "N_a", "N_b", "N_c"}
MIN_MOSAIC_DEG = 1e-3  # a log-parameterised spread cannot start at exactly zero


def expand_names(refine: Iterable[str]) -> list:
    """Group and parameter names -> ordered unique parameter names; ValueError on unknown ones."""
    if isinstance(refine, str):
        refine = [part.strip() for part in refine.split(",") if part.strip()]
    names: list = []
    for item in refine:
        members = PARAMETER_GROUPS.get(item, [item] if item in PARAMETERS else None)
        if members is None:
            known = sorted(set(PARAMETER_GROUPS) | set(PARAMETERS))
            raise ValueError(f"unknown refinement parameter {item!r}; known: {', '.join(known)}")
        names.extend(m for m in members if m not in names)
    if not names:
        raise ValueError("choose at least one parameter to refine")
    return names


def read_parameter(name: str, crystal: Crystal, detector: Detector, beam: Beam, scale: float = 1.0) -> float:
    """The current physical value of ``name`` in the model."""
    if name == "mosaic_spread_deg":
        return v.as_number(crystal.mosaic_spread_deg)
    if name.startswith("misset_"):
        return v.as_number(crystal.misset_deg["xyz".index(name[7])])
    if name.startswith("cell_"):
        return v.as_number(crystal.cell[_CELL_INDEX[name]])
    if name.startswith("N_"):
        return v.as_number(crystal.N_cells["abc".index(name[2])])
    if name == "distance_mm":
        return v.as_number(detector.distance_mm)
    if name in ("beam_x_mm", "beam_y_mm"):
        center = detector.beam_center_or_default_mm()
        return v.as_number(center[0 if name == "beam_x_mm" else 1])
    if name == "scale":
        return float(scale)
    raise ValueError(f"unknown parameter {name!r}")


_CELL_INDEX = {n: i for i, n in enumerate(PARAMETER_GROUPS["cell"])}


def apply_parameters(values: dict[str, torch.Tensor], crystal: Crystal, detector: Detector, beam: Beam):
    """A new (crystal, detector, beam, scale) with ``values`` (physical, tensors or floats) set."""
    c_changes: dict = {}
    d_changes: dict = {}
    if "mosaic_spread_deg" in values:
        c_changes["mosaic_spread_deg"] = values["mosaic_spread_deg"]
    if any(n.startswith("misset_") for n in values):
        c_changes["misset_deg"] = tuple(
            values.get(f"misset_{a}_deg", crystal.misset_deg[i]) for i, a in enumerate("xyz")
        )
    if any(n.startswith("cell_") for n in values):
        c_changes["cell"] = tuple(values.get(n, crystal.cell[i]) for n, i in _CELL_INDEX.items())
    if any(n.startswith("N_") for n in values):
        c_changes["N_cells"] = tuple(values.get(f"N_{a}", crystal.N_cells[i]) for i, a in enumerate("abc"))
    if "distance_mm" in values:
        d_changes["distance_mm"] = values["distance_mm"]
    if "beam_x_mm" in values or "beam_y_mm" in values:
        center = detector.beam_center_or_default_mm()
        d_changes["beam_center_mm"] = (values.get("beam_x_mm", center[0]), values.get("beam_y_mm", center[1]))
    new_crystal = crystal.replace(**c_changes) if c_changes else crystal
    new_detector = detector.replace(**d_changes) if d_changes else detector
    return new_crystal, new_detector, beam, values.get("scale", 1.0)


@dataclasses.dataclass
class ParameterTransform:
    """Physical <-> internal coordinate map of one parameter.

    Without bounds: linear ``(x - x0) / step`` or ``log(x / x0)``; with bounds
    (low, high): ``x = low + (high - low) * sigmoid(u)``, so the value never leaves them.
    """

    name: str
    start: float
    bounds: tuple[float, float] | None = None

    def __post_init__(self):
        kind, step = PARAMETERS[self.name]
        self.kind, self.step = kind, step
        if self.bounds is not None:
            low, high = (float(b) for b in self.bounds)
            if not low < high:
                raise ValueError(f"bounds for {self.name} must satisfy low < high, got {self.bounds!r}")
            if not low < self.start < high:
                raise ValueError(f"start value {self.start!r} of {self.name} lies outside its bounds {self.bounds!r}")
            self.bounds = (low, high)
        elif kind == "log" and self.start <= 0:
            if self.name == "mosaic_spread_deg":
                self.start = MIN_MOSAIC_DEG
            else:
                raise ValueError(f"{self.name} must start > 0, got {self.start!r}")

    def to_internal(self, physical: float) -> float:
        if self.bounds is not None:
            low, high = self.bounds
            fraction = min(max((physical - low) / (high - low), 1e-12), 1 - 1e-12)
            return math.log(fraction / (1 - fraction))
        if self.kind == "log":
            return math.log(physical / self.start)
        return (physical - self.start) / self.step

    def to_physical(self, internal: torch.Tensor) -> torch.Tensor:
        if self.bounds is not None:
            low, high = self.bounds
            return low + (high - low) * torch.sigmoid(internal)
        if self.kind == "log":
            return self.start * torch.exp(internal)
        return self.start + self.step * internal
