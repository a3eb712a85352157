"""Many frames: expand folders / patterns / multi-image files into frames, process them
in-process or on Dask (a LocalCluster, or any scheduler), stream results to a folder.

    from braggsim.batch import run_batch
    final = run_batch(["grid/"], options, "out", scheduler="local", on_progress=print)

Importing this package does not import dask; the runner and the lazy frame stack import
it when they are used.
"""

from __future__ import annotations

from .sources import FrameRef, expand_frames, natural_key

__all__ = [
    "BatchError",
    "BatchProgress",
    "FrameRef",
    "PredictedSpots",
    "ProgressPrinter",
    "expand_frames",
    "frame_predictions",
    "frame_stack",
    "iter_batch",
    "natural_key",
    "predicted_spots",
    "progress_line",
    "read_pixels",
    "read_summary",
    "run_batch",
    "typed_row",
]

_LAZY = {
    "BatchError": "runner",
    "BatchProgress": "runner",
    "iter_batch": "runner",
    "run_batch": "runner",
    "ProgressPrinter": "progress",
    "frame_stack": "stack",
    "read_pixels": "stack",
    "progress_line": "progress",
    "PredictedSpots": "results",
    "frame_predictions": "results",
    "predicted_spots": "results",
    "read_summary": "results",
    "typed_row": "results",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
