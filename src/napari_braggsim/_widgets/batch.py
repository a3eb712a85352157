"""Batch dock widget: many frames as one lazy stack, processed in the background.

*Open* reads a folder or a multi-image file (an Eiger/NeXus master, a several-frame HDF5)
as a dask array: one image layer with a frame slider, each frame read when it is shown.
*Process all* runs ``braggsim``'s batch over those frames (``braggsim.batch.iter_batch``,
the pipeline of ``braggsim process``, writing the same output folder: a rerun skips done
frames) in a background thread, in-process or on a LocalCluster.  A timer takes the news
(``_batch.BatchController``): the progress bar and counts, one table row per finished
frame, and the plot.  Selecting a row moves the frame slider there and draws that
frame's predicted spots from its .expt (computed in a thread).  Errors become napari
notifications.  Nothing heavy runs on the GUI thread.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, LineEdit, ProgressBar, PushButton, SpinBox
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from .. import _common, _warmup
from .._batch import (
    COLUMNS,
    OVERLAY_SUFFIX,
    SCHEDULERS,
    BatchController,
    default_out_dir,
    done_rows,
    frame_overlay,
    number_text,
    open_stack,
    process_options,
    saved_options,
    table_value,
)
from .._jobs import Job
from . import _qt
from ._batch_plot import BatchPlot

INDEX_ROLE = Qt.ItemDataRole.UserRole
MARKER_PX = 14.0
WARM_UP_WAIT_S = 120.0
TABLE_ROWS_PER_TICK = 200  # rows added per timer tick at most (a resumed million-frame run)


class SortItem(QTableWidgetItem):
    """A table cell that sorts by its value (numbers as numbers), empty cells last."""

    def __init__(self, text: str, key):
        super().__init__(text)
        self.key = (1, 0.0, "") if key is None else (0, key, "") if not isinstance(key, str) else (0, 0.0, key)
        self.setFlags(self.flags() & ~Qt.ItemFlag.ItemIsEditable)

    def __lt__(self, other):
        if isinstance(other, SortItem):
            return self.key < other.key
        return super().__lt__(other)


class BatchWidget(Container):
    def __init__(self, napari_viewer=None):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        _warmup.start()
        self.stack = None  # _batch.Stack once opened
        self.out_dir: Path | None = None  # the folder of the rows shown
        self.rows: dict = {}  # stack index -> typed summary row
        self.progress_state = None  # the last BatchProgress shown
        self.overlay = None  # the FrameOverlay shown
        self.controller = BatchController()
        self._open_job: Job | None = None
        self._overlay_job: Job | None = None
        self._frame_job: Job | None = None  # reads the frame a selected row wants shown
        self._frame_target: int | None = None
        self._prefetch_job: Job | None = None
        self._prefetch_wanted: list = []  # stack indices to read ahead next
        self._pending_rows: list = []
        self._batch_open = False  # a batch whose end the GUI has not shown yet
        self._out_default: Path | None = None  # the output folder the dock filled in
        self.frame_function = None  # the per-frame function (None: the pipeline); tests replace it

        self.frames = FileEdit(
            name="frames",
            label="frames",
            mode="r",
            tooltip="A folder of frames, a multi-image file (Eiger master, NeXus/HDF5 series), or a glob "
            "pattern such as /data/grid/*.cbf.bz2 (type a folder's path here).",
        )
        self.open_button = PushButton(
            name="open_button", text="Open as stack", tooltip="Open the frames as one lazy image layer (a slider)."
        )
        self.out = FileEdit(
            name="out",
            label="output",
            mode="d",
            tooltip="The output folder: <frame>.json (+ .expt when indexed) and summary.csv, as braggsim process "
            "writes them.  A rerun skips the frames already done there.  Default: <frames>_braggsim beside them.",
        )
        self.cell = LineEdit(
            name="cell",
            label="cell",
            value="",
            tooltip="The known cell: a b c (Å) alpha beta gamma (°), e.g. 57.8 57.8 150 90 90 90.",
        )
        self.space_group = LineEdit(
            name="space_group", label="space group", value="", tooltip="The space group, e.g. P 41 21 2 or 92."
        )
        self.scheduler = ComboBox(
            name="scheduler",
            label="run on",
            choices=list(SCHEDULERS),
            value="local",
            tooltip="local: a Dask LocalCluster, one single-threaded worker process per core; "
            "none: in this process, one frame after another.",
        )
        self.workers = SpinBox(
            name="workers",
            label="workers",
            min=0,
            max=512,
            value=0,
            tooltip="Worker processes of the LocalCluster; 0 = one per core.",
        )
        self.force = CheckBox(
            name="force", text="reprocess done frames", value=False, tooltip="Process again frames already done."
        )
        self.process_button = PushButton(
            name="process_button",
            text="Process all",
            tooltip="Find spots, index and refine every frame of the stack in the background.",
        )
        self.cancel_button = PushButton(
            name="cancel_button",
            text="Cancel",
            enabled=False,
            tooltip="Start no new frame; every finished frame is kept (in-process, the frame running finishes; "
            "on a LocalCluster, the frames running are dropped and run next time).",
        )
        buttons = Container(widgets=[self.process_button, self.cancel_button], layout="horizontal", labels=False)
        self.progress = ProgressBar(name="progress", label="progress", min=0, max=1, value=0)
        self.status = Label(name="status", value="open a folder or a multi-image file")
        self.status.native.setWordWrap(True)
        self.extend(
            [
                self.frames,
                self.open_button,
                self.out,
                self.cell,
                self.space_group,
                self.scheduler,
                self.workers,
                self.force,
                buttons,
                self.progress,
                self.status,
            ]
        )
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels([heading for _, heading in COLUMNS])
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setMinimumHeight(160)
        self.table.setToolTip(
            "One row per finished frame; click a heading to sort.  Selecting a row shows that frame "
            "and its predicted spots."
        )
        self.plot = BatchPlot()
        self.native.layout().addWidget(self.table)
        self.native.layout().addWidget(self.plot)
        _qt.fit_width(self)

        self._poller = _qt.Poller(self._poll)
        self.open_button.changed.connect(lambda *_: self.open())
        self.process_button.changed.connect(lambda *_: self.process_all())
        self.cancel_button.changed.connect(lambda *_: self.cancel())
        self.scheduler.changed.connect(lambda *_: self._scheduler_changed())
        self.table.itemSelectionChanged.connect(self._selection_changed)
        if napari_viewer is not None:
            napari_viewer.dims.events.current_step.connect(self._slider_moved)
        _qt.stop_when_closed(self, self._closed)

    # ------------------------------------------------------------------ actions
    @property
    def busy(self) -> bool:
        return self._poller.active or self.controller.running or self._open_job is not None or self._batch_open

    def open(self, spec=None) -> Job | None:
        """Open ``spec`` (default: the frames field) as a stack in the background; its
        layer, the done rows of the output folder and the saved options follow."""
        spec = str(spec if spec is not None else self.frames.value)
        if self.controller.running:
            _common.notify_error("Batch: a batch is running; cancel it before opening other frames")
            return None
        out_text = str(self.out.value) if self._out_given() else ""

        def work(job):
            stack = open_stack(spec)
            out_dir = Path(out_text) if out_text else default_out_dir(spec)
            found = stack, out_dir, done_rows(stack, out_dir), saved_options(out_dir)
            # napari's first layer of a session sets up pint's unit registry lazily, and
            # two threads doing it at once break it ("'pixel' is not defined").  The
            # warm-up loads it in its thread (core_ready() may be true before that, when
            # braggsim was imported already), so the stack's layer waits for the warm-up
            _warmup.wait(WARM_UP_WAIT_S)
            return found

        self.frames.value = spec
        self._open_job = Job(work, name="braggsim open stack").start()
        self.open_button.enabled = False
        self.status.value = f"opening {spec}..."
        self._poller.start()
        return self._open_job

    def process_all(self) -> Job | None:
        """Process every frame of the stack in the background; None (and a notification)
        when it cannot start."""
        if self.stack is None:
            _common.notify_error("Batch: open a folder or a multi-image file first")
            return None
        if self.controller.running or self._batch_open:
            return None
        try:
            options = process_options(self.cell.value, self.space_group.value)
        except ValueError as exc:
            _common.notify_error(f"Batch: {_common.describe(exc)}")
            return None
        out_dir = Path(str(self.out.value)) if self._out_given() else default_out_dir(self.stack.spec)
        if not self._out_given():
            self._out_default = out_dir
        self.out.value = out_dir
        force = bool(self.force.value)
        self._reset_rows(out_dir)
        job = self.controller.start(
            self.stack,
            options,
            out_dir,
            scheduler=self.scheduler.value,
            workers=int(self.workers.value) or None,
            force=force,
            frame_function=self.frame_function,
        )
        self._batch_open = True
        self.progress.max, self.progress.value = len(self.stack.refs), 0
        self.process_button.enabled = False
        self.cancel_button.enabled = True
        self.open_button.enabled = False
        self.status.value = "starting" + (" the LocalCluster..." if self.scheduler.value == "local" else "...")
        self._poller.start()
        return job

    def cancel(self) -> None:
        if self.controller.running:
            self.controller.cancel()
            self.cancel_button.enabled = False
            self.status.value = "cancelling: no new frame starts; the finished frames are kept"

    def select_frame(self, index: int) -> None:
        """Show frame ``index`` (the slider) and, when it was indexed, its predicted spots."""
        if self.stack is None or not 0 <= index < len(self.stack.refs):
            return
        self.plot.set_selected(index)  # first: the slider's event then finds the frame selected
        self._go_to(index)
        row = self.rows.get(index)
        if row is None or row.get("status") != "indexed" or self.out_dir is None:
            self._remove_overlay()
            return
        stack, out_dir = self.stack, self.out_dir
        self._overlay_job = Job(lambda job: frame_overlay(out_dir, stack, index), name="braggsim frame overlay")
        self._overlay_job.start()
        self._poller.start()

    def _go_to(self, index: int) -> None:
        """Move the slider to frame ``index`` once its pixels are read (in a thread when
        they are not cached), so napari's slicing on the GUI thread finds them ready."""
        cache = self.stack.cache
        ref = self.stack.refs[index]
        if cache is None or ref in cache:
            self._move_slider(index)
            return
        self._frame_target = index
        self._frame_job = Job(lambda job: cache.read(ref), name="braggsim read frame").start()
        self._poller.start()

    def _move_slider(self, index: int) -> None:
        if self.viewer is not None and self.viewer.dims.ndim >= 3:
            self.viewer.dims.set_current_step(0, index)
        self._prefetch_around(index)

    def _prefetch_around(self, index: int) -> None:
        """Read the frames after and before ``index`` in the background (the next slider step)."""
        if self.stack is None or self.stack.cache is None:
            return
        self._prefetch_wanted = [i for i in (index + 1, index - 1) if 0 <= i < len(self.stack.refs)]
        self._start_prefetch()

    def _start_prefetch(self) -> None:
        if self._prefetch_job is not None or not self._prefetch_wanted:
            return
        cache, refs = self.stack.cache, [self.stack.refs[i] for i in self._prefetch_wanted]
        self._prefetch_wanted = []
        self._prefetch_job = Job(lambda job: cache.prefetch(refs), name="braggsim read ahead").start()
        self._poller.start()

    def row_of(self, index: int) -> int | None:
        """The table row (as sorted now) of stack frame ``index``."""
        for row in range(self.table.rowCount()):
            item = self.table.item(row, 0)
            if item is not None and item.data(INDEX_ROLE) == index:
                return row
        return None

    # ------------------------------------------------------------------ the timer
    def _poll(self) -> bool:
        if self._open_job is not None:
            taken = self._open_job.take()
            if taken is not None and taken.done:
                self._open_job = None
                self.open_button.enabled = not self.controller.running
                if taken.error is not None:
                    _common.notify_error(f"Batch: cannot open {self.frames.value}: {_common.describe(taken.error)}")
                    self.status.value = "could not open the frames"
                else:
                    self._show_stack(*taken.result)
        self._take_batch()
        if self._pending_rows:
            chunk, self._pending_rows = (
                self._pending_rows[:TABLE_ROWS_PER_TICK],
                self._pending_rows[TABLE_ROWS_PER_TICK:],
            )
            self._add_rows(chunk)
        if self._frame_job is not None and not self._frame_job.running:
            self._frame_job.take()
            self._frame_job = None
            if self._frame_target is not None and self._frame_target == self.plot.selected:
                self._move_slider(self._frame_target)  # an unreadable frame shows as NaN
        if self._prefetch_job is not None and not self._prefetch_job.running:
            self._prefetch_job.take()
            self._prefetch_job = None
            self._start_prefetch()
        if self._overlay_job is not None:
            taken = self._overlay_job.take()
            if taken is not None and taken.done:
                self._overlay_job = None
                if taken.error is not None:
                    _common.notify_error(f"Batch: cannot predict the spots: {_common.describe(taken.error)}")
                else:
                    self._poller.defer(lambda overlay=taken.result: self._show_overlay(overlay))
        return (
            self._open_job is not None
            or self._overlay_job is not None
            or self._frame_job is not None
            or self._prefetch_job is not None
            or self._batch_open
            or bool(self._pending_rows)
        )

    def _take_batch(self) -> None:
        finished = self.controller.finished_since()
        if finished:
            self._pending_rows.extend((f.index, f.row) for f in finished)
        taken = self.controller.take()
        if taken is None:
            return
        progress = taken.result if taken.done and taken.result is not None else taken.latest
        if progress is not None:
            self._show_progress(progress)
        if taken.done:
            self._batch_open = False
            self.process_button.enabled = True
            self.cancel_button.enabled = False
            self.open_button.enabled = True
            if taken.error is not None:
                _common.notify_error(f"Batch: {_common.describe(taken.error)}")
                self.status.value = f"stopped: {_common.describe(taken.error)}"
                return
            failed = (progress.counts or {}).get("failed", 0) if progress is not None else 0
            if failed:
                _common.notify_warning(f"Batch: {failed} frame(s) failed; their reasons are in their .json files")

    def _show_progress(self, progress) -> None:
        from braggsim.batch import progress_line

        self.progress_state = progress
        self.progress.max = max(progress.total, 1)
        self.progress.value = progress.skipped + progress.done
        where = f" on {progress.scheduler}" if progress.scheduler else ""
        state = "" if progress.state == "running" else f"{progress.state}: "
        self.status.value = state + progress_line(progress, bar=False) + (where if progress.state == "running" else "")

    # ------------------------------------------------------------------ GUI steps
    def _show_stack(self, stack, out_dir, existing: dict, saved) -> None:
        self.stack = stack
        if out_dir == default_out_dir(stack.spec):
            self._out_default = out_dir
        self.out.value = out_dir
        if saved is not None:
            if not self.cell.value.strip():
                self.cell.value = saved[0]
            if not self.space_group.value.strip():
                self.space_group.value = saved[1]
        self._reset_rows(out_dir)
        self._pending_rows = sorted(existing.items())
        if self.viewer is not None:
            from napari.layers import Layer

            data, kwargs, kind = stack.layer_data()
            for name in (stack.name, stack.name + OVERLAY_SUFFIX):
                if name in self.viewer.layers:
                    self.viewer.layers.remove(name)
            # added hidden, so napari reads no frame before the slider is at the first one
            layer = self.viewer.add_layer(Layer.create(data, {**kwargs, "visible": False}, kind))
            self.viewer.dims.set_current_step(0, 0)
            layer.visible = True
            self.viewer.layers.selection.active = layer
        shape = stack.data.shape
        done = f"; {len(existing)} done in {out_dir}" if existing else ""
        self.progress.max, self.progress.value = shape[0], len(existing)
        self.status.value = f"{shape[0]} frames of {shape[1]} x {shape[2]} px{done}"

    def _reset_rows(self, out_dir) -> None:
        self.out_dir = Path(out_dir)
        self.rows = {}
        self._pending_rows = []
        self.table.setRowCount(0)
        self.plot.set_rows({}, 0 if self.stack is None else len(self.stack.refs))
        self._remove_overlay()

    def _add_rows(self, items: list) -> None:
        sorting = self.table.isSortingEnabled()
        self.table.setSortingEnabled(False)  # rows stay where they are put while filled
        blocker = self.table.blockSignals(True)
        try:
            for index, row in items:
                self.rows[index] = row
                at = self.table.rowCount()
                self.table.insertRow(at)
                for column, (key, _) in enumerate(COLUMNS):
                    value = table_value(row, key)
                    if key in ("frame", "status"):
                        item = SortItem(str(value), index if key == "frame" else str(value))
                    else:
                        item = SortItem(number_text(key, value), value)
                    if column == 0:
                        item.setData(INDEX_ROLE, index)
                        item.setToolTip(str(row.get("frame", "")))
                    self.table.setItem(at, column, item)
        finally:
            self.table.blockSignals(blocker)
            self.table.setSortingEnabled(sorting)
        self.plot.set_rows(self.rows, len(self.stack.refs) if self.stack is not None else 0)

    def _selection_changed(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return
        item = self.table.item(rows[0].row(), 0)
        if item is not None:
            self.select_frame(int(item.data(INDEX_ROLE)))

    def _slider_moved(self, event=None) -> None:
        """The slider went to another frame of the stack: select its row, if it has one
        (which draws its predictions), else clear the selection and the overlay."""
        if self.stack is None or self.viewer is None or self.viewer.dims.ndim < 3:
            return
        index = int(self.viewer.dims.current_step[0])
        if self.stack.name not in self.viewer.layers or not 0 <= index < len(self.stack.refs):
            return
        self._prefetch_around(index)
        if index == self.plot.selected:
            return
        row = self.row_of(index)
        if row is not None:
            self.table.selectRow(row)
            return
        self.table.clearSelection()
        self.plot.set_selected(None)
        self._remove_overlay()

    def _overlay_name(self) -> str | None:
        return None if self.stack is None else self.stack.name + OVERLAY_SUFFIX

    def _show_overlay(self, overlay) -> None:
        self.overlay = overlay
        name = self._overlay_name()
        if self.viewer is None or name is None:
            return
        if overlay is None:
            self._remove_overlay()
            return
        points = overlay.points if len(overlay.points) else np.zeros((0, 3))
        features = {"hkl": overlay.hkl}
        metadata = {"braggsim_frame_index": overlay.index, "braggsim_predicted": overlay.n_predicted}
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = points
            layer.features = features
            layer.metadata.update(metadata)
            layer.visible = True
            return
        active = self.viewer.layers.selection.active
        self.viewer.add_points(
            points,
            ndim=3,
            name=name,
            features=features,
            size=MARKER_PX,
            symbol="disc",
            face_color="transparent",
            border_color="yellow",
            border_width=0.12,
            opacity=0.9,
            out_of_slice_display=False,
            metadata=metadata,
        )
        if active is not None and active in self.viewer.layers:
            self.viewer.layers.selection.active = active

    def _remove_overlay(self) -> None:
        self.overlay = None
        name = self._overlay_name()
        if self.viewer is not None and name is not None and name in self.viewer.layers:
            self.viewer.layers.remove(name)

    def _out_given(self) -> bool:
        """True when the output field holds a folder the user chose (not the default the
        dock filled in for the frames opened last)."""
        text = str(self.out.value)
        return bool(text.strip()) and text != "." and Path(text) != self._out_default

    def _scheduler_changed(self) -> None:
        self.workers.enabled = self.scheduler.value == "local"

    def _closed(self) -> None:
        with contextlib.suppress(Exception):  # closing must never raise
            self.controller.cancel()
            if self.viewer is not None:
                self.viewer.dims.events.current_step.disconnect(self._slider_moved)
        self._poller.stop()
