"""The SMV writer contribution: layers with braggsim geometry save and read back."""

from pathlib import Path

import numpy as np
import pytest

from braggsim.io import read_frame
from napari_braggsim._writer import write_smv_frame
from tests.conftest import DATA

from .conftest import wait_idle

PLUGIN = "napari-braggsim"


def test_loaded_frame_saves_losslessly_through_napari(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    _, loader = viewer.window.add_plugin_dock_widget(PLUGIN, "Load frame")
    layer = loader.load(DATA / "adsc_q4_2002.img.bz2")
    out = tmp_path / "copy.img"
    written = layer.save(str(out), plugin=PLUGIN)
    assert [Path(p) for p in written] == [out]
    original, copy = read_frame(DATA / "adsc_q4_2002.img.bz2"), read_frame(out)
    np.testing.assert_array_equal(copy.data, original.data)  # counts written as they are
    assert copy.distance_mm == original.distance_mm == 250.0
    assert copy.pixel_size_mm == pytest.approx(original.pixel_size_mm)
    assert copy.wavelength_A == original.wavelength_A
    assert copy.beam_center_mm == pytest.approx(original.beam_center_mm)
    assert "BRAGGSIM_SCALE" not in copy.header


def test_simulated_layer_is_scaled_like_nanobragg_intfile(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    _, simulate = viewer.window.add_plugin_dock_widget(PLUGIN, "Simulate")
    simulate.overlays.value = False
    simulate.run_button.clicked()
    wait_idle(qtbot, simulate)
    layer = viewer.layers["simulated"]
    out = tmp_path / "simulated.img"
    layer.save(str(out), plugin=PLUGIN)
    frame = read_frame(out)
    scale = float(frame.header["BRAGGSIM_SCALE"])
    assert scale == pytest.approx(55000.0 / float(layer.data.max()))
    np.testing.assert_array_equal(frame.data, np.floor(layer.data.astype(np.float64) * scale + 0.5))
    assert frame.distance_mm == 100.0 and frame.pixel_size_mm == pytest.approx(0.1)
    assert frame.data.shape == (64, 64)


def test_predicted_layer_saves_with_the_refined_model(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "synthetic_still")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Refine")
    widget.iterations.value = 3
    assert widget.run() is not None
    wait_idle(qtbot, widget)
    layer = viewer.layers["predicted"]
    model = layer.metadata["braggsim_model"]
    assert model["misset_x_deg"] == pytest.approx(layer.metadata["braggsim_parameters"]["misset_x_deg"])
    out = tmp_path / "predicted.img"
    layer.save(str(out), plugin=PLUGIN)
    frame = read_frame(out)
    assert frame.data.shape == (64, 64) and frame.distance_mm == model["distance_mm"]
    assert float(frame.data.max()) == 55000.0


@pytest.mark.parametrize(
    "data, metadata, message",
    [
        (np.ones((4, 4)), {}, "carries no detector geometry"),
        (np.ones((2, 4, 4)), {}, "one 2-D frame"),
        (np.ones((4, 4)), {"braggsim_frame": {"shape": [4, 5], "distance_mm": 100.0}}, "its geometry is"),
    ],
)
def test_layers_without_matching_geometry_are_refused(tmp_path, data, metadata, message):
    out = tmp_path / "refused.img"
    with pytest.raises(ValueError, match=message):
        write_smv_frame(str(out), data, {"name": "plain", "metadata": metadata})
    assert not out.exists()


def test_refusal_through_napari_is_a_notification(make_napari_viewer, tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", lambda message: shown.append(str(message)))
    viewer = make_napari_viewer()
    layer = viewer.add_image(np.ones((8, 8), np.float32), name="plain")
    out = tmp_path / "plain.img"
    with pytest.warns(UserWarning):  # napari's own "no written paths" warning
        assert layer.save(str(out), plugin=PLUGIN) == []
    assert len(shown) == 1 and "'plain' carries no detector geometry" in shown[0]
    assert not out.exists()
