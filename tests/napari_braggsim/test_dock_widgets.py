"""Every widget the manifest declares docks in a real viewer, fits beside the canvas of a
1600-px-wide window, and explains every field in a tooltip."""

from pathlib import Path

import pytest
import yaml
from magicgui.widgets import Container
from magicgui.widgets.bases import ValueWidget
from qtpy.QtWidgets import QScrollArea

import napari_braggsim

from .conftest import PLUGIN, dock

MANIFEST = yaml.safe_load(Path(napari_braggsim.__file__).with_name("napari.yaml").read_text())
WIDGET_NAMES = [w["display_name"] for w in MANIFEST["contributions"]["widgets"]]
DOCK_WIDTH_PX = 420


def _value_widgets(container):
    for widget in container:
        if isinstance(widget, ValueWidget) or (hasattr(widget, "value") and not isinstance(widget, Container)):
            yield widget  # a FileEdit is a valued container
        elif isinstance(widget, Container):
            yield from _value_widgets(widget)
    body = getattr(container, "body", None)
    if isinstance(body, Container) and body is not container:
        yield from _value_widgets(body)


def test_manifest_declares_the_widgets():
    assert WIDGET_NAMES == ["Simulate", "Load frame", "Refine", "Real still", "Batch"]


@pytest.mark.parametrize("name", WIDGET_NAMES)
def test_widget_docks_and_fits_a_1600_px_window(make_napari_viewer, qtbot, name):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    dock_widget, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    assert isinstance(widget, Container)  # a magicgui container, its fields public widgets
    qtbot.waitUntil(dock_widget.isVisible, timeout=5000)
    qtbot.wait(50)
    assert widget.native.minimumSizeHint().width() <= DOCK_WIDTH_PX
    assert dock_widget.width() <= DOCK_WIDTH_PX + 40
    # nothing is cut off or scrolls sideways: every scroll area's content fits its viewport
    for scroll in widget.native.findChildren(QScrollArea):
        assert scroll.widget().minimumSizeHint().width() <= scroll.viewport().width()


@pytest.mark.parametrize("name", WIDGET_NAMES)
def test_every_field_has_a_tooltip(make_napari_viewer, name):
    widget = dock(make_napari_viewer(), name)
    fields = [w for w in _value_widgets(widget) if w.widget_type not in ("Label", "ProgressBar")]
    assert len(fields) >= 2
    for field in fields:
        assert field.tooltip, f"{name}: field {field.name!r} has no tooltip"


def test_model_tooltips_give_unit_and_nanobragg_flag(make_napari_viewer):
    widget = dock(make_napari_viewer(), "Simulate")
    tooltips = {name: field.tooltip for name, field in widget.fields.items()}
    assert "Unit: Å" in tooltips["cell_a_A"] and "nanoBragg flag: -cell" in tooltips["cell_a_A"]
    assert "Unit: mm" in tooltips["distance_mm"] and "-distance" in tooltips["distance_mm"]
    assert "-misset" in tooltips["misset_z_deg"] and "-mosaic" in tooltips["mosaic_spread_deg"]
    assert "-Xbeam" in tooltips["beam_x_mm"] and "-lambda" in tooltips["wavelength_A"]
    assert "photons/m²" in tooltips["fluence"] and "-fluence" in tooltips["fluence"]
    assert "noisify flag: -seed" in tooltips["noise_seed"] and "noisify flag: -psf_fwhm" in tooltips["psf_fwhm_um"]
    assert "nonBragg flag: -stol air -thickness" in tooltips["air_mm"] and "Unit: µm" in tooltips["water_um"]
    for name, tip in tooltips.items():  # a flag of nanoBragg or of its companions noisify and nonBragg
        assert any(f"{program} flag:" in tip for program in ("nanoBragg", "noisify", "nonBragg")), name


def test_numbers_show_their_decimals(make_napari_viewer):
    widget = dock(make_napari_viewer(), "Simulate")
    widget.set_values({"wavelength_A": 0.96859, "pixel_size_mm": 0.172, "beam_x_mm": 217.05})
    assert widget.fields["wavelength_A"].native.text() == "0.96859"
    assert widget.fields["pixel_size_mm"].native.text() == "0.1720"
    assert widget.fields["beam_x_mm"].native.text() == "217.0500"
    # a spin box is wide enough for its widest value
    box = widget.fields["beam_x_mm"].native
    assert box.minimumSizeHint().width() <= box.width() or box.width() >= 90


def test_drop_offers_braggsim_before_napari_builtins(qtbot, tmp_path):
    """napari's reader dialog lists readers by display name and pre-selects the first;
    napari builtins claims *.img too and fails on detector frames."""
    from napari._qt.dialogs.qt_reader_dialog import QtReaderDialog

    path = tmp_path / "frame.img"
    path.write_bytes(b"x")
    ours = MANIFEST["display_name"]
    dialog = QtReaderDialog(pth=str(path), readers={"napari": "napari builtins", PLUGIN: ours})
    qtbot.addWidget(dialog)
    assert dialog._get_plugin_choice() == ours
    assert sorted([ours, "napari builtins"])[0] == ours
