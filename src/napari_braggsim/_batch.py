"""Many frames in the viewer, without Qt: a folder or a multi-image file as a lazy stack,
``braggsim``'s batch run in the background, its results as table rows and plot values, and
a frame's predicted spots.

* :func:`open_stack` (a worker thread) expands the frames (``braggsim.batch.expand_frames``)
  and wraps them in ``braggsim.batch.frame_stack``: a dask array (n, slow, fast) whose
  frames are read when napari shows them.  Only the first frame is read here, for the
  stack's shape and contrast.  Frames go through a :class:`FrameCache` that the dock
  fills ahead in a thread (the next and previous frame, the frame a selected row asks
  for), because napari slices on the GUI thread and a full Pilatus frame takes a second
  or more to decompress.
* :class:`BatchController` runs ``braggsim.batch.iter_batch`` (the pipeline ``braggsim
  process`` runs, written to the same output folder) in a :class:`~._jobs.Job`.  Every
  finished frame is kept, so the table misses none even when the screen skips progress
  steps; the GUI polls :meth:`~BatchController.take` on its timer.
* :func:`frame_overlay` (a worker thread) turns a frame's .expt into points for the
  stack's overlay layer, (frame, slow, fast), so they show on that frame only.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import threading
from pathlib import Path

import numpy as np

from ._jobs import Job, Taken

#: the results table's columns: (summary column, heading)
COLUMNS = (
    ("frame", "frame"),
    ("status", "status"),
    ("n_spots", "spots"),
    ("n_indexed", "indexed"),
    ("rmsd_px", "RMSD px"),
    ("a", "a Å"),
    ("c", "c Å"),
    ("mosaic_deg", "mosaic °"),
    ("time_s", "time s"),
)
OUT_SUFFIX = "_braggsim"  # the default output folder: <frames' folder>/<stem>_braggsim
OVERLAY_SUFFIX = " predicted"
SCHEDULERS = ("local", "none")


class FrameCache:
    """The frames of a stack read last, kept for napari's slicing (on the GUI thread) and
    filled ahead by background reads (``prefetch``): a full Pilatus frame takes a second or
    more to decompress, which the slider should not wait for.  Thread-safe; a frame being
    read by one thread is waited for, not read twice.

    size: frames kept (a 6M-pixel frame is 24 MB as float32).
    """

    def __init__(self, size: int = 6):
        self.size = int(size)
        self._frames: collections.OrderedDict = collections.OrderedDict()
        self._reading: dict = {}
        self._lock = threading.Lock()

    def __contains__(self, ref) -> bool:
        with self._lock:
            return ref in self._frames

    def put(self, ref, data) -> None:
        with self._lock:
            self._frames[ref] = data
            self._frames.move_to_end(ref)
            while len(self._frames) > self.size:
                self._frames.popitem(last=False)

    def read(self, ref):
        """The (slow, fast) pixels of ``ref``, read once (``braggsim.batch.read_pixels``)."""
        import braggsim.batch

        while True:
            with self._lock:
                if ref in self._frames:
                    self._frames.move_to_end(ref)
                    return self._frames[ref]
                reading = self._reading.get(ref)
                if reading is None:
                    reading = self._reading[ref] = threading.Event()
                    break
            reading.wait()  # another thread reads it; then it is cached (or failed: read here)
        try:
            data = braggsim.batch.read_pixels(ref)  # looked up at each call (tests count reads)
            self.put(ref, data)
            return data
        finally:
            with self._lock:
                self._reading.pop(ref, None)
            reading.set()

    def prefetch(self, refs) -> int:
        """Read the ``refs`` not cached yet (a worker thread); returns how many were read.
        Unreadable frames are left to the stack (it shows them as NaN)."""
        read = 0
        for ref in refs:
            if ref in self:
                continue
            try:
                self.read(ref)
                read += 1
            except (OSError, ValueError):
                pass
        return read


@dataclasses.dataclass
class Stack:
    """Frames opened as one image layer.

    spec: what was opened (a folder, a file or a pattern); refs: the frames
    (``braggsim.batch.FrameRef``); data: the lazy (n, slow, fast) float32 dask array;
    contrast_limits: from the first frame; name: the layer's name.
    """

    spec: str
    refs: list
    data: object
    contrast_limits: list
    name: str
    cache: FrameCache | None = None

    @property
    def index_of(self) -> dict:
        """Frame stem (``FrameRef.name``, the output files' name) -> index in the stack."""
        return {ref.name: i for i, ref in enumerate(self.refs)}

    def layer_data(self) -> tuple:
        """The image layer as a napari LayerDataTuple."""
        kwargs = {
            "name": self.name,
            "contrast_limits": self.contrast_limits,
            "colormap": "gray",
            "metadata": {"braggsim_stack": self.spec, "braggsim_frames": [ref.frame for ref in self.refs]},
        }
        return (self.data, kwargs, "image")


def open_stack(spec) -> Stack:
    """The frames ``spec`` names (a folder, a multi-image HDF5/NeXus file such as an Eiger
    master, one frame file, or a glob pattern) as a lazy stack.  Reads the first frame only.
    ValueError / FileNotFoundError when nothing can be stacked."""
    from braggsim.batch import expand_frames, frame_stack
    from braggsim.io import read_frame

    from ._frames import contrast_limits, layer_name

    spec = os.fspath(spec)
    if not spec.strip():
        raise ValueError("choose a folder or a multi-image file to open")
    refs = expand_frames([spec])
    import braggsim.process  # noqa: F401  here, not on the GUI thread at Process all (1.5 s)

    first = read_frame(refs[0].path, refs[0].index)
    cache = FrameCache()
    cache.put(refs[0], first.data)  # what napari shows first is read already
    data = frame_stack(refs, shape=first.data.shape, read=cache.read)
    name = layer_name(spec.rstrip(os.sep)) or "frames"
    return Stack(spec, refs, data, contrast_limits(first.data, first.mask), name, cache)


def default_out_dir(spec) -> Path:
    """Where a batch of ``spec`` writes by default: beside the frames, ``<stem>_braggsim``."""
    path = Path(os.fspath(spec).rstrip(os.sep))
    if path.is_dir():
        return path.parent / (path.name + OUT_SUFFIX)
    from ._frames import layer_name

    stem = layer_name(path).split(".")[0].replace("*", "").replace("?", "") or "frames"
    return path.parent / (stem + OUT_SUFFIX)


def process_options(cell_text: str, space_group_text: str):
    """``braggsim.process.ProcessOptions`` from the dock's text fields.  ValueError naming
    the bad value."""
    from braggsim.process import ProcessOptions

    parts = cell_text.replace(",", " ").split()
    if len(parts) != 6:
        raise ValueError(f"cell {cell_text!r}: give six numbers, a b c (Å) alpha beta gamma (°)")
    try:
        cell = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"cell {cell_text!r}: not six numbers") from None
    if not space_group_text.strip():
        raise ValueError("give the space group (e.g. P 41 21 2)")
    return ProcessOptions(cell=cell, space_group=space_group_text.strip())


