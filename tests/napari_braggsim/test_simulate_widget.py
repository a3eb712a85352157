"""The Simulate dock: fields <-> the shared model, background simulation, overlays that
read at detector scale."""

import numpy as np
import pytest

from .conftest import DATA, dock, wait_idle


def test_simulate_adds_then_updates_its_layer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = dock(viewer, "Simulate")
    assert widget.values()["mosaic_spread_deg"] == 0.8 and widget.values()["fluence"] == 1e28
    widget.run_button.clicked()
    assert widget.busy and "simulating 64x64" in widget.status.value  # the work runs in the background
    wait_idle(qtbot, widget)
    layer = viewer.layers["simulated"]
    assert layer.data.shape == (64, 64)
    assert layer.data.sum() == pytest.approx(1113.6537, rel=1e-4)  # nanoBragg's total for p02
    first = layer.data.copy()
    widget.fields["misset_x_deg"].value = 4.0
    widget.run_button.clicked()
    wait_idle(qtbot, widget)
    assert viewer.layers["simulated"] is layer  # updated in place
    assert np.abs(layer.data - first).max() > 1.0
    # overlays: one predicted spot per reflection, labelled with its hkl
    spots = viewer.layers["predicted spots"]
    assert len(spots.data) > 30 and "0 0 1" in list(spots.features["hkl"])
    np.testing.assert_allclose(viewer.layers["beam centre"].data, [[32.5, 32.5]])
    assert all(label.endswith("Å") for label in viewer.layers["resolution rings"].features["d_label"])
    assert "spots" in widget.status.value and "max" in widget.status.value


def test_threaded_simulation_failure_is_a_notification(make_napari_viewer, qtbot, errors, monkeypatch):
    from napari_braggsim._widgets import simulate as simulate_module

    def fail(values, overlays, cancelled=None):
        raise MemoryError("cannot allocate the image")

    monkeypatch.setattr(simulate_module, "_simulate", fail)
    viewer = make_napari_viewer()
    widget = dock(viewer, "Simulate")
    assert widget.run() is not None
    wait_idle(qtbot, widget)
    assert len(errors) == 1 and "cannot allocate the image" in errors[0]
    assert "simulated" not in viewer.layers and widget.status.value == "failed"


def test_bad_fluence_is_a_notification(make_napari_viewer, errors):
    widget = dock(make_napari_viewer(), "Simulate")
    widget.fields["fluence"].value = "lots"
    assert widget.run() is None
    assert len(errors) == 1 and "fluence must be a number" in errors[0]


