"""Detector frames: read (SMV, CBF, EDF, TIFF, NeXus/Eiger, nanoBragg float), mask, write.

    frame = braggsim.io.read_frame("image.img")
    detector = braggsim.Detector(**frame.detector_kwargs())

No napari or Qt here; fabio and h5py are imported when a file is read.
"""

from ._atomic import OutputPathError, atomic_group, atomic_output, check_output_path
from ._bytes import read_bytes, strip_compression
from .errors import FrameReadError
from .frame import Frame, frame_from_metadata
from .masks import beamstop_mask, dead_pixel_mask, default_mask, disk_mask, saturation_mask, user_mask
from .read import guess_format, image_count, is_simulated, read_frame, sidecar_path
from .write import intfile_scale, write_float, write_smv

__all__ = [
    "Frame",
    "FrameReadError",
    "OutputPathError",
    "atomic_group",
    "atomic_output",
    "beamstop_mask",
    "check_output_path",
    "dead_pixel_mask",
    "default_mask",
    "disk_mask",
    "frame_from_metadata",
    "guess_format",
    "image_count",
    "intfile_scale",
    "is_simulated",
    "read_bytes",
    "read_frame",
    "saturation_mask",
    "sidecar_path",
    "strip_compression",
    "user_mask",
    "write_float",
    "write_smv",
]
