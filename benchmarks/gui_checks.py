"""Drive a real napari viewer the way a user does and check issue 17's three bars, plus
the event-loop stalls while Simulate runs at detector sizes.

    xvfb-run -a .venv/bin/python benchmarks/gui_checks.py            # the three checks
    xvfb-run -a .venv/bin/python benchmarks/gui_checks.py --simulate 1024 4096
    xvfb-run -a .venv/bin/python benchmarks/gui_checks.py --skip-checks --progress

Everything goes through what a user touches: dock widgets by their menu names, buttons by
their text, the path field, layers and notifications.  A stall is the longest gap between
two ticks of a 20 ms QTimer while the work runs (so 20 ms means no stall at all).

Checks (exit status 1 if any fails):
1. the ADSC frame loaded through "Load frame" has a contrast upper limit <= 10x its 99.9th
   percentile;
2. the frame opened by the reader (what drag-and-drop does), then "Refine", then "Run"
   starts a run without a shape error;
3. while the synthetic sample refines (60 iterations), no stall exceeds 250 ms.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_API", "pyqt6")  # the binding napari keeps supporting

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FRAME = ROOT / "tests" / "data" / "adsc_q4_2002.img.bz2"
PLUGIN = "napari-braggsim"
STALL_LIMIT_MS = 250.0


def _app():
    from qtpy.QtWidgets import QApplication

    return QApplication.instance()


def _wait(condition, timeout_s: float, step_s: float = 0.005) -> bool:
    """Run the event loop until ``condition()`` or the timeout; True if it came true."""
    end = time.perf_counter() + timeout_s
    while time.perf_counter() < end:
        _app().processEvents()
        if condition():
            return True
        time.sleep(step_s)
    return bool(condition())


class StallMeter:
    """Longest gap (ms) between ticks of a 20 ms QTimer."""

    def __init__(self, interval_ms: int = 20):
        from qtpy.QtCore import QTimer

        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self.ticks: list = []

    def _tick(self):
        self.ticks.append(time.perf_counter())

    def __enter__(self):
        self.ticks = [time.perf_counter()]
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.stop()
        self._tick()

    @property
    def longest_ms(self) -> float:
        gaps = np.diff(self.ticks) * 1000.0
        return float(gaps.max()) if gaps.size else 0.0


class Notifications:
    """Every napari notification's message, as the user would see it."""

    def __init__(self):
        from napari.utils.notifications import notification_manager

        self.messages: list = []
        notification_manager.notification_ready.connect(self._on)

    def _on(self, event):
        self.messages.append(str(getattr(event, "message", event)))


def _button(widget, text: str):
    """The push button labelled ``text`` inside a dock widget (a QPushButton)."""
    from qtpy.QtWidgets import QPushButton

    native = getattr(widget, "native", widget)
    root = native
    while root.parentWidget() is not None and not root.inherits("QDockWidget"):
        root = root.parentWidget()
    for button in root.findChildren(QPushButton):
        if button.text() == text:
            return button
    raise LookupError(f"no button {text!r} in {widget!r}")


def _viewer():
    import napari
    from napari.settings import get_settings

    get_settings().application.gui_notification_level = "none"
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    _wait(lambda: False, 0.3)
    return viewer


def check_load_frame(notes: Notifications) -> bool:
    viewer = _viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Load frame")
    widget.file.value = FRAME
    _button(widget, "Load").click()
    name = FRAME.name[: -len(".bz2")]
    ok = _wait(lambda: name in viewer.layers, 60)
    if not ok:
        print(f"1. Load frame: FAIL, no layer {name!r} (notifications: {notes.messages})")
        viewer.close()
        return False
    layer = viewer.layers[name]
    p999 = float(np.percentile(layer.data, 99.9))
    high = float(layer.contrast_limits[1])
    ok = high <= 10 * p999
    print(
        f"1. Load frame contrast: upper limit {high:.4g}, 99.9th percentile {p999:.4g}, "
        f"ratio {high / p999:.3g} (limit 10): {'PASS' if ok else 'FAIL'}"
    )
    viewer.close()
    return ok


def check_reader_refine_run(notes: Notifications) -> bool:
    viewer = _viewer()
    viewer.open(str(FRAME), plugin=PLUGIN)  # what a drop does once the reader is chosen
    _wait(lambda: False, 0.2)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Refine")
    _wait(lambda: _button(widget, "Run").isEnabled(), 60)  # enabled once braggsim is loaded
    before = len(notes.messages)
    run, stop = _button(widget, "Run"), _button(widget, "Stop")
    run.click()
    started = _wait(lambda: stop.isEnabled(), 5)
    _wait(lambda: False, 1.0)
    errors = notes.messages[before:]
    shape_error = any("shape" in message for message in errors)
    ok = started and not shape_error
    print(
        f"2. reader -> Refine -> Run: run started {started}, notifications {errors or 'none'}: "
        f"{'PASS' if ok else 'FAIL'}"
    )
    if stop.isEnabled():
        t0 = time.perf_counter()
        stop.click()
        ended = _wait(lambda: run.isEnabled(), 120)
        print(
            f"   Stop -> Run enabled again after {time.perf_counter() - t0:.2f} s ({'ended' if ended else 'still running'})"
        )
    viewer.close()
    return ok


