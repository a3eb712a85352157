"""Refinable parameters: one class per part of the model, and the one registry of them.

A part (:class:`ModelPart`) declares its parameters (:class:`Parameter`: name, unit,
internal transform, typical step, physical range, the GUI's range, step and decimals, a
one-line description), reads their values from a :class:`Model` and says which fields of
the model new values change.  :data:`PART_TYPES` lists the parts; everything else is
generated from it: the Refiner's parameter names and ``-refine`` groups, the help of
``braggsim refine``, the napari widgets' fields.  Adding a refinable parameter means
adding one part class here (and to :data:`PART_TYPES`) with its tests.

Every parameter reads and writes in physical units (degrees, Angstrom, mm).  The
optimizer sees internal coordinates chosen so that one unit is a comparable, sensible
step for every parameter (:class:`ParameterTransform`): the typical step for linear
parameters, a factor e for positive ones (log), a logistic map inside user bounds.

A part may also be plugged in from outside (say, one intensity per reflection for a
real still): subclass :class:`ModelPart`, give the instance its ``parameters`` and
``groups``, return ``{"extra": {name: value}}`` from :meth:`ModelPart.changes`, and read
``model.extra`` in the target that renders the prediction.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import torch

from .. import _validate as v
from ..beam import Beam
from ..crystal import Crystal
from ..detector import Detector

__all__ = [
    "PARAMETERS",
    "PARAMETER_GROUPS",
    "PART_TYPES",
    "Background",
    "DetectorPosition",
    "DomainSize",
    "Model",
    "ModelPart",
    "Mosaic",
    "Orientation",
    "Parameter",
    "ParameterSet",
    "ParameterTransform",
    "Range",
    "Scale",
    "ScalarPart",
    "UnitCell",
    "Wavelength",
    "default_parts",
]

INF = math.inf


# ------------------------------------------------------------------ declarations
@dataclasses.dataclass(frozen=True)
class Range:
    """An interval of physical values; ``low_closed`` / ``high_closed`` include the ends."""

    low: float = -INF
    high: float = INF
    low_closed: bool = False
    high_closed: bool = False

    def __contains__(self, value: object) -> bool:
        x = float(value)  # type: ignore[arg-type]
        if not math.isfinite(x):
            return False
        above = x >= self.low if self.low_closed else x > self.low
        below = x <= self.high if self.high_closed else x < self.high
        return above and below

    def __str__(self) -> str:
        return f"{'[' if self.low_closed else '('}{self.low:g}, {self.high:g}{']' if self.high_closed else ')'}"


@dataclasses.dataclass(frozen=True)
class Parameter:
    """What the optimizer, the CLI and the GUI need to know about one parameter.

    kind: internal transform, "linear" ((x - x0) / step) or "log" (log(x / x0), positive
        quantities only).
    step: typical change in physical units; one internal unit of a linear parameter,
        and the scale of the finite-difference step for the standard errors.
    physical: the values that make physical sense; a refined value outside fails the
        ``out-of-range`` gate.
    gui_range, gui_step, decimals: a spin box's limits, step and decimals.
    start_floor: a log parameter that starts at or below 0 starts here instead (None:
        such a start is an error).
    """

    name: str
    label: str
    unit: str
    description: str
    kind: str
    step: float
    physical: Range
    gui_range: tuple[float, float]
    gui_step: float
    decimals: int
    start_floor: float | None = None

    def __post_init__(self):
        if self.kind not in ("linear", "log"):
            raise ValueError(f"{self.name}: kind must be 'linear' or 'log', got {self.kind!r}")
        if not (math.isfinite(self.step) and self.step > 0):
            raise ValueError(f"{self.name}: step must be > 0, got {self.step!r}")

    @property
    def label_with_unit(self) -> str:
        """e.g. ``mosaic spread (deg)``; unitless parameters have no parentheses."""
        return f"{self.label} ({self.unit})" if self.unit else self.label


@dataclasses.dataclass(frozen=True)
class Model:
    """Everything a prediction depends on: the physics and the nuisance terms.

    scale: multiplies the simulated image; background: added to every pixel (None: no
    background term); extra: values of plugged-in parts, for the target that uses them.
    Scalars may be floats or 0-d tensors.
    """

    crystal: Crystal
    detector: Detector
    beam: Beam
    scale: Any = 1.0
    background: Any = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)


# ------------------------------------------------------------------------ parts
class ModelPart:
    """One part of the model with its refinable parameters.

    Subclasses set ``parameters`` and ``groups`` (``-refine`` group -> member names) and
    implement :meth:`read` and :meth:`changes`.  ``broadening`` parts (spot widths) are
    refined after the geometry in the staged strategy.
    """

    parameters: tuple[Parameter, ...] = ()
    groups: Mapping[str, tuple[str, ...]] = {}
    broadening: ClassVar[bool] = False

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    def read(self, name: str, model: Model) -> float:
        """The current physical value of ``name`` in ``model``."""
        raise NotImplementedError

    def changes(self, values: Mapping[str, Any], model: Model) -> dict[str, dict[str, Any]]:
        """``{"crystal" | "detector" | "beam" | "model" | "extra": {field: value}}`` that set
        ``values`` (this part's names only, physical, floats or tensors) in ``model``."""
        raise NotImplementedError

    def check(self, names: Sequence[str], model: Model) -> None:
        """Refuse (ValueError) refining ``names`` of this part from ``model``."""


# The parts below declare every Parameter field by field: the blocks look alike on
# purpose (duplicates lists them as pairs), because each is the one place that says what
# its parameter is; a helper that filled in "typical" values would hide them.


class ScalarPart(ModelPart):
    """A part with one parameter that is one field of the model: ``component`` ("crystal",
    "detector", "beam" or "model") and ``field``; ``unset`` is read where the field is None."""

    component: ClassVar[str] = "model"
    field: ClassVar[str] = ""
    unset: ClassVar[float | None] = None

    def read(self, name, model):
        holder = model if self.component == "model" else getattr(model, self.component)
        value = getattr(holder, self.field)
        if value is None and self.unset is not None:
            return self.unset
        return v.as_number(value)

    def changes(self, values, model):
        return {self.component: {self.field: values[self.parameters[0].name]}}


class Mosaic(ScalarPart):
    parameters = (
        Parameter(
            "mosaic_spread_deg",
            "mosaic spread",
            "deg",
            "spread of the mosaic domains' orientations (nanoBragg -mosaic)",
            kind="log",
            step=1.0,
            physical=Range(0.0, 90.0),
            gui_range=(0.0, 90.0),
            gui_step=0.05,
            decimals=4,
            # a log-parameterised spread cannot start at exactly zero
            start_floor=1e-3,
        ),
    )
    groups = {"mosaic": ("mosaic_spread_deg",)}
    broadening = True
    component, field = "crystal", "mosaic_spread_deg"


class Orientation(ModelPart):
    parameters = tuple(
        Parameter(
            f"misset_{axis}_deg",
            f"misset {axis}",
            "deg",
            f"crystal rotation about lab {axis} (nanoBragg -misset; x, then y, then z)",
            kind="linear",
            step=1.0,
            physical=Range(),
            gui_range=(-360.0, 360.0),
            gui_step=0.5,
            decimals=4,
        )
        for axis in "xyz"
    )
    groups = {"misset": ("misset_x_deg", "misset_y_deg", "misset_z_deg")}

    def read(self, name, model):
        return v.as_number(model.crystal.misset_deg["xyz".index(name[len("misset_")])])

    def changes(self, values, model):
        misset = model.crystal.misset_deg
        return {"crystal": {"misset_deg": tuple(values.get(f"misset_{a}_deg", misset[i]) for i, a in enumerate("xyz"))}}


_CELL_NAMES = ("cell_a_A", "cell_b_A", "cell_c_A", "cell_alpha_deg", "cell_beta_deg", "cell_gamma_deg")
_EDGE = Range(0.0, INF)
_ANGLE = Range(0.0, 180.0)


def _cell_parameter(name: str) -> Parameter:
    symbol = name.split("_")[1]
    edge = name.endswith("_A")
    greek = {"a": "a", "b": "b", "c": "c", "alpha": "α", "beta": "β", "gamma": "γ"}[symbol]
    return Parameter(
        name,
        greek,
        "Å" if edge else "deg",
        f"unit-cell {'edge' if edge else 'angle'} {symbol} (nanoBragg -cell)",
        kind="linear",
        step=0.5,
        physical=_EDGE if edge else _ANGLE,
        gui_range=(1.0, 10000.0) if edge else (1.0, 179.0),
        gui_step=0.5,
        decimals=3,
    )


# lattice system -> (free parameters, {tied parameter: the free one it equals}); every
# parameter in neither keeps its start value (90 or 120 deg, checked against the group)
_LATTICE_RULES: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "triclinic": (_CELL_NAMES, {}),
    "monoclinic-a": (("cell_a_A", "cell_b_A", "cell_c_A", "cell_alpha_deg"), {}),
    "monoclinic-b": (("cell_a_A", "cell_b_A", "cell_c_A", "cell_beta_deg"), {}),
    "monoclinic-c": (("cell_a_A", "cell_b_A", "cell_c_A", "cell_gamma_deg"), {}),
    "orthorhombic": (("cell_a_A", "cell_b_A", "cell_c_A"), {}),
    "tetragonal": (("cell_a_A", "cell_c_A"), {"cell_b_A": "cell_a_A"}),
    "hexagonal": (("cell_a_A", "cell_c_A"), {"cell_b_A": "cell_a_A"}),
    "rhombohedral": (
        ("cell_a_A", "cell_alpha_deg"),
        {
            "cell_b_A": "cell_a_A",
            "cell_c_A": "cell_a_A",
            "cell_beta_deg": "cell_alpha_deg",
            "cell_gamma_deg": "cell_alpha_deg",
        },
    ),
    "cubic": (("cell_a_A",), {"cell_b_A": "cell_a_A", "cell_c_A": "cell_a_A"}),
}


