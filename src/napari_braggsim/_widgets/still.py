"""Real still dock widget: a loaded real frame -> strong spots -> indexed model -> refined
against the pixels -> a DIALS .expt (and back from one).

Every step runs in a background thread (``_jobs.Job``, the work in ``_still``, which holds
no Qt); a timer (``_qt.Poller``) looks at it once per frame interval and moves its results
into layers, one layer per event-loop pass.  The refinement publishes each iteration
(only the newest is kept): the readout and the loss plot follow every look, the
predictions layer a few times a second.  Stop ends it at the next iteration; closing the
dock does the same.

The frame is the viewer's observed layer (``state.observed``: set by Load frame, the
reader, or this widget's picker); its header geometry comes from the layer's metadata and
its mask from its ``<name> mask`` labels layer (label 1 = excluded).  A new frame clears
the spots and the model, and their layers, which belonged to the old one.

Layers: ``strong spots`` (a cross per centroid, as wide as the spot; orange-red once a
model leaves it unindexed) and ``still predictions`` (a circle at each indexed
reflection's predicted position, with its hkl when zoomed in; ``_layers.update_labels``).
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import napari.layers
import numpy as np
from magicgui.widgets import CheckBox, Container, FileEdit, Label, LineEdit, ProgressBar, PushButton, create_widget
from qtpy.QtWidgets import QSizePolicy

from .. import _common, _warmup
from .._fields import CELL_FIELDS, STILL_FIELDS, make_field, read_field
from .._frames import mask_layer_for
from .._jobs import Job
from .._layers import STILL_SPOTS, find_layer, show_spots
from .._state import BraggsimState, state_for
from . import _qt
from ._plot import LossPlot

LAYER_INTERVAL_S = 0.2  # the predictions layer moves at most 5 times a second during a run
SPACE_GROUP_TIP = (
    "Space group of the crystal: a name (P 41 21 2 or P41212), a number (92) or a Hall symbol; "
    "gemmi reads it.  Its point group decides which orientations are the same solution, and its "
    "lattice constrains the cell.\nCommand line: braggsim process --space-group"
)
# what the crystal fields held when Index last ran, in this session (a new dock starts from it)
_LAST_USED: dict = {}


class StillWidget(Container):
    def __init__(self, napari_viewer=None):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.state: BraggsimState = state_for(napari_viewer) if napari_viewer is not None else BraggsimState()
        _warmup.start()
        self.found = None  # _still.FoundSpots of the observed frame
        self.model = None  # _still.StillModel
        self.shown = None  # _still.Shown of the model: its predictions, put back if a run fails
        self.indexed = None  # _still.Indexed of the last Index
        self.refined = None  # _still.Refined of the last Refine
        self.history: list = []  # (iteration, negative log-likelihood) of the current run
        self._frame_layer = None  # the layer the spots and the model belong to
        self._spot_settings: dict | None = None  # the spot finder's settings of ``found``
        self._pending: tuple = ()  # what the running step was started with
        self._job: Job | None = None
        self._job_kind = ""
        self._layers_shown_at = -math.inf
        self._showing = False
        self._closed = False

        self.observed = create_widget(
            annotation=napari.layers.Image,
            name="observed",
            label="frame layer",
            options={"tooltip": "The real frame; its metadata gives the header geometry (Load frame or File > Open)."},
        )
        self.mask = create_widget(
            annotation=napari.layers.Labels,
            name="mask",
            label="mask layer",
            options={
                "nullable": True,
                "tooltip": "Labels layer of excluded pixels (label 1 = excluded, 0 = used); "
                "the frame's own '<name> mask' is picked with it.",
            },
        )
        self.extend([self.observed, self.mask])

        # strong spots
        self.spot_fields = {
            name: make_field(STILL_FIELDS[name], value)
            for name, value in (("gain", 1.0), ("sigma_strong", 3.0), ("sigma_background", 6.0), ("min_spot_size", 3))
        }
        self.find_button = PushButton(
            name="find_button", text="Find spots", tooltip="Find the strong spots in the background."
        )
        self.spots_status = Label(name="spots_status", value="")
        # the crystal
        last = _LAST_USED.get("cell", {})
        self.cell_fields = {
            name: LineEdit(
                name=f"cell_{name}",
                label=f"{spec.label} ({'°' if spec.unit == 'deg' else spec.unit})",  # short: three to a row
                value=last.get(name, ""),
                tooltip=spec.tooltip,
            )
            for name, spec in CELL_FIELDS.items()
        }
        for field in self.cell_fields.values():
            field.native.setMinimumWidth(52)
        self.space_group = LineEdit(
            name="space_group", label="space group", value=_LAST_USED.get("space_group", ""), tooltip=SPACE_GROUP_TIP
        )
        self.index_button = PushButton(
            name="index_button",
            text="Index",
            tooltip="Find the crystal's orientation with this cell and space group (no start needed), then "
            "fit it to the spot positions; finds the spots first if needed.",
        )
        self.index_status = Label(name="index_status", value="")
        # the refinement
        self.iterations = make_field(STILL_FIELDS["iterations"], 20)
        self.max_reflections = make_field(STILL_FIELDS["max_reflections"], 150)
        self.refine_cell = CheckBox(
            name="refine_cell", text="refine the cell", value=True, tooltip="Let the cell's free parameters move."
        )
        self.refine_detector = CheckBox(
            name="refine_detector",
            text="refine distance and beam centre",
            value=True,
            tooltip="Let the detector distance and the beam centre (panel shifts) move.",
        )
        self.refine_button = PushButton(
            name="refine_button",
            text="Refine",
            tooltip="Refine orientation, cell, distance, beam centre, mosaic spread and domain size against the "
            "pixels around the indexed spots (a background plane and a free intensity per spot).",
        )
        self.stop_button = PushButton(
            name="stop_button", text="Stop", enabled=False, tooltip="End the refinement at the next iteration."
        )
        self.progress = ProgressBar(name="progress", label="progress", min=0, max=20, value=0)
        self.progress.native.setFormat("iteration %v / %m")
        self.readout = Label(name="readout", value="")
        # the model file
        self.save_path = FileEdit(
            name="save_path", label="save to", mode="w", filter="*.expt", tooltip="Where Save writes the model (.expt)."
        )
        self.save_button = PushButton(
            name="save_button",
            text="Save .expt",
            tooltip="Write the model as a DIALS ExperimentList (beam, detector, crystal).",
        )
        self.load_path = FileEdit(
            name="load_path", label="load from", mode="r", filter="*.expt", tooltip="A DIALS .expt to start from."
        )
        self.load_button = PushButton(
            name="load_button",
            text="Load .expt",
            tooltip="Take the crystal, beam and detector of a DIALS .expt as the model (finds the spots first "
            "if needed); Refine then starts from it.",
        )
        for label in (self.spots_status, self.index_status, self.readout):
            label.native.setWordWrap(True)
            # wrapped to the dock's width: a long line must not widen the dock past its edge
            label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.readout.native.setStyleSheet("font-family: monospace;")
        self.plot = LossPlot()
        self.plot.setToolTip("Poisson negative log-likelihood of the shoebox pixels at every iteration.")

        def row(*widgets, labels=True):
            return Container(widgets=list(widgets), layout="horizontal", labels=labels)

        self.body = Container(
            name="body",
            labels=False,
            widgets=[
                Label(value="<b>Strong spots</b>"),
                Container(widgets=list(self.spot_fields.values())),
                row(self.find_button, labels=False),
                self.spots_status,
                Label(value="<b>Crystal</b> (known cell and space group)"),
                row(*(self.cell_fields[n] for n in ("a", "b", "c"))),
                row(*(self.cell_fields[n] for n in ("alpha", "beta", "gamma"))),
                Container(widgets=[self.space_group]),
                row(self.index_button, labels=False),
                self.index_status,
                Label(value="<b>Refine against the pixels</b>"),
                Container(widgets=[self.iterations, self.max_reflections, self.refine_cell, self.refine_detector]),
                row(self.refine_button, self.stop_button, labels=False),
                Container(widgets=[self.progress]),
                self.readout,
            ],
        )
        self.body.native.layout().addWidget(self.plot)
        self.body.extend(
            [
                Label(value="<b>Model</b> (DIALS .expt)"),
                Container(widgets=[self.save_path, self.load_path]),
                row(self.save_button, self.load_button, labels=False),
            ]
        )
        _qt.add_scrolling(self, self.body)
        _qt.fit_width(self)

        self._poller = _qt.Poller(self._poll)
        self.find_button.changed.connect(lambda *_: self.find_spots())
        self.index_button.changed.connect(lambda *_: self.index())
        self.refine_button.changed.connect(lambda *_: self.refine())
        self.stop_button.changed.connect(lambda *_: self.stop())
        self.save_button.changed.connect(lambda *_: self.save())
        self.load_button.changed.connect(lambda *_: self.load())
        self.observed.changed.connect(self._on_observed_changed)
        self.state.events.observed.connect(self._show_observed)
        _qt.stop_when_closed(self, self._on_closed)
        if self.viewer is not None:
            from .. import _viewer_hooks

            _viewer_hooks.install(self.viewer)
        self._enable()

    # ------------------------------------------------------------------ layers
    def reset_choices(self, *_):
        """napari calls this when layers come and go: the pickers are refilled and the frame
        agrees with the state's observed layer."""
        try:
            super().reset_choices()
        except RuntimeError:  # the Qt side is gone (viewer closing)
            return
        wanted = self.state.observed
        with contextlib.suppress(RuntimeError):
            if wanted is not None and wanted in self.observed.choices:
                if self.observed.value is not wanted:
                    self._show_observed(wanted)
            elif self.observed.value is not wanted:
                self.state.observe(self.observed.value)
        if self._frame_layer is not None and self.viewer is not None and self._frame_layer not in self.viewer.layers:
            self._forget_frame()

    def _on_observed_changed(self, layer) -> None:
        if not self._showing:
            self.state.observe(layer)

    def _show_observed(self, layer) -> None:
        """The state's observed layer -> the pickers; a different frame clears the results."""
        try:
            self._showing = True
            if layer is not None:
                self.observed.reset_choices()
                if layer in self.observed.choices:
                    self.observed.value = layer
            self.mask.reset_choices()
            self.mask.value = mask_layer_for(self.viewer, layer)
        except RuntimeError:  # the Qt side is gone
            pass
        finally:
            self._showing = False
        if layer is not self._frame_layer and self._frame_layer is not None:
            self._forget_frame()

    def _forget_frame(self) -> None:
        """The spots and the model belonged to another frame: drop them and their layers."""
        from .._still import STRONG_SPOTS

        if self._job is not None:
            self._job.cancel()
        self._job = None
        self.found = self.model = self.shown = self.indexed = self.refined = None
        self._frame_layer = None
        for name in (STRONG_SPOTS, STILL_SPOTS):
            if self.viewer is not None and name in self.viewer.layers:
                self.viewer.layers.remove(name)
        with contextlib.suppress(RuntimeError):
            self.spots_status.value = self.index_status.value = self.readout.value = ""
            self._enable()

    def _frame_input(self):
        """What the steps need from the layers (references; the work copies nothing here)."""
        from .._still import FrameInput

        layer = self.observed.value
        if layer is None:
            raise ValueError("choose a frame layer (Load frame, or File > Open a detector frame)")
        mask = self.mask.value
        return layer, FrameInput(
            data=layer.data,
            excluded=None if mask is None else mask.data,
            metadata=dict(layer.metadata),
            name=layer.name,
        )

    def _spotfinder_values(self) -> dict:
        return {name: read_field(STILL_FIELDS[name], field) for name, field in self.spot_fields.items()}

    # --------------------------------------------------------------- the steps
    @property
    def busy(self) -> bool:
        """True while a step runs or its layers wait to be shown."""
        return self._job is not None or self._poller.active

    @property
    def running(self) -> bool:
        return self._job is not None

    def _start(self, kind: str, work) -> Job | None:
        if self._job is not None:
            _common.notify_warning(f"Real still: {self._job_kind} is still running")
            return None
        self._job_kind = kind
        self._job = Job(work, name=f"braggsim still {kind}").start()
        self._enable()
        self._poller.start()
        return self._job

    def _enable(self) -> None:
        idle = self._job is None
        with contextlib.suppress(RuntimeError):
            for button in (self.find_button, self.index_button, self.load_button):
                button.enabled = idle
            self.refine_button.enabled = idle and self.model is not None
            self.save_button.enabled = idle and self.model is not None
            self.stop_button.enabled = not idle and self._job_kind == "refine"

    def _spots_for(self, layer, source, spotfinder: dict):
        """The spots of ``layer`` if found with these settings already, else a function that
        finds them (runs in the job)."""
        from .._still import find_strong_spots

        found = self.found
        if found is not None and self._frame_layer is layer and self._spot_settings == spotfinder:
            return lambda: found
        return lambda: find_strong_spots(source, spotfinder)

    def find_spots(self) -> Job | None:
        """Find the strong spots of the frame in the background; returns the Job, or None
        after a notification."""
        try:
            layer, source = self._frame_input()
            spotfinder = self._spotfinder_values()
        except ValueError as exc:
            _common.notify_error(f"Find spots: {_common.describe(exc)}")
            return None
        from .._still import find_strong_spots

        self.spots_status.value = "finding spots..."
        self._pending = (layer, spotfinder)
        return self._start("find spots", lambda job: find_strong_spots(source, spotfinder))

    def crystal_text(self) -> tuple:
        """({cell name: text}, space group text) as the fields hold them."""
        return {name: str(field.value) for name, field in self.cell_fields.items()}, str(self.space_group.value)

    def _options_maker(self, cell_text: dict, group_text: str):
        """A function giving ``braggsim.process.ProcessOptions`` for the fields as they are
        now; called in the job (it imports the core), a bad value raising ValueError there."""
        from .._still import process_options

        spotfinder = self._spotfinder_values()
        pixel = {
            "iterations": int(self.iterations.value),
            "max_reflections": int(self.max_reflections.value),
            "refine_cell": bool(self.refine_cell.value),
            "refine_detector": bool(self.refine_detector.value),
            "gain": float(spotfinder["gain"]),
        }
        return lambda: process_options(cell_text, group_text, spotfinder=spotfinder, pixel=pixel)

    def index(self) -> Job | None:
        """Index the frame with the cell and space group in the background (finding its
        spots first if needed); returns the Job, or None after a notification."""
        try:
            layer, source = self._frame_input()
            spotfinder = self._spotfinder_values()
            cell_text, group_text = self.crystal_text()
        except ValueError as exc:
            _common.notify_error(f"Index: {_common.describe(exc)}")
            return None
        from .._still import index_frame

        spots = self._spots_for(layer, source, spotfinder)
        options_of = self._options_maker(cell_text, group_text)

        def work(job):
            options = options_of()  # a bad cell or group: ValueError -> a notification
            return index_frame(spots(), options)

        self.index_status.value = "indexing..."
        self._pending = (layer, spotfinder, cell_text, group_text)
        return self._start("index", work)

    def refine(self) -> Job | None:
        """Refine the model against the frame's pixels in the background, following each
        iteration; returns the Job, or None after a notification."""
        if self.model is None or self.found is None:
            _common.notify_error("Refine: index the frame or load an .expt first")
            return None
        cell_text = {name: repr(float(value)) for name, value in zip(self.cell_fields, self.model.cell, strict=True)}
        options_of = self._options_maker(cell_text, self.model.space_group)
        from .._still import refine_model

        found, model = self.found, self.model
        self.history = []
        self.plot.set_points((), ())
        self.progress.max = int(self.iterations.value)
        _qt.set_progress(self.progress, 0)
        self.progress.native.setFormat("iteration %v / %m")
        self.readout.value = "starting..." if model.fit is not None else "fitting the model to the spots first..."

        def work(job):
            return refine_model(found, model, options_of(), job.publish, job.cancelled.is_set)

        return self._start("refine", work)

    def stop(self) -> None:
        """End the refinement at its next iteration (its result still arrives)."""
        if self._job is not None and self._job_kind == "refine":
            self._job.cancel()
            self.stop_button.enabled = False
            self.readout.value = self.readout.value + "\nstopping..."

    def wait(self, timeout_s: float = 30.0) -> bool:
        """Block (processing no events) until the running step's thread has ended."""
        job = self._job
        return True if job is None else job.wait(timeout_s)

    def save(self, path=None) -> bool:
        """Write the model as a DIALS .expt (at ``path`` or the save field's); True if written."""
        if self.model is None:
            _common.notify_error("Save .expt: no model yet (index the frame or load an .expt)")
            return False
        path = Path(path if path is not None else self.save_path.value)
        if path.is_dir() or not path.name:
            _common.notify_error("Save .expt: choose a file to save to")
            return False
        if path.suffix != ".expt":
            path = path.with_name(path.name + ".expt")
        from .._still import write_model

        try:
            write_model(path, self.model)  # a small JSON file, written atomically
        except (OSError, ValueError) as exc:
            _common.notify_error(f"Save .expt: {_common.describe(exc)}")
            return False
        self.index_status.value = self.index_status.value.split("\nsaved")[0] + f"\nsaved {path.name}"
        return True

    def load(self, path=None) -> Job | None:
        """Take a DIALS .expt as the model in the background (finding the frame's spots
        first if needed); returns the Job, or None after a notification."""
        path = Path(path if path is not None else self.load_path.value)
        try:
            if not path.is_file():
                raise ValueError(f"no such file: {path}")
            layer, source = self._frame_input()
            spotfinder = self._spotfinder_values()
        except ValueError as exc:
            _common.notify_error(f"Load .expt: {_common.describe(exc)}")
            return None
        from .._still import read_model

        spots = self._spots_for(layer, source, spotfinder)

        def work(job):
            found = spots()
            shown, notes = read_model(path, found)
            return found, shown, notes

        self.index_status.value = f"reading {path.name}..."
        self._pending = (layer, spotfinder, path)
        return self._start("load", work)

    def _on_closed(self) -> None:
        """The dock or the viewer closed: end the work (touches no Qt object of the widget)."""
        self._closed = True
        if self._job is not None:
            self._job.cancel()
        self._poller.stop()
        with contextlib.suppress(ValueError, RuntimeError):
            self.state.events.observed.disconnect(self._show_observed)

    # ------------------------------------------------------ the timer's look
    def _poll(self) -> bool:
        job = self._job
        if job is None:
            return False
        taken = job.take()
        if taken is None:
            return True
        if taken.latest is not None:
            self._show_step(taken.latest)
        if taken.done:
            self._job = None
            kind = self._job_kind
            try:
                if taken.error is not None:
                    self._failed(kind, taken.error)
                elif taken.result is not None:
                    {"find spots": self._found, "index": self._indexed, "refine": self._refined, "load": self._loaded}[
                        kind
                    ](taken.result)
            finally:
                self._enable()
            return False
        return True

    def _failed(self, kind: str, error: BaseException) -> None:
        message = _common.describe(error)
        _common.notify_error(f"{kind.capitalize()}: {message}")
        target = self.readout if kind == "refine" else self.spots_status if kind == "find spots" else self.index_status
        target.value = f"failed: {message}" + ("\nthe model is unchanged" if kind == "refine" else "")
        if kind == "refine" and self.shown is not None:  # the predictions moved with the run: put them back
            self._show_model(self.shown)

    def _take_spots(self, found) -> None:
        """New spots of the frame: the strong spots layer, the count (and the model dropped
        if the spots changed)."""
        layer = self._pending[0]
        spotfinder = self._pending[1]
        if found is not self.found:
            self.found = found
            self._spot_settings = spotfinder
            self._frame_layer = layer
            self.model = self.shown = self.indexed = self.refined = None
            self._replace_layer(found.layer)
        shown = min(found.count, len(found.layer.data))
        capped = f" (the brightest {shown} drawn)" if shown < found.count else ""
        self.spots_status.value = f"{found.count} strong spots{capped}, found in {found.seconds:.1f} s"

    def _replace_layer(self, new_layer) -> None:
        viewer = self.viewer
        if viewer is None:
            return
        name = new_layer.name

        def replace():
            if name in viewer.layers:
                viewer.layers.remove(name)
            active = viewer.layers.selection.active
            viewer.add_layer(new_layer)
            if active is not None and active in viewer.layers:
                viewer.layers.selection.active = active

        self._poller.defer(replace)

    def _found(self, found) -> None:
        self._take_spots(found)
        if self.viewer is not None:
            self._poller.defer(lambda: self._remove(STILL_SPOTS))
        self.index_status.value = ""

    def _remove(self, name: str) -> None:
        if self.viewer is not None and name in self.viewer.layers:
            self.viewer.layers.remove(name)

    def _indexed(self, indexed) -> None:
        self._take_spots(indexed.found)
        self.indexed = indexed
        _LAST_USED["cell"], _LAST_USED["space_group"] = dict(self._pending[2]), self._pending[3]
        if indexed.status != "indexed" or indexed.shown is None:
            self.model = self.shown = None
            self.index_status.value = (
                f"no-lattice: {indexed.reason or 'no orientation indexes the spots'} "
                f"({indexed.n_spots} strong spots; {indexed.seconds:.1f} s)"
            )
            self._poller.defer(lambda: self._remove(STILL_SPOTS))
            self._poller.defer(self._colour_strong)
            return
        fraction = indexed.n_indexed / max(indexed.n_spots, 1)
        self.index_status.value = (
            f"indexed: {indexed.n_indexed} of {indexed.n_spots} strong spots ({100 * fraction:.0f} %), "
            f"RMSD {indexed.rmsd_px:.2f} px; {indexed.seconds:.1f} s\n" + _model_text(indexed.shown.model)
        )
        self._show_model(indexed.shown)

    def _show_model(self, shown) -> None:
        self.model, self.shown = shown.model, shown
        viewer = self.viewer
        if viewer is None:
            return
        self._poller.defer(lambda: show_spots(viewer, shown.predictions, shown.layer, name=STILL_SPOTS))
        self._poller.defer(self._colour_strong)

    def _colour_strong(self) -> None:
        """Colour the strong spots the model leaves unindexed (all plain without a model)."""
        from .._still import STRONG_SPOTS, strong_colors

        layer = find_layer(self.viewer, STRONG_SPOTS, "Points")
        if layer is None or not len(layer.data):
            return
        indexed = None if self.model is None else self.model.indexed
        layer.face_color = strong_colors(len(layer.data), indexed)

    def _loaded(self, outcome) -> None:
        found, shown, notes = outcome
        self._take_spots(found)
        path = self._pending[2]
        model = shown.model
        self.index_status.value = (
            f"model from {path.name}: {model.n_indexed} of {found.count} strong spots indexed, RMSD "
            f"{shown.rmsd_px:.2f} px over {shown.n_fitted}\n" + _model_text(model)
        )
        for note in notes:
            _common.notify_warning(f"Load .expt: {note}")
        self._showing = True
        try:  # the file's crystal fills the fields
            for name, value in zip(self.cell_fields, model.cell, strict=True):
                self.cell_fields[name].value = f"{value:.4g}"
            self.space_group.value = model.space_group
        finally:
            self._showing = False
        self._show_model(shown)

    def _show_step(self, item) -> None:
        """One iteration of the refinement: the readout and the plot now, the predictions
        layer at most every LAYER_INTERVAL_S."""
        step = item.step
        _qt.set_progress(self.progress, min(step.iteration, self.progress.max))
        self.history = list(item.history) or [(step.iteration, step.nll)]
        its, losses = zip(*self.history, strict=True)
        self.plot.set_points(its, losses)
        self.readout.value = _step_text(step, item.rmsd_px)
        now = time.perf_counter()
        if now - self._layers_shown_at < LAYER_INTERVAL_S:
            return
        self._layers_shown_at = now
        px = item.predicted_px
        viewer = self.viewer

        def move():
            layer = find_layer(viewer, STILL_SPOTS, "Points")
            if layer is not None and len(layer.data) == len(px):
                # the hkl labels wait for the run's end (``show_spots`` puts them back): moving
                # a screenful of text with the circles would redraw it all each time
                layer.text.visible = False
                layer.data = px

        self._poller.defer(move)

    def _refined(self, refined) -> None:
        self.refined = refined
        result = refined.refinement
        shown = refined.shown
        self.progress.native.setFormat(f"done after {result.iterations} evaluations")
        _qt.set_progress(self.progress, self.progress.max)
        self.readout.value = _refined_text(refined)
        self.index_status.value = (
            f"refined: {shown.model.n_indexed} of {self.found.count} strong spots indexed, RMSD "
            f"{shown.rmsd_px:.2f} px over {shown.n_fitted}\n" + _model_text(shown.model)
        )
        self._show_model(shown)


