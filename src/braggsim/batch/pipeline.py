"""The per-frame pipeline a batch runs, in one place: :mod:`braggsim.process`.

Contract: ``process_frame(source, options) -> FrameResult`` (source: a path, or (path,
index) for an image of a multi-image file) never raises for a problem with the frame;
``FrameResult`` has ``frame`` (the path, ``path#index`` for an image of a multi-image
file), ``stem``, ``status`` (one of STATUSES), ``reason``, ``time_s``, ``to_json_dict()``
and ``summary_row()`` (SUMMARY_COLUMNS); the writer puts DIR/<stem>.json (and .expt when
indexed) in place atomically.
"""

from __future__ import annotations

import os

from ..process import SUMMARY_COLUMNS, FrameResult, ProcessOptions, frame_stem, process_frame
from ..process import write_frame_outputs as _write_frame_outputs

STATUSES = ("indexed", "no-lattice", "failed")

__all__ = [
    "STATUSES",
    "SUMMARY_COLUMNS",
    "FrameResult",
    "ProcessOptions",
    "failed_result",
    "frame_stem",
    "process_frame",
    "write_frame_outputs",
]


def write_frame_outputs(out_dir, result: FrameResult) -> None:
    """The pipeline's writer; an .expt left by an earlier run of a frame that is no longer
    indexed (``--force`` with other data or options) is removed, so no stale model stays."""
    stale = os.path.join(os.fspath(out_dir), result.stem + ".expt")
    if result.expt is None and os.path.exists(stale):
        os.remove(stale)
    _write_frame_outputs(result, out_dir)


def failed_result(ref, reason: str, time_s: float = 0.0) -> FrameResult:
    """The result of a frame the pipeline could not finish (it raised, or its worker died)."""
    return FrameResult(frame=ref.frame, status="failed", reason=reason, time_s=time_s)
