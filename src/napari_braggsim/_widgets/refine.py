"""Refine dock widget: run braggsim's Refiner in a napari thread_worker and follow it live.

Each yielded RefineState is handled on the GUI thread: the ``predicted`` layer is updated
in place, the parameter readout and the loss-vs-iteration plot are redrawn, and the
progress bar advances.  Stop asks the refiner to end between iterations (so the result
and its standard errors still arrive); closing the dock or the viewer also quits the
worker and waits briefly for its thread.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading

import numpy as np
from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import QLabel, QProgressBar, QScrollArea, QVBoxLayout, QWidget

from .. import _common
from .._model import DEFAULTS, apply_refined, build_model, start_values, values_from_layer

PREDICTED = "predicted"
NO_MASK = "(none)"
STOP_GRACE_MS = 10000  # after Stop, quit the worker if the refiner has not ended by then

# group -> [(parameter, label with unit, min, max, step, decimals)]
GROUPS = {
    "mosaic": [("mosaic_spread_deg", "mosaic spread (deg)", 0.0, 90.0, 0.05, 4)],
    "misset": [
        ("misset_x_deg", "misset x (deg)", -360.0, 360.0, 0.5, 4),
        ("misset_y_deg", "misset y (deg)", -360.0, 360.0, 0.5, 4),
        ("misset_z_deg", "misset z (deg)", -360.0, 360.0, 0.5, 4),
    ],
    "cell": [
        ("cell_a_A", "a (Å)", 1.0, 10000.0, 0.5, 3),
        ("cell_b_A", "b (Å)", 1.0, 10000.0, 0.5, 3),
        ("cell_c_A", "c (Å)", 1.0, 10000.0, 0.5, 3),
        ("cell_alpha_deg", "α (deg)", 1.0, 179.0, 0.5, 3),
        ("cell_beta_deg", "β (deg)", 1.0, 179.0, 0.5, 3),
        ("cell_gamma_deg", "γ (deg)", 1.0, 179.0, 0.5, 3),
    ],
    "N": [
        ("N_a", "N_a (cells)", 1.0, 1000.0, 1.0, 3),
        ("N_b", "N_b (cells)", 1.0, 1000.0, 1.0, 3),
        ("N_c", "N_c (cells)", 1.0, 1000.0, 1.0, 3),
    ],
    "distance": [("distance_mm", "distance (mm)", 0.1, 10000.0, 1.0, 4)],
    "beam_center": [
        ("beam_x_mm", "beam Xbeam (mm)", -1000.0, 1000.0, 0.05, 4),
        ("beam_y_mm", "beam Ybeam (mm)", -1000.0, 1000.0, 0.05, 4),
    ],
    "scale": [("scale", "scale (×)", 1e-6, 1e6, 0.1, 5)],
}
DEFAULT_GROUPS = ("mosaic", "misset")
UNITS = {name: label[label.find("(") + 1 : -1] for rows in GROUPS.values() for name, label, *_ in rows}


class _Run:
    """One refinement run, shared with module-level cleanup (which must not touch Qt
    objects that may already be deleted)."""

    def __init__(self, refiner, max_iter: int):
        self.refiner = refiner
        self.max_iter = max_iter
        self.worker = None
        self.done = threading.Event()  # set when the worker's generator has exited

    def states(self):
        try:
            yield from self.refiner.run(max_iter=self.max_iter)
            return self.refiner.result
        finally:
            self.done.set()


def abort_run(run: _Run | None, wait_s: float = 3.0) -> bool:
    """Ask the refiner to stop and wait up to ``wait_s`` for the worker's generator to
    end; only if it does not, quit the worker (which abandons the generator).  True if
    the generator ended (or never started).

    The worker keeps pulling states until the refiner returns: quitting it first would
    leave the generator suspended inside ``Refiner.run``."""
    if run is None:
        return True
    run.refiner.stop()
    if run.worker is None or run.done.wait(wait_s):
        return True
    with contextlib.suppress(RuntimeError):  # the worker's QObject is already gone
        run.worker.quit()
    return False


def _abort_all(runs: list, *_):
    for run in list(runs):
        abort_run(run)


class _CloseWatcher(QObject):
    """Stops the run when the viewer's main window closes."""

    def __init__(self, runs: list, parent=None):
        super().__init__(parent)
        self._runs = runs

    def eventFilter(self, obj, event):
        if event.type() == QEvent.Close:
            _abort_all(self._runs)
        return False


