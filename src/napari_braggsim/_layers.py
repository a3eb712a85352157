"""Overlay layers: predicted spots with hkl, resolution rings, beam centre, residual.

Two halves, so the GUI thread only moves arrays into layers:

* :func:`overlay_data` (numpy and braggsim, no napari; runs in a worker thread) turns a
  model into positions, marker sizes, labels and ring paths.  Every position and
  d-spacing comes from :mod:`braggsim.spots`.
* :func:`show_overlays` / :func:`remove_overlays` (GUI thread) replace the three layers.

Readable at detector scale, as the DIALS image viewer draws them:

* a marker's diameter follows the spot's size on the detector (the reciprocal width
  ``1/(N a)`` plus the mosaic arc, as ``braggsim.spots.default_excitation_tolerance``
  gives it, projected at the spot's angle), not the detector's size;
* at most ``MAX_SPOTS`` markers are drawn, those nearest the beam, and no more than cover
  ``MAX_COVER`` of the detector together (a wrong model with a huge mosaic spread
  predicts broad spots everywhere; it no longer paints the frame over);
* hkl labels appear only when zoomed in far enough that neighbouring labels do not
  overlap, and then only on the ``MAX_LABELS`` spots nearest the view's centre.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

SPOTS = "predicted spots"
STILL_SPOTS = "still predictions"  # the Real still widget's indexed model (``_still``)
LABELLED = (SPOTS, STILL_SPOTS)  # the points layers whose hkl labels follow the camera
RINGS = "resolution rings"
BEAM_CENTER = "beam centre"
RESIDUAL = "residual"
PREDICTED = "predicted"
OVERLAY_NAMES = (SPOTS, RINGS, BEAM_CENTER)

MAX_SPOTS = 5000
MAX_COVER = 0.35  # the markers' total area (open circles), as a fraction of the detector's
MAX_LABELS = 150
LABEL_GAP_SCREEN_PX = 45.0  # labels show once neighbouring spots are this far apart on screen
MARKER_PX = (4.0, 30.0)  # marker diameters, detector pixels
MARKER_SCREEN_PX = (3.0, 80.0)  # and on screen, whatever the zoom


@dataclasses.dataclass
class OverlayData:
    """Everything the overlays draw, as plain arrays (safe to pass between threads).

    spots_px: (n, 2) (slow, fast) pixel centres; diameters_px: (n,); hkl: (n,) "h k l"
    strings; d_A: (n,); spacing_px: typical distance between neighbouring spots (pixels);
    predicted: how many spots the model predicts (n <= it, capped at MAX_SPOTS);
    rings: [(m, 2) path]; ring_labels: ["2.5 Å"]; ring_width_px; beam_px: (2,);
    new_layers: the layers ready-made for a viewer that has none yet.
    """

    spots_px: np.ndarray
    diameters_px: np.ndarray
    hkl: np.ndarray
    d_A: np.ndarray
    spacing_px: float
    predicted: int
    rings: list
    ring_labels: list
    ring_width_px: float
    beam_px: np.ndarray
    new_layers: dict = dataclasses.field(default_factory=dict)  # see build_overlay_layers


def spot_diameters_px(crystal, detector, beam, d_A: np.ndarray) -> np.ndarray:
    """Marker diameters (pixels) for spots of resolution ``d_A``: twice the spot's
    half-width on the detector plus a pixel each side, within MARKER_PX."""
    from braggsim.spots import default_excitation_tolerance

    d_A = np.asarray(d_A, dtype=float)
    base = default_excitation_tolerance(crystal, math.inf)  # 1 / (N a): the lattice transform
    mosaic = default_excitation_tolerance(crystal, 1.0) - base  # the mosaic arc per 1/d
    half_width = base + mosaic / d_A  # 1/A
    wavelength = float(beam.wavelength_A)
    two_theta = 2.0 * np.arcsin(np.clip(wavelength / (2.0 * d_A), 0.0, 1.0))
    # a reciprocal offset w turns the diffracted ray by w * lambda; on a flat detector at
    # 2theta that moves the spot by distance / cos^2(2theta) per radian
    radius_px = half_width * wavelength * float(detector.distance_mm) / float(detector.pixel_size_mm)
    radius_px = radius_px / np.maximum(np.cos(two_theta), 0.2) ** 2
    return np.clip(2.0 * radius_px + 2.0, *MARKER_PX)


def overlay_data(crystal, detector, beam, max_spots: int = MAX_SPOTS, with_layers: bool = False) -> OverlayData:
    """Spots, rings and beam centre for one model (call it off the GUI thread); with
    ``with_layers`` also the napari layers ready-made (``build_overlay_layers``)."""
    from braggsim.spots import beam_center_px, predict_spots

    spots = predict_spots(crystal, detector, beam)
    order = np.argsort(-spots.d_A, kind="stable")[:max_spots]  # the nearest the beam first
    diameters = spot_diameters_px(crystal, detector, beam, spots.d_A[order]) if len(order) else np.zeros(0)
    covered = np.cumsum(np.pi * diameters**2 / 4.0)
    keep = int(np.searchsorted(covered, MAX_COVER * detector.spixels * detector.fpixels, side="right"))
    order, diameters = order[: max(keep, 1)], diameters[: max(keep, 1)]
    px, hkl, d_A = spots.px[order], spots.hkl[order], spots.d_A[order]
    labels = np.array([f"{h} {k} {l}" for h, k, l in hkl], dtype=object)
    rings = ring_resolutions_A(detector, beam)
    paths, ring_labels = _ring_paths(detector, beam, rings)
    data = OverlayData(
        spots_px=px,
        diameters_px=diameters,
        hkl=labels,
        d_A=d_A,
        spacing_px=typical_spacing(px),
        predicted=len(spots.d_A),
        rings=paths,
        ring_labels=ring_labels,
        ring_width_px=max(1.0, min(detector.spixels, detector.fpixels) / 1500.0),
        beam_px=np.asarray(beam_center_px(detector), dtype=float),
    )
    if with_layers:
        data.new_layers = build_overlay_layers(data)
    return data


def typical_spacing(px: np.ndarray) -> float:
    """The 10th percentile of each spot's distance to its nearest neighbour (pixels)."""
    if len(px) < 2:
        return math.inf
    from scipy.spatial import cKDTree

    distances, _ = cKDTree(px).query(px, k=2)
    return float(np.percentile(distances[:, 1], 10))


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