def lattice_system(space_group: str) -> tuple[str, str]:
    """(gemmi's extended Hermann-Mauguin symbol, the key of the cell constraints) for a
    space group name or number; ValueError for an unknown one."""
    import gemmi

    group = gemmi.find_spacegroup_by_name(str(space_group).strip())
    if group is None:
        raise ValueError(f"unknown space group {space_group!r}")
    system = group.crystal_system_str()
    if system == "monoclinic":
        system = f"monoclinic-{group.monoclinic_unique_axis()}"
    elif system == "trigonal":
        system = "rhombohedral" if group.ext == "R" else "hexagonal"
    return group.xhm(), system


class UnitCell(ModelPart):
    """The six cell parameters, constrained by the lattice of ``space_group`` (None: P1).

    With a space group only the free parameters are refined (tetragonal: a and c) and the
    tied ones follow them (b = a); the start cell must obey the group's constraints.
    """

    parameters = tuple(_cell_parameter(name) for name in _CELL_NAMES)
    groups = {"cell": _CELL_NAMES}

    def __init__(self, space_group: str | None = None):
        self.space_group = None
        self.system = "triclinic"
        if space_group is not None:
            self.space_group, self.system = lattice_system(space_group)
        self.free, self.ties = _LATTICE_RULES[self.system]
        self.groups = {"cell": self.free}

    def read(self, name, model):
        return v.as_number(model.crystal.cell[_CELL_NAMES.index(name)])

    def changes(self, values, model):
        cell = model.crystal.cell
        return {"crystal": {"cell": tuple(self._value(n, values, cell) for n in _CELL_NAMES)}}

    def _value(self, name: str, values: Mapping[str, Any], cell: Sequence) -> Any:
        source = self.ties.get(name, name)
        return values.get(source, cell[_CELL_NAMES.index(source)])

    def check(self, names, model):
        where = f"the {self.system.split('-')[0]} lattice of {self.space_group}"
        for name in names:
            if name in self.ties:
                raise ValueError(f"{name} is tied to {self.ties[name]} by {where}; refine {self.ties[name]}")
            if name not in self.free:
                raise ValueError(f"{name} is fixed by {where}")
        if self.space_group is None:
            return
        import gemmi

        cell = tuple(self.read(n, model) for n in _CELL_NAMES)
        group = gemmi.SpaceGroup(self.space_group)
        if not gemmi.UnitCell(*cell).is_compatible_with_spacegroup(group, 1e-6):
            raise ValueError(f"start cell {cell} does not obey {where}")


