"""Simulate dock widget: crystal, detector and beam fields -> a ``simulated`` image layer.

Run simulates once; "live" re-simulates after each change, debounced, and in a napari
``thread_worker`` when the image is large or the kernel is not compiled yet (the dock
starts its warm-up), so the GUI never waits on torch or the compiler.  Only the
newest request's image reaches the layer.
"""

from __future__ import annotations

from collections.abc import Mapping

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QScrollArea, QVBoxLayout, QWidget

from .. import _common
from .._model import DEFAULTS, INT_KEYS, frame_metadata, geometry_from_metadata

LAYER_NAME = "simulated"
LIVE_DEBOUNCE_MS = 150
THREAD_ABOVE_PIXELS = 256 * 256

# (key, label with unit, min, max, step, decimals); decimals None = integer field
_FIELDS = {
    "Crystal": [
        ("cell_a_A", "a (Å)", 1.0, 10000.0, 1.0, 3),
        ("cell_b_A", "b (Å)", 1.0, 10000.0, 1.0, 3),
        ("cell_c_A", "c (Å)", 1.0, 10000.0, 1.0, 3),
        ("cell_alpha_deg", "α (deg)", 1.0, 179.0, 1.0, 3),
        ("cell_beta_deg", "β (deg)", 1.0, 179.0, 1.0, 3),
        ("cell_gamma_deg", "γ (deg)", 1.0, 179.0, 1.0, 3),
        ("N_a", "N_a (cells)", 1.0, 1000.0, 1.0, 2),
        ("N_b", "N_b (cells)", 1.0, 1000.0, 1.0, 2),
        ("N_c", "N_c (cells)", 1.0, 1000.0, 1.0, 2),
        ("default_F", "default F (e)", 0.0, 1e6, 10.0, 2),
        ("misset_x_deg", "misset x (deg)", -360.0, 360.0, 0.5, 3),
        ("misset_y_deg", "misset y (deg)", -360.0, 360.0, 0.5, 3),
        ("misset_z_deg", "misset z (deg)", -360.0, 360.0, 0.5, 3),
        ("mosaic_spread_deg", "mosaic spread (deg)", 0.0, 90.0, 0.05, 3),
        ("mosaic_domains", "mosaic domains", 1, 10000, 1, None),
        ("mosaic_seed", "mosaic seed", -(2**31), 2**31 - 1, 1, None),
    ],
    "Detector": [
        ("fpixels", "fast pixels", 1, 8192, 1, None),
        ("spixels", "slow pixels", 1, 8192, 1, None),
        ("pixel_size_mm", "pixel size (mm)", 0.001, 10.0, 0.01, 4),
        ("distance_mm", "distance (mm)", 0.1, 10000.0, 1.0, 3),
        ("beam_x_mm", "beam centre Xbeam (mm)", -1000.0, 1000.0, 0.05, 4),
        ("beam_y_mm", "beam centre Ybeam (mm)", -1000.0, 1000.0, 0.05, 4),
    ],
    "Beam": [
        ("wavelength_A", "wavelength (Å)", 0.01, 100.0, 0.01, 4),
    ],
}


