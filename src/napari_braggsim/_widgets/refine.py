"""Refine dock widget: run braggsim's Refiner in the background and follow it live.

The run belongs to a :class:`~napari_braggsim._jobs.RefineController` (no Qt): the
refiner is built and run in its thread, which keeps only the newest state (and the loss
of every iteration).  A timer looks at it once per frame interval and redraws once: the
``predicted`` and ``residual`` layers, the readout, the progress bar and the loss plot
(a QPainter line, no matplotlib redraw).  However fast the refiner goes, the
GUI never queues more than one redraw, so Stop acts within one iteration.

The observed layer and the mask are layer pickers (napari fills them from the layer list);
the detector size and geometry are taken from the observed layer's metadata at Run, so a
frame opened any way can be refined.  Mask convention (``_frames``): label 1 = excluded.
Starting values are the viewer's shared model; Apply writes the refined values back into
it (clipped to the fields' ranges, with a warning saying what was changed).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time

import napari.layers
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, Label, ProgressBar, PushButton, create_widget
from qtpy.QtCore import QTimer

from .. import _common, _warmup
from .._fields import (
    DEFAULT_GROUPS,
    REFINE_OPTIONS,
    REFINER_STARTS,
    format_value,
    make_field,
    read_field,
    registry,
    spec,
    write_field,
)
from .._fields import groups as parameter_groups
from .._frames import mask_layer_for
from .._jobs import Job, RefineController, RefineProgress
from .._layers import PREDICTED, RESIDUAL, show_residual, upsert_image
from .._model import apply_refined, clipped_to_fields, complete, geometry_from_metadata
from .._state import BraggsimState, state_for
from . import _qt
from ._plot import LossPlot

PREVIEW_DEBOUNCE_MS = 300
LAYER_INTERVAL_S = 0.2  # a canvas repaint is the GUI's costliest step; at most 5 a second
LOSSES = {"mse": "mean squared difference", "poisson": "Poisson negative log-likelihood (counts)"}
OPTIMIZERS = {
    "auto": "staged L-BFGS after a coarse misset search (the default strategy)",
    "adam": "Adam, all parameters at once",
    "lbfgs": "L-BFGS, all parameters at once",
}


class RefineWidget(Container):
    def __init__(self, napari_viewer=None):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.state: BraggsimState = state_for(napari_viewer) if napari_viewer is not None else BraggsimState()
        self.controller = RefineController()
        self.result = None
        self.history: list = []  # (iteration, loss) of the current run, as far as shown
        self._run_values: dict | None = None  # the fixed model of the current / last run
        self._layers_shown_at = -math.inf
        self._showing = False
        _warmup.start()

        self.observed = create_widget(
            annotation=napari.layers.Image,
            name="observed",
            label="observed layer",
            options={"tooltip": "The frame to refine against; its metadata gives the detector geometry."},
        )
        self.mask = create_widget(
            annotation=napari.layers.Labels,
            name="mask",
            label="mask layer",
            options={
                "nullable": True,
                "tooltip": "Labels layer of excluded pixels (label 1 = excluded, 0 = used); "
                "a frame's own '<name> mask' is picked with it.",
            },
        )
        self.run_button = PushButton(
            name="run_button", text="Run", tooltip="Start refining in the background.", enabled=False
        )
        self.stop_button = PushButton(
            name="stop_button",
            text="Stop",
            enabled=False,
            tooltip="End the run after the current iteration, keeping the best parameters.",
        )
        self.progress = ProgressBar(name="progress", label="progress", min=0, max=60, value=0)
        self.progress.native.setFormat("iteration %v / %m")
        buttons = Container(widgets=[self.run_button, self.stop_button], layout="horizontal", labels=False)
        self.extend([self.observed, self.mask, buttons, self.progress])

        self.loss = ComboBox(
            name="loss",
            label="loss",
            choices=list(LOSSES),
            value="mse",
            tooltip="\n".join(f"{k}: {v}" for k, v in LOSSES.items()) + "\nbraggsim refine --loss",
        )
        self.optimizer = ComboBox(
            name="optimizer",
            label="optimizer",
            choices=list(OPTIMIZERS),
            value="auto",
            tooltip="\n".join(f"{k}: {v}" for k, v in OPTIMIZERS.items()) + "\nbraggsim refine --optimizer",
        )
        self.search_deg = make_field(REFINE_OPTIONS["search_deg"], 4.0)
        self.iterations = make_field(REFINE_OPTIONS["iterations"], 60)
        self.readout = Label(name="readout", value="")
        self.errors = Label(name="result", value="")
        for label in (self.readout, self.errors):
            label.native.setWordWrap(True)
            label.native.setStyleSheet("font-family: monospace;")
        self.apply_button = PushButton(
            name="apply_button",
            text="Apply refined values to Simulate",
            enabled=False,
            tooltip="Make the refined values the model (the Simulate fields and the next run's start); "
            "values outside a field's range are clipped, misset angles wrapped.",
        )
        self.resolution = Label(name="resolution", value="", tooltip="d-spacing under the cursor")

        self.checks: dict = {}  # group -> tick box, made once braggsim is loaded (_build_parameters)
        self.starts: dict = {}  # parameter -> starting-value field
        self._specs: dict = {}
        self._loading = Label(value="<b>Parameters</b>: loading braggsim (torch)...")
        self.plot = LossPlot()
        options = Container(name="options", widgets=[self.loss, self.optimizer, self.search_deg, self.iterations])
        self.body = Container(name="body", labels=False, widgets=[options, self.readout])
        self.body.native.layout().addWidget(self.plot)
        self.body.extend([self.errors, self.apply_button, self.resolution, self._loading])
        _qt.add_scrolling(self, self.body)
        _qt.fit_width(self)

        self._poller = _qt.Poller(self._poll)
        self._run_active = False  # from Run until its result is shown
        self._closed = False
        self._preview_job = None
        self._preview_timer = QTimer()
        self._preview_timer.setSingleShot(True)
        self._preview_timer.setInterval(PREVIEW_DEBOUNCE_MS)
        self._preview_timer.timeout.connect(self.preview)
        self.run_button.changed.connect(lambda *_: self.run())
        self.stop_button.changed.connect(lambda *_: self.stop())
        self.apply_button.changed.connect(lambda *_: self.apply_to_simulate())
        self.observed.changed.connect(self._on_observed_changed)
        self.state.events.values.connect(self._show_values)
        self.state.events.observed.connect(self._show_observed)
        self.state.events.resolution.connect(self._show_resolution)
        self.state.events.values.connect(self._schedule_preview)
        self.state.events.observed.connect(self._schedule_preview)
        _qt.stop_when_closed(self, self._on_closed)
        if self.viewer is not None:
            from .. import _viewer_hooks

            _viewer_hooks.install(self.viewer)
        _qt.when_core_ready(self._build_parameters)

    @property
    def ready(self) -> bool:
        """True once the parameter fields are made (braggsim loaded in the background)."""
        return bool(self.checks)

    def _build_parameters(self) -> None:
        """A tick box per refinement group and a starting-value field per parameter, from
        the registry (``braggsim.refine.PARAMETER_GROUPS`` / ``PARAMETERS``)."""
        self._specs = registry()
        containers = []
        for group, names in parameter_groups().items():
            check = CheckBox(
                name=f"refine_{group}",
                text=f"refine {group.replace('_', ' ')}",
                value=group in DEFAULT_GROUPS,
                tooltip=f"Refine {', '.join(self._specs[name].label for name in names)}; "
                "the fields below are the starting values.",
            )
            self.checks[group] = check
            members = [check]
            for name in names:
                field = make_field(self._specs[name], self._start_of(name))
                if name in self.state.values:
                    field.changed.connect(self._on_start_changed)
                self.starts[name] = field
                members.append(field)
            containers.append(Container(name=group, widgets=members))
        heading = Label(value="<b>Parameters</b> (tick to refine; starting values)")
        self.body.remove(self._loading)
        self.body.extend([heading, *containers])
        self.run_button.enabled = not self._run_active
        self._schedule_preview()

    def _start_of(self, name: str) -> float:
        """A parameter's start: the model's value, or the refiner's neutral value for the
        parameters the model does not hold (scale 1, background 0)."""
        return float(self.state.values.get(name, REFINER_STARTS.get(name, 0.0)))

    # ------------------------------------------------------------------ layers
    def reset_choices(self, *_):
        """napari calls this when layers come and go (and magicgui when the widget docks);
        the pickers are refilled and the observed layer agrees with the state after it."""
        try:
            super().reset_choices()
            self.body.reset_choices()
        except RuntimeError:  # the Qt side is gone (viewer closing)
            return
        wanted = self.state.observed
        try:
            if wanted is not None and wanted in self.observed.choices:
                if self.observed.value is not wanted:
                    self._show_observed(wanted)
            elif self.observed.value is not wanted:
                self.state.observe(self.observed.value)  # the state's layer is gone, or there was none
        except RuntimeError:  # the Qt side is gone (viewer closing)
            pass
        if self.state.observed is not None and PREDICTED not in self._viewer_layer_names():
            self._schedule_preview(at_once=True)

    def _viewer_layer_names(self) -> list:
        return [] if self.viewer is None else [layer.name for layer in self.viewer.layers]

    # --------------------------------------------------------- the preview
    def _schedule_preview(self, *_, at_once: bool = False) -> None:
        if self._run_active or self.viewer is None or self._closed:
            return
        with contextlib.suppress(RuntimeError):
            self._preview_timer.start(0 if at_once else PREVIEW_DEBOUNCE_MS)

    def preview(self):
        """Simulate the starting model in the background and show it in ``predicted`` (and
        ``residual``) before any run, so a run only updates layers that exist.  Returns the
        Job, or None when there is nothing to show."""
        if self._run_active or self.viewer is None:
            return None
        try:
            plan = self.prepare(need_groups=False)
        except (ValueError, RuntimeError):  # Run says why; a preview stays quiet (or the dock is gone)
            return None
        self._preview_job = Job(lambda job: _preview(plan, job.cancelled), name="braggsim refine preview").start()
        self._poller.start()
        return self._preview_job

    def _show_preview(self, outcome) -> None:
        predicted, limits, residual, bound, values, overlays = outcome
        viewer = self.viewer

        def show_predicted():
            layer = upsert_image(
                viewer, PREDICTED, predicted, contrast_limits=limits, colormap="magenta", blending="additive"
            )
            layer.metadata["braggsim_model"] = values  # the start: it saves as SMV with its geometry
            layer.metadata.pop("braggsim_parameters", None)

        self._poller.defer(show_predicted)
        if residual is not None:
            self._poller.defer(lambda: show_residual(viewer, residual, bound))
        if overlays is not None and self.state.overlays:
            from .._layers import overlay_steps

            for step in overlay_steps(viewer, overlays):
                self._poller.defer(step)

    def _on_observed_changed(self, layer) -> None:
        if self._showing:
            return
        self.state.observe(layer)

    def _show_observed(self, layer) -> None:
        """The state's observed layer -> the picker, and its mask -> the mask picker."""
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

    def _on_start_changed(self, *_):
        if self._showing:
            return
        changes = {
            name: read_field(self._specs[name], field)
            for name, field in self.starts.items()
            if name in self.state.values
        }
        self.state.update_values(changes)

    def _show_values(self, values: dict) -> None:
        self._showing = True
        try:
            for name, field in self.starts.items():
                if name in values:
                    write_field(self._specs[name], field, values[name])
        except RuntimeError:
            pass
        finally:
            self._showing = False

    def _show_resolution(self, text: str) -> None:
        with contextlib.suppress(RuntimeError):
            self.resolution.value = text

    def set_start_values(self, values) -> None:
        """Starting values into the fields and the model (``scale`` and the other
        parameters the model does not hold only into their fields)."""
        for name, value in values.items():
            if name not in self.state.values and name in self.starts and value is not None:
                write_field(self._specs[name], self.starts[name], value)
        self.state.update_values({k: v for k, v in values.items() if k in self.state.values and v is not None})

    # -------------------------------------------------------------- the run
    @property
    def running(self) -> bool:
        """True from Run until the run's result is shown."""
        return self._run_active

    @property
    def busy(self) -> bool:
        """True while a run or a preview is going or its layers wait to be shown."""
        waiting = self._preview_timer.isActive()
        return self._run_active or self._preview_job is not None or waiting or self._poller.active

    def _group_names(self, group: str) -> list:
        return [name for name in self.starts if name in parameter_groups().get(group, [])]

    def selected_groups(self) -> list:
        return [group for group, check in self.checks.items() if check.value]

    def prepare(self, need_groups: bool = True) -> dict:
        """Everything a run needs, checked on the GUI thread with numpy only: the observed
        image, the trusted-pixel mask, the groups and the model values (with the
        geometry and detector size of the observed layer).  ValueError on bad input."""
        layer = self.observed.value
        if layer is None:
            raise ValueError("choose an observed image layer")
        observed = np.asarray(layer.data)
        if observed.ndim != 2:
            raise ValueError(f"observed layer {layer.name!r} must be a 2-D image, got shape {observed.shape}")
        trusted = None
        mask_layer = self.mask.value
        if mask_layer is not None:
            excluded = np.asarray(mask_layer.data)
            if excluded.shape != observed.shape:
                raise ValueError(
                    f"mask layer {mask_layer.name!r} is {excluded.shape[0]}x{excluded.shape[1]} but the observed "
                    f"layer {layer.name!r} is {observed.shape[0]}x{observed.shape[1]}"
                )
            trusted = excluded == 0
        used = observed if trusted is None else observed[trusted]
        if not np.isfinite(used).all():
            raise ValueError(
                f"observed layer {layer.name!r} has NaN or infinite pixels that the mask does not exclude; "
                "label them 1 in the mask layer"
            )
        groups = self.selected_groups()
        if not groups and need_groups:
            raise ValueError("tick at least one parameter group to refine")
        values = complete({**self.state.values, **geometry_from_metadata(layer.metadata, observed.shape)})
        return {
            "layer": layer,
            "observed": observed,
            "trusted": trusted,
            "groups": groups,
            "values": values,
            "initial": {  # the refined parameters the model does not hold (scale, background)
                name: float(read_field(self._specs[name], self.starts[name]))
                for group in groups
                for name in self._group_names(group)
                if name not in values
            },
            "loss": self.loss.value,
            "optimizer": self.optimizer.value,
            "search_deg": float(self.search_deg.value),
            "max_iter": int(self.iterations.value),
            "overlays": bool(self.state.overlays),
        }

    def run(self):
        """Start a run in the background; returns the controller's Job, or None after a
        notification."""
        if self.running:
            return None
        try:
            plan = self.prepare()
        except ValueError as exc:
            _common.notify_error(f"Refine: {_common.describe(exc)}")
            return None
        from .._layers import hide_overlays

        self._run_active = True
        self._preview_timer.stop()
        if self._preview_job is not None:  # a preview still on its way is dropped, its overlays not built
            self._preview_job.cancel()
        self._preview_job = None
        hide_overlays(self.viewer)  # the last run's spots would show the old solution
        self._run_values = plan["values"]
        self.result = None
        self.history = []
        self.errors.value = ""
        self.readout.value = _starting_text(plan)
        self.progress.max = plan["max_iter"]
        _qt.set_progress(self.progress, 0)
        self.progress.native.setFormat("iteration %v / %m")
        self._draw_plot()
        self.run_button.enabled = False
        self.stop_button.enabled = True
        self.apply_button.enabled = False
        job = self.controller.start(
            lambda: _make_refiner(plan),
            plan["max_iter"],
            observed=plan["observed"],
            after=_overlays_after if plan["overlays"] else None,
        )
        self._poller.start()
        return job

    def stop(self):
        """End the run after the current iteration (its result still arrives)."""
        if not self.running:
            return
        self.controller.stop()
        self.stop_button.enabled = False
        self.readout.value = self.readout.value + "\nstopping..."

    def wait(self, timeout_s: float = 5.0) -> bool:
        """Block (processing no events) until the run's thread has ended."""
        return True if self.controller.job is None else self.controller.job.wait(timeout_s)

    def _on_closed(self) -> None:
        """The dock or the viewer closed: stop the run (touches no Qt object of the widget)."""
        self.controller.stop()
        self._poller.stop()
        self._closed = True
        if self._preview_job is not None:  # its thread stops after the image it is on
            self._preview_job.cancel()
        with contextlib.suppress(RuntimeError):
            self._preview_timer.stop()
        for signal, slot in (
            (self.state.events.values, self._show_values),
            (self.state.events.observed, self._show_observed),
            (self.state.events.resolution, self._show_resolution),
            (self.state.events.values, self._schedule_preview),
            (self.state.events.observed, self._schedule_preview),
        ):
            with contextlib.suppress(ValueError, RuntimeError):
                signal.disconnect(slot)

    # ------------------------------------------------------ the timer's look
    def _poll(self) -> bool:
        """The newest state since the last look: the cheap readouts now, each layer on
        a later tick of its own.  False once nothing is left to look at."""
        if self._preview_job is not None:
            taken = self._preview_job.take()
            if taken is not None and taken.done:
                self._preview_job = None
                if taken.error is None and taken.result is not None and not self._run_active:
                    self._show_preview(taken.result)
        if self._run_active:
            taken = self.controller.take()
            if taken is not None:
                if taken.latest is not None:
                    self._show_progress(taken.latest)
                if taken.done:
                    self._run_active = False
                    self._finish(taken)
        return self._run_active or self._preview_job is not None

    def _show_progress(self, progress: RefineProgress) -> None:
        state = progress.state
        _qt.set_progress(self.progress, min(state.iteration + 1, self.progress.max))
        self.readout.value = _format_state(state)
        history = self.controller.history()
        if len(history) != len(self.history):
            self.history = history
            self._draw_plot()
        viewer = self.viewer
        if state.predicted is None or viewer is None:
            return
        now = time.perf_counter()
        if state.stage != "done" and now - self._layers_shown_at < LAYER_INTERVAL_S:
            return  # the readout and the plot follow every look; the layers a few times a second
        self._layers_shown_at = now
        predicted = state.predicted
        model = apply_refined(self._run_values, state.parameters)
        parameters = dict(state.parameters)

        final = state.stage == "done"

        def show_predicted():
            low, high = float(np.min(predicted)), float(np.max(predicted))
            layer = upsert_image(
                viewer,
                PREDICTED,
                predicted,
                contrast_limits=(low, high),
                follow_contrast=final,
                colormap="magenta",
                blending="additive",
            )
            layer.metadata["braggsim_parameters"] = parameters
            layer.metadata["braggsim_model"] = model  # the full model of this image: it saves as SMV

        self._poller.defer(show_predicted)
        if progress.residual is None:
            return
        residual, bound = progress.residual, progress.residual_bound
        shown = RESIDUAL in viewer.layers and viewer.layers[RESIDUAL].visible
        if final or shown:  # a hidden residual waits for the last state
            self._poller.defer(lambda: show_residual(viewer, residual, bound, follow_contrast=final))

    def _finish(self, taken) -> None:
        self.history = self.controller.history()
        self._draw_plot()
        self.run_button.enabled = True
        self.stop_button.enabled = False
        if taken.error is not None:
            self.readout.value = f"failed: {_common.describe(taken.error)}"
            _common.notify_error(f"Refine: {_common.describe(taken.error)}")
            return
        result, overlays = taken.result
        self.result = result
        if result is None:
            self.readout.value = self.readout.value.replace("stopping...", "stopped before the first iteration")
            return
        self.state.result = result
        self.errors.value = _format_result(result)
        self.progress.native.setFormat(f"{result.status} after {len(result.history)} iterations")
        if result.status == "converged":
            _qt.set_progress(self.progress, self.progress.max)
        self.apply_button.enabled = bool(result.parameters)
        if result.status == "failed":
            _common.notify_error(f"Refine: {result.message or 'the refinement failed'}")
        if overlays is not None and self.viewer is not None and self.state.overlays:
            from .._layers import overlay_steps

            data, error = overlays
            if error is not None:
                _common.notify_error(f"Overlays: {_common.describe(error)}")
            elif data is not None:
                for step in overlay_steps(self.viewer, data):
                    self._poller.defer(step)

    def _draw_plot(self, force: bool = False) -> None:
        """The loss plot's line (a cheap repaint; see ``_plot``)."""
        if self.history:
            its, losses = zip(*self.history, strict=True)
        else:
            its, losses = (), ()
        self.plot.set_points(its, losses)

    # --------------------------------------------------------------- apply
    def apply_to_simulate(self) -> dict:
        """Refined values -> the shared model (the Simulate fields show it); returns the
        values applied.  Values outside a field's range are clipped (misset angles wrap)
        and a warning says which."""
        if self.result is None or not self.result.parameters:
            return {}
        refined = apply_refined(self._run_values or self.state.values, self.result.parameters)
        values, notes = clipped_to_fields(refined)
        self.state.update_values(values)
        if notes:
            _common.notify_warning("Apply: " + "; ".join(notes))
        return values


