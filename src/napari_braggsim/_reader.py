"""napari reader: detector frames -> an image layer (geometry in metadata) + a mask labels layer.

braggsim is imported inside the functions so napari starts fast.
"""

from __future__ import annotations

import os

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def get_reader(path):
    """The reader function for ``path``, or None if braggsim cannot read it. Never raises."""
    try:
        if isinstance(path, (list, tuple)):
            if len(path) != 1:
                return None
            path = path[0]
        if not isinstance(path, (str, os.PathLike)):
            return None
        path = os.fspath(path)
        if not os.path.isfile(path) or os.path.getsize(path) == 0:
            return None
        from braggsim.io.read import guess_format, sidecar_path

        kind = guess_format(path)
        if kind is None:
            return None
        if kind == "nanobragg_float" and not os.path.isfile(sidecar_path(path)):
            return None  # raw floats need their shape; without a sidecar this is someone else's .bin
        if kind == "nexus":
            with open(path, "rb") as handle:
                if handle.read(8) != _HDF5_MAGIC:
                    return None
        return read_layers
    except Exception:  # get_reader must never raise: napari then tries other readers  # noqa: BLE001  any failure becomes a message, never a traceback
        return None


def read_layers(path):
    """[(image, image kwargs, "image"), (mask labels, labels kwargs, "labels")]."""
    import numpy as np

    from braggsim.io import beamstop_mask, read_frame
    from braggsim.io.read import is_simulated

    if isinstance(path, (list, tuple)):
        path = path[0]
    frame = read_frame(path)
    if (
        frame.format != "nanobragg_float"
        and not is_simulated(frame.header)
        and frame.beam_center_mm
        and frame.pixel_size_mm
    ):
        from braggsim.spots import beam_center_px

        frame.mask &= beamstop_mask(frame.data, beam_center_px(frame), trusted=frame.mask)
    name = os.path.basename(os.fspath(path))
    trusted = frame.data[frame.mask]
    if trusted.size:
        low, high = (float(x) for x in np.percentile(trusted, [1.0, 99.5]))
    else:
        low, high = float(frame.data.min()), float(frame.data.max())
    if not high > low:
        high = low + 1.0
    metadata = frame.metadata()
    image = (frame.data, {"name": name, "metadata": metadata, "contrast_limits": [low, high]}, "image")
    untrusted = (~frame.mask).astype(np.uint8)  # label 1 = masked pixel
    labels = (untrusted, {"name": f"{name} mask", "metadata": metadata, "visible": False, "opacity": 0.5}, "labels")
    return [image, labels]
