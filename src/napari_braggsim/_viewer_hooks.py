"""What the plugin adds to a viewer once, whichever widget docks first:

* the d-spacing under the cursor, in napari's status bar (``..., d = 2.31 Å``) and in the
  state's ``resolution`` (the widgets show it);
* hkl labels that follow the camera (``_layers.update_labels``), at most one update per
  LABEL_DELAY_MS while zooming or panning.
"""

from __future__ import annotations

import math
import weakref

import numpy as np
from qtpy.QtCore import QTimer

from . import _common
from ._model import build_model, values_from_layer
from ._state import state_for

LABEL_DELAY_MS = 120
_INSTALLED: weakref.WeakSet = weakref.WeakSet()
_GEOMETRY_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_MARK = "d = "
_TIMERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # keeps each viewer's label timer alive


def geometry_layer(viewer):
    """The selected 2-D image layer carrying braggsim geometry, else the top-most one."""
    active = viewer.layers.selection.active
    candidates = ([active] if active is not None else []) + list(reversed(viewer.layers))
    for layer in candidates:
        if layer.__class__.__name__ != "Image" or layer.data.ndim != 2:
            continue
        meta = layer.metadata or {}
        if "braggsim_frame" in meta or "braggsim_model" in meta or "braggsim_start" in meta:
            return layer
    return None


def resolution_under_cursor(viewer, position) -> float | None:
    """d (A) at a world ``position`` for the geometry layer, None if no geometry."""
    from braggsim.spots import resolution_at_px

    layer = geometry_layer(viewer)
    if layer is None:
        return None
    key = (id(layer), repr(layer.metadata.get("braggsim_frame")), repr(layer.metadata.get("braggsim_model")))
    cache = _GEOMETRY_CACHE.get(viewer)
    if cache is None or cache[0] != key:
        try:
            _, detector, beam = build_model(values_from_layer(layer.metadata, layer.data.shape))
        except ValueError:
            return None
        cache = (key, detector, beam)
        _GEOMETRY_CACHE[viewer] = cache
    _, detector, beam = cache
    px = np.asarray(layer.world_to_data(position), dtype=float)[-2:]
    return float(resolution_at_px(detector, beam, px))


def resolution_text(d: float) -> str:
    return "d = ∞ (direct beam)" if not math.isfinite(d) else f"d = {d:.2f} Å"


def install(viewer) -> None:
    """Install the readout and the label updates on ``viewer`` (once)."""
    viewer = _common.unwrap(viewer)
    if viewer is None or viewer in _INSTALLED:
        return
    _INSTALLED.add(viewer)
    state = state_for(viewer)

    def on_move(viewer, event):
        try:
            d = resolution_under_cursor(viewer, event.position)
        except Exception:  # noqa: BLE001  a readout must never break mouse handling
            return
        state.resolution = "" if d is None else resolution_text(d)
        _append_to_status(viewer, state.resolution, plain_too=True)

    def on_status(event=None):
        # napari writes its own status (coordinates and value) after the mouse moves, in
        # a thread of its own; the d-spacing is added to it here
        _append_to_status(viewer, state.resolution, plain_too=False)

    viewer.mouse_move_callbacks.append(on_move)
    viewer.events.status.connect(on_status)

    timer = QTimer()
    timer.setSingleShot(True)
    timer.setInterval(LABEL_DELAY_MS)

    viewer_ref = weakref.ref(viewer)  # the timer lives in a dict keyed weakly by the viewer

    def relabel():
        from ._layers import update_labels

        target = viewer_ref()
        if target is None:
            return
        try:
            update_labels(target)
        except Exception:  # noqa: BLE001  labels are a convenience; never break the camera
            return

    timer.timeout.connect(relabel)
    viewer.camera.events.zoom.connect(lambda *_: timer.start())
    viewer.camera.events.center.connect(lambda *_: timer.start())
    _TIMERS[viewer] = timer


def _append_to_status(viewer, text: str, plain_too: bool) -> None:
    """Add ``text`` to napari's cursor status (a dict: to its coordinates); a plain-text
    status ("Ready" when the cursor left the canvas) only when ``plain_too``."""
    if not text:
        return
    status = viewer.status
    if isinstance(status, dict):
        coordinates = str(status.get("coordinates", ""))
        if _MARK in coordinates:
            coordinates = coordinates[: coordinates.index(_MARK)].rstrip(", ")
        new = {**status, "coordinates": f"{coordinates}, {text}" if coordinates else text}
        if new != status:
            viewer.status = new
    elif plain_too:
        status = str(status)
        if _MARK in status:
            status = status[: status.index(_MARK)].rstrip(", ")
        new = f"{status}, {text}" if status and status != "Ready" else text
        if new != viewer.status:
            viewer.status = new
