"""Every widget the manifest declares docks in a real viewer."""

from pathlib import Path

import pytest
import yaml

import napari_braggsim

MANIFEST = Path(napari_braggsim.__file__).with_name("napari.yaml")
WIDGET_NAMES = [w["display_name"] for w in yaml.safe_load(MANIFEST.read_text())["contributions"]["widgets"]]


def test_manifest_declares_the_three_widgets():
    assert WIDGET_NAMES == ["Simulate", "Load frame", "Refine"]


@pytest.mark.parametrize("name", WIDGET_NAMES)
def test_widget_docks(make_napari_viewer, name):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-braggsim", name)
    assert widget is not None
    assert dock.isVisible() or dock.isVisibleTo(viewer.window._qt_window)
