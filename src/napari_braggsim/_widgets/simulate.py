"""Simulate dock widget: crystal, detector and beam fields -> a ``simulated`` image layer.

The fields show the viewer's shared model (``_state``): editing one updates the model,
and a change of the model (a loaded frame's geometry, applied refined values) shows in
the fields.  Four more sections, collapsed until their title is clicked, make the frame
realistic: beam divergence and bandwidth, a thick sensor, amorphous background (water,
air) and detector noise (``_render`` adds them).  Run simulates in a background thread,
together with the contrast limits and the overlays (spots, rings, beam centre), so the
GUI thread only moves finished arrays into layers.  "live" re-simulates after each
change, debounced; only the newest request's image reaches the layer.  With the noise on
the layer shows the noisy counts (ADU), and the status line says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import numpy as np
from magicgui.widgets import CheckBox, Container, Label, PushButton
from qtpy.QtCore import QTimer

from .. import _common, _warmup
from .._fields import COLLAPSED_SECTIONS, SECTIONS, make_field, model_fields, read_field, write_field
from .._jobs import Job
from .._model import check_scene, frame_metadata, geometry_from_metadata
from .._render import Cancelled
from .._state import BraggsimState, state_for
from . import _qt

LAYER_NAME = "simulated"
LIVE_DEBOUNCE_MS = 150


class SimulateWidget(Container):
    """Dock widget; ``values()`` / ``set_values()`` speak the flat names of ``_model``."""

    def __init__(self, napari_viewer=None):
        super().__init__(labels=False)
        self.viewer = napari_viewer
        self.state: BraggsimState = state_for(napari_viewer) if napari_viewer is not None else BraggsimState()
        self._showing = False  # True while the fields are being set from the state
        self._request = 0  # id of the newest simulation request
        self._applied = 0  # id of the request whose image is in the layer
        self._jobs: dict = {}  # request id -> Job
        _warmup.start()

        self.fields: dict = {}  # name -> field, made once braggsim is loaded (see _build_fields)
        self._specs: dict = {}
        self.sections: dict = {}  # title -> section container
        self._loading = Label(value="loading braggsim (torch)...")
        self.body = Container(name="fields", labels=False, widgets=[self._loading])

        self.run_button = PushButton(
            name="run_button", text="Run", tooltip="Simulate the model below once.", enabled=False
        )
        self.live = CheckBox(
            name="live", text="live", value=False, tooltip="Re-simulate after every change (debounced)."
        )
        self.overlays = CheckBox(
            name="overlays",
            text="spots, rings, beam centre",
            value=self.state.overlays,
            tooltip="Draw the predicted spots (hkl when zoomed in), resolution rings and the beam centre; "
            "untick to remove them.",
        )
        self.status = Label(name="status", value="")
        self.status.native.setWordWrap(True)
        self.resolution = Label(name="resolution", value="", tooltip="d-spacing under the cursor")
        buttons = Container(widgets=[self.run_button, self.live], layout="horizontal", labels=False)
        self.extend([buttons, self.overlays, self.status, self.resolution])
        _qt.add_scrolling(self, self.body)
        _qt.fit_width(self)

        self._debounce = QTimer()
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(LIVE_DEBOUNCE_MS)
        self._debounce.timeout.connect(self.run)
        self._poller = _qt.Poller(self._poll)

        self.run_button.changed.connect(lambda *_: self.run())
        self.live.changed.connect(lambda on: on and self._debounce.start())
        self.overlays.changed.connect(self._on_overlays_toggled)
        self.state.events.values.connect(self._show_values)
        self.state.events.overlays.connect(self._show_overlays_flag)
        self.state.events.resolution.connect(self._show_resolution)
        _qt.stop_when_closed(self, self._disconnect)
        if self.viewer is not None:
            from .. import _viewer_hooks

            _viewer_hooks.install(self.viewer)
        _qt.when_core_ready(self._build_fields)

    @property
    def ready(self) -> bool:
        """True once the fields are made (braggsim loaded in the background)."""
        return bool(self.fields)

    def _build_fields(self) -> None:
        """One field per model value, from the registry's specs (``_fields``), in sections;
        the realistic-frame sections collapsed (``self.sections[title]``)."""
        self._specs = model_fields()
        sections = []
        for title, names in SECTIONS.items():
            fields = []
            for name in names:
                field = make_field(self._specs[name], self.state.values[name])
                field.changed.connect(self._on_field_changed)
                self.fields[name] = field
                fields.append(field)
            if title in COLLAPSED_SECTIONS:
                section = _qt.Collapsible(title, fields, name=_section_name(title))
            else:
                section = Container(name=_section_name(title), widgets=[Label(value=f"<b>{title}</b>"), *fields])
            self.sections[title] = section
            sections.append(section)
        self.body.remove(self._loading)
        self.body.extend(sections)
        self.run_button.enabled = True

    # ------------------------------------------------------------------ values
    def values(self) -> dict:
        """The model as the fields show it (flat names, physical units); ValueError
        naming a field whose text is not a number."""
        if not self.fields:
            return dict(self.state.values)
        return {name: read_field(self._specs[name], widget) for name, widget in self.fields.items()}

    def set_values(self, values: Mapping) -> None:
        """Put known values into the shared model (and so into the fields)."""
        known = {k: v for k, v in values.items() if k in self.state.values and v is not None}
        self.state.update_values(known)

    def set_geometry_from_metadata(self, metadata: Mapping | None, shape=None) -> None:
        self.set_values(geometry_from_metadata(metadata, shape))

    def _on_field_changed(self, *_):
        if self._showing:
            return
        try:
            values = self.values()
        except ValueError as exc:
            self.status.value = str(exc)
            return
        self.state.update_values(values)
        if self.live.value:
            self._debounce.start()  # restarts: only the last change in a burst simulates

    def _show_values(self, values: dict) -> None:
        self._showing = True
        try:
            for name, widget in self.fields.items():
                if name in values:
                    write_field(self._specs[name], widget, values[name])
        except RuntimeError:  # the Qt side is gone (viewer closing)
            return
        finally:
            self._showing = False
        if self.live.value:
            self._debounce.start()

    def _show_resolution(self, text: str) -> None:
        with contextlib.suppress(RuntimeError):
            self.resolution.value = text

    def _show_overlays_flag(self, on: bool) -> None:
        with contextlib.suppress(RuntimeError):
            self.overlays.value = on

    def _on_overlays_toggled(self, on: bool) -> None:
        self.state.overlays = bool(on)
        if not on and self.viewer is not None:
            from .._layers import remove_overlays

            remove_overlays(self.viewer)

    def _disconnect(self) -> None:
        for signal, slot in (
            (self.state.events.values, self._show_values),
            (self.state.events.overlays, self._show_overlays_flag),
            (self.state.events.resolution, self._show_resolution),
        ):
            with contextlib.suppress(ValueError, RuntimeError):
                signal.disconnect(slot)
        self._poller.stop()
        with contextlib.suppress(RuntimeError):
            self._debounce.stop()

    # -------------------------------------------------------------- simulation
    def run(self):
        """Simulate the current values in a background thread; returns the Job, or
        None after a notification."""
        try:
            values = check_scene(self.values())
        except ValueError as exc:
            _common.notify_error(f"Simulate: {_common.describe(exc)}")
            return None
        self._request += 1
        request = self._request
        want_overlays = bool(self.state.overlays)
        for older, _ in self._jobs.values():
            older.cancel()  # nobody will see its image: stop it at its next block of rows
        job = Job(lambda job: _simulate(values, want_overlays, job.cancelled.is_set), name="braggsim simulate")
        self._jobs[request] = (job, values)
        self.status.value = f"simulating {values['spixels']}x{values['fpixels']}..."
        job.start()
        self._poller.start()
        return job

    @property
    def busy(self) -> bool:
        """True while a simulation runs or waits to be shown."""
        return bool(self._jobs) or self._poller.active

    def _poll(self) -> bool:
        """The timer's look at the running simulations; True while any is left."""
        for request, (job, values) in list(self._jobs.items()):
            taken = job.take()
            if taken is None or not taken.done:
                continue
            del self._jobs[request]
            if isinstance(taken.error, Cancelled):
                continue  # replaced by a newer request, as asked
            if taken.error is not None:
                if request == self._request:
                    self.status.value = "failed"
                _common.notify_error(f"Simulate: {_common.describe(taken.error)}")
            elif request == self._request:  # an older request's image is dropped
                self._apply(request, values, taken.result)
        return bool(self._jobs)

    def _apply(self, request: int, values: dict, outcome) -> None:
        """Defer the layer work: the image, then each overlay layer, one per tick."""
        if self.viewer is None:
            return
        from .._layers import overlay_steps, remove_overlays, upsert_image

        rendered, limits, overlays, overlay_error = outcome
        image = rendered.image
        metadata = {"braggsim_model": dict(values), "braggsim_frame": frame_metadata(values)}
        viewer = self.viewer
        self._poller.defer(lambda: upsert_image(viewer, LAYER_NAME, image, contrast_limits=limits, metadata=metadata))
        if not self.state.overlays:
            self._poller.defer(lambda: remove_overlays(viewer))
        elif overlays is not None:
            for step in overlay_steps(viewer, overlays):
                self._poller.defer(step)
        if overlay_error is not None:
            _common.notify_error(f"Overlays: {_common.describe(overlay_error)}")
        text = rendered.describe()
        if overlays is not None:
            drawn, predicted = len(overlays.spots_px), overlays.predicted
            text += f"; {predicted} spots" + (f" ({drawn} nearest the beam drawn)" if drawn < predicted else "")

        def done():
            self._applied = request
            self.status.value = text

        self._poller.defer(done)

    @property
    def layer(self):
        if self.viewer is None or LAYER_NAME not in self.viewer.layers:
            return None
        return self.viewer.layers[LAYER_NAME]


def display_limits(image: np.ndarray) -> list:
    """Contrast limits for a simulated image: its minimum to its 99.9th percentile (the
    maximum when fewer than 0.1 % of the pixels are lit)."""
    finite = image[np.isfinite(image)]
    if not finite.size:
        return [0.0, 1.0]
    sample = finite[:: finite.size // 2_000_000 + 1]
    low = float(finite.min())
    high = float(np.percentile(sample, 99.9))
    if not high > low:
        high = float(finite.max())
    return [low, high if high > low else low + 1.0]


def _section_name(title: str) -> str:
    return title.split(" (")[0].lower().replace(" ", "_")


def _simulate(values: dict, overlays: bool, cancelled=None):
    """(``_render.Rendered``, contrast limits, OverlayData or None, overlay error or
    None); runs in a worker thread (``_render.Cancelled`` once ``cancelled()``)."""
    from .._render import render

    rendered = render(values, cancelled)
    limits = display_limits(rendered.image)
    data, error = None, None
    if overlays:
        from .._layers import overlay_data

        try:
            data = overlay_data(*rendered.model, with_layers=True)
        except Exception as exc:  # noqa: BLE001  the image is still shown; the overlays' failure is a message
            error = exc
    return rendered, limits, data, error