class SimulateWidget(QWidget):
    """Dock widget; ``values()`` / ``set_values()`` speak the flat names of ``_model``."""

    def __init__(self, napari_viewer=None, parent=None):
        super().__init__(parent)
        from magicgui.widgets import CheckBox, Container, Label, LineEdit, PushButton

        self.viewer = napari_viewer
        self._fields: dict = {}
        self._request = 0  # id of the newest simulation request
        self._applied = 0  # id of the request whose image is in the layer
        self._workers: set = set()

        sections = []
        for title, rows in _FIELDS.items():
            section = Container(name=title.lower(), label=title, widgets=[])
            section.append(Label(value=f"<b>{title}</b>"))
            for key, label, low, high, step, decimals in rows:
                widget = _common.number_box(key, label, low, high, step, decimals, DEFAULTS[key])
                self._fields[key] = widget
                section.append(widget)
            sections.append(section)
        self._fluence = LineEdit(name="fluence", label="fluence (photons/m²)", value=f"{DEFAULTS['fluence']:g}")
        self._fields["fluence"] = self._fluence
        sections[-1].append(self._fluence)

        self.live = CheckBox(name="live", text="live (re-simulate on change)", value=False)
        self.overlays = CheckBox(name="overlays", text="spots, rings, beam centre", value=True)
        self.run_button = PushButton(name="run", text="Run")
        self.status = Label(name="status", value="")
        self.resolution = Label(name="resolution", value="")
        controls = Container(widgets=[self.live, self.overlays, self.run_button, self.status, self.resolution])
        self.container = Container(widgets=[*sections, controls])

        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.container.native)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scroll)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(LIVE_DEBOUNCE_MS)
        self._timer.timeout.connect(self.run)
        for widget in self._fields.values():
            widget.changed.connect(self._on_value_changed)
        self.live.changed.connect(lambda on: on and self._timer.start())
        self.run_button.changed.connect(lambda *_: self.run())

        _common.register(self)
        if self.viewer is not None:
            from .._layers import install_resolution_readout

            install_resolution_readout(self.viewer)

    # ------------------------------------------------------------------ values
    def values(self) -> dict:
        """Current field values (flat names, physical units); ValueError on bad fluence."""
        out = {}
        for key, widget in self._fields.items():
            if key == "fluence":
                try:
                    out[key] = float(widget.value)
                except ValueError:
                    raise ValueError(f"fluence must be a number in photons/m^2, got {widget.value!r}") from None
            else:
                out[key] = int(widget.value) if key in INT_KEYS else float(widget.value)
        return out

    def set_values(self, values: Mapping) -> None:
        """Set any known fields (e.g. refined parameters); unknown keys are ignored.
        In live mode the changes trigger one debounced re-simulation."""
        for key, value in values.items():
            widget = self._fields.get(key)
            if widget is None or value is None:
                continue
            if key == "fluence":
                widget.value = f"{float(value):g}"
            elif key in INT_KEYS:
                widget.value = int(round(float(value)))
            else:
                widget.value = float(value)

    def set_geometry_from_metadata(self, metadata: Mapping | None, shape=None) -> None:
        """Fill detector and beam fields from a layer's ``braggsim_frame`` metadata."""
        self.set_values(geometry_from_metadata(metadata, shape))

    def set_geometry_from_layer(self, layer) -> None:
        self.set_geometry_from_metadata(layer.metadata, layer.data.shape)

    def show_resolution(self, text: str) -> None:
        self.resolution.value = text

    # -------------------------------------------------------------- simulation
    def _on_value_changed(self, *_):
        if self.live.value:
            self._timer.start()  # restarts: only the last change in a burst simulates

    def run(self):
        """Simulate the current values; returns the worker when threaded, else None."""
        try:
            values = self.values()
            from .._model import build_model

            model = build_model(values)
        except Exception as exc:  # noqa: BLE001  any failure becomes a message, never a traceback
            _common.notify_error(f"Simulate: {_common.describe(exc)}")
            return None
        self._request += 1
        request = self._request
        pixels = values["fpixels"] * values["spixels"]
        # small images run here, unless the kernel is still being compiled: then they
        # wait for it in a worker, and the GUI stays responsive
        if pixels <= THREAD_ABOVE_PIXELS and _common.kernel_ready():
            try:
                image = _simulate(model)
            except Exception as exc:  # noqa: BLE001  any failure becomes a message, never a traceback
                _common.notify_error(f"Simulate: {_common.describe(exc)}")
                return None
            self._apply(request, values, model, image)
            return None
        from napari.qt.threading import create_worker

        # errored given through _connect, so the worker does not also re-raise the
        # exception into the Qt event loop (a console traceback)
        worker = create_worker(
            _simulate,
            model,
            _start_thread=False,
            _connect={"errored": lambda exc: _common.notify_error(f"Simulate: {_common.describe(exc)}")},
        )
        self._workers.add(worker)
        worker.returned.connect(lambda image: self._apply(request, values, model, image))
        worker.finished.connect(lambda: self._workers.discard(worker))
        self.status.value = f"simulating {values['spixels']}x{values['fpixels']}..."
        worker.start()
        return worker

    def _apply(self, request: int, values: dict, model, image) -> None:
        if request != self._request or self.viewer is None:
            return  # a newer request is on its way; drop this stale image
        from .._layers import show_overlays, upsert_image

        metadata = {"braggsim_model": dict(values), "braggsim_frame": frame_metadata(values)}
        upsert_image(self.viewer, LAYER_NAME, image, metadata=metadata)
        if self.overlays.value:
            try:
                show_overlays(self.viewer, *model)
            except Exception as exc:  # noqa: BLE001  any failure becomes a message, never a traceback
                _common.notify_error(f"Overlays: {_common.describe(exc)}")
        self._applied = request
        self.status.value = f"simulated {image.shape[0]}x{image.shape[1]}, max {float(image.max()):.3g} photons"

    @property
    def layer(self):
        if self.viewer is None:
            return None
        for layer in self.viewer.layers:
            if layer.name == LAYER_NAME:
                return layer
        return None


def _simulate(model):
    """(Crystal, Detector, Beam) -> float32 numpy image (slow, fast)."""
    import torch

    import braggsim

    with torch.no_grad():
        return braggsim.simulate(*model).numpy().astype("float32", copy=False)
