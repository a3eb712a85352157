"""Qt pieces the dock widgets share: a scrolling body, collapsible sections, the poll
timer, closing hooks."""

from __future__ import annotations

import collections
import contextlib
import weakref

from magicgui.widgets import Container
from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import QFrame, QScrollArea, QSizePolicy, QToolButton

FRAME_INTERVAL_MS = 40  # the GUI looks at a running job at most 25 times a second
DOCK_WIDTH_PX = 380  # every dock fits beside the canvas in a 1600-px-wide window


def add_scrolling(outer, inner) -> QScrollArea:
    """Put magicgui container ``inner`` into ``outer`` inside a vertical scroll area.

    napari docks a container's ``native`` (the widget holding its layout), which drops a
    magicgui ``scrollable=True`` container's own scroll area; this one lives in the layout.
    """
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(_policy("ScrollBarAlwaysOff"))
    scroll.setWidget(inner.native)
    scroll.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
    scroll.setMinimumHeight(160)
    outer.native.layout().addWidget(scroll)
    return scroll


class Collapsible(Container):
    """A titled section of fields: a flat arrow button, and the fields under it, shown only
    while the section is expanded (a click on the title toggles it).

    ``body`` is the magicgui container of the fields (``section.body[name]``); the
    section is collapsed unless ``expanded``.
    """

    def __init__(self, title: str, widgets=(), *, name: str = "", expanded: bool = False):
        super().__init__(name=name or title.lower(), labels=False)
        self.title = title
        self.body = Container(name=f"{self.name}_fields", widgets=list(widgets))
        self.append(self.body)
        from qtpy.QtCore import Qt

        button = QToolButton()
        button.setText(title)
        button.setCheckable(True)
        button.setAutoRaise(True)
        button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        button.setToolTip(f"Show or hide the {title.lower()} fields.")
        font = button.font()
        font.setBold(True)
        button.setFont(font)
        self.header = button
        self.native.layout().insertWidget(0, button)
        button.toggled.connect(self._show_body)
        self._show_body(expanded)
        button.setChecked(expanded)

    @property
    def expanded(self) -> bool:
        return self.header.isChecked()

    @expanded.setter
    def expanded(self, on: bool) -> None:
        self.header.setChecked(bool(on))  # toggled -> _show_body

    def _show_body(self, on: bool) -> None:
        from qtpy.QtCore import Qt

        self.header.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)
        self.body.visible = bool(on)


def _policy(name: str):
    from qtpy.QtCore import Qt

    return getattr(Qt.ScrollBarPolicy, name)


def fit_width(container) -> None:
    """Make a dock DOCK_WIDTH_PX wide (at most 40 px more): every field fits without a
    sideways scroll bar, and the canvas keeps most of a 1600-px window."""
    container.native.setMinimumWidth(DOCK_WIDTH_PX)
    container.native.setMaximumWidth(DOCK_WIDTH_PX + 40)


def when_core_ready(callback) -> None:
    """Call ``callback()`` once braggsim is loaded (at once if it is): the widgets' number
    fields come from its registry, and loading it on the GUI thread would freeze the
    window for seconds.  Checks every FRAME_INTERVAL_MS meanwhile."""
    from .. import _warmup

    _warmup.start()
    if _warmup.core_ready():
        callback()
        return
    timer = QTimer()
    timer.setInterval(FRAME_INTERVAL_MS)
    # a bound method is held weakly: a widget closed while it waits is not kept alive
    target = weakref.WeakMethod(callback) if hasattr(callback, "__self__") else (lambda: callback)

    def check():
        method = target()
        if method is None or _warmup.core_ready():
            timer.stop()
            _PENDING.discard(timer)
        if method is not None and _warmup.core_ready():
            with contextlib.suppress(RuntimeError):  # the widget was closed meanwhile
                method()

    timer.timeout.connect(check)
    _PENDING.add(timer)
    timer.start()


_PENDING: set = set()  # keeps the waiting timers alive


class Poller:
    """The one place background work reaches the screen.

    Every FRAME_INTERVAL_MS it either runs one deferred GUI step (``defer(step)``: one
    layer made or updated) or, when none is waiting, calls ``poll()``, which looks at the
    jobs and defers the steps their news needs; ``poll()`` returns False when no job is
    left, and the timer stops once the steps are done too.  So one event-loop pass does
    at most one layer's work, however much arrives at once, and the GUI never queues more
    than the newest state.
    """

    def __init__(self, poll, interval_ms: int = FRAME_INTERVAL_MS):
        self._poll = poll
        self._steps: collections.deque = collections.deque()
        self._polling = False
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)

    def start(self) -> None:
        self._polling = True
        self.timer.start()

    def defer(self, step) -> None:
        """Run ``step()`` on a later tick (in order), each on a tick of its own."""
        self._steps.append(step)
        if not self.timer.isActive():
            self.timer.start()

    def stop(self) -> None:
        """Stop now, dropping waiting steps (the widget is going away)."""
        self._polling = False
        self._steps.clear()
        with contextlib.suppress(RuntimeError):  # Qt has deleted the timer (the application is closing)
            self.timer.stop()

    @property
    def active(self) -> bool:
        return self._polling or bool(self._steps)

    def _tick(self) -> None:
        if self._steps:
            step = self._steps.popleft()
            with contextlib.suppress(RuntimeError):  # a layer or widget was deleted meanwhile (viewer closing)
                step()
            return
        if self._polling:
            self._polling = bool(self._poll())
        if not self._polling and not self._steps:
            self.timer.stop()


class _Watcher(QObject):
    """Calls ``on_close()`` when the watched widget leaves its dock (napari's close button
    takes it out: its parent becomes None) or when the window it was shown in closes."""

    def __init__(self, native, on_close):
        super().__init__(native)
        self._native = native
        self._on_close = on_close
        self._window = None

    def eventFilter(self, obj, event):
        kind = event.type()
        if (
            obj is self._window
            and kind == QEvent.Type.Close
            or obj is self._native
            and kind == QEvent.Type.ParentChange
            and self._native.parent() is None
        ):
            self._on_close()
        elif obj is self._native and kind == QEvent.Type.Show:
            window = self._native.window()
            if window is not self._window and window.inherits("QMainWindow"):
                if self._window is not None:
                    self._window.removeEventFilter(self)
                self._window = window
                window.installEventFilter(self)
        return False


def stop_when_closed(container, on_close) -> None:
    """Call ``on_close()`` (a plain callable that touches no Qt object of the widget) when
    the dock is closed, when the widget is destroyed, or when the viewer's window closes.
    Hiding a dock (its hide button, another tab in front) does not stop anything."""
    native = container.native
    native.destroyed.connect(lambda *_: on_close())
    watcher = _Watcher(native, on_close)
    native.installEventFilter(watcher)


def set_progress(bar, value: int) -> None:
    """Set a magicgui ProgressBar without the synchronous repaint QProgressBar.setValue
    does: in a window holding napari's OpenGL canvas that repaint composes the whole window
    (about 50 ms under Mesa's software GL), on every iteration of a run.  The bar is
    painted with the next ordinary paint instead."""
    native = bar.native
    native.setUpdatesEnabled(False)
    try:
        native.setValue(int(value))
    finally:
        native.setUpdatesEnabled(True)
    native.update()
