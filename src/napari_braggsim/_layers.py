"""Overlay layers: predicted spots with hkl, resolution rings, beam centre, residual,
and the resolution readout under the cursor.

Every position and d-spacing comes from :mod:`braggsim.spots`; this module only turns
those numbers into napari layers, updating a layer in place when it already exists.
"""

from __future__ import annotations

import math
import weakref

import numpy as np

from . import _common
from ._model import build_model, values_from_layer

SPOTS = "predicted spots"
RINGS = "resolution rings"
BEAM_CENTER = "beam centre"
RESIDUAL = "residual"

# per viewer: (key, detector, beam) of the last geometry used by the cursor readout
_GEOMETRY_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_READOUT_INSTALLED: weakref.WeakSet = weakref.WeakSet()


def _existing(viewer, name: str, kind: str):
    for layer in viewer.layers:
        if layer.name == name and layer.__class__.__name__ == kind:
            return layer
    return None


def upsert_image(viewer, name: str, data: np.ndarray, **kwargs):
    """Put ``data`` into the image layer ``name``, in place if it exists; returns the layer.

    Contrast limits are reset when the data range changes so a new image is visible."""
    layer = _existing(viewer, name, "Image")
    metadata = kwargs.pop("metadata", None)
    if layer is None or layer.data.shape != data.shape:
        if layer is not None:
            viewer.layers.remove(layer)
        layer = viewer.add_image(data, name=name, metadata=metadata or {}, **kwargs)
        return layer
    layer.data = data
    if metadata is not None:
        layer.metadata.update(metadata)
    finite = data[np.isfinite(data)]
    if finite.size:
        low, high = float(finite.min()), float(finite.max())
        layer.contrast_limits_range = (low, high if high > low else low + 1.0)
        layer.contrast_limits = (low, high if high > low else low + 1.0)
    return layer


def _marker_size(detector) -> float:
    return max(2.5, min(detector.spixels, detector.fpixels) / 25.0)


def show_predicted_spots(viewer, crystal, detector, beam, name: str = SPOTS):
    """Points layer of predicted spot centres labelled 'h k l'; returns (layer, Spots)."""
    from braggsim.spots import predict_spots

    spots = predict_spots(crystal, detector, beam)
    labels = np.array([f"{h} {k} {l}" for h, k, l in spots.hkl], dtype=object)
    features = {"hkl": labels, "d_A": spots.d_A}
    size = _marker_size(detector)
    text = {"string": "{hkl}", "size": 8, "color": "yellow", "anchor": "upper_left"}
    layer = _existing(viewer, name, "Points")
    if layer is None:
        layer = viewer.add_points(
            spots.px,
            name=name,
            features=features,
            text=text,
            size=size,
            symbol="disc",
            face_color="transparent",
            border_color="yellow",
            border_width=0.15,
            opacity=0.9,
        )
    else:
        layer.data = spots.px
        layer.features = features
        layer.size = size
    return layer, spots


def ring_resolutions_A(detector, beam, n_rings: int = 4) -> list:
    """d-spacings (A, 1 decimal below 10 A) of ``n_rings`` rings evenly spaced out to the
    detector's nearest edge from the beam centre."""
    from braggsim.spots import beam_center_px, resolution_at_px

    center = beam_center_px(detector)
    reach = min(
        center[0] + 0.5, detector.spixels - 0.5 - center[0], center[1] + 0.5, detector.fpixels - 0.5 - center[1]
    )
    if not reach > 1:
        reach = min(detector.spixels, detector.fpixels) / 2
    out = []
    for k in range(1, n_rings + 1):
        d = float(resolution_at_px(detector, beam, center + [0.0, reach * k / n_rings]))
        if math.isfinite(d) and d > float(beam.wavelength_A) / 2:
            rounded = round(d, 1) if d < 10 else float(round(d))
            if rounded not in out:
                out.append(rounded)
    return out


def show_resolution_rings(viewer, detector, beam, d_values_A: list | None = None, name: str = RINGS):
    """Shapes layer of resolution rings (paths) labelled with d in Angstrom."""
    from braggsim.spots import resolution_ring_px

    if d_values_A is None:
        d_values_A = ring_resolutions_A(detector, beam)
    paths, labels = [], []
    for d in d_values_A:
        ring = resolution_ring_px(detector, beam, float(d))
        if len(ring) >= 3:
            paths.append(ring)
            labels.append(f"{d:g} Å")
    features = {"d_label": np.array(labels, dtype=object)}
    text = {"string": "{d_label}", "size": 9, "color": "cyan", "anchor": "upper_left"}
    layer = _existing(viewer, name, "Shapes")
    if layer is not None:
        viewer.layers.remove(layer)
    if not paths:
        return None
    return viewer.add_shapes(
        paths,
        shape_type="path",
        name=name,
        edge_color="cyan",
        edge_width=max(0.3, detector.fpixels / 300),
        features=features,
        text=text,
        opacity=0.7,
    )


def show_beam_center(viewer, detector, name: str = BEAM_CENTER):
    """A cross at the direct beam's position on the detector."""
    from braggsim.spots import beam_center_px

    center = beam_center_px(detector)[None, :]
    layer = _existing(viewer, name, "Points")
    if layer is None:
        return viewer.add_points(
            center,
            name=name,
            symbol="cross",
            size=_marker_size(detector) * 1.5,
            face_color="red",
            border_color="red",
        )
    layer.data = center
    return layer


def show_residual(viewer, observed: np.ndarray, predicted: np.ndarray, name: str = RESIDUAL, visible: bool = False):
    """Image layer observed - predicted (same shape), diverging colormap, symmetric limits."""
    residual = np.asarray(observed, dtype=np.float32) - np.asarray(predicted, dtype=np.float32)
    layer = upsert_image(viewer, name, residual, colormap="PiYG", visible=visible)
    bound = float(np.nanmax(np.abs(residual))) if residual.size else 1.0
    bound = bound if bound > 0 and math.isfinite(bound) else 1.0
    layer.contrast_limits_range = (-bound, bound)
    layer.contrast_limits = (-bound, bound)
    return layer


def show_overlays(viewer, crystal, detector, beam) -> None:
    """Spots, rings and beam centre for one model."""
    show_predicted_spots(viewer, crystal, detector, beam)
    show_resolution_rings(viewer, detector, beam)
    show_beam_center(viewer, detector)


# ---------------------------------------------------------------- cursor readout
def _geometry_layer(viewer):
    """The selected image layer carrying braggsim metadata, else the top-most one."""
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

    layer = _geometry_layer(viewer)
    if layer is None:
        return None
    cache = _GEOMETRY_CACHE.get(viewer)
    key = (id(layer), repr(layer.metadata.get("braggsim_frame")), layer.data.shape)
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


def install_resolution_readout(viewer) -> None:
    """Show d (A) under the cursor in the status bar and in any widget with a
    ``show_resolution(text)`` method; installed once per viewer."""
    viewer = _common.unwrap(viewer)
    if viewer in _READOUT_INSTALLED:
        return

    def _on_move(viewer, event):
        try:
            d = resolution_under_cursor(viewer, event.position)
        except Exception:  # a readout must never break mouse handling  # noqa: BLE001  any failure becomes a message, never a traceback
            return
        if d is None:
            return
        text = "d = inf (direct beam)" if not math.isfinite(d) else f"d = {d:.2f} Å"
        viewer.status = text
        for widget in _common.siblings(viewer):
            if hasattr(widget, "show_resolution"):
                widget.show_resolution(text)

    viewer.mouse_move_callbacks.append(_on_move)
    _READOUT_INSTALLED.add(viewer)