def check_sample_refine_stalls(notes: Notifications) -> bool:
    viewer = _viewer()
    viewer.open_sample(PLUGIN, "synthetic_still")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Refine")
    widget.iterations.value = 60
    # a user looks at the docked widget before pressing Run: by then its preview of the
    # starting model is on screen (at most 10 s here; the old widget had no preview)
    _wait(lambda: not getattr(widget, "busy", False), 10)
    _wait(lambda: False, 0.3)
    run, stop = _button(widget, "Run"), _button(widget, "Stop")
    t0 = time.perf_counter()
    with StallMeter() as meter:
        run.click()
        _wait(lambda: stop.isEnabled(), 5)
        finished = _wait(lambda: run.isEnabled() and not stop.isEnabled(), 300)
    elapsed = time.perf_counter() - t0
    ok = finished and meter.longest_ms <= STALL_LIMIT_MS
    print(
        f"3. sample refine: {elapsed:.1f} s, {len(meter.ticks)} ticks, longest stall {meter.longest_ms:.0f} ms "
        f"(limit {STALL_LIMIT_MS:.0f}): {'PASS' if ok else 'FAIL'}"
    )
    viewer.close()
    return ok


def simulate_stall(size: int) -> float:
    viewer = _viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Simulate")
    _wait(lambda: getattr(widget, "ready", True), 60)  # its fields come once braggsim is loaded
    fields = getattr(widget, "fields", None) or widget._fields  # (_fields: the widget before issue 17)
    fields["fpixels"].value = size
    fields["spixels"].value = size
    _wait(lambda: False, 0.3)
    # the first Simulate also pays for torch's import and the kernel's first use
    with StallMeter() as meter:
        _button(widget, "Run").click()
        _wait(lambda: "simulated" in viewer.layers and "predicted spots" in viewer.layers, 300)
        _wait(lambda: False, 0.5)
    first = meter.longest_ms
    with StallMeter() as meter:
        _button(widget, "Run").click()
        _wait(lambda: False, 0.2)
        _wait(lambda: "simulating" not in str(getattr(widget, "status", "")), 300)
        _wait(lambda: False, 1.0)
    again = meter.longest_ms
    spots = viewer.layers["predicted spots"] if "predicted spots" in viewer.layers else None  # noqa: SIM401
    drawn = 0 if spots is None else len(spots.data)
    print(
        f"   Simulate {size}x{size} with overlays: longest stall {first:.0f} ms (first run), {again:.0f} ms (second); "
        f"{drawn} spots drawn"
    )
    viewer.close()
    return max(first, again)


def progress_update_ms(repeats: int = 20) -> tuple:
    """Median ms of one progress-bar update in a window holding napari's canvas: magicgui's
    setter (QProgressBar.setValue repaints at once) and the plugin's set_progress."""
    from magicgui.widgets import ProgressBar

    from napari_braggsim._widgets._qt import set_progress

    viewer = _viewer()
    viewer.add_image(np.random.default_rng(0).random((512, 512)))
    bar = ProgressBar(max=1000, value=0)
    viewer.window.add_dock_widget(bar)
    _wait(lambda: False, 0.5)
    medians = []
    for setter in (lambda value: setattr(bar, "value", value), lambda value: set_progress(bar, value)):
        times = []
        for _ in range(repeats):
            value = (bar.value + 17) % 1000
            t0 = time.perf_counter()
            setter(value)
            times.append((time.perf_counter() - t0) * 1000.0)
            _wait(lambda: False, 0.02)
        medians.append(float(np.median(times)))
    print(f"   progress bar update: {medians[0]:.1f} ms (magicgui setter), {medians[1]:.2f} ms (set_progress)")
    viewer.close()
    return tuple(medians)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--simulate", type=int, nargs="*", default=[], help="also time Simulate at these sizes")
    parser.add_argument("--skip-checks", action="store_true", help="only the Simulate timings")
    parser.add_argument("--progress", action="store_true", help="also time one progress-bar update both ways")
    args = parser.parse_args(argv)
    import napari  # noqa: F401  creates the QApplication's binding choice
    from napari._qt.qt_event_loop import get_qapp  # the viewer's own QApplication

    get_qapp()
    import qtpy

    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else "?"
    print(f"napari {napari.__version__}, {qtpy.API_NAME}, load average {' '.join(load)}")
    notes = Notifications()
    ok = True
    if not args.skip_checks:
        ok &= check_load_frame(notes)
        ok &= check_reader_refine_run(notes)
        ok &= check_sample_refine_stalls(notes)
    for size in args.simulate:
        ok &= simulate_stall(size) <= STALL_LIMIT_MS
    if args.progress:
        progress_update_ms()
    print("all checks passed" if ok else "some checks FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
