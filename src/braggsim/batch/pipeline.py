"""The per-frame pipeline a batch runs, in one place: switching pipelines is this import.

Contract: ``process_frame(source, options) -> FrameResult`` (source: a path, or (path,
index) for a multi-image file) never raises for a problem with the frame; ``FrameResult``
has ``frame``, ``status`` (one of STATUSES), ``reason``, ``time_s``, ``to_json_dict()`` and
``summary_row()``; ``write_frame_outputs(out_dir, result)`` writes DIR/<frame>.json (and
.expt when indexed).
"""

from __future__ import annotations

from ._placeholder import (
    STATUSES,
    SUMMARY_FIELDS,
    FrameResult,
    ProcessOptions,
    process_frame,
    write_frame_outputs,
)

__all__ = [
    "STATUSES",
    "SUMMARY_FIELDS",
    "FrameResult",
    "ProcessOptions",
    "failed_result",
    "process_frame",
    "write_frame_outputs",
]


def failed_result(name: str, reason: str, time_s: float = 0.0) -> FrameResult:
    """The result of a frame the pipeline could not finish (it raised, or its worker died)."""
    return FrameResult(frame=name, status="failed", reason=reason, time_s=time_s)