class DomainSize(ModelPart):
    parameters = tuple(
        Parameter(
            f"N_{axis}",
            f"N_{axis}",
            "cells",
            f"unit cells along {axis} in one mosaic domain (nanoBragg -N{axis}); continuous",
            kind="log",
            step=1.0,
            physical=Range(1.0, INF, low_closed=True),
            gui_range=(1.0, 1000.0),
            gui_step=1.0,
            decimals=3,
        )
        for axis in "abc"
    )
    groups = {"N": ("N_a", "N_b", "N_c")}
    broadening = True

    def read(self, name, model):
        return v.as_number(model.crystal.N_cells["abc".index(name[2])])

    def changes(self, values, model):
        cells = model.crystal.N_cells
        return {"crystal": {"N_cells": tuple(values.get(f"N_{a}", cells[i]) for i, a in enumerate("abc"))}}


class DetectorPosition(ModelPart):
    parameters = (
        Parameter(
            "distance_mm",
            "distance",
            "mm",
            "sample-to-detector distance (nanoBragg -distance)",
            kind="linear",
            step=1.0,
            physical=Range(0.0, INF),
            gui_range=(0.1, 10000.0),
            gui_step=1.0,
            decimals=4,
        ),
        Parameter(
            "beam_x_mm",
            "beam Xbeam",
            "mm",
            "beam centre Xbeam in the detector convention's meaning (nanoBragg -Xbeam)",
            kind="linear",
            step=0.1,
            physical=Range(),
            gui_range=(-1000.0, 1000.0),
            gui_step=0.05,
            decimals=4,
        ),
        Parameter(
            "beam_y_mm",
            "beam Ybeam",
            "mm",
            "beam centre Ybeam in the detector convention's meaning (nanoBragg -Ybeam)",
            kind="linear",
            step=0.1,
            physical=Range(),
            gui_range=(-1000.0, 1000.0),
            gui_step=0.05,
            decimals=4,
        ),
    )
    groups = {"distance": ("distance_mm",), "beam_center": ("beam_x_mm", "beam_y_mm")}

    def read(self, name, model):
        if name == "distance_mm":
            return v.as_number(model.detector.distance_mm)
        return v.as_number(model.detector.beam_center_or_default_mm()[0 if name == "beam_x_mm" else 1])

    def changes(self, values, model):
        changes = {}
        if "distance_mm" in values:
            changes["distance_mm"] = values["distance_mm"]
        if "beam_x_mm" in values or "beam_y_mm" in values:
            center = model.detector.beam_center_or_default_mm()
            changes["beam_center_mm"] = (values.get("beam_x_mm", center[0]), values.get("beam_y_mm", center[1]))
        return {"detector": changes}


