"""Unit cells with their lattice constraints, and the rotations that make orientations equivalent.

gemmi (the field's space-group library) gives the space group, its crystal system and its
rotations; here they become what indexing and refinement need:

- :class:`CellParameters`: the free cell parameters of a crystal system (tetragonal: a and c,
  all angles 90) and back, so a refinement can never break the lattice's symmetry;
- :func:`orthogonalization`: real axes as columns of a (3, 3) matrix (a along x, c* along z,
  the PDB convention gemmi uses);
- :func:`equivalent_rotations`: the integer matrices that map an indexing onto an equivalent
  one (the proper rotations of the point group), so symmetry-equivalent solutions count as one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Union

import numpy as np

__all__ = [
    "CellParameters",
    "Values",
    "cell_from_real_space",
    "check_cell",
    "equivalent_rotations",
    "orthogonalization",
    "space_group",
]

Values = Union[Sequence[float], np.ndarray]


def space_group(symbol):
    """A gemmi.SpaceGroup from a name ("P 41 21 2", "P41212"), a number or a Hall symbol."""
    import gemmi

    if isinstance(symbol, gemmi.SpaceGroup):
        return symbol
    text = str(symbol).strip()
    found = None
    try:
        found = gemmi.find_spacegroup_by_number(int(text)) if text.isdigit() else gemmi.find_spacegroup_by_name(text)
    except (ValueError, RuntimeError):
        found = None
    if found is None:
        try:
            found = gemmi.find_spacegroup_by_ops(gemmi.symops_from_hall(text))
        except (ValueError, RuntimeError):
            found = None
    if found is None:
        raise ValueError(f"unknown space group {symbol!r} (give a name like 'P 41 21 2', a number or a Hall symbol)")
    return found


def _system(group) -> str:
    system = group.crystal_system_str()
    if system == "trigonal" and group.ext == "R":
        return "rhombohedral"
    return "hexagonal" if system == "trigonal" else system


class CellParameters:
    """The free parameters of a cell under its crystal system's constraints.

    names: the free parameters ("a", "c", "beta", ...); lengths in Angstrom, angles in degrees.
    """

    _FREE = {
        "triclinic": ("a", "b", "c", "alpha", "beta", "gamma"),
        "monoclinic": ("a", "b", "c", "beta"),
        "orthorhombic": ("a", "b", "c"),
        "tetragonal": ("a", "c"),
        "hexagonal": ("a", "c"),
        "rhombohedral": ("a", "alpha"),
        "cubic": ("a",),
    }

    def __init__(self, group):
        self.group = space_group(group)
        self.system = _system(self.group)
        self.names = self._FREE[self.system]

    def free(self, cell: Values) -> np.ndarray:
        """The free parameters of ``cell`` (6,), as an array of len(names)."""
        values = dict(zip(("a", "b", "c", "alpha", "beta", "gamma"), (float(x) for x in cell), strict=True))
        return np.array([values[name] for name in self.names])

    def cell(self, free: Values) -> tuple:
        """The full cell (a, b, c, alpha, beta, gamma) from the free parameters."""
        v = dict(zip(self.names, (float(x) for x in free), strict=True))
        if self.system == "triclinic":
            return (v["a"], v["b"], v["c"], v["alpha"], v["beta"], v["gamma"])
        if self.system == "monoclinic":
            return (v["a"], v["b"], v["c"], 90.0, v["beta"], 90.0)
        if self.system == "orthorhombic":
            return (v["a"], v["b"], v["c"], 90.0, 90.0, 90.0)
        if self.system == "tetragonal":
            return (v["a"], v["a"], v["c"], 90.0, 90.0, 90.0)
        if self.system == "hexagonal":
            return (v["a"], v["a"], v["c"], 90.0, 90.0, 120.0)
        if self.system == "rhombohedral":
            return (v["a"], v["a"], v["a"], v["alpha"], v["alpha"], v["alpha"])
        return (v["a"], v["a"], v["a"], 90.0, 90.0, 90.0)

    def sources(self) -> tuple:
        """For each of (a, b, c, alpha, beta, gamma), the index of the free parameter it
        equals, or None when the system fixes it (a tetragonal cell: (0, 0, 1, None, None, None))."""
        probe = self.cell(1000.0 * (np.arange(len(self.names)) + 1))
        out = []
        for value in probe:
            index = int(round(value / 1000.0)) - 1
            out.append(index if 0 <= index < len(self.names) and abs(value - 1000.0 * (index + 1)) < 1e-6 else None)
        return tuple(out)

    def full_sigma(self, free_sigma: Values) -> tuple:
        """Standard errors of the 6 cell parameters from those of the free ones (0 where fixed)."""
        return tuple(0.0 if i is None else float(free_sigma[i]) for i in self.sources())

    def symmetrize(self, cell: Values) -> tuple:
        """The nearest cell that obeys the constraints (equal edges averaged, fixed angles set)."""
        a, b, c, al, be, ga = (float(x) for x in cell)
        if self.system in ("tetragonal", "hexagonal"):
            return self.cell(((a + b) / 2, c))
        if self.system == "cubic":
            return self.cell(((a + b + c) / 3,))
        if self.system == "rhombohedral":
            return self.cell(((a + b + c) / 3, (al + be + ga) / 3))
        return self.cell(self.free((a, b, c, al, be, ga)))


def check_cell(cell: Sequence) -> tuple:
    """A 6-tuple of finite numbers with positive edges and a possible set of angles, else ValueError."""
    values = tuple(float(x) for x in cell)
    if len(values) != 6 or not all(math.isfinite(x) for x in values):
        raise ValueError(f"cell must be 6 finite numbers (a b c alpha beta gamma), got {tuple(cell)!r}")
    if min(values[:3]) <= 0:
        raise ValueError(f"cell edges must be > 0 A, got {values[:3]!r}")
    if not all(0 < x < 180 for x in values[3:]):
        raise ValueError(f"cell angles must lie in (0, 180) deg, got {values[3:]!r}")
    ca, cb, cg = (math.cos(math.radians(x)) for x in values[3:])
    if 1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg <= 1e-12:
        raise ValueError(f"impossible cell angles {values[3:]!r}")
    return values


def orthogonalization(cell: Sequence) -> np.ndarray:
    """Real axes as columns (3, 3), Angstrom: a along x, b in the x-y plane, c* along z."""
    a, b, c, al, be, ga = (float(x) for x in cell)
    al, be, ga = (math.radians(x) for x in (al, be, ga))
    ca, cb, cg, sg = math.cos(al), math.cos(be), math.cos(ga), math.sin(ga)
    volume_factor = math.sqrt(max(1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg, 0.0))
    return np.array(
        [
            [a, b * cg, c * cb],
            [0.0, b * sg, c * (ca - cb * cg) / sg],
            [0.0, 0.0, c * volume_factor / sg],
        ]
    )


def cell_from_real_space(real_space: np.ndarray) -> tuple:
    """(a, b, c, alpha, beta, gamma) of real axes given as rows a, b, c (3, 3)."""
    rows = np.asarray(real_space, dtype=float)
    lengths = np.linalg.norm(rows, axis=1)

    def angle(i, j):
        return math.degrees(math.acos(float(np.clip(rows[i] @ rows[j] / (lengths[i] * lengths[j]), -1, 1))))

    return (*(float(x) for x in lengths), angle(1, 2), angle(0, 2), angle(0, 1))


def equivalent_rotations(group) -> list[np.ndarray]:
    """Integer (3, 3) matrices M of the point group's proper rotations (the Laue group's
    rotations), acting on real axes as rows: ``M @ real_space`` indexes the same lattice in an
    equivalent setting.  The identity comes first."""
    group = space_group(group)
    seen: list[np.ndarray] = []
    for op in group.operations():
        rotation = np.rint(np.array(op.rot, dtype=float) / op.DEN).astype(int)
        if round(np.linalg.det(rotation)) != 1:
            continue
        # op.rot maps fractional coordinates; the basis transforms with its transpose
        basis = rotation.T
        if not any(np.array_equal(basis, s) for s in seen):
            seen.append(basis)
    seen.sort(key=lambda m: not np.array_equal(m, np.eye(3, dtype=int)))
    return seen
