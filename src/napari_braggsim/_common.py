"""Small shared pieces of the widgets: a per-viewer widget registry and error reporting."""

from __future__ import annotations

import threading
import weakref

_WIDGETS: weakref.WeakSet = weakref.WeakSet()
_warm_up_started = threading.Event()


def register(widget) -> None:
    """Remember a dock widget so its siblings on the same viewer can find it, and start
    preparing the simulation kernel (once per process)."""
    _WIDGETS.add(widget)
    start_kernel_warm_up()


def start_kernel_warm_up() -> None:
    """Compile, or load from its cache, braggsim's fused kernel in a background thread, so
    that no simulation on the GUI thread has to (importing torch happens there too)."""
    if _warm_up_started.is_set():
        return
    _warm_up_started.set()
    threading.Thread(target=_warm_up_kernel, name="braggsim-kernel-warm-up", daemon=True).start()


def _warm_up_kernel() -> None:
    from braggsim import _fast

    _fast.warm_up(background=False)


def kernel_ready() -> bool:
    """Whether a simulation can run on the GUI thread without compiling the kernel."""
    from braggsim import _fast

    return _fast.ready()


def unwrap(viewer):
    """The real viewer behind napari's PublicOnlyProxy (plugins receive the proxy)."""
    return getattr(viewer, "__wrapped__", viewer)


def siblings(viewer, kind=None) -> list:
    """Live braggsim widgets docked on ``viewer`` (optionally of class ``kind``)."""
    found = []
    target = unwrap(viewer)
    for widget in list(_WIDGETS):
        if unwrap(getattr(widget, "viewer", None)) is not target:
            continue
        if kind is not None and not isinstance(widget, kind):
            continue
        try:
            widget.objectName()  # raises once Qt has deleted the C++ side
        except RuntimeError:
            continue
        found.append(widget)
    return found


def notify_error(message: str) -> None:
    """Show ``message`` as a napari error notification (never a traceback)."""
    from napari.utils.notifications import show_error

    show_error(message)


def describe(exc: BaseException) -> str:
    """One readable line for an exception."""
    text = str(exc).strip() or exc.__class__.__name__
    return text if isinstance(exc, ValueError) else f"{exc.__class__.__name__}: {text}"


def number_box(key: str, label: str, low, high, step, decimals, value):
    """A magicgui spin box: an integer SpinBox when ``decimals`` is None, else a FloatSpinBox."""
    from magicgui.widgets import FloatSpinBox, SpinBox

    if decimals is None:
        return SpinBox(name=key, label=label, min=int(low), max=int(high), step=int(step), value=int(value))
    widget = FloatSpinBox(name=key, label=label, min=low, max=high, step=step, value=float(value))
    widget.native.setDecimals(decimals)
    return widget