# duplicates: Wavelength, Scale and Background share a shape on purpose: a part is a
# declaration (its parameter's name, unit, transform, step and ranges), one class a part
class Wavelength(ScalarPart):
    parameters = (
        Parameter(
            "wavelength_A",
            "wavelength",
            "Å",
            "X-ray wavelength (nanoBragg -lambda)",
            kind="linear",
            step=0.01,
            physical=Range(0.0, INF),
            gui_range=(0.01, 100.0),
            gui_step=0.001,
            decimals=5,
        ),
    )
    groups = {"wavelength": ("wavelength_A",)}
    component, field = "beam", "wavelength_A"


class Scale(ScalarPart):
    parameters = (
        Parameter(
            "scale",
            "scale",
            "",
            "factor on the simulated image (fluence, gain and exposure together)",
            kind="log",
            step=1.0,
            physical=Range(0.0, INF),
            gui_range=(1e-6, 1e6),
            gui_step=0.1,
            decimals=5,
        ),
    )
    groups = {"scale": ("scale",)}
    component, field = "model", "scale"


class Background(ScalarPart):
    parameters = (
        Parameter(
            "background",
            "background",
            "counts/px",
            "flat background added to every pixel, in the observed frame's units",
            kind="linear",
            step=1.0,
            physical=Range(0.0, INF, low_closed=True),
            gui_range=(0.0, 1e6),
            gui_step=1.0,
            decimals=3,
        ),
    )
    groups = {"background": ("background",)}
    component, field, unset = "model", "background", 0.0


# the registry: the order is the order of the CLI's and the GUI's listings
PART_TYPES: tuple[type[ModelPart], ...] = (
    Mosaic,
    Orientation,
    UnitCell,
    DomainSize,
    DetectorPosition,
    Wavelength,
    Scale,
    Background,
)
PARAMETERS: dict[str, Parameter] = {p.name: p for part in PART_TYPES for p in part.parameters}
PARAMETER_GROUPS: dict[str, tuple[str, ...]] = {g: m for part in PART_TYPES for g, m in part.groups.items()}


