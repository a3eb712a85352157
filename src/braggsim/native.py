"""The fused simulation kernel ("native", numba), for callers that must not wait on it.

:func:`braggsim.simulate` runs it where it is exact (``kernel="auto"``) and the torch path
elsewhere.  Its first call compiles it: a few seconds, about 1 s when loaded from the
on-disk cache.  A GUI warms it up in the background and asks whether it is ready before it
simulates on its own thread.  ``BRAGGSIM_NATIVE=0`` switches it off everywhere.

The noise module's nanoBragg/noisify-exact loops are numba-compiled the same way:
:func:`warm_up_noise` compiles (or loads) them in the caller's thread, and
:func:`noise_unavailable_reason` says why the pure-Python twin is in use instead.
"""

from ._fast import available, ready, unavailable_reason, warm_up
from ._noise_numba import unavailable_reason as noise_unavailable_reason
from ._noise_numba import warm_up as warm_up_noise

__all__ = ["available", "noise_unavailable_reason", "ready", "unavailable_reason", "warm_up", "warm_up_noise"]
