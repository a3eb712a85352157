"""napari reader: detector frames -> a mask labels layer + an image layer (geometry in metadata),
the same two layers as the Load frame widget makes (``_frames``).

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
        from braggsim.io import guess_format, sidecar_path

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
    """[(mask labels, kwargs, "labels"), (image, kwargs, "image")]: the same layers as the
    Load frame widget and the sample make (see ``_frames``)."""
    from ._frames import frame_layer_data, read_frame

    if isinstance(path, (list, tuple)):
        path = path[0]
    return frame_layer_data(read_frame(path))