def _ring_paths(detector, beam, d_values_A) -> tuple:
    from braggsim.spots import resolution_ring_px

    paths, labels = [], []
    for d in d_values_A:
        ring = resolution_ring_px(detector, beam, float(d))
        if len(ring) >= 3:
            paths.append(ring)
            labels.append(f"{d:g} Å")
    return paths, labels


# ------------------------------------------------------------------ GUI thread
def find_layer(viewer, name: str, kind: str | None = None):
    """The layer called ``name`` (of class name ``kind`` if given), or None."""
    if viewer is None or name not in viewer.layers:
        return None
    layer = viewer.layers[name]
    return layer if kind is None or layer.__class__.__name__ == kind else None


def upsert_image(viewer, name: str, data: np.ndarray, contrast_limits=None, *, follow_contrast=True, **kwargs):
    """Put ``data`` into the image layer ``name``, in place when the shape matches;
    returns the layer.  ``contrast_limits`` (computed off the GUI thread) are applied
    when given, so napari need not scan a big image here.  With ``follow_contrast``
    False an existing layer keeps its limits unless the new ones are far off (a run's
    images change a little each time; each change of limits redraws the thumbnail)."""
    layer = find_layer(viewer, name, "Image")
    metadata = kwargs.pop("metadata", None)
    if contrast_limits is not None:
        low, high = float(contrast_limits[0]), float(contrast_limits[1])
        contrast_limits = [low, high if high > low else low + 1.0]
    if layer is None or layer.data.shape != data.shape:
        if layer is not None:
            viewer.layers.remove(layer)
        if contrast_limits is not None:
            kwargs["contrast_limits"] = contrast_limits
        return _keeping_selection(viewer, lambda: viewer.add_image(data, name=name, metadata=metadata or {}, **kwargs))
    if metadata is not None:
        layer.metadata.update(metadata)
    if contrast_limits is not None and (follow_contrast or _far_off(layer.contrast_limits, contrast_limits)):
        if not (
            layer.contrast_limits_range[0] <= contrast_limits[0]
            and contrast_limits[1] <= layer.contrast_limits_range[1]
        ):
            layer.contrast_limits_range = contrast_limits
        layer.contrast_limits = contrast_limits
    layer.data = data
    return layer


