"""Amorphous scattering (water, air, ice, ...) from a ``.stol`` table, as nanoBragg's nonBragg.

A ``.stol`` table lists ``sin(theta)/lambda`` (1/A) and F, the structure factor of one
molecule of the material.  A sample of ``molecules`` such molecules scatters into a pixel

    I = r_e^2 * fluence * molecules / (S * oversample^2) * scale
        * sum over (sensor layers, subpixels, sources) of
          sign(F) F(stol)^2 * polar * omega * weight_s * capture

with solid angle, polarization (and capture fraction) evaluated for every sample, and
molecules = thickness * width * height * density * N_A / molecular_weight.  F(stol) is
nonBragg's 4-point Lagrange interpolation: the table is padded at both ends with two
points far away (+-1e98, +-1e99 1/A) that carry the end values, and the cubic through the
two table points either side of ``stol`` gives F.

The scale, thickness, width, height and density may be tensors: the image is linear in
each, so refinement can fit them (a background term).

nanoBragg.c's own ``-water`` is different: it adds F=2.57 (water's forward value) for a
cube of water of that size, already multiplied by r_e^2 * fluence, and then multiplies it
by r_e^2 * fluence / steps again with the spots, so 50 um of water gives ~1e10 photons a
pixel.  ``braggsim simulate -water`` renders the same cube as nonBragg would instead.

The tables water, air, ice and nanoice ship with braggsim (package data, from nanoBragg's
repository under its MIT licence; see ``braggsim/data/stol/LICENSE.nanoBragg``).
"""

from __future__ import annotations

import dataclasses
import math
from importlib import resources
from pathlib import Path
from typing import Union

import numpy as np
import torch

from . import _validate as v
from ._text_table import read_rows
from .beam import R_E_SQ
from .detector import Detector, DetectorFrame
from .sample_geometry import polarization, sample_geometry

AVOGADRO = 6.02214179e23  # nanoBragg's value
TABLES = ("water", "air", "ice", "nanoice")
# file value -> sin(theta)/lambda: nanoBragg's -stol, -4stol and -Q
UNITS = {"stol": 1.0, "4stol": 0.25, "Q": 1.0 / (4.0 * math.pi)}
_FAR = (1e98, 1e99)

