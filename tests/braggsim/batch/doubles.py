"""Frame functions for the batch tests, with the pipeline's contract but cheap and with
knobs (a delay, a frame that raises, one that kills its process).  The cluster tests put
the checkout's root on the workers' PYTHONPATH so the workers import it
(tests.braggsim.batch.doubles)."""

from __future__ import annotations

import os
import time

import numpy as np


def frame_ref(source):
    from braggsim.batch import FrameRef

    return FrameRef(*source) if isinstance(source, tuple) else FrameRef(os.fspath(source))


def frame_name(source) -> str:
    return frame_ref(source).name


def count_spots(source, options, min_spots: int = 5):
    """Read the frame, count bright groups: 'indexed' from min_spots up, else 'no-lattice'.
    A result of its pixels (a checksum and a draw from the seeded RNGs) rides along in
    ``parameters`` so tests can see the frame was read and the seeds applied."""
    import torch
    from scipy import ndimage

    from braggsim.batch.pipeline import FrameResult
    from braggsim.io import read_frame

    started = time.perf_counter()
    path, index = source if isinstance(source, tuple) else (source, None)
    frame = read_frame(path, index)
    background = float(np.median(frame.data[frame.mask]))
    bright = frame.mask & (frame.data > background + 6 * np.sqrt(max(background, 1.0)))
    labels, _ = ndimage.label(bright)
    n_spots = int((np.bincount(labels.ravel())[1:] >= 2).sum())
    result = FrameResult(
        frame=frame_ref(source).frame,
        status="indexed" if n_spots >= min_spots else "no-lattice",
        n_spots=n_spots,
        time_s=time.perf_counter() - started,
    )
    result.parameters = {
        "pixel_sum": float(frame.data[frame.mask].astype(np.float64).sum()),
        "torch_draw": float(torch.rand(1).item()),
        "numpy_draw": float(np.random.random()),
        "torch_threads": torch.get_num_threads(),
        "pid": os.getpid(),
    }
    return result


def slow(source, options, delay_s: float = 0.5):
    time.sleep(delay_s)
    return count_spots(source, options)


def raises_on(source, options, bad: str = ""):
    if frame_name(source) == bad:
        raise RuntimeError(f"deliberate failure on {bad}")
    return count_spots(source, options)


def interrupts_on(source, options, bad: str = ""):
    if frame_name(source) == bad:
        raise KeyboardInterrupt
    return count_spots(source, options)


def kills_process_on(source, options, bad: str = ""):
    if frame_name(source) == bad:
        # as a segfault or the OOM killer would end the worker, some way into the frame
        # (not at once: a worker that dies within milliseconds of finishing its previous
        # frame may not have reported it yet, and Dask then blames that frame too)
        time.sleep(0.3)
        os._exit(17)
    return count_spots(source, options)
