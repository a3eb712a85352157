"""napari writer: an image layer with braggsim geometry -> an SMV (.img) detector frame.

The header carries the layer's geometry: the Simulate widget's full model
(``braggsim_model`` metadata) or a loaded frame's header (``braggsim_frame``), so the
file reads back with the same geometry.  braggsim is imported inside the functions so
napari starts fast.
"""

from __future__ import annotations

import numpy as np

from . import _common

SMV_MAX_COUNT = 65535


def write_smv_layer(path: str, data, meta: dict) -> list:
    """The manifest's writer: ``write_smv_frame``, with a refusal shown as a notification.

    napari reads a ValueError from a writer as "not a valid writer" and drops its
    message, so the reason is shown here and no path is returned.
    """
    try:
        return write_smv_frame(path, data, meta)
    except ValueError as exc:
        _common.notify_error(f"Save as SMV: {exc}")
        return []


def write_smv_frame(path: str, data, meta: dict) -> list:
    """Write one 2-D image layer as unsigned-short SMV; returns ``[path]``.

    data: (slow, fast) image; meta: napari's layer attributes (``name``, ``metadata``).
    Integer-valued pixels within 0..65535 (counts, as a loaded frame holds) are written
    as they are.  Other images (simulated photons) are scaled as nanoBragg's -intfile
    scales them, brightest pixel 55000, and the header records ``BRAGGSIM_SCALE``.
    ValueError when the layer is not 2-D or carries no matching braggsim geometry.
    """
    from braggsim.io import intfile_scale, write_smv

    image = np.asarray(data)
    name = meta.get("name", "layer")
    if image.ndim != 2:
        raise ValueError(f"SMV holds one 2-D frame; layer {name!r} has shape {image.shape}")
    detector, beam = _geometry(name, meta.get("metadata") or {}, image.shape)
    finite = np.isfinite(image)
    is_counts = (
        finite.all() and np.array_equal(image, np.round(image)) and image.min() >= 0 and image.max() <= SMV_MAX_COUNT
    )
    if is_counts:
        write_smv(path, image, detector=detector, beam=beam, scale=1.0)
    else:
        scale = intfile_scale(image)
        write_smv(path, image, detector=detector, beam=beam, scale=scale, header_extra={"BRAGGSIM_SCALE": scale})
    return [path]


def _geometry(name: str, metadata: dict, shape: tuple):
    """(Detector, Beam) from a layer's metadata; ValueError if there is none or it does not fit."""
    from braggsim import Beam, Detector
    from braggsim.io import frame_from_metadata

    if isinstance(metadata.get("braggsim_model"), dict):
        from ._model import build_model

        _, detector, beam = build_model(metadata["braggsim_model"])
    else:
        try:
            geometry = frame_from_metadata(metadata)
        except ValueError as exc:
            raise ValueError(
                f"layer {name!r} carries no detector geometry for the SMV header; load or simulate "
                f"it with napari-braggsim ({exc})"
            ) from None
        detector, beam = Detector(**geometry["detector"]), Beam(**geometry["beam"])
    if detector.shape != tuple(shape):
        raise ValueError(f"layer {name!r} is {tuple(shape)} pixels but its geometry is {detector.shape} (slow, fast)")
    return detector, beam
