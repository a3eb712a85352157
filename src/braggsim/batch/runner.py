"""Run the per-frame pipeline over many frames: in-process, on a LocalCluster, or on any
Dask scheduler, with results streamed to the output folder as frames finish.

    for progress in iter_batch(["grid/*.cbf"], options, "out", scheduler="local"):
        print(progress.done, progress.counts)

One task per frame.  A task carries only the frame's reference (path, index) and the
options; the worker reads the pixels.  At most ``max_in_flight`` tasks exist at a time
(by default one per worker thread, recounted as workers come and go), so neither the
client nor the scheduler holds the whole set, and a worker holds only the frames it is
running: when a frame kills its worker (out of memory, a crash) no innocent frame queued
there shares the blame (Dask counts a death against every task on the worker).  The
cost, a scheduler round trip between a worker's frames, is milliseconds against seconds.  Dask re-runs a task whose worker died
(up to ``distributed.scheduler.allowed-failures`` times; after that the frame is
``failed``).  ``dask`` and ``distributed`` are imported only when a cluster is used.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import queue
import time
import uuid
from collections.abc import Generator

from .sources import FrameRef, expand_frames
from .task import describe_exception, run_frame

log = logging.getLogger(__name__)

_LOST = object()  # a finished frame whose result died with its worker
_MAX_LOST = 3
NO_WORKERS_TIMEOUT_S = 120.0  # a LocalCluster with no workers this long has failed
CONNECT_TIMEOUT_S = 10.0  # how long to try reaching a scheduler address
SCHEDULER_HELP = "local (a LocalCluster on this machine), none (in-process, one frame after another) or tcp://host:port"


class BatchError(RuntimeError):
    """The batch cannot go on (no workers can run the task, the scheduler is gone)."""


@dataclasses.dataclass
class BatchProgress:
    """Where a batch stands; a fresh one is yielded per finished frame, and about every
    ``tick_s`` while frames are running.

    total: frames the batch names; skipped: those already done before it started;
    done: frames finished in this run; running: tasks submitted and not yet finished;
    counts: status -> frames, over the skipped and the done frames;
    elapsed_s: seconds since the first task was submitted (cluster start-up excluded);
    state: running | finished | cancelled | interrupted, and "stopping" between a
        KeyboardInterrupt and "interrupted" (while the cluster closes);
    ref, result: the frame that just finished (None on a tick);
    scheduler: what runs the frames, in words; workers: how many (0 in-process).
    """

    total: int
    skipped: int
    done: int
    running: int
    counts: dict
    elapsed_s: float
    state: str = "running"
    ref: FrameRef | None = None
    result: object | None = None
    scheduler: str = ""
    workers: int = 0

    @property
    def remaining(self) -> int:
        return self.total - self.skipped - self.done

    @property
    def frames_per_s(self) -> float:
        return self.done / self.elapsed_s if self.done and self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        rate = self.frames_per_s
        return self.remaining / rate if rate > 0 else None


def default_workers() -> int:
    """One single-threaded worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def run_batch(frames, options, out_dir, *, on_progress=None, **kwargs) -> BatchProgress:
    """:func:`iter_batch` to the end, calling ``on_progress(progress)`` for each step;
    returns the last progress (its ``state`` says how the batch ended).  A Ctrl-C while
    ``on_progress`` runs stops the batch as one anywhere else does."""
    batch = iter_batch(frames, options, out_dir, **kwargs)
    last = progress = next(batch, None)
    while progress is not None:
        last = progress
        try:
            if on_progress is not None:
                on_progress(progress)
            progress = next(batch, None)
        except KeyboardInterrupt:
            try:
                progress = batch.throw(KeyboardInterrupt)
            except (KeyboardInterrupt, StopIteration):  # it had already ended
                progress = None
    if last is None:  # iter_batch always yields its end state; this would be a bug
        raise RuntimeError("the batch reported nothing")
    return last


