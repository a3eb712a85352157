"""One path from a detector frame to napari layers, used by the reader (File > Open and
drag-and-drop), the Load frame widget and the sample.

Every path produces the same two layers, in this order:

1. ``<name> mask``: a hidden labels layer.  **Label 1 = excluded pixel** (dead, module gap,
   saturated, beamstop shadow), 0 = used.  Paint with label 1 to exclude more pixels;
   Refine uses the pixels labelled 0.  (``braggsim.io.Frame.mask`` is the opposite,
   True = trusted; the layer shows what is taken away, which is what one paints.)
2. ``<name>``: the image, with ``metadata["braggsim_frame"]`` holding the header geometry
   (shape, distance, pixel size, wavelength, beam centre) and contrast limits from the
   1st and 99.9th percentiles of the trusted pixels, so real frames are not shown black.
   It is added last, so napari selects it (not the hidden mask) and its blending is
   additive, so a visible mask beneath it tints the excluded pixels.

Everything here is numpy: it runs in the reader or in a worker thread, never needing Qt.
"""

from __future__ import annotations

import os

import numpy as np

MASK_SUFFIX = " mask"
MASK_OF = "braggsim_mask_of"  # a mask layer's metadata: the name of its image layer
PERCENTILES = (1.0, 99.9)
_SAMPLE_PIXELS = 2_000_000  # percentiles from at most this many trusted pixels (a fixed stride)


def contrast_limits(data: np.ndarray, trusted: np.ndarray | None = None) -> list:
    """[low, high] at the 1st and 99.9th percentiles of the trusted finite pixels."""
    values = np.asarray(data)
    keep = np.isfinite(values) if trusted is None else (np.asarray(trusted, bool) & np.isfinite(values))
    picked = values[keep]
    if picked.size > _SAMPLE_PIXELS:
        picked = picked[:: picked.size // _SAMPLE_PIXELS + 1]
    if picked.size:
        low, high = (float(x) for x in np.percentile(picked, PERCENTILES))
    else:
        low, high = 0.0, 1.0
    if not high > low:
        high = low + 1.0
    return [low, high]


def layer_data(name: str, data: np.ndarray, trusted: np.ndarray, metadata: dict, **image_kwargs) -> list:
    """[(mask, kwargs, "labels"), (image, kwargs, "image")] for napari (LayerDataTuples)."""
    data = np.ascontiguousarray(data, dtype=np.float32)
    trusted = np.asarray(trusted, dtype=bool)
    if trusted.shape != data.shape:
        raise ValueError(f"mask shape {trusted.shape} differs from the image {data.shape}")
    image = {
        "name": name,
        "metadata": dict(metadata),
        "contrast_limits": contrast_limits(data, trusted),
        "colormap": "gray",
        "blending": "additive",
        **image_kwargs,
    }
    excluded = (~trusted).astype(np.uint8)  # label 1 = excluded pixel
    mask = {"name": name + MASK_SUFFIX, "metadata": {MASK_OF: name}, "visible": False, "opacity": 0.6}
    return [(excluded, mask, "labels"), (data, image, "image")]


COUNTING_FORMATS = ("cbf", "nexus")  # photon-counting detectors' files: a zero pixel is a count


def read_frame(path):
    """``braggsim.io.read_frame`` as ``braggsim process`` reads a frame: on a photon-counting
    detector (CBF, NeXus) a zero is a count (a Pilatus still's background is mostly zeros
    and ones), so only its negative and saturated pixels are excluded; elsewhere a zero is a
    dead pixel.  The plugin's strong spots then agree with ``braggsim process``."""
    from braggsim.io import guess_format
    from braggsim.io import read_frame as read

    kind = guess_format(os.fspath(path))
    return read(path, zeros_are_dead=False if kind in COUNTING_FORMATS else None)


def frame_layer_data(frame, name: str | None = None) -> list:
    """The two layers for a ``braggsim.io.Frame``; a real frame's beamstop shadow is
    added to its mask (simulated frames have none)."""
    from braggsim.io import beamstop_mask, is_simulated

    trusted = np.asarray(frame.mask, dtype=bool).copy()
    if frame.format != "nanobragg_float" and not is_simulated(frame.header) and frame.beam_center_mm:
        from braggsim.spots import beam_center_px

        if frame.pixel_size_mm:
            trusted &= beamstop_mask(frame.data, beam_center_px(frame), trusted=trusted)
    return layer_data(name or layer_name(frame.path), frame.data, trusted, frame.metadata())


def layer_name(path) -> str:
    """A frame's layer name: its file name without a .gz/.bz2 suffix."""
    name = os.path.basename(os.fspath(path))
    for suffix in (".bz2", ".gz"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def add_layers(viewer, layer_tuples: list) -> list:
    """Add LayerDataTuples to ``viewer`` (replacing layers of the same names), the
    last one selected; returns the layers."""
    from napari.layers import Layer

    added = []
    for data, kwargs, kind in layer_tuples:
        if kwargs["name"] in viewer.layers:
            viewer.layers.remove(kwargs["name"])
        added.append(viewer.add_layer(Layer.create(data, dict(kwargs), kind)))
    if added:
        viewer.layers.selection.active = added[-1]
    return added


def mask_layer_for(viewer, image_layer):
    """The mask labels layer that belongs to ``image_layer``, or None."""
    if viewer is None or image_layer is None:
        return None
    for layer in viewer.layers:
        if layer.__class__.__name__ == "Labels" and (layer.metadata or {}).get(MASK_OF) == image_layer.name:
            return layer
    name = image_layer.name + MASK_SUFFIX
    if name in viewer.layers and viewer.layers[name].__class__.__name__ == "Labels":
        return viewer.layers[name]
    return None
