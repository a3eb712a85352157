"""The fused simulation kernel ("native", numba), for callers that must not wait on it.

:func:`braggsim.simulate` runs it where it is exact (``kernel="auto"``) and the torch path
elsewhere.  Its first call compiles it: a few seconds, about 1 s when loaded from the
on-disk cache.  A GUI warms it up in the background and asks whether it is ready before it
simulates on its own thread.  ``BRAGGSIM_NATIVE=0`` switches it off everywhere.
"""

from ._fast import available, ready, unavailable_reason, warm_up

__all__ = ["available", "ready", "unavailable_reason", "warm_up"]