def iter_batch(
    frames,
    options,
    out_dir,
    *,
    scheduler="local",
    workers: int | None = None,
    force: bool = False,
    frame_function=None,
    max_in_flight: int | None = None,
    cancel=None,
    tick_s: float = 0.5,
) -> Generator[BatchProgress, None, None]:
    """Process ``frames`` and write their results to ``out_dir`` as they finish.

    frames: FrameRefs, or paths / glob patterns / folders for :func:`expand_frames`.
    options: the pipeline's ProcessOptions (JSON-able: ``to_dict()``).
    scheduler: "local" (a LocalCluster of ``workers`` single-threaded processes, default
        one per core, at most one per frame; a single frame without ``workers`` runs
        in-process), "none" (in-process, sequential), a
        scheduler address ("tcp://host:port"), or a ``distributed.Client`` or cluster
        object the caller owns (it is not closed).
    force: reprocess frames that are already done.
    frame_function: ``(source, options) -> FrameResult``; default the pipeline's
        ``process_frame``.  On a cluster it must be importable (or cloudpickle-able) there.
    cancel: a ``threading.Event``; once set the batch stops, keeping what is done.
        Closing the generator stops it too.  A KeyboardInterrupt stops it, keeping what
        is done, and the last progress has state "interrupted".

    Yields :class:`BatchProgress`; the last one has state finished, cancelled or
    interrupted.  Raises BatchError when the tasks cannot run at all, ValueError for a
    bad output folder or options that differ from the folder's earlier results.
    """
    from .pipeline import SUMMARY_COLUMNS, frame_stem, write_frame_outputs
    from .store import ResultStore

    refs = list(frames) if _are_refs(frames) else expand_frames(frames)
    store = ResultStore(out_dir, write_frame_outputs, SUMMARY_COLUMNS, frame_stem)
    store.check_options(options.to_dict(), force)
    if force:
        store.forget(ref.name for ref in refs)
    pending = [ref for ref in refs if not store.is_done(ref.name)]
    counts = collections.Counter(store.rows[ref.name].get("status", "") for ref in refs if store.is_done(ref.name))
    started = time.monotonic()
    progress = BatchProgress(
        total=len(refs), skipped=len(refs) - len(pending), done=0, running=0, counts=dict(counts), elapsed_s=0.0
    )
    executor = None
    try:
        if pending:
            executor = _executor(scheduler, workers, len(pending))
            progress.scheduler, progress.workers = executor.description, executor.n_workers()
            started = time.monotonic()  # rates count from here, not from the cluster's start
            yield dataclasses.replace(progress)
            for item in executor.results(pending, options, frame_function, cancel, tick_s, max_in_flight):
                progress.ref = progress.result = None
                if item is not None:
                    ref, result = item
                    store.add(result)
                    counts[result.status] += 1
                    progress.done += 1
                    progress.ref, progress.result = ref, result
                else:
                    store.maybe_flush()
                progress.running, progress.workers = executor.running, executor.n_workers()
                progress.counts = dict(counts)
                progress.elapsed_s = time.monotonic() - started
                yield dataclasses.replace(progress)
        progress.ref = progress.result = None
        progress.running = 0
        progress.state = "cancelled" if cancel is not None and cancel.is_set() else "finished"
    except KeyboardInterrupt:
        progress.ref = progress.result = None
        progress.running = 0
        store.flush()  # first, so that a second Ctrl-C while the cluster closes loses nothing
        progress.state = "stopping"
        yield dataclasses.replace(progress)
        progress.state = "interrupted"
    finally:
        store.flush()
        if executor is not None:
            executor.close()
    progress.elapsed_s = time.monotonic() - started
    progress.running = 0
    yield dataclasses.replace(progress)


def _are_refs(frames) -> bool:
    return isinstance(frames, (list, tuple)) and all(isinstance(f, FrameRef) for f in frames) and bool(frames)


def _executor(scheduler, workers, n_pending):
    if scheduler is None or scheduler == "none":
        return _InProcess()
    if scheduler == "local" and n_pending == 1 and not workers:
        return _InProcess()  # one frame: starting a cluster would cost more than the frame
    return _Dask(scheduler, workers, n_pending)


class _InProcess:
    description = "in-process, sequential"
    running = 0

    def n_workers(self) -> int:
        return 0

    def results(self, pending, options, frame_function, cancel, tick_s, max_in_flight):
        for ref in pending:
            if cancel is not None and cancel.is_set():
                return
            self.running = 1
            result = run_frame(ref, options, frame_function)
            self.running = 0
            yield ref, result

    def close(self) -> None:
        pass