def _preview(plan: dict, cancelled: threading.Event):
    """(predicted float32, contrast limits, residual or None, its bound, model values,
    OverlayData or None) of the starting model, or None once ``cancelled`` is set (a run
    started or the dock closed: the overlays of a big frame are not built for nobody);
    runs in a worker thread."""
    import torch

    import braggsim

    from .._model import build_model

    with torch.no_grad():
        predicted = braggsim.simulate(*build_model(plan["values"])).numpy().astype(np.float32, copy=False)
    predicted = predicted * np.float32(plan["initial"].get("scale", 1.0))
    predicted = predicted + np.float32(plan["initial"].get("background", 0.0))
    if cancelled.is_set():
        return None
    limits = (float(predicted.min()), float(predicted.max()))
    residual, bound = None, 1.0
    if predicted.shape == plan["observed"].shape:
        residual = np.asarray(plan["observed"], dtype=np.float32) - predicted
        finite = np.abs(residual[np.isfinite(residual)])
        bound = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    overlays = None
    if plan["overlays"] and not cancelled.is_set():
        from .._layers import overlay_data

        try:
            overlays = overlay_data(*build_model(plan["values"]), with_layers=True)
        except Exception:  # noqa: BLE001  a preview without overlays is still a preview
            overlays = None
    return predicted, limits, residual, bound, dict(plan["values"]), overlays