def test_live_mode_debounces_to_one_simulation(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = dock(viewer, "Simulate")
    widget.overlays.value = False
    widget.live.value = True
    qtbot.waitUntil(lambda: "simulated" in viewer.layers, timeout=20000)
    wait_idle(qtbot, widget)
    before = widget._request
    for angle in (1.0, 2.0, 3.0, 4.0):
        widget.fields["misset_z_deg"].value = angle
    qtbot.waitUntil(lambda: widget._applied > before, timeout=20000)
    qtbot.wait(300)
    assert widget._request == before + 1  # four changes, one simulation
    assert widget.values()["misset_z_deg"] == 4.0


def test_beam_centre_follows_the_detector_size(make_napari_viewer):
    widget = dock(make_napari_viewer(), "Simulate")
    assert (widget.values()["beam_x_mm"], widget.values()["beam_y_mm"]) == (3.25, 3.25)
    widget.fields["fpixels"].value = 128
    widget.fields["spixels"].value = 256
    # nanoBragg's MOSFLM default: ((spixels + 1) * pixel / 2, (fpixels + 1) * pixel / 2)
    assert widget.values()["beam_x_mm"] == pytest.approx(12.85)
    assert widget.values()["beam_y_mm"] == pytest.approx(6.45)
    widget.fields["beam_x_mm"].value = 5.0  # a centre the user set stays where it is
    widget.fields["fpixels"].value = 64
    assert widget.values()["beam_x_mm"] == 5.0


def test_unticking_overlays_removes_them_and_runs_replace_them(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = dock(viewer, "Simulate")
    widget.run_button.clicked()
    wait_idle(qtbot, widget)
    spots = viewer.layers["predicted spots"]
    before = spots.data.copy()
    widget.fields["misset_z_deg"].value = 10.0
    widget.run_button.clicked()
    wait_idle(qtbot, widget)
    assert viewer.layers["predicted spots"] is spots  # replaced in place, one layer
    assert spots.data.shape != before.shape or np.abs(spots.data - before).max() > 0.5
    widget.overlays.value = False
    for name in ("predicted spots", "resolution rings", "beam centre"):
        assert name not in viewer.layers
    widget.run_button.clicked()
    wait_idle(qtbot, widget)
    assert "predicted spots" not in viewer.layers and "simulated" in viewer.layers


def test_markers_follow_the_spot_size_not_the_detector(make_napari_viewer, qtbot):
    """At 1024x1024 the markers used to be 41 px (the detector width / 25)."""
    viewer = make_napari_viewer()
    widget = dock(viewer, "Simulate")
    widget.set_values({"fpixels": 1024, "spixels": 1024})
    widget.run_button.clicked()
    wait_idle(qtbot, widget)
    spots = viewer.layers["predicted spots"]
    sizes = np.asarray(spots.size)
    assert sizes.min() >= 4.0 and np.median(sizes) < 12.0  # the demo's spots are a few pixels wide
    assert len(spots.data) <= 5000  # capped: those nearest the beam
    d = np.hypot(*(spots.data - viewer.layers["beam centre"].data[0]).T)
    assert d.max() < 1024  # the nearest ones


def test_labels_only_when_zoomed_in(make_napari_viewer, qtbot):
    from napari_braggsim._layers import MAX_LABELS, update_labels

    viewer = make_napari_viewer()
    widget = dock(viewer, "Simulate")
    widget.set_values({"fpixels": 512, "spixels": 512})
    widget.run_button.clicked()
    wait_idle(qtbot, widget)
    spots = viewer.layers["predicted spots"]
    viewer.camera.zoom = 0.5
    update_labels(viewer)
    assert not spots.text.visible
    viewer.camera.center = tuple(viewer.layers["beam centre"].data[0])
    spacing = spots.metadata["braggsim_spacing_px"]  # the demo's spots crowd: ~0.7 px apart
    viewer.camera.zoom = 50.0 / spacing
    update_labels(viewer)
    assert spots.text.visible
    shown = [label for label in spots.features["label"] if label]
    assert 0 < len(shown) <= MAX_LABELS
    assert set(shown) <= set(spots.features["hkl"])


def test_overlay_data_caps_the_spots():
    from napari_braggsim._layers import overlay_data
    from napari_braggsim._model import DEFAULTS, build_model

    crystal, detector, beam = build_model({**DEFAULTS, "fpixels": 256, "spixels": 256})
    full = overlay_data(crystal, detector, beam)
    capped = overlay_data(crystal, detector, beam, max_spots=50)
    assert full.predicted == capped.predicted > 50 and len(capped.spots_px) == 50
    assert capped.d_A.min() >= np.sort(full.d_A)[::-1][49] - 1e-9  # the 50 of lowest resolution


def test_status_bar_shows_the_d_spacing(make_napari_viewer, qtbot):
    from types import SimpleNamespace

    viewer = make_napari_viewer()
    viewer.open(str(DATA / "p01_cubic.bin"), plugin="napari-braggsim")
    dock(viewer, "Simulate")
    for callback in viewer.mouse_move_callbacks:
        callback(viewer, SimpleNamespace(position=(0.0, 0.0)))
    status = viewer.status
    text = status.get("coordinates", "") if isinstance(status, dict) else str(status)
    assert "d = " in text and "Å" in text
    # napari rewrites its status when the cursor moves; the d-spacing is kept in it
    viewer.status = {"layer_base": "x", "source_type": "", "plugin": "", "layer_name": "x", "coordinates": "[0 0]: 1"}
    assert "d = " in viewer.status["coordinates"]