class _Dask:
    """Tasks on a Dask cluster, a bounded number at a time."""

    def __init__(self, scheduler, workers, n_pending):
        from distributed import Client

        self.cluster = None
        self.owns_client = True
        self.running = 0
        self._last_census = 0.0
        self._threads = 0
        if isinstance(scheduler, Client):
            self.client, self.owns_client = scheduler, False
        elif scheduler == "local":
            self.cluster = _local_cluster(workers or min(default_workers(), n_pending))
            self.client = Client(self.cluster, set_as_default=False)
        elif isinstance(scheduler, str):
            if "://" not in scheduler:
                raise ValueError(f"scheduler {scheduler!r} is not one of {SCHEDULER_HELP}")
            try:
                self.client = Client(scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise BatchError(f"cannot reach the Dask scheduler at {scheduler} ({exc})") from None
        else:  # a cluster object (LocalCluster, SLURMCluster, ...)
            self.client = Client(scheduler, set_as_default=False)
        address = self.client.scheduler.address
        kind = "LocalCluster" if self.cluster is not None else "Dask scheduler"
        self.description = f"{kind} {address}"
        if self.client.dashboard_link and _has_bokeh():
            self.description += f" (dashboard {self.client.dashboard_link})"

    def n_workers(self) -> int:
        return self._census()[0]

    def _census(self):
        """(workers, threads), asked of the scheduler at most once a second."""
        now = time.monotonic()
        if now - self._last_census >= 1.0:
            nthreads = self.client.nthreads()
            self._workers, self._threads = len(nthreads), sum(nthreads.values())
            self._last_census = now
        return self._workers, self._threads

    def results(self, pending, options, frame_function, cancel, tick_s, max_in_flight):
        run_id = uuid.uuid4().hex[:8]
        extra = () if frame_function is None else (frame_function,)
        todo = iter(pending)
        in_flight: dict = {}
        # (future, its status when it completed), as the futures' callbacks report them
        finished: queue.SimpleQueue = queue.SimpleQueue()
        lost: collections.Counter = collections.Counter()
        exhausted = False

        def submit(ref):
            again = f"-again{lost[ref]}" if lost[ref] else ""
            key = f"braggsim-frame-{ref.name}-{run_id}{again}"
            future = self.client.submit(run_frame, ref, options, *extra, key=key, pure=False)
            in_flight[future] = ref
            future.add_done_callback(lambda done: finished.put((done, done.status)))

        workers_seen = time.monotonic()
        try:
            while True:
                if cancel is not None and cancel.is_set():
                    return
                n_workers, n_threads = self._census()
                if n_workers or self.cluster is None:  # a remote cluster's workers may be queued jobs
                    workers_seen = time.monotonic()
                elif time.monotonic() - workers_seen > NO_WORKERS_TIMEOUT_S:
                    raise BatchError(f"the LocalCluster has had no workers for {NO_WORKERS_TIMEOUT_S:.0f} s")
                limit = max_in_flight or max(1, n_threads)
                while not exhausted and len(in_flight) < limit:
                    ref = next(todo, None)
                    if ref is None:
                        exhausted = True
                        break
                    submit(ref)
                self.running = len(in_flight)
                if not in_flight:
                    return
                try:
                    future, status = finished.get(timeout=tick_s)
                except queue.Empty:
                    yield None
                    continue
                ref = in_flight.pop(future)
                result = self._result(future, status, ref)
                if result is _LOST:
                    lost[ref] += 1
                    if lost[ref] > _MAX_LOST:
                        raise BatchError(f"the result of frame {ref} was lost {lost[ref]} times; are workers dying?")
                    submit(ref)
                    continue
                self.running = len(in_flight)
                yield ref, result
        finally:
            if in_flight:
                self.client.cancel(list(in_flight))
            self.running = 0

    @staticmethod
    def _result(future, status: str, ref):
        """The frame's result; _LOST when it finished but the result died with its worker."""
        from distributed import KilledWorker

        from .pipeline import failed_result

        if status == "cancelled":
            raise BatchError(f"the scheduler cancelled frame {ref}; is it shutting down?")
        if status != "error":  # it finished (and may have been lost and rescheduled since)
            try:
                return future.result()
            except Exception:  # noqa: BLE001  whatever went wrong after it ran, it did run
                # Its worker died before the result reached us and Dask's recomputation
                # failed too (a recomputed task may land beside a frame that kills workers,
                # and share its KilledWorker): this frame is innocent, so it gets a fresh
                # task with fresh lives.
                return _LOST
        exc = future.exception()
        if isinstance(exc, KilledWorker):
            # the frame took its worker down (out of memory, a crash) every time it ran
            return failed_result(ref, f"the workers running this frame died ({exc})")
        raise BatchError(
            f"frame {ref} could not run on the cluster: {describe_exception(exc)} "
            "(the scheduler and the workers need braggsim installed, the same version as here)"
        )

    def close(self) -> None:
        if self.owns_client:
            self.client.close(timeout=10)
        if self.cluster is not None:
            self.cluster.close(timeout=10)


def _local_cluster(n_workers: int):
    import dask
    from distributed import LocalCluster

    # One thread per worker: frames run one per process (torch threads are per frame, see
    # task.py), which scales with cores without GIL or thread-count effects on results.
    # Worker saturation 1.0: a worker holds only the frame it is running, so a frame that
    # kills its worker (out of memory, a crash) cannot take an innocent queued frame's
    # lives (allowed-failures) with it, and a joining worker finds the rest unassigned.
    with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}):
        return LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # any free port (the HTTP server runs even without bokeh)
            silence_logs=logging.ERROR,
            preload=["braggsim.batch.task"],  # its dask_setup: Ctrl-C is the client's to handle
        )


def _has_bokeh() -> bool:
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None