Scalar = Union[float, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class StolTable:
    """F of one molecule against sin(theta)/lambda.  stol_per_A, F: (n,) increasing stol."""

    stol_per_A: np.ndarray
    F: np.ndarray
    source: str = ""

    def __post_init__(self):
        stol = np.asarray(self.stol_per_A, dtype=np.float64)
        F = np.asarray(self.F, dtype=np.float64)
        if stol.ndim != 1 or stol.shape != F.shape or stol.size == 0:
            raise ValueError(f"a stol table needs matching 1-d stol and F arrays, got {stol.shape} and {F.shape}")
        if not (np.isfinite(stol).all() and np.isfinite(F).all()):
            raise ValueError(f"stol table {self.source or ''}: values must be finite")
        if np.any(np.diff(stol) <= 0):
            bad = int(np.argmax(np.diff(stol) <= 0)) + 1
            raise ValueError(f"stol table {self.source or ''}: stol must increase, entry {bad + 1} does not")

    def padded(self) -> tuple[np.ndarray, np.ndarray]:
        """nonBragg's interpolation nodes: the table with two far points at each end."""
        stol = np.concatenate([[-_FAR[1], -_FAR[0]], self.stol_per_A, list(_FAR)])
        F = np.concatenate([[self.F[0]] * 2, self.F, [self.F[-1]] * 2])
        return stol, F

    def interpolate(self, stol: torch.Tensor) -> torch.Tensor:
        """F at ``stol`` (1/A), any shape, in float64 (the far nodes overflow float32)."""
        nodes_np, values_np = self.padded()
        stol = stol.to(torch.float64)
        nodes = torch.as_tensor(nodes_np, device=stol.device)
        values = torch.as_tensor(values_np, device=stol.device)
        # nonBragg's search ends on the last node at or below stol (never below node 1)
        nearest = torch.searchsorted(nodes, stol.detach().contiguous(), right=True) - 1
        nearest = nearest.clamp(1, nodes.numel() - 3)
        xa = torch.stack([nodes[nearest + i] for i in range(-1, 3)])  # (4, ...)
        ya = torch.stack([values[nearest + i] for i in range(-1, 3)])
        result = torch.zeros_like(stol)
        for i in range(4):
            term = ya[i]
            for j in range(4):
                if j != i:
                    term = term * (stol - xa[j]) / (xa[i] - xa[j])
            result = result + term
        return result


def table_path(name: str) -> Path:
    """The shipped table ``name`` (one of TABLES)."""
    return Path(str(resources.files("braggsim") / "data" / "stol" / f"{name}.stol"))


def read_stol(spec, *, units: str = "stol") -> StolTable:
    """A ``.stol`` table from a file, or a shipped one by name (water, air, ice, nanoice).

    units: "stol" (the file holds sin(theta)/lambda in 1/A, nanoBragg's -stol), "4stol"
    (4 sin(theta)/lambda, -4stol) or "Q" (4 pi sin(theta)/lambda, -Q).  A missing,
    empty or garbled file, or stol values that do not increase, raise ValueError naming
    the file and line.
    """
    if units not in UNITS:
        raise ValueError(f"units must be one of {tuple(UNITS)}, got {units!r}")
    path = table_path(str(spec)) if str(spec) in TABLES and not Path(str(spec)).exists() else Path(spec)
    rows = read_rows(path, "stol table", 2, required=2)
    stol = np.array([values[0] for _, values in rows]) * UNITS[units]
    F = np.array([values[1] for _, values in rows])
    for (number, _), step in zip(rows[1:], np.diff(stol), strict=True):
        if step <= 0:
            raise ValueError(f"stol table {path}, line {number}: stol must increase from line to line")
    return StolTable(stol, F, str(path))


@dataclasses.dataclass
class AmorphousBackground:
    """Amorphous material in the beam, rendered as nonBragg does (see module docstring).

    stol: a :class:`StolTable`, a path, or a shipped table name ("water", ...).
    thickness_mm: along the beam; width_mm, height_mm: across it (clip them to the beam
        size yourself: nonBragg clips them to -beamsize).
    density_g_cm3, molecular_weight (g/mol): turn the volume into molecules.
    scale: an extra factor (1 = nonBragg's absolute scale), e.g. for refinement.
    """

    stol: Union[str, Path, StolTable] = "water"
    thickness_mm: Scalar = 0.1
    width_mm: Scalar = 0.1
    height_mm: Scalar = 0.1
    density_g_cm3: Scalar = 1.0
    molecular_weight: Scalar = 18.0
    scale: Scalar = 1.0

    def __post_init__(self):
        if not isinstance(self.stol, StolTable):
            self.stol = read_stol(self.stol)
        for name in ("thickness_mm", "width_mm", "height_mm", "density_g_cm3", "scale"):
            v.check_non_negative(name, getattr(self, name))
        v.check_positive("molecular_weight", self.molecular_weight, unit="g/mol")

    @property
    def table(self) -> StolTable:
        """The .stol table (``stol`` after construction, always a StolTable)."""
        if not isinstance(self.stol, StolTable):
            self.stol = read_stol(self.stol)
        return self.stol

    def molecules(self, dtype, device) -> torch.Tensor:
        """Molecules in the beam (0-d tensor): volume (m^3) * density (g/m^3) * N_A / MW."""
        volume_m3 = (
            v.to_tensor(self.thickness_mm, dtype, device)
            * v.to_tensor(self.width_mm, dtype, device)
            * v.to_tensor(self.height_mm, dtype, device)
            * 1e-9
        )
        density_g_m3 = v.to_tensor(self.density_g_cm3, dtype, device) * 1e6
        return volume_m3 * density_g_m3 * AVOGADRO / v.to_tensor(self.molecular_weight, dtype, device)

    def replace(self, **changes) -> AmorphousBackground:
        return dataclasses.replace(self, **changes)


def background_rows(
    background: AmorphousBackground,
    detector: Detector,
    frame: DetectorFrame,
    pixel_mm: torch.Tensor,
    rows: range,
    oversample: int,
    sources: tuple,
    kahn: torch.Tensor,
    nopolar: bool,
    fluence: torch.Tensor,
) -> torch.Tensor:
    """Background photons in pixel rows ``rows``, (len(rows), fpixels).

    sources: (incident (S, 3), wavelengths (S,) in A, weights (S,)) as
    :meth:`braggsim.Beam.source_tensors` returns them.
    """
    incident, wavelengths, weights = sources
    geo = sample_geometry(detector, frame, pixel_mm, rows, oversample)
    scattering = (geo.diffracted[..., None, :] - incident) / wavelengths[:, None]  # (r, f, L, o2, S, 3)
    stol = 0.5 * torch.linalg.vector_norm(scattering, dim=-1)
    F = background.table.interpolate(stol)
    term = (torch.sign(F) * F * F).to(pixel_mm.dtype) * weights
    if not nopolar:
        term = term * polarization(kahn, incident, geo.diffracted[..., None, :], frame.polar_axis)
    factor = geo.omega if geo.capture is None else geo.omega * geo.capture
    term = term * factor[..., None]
    steps = incident.shape[0] * oversample * oversample
    scale = R_E_SQ * fluence * background.molecules(pixel_mm.dtype, pixel_mm.device) / steps
    scale = scale * v.to_tensor(background.scale, pixel_mm.dtype, pixel_mm.device)
    return scale * term.sum((-1, -2, -3))
