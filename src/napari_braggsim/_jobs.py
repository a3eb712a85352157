"""Background work the GUI polls: a plain thread, with the latest progress kept, never queued.

A :class:`Job` runs ``work(job)`` in a daemon thread.  ``work`` may call
``job.publish(item)`` as often as it likes: only the newest item is kept, so a fast
worker can never fill the GUI's event queue.  The GUI asks ``job.take()`` on a timer (one
redraw per frame interval at most) and gets the newest item since its last look, and the
result or the error once the work has ended.

:class:`RefineController` runs a ``braggsim`` refiner this way and also keeps the loss
history, so the plot sees every iteration even when the screen skips some.

No Qt here (the GUI's timer lives in the widgets), so the same controller drives a
refinement from a script or a test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections.abc import Callable
from typing import Any

_NOTHING = object()


@dataclasses.dataclass
class Taken:
    """What a job had for the GUI at one look."""

    latest: Any = None  # the newest published item since the last look, or None
    done: bool = False  # the work has ended (result or error below)
    result: Any = None
    error: BaseException | None = None


class Job:
    """``work(job)`` in a daemon thread; ``publish`` keeps the newest item only."""

    def __init__(self, work: Callable, name: str = "braggsim job"):
        self._work = work
        self._lock = threading.Lock()
        self._latest: Any = _NOTHING
        self._result: Any = None
        self._error: BaseException | None = None
        self._reported = False
        self.cancelled = threading.Event()
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> Job:
        self._thread.start()
        return self

    def _main(self) -> None:
        lower_priority()
        try:
            result = self._work(self)
        except BaseException as exc:  # noqa: BLE001  the GUI shows it as a notification
            with self._lock:
                self._error = exc
        else:
            with self._lock:
                self._result = result
        finally:
            self.finished.set()

    def publish(self, item: Any) -> None:
        """Called by the work: replace the pending item (the GUI has not taken it yet)."""
        with self._lock:
            self._latest = item

    def cancel(self) -> None:
        """Ask the work to end; ``work`` looks at ``job.cancelled``."""
        self.cancelled.set()

    def take(self) -> Taken | None:
        """The newest item since the last call and, once, the outcome; None if nothing new."""
        with self._lock:
            latest, self._latest = self._latest, _NOTHING
            done = self.finished.is_set() and not self._reported
            if done:
                self._reported = True
            if latest is _NOTHING and not done:
                return None
            return Taken(
                latest=None if latest is _NOTHING else latest,
                done=done,
                result=self._result if done else None,
                error=self._error if done else None,
            )

    @property
    def running(self) -> bool:
        return not self.finished.is_set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the work has ended; True if it has."""
        return self.finished.wait(timeout_s)


def lower_priority(steps: int = 5) -> None:
    """Run this thread ``steps`` nice levels below the GUI thread (Linux: a thread is a
    task with a priority of its own), as QThread.LowPriority would: on a busy machine the
    scheduler then serves the GUI first.  Elsewhere nothing changes."""
    if not hasattr(os, "setpriority") or not hasattr(threading, "get_native_id"):
        return
    with contextlib.suppress(OSError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + steps))


@dataclasses.dataclass
class RefineProgress:
    """One iteration as the GUI shows it: the refiner's state with its residual ready.

    state: ``braggsim.refine.RefineState``; residual: observed - predicted (slow, fast)
    float32 or None; residual_bound: the residual's largest absolute finite value.
    """

    state: Any
    residual: Any = None
    residual_bound: float = 1.0


class RefineController:
    """Runs one refinement at a time in a background thread; the GUI polls ``take()``.

    ``start(make_refiner, max_iter, observed, after=...)``: ``after(result)`` runs in the same
    thread once the refiner has its result (the GUI uses it to build the overlays of the
    refined model, so nothing heavy runs on the GUI thread); its return value comes back
    as ``Taken.result = (result, after_value)``.
    """

    def __init__(self):
        self.job: Job | None = None
        self.refiner = None
        self._history_lock = threading.Lock()
        self._history: list = []

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.running

    def start(self, make_refiner: Callable, max_iter: int, observed=None, after: Callable | None = None) -> Job:
        """Build the refiner with ``make_refiner()`` and run it, both in the thread (a
        ValueError from building it comes back as the Job's error)."""
        if self.running:
            raise RuntimeError("a refinement is already running; stop it first")
        import numpy as np

        observed = None if observed is None else np.asarray(observed, dtype=np.float32)
        with self._history_lock:
            self._history = []
        self.refiner = None

        def work(job: Job):
            refiner = make_refiner()
            self.refiner = refiner
            if job.cancelled.is_set():  # stopped while the refiner was being built
                return None, None
            for state in refiner.run(max_iter=int(max_iter)):
                if job.cancelled.is_set():
                    refiner.stop()  # ends before the next iteration, keeping the best so far
                with self._history_lock:
                    self._history.append((int(state.iteration), float(state.loss)))
                residual, bound = None, 1.0
                if state.predicted is not None and observed is not None and state.predicted.shape == observed.shape:
                    residual = observed - state.predicted
                    finite = np.abs(residual[np.isfinite(residual)])
                    bound = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
                job.publish(RefineProgress(state, residual, bound))
            result = refiner.result
            extra = after(result) if (after is not None and result is not None) else None
            return result, extra

        self.job = Job(work, name="braggsim refine").start()
        return self.job

    def stop(self) -> None:
        """Ask the run to end before its next iteration (the result still arrives)."""
        if self.job is not None:
            self.job.cancel()
        if self.refiner is not None:
            self.refiner.stop()

    def abort(self, wait_s: float = 3.0) -> bool:
        """Stop and wait up to ``wait_s`` for the thread; True if it has ended."""
        self.stop()
        return True if self.job is None else self.job.wait(wait_s)

    def history(self) -> list:
        """[(iteration, loss)] of every iteration so far."""
        with self._history_lock:
            return list(self._history)

    def take(self) -> Taken | None:
        return None if self.job is None else self.job.take()
