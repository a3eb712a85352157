"""One evented state per viewer: what every braggsim widget on that viewer shares.

The widgets never look each other up.  Each one reads and writes this state and listens
to its events (``state.events.values.connect(...)``):

* ``values``: the model as a flat value dict (``_model`` names: cell, misset, detector,
  beam ...).  The Simulate widget's fields and the Refine widget's starting values show
  it; Apply writes the refined values into it.
* ``observed``: the observed image layer (chosen in Refine, or set by Load frame); its
  geometry is copied into ``values`` when it changes.
* ``result``: the last refinement result (``braggsim.refine.RefineResult``) or None.
* ``overlays``: whether spots, rings and the beam centre are drawn.
* ``resolution``: the d-spacing text under the cursor ("d = 2.31 Å").

A state is an evented dataclass (psygnal): assigning a field emits its event with the new
value, and nothing is emitted when the value is unchanged.  No Qt here.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any

from psygnal import evented

from . import _common
from ._model import complete, follow_detector_centre, values_from_layer

_STATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@evented
@dataclasses.dataclass(eq=False)
class BraggsimState:
    values: dict = dataclasses.field(default_factory=lambda: complete({}))
    observed: Any = None
    result: Any = None
    overlays: bool = True
    resolution: str = ""

    def update_values(self, changes: dict) -> None:
        """Merge ``changes`` into ``values`` (one event); a beam centre at the detector's
        default follows a change of detector size."""
        new = complete({**self.values, **changes})
        new = follow_detector_centre(self.values, new)
        if new != self.values:
            self.values = new

    def observe(self, layer) -> None:
        """Make ``layer`` the observed layer and take its geometry (and any model or
        starting values its metadata carries) into ``values``."""
        if layer is not None:
            self.values = values_from_layer(layer.metadata, layer.data.shape, base=self.values)
        self.observed = layer


def state_for(viewer) -> BraggsimState:
    """The state of ``viewer`` (napari's plugin proxy or the viewer itself); made once."""
    key = _common.unwrap(viewer)
    state = _STATES.get(key)
    if state is None:
        state = BraggsimState()
        _STATES[key] = state
    return state