class RefineWidget(QWidget):
    def __init__(self, napari_viewer=None, parent=None):
        super().__init__(parent)
        from magicgui.widgets import CheckBox, ComboBox, Container, Label, PushButton, SpinBox

        self.viewer = napari_viewer
        self._runs: list = []  # plain list shared with the cleanup callbacks
        self.run_state: _Run | None = None
        self.result = None
        self.history: list = []  # (iteration, loss)
        self._base_values = dict(DEFAULTS)

        self.observed = ComboBox(name="observed", label="observed layer", choices=self._image_layer_names)
        self.mask = ComboBox(name="mask", label="mask layer (1 = use)", choices=self._mask_layer_names)
        self.observed.changed.connect(self._on_observed_changed)

        self.checks: dict = {}
        self.starts: dict = {}
        start = start_values()
        groups = []
        for group, rows in GROUPS.items():
            check = CheckBox(
                name=f"refine_{group}", text=f"refine {group.replace('_', ' ')}", value=group in DEFAULT_GROUPS
            )
            self.checks[group] = check
            members = [check]
            for key, label, low, high, step, decimals in rows:
                spin = _common.number_box(key, f"start {label}", low, high, step, decimals, start.get(key, 1.0))
                self.starts[key] = spin
                members.append(spin)
            groups.append(Container(name=group, widgets=members))

        self.loss = ComboBox(name="loss", label="loss", choices=["mse", "poisson"], value="mse")
        self.optimizer = ComboBox(name="optimizer", label="optimizer", choices=["auto", "adam", "lbfgs"], value="auto")
        self.iterations = SpinBox(name="iterations", label="iterations (max)", min=1, max=100000, value=60)
        # the refiner's orientation search (auto optimizer only): a misset grid of -s, 0, +s
        self.search_deg = _common.number_box("search_deg", "misset search step (deg, 0 = off)", 0.0, 30.0, 0.5, 2, 4.0)
        self.run_button = PushButton(name="run", text="Run")
        self.stop_button = PushButton(name="stop", text="Stop", enabled=False)
        self.apply_button = PushButton(name="apply", text="Apply refined values to Simulate", enabled=False)
        self.resolution = Label(name="resolution", value="")
        buttons = Container(widgets=[self.run_button, self.stop_button], layout="horizontal", labels=False)
        # run controls and live feedback first, so the plot stays in view; parameters below
        self.container = Container(
            widgets=[self.observed, self.mask, self.loss, self.optimizer, self.search_deg, self.iterations, buttons]
        )
        heading = Label(value="<b>Parameters</b> (tick to refine; starting values)")
        self.parameters = Container(name="parameters", widgets=[heading, *groups])

        self.progress = QProgressBar()
        self.progress.setFormat("iteration %v / %m")
        self.progress.setValue(0)
        self.readout = QLabel("")
        self.readout.setWordWrap(True)
        self.readout.setStyleSheet("font-family: monospace;")
        self.errors = QLabel("")
        self.errors.setWordWrap(True)
        self.errors.setStyleSheet("font-family: monospace;")
        self.figure, self.axes, self.canvas = _make_plot()

        inner = QWidget()
        inner_layout = QVBoxLayout(inner)
        inner_layout.addWidget(self.container.native)
        inner_layout.addWidget(self.progress)
        inner_layout.addWidget(self.canvas)
        inner_layout.addWidget(self.readout)
        inner_layout.addWidget(self.errors)
        inner_layout.addWidget(self.apply_button.native)
        inner_layout.addWidget(self.resolution.native)
        inner_layout.addWidget(self.parameters.native)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(inner)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scroll)

        self.run_button.changed.connect(lambda *_: self.run())
        self.stop_button.changed.connect(lambda *_: self.stop())
        self.apply_button.changed.connect(lambda *_: self.apply_to_simulate())

        # cleanup that survives the C++ widget: module-level callables over a plain list
        self.destroyed.connect(functools.partial(_abort_all, self._runs))
        self._close_watcher = None
        if self.viewer is not None:
            window = getattr(getattr(_common.unwrap(self.viewer), "window", None), "_qt_window", None)
            if window is not None:
                self._close_watcher = _CloseWatcher(self._runs, self)
                window.installEventFilter(self._close_watcher)
            layers = self.viewer.layers.events
            for event in (layers.inserted, layers.removed, layers.reordered):
                event.connect(self._refresh_choices)
            from .._layers import install_resolution_readout

            install_resolution_readout(self.viewer)
        _common.register(self)
        self._refresh_choices()

    # ------------------------------------------------------------------ layers
    def _layers_of(self, *kinds) -> list:
        if self.viewer is None:
            return []
        return [layer for layer in self.viewer.layers if layer.__class__.__name__ in kinds]

    def _image_layer_names(self, *_) -> list:
        skip = {PREDICTED, "residual"}
        return [layer.name for layer in self._layers_of("Image") if layer.name not in skip and layer.data.ndim == 2]

    def _mask_layer_names(self, *_) -> list:
        return [NO_MASK] + [layer.name for layer in self._layers_of("Labels", "Image") if layer.data.ndim == 2]

    def _refresh_choices(self, *_):
        try:
            self.observed.reset_choices()
            self.mask.reset_choices()
        except RuntimeError:  # widget already deleted while the viewer tears down
            pass

    def _layer(self, name):
        if self.viewer is None or name is None:
            return None
        for layer in self.viewer.layers:
            if layer.name == name:
                return layer
        return None

    def _on_observed_changed(self, name):
        layer = self._layer(name)
        if layer is not None:
            self.set_start_from_layer(layer)
            mask_name = layer.name + " mask"
            if mask_name in self.mask.choices:
                self.mask.value = mask_name

    def set_start_from_layer(self, layer) -> None:
        """Starting values and fixed model from the layer's metadata (frame geometry,
        braggsim_start / braggsim_model), over the Simulate widget's values if docked."""
        base = dict(DEFAULTS)
        from .simulate import SimulateWidget

        for sim in _common.siblings(self.viewer, SimulateWidget):
            with contextlib.suppress(ValueError):
                base = sim.values()
        self._base_values = values_from_layer(layer.metadata, layer.data.shape, base)
        self.set_start_values(self._base_values)

    def set_geometry_from_layer(self, layer) -> None:
        self.set_start_from_layer(layer)

    def set_start_values(self, values) -> None:
        for key, value in values.items():
            if key in self.starts and value is not None:
                self.starts[key].value = float(value)

    def show_resolution(self, text: str) -> None:
        self.resolution.value = text

    # -------------------------------------------------------------- the run
    @property
    def running(self) -> bool:
        return self.run_state is not None

    def selected_groups(self) -> list:
        return [group for group, check in self.checks.items() if check.value]

    def _model_values(self) -> dict:
        values = dict(self._base_values)
        for key, spin in self.starts.items():
            if key != "scale":
                values[key] = float(spin.value)
        return values

    def build_refiner(self):
        """Refiner for the current choices; ValueError with a readable message on bad input."""
        layer = self._layer(self.observed.value)
        if layer is None:
            raise ValueError("choose an observed image layer")
        observed = np.asarray(layer.data, dtype=np.float64)
        if observed.ndim != 2:
            raise ValueError(f"observed layer {layer.name!r} must be a 2-D image, got shape {observed.shape}")
        if not np.isfinite(observed).all():
            raise ValueError(f"observed layer {layer.name!r} contains NaN or infinite pixels; mask them instead")
        mask = None
        mask_layer = self._layer(self.mask.value) if self.mask.value != NO_MASK else None
        if mask_layer is not None:
            mask = np.asarray(mask_layer.data) > 0
            if mask.shape != observed.shape:
                raise ValueError(f"mask layer shape {mask.shape} differs from the observed image {observed.shape}")
        groups = self.selected_groups()
        if not groups:
            raise ValueError("tick at least one parameter group to refine")
        values = self._model_values()
        model_shape = (int(values["spixels"]), int(values["fpixels"]))
        if model_shape != observed.shape:
            raise ValueError(
                f"shape mismatch: the model detector is {model_shape[0]}x{model_shape[1]} pixels but the observed "
                f"layer {layer.name!r} is {observed.shape[0]}x{observed.shape[1]}"
            )
        crystal, detector, beam = build_model(values)
        initial = {"scale": float(self.starts["scale"].value)} if "scale" in groups else None
        from braggsim.refine import Refiner

        refiner = Refiner(
            crystal,
            detector,
            beam,
            observed,
            mask,
            refine=tuple(groups),
            loss=self.loss.value,
            optimizer=self.optimizer.value,
            initial=initial,
            search_deg=float(self.search_deg.value),
        )
        return refiner, observed, (crystal, detector, beam)

    def run(self):
        """Start a run in a thread_worker; returns the worker, or None after notifying."""
        if self.running:
            return None
        try:
            refiner, observed, model = self.build_refiner()
        except Exception as exc:  # noqa: BLE001  any failure becomes a message, never a traceback
            _common.notify_error(f"Refine: {_common.describe(exc)}")
            return None
        from napari.qt.threading import create_worker

        run = _Run(refiner, int(self.iterations.value))
        run.observed = observed
        run.model = model
        run.values = self._model_values()  # the fixed model the refined values apply to
        # errored given through _connect, so the worker does not also re-raise the
        # exception into the Qt event loop (a console traceback)
        worker = create_worker(run.states, _start_thread=False, _connect={"errored": self._on_error})
        run.worker = worker
        self.run_state = run
        self._runs.append(run)
        self.result = None
        self.history = []
        self.errors.setText("")
        self.readout.setText(_starting_text(refiner))
        self.progress.setRange(0, run.max_iter)
        self.progress.setFormat("iteration %v / %m")
        self.progress.setValue(0)
        self._redraw_plot()
        self.run_button.enabled = False
        self.stop_button.enabled = True
        self.apply_button.enabled = False
        worker.yielded.connect(self._on_state)
        worker.returned.connect(self._on_result)
        worker.finished.connect(functools.partial(self._on_finished, run))
        worker.start()
        return worker

    def stop(self):
        """End the run between iterations; quit the worker if it does not end soon."""
        run = self.run_state
        if run is None:
            return
        run.refiner.stop()
        self.stop_button.enabled = False
        self.readout.setText(self.readout.text() + "\nstopping...")
        QTimer.singleShot(STOP_GRACE_MS, functools.partial(_quit_if_running, run))

    def wait(self, timeout_s: float = 5.0) -> bool:
        """Block (processing no events) until the current run's thread is done."""
        run = self.run_state
        return True if run is None else run.done.wait(timeout_s)

    # ------------------------------------------------------ GUI-thread slots
    def _on_state(self, state):
        try:
            run = self.run_state
            if run is None:
                return
            self.history.append((state.iteration, float(state.loss)))
            self.progress.setValue(min(state.iteration + 1, run.max_iter))
            self.readout.setText(_format_state(state))
            self._redraw_plot()
            if state.predicted is not None and self.viewer is not None:
                from .._layers import show_residual, upsert_image

                predicted = np.asarray(state.predicted, dtype=np.float32)
                layer = upsert_image(self.viewer, PREDICTED, predicted, colormap="magenta", blending="additive")
                layer.metadata["braggsim_parameters"] = dict(state.parameters)
                # the full model of this image: it saves as SMV with its geometry
                layer.metadata["braggsim_model"] = apply_refined(run.values, state.parameters)
                show_residual(self.viewer, run.observed, predicted, visible=_residual_visible(self.viewer))
        except RuntimeError:  # Qt side deleted while the queued signal was in flight
            pass

    def _on_result(self, result):
        self.result = result
        if result is None:
            return
        try:
            self.errors.setText(_format_result(result))
            # the bar says how the run ended; a converged run fills it
            self.progress.setFormat(f"{result.status} after {len(result.history)} iterations")
            if result.status == "converged":
                self.progress.setValue(self.progress.maximum())
            self.apply_button.enabled = bool(result.parameters)
            if result.status == "failed":
                _common.notify_error(f"Refine: {result.message or 'the refinement failed'}")
            self._update_spots(result)
        except RuntimeError:
            pass

    def _update_spots(self, result):
        if self.viewer is None or getattr(result, "crystal", None) is None:
            return
        from .._layers import show_overlays

        try:
            show_overlays(self.viewer, result.crystal, result.detector, result.beam)
        except Exception as exc:  # noqa: BLE001  any failure becomes a message, never a traceback
            _common.notify_error(f"Overlays: {_common.describe(exc)}")

    def _on_error(self, exc):
        _common.notify_error(f"Refine: {_common.describe(exc)}")

    def _on_finished(self, run, *_):
        if run in self._runs:
            self._runs.remove(run)
        if self.run_state is run:
            self.run_state = None
        try:
            if self.result is None:
                self.result = getattr(run.refiner, "result", None)
                if self.result is not None:
                    self._on_result(self.result)
            self.run_button.enabled = True
            self.stop_button.enabled = False
        except RuntimeError:
            pass

    def _redraw_plot(self):
        self.axes.clear()
        self.axes.set_xlabel("iteration")
        self.axes.set_ylabel("loss")
        if self.history:
            its, losses = zip(*self.history, strict=False)
            losses = np.asarray(losses, dtype=float)
            self.axes.plot(its, losses, "o-", color="tab:blue", markersize=3)
            if np.all(losses > 0) and losses.max() / max(losses.min(), 1e-300) > 100:
                self.axes.set_yscale("log")
        self.figure.tight_layout()
        self.canvas.draw_idle()

    def apply_to_simulate(self) -> int:
        """Refined values -> every docked Simulate widget; returns how many were set."""
        if self.result is None:
            return 0
        from .simulate import SimulateWidget

        count = 0
        for sim in _common.siblings(self.viewer, SimulateWidget):
            sim.set_values(apply_refined(self._model_values_at_run(), self.result.parameters))
            count += 1
        if count == 0:
            _common.notify_error("Refine: no Simulate widget is open; open Plugins > napari-braggsim > Simulate")
        return count

    def _model_values_at_run(self) -> dict:
        return self._model_values()


