import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DATA

# napari's canvas needs OpenGL: run these under Xvfb (pytest-xvfb), never offscreen Qt
os.environ.pop("QT_QPA_PLATFORM", None) if os.environ.get("QT_QPA_PLATFORM") == "offscreen" else None

ADSC = DATA / "adsc_q4_2002.img.bz2"
HERE = Path(__file__).resolve().parent
PLUGIN = "napari-braggsim"
SAMPLE = "observed (synthetic still)"


def pytest_collection_modifyitems(items):
    for item in items:
        # pytest hands every collected item to this hook: mark those in this folder or below
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.gui)


@pytest.fixture
def errors(monkeypatch):
    """Messages sent to napari's show_error (the widgets' error channel)."""
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", lambda message: shown.append(str(message)))
    return shown


@pytest.fixture
def warnings_shown(monkeypatch):
    """Messages sent to napari's show_warning."""
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_warning", lambda message: shown.append(str(message)))
    return shown


@pytest.fixture
def sample_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "synthetic_still")
    return viewer


def dock(viewer, name, timeout_s=60.0):
    """The widget of the dock ``name`` from the plugin's manifest, its fields made (they
    come from braggsim's registry once braggsim is loaded in the background)."""
    import time

    from qtpy.QtWidgets import QApplication

    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    end = time.monotonic() + timeout_s
    while not getattr(widget, "ready", True) and time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)
    assert getattr(widget, "ready", True), f"{name} fields not made after {timeout_s} s"
    return widget


def wait_idle(qtbot, widget, timeout=60000):
    """Until the widget's background work is done and its last layer update is on screen."""
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)


def write_small_frame(path, shape=(48, 64), distance_mm=90.0):
    """A small SMV frame written by braggsim (its geometry in the header)."""
    import braggsim
    from braggsim.io import write_smv

    image = np.arange(shape[0] * shape[1], dtype=float).reshape(shape) % 97
    write_smv(path, image, detector=braggsim.Detector(fpixels=shape[1], spixels=shape[0], distance_mm=distance_mm))
    return path
