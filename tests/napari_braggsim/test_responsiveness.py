"""The window keeps responding: the longest gap between ticks of a 20 ms QTimer (an
event-loop stall) stays under 250 ms while the sample refines and while Simulate runs at
1024 x 1024 with overlays (issue 17 measured 1088 ms and about 2 s before).
benchmarks/gui_checks.py measures the same in a fresh process, and 4096 x 4096 too.
These are timings on a shared machine: the failure message gives the load average."""

import os
import time

import numpy as np
from qtpy.QtCore import QTimer

from .conftest import dock, wait_idle

STALL_LIMIT_MS = 250.0


class StallMeter:
    def __init__(self):
        self.ticks = []
        self.timer = QTimer()
        self.timer.setInterval(20)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def __enter__(self):
        self.ticks = [time.perf_counter()]
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.stop()
        self.ticks.append(time.perf_counter())

    @property
    def longest_ms(self) -> float:
        return float(np.diff(self.ticks).max() * 1000.0)


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "?"


def test_no_stall_while_the_sample_refines(sample_viewer, qtbot):
    widget = dock(sample_viewer, "Refine")
    widget.iterations.value = 60
    wait_idle(qtbot, widget)  # the start's preview is on screen
    with StallMeter() as meter:
        widget.run_button.clicked()
        wait_idle(qtbot, widget, timeout=300000)
    assert widget.result.status == "converged"
    assert len(meter.ticks) > 20
    assert meter.longest_ms <= STALL_LIMIT_MS, f"longest stall {meter.longest_ms:.0f} ms (load {_load()})"


def test_no_stall_while_simulate_runs_at_1024_with_overlays(make_napari_viewer, qtbot):
    """A new model on a 1024 x 1024 detector, simulated with its overlays.  The first run
    of a viewer also makes napari's layers (their controls and shaders, a few hundred ms
    each on a loaded 2-core machine, napari's own cost): benchmarks/gui_checks.py reports
    that first run apart; this is every run after it."""
    viewer = make_napari_viewer()
    widget = dock(viewer, "Simulate")
    widget.set_values({"fpixels": 1024, "spixels": 1024})
    widget.run_button.clicked()
    wait_idle(qtbot, widget, timeout=300000)
    widget.set_values({"misset_z_deg": 7.0, "mosaic_spread_deg": 0.3})
    with StallMeter() as meter:
        widget.run_button.clicked()
        wait_idle(qtbot, widget, timeout=300000)
    assert "predicted spots" in viewer.layers and viewer.layers["simulated"].data.shape == (1024, 1024)
    assert meter.longest_ms <= STALL_LIMIT_MS, f"longest stall {meter.longest_ms:.0f} ms (load {_load()})"


def test_progress_updates_never_repaint_the_window_synchronously(make_napari_viewer, qtbot):
    """QProgressBar.setValue repaints at once, which in a window holding napari's OpenGL
    canvas composes the whole window (about 50 ms a call under Mesa); the refine progress
    must be painted with the next ordinary paint instead."""
    from magicgui.widgets import ProgressBar
    from qtpy.QtCore import QEvent, QObject

    from napari_braggsim._widgets._qt import set_progress

    viewer = make_napari_viewer(show=True)
    bar = ProgressBar(max=60, value=0)
    viewer.window.add_dock_widget(bar)
    qtbot.waitExposed(bar.native)
    qtbot.wait(300)  # the window and its canvas painted once

    class PaintCounter(QObject):
        paints = 0

        def eventFilter(self, obj, event):
            if event.type() == QEvent.Type.Paint:
                PaintCounter.paints += 1
            return False

    counter = PaintCounter()
    bar.native.installEventFilter(counter)
    bar.value = 5  # the plain setter paints inside the call: the counter can see it
    assert PaintCounter.paints >= 1
    PaintCounter.paints = 0
    set_progress(bar, 7)
    assert PaintCounter.paints == 0 and bar.value == 7 and bar.native.updatesEnabled()
    qtbot.waitUntil(lambda: PaintCounter.paints >= 1, timeout=5000)  # painted later, by the event loop
    bar.native.removeEventFilter(counter)
