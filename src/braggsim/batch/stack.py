"""Many frames as one lazy (n, slow, fast) dask array: a frame is read when a slice needs it.

    refs = expand_frames(["grid/"])
    stack = frame_stack(refs)          # nothing read yet but the first frame's shape
    image = stack[12].compute()        # reads refs[12] only

This is what a viewer shows for a folder or a multi-image file; a frame that cannot be
read, or whose shape differs from the first, is all NaN (``errors="raise"`` raises
instead), so one bad file does not break browsing the rest.
"""

from __future__ import annotations

import numpy as np

from .sources import FrameRef, expand_frames


def frame_stack(frames, *, shape: tuple | None = None, errors: str = "nan", read=None):
    """A dask array (n, slow, fast) float32 of the frames' pixels, chunked one frame each.

    frames: FrameRefs, or paths / patterns / folders for :func:`expand_frames`.
    shape: (slow, fast) of every frame; default: read from the first frame.
    errors: "nan" (an unreadable or differently shaped frame is NaN) or "raise".
    read: ``FrameRef -> (slow, fast) array``, how a frame is read; default
        :func:`read_pixels` (a viewer passes its cache of recently read frames here).
    """
    import dask.array as da

    if errors not in ("nan", "raise"):
        raise ValueError(f"errors={errors!r} must be 'nan' or 'raise'")
    refs = list(frames) if frames and all(isinstance(f, FrameRef) for f in frames) else expand_frames(frames)
    if not refs:
        raise ValueError("no frames to stack")
    if shape is None:
        shape = (read or read_pixels)(refs[0]).shape
    shape = tuple(int(n) for n in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape={shape!r} must be (slow, fast) positive integers")

    def load(block_info=None):
        index = block_info[None]["chunk-location"][0]
        return _frame_or_nan(refs[index], shape, errors, read)[None]

    return da.map_blocks(
        load,
        chunks=((1,) * len(refs), (shape[0],), (shape[1],)),
        dtype=np.float32,
        meta=np.empty((0, 0, 0), np.float32),
        name="braggsim-frames-" + _token(refs, shape, None if read is None else id(read)),
    )


def read_pixels(ref: FrameRef) -> np.ndarray:
    """The (slow, fast) float32 pixels of one frame."""
    from ..io import read_frame

    return read_frame(ref.path, ref.index).data


def _frame_or_nan(ref: FrameRef, shape: tuple, errors: str, read=None) -> np.ndarray:
    try:
        data = read(ref) if read is not None else read_pixels(ref)
        if data.shape != shape:
            raise ValueError(f"{ref}: shape {data.shape} differs from the stack's {shape}")
    except (OSError, ValueError):
        if errors == "raise":
            raise
        return np.full(shape, np.nan, np.float32)
    return data


def _token(refs, shape, reader) -> str:
    from dask.base import tokenize

    return tokenize([(r.path, r.index) for r in refs], shape, reader)
