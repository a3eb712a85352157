"""Sample data: the refinement demo's observed frame with its starting model.

The frame is simulated by braggsim with the demo's ground truth (nanoBragg golden case
p02_seed_truth: mosaic 0.8 deg, misset 5 3 -2 deg); the layer's metadata carries the
header-like geometry and the deliberately wrong starting model (mosaic 0.2 deg, no
misset), so the Refine widget can start at once and should find the truth.  It comes as
the same two layers a frame file gives (``_frames``): an empty mask and the image.
"""

from __future__ import annotations

from . import _warmup
from ._model import DEFAULTS, build_model, frame_metadata, start_values

LAYER_NAME = "observed (synthetic still)"


def synthetic_still() -> list:
    """[(mask (64, 64) uint8, kwargs, "labels"), (image (64, 64) float32, kwargs, "image")]."""
    import numpy as np
    import torch

    import braggsim

    # napari opens samples on the GUI thread, where the fused kernel must not be compiled:
    # until its warm-up (started here) is done, the torch path makes this small image, the
    # same to float32 rounding
    from braggsim import _fast

    from ._frames import layer_data

    _warmup.start()
    kernel = "auto" if _fast.ready() else "torch"
    with torch.no_grad():
        image = braggsim.simulate(*build_model(DEFAULTS), kernel=kernel).numpy().astype("float32")
    metadata = {
        "braggsim_frame": frame_metadata(DEFAULTS),
        "braggsim_start": start_values(),
        "braggsim_truth": dict(DEFAULTS),
    }
    return layer_data(LAYER_NAME, image, np.ones(image.shape, dtype=bool), metadata)