def _far_off(current, new, tolerance: float = 0.25) -> bool:
    """True when ``new`` limits differ from ``current`` by more than ``tolerance`` of the span."""
    span = max(float(current[1]) - float(current[0]), 1e-30)
    return (
        abs(float(new[0]) - float(current[0])) > tolerance * span
        or abs(float(new[1]) - float(current[1])) > tolerance * span
    )


def show_residual(viewer, residual: np.ndarray, bound: float, visible: bool | None = None, *, follow_contrast=True):
    """Image layer ``residual`` (observed - predicted), diverging colormap, limits +-bound."""
    bound = bound if bound > 0 and math.isfinite(bound) else 1.0
    existing = find_layer(viewer, RESIDUAL, "Image")
    if visible is None:
        visible = bool(existing.visible) if existing is not None else False
    return upsert_image(
        viewer,
        RESIDUAL,
        residual,
        contrast_limits=(-bound, bound),
        follow_contrast=follow_contrast,
        colormap="PiYG",
        visible=visible,
    )


def hide_overlays(viewer) -> None:
    """Hide the spots, rings and beam centre (a run is about to move the model)."""
    if viewer is None:
        return
    for name in OVERLAY_NAMES:
        if name in viewer.layers:
            viewer.layers[name].visible = False


def remove_overlays(viewer) -> None:
    """Remove the spots, rings and beam centre layers (if any)."""
    if viewer is None:
        return
    for name in OVERLAY_NAMES:
        if name in viewer.layers:
            viewer.layers.remove(name)


def overlay_steps(viewer, data: OverlayData) -> list:
    """The overlays for ``data`` as three steps (rings, spots, beam centre), each one
    layer's work, for the GUI to run on separate event-loop passes; ``data.new_layers``
    are added where no such layer exists yet."""
    new_layers = data.new_layers
    return [
        lambda: show_rings(viewer, data, new_layers.get(RINGS)),
        lambda: show_spots(viewer, data, new_layers.get(SPOTS)),
        lambda: show_beam_centre(viewer, data, new_layers.get(BEAM_CENTER)),
    ]


def show_overlays(viewer, data: OverlayData) -> None:
    """Replace the spots, rings and beam centre with ``data``'s, all at once."""
    for step in overlay_steps(viewer, data):
        step()


def _keeping_selection(viewer, change):
    """Run ``change()`` and keep the layer selection (new layers would take it)."""
    active = viewer.layers.selection.active
    result = change()
    if active is not None and active in viewer.layers and viewer.layers.selection.active is not active:
        viewer.layers.selection.active = active
    return result


def _rings_kwargs(data: OverlayData) -> dict:
    return {
        "shape_type": "path",
        "name": RINGS,
        "edge_color": "cyan",
        "edge_width": data.ring_width_px,
        "features": {"d_label": np.array(data.ring_labels, dtype=object)},
        "text": {"string": "{d_label}", "size": 9, "color": "cyan", "anchor": "upper_left"},
        "opacity": 0.7,
    }


def _spots_kwargs(data: OverlayData, name: str = SPOTS) -> dict:
    return {
        "name": name,
        "features": {"hkl": data.hkl, "label": np.full(len(data.hkl), "", dtype=object)},
        "text": {"string": "{label}", "size": 8, "color": "yellow", "anchor": "upper_left", "visible": False},
        "size": data.diameters_px if len(data.spots_px) else 10.0,
        "symbol": "disc",
        "face_color": "transparent",
        "border_color": "yellow",
        "border_width": 0.1,
        "canvas_size_limits": MARKER_SCREEN_PX,
        "opacity": 0.8,
        "metadata": {"braggsim_spacing_px": data.spacing_px, "braggsim_predicted": data.predicted},
    }


def _beam_kwargs() -> dict:
    return {
        "name": BEAM_CENTER,
        "symbol": "cross",
        "size": 10.0,
        "canvas_size_limits": (10.0, 24.0),
        "face_color": "red",
        "border_color": "red",
    }


def build_overlay_layers(data: OverlayData) -> dict:
    """New napari layers for ``data`` ({name: layer}), made off the GUI thread: the layer
    objects hold no Qt, and making them is the costly part (the first Shapes layer of a
    session spends seconds preparing its triangulation).  The GUI thread only adds them,
    or updates existing layers in place from ``data``."""
    from napari.layers import Points, Shapes

    layers = {}
    if len(data.rings):
        layers[RINGS] = Shapes(data.rings, **_rings_kwargs(data))
    layers[SPOTS] = Points(data.spots_px if len(data.spots_px) else np.zeros((0, 2)), **_spots_kwargs(data))
    if np.all(np.isfinite(data.beam_px)):
        layers[BEAM_CENTER] = Points(data.beam_px[None, :], **_beam_kwargs())
    return layers


