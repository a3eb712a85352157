"""Load braggsim (torch) and run its kernel once, in a background thread, as soon as a
widget docks, so the first Simulate or Refine does not wait for it and the GUI never does
(napari's overlay layer types and the noise module's loops are warmed the same way).

``import torch`` takes about 3 s here.  Most of it runs Python code, which shares the
interpreter lock with the GUI thread every few milliseconds; but loading torch's shared
libraries goes through ``dlopen`` inside the import machinery with the lock held, which
froze the GUI for 350-580 ms in one piece.  ``ctypes.CDLL`` releases the lock around
``dlopen``, so the libraries are loaded that way first and the import then finds them
already mapped (the longest GUI stall during the warm-up drops under 200 ms).

No Qt here.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import threading

_LIBRARIES = ("libc10.so", "libtorch_cpu.so", "libtorch.so", "libtorch_python.so")
_lock = threading.Lock()
_thread: threading.Thread | None = None
_done = threading.Event()
_core = threading.Event()  # braggsim (and its refine registry) imported
error: BaseException | None = None


def _preload_torch_libraries() -> None:
    if not sys.platform.startswith("linux") or "torch" in sys.modules:
        return
    import ctypes

    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return
    folder = os.path.join(os.path.dirname(spec.origin), "lib")
    for name in _LIBRARIES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with contextlib.suppress(OSError):  # the import below then loads it the usual way
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)


def _warm() -> None:
    global error
    from ._jobs import lower_priority

    lower_priority()
    try:
        _load_units()
        _preload_torch_libraries()
        import torch

        import braggsim
        import braggsim.refine  # noqa: F401  the widgets' fields come from its registry
        import braggsim.spots  # noqa: F401  the overlays need it

        _core.set()

        from braggsim import native

        # the kernels live simulation and refinement use, compiled or loaded from the
        # on-disk cache (once per machine: about 4 s cold, about 1 s warm)
        native.warm_up(background=False)
        with torch.no_grad():
            braggsim.simulate(
                braggsim.Crystal(default_F=1.0, N_cells=(2, 2, 2)), braggsim.Detector(fpixels=4, spixels=4)
            )
        _warm_napari_layers()
        # noisify's exact loops, for Simulate's noise section, last: they run in Simulate's
        # background job, which would otherwise compile them for the first noisy frame
        # (0.02 s of CPU here with a warm cache, about 3 s on a machine's first run)
        from braggsim import native

        native.warm_up_noise()
    except BaseException as exc:  # noqa: BLE001  the first real call reports it properly
        error = exc
    finally:
        _core.set()
        _done.set()


def _load_units() -> None:
    """Load pint's unit registry, which every napari layer asks for its pixel unit, before
    the fields (and so Run) are offered.  pint builds it lazily on first use and is not
    thread-safe meanwhile: a second thread sees a registry without 'pixel' yet, and
    overlay layers built in a worker then failed with UndefinedUnitError while this
    thread's layer warm-up built the registry (a flaky test on a busy machine)."""
    try:
        import pint
    except ImportError:  # no napari (and so no pint): nothing to load
        return
    _ = pint.get_application_registry().pixel


def _warm_napari_layers() -> None:
    """Make (and drop) a small Shapes path layer and a Points layer with text: the first
    Shapes layer of a session prepares its triangulation for seconds, which the first
    overlays would otherwise pay.  Layer objects hold no Qt."""
    try:
        import numpy as np
        from napari.layers import Points, Shapes
    except ImportError:  # no napari: nothing to warm
        return
    path = np.array([[0.0, 0.0], [1.0, 2.0], [3.0, 1.0]])
    Shapes([path], shape_type="path", features={"d": ["x"]}, text={"string": "{d}"})
    Points(path, features={"hkl": ["1 0 0"] * 3}, text={"string": "{hkl}", "visible": False})


def start() -> None:
    """Start the warm-up (once per process); returns at once."""
    global _thread
    with _lock:
        if _thread is None:
            # even when braggsim is already imported, "core ready" waits for the thread to
            # pass _load_units: a layer made meanwhile would race pint's lazy registry
            _thread = threading.Thread(target=_warm, name="braggsim warm-up", daemon=True)
            _thread.start()


def core_ready() -> bool:
    """True once braggsim and its refine registry are imported (importing them again is
    instant), or the warm-up failed (the import then fails where it is used, with its
    message)."""
    return _core.is_set()


def ready() -> bool:
    """True once braggsim is imported and its kernel has run (or the warm-up failed)."""
    return _done.is_set()


def wait(timeout_s: float | None = None) -> bool:
    start()
    return _done.wait(timeout_s)