def _quit_if_running(run: _Run):
    if not run.done.is_set() and run.worker is not None:
        with contextlib.suppress(RuntimeError):
            run.worker.quit()


def _residual_visible(viewer) -> bool:
    for layer in viewer.layers:
        if layer.name == "residual":
            return bool(layer.visible)
    return False


def _make_plot():
    from matplotlib.backends.backend_qt5agg import FigureCanvasQTAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3.2, 2.2), dpi=80)
    axes = figure.add_subplot(111)
    axes.set_xlabel("iteration")
    axes.set_ylabel("loss")
    canvas = FigureCanvasQTAgg(figure)
    canvas.setMinimumHeight(170)
    return figure, axes, canvas


def _format_value(name: str, value: float) -> str:
    unit = UNITS.get(name, "")
    unit = "" if unit in ("×", "cells") else f" {unit}"
    return f"{name:<18} {value:12.5g}{unit}"


def _starting_text(refiner) -> str:
    """What the run does before its first state arrives (the search yields none)."""
    axes = sum(name.startswith("misset_") for name in refiner.names)
    if refiner.search_deg > 0 and axes:
        return (
            f"starting: trying {3**axes} misset starts {refiner.search_deg:g} deg apart "
            f"({3**axes - 1} simulations), then refining..."
        )
    return "starting..."


def _format_state(state) -> str:
    lines = [f"iteration {state.iteration}  stage {state.stage}", f"{'loss':<18} {state.loss:12.5g}"]
    lines += [_format_value(name, value) for name, value in state.parameters.items()]
    if state.message:
        lines.append(state.message)
    return "\n".join(lines)


def _format_result(result) -> str:
    lines = [f"{result.status}: loss {result.initial_loss:.4g} -> {result.final_loss:.4g}"]
    if result.message:
        lines.append(result.message)
    lines.append("refined value ± standard error")
    for name, value in result.parameters.items():
        error = result.standard_errors.get(name, math.nan)
        unit = UNITS.get(name, "")
        unit = "" if unit in ("×", "cells") else f" {unit}"
        lines.append(f"{name:<18} {value:10.5g} ± {error:.2g}{unit}")
    from braggsim.refine import format_search

    search_line = format_search(getattr(result, "search", None))
    if search_line:
        lines.append(search_line)
    return "\n".join(lines)