def _add(viewer, layer):
    return _keeping_selection(viewer, lambda: viewer.add_layer(layer))


def show_rings(viewer, data: OverlayData, new_layer=None):
    """The resolution rings layer (paths labelled with d), updated in place if it exists,
    else ``new_layer`` (from ``build_overlay_layers``) or a new one added."""
    layer = find_layer(viewer, RINGS, "Shapes")
    if not len(data.rings):
        if layer is not None:
            viewer.layers.remove(layer)
        return None
    if layer is not None:
        layer.data = [(ring, "path") for ring in data.rings]
        layer.features = _rings_kwargs(data)["features"]
        layer.edge_width = [data.ring_width_px] * len(data.rings)
        layer.visible = True
        return layer
    if new_layer is None:
        from napari.layers import Shapes

        new_layer = Shapes(data.rings, **_rings_kwargs(data))
    return _add(viewer, new_layer)


def show_spots(viewer, data: OverlayData, new_layer=None, name: str = SPOTS):
    """The predicted spots layer ``name``, updated in place if it exists; labels follow the camera."""
    layer = find_layer(viewer, name, "Points")
    if layer is None:
        if new_layer is None:
            new_layer = spots_layer(data, name)
        layer = _add(viewer, new_layer)
    else:
        kwargs = _spots_kwargs(data, name)
        layer.text.visible = False
        layer.data = data.spots_px if len(data.spots_px) else np.zeros((0, 2))
        layer.features = kwargs["features"]
        if len(data.spots_px):
            layer.size = data.diameters_px
        layer.metadata.update(kwargs["metadata"])
        layer.visible = True
    update_labels(viewer)
    return layer


def show_beam_centre(viewer, data: OverlayData, new_layer=None):
    """A red cross at the direct beam, updated in place if it exists."""
    layer = find_layer(viewer, BEAM_CENTER, "Points")
    if not np.all(np.isfinite(data.beam_px)):
        if layer is not None:
            viewer.layers.remove(layer)
        return None
    if layer is not None:
        layer.data = data.beam_px[None, :]
        layer.visible = True
        return layer
    if new_layer is None:
        from napari.layers import Points

        new_layer = Points(data.beam_px[None, :], **_beam_kwargs())
    return _add(viewer, new_layer)


def labels_readable(zoom: float, spacing_px: float) -> bool:
    """True when neighbouring spots are at least LABEL_GAP_SCREEN_PX apart on screen."""
    return not math.isfinite(spacing_px) or zoom * spacing_px >= LABEL_GAP_SCREEN_PX


def spots_layer(data: OverlayData, name: str = SPOTS):
    """A new predicted-spots Points layer for ``data`` (no Qt: make it off the GUI thread)."""
    from napari.layers import Points

    return Points(data.spots_px if len(data.spots_px) else np.zeros((0, 2)), **_spots_kwargs(data, name))


def update_labels(viewer) -> None:
    """Show hkl on the MAX_LABELS spots nearest the view's centre, in each LABELLED layer,
    when zoomed in enough to read them; no labels otherwise."""
    for name in LABELLED:
        _update_labels(viewer, find_layer(viewer, name, "Points"))


def _update_labels(viewer, spots) -> None:
    if spots is None or len(spots.data) == 0:
        return
    readable = labels_readable(float(viewer.camera.zoom), float(spots.metadata.get("braggsim_spacing_px", math.inf)))
    if not readable:
        if spots.text.visible:
            spots.text.visible = False
        return
    center = np.asarray(spots.world_to_data(viewer.camera.center), dtype=float)[-2:]
    distance = np.sum((np.asarray(spots.data, dtype=float) - center) ** 2, axis=1)
    nearest = np.argpartition(distance, min(MAX_LABELS, len(distance) - 1))[:MAX_LABELS]
    labels = np.full(len(distance), "", dtype=object)
    labels[nearest] = spots.features["hkl"].to_numpy()[nearest]
    features = spots.features.copy()
    features["label"] = labels
    spots.features = features
    spots.text.visible = True
