"""A stand-in for the per-frame pipeline (``braggsim.process``) until it lands.

It has the same contract (``ProcessOptions``, ``process_frame(source, options) ->
FrameResult``, ``write_frame_outputs``) but does only the first step: read the frame and
count the connected groups of bright pixels.  Frames with at least ``min_spots`` groups
are reported ``indexed`` -- nothing is indexed; ``reason`` says so.  Delete this module
when :mod:`braggsim.batch.pipeline` imports the real pipeline.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np

from ..io._atomic import atomic_output

STATUSES = ("indexed", "no-lattice", "failed")
SUMMARY_FIELDS = ("frame", "status", "reason", "n_spots", "n_indexed", "rmsd_px", "cell", "mosaic_deg", "time_s")


@dataclasses.dataclass
class ProcessOptions:
    """cell: (a, b, c, alpha, beta, gamma) Angstrom/degrees; space_group: a symbol."""

    cell: tuple | None = None
    space_group: str | None = None
    threshold_sigma: float = 6.0
    min_spots: int = 20

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["cell"] = None if self.cell is None else [float(x) for x in self.cell]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ProcessOptions:
        data = dict(data)
        if data.get("cell") is not None:
            data["cell"] = tuple(float(x) for x in data["cell"])
        return cls(**data)


@dataclasses.dataclass
class FrameResult:
    frame: str
    status: str
    reason: str = ""
    n_spots: int = 0
    n_indexed: int = 0
    rmsd_px: float | None = None
    cell: tuple | None = None
    mosaic_deg: float | None = None
    time_s: float = 0.0
    parameters: dict = dataclasses.field(default_factory=dict)
    expt: dict | None = None

    def to_json_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data.pop("expt")
        return data

    def summary_row(self) -> dict:
        row = {key: getattr(self, key) for key in SUMMARY_FIELDS}
        row["cell"] = "" if self.cell is None else " ".join(f"{x:.3f}" for x in self.cell)
        row["rmsd_px"] = "" if self.rmsd_px is None else f"{self.rmsd_px:.3f}"
        row["mosaic_deg"] = "" if self.mosaic_deg is None else f"{self.mosaic_deg:.4f}"
        row["time_s"] = f"{self.time_s:.2f}"
        return row


def _frame_name(source) -> str:
    from .sources import FrameRef

    return (FrameRef(*source) if isinstance(source, tuple) else FrameRef(os.fspath(source))).name


def process_frame(source, options: ProcessOptions) -> FrameResult:
    """Read the frame and count bright-pixel groups; never raises for a bad frame."""
    from scipy import ndimage

    from ..io import read_frame

    started = time.perf_counter()
    name = _frame_name(source)
    path, index = source if isinstance(source, tuple) else (source, None)
    try:
        frame = read_frame(path, index)
    except (OSError, ValueError) as exc:
        return FrameResult(name, "failed", reason=str(exc), time_s=time.perf_counter() - started)
    trusted = frame.data[frame.mask]
    background = float(np.median(trusted)) if trusted.size else 0.0
    threshold = background + options.threshold_sigma * np.sqrt(max(background, 1.0))
    bright = frame.mask & (frame.data > threshold)
    labels, count = ndimage.label(bright)
    sizes = np.bincount(labels.ravel())[1:]
    n_spots = int((sizes >= 2).sum())
    status = "indexed" if n_spots >= options.min_spots else "no-lattice"
    return FrameResult(
        name,
        status,
        reason="placeholder pipeline: spots counted, nothing indexed",
        n_spots=n_spots,
        time_s=time.perf_counter() - started,
    )


def write_frame_outputs(out_dir, result: FrameResult) -> None:
    """DIR/<frame>.json, and DIR/<frame>.expt when the result carries one (else none)."""
    stem = os.path.join(os.fspath(out_dir), result.frame)
    if result.expt is not None:
        with atomic_output(stem + ".expt") as handle:
            handle.write(json.dumps(result.expt, indent=2).encode())
    elif os.path.exists(stem + ".expt"):
        os.remove(stem + ".expt")  # from an earlier run that indexed this frame
    with atomic_output(stem + ".json") as handle:
        handle.write(json.dumps(result.to_json_dict(), indent=2).encode())