def default_parts(space_group: str | None = None) -> list[ModelPart]:
    """One instance of every registered part; the cell constrained by ``space_group``."""
    return [UnitCell(space_group) if part is UnitCell else part() for part in PART_TYPES]


# ------------------------------------------------------------------ the set in use
class ParameterSet:
    """The parts of one refinement: names, groups, reading and applying values."""

    def __init__(self, parts: Iterable[ModelPart]):
        self.parts = list(parts)
        self.parameters: dict[str, Parameter] = {}
        self.groups: dict[str, tuple[str, ...]] = {}
        self.part_of: dict[str, ModelPart] = {}
        for part in self.parts:
            for parameter in part.parameters:
                if parameter.name in self.parameters:
                    raise ValueError(f"two parts declare the parameter {parameter.name!r}")
                self.parameters[parameter.name] = parameter
                self.part_of[parameter.name] = part
            for group, members in part.groups.items():
                if group in self.groups:
                    raise ValueError(f"two parts declare the group {group!r}")
                self.groups[group] = tuple(members)

    def expand(self, refine: str | Iterable[str]) -> list[str]:
        """Group and parameter names -> ordered unique parameter names; ValueError on unknown ones."""
        items = [part.strip() for part in refine.split(",") if part.strip()] if isinstance(refine, str) else refine
        names: list[str] = []
        for item in items:
            members = self.groups.get(item, (item,) if item in self.parameters else None)
            if members is None:
                known = sorted(set(self.groups) | set(self.parameters))
                raise ValueError(f"unknown refinement parameter {item!r}; known: {', '.join(known)}")
            names.extend(m for m in members if m not in names)
        if not names:
            raise ValueError("choose at least one parameter to refine")
        return names

    def check(self, names: Sequence[str], model: Model) -> None:
        for part in self.parts:
            mine = [n for n in names if self.part_of[n] is part]
            if mine:
                part.check(mine, model)

    def broadening(self) -> set[str]:
        return {name for name, part in self.part_of.items() if part.broadening}

    def read(self, name: str, model: Model) -> float:
        return self.part_of[name].read(name, model)

    def apply(self, values: Mapping[str, Any], model: Model) -> Model:
        """A new model with ``values`` (physical, tensors or floats) set; each component is
        replaced once, whatever number of parts changes it."""
        merged: dict[str, dict[str, Any]] = {}
        for part in self.parts:
            mine = {n: x for n, x in values.items() if self.part_of.get(n) is part}
            if mine:
                for component, fields in part.changes(mine, model).items():
                    merged.setdefault(component, {}).update(fields)
        if not merged:
            return model
        crystal = model.crystal.replace(**merged["crystal"]) if "crystal" in merged else model.crystal
        detector = model.detector.replace(**merged["detector"]) if "detector" in merged else model.detector
        beam = model.beam.replace(**merged["beam"]) if "beam" in merged else model.beam
        fields = dict(merged.get("model", {}))
        if "extra" in merged:
            fields["extra"] = {**model.extra, **merged["extra"]}
        return dataclasses.replace(model, crystal=crystal, detector=detector, beam=beam, **fields)


@dataclasses.dataclass
class ParameterTransform:
    """Physical <-> internal coordinate map of one parameter.

    Without bounds: linear ``(x - x0) / step`` or ``log(x / x0)``; with bounds
    (low, high): ``x = low + (high - low) * sigmoid(u)``, so the value never leaves them.
    """

    parameter: Parameter
    start: float
    bounds: tuple[float, float] | None = None

    def __post_init__(self):
        name, kind = self.parameter.name, self.parameter.kind
        if self.bounds is not None:
            low, high = (float(b) for b in self.bounds)
            if not low < high:
                raise ValueError(f"bounds for {name} must satisfy low < high, got {self.bounds!r}")
            if not low < self.start < high:
                raise ValueError(f"start value {self.start!r} of {name} lies outside its bounds {self.bounds!r}")
            self.bounds = (low, high)
        elif kind == "log" and self.start <= 0:
            if self.parameter.start_floor is None:
                raise ValueError(f"{name} must start > 0, got {self.start!r}")
            self.start = self.parameter.start_floor

    @property
    def name(self) -> str:
        return self.parameter.name

    @property
    def kind(self) -> str:
        return self.parameter.kind

    @property
    def step(self) -> float:
        return self.parameter.step

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
