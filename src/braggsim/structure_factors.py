"""Structure factors: nanoBragg's ``default_F`` and ``-hkl`` table rules.

nanoBragg fills a dense table spanning the file's index range with ``default_F`` and
then writes the listed F values; indices outside the range also get ``default_F``.
No symmetry is applied, not even Friedel's law.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Union

import numpy as np
import torch

# float64 amplitudes, the presence mask, and on the simulation's device the values, their
# mask and the merged table (float64 at worst)
TABLE_BYTES_PER_ENTRY = 8 + 1 + 8 + 1 + 8


@dataclasses.dataclass(frozen=True)
class HKLTable:
    """A dense P1 structure-factor table.

    amplitudes: (nh, nk, nl) F values; present: (nh, nk, nl) bool, True where the file
    listed the index; index_min: (h_min, k_min, l_min).
    """

    amplitudes: np.ndarray
    present: np.ndarray
    index_min: tuple
    source: str = ""

    @property
    def index_max(self) -> tuple:
        return tuple(m + n - 1 for m, n in zip(self.index_min, self.amplitudes.shape, strict=False))

    def __len__(self) -> int:
        return int(self.present.sum())


def read_hkl(path: Union[str, Path]) -> HKLTable:
    """Read an ``h k l F`` text file (one reflection a line; blank lines and # comments skipped).

    A malformed line raises ValueError naming the file and the line number.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError:  # a ValueError too, but one that names neither file nor line
        raise ValueError(f"{path}: not a text HKL file (bytes that are not text)") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read HKL file: {exc.strerror or exc}") from exc
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.split("#", 1)[0].strip()
        if not stripped:
            continue
        fields = stripped.split()
        if len(fields) < 4:
            raise ValueError(f"{path}, line {number}: expected 'h k l F', got {line!r}")
        try:
            h, k, l = (int(x) for x in fields[:3])
            amplitude = float(fields[3])
        except ValueError:
            raise ValueError(f"{path}, line {number}: expected integers h k l and a number F, got {line!r}") from None
        if not np.isfinite(amplitude):
            raise ValueError(f"{path}, line {number}: F must be finite, got {fields[3]!r}")
        rows.append((h, k, l, amplitude))
    if not rows:
        raise ValueError(f"{path}: no reflections found")
    data = np.array(rows)
    indices = data[:, :3].astype(int)
    lo = indices.min(axis=0)
    hi = indices.max(axis=0)
    shape = tuple(int(n) for n in hi - lo + 1)
    # the dense table spans the index range, as nanoBragg's does: refuse, before
    # allocating, a range that cannot fit (one stray index 1500 asks for 3001^3 entries)
    from ._resources import ResourceLimitError, check_memory

    try:
        check_memory(
            f"the dense F table for h {lo[0]}..{hi[0]}, k {lo[1]}..{hi[1]}, l {lo[2]}..{hi[2]} "
            f"({shape[0]}x{shape[1]}x{shape[2]} entries)",
            TABLE_BYTES_PER_ENTRY * float(np.prod(np.array(shape, dtype=np.float64))),
        )
    except ResourceLimitError as exc:
        raise ResourceLimitError(f"{path}: {exc}") from None
    amplitudes = np.zeros(shape)
    present = np.zeros(shape, dtype=bool)
    offset = indices - lo
    amplitudes[offset[:, 0], offset[:, 1], offset[:, 2]] = data[:, 3]
    present[offset[:, 0], offset[:, 1], offset[:, 2]] = True
    return HKLTable(amplitudes, present, tuple(int(x) for x in lo), str(path))


def read_dump(path: Union[str, Path]) -> HKLTable:
    """nanoBragg's binary F dump (``-dump``, default Fdump.bin): a text line
    ``h_min h_max k_min k_max l_min l_max``, a form feed, then (h_range+1) x (k_range+1) x
    (l_range+1) doubles, the last plane of each axis padding.  Every index in range counts
    as listed (the dump already holds default_F where the HKL file had nothing)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"-dump {path}: cannot read it ({exc.strerror or exc})") from None
    end = raw.find(b"\f")
    try:
        bounds = [int(x) for x in raw[: max(end, 0)].split()]
    except ValueError:
        bounds = []
    if end < 0 or len(bounds) != 6:
        raise ValueError(f"-dump {path}: not a nanoBragg F dump (no 'h_min h_max k_min k_max l_min l_max' line)")
    lo = bounds[0::2]
    ranges = [bounds[1] - bounds[0] + 1, bounds[3] - bounds[2] + 1, bounds[5] - bounds[4] + 1]
    if min(ranges) < 1 or np.prod([r + 1 for r in ranges]) > (1 << 28):
        raise ValueError(f"-dump {path}: implausible index ranges {bounds}")
    count = int(np.prod([r + 1 for r in ranges]))
    body = raw[end + 1 :]
    if len(body) != count * 8:
        raise ValueError(f"-dump {path}: expected {count * 8} bytes of F after the header, found {len(body)}")
    values = np.frombuffer(body, dtype="<f8").reshape([r + 1 for r in ranges])[: ranges[0], : ranges[1], : ranges[2]]
    if not np.isfinite(values).all():
        raise ValueError(f"-dump {path}: holds non-finite F values")
    return HKLTable(values.copy(), np.ones(values.shape, dtype=bool), tuple(lo), str(path))


def dump_bytes(table: HKLTable, default_F: float) -> bytes:
    """``table`` in nanoBragg's dump layout (see :func:`read_dump`), unlisted entries default_F."""
    lo, hi = table.index_min, table.index_max
    header = f"{lo[0]} {hi[0]} {lo[1]} {hi[1]} {lo[2]} {hi[2]}\n\f".encode("ascii")
    values = np.where(table.present, table.amplitudes, default_F)
    padded = np.zeros([n + 1 for n in values.shape], dtype="<f8")
    padded[: values.shape[0], : values.shape[1], : values.shape[2]] = values
    return header + padded.tobytes()


class StructureFactors:
    """F_cell lookup on a given dtype/device, differentiable in ``default_F``.

    ``nearest(h0)`` takes integer indices (..., 3); ``interpolated(h)`` takes fractional
    ones (..., 3) and does nanoBragg's tricubic (4x4x4 Lagrange) interpolation.
    """

    def __init__(self, table: HKLTable | None, default_F: torch.Tensor):
        self.default_F = default_F
        self.table = table
        if table is not None:
            dtype, device = default_F.dtype, default_F.device
            values = torch.as_tensor(table.amplitudes, dtype=dtype, device=device)
            present = torch.as_tensor(table.present, device=device)
            self._values = torch.where(present, values, default_F)
            self._min = torch.as_tensor(table.index_min, dtype=torch.long, device=device)
            self._shape = torch.as_tensor(table.amplitudes.shape, dtype=torch.long, device=device)

    @property
    def values(self) -> torch.Tensor:
        """The full F grid, (nh, nk, nl) from the table's ``index_min``, with ``default_F``
        where the table has no entry; ValueError without a table."""
        if self.table is None:
            raise ValueError("structure factors without an hkl table have no grid of values")
        return self._values

    def nearest(self, hkl0: torch.Tensor) -> torch.Tensor:
        """F at integer (as float) indices (..., 3) -> (...)."""
        if self.table is None:
            return self.default_F.expand(hkl0.shape[:-1])
        idx = hkl0.to(torch.long) - self._min
        inside = ((idx >= 0) & (idx < self._shape)).all(dim=-1)
        idx = torch.where(inside[..., None], idx, torch.zeros_like(idx))
        values = self._values[idx[..., 0], idx[..., 1], idx[..., 2]]
        return torch.where(inside, values, self.default_F)

    def interpolated(self, hkl: torch.Tensor) -> torch.Tensor:
        """Tricubic F at fractional indices (..., 3) -> (...).

        Where the 4x4x4 neighbourhood leaves the table the value is ``default_F``
        (nanoBragg instead switches interpolation off for the rest of the image).
        """
        if self.table is None:
            return self.default_F.expand(hkl.shape[:-1])
        base = torch.floor(hkl)
        t = hkl - base  # (..., 3) in [0, 1)
        weights = torch.stack(
            [
                -t * (t - 1) * (t - 2) / 6,
                (t + 1) * (t - 1) * (t - 2) / 2,
                -(t + 1) * t * (t - 2) / 2,
                (t + 1) * t * (t - 1) / 6,
            ],
            dim=-1,
        )  # (..., 3, 4)
        offsets = torch.arange(-1, 3, device=hkl.device)
        idx = base.detach().to(torch.long)[..., None] + offsets - self._min[:, None]  # (..., 3, 4)
        inside = ((idx[..., 0] >= 0) & (idx[..., 3] < self._shape)).all(dim=-1)
        # index 0 exists in any table, even a one-reflection one (its neighbourhoods all
        # leave the table, and those points take default_F below)
        idx = torch.where(inside[..., None, None], idx, torch.zeros_like(idx))
        ih = idx[..., 0, :, None, None]
        ik = idx[..., 1, None, :, None]
        il = idx[..., 2, None, None, :]
        cube = self._values[ih, ik, il]  # (..., 4, 4, 4)
        value = torch.einsum(
            "...i,...j,...k,...ijk->...", weights[..., 0, :], weights[..., 1, :], weights[..., 2, :], cube
        )
        return torch.where(inside, value, self.default_F)