def saved_options(out_dir) -> tuple | None:
    """(cell text, space group) of the options a folder's earlier batch used, or None."""
    import json

    path = Path(out_dir) / "options.json"
    try:
        options = json.loads(path.read_text(encoding="utf-8"))["options"]
        return " ".join(f"{float(v):g}" for v in options["cell"]), str(options["space_group"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def done_rows(stack: Stack, out_dir) -> dict:
    """Index in the stack -> typed summary row, for the stack's frames already done in
    ``out_dir`` (a rerun skips them).  {} when there is no readable summary."""
    from braggsim.batch import read_summary
    from braggsim.process import frame_stem

    try:
        rows = read_summary(out_dir)
    except ValueError:
        return {}
    index_of = stack.index_of
    out = {}
    for row in rows:
        index = index_of.get(frame_stem(row["frame"]))
        if index is not None and (Path(out_dir) / (stack.refs[index].name + ".json")).exists():
            out[index] = row
    return out


def table_value(row: dict, column: str):
    """What the table shows in ``column``: the frame's stem, the status, or a number (None
    when empty)."""
    if column == "frame":
        from braggsim.process import frame_stem

        return frame_stem(row["frame"])
    return row.get(column)


def number_text(column: str, value) -> str:
    if value is None:
        return ""
    if column in ("n_spots", "n_indexed"):
        return str(int(value))
    digits = {"rmsd_px": 3, "mosaic_deg": 4, "time_s": 2}.get(column, 3)
    return f"{float(value):.{digits}f}"


def counts_text(counts: dict) -> str:
    """``indexed 2, no-lattice 1``."""
    return ", ".join(f"{status} {n}" for status, n in sorted(counts.items()) if n)


def histogram(values, bins: int = 12) -> tuple:
    """(edges (bins + 1,), counts (bins,)) of the finite ``values``; a single value gets a
    bin of width 1 % around it.  ((), ()) for none."""
    values = np.asarray([v for v in values if v is not None], dtype=float)
    values = values[np.isfinite(values)]
    if not values.size:
        return np.zeros(0), np.zeros(0, int)
    low, high = float(values.min()), float(values.max())
    if not high > low:
        half = max(abs(low) * 0.005, 1e-6)
        low, high = low - half, high + half
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    return edges, counts


@dataclasses.dataclass
class Finished:
    """One frame the batch finished: its index in the stack and its typed summary row."""

    index: int
    row: dict


class BatchController:
    """Runs one batch at a time in a background thread; the GUI polls :meth:`take` and
    :meth:`finished_since`.

    ``start(stack, options, out_dir, scheduler=..., workers=..., force=...)``;
    :meth:`cancel` stops it (the frames running finish first; what is done is kept).
    """

    def __init__(self):
        self.job: Job | None = None
        self._lock = threading.Lock()
        self._finished: list[Finished] = []
        self._taken = 0
        self.cancel_event = threading.Event()

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.running

    def start(
        self,
        stack: Stack,
        options,
        out_dir,
        *,
        scheduler: str = "local",
        workers: int | None = None,
        force: bool = False,
        frame_function=None,
    ) -> Job:
        """Process the stack's frames into ``out_dir`` (``iter_batch`` in a thread).  The
        Job's published items are ``braggsim.batch.BatchProgress``; its result the last one.
        A bad output folder or options that differ from the folder's earlier ones come back
        as the Job's error (a ValueError)."""
        if self.running:
            raise RuntimeError("a batch is already running; cancel it first")
        if scheduler not in SCHEDULERS and "://" not in str(scheduler):
            raise ValueError(f"scheduler {scheduler!r} is not one of {', '.join(SCHEDULERS)} or tcp://host:port")
        from braggsim.batch import iter_batch, typed_row

        refs, index_of = list(stack.refs), stack.index_of
        with self._lock:
            self._finished, self._taken = [], 0
        self.cancel_event = cancel = threading.Event()

        def work(job: Job):
            last = None
            if not force:  # the frames done before: the table lists them too
                existing = done_rows(stack, out_dir) if os.path.isdir(out_dir) else {}
                with self._lock:
                    self._finished.extend(Finished(index, row) for index, row in sorted(existing.items()))
            batch = iter_batch(
                refs,
                options,
                os.fspath(out_dir),
                scheduler=scheduler,
                workers=workers or None,
                force=force,
                frame_function=frame_function,
                cancel=cancel,
                tick_s=0.25,
            )
            for progress in batch:
                if progress.result is not None:
                    row = typed_row(progress.result.summary_row())
                    with self._lock:
                        self._finished.append(Finished(index_of[progress.ref.name], row))
                last = progress
                job.publish(progress)
            return last

        self.job = Job(work, name="braggsim batch").start()
        return self.job

    def cancel(self) -> None:
        """Start no new frame; the running ones finish and are kept."""
        self.cancel_event.set()

    def finished_since(self) -> list[Finished]:
        """The frames finished since the last call, in the order they finished."""
        with self._lock:
            new = self._finished[self._taken :]
            self._taken = len(self._finished)
        return new

    def take(self) -> Taken | None:
        return None if self.job is None else self.job.take()

    def wait(self, timeout_s: float | None = None) -> bool:
        return True if self.job is None else self.job.wait(timeout_s)


@dataclasses.dataclass
class FrameOverlay:
    """Predicted spots of one frame of a stack, ready for a Points layer.

    points: (n, 3) (frame index, slow, fast); hkl: (n,) "h k l" strings; n_predicted: n.
    """

    index: int
    points: np.ndarray
    hkl: np.ndarray

    @property
    def n_predicted(self) -> int:
        return len(self.points)


def frame_overlay(out_dir, stack: Stack, index: int) -> FrameOverlay | None:
    """The predicted spots of frame ``index`` from its .expt in ``out_dir`` (DIALS' stills
    predictor, ``braggsim.batch.frame_predictions``); None when the frame was not indexed."""
    from braggsim.batch import frame_predictions

    predictions = frame_predictions(out_dir, stack.refs[index].name)
    if predictions is None:
        return None
    points = np.column_stack([np.full(len(predictions), float(index)), predictions.px])
    labels = np.array([f"{h} {k} {l}" for h, k, l in predictions.hkl], dtype=object)
    return FrameOverlay(index, points.reshape(-1, 3), labels)
