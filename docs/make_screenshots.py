"""Screenshots for docs/user-guide.md, one per dock widget, taken headless.

    xvfb-run -a .venv/bin/python docs/make_screenshots.py

Writes docs/images/{simulate,load_frame,refine}.png.  Every image is made by the plugin
itself through napari's own screenshot call, so the guide shows what a user sees.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
FRAME = ROOT / "tests" / "data" / "adsc_q4_2002.img.bz2"
PLUGIN = "napari-braggsim"
WINDOW = (1280, 820)


def _settle(seconds: float = 0.5) -> None:
    end = time.time() + seconds
    while time.time() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def _viewer():
    from napari.settings import get_settings

    get_settings().application.gui_notification_level = "none"  # no toasts in the pictures
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(*WINDOW)
    viewer.window._qt_window.showNormal()
    _settle()
    return viewer


def _save(viewer, name: str) -> Path:
    _settle()
    path = IMAGES / f"{name}.png"
    image = viewer.screenshot(canvas_only=False, flash=False)
    from PIL import Image

    # an adaptive 256-colour palette keeps each PNG well under 300 KB
    Image.fromarray(image[..., :3]).quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"{path.relative_to(ROOT)}: {path.stat().st_size // 1024} KB")
    return path


def simulate_shot():
    viewer = _viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Simulate")
    widget.run()
    viewer.reset_view()
    _save(viewer, "simulate")
    viewer.close()


def load_shot():
    viewer = _viewer()
    _, simulate = viewer.window.add_plugin_dock_widget(PLUGIN, "Simulate")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Load frame")
    widget.file.value = FRAME
    layer = widget.load()
    layer.contrast_limits = (0, 400)
    viewer.reset_view()
    viewer.camera.zoom *= 2.5  # the spots around the beam stop
    _save(viewer, "load_frame")
    viewer.close()


def refine_shot():
    viewer = _viewer()
    viewer.open_sample(PLUGIN, "synthetic_still")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Refine")
    widget.iterations.value = 60
    worker = widget.run()
    done = []
    worker.finished.connect(lambda: done.append(True))
    start = time.time()
    while not done and time.time() - start < 300:
        _settle(0.1)
    from napari_braggsim._layers import show_overlays

    result = widget.result
    show_overlays(viewer, result.crystal, result.detector, result.beam)
    viewer.layers["residual"].visible = False
    viewer.reset_view()
    _save(viewer, "refine")
    viewer.close()


def main() -> int:
    IMAGES.mkdir(parents=True, exist_ok=True)
    for shot in (simulate_shot, load_shot, refine_shot):
        shot()
    return 0


if __name__ == "__main__":
    sys.exit(main())