def _make_refiner(plan: dict):
    """The Refiner for a prepared plan; runs in the controller's thread."""
    from braggsim.refine import Refiner

    from .._model import build_model

    crystal, detector, beam = build_model(plan["values"])
    return Refiner(
        crystal,
        detector,
        beam,
        plan["observed"],
        plan["trusted"],
        refine=tuple(plan["groups"]),
        loss=plan["loss"],
        optimizer=plan["optimizer"],
        initial=plan["initial"] or None,
        search_deg=plan["search_deg"],
    )


def _overlays_after(result):
    """(OverlayData or None, error or None) for the refined model; in the controller's thread."""
    if getattr(result, "crystal", None) is None:
        return None, None
    from .._layers import overlay_data

    try:
        return overlay_data(result.crystal, result.detector, result.beam, with_layers=True), None
    except Exception as exc:  # noqa: BLE001  the result stands; the overlays' failure is a message
        return None, exc


def _starting_text(plan: dict) -> str:
    """What the run does before its first state arrives (the search yields none)."""
    axes = sum(name.startswith("misset_") for group in plan["groups"] for name in parameter_groups()[group])
    if plan["optimizer"] == "auto" and plan["search_deg"] > 0 and axes:
        return (
            f"starting: trying {3**axes} misset starts {plan['search_deg']:g} deg apart "
            f"({3**axes - 1} simulations), then refining..."
        )
    return "starting..."


def _label(name: str) -> str:
    try:
        return spec(name).label
    except KeyError:
        return name


def _format_state(state) -> str:
    lines = [f"iteration {state.iteration}, stage {state.stage}", f"{'loss':<14}{state.loss:>13.5g}"]
    lines += [f"{_label(name):<14}{format_value(name, value):>13}" for name, value in state.parameters.items()]
    if state.message:
        lines.append(state.message)
    return "\n".join(lines)


def _format_result(result) -> str:
    from braggsim.refine import format_summary

    return format_summary(
        result, row=lambda name, value, error: f"{_label(name):<14}{format_value(name, value):>13} ± {error:.2g}"
    )