def _model_text(model) -> str:
    cell = " ".join(f"{x:.2f}" for x in model.cell[:3]) + " " + " ".join(f"{x:.1f}" for x in model.cell[3:])
    text = f"cell {cell} ({model.space_group})"
    experiment = model.experiment
    if experiment.half_mosaicity_deg is not None and experiment.domain_size_A is not None:
        text += f"\nmosaic {2 * experiment.half_mosaicity_deg:.3f} deg, domain {experiment.domain_size_A:.0f} Å"
    return text


def _step_text(step, rmsd) -> str:
    cell = " ".join(f"{x:.3f}" for x in step.cell[:3])
    return "\n".join(
        [
            f"iteration {step.iteration}",
            f"{'-log L':<12}{step.nll:>14.7g}",
            f"{'mosaic':<12}{step.mosaic_deg:>10.4f} deg",
            f"{'domain':<12}{step.domain_size_A:>10.0f} Å",
            f"{'a b c':<12}{cell} Å",
            f"{'distance':<12}{step.geometry.distance_mm():>10.2f} mm",
            f"{'RMSD':<12}{rmsd:>10.2f} px",
        ]
    )


def _refined_text(refined) -> str:
    result = refined.refinement
    lines = []
    if refined.spot_stage:
        lines.append("fitted to the spot positions, then to the pixels")
    if refined.stopped:
        lines.append(f"stopped after {result.iterations} evaluations: the best parameters so far")
    lines.append(
        f"-log L {result.initial_nll:.7g} -> {result.final_nll:.7g} over {result.n_reflections} spots "
        f"({result.n_pixels} pixels)"
    )
    lines.append(
        "the refined model predicts the spots at least as well: it is the model"
        if result.accepted
        else f"{result.message}; its mosaicity is the refined one"
    )
    lines.append(f"spots RMSD {result.rmsd_before_px:.2f} -> {result.rmsd_after_px:.2f} px")
    lines.append("value ± standard error")
    for name, label, unit in (
        ("mosaic_spread_deg", "mosaic", "deg"),
        ("domain_size_A", "domain", "Å"),
        ("pixel_distance_shift_mm", "distance shift", "mm"),
        ("pixel_shift_fast_px", "beam fast", "px"),
        ("pixel_shift_slow_px", "beam slow", "px"),
    ):
        entry = result.parameters.get(name)
        if entry is not None:
            lines.append(f"{label:<15}{entry['value']:>9.4g} ± {_sigma(entry['sigma'])} {unit}")
    for name, entry in result.parameters.items():
        if name.startswith("pixel_cell_"):
            lines.append(f"{'cell ' + name[len('pixel_cell_') :]:<15}{entry['value']:>9.4f} ± {_sigma(entry['sigma'])}")
    return "\n".join(lines)


def _sigma(value) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "?"
    return f"{value:.2g}" if np.isfinite(value) else "?"
