"""What runs for one frame, on a Dask worker or in-process: the pipeline, under fixed
thread counts and RNG seeds, turned into a result whatever happens.

Determinism: a frame's result must not depend on which worker runs it, on what that
worker ran before, or on the scheduler.  So every frame runs with the same torch thread
count (``THREADS_PER_FRAME``; the native kernel follows torch's count, and parallel sums
split across a different number of threads round differently) and with torch, NumPy and
``random`` seeded from the frame's name, and the caller's thread count and RNG states are
restored afterwards.  The task has no side effects (the client writes the files), so
Dask may run it twice -- after a worker dies -- without harm.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
import traceback
import zlib

THREADS_PER_FRAME = 1


def dask_setup(worker) -> None:
    """Dask preload hook for the workers of ``--scheduler local``: they ignore SIGINT.

    A Ctrl-C in a terminal reaches the whole process group, LocalCluster's workers too;
    the client alone should handle it (stop submitting, keep what is done, close the
    cluster), instead of every worker dying with a traceback mid-frame."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def frame_seed(name: str) -> int:
    """The RNG seed of a frame: a hash of its name, the same on every machine."""
    return zlib.crc32(name.encode("utf-8"))


@contextlib.contextmanager
def deterministic(name: str, threads: int = THREADS_PER_FRAME):
    """Run the block with ``threads`` torch threads and RNGs seeded from ``name``."""
    import numpy as np
    import torch

    saved_threads = torch.get_num_threads()
    saved_numpy = np.random.get_state()
    saved_random = random.getstate()
    seed = frame_seed(name)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.set_num_threads(threads)
            torch.manual_seed(seed)
            np.random.seed(seed)
            random.seed(seed)
            yield
    finally:
        torch.set_num_threads(saved_threads)
        np.random.set_state(saved_numpy)
        random.setstate(saved_random)


def run_frame(ref, options, frame_function=None):
    """The FrameResult of ``ref`` (a FrameRef); an exception from the pipeline becomes a
    ``failed`` result whose reason names it and where it was raised."""
    from .pipeline import failed_result, process_frame

    frame_function = frame_function or process_frame
    started = time.perf_counter()
    try:
        with deterministic(ref.name):
            return frame_function(ref.source, options)
    except Exception as exc:  # noqa: BLE001  any failure of one frame is that frame's result, never the batch's
        return failed_result(ref, describe_exception(exc), time.perf_counter() - started)


def describe_exception(exc: BaseException) -> str:
    """``Type: message (at file.py:line)``, one line."""
    message = " ".join(str(exc).split()) or "(no message)"
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {message}{where}"
