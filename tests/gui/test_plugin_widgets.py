"""The three dock widgets, the overlays and the sample, driven through the manifest."""

from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import QThreadPool

DATA = Path(__file__).resolve().parents[1] / "data"
PLUGIN = "napari-braggsim"


@pytest.fixture
def errors(monkeypatch):
    """Messages sent to napari's show_error (the widgets' only error channel)."""
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", lambda message: shown.append(str(message)))
    return shown


def _sample_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "synthetic_still")
    return viewer


def test_sample_carries_the_truth_frame_and_the_starting_model(make_napari_viewer):
    viewer = _sample_viewer(make_napari_viewer)
    (layer,) = viewer.layers
    reference = np.fromfile(DATA / "p02_seed_truth.bin", "<f4").reshape(64, 64)
    # the sample is braggsim's image of nanoBragg golden case p02 (the demo's truth)
    assert np.corrcoef(layer.data.ravel(), reference.ravel())[0, 1] > 0.9999
    assert layer.metadata["braggsim_start"]["mosaic_spread_deg"] == 0.2
    assert layer.metadata["braggsim_start"]["misset_x_deg"] == 0.0
    assert layer.metadata["braggsim_frame"]["distance_mm"] == 100.0


def test_simulate_adds_then_updates_its_layer(make_napari_viewer, wait_simulated):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Simulate")
    assert widget.values()["mosaic_spread_deg"] == 0.8 and widget.values()["fluence"] == 1e28
    widget.run_button.clicked()
    wait_simulated(widget)
    layer = viewer.layers["simulated"]
    assert layer.data.shape == (64, 64)
    assert layer.data.sum() == pytest.approx(1113.6537, rel=1e-4)  # nanoBragg's total for p02
    first = layer.data.copy()
    widget.set_values({"misset_x_deg": 4.0})
    widget.run()
    wait_simulated(widget)
    assert viewer.layers["simulated"] is layer  # updated in place
    assert np.abs(layer.data - first).max() > 1.0
    # overlays: one predicted spot per reflection, labelled with its hkl
    spots = viewer.layers["predicted spots"]
    assert len(spots.data) > 30 and "0 0 1" in list(spots.features["hkl"])
    np.testing.assert_allclose(viewer.layers["beam centre"].data, [[32.5, 32.5]])
    assert all(label.endswith("Å") for label in viewer.layers["resolution rings"].features["d_label"])


def test_docking_starts_the_kernel_warm_up_and_a_cold_kernel_never_runs_on_the_gui_thread(
    make_napari_viewer, wait_simulated, monkeypatch
):
    """While the kernel compiles, even a small image simulates in a worker thread."""
    import threading

    from braggsim import _fast
    from napari_braggsim import _common

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Simulate")
    assert _common._warm_up_started.is_set()
    widget.overlays.value = False
    monkeypatch.setattr(_fast, "ready", lambda: False)
    threads = []
    simulate_image = _fast.image_rows

    def image_rows(*args, **kwargs):
        threads.append(threading.current_thread())
        return simulate_image(*args, **kwargs)

    monkeypatch.setattr(_fast, "image_rows", image_rows)
    assert widget.run() is not None  # 64x64, below the threading threshold, yet a worker
    wait_simulated(widget)
    assert viewer.layers["simulated"].data.shape == (64, 64)
    if _fast.available():
        assert threads and threading.main_thread() not in threads


def test_threaded_simulation_failure_is_a_notification(make_napari_viewer, qtbot, errors, monkeypatch):
    """A large image simulates in a worker; its failure reaches the user, not the Qt event loop."""
    from napari_braggsim._widgets import simulate as simulate_module

    def fail(model):
        raise MemoryError("cannot allocate the image")

    monkeypatch.setattr(simulate_module, "_simulate", fail)
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Simulate")
    widget.overlays.value = False
    widget.set_values({"fpixels": 300, "spixels": 300})
    worker = widget.run()
    assert worker is not None  # 300x300 is above the threading threshold
    qtbot.waitUntil(lambda: not widget._workers, timeout=60000)
    assert len(errors) == 1 and "cannot allocate the image" in errors[0]
    assert "simulated" not in viewer.layers


def test_live_mode_debounces_to_one_simulation(make_napari_viewer, qtbot):
    from napari_braggsim._widgets import simulate as simulate_module

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Simulate")
    widget.overlays.value = False
    widget.live.value = True
    qtbot.waitUntil(lambda: "simulated" in viewer.layers, timeout=120000)
    before = widget._request
    for angle in (1.0, 2.0, 3.0, 4.0):
        widget._fields["misset_z_deg"].value = angle
    qtbot.waitUntil(lambda: widget._applied > before, timeout=120000)
    qtbot.wait(3 * simulate_module.LIVE_DEBOUNCE_MS)  # no second simulation follows
    assert widget._request == before + 1  # four changes, one simulation
    reference = widget.values()
    assert reference["misset_z_deg"] == 4.0


def test_load_frame_gives_header_geometry_and_fills_simulate(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    _, simulate = viewer.window.add_plugin_dock_widget(PLUGIN, "Simulate")
    _, loader = viewer.window.add_plugin_dock_widget(PLUGIN, "Load frame")
    loader.file.value = DATA / "adsc_q4_2002.img.bz2"
    loader.load_button.clicked()
    # the read runs in a worker thread; the button stays disabled until it ends
    assert not loader.load_button.enabled and "reading" in loader.status.value
    qtbot.waitUntil(lambda: loader.load_button.enabled, timeout=30000)
    layer = viewer.layers["adsc_q4_2002.img"]
    assert layer.data.shape == (2304, 2304)
    geometry = layer.metadata["braggsim_frame"]
    assert geometry["distance_mm"] == 250.0
    assert geometry["pixel_size_mm"] == pytest.approx(0.0816)
    assert geometry["wavelength_A"] == 1.0
    mask = viewer.layers["adsc_q4_2002.img mask"]
    assert mask.data.shape == (2304, 2304) and not mask.visible
    values = simulate.values()
    assert (values["distance_mm"], values["fpixels"], values["spixels"]) == (250.0, 2304, 2304)
    assert values["pixel_size_mm"] == pytest.approx(0.0816)
    assert (values["beam_x_mm"], values["beam_y_mm"]) == pytest.approx(tuple(geometry["beam_center_mm"]))


def test_closing_the_viewer_while_a_frame_is_read(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    _, loader = viewer.window.add_plugin_dock_widget(PLUGIN, "Load frame")
    worker = loader.load_in_background(DATA / "adsc_q4_2002.img.bz2")
    assert worker is not None
    viewer.close()
    qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=30000)
    qtbot.wait(100)  # let the queued finished/returned signals run against the closed widgets


def test_corrupt_file_is_a_notification(make_napari_viewer, tmp_path, errors):
    viewer = make_napari_viewer()
    _, loader = viewer.window.add_plugin_dock_widget(PLUGIN, "Load frame")
    bad = tmp_path / "broken.img"
    bad.write_bytes(b"{\nHEADER_BYTES=512;\nSIZE1=100;\n}\n" + b"\x00" * 40)
    assert loader.load(bad) is None
    assert len(errors) == 1 and "broken.img" in errors[0]
    assert len(viewer.layers) == 0


def test_corrupt_file_through_the_button_is_a_notification(make_napari_viewer, tmp_path, errors, qtbot):
    viewer = make_napari_viewer()
    _, loader = viewer.window.add_plugin_dock_widget(PLUGIN, "Load frame")
    bad = tmp_path / "broken.img"
    bad.write_bytes(b"{\nHEADER_BYTES=512;\nSIZE1=100;\n}\n" + b"\x00" * 40)
    loader.file.value = bad
    loader.load_button.clicked()
    qtbot.waitUntil(lambda: loader.load_button.enabled, timeout=10000)
    assert len(errors) == 1 and "broken.img" in errors[0]
    assert loader.status.value == "failed: broken.img"
    assert len(viewer.layers) == 0
    loader.file.value = tmp_path / "missing.img"
    assert loader.load_in_background() is None
    assert len(errors) == 2 and "no such file" in errors[1]


def _refine_widget(viewer, iterations):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Refine")
    assert widget.observed.value == "observed (synthetic still)"
    assert widget.starts["mosaic_spread_deg"].value == pytest.approx(0.2)
    widget.iterations.value = iterations
    return widget


def test_refine_updates_predicted_on_each_yield(make_napari_viewer, wait_refined, monkeypatch):
    viewer = _sample_viewer(make_napari_viewer)
    widget = _refine_widget(viewer, iterations=4)
    snapshots = []
    on_state = widget._on_state

    def record(state):
        on_state(state)  # the widget's own slot first: then the layer shows this state
        if state.predicted is not None:
            snapshots.append(viewer.layers["predicted"].data.copy())

    monkeypatch.setattr(widget, "_on_state", record)  # connected by run(), so no state is missed
    worker = widget.run()
    assert worker is not None and not widget.run_button.enabled
    wait_refined(widget)
    assert len(snapshots) >= 4
    for before, after in zip(snapshots[:3], snapshots[1:4], strict=False):
        assert np.abs(after - before).max() > 0
    assert widget.progress.value() == 4
    assert widget.progress.format() == "max_iter after 4 iterations"  # 4 iterations do not converge
    assert len(widget.history) >= 4 and "loss" in widget.readout.text()
    assert widget.result is not None and "±" in widget.errors.text()
    assert widget.run_button.enabled and widget.apply_button.enabled
    assert viewer.layers["residual"].data.shape == (64, 64)


def test_refined_values_apply_to_simulate(make_napari_viewer, wait_refined):
    viewer = _sample_viewer(make_napari_viewer)
    _, simulate = viewer.window.add_plugin_dock_widget(PLUGIN, "Simulate")
    widget = _refine_widget(viewer, iterations=6)
    widget.run()
    wait_refined(widget)
    refined = widget.result.parameters
    # six iterations of the orientation stage already move the misset towards 5 3 -2
    assert refined["misset_x_deg"] > 2.0
    assert "orientation search: 27 starts 4 deg apart" in widget.errors.text()
    simulate.set_values({"mosaic_spread_deg": 0.1, "misset_x_deg": 0.0})
    assert widget.apply_to_simulate() == 1
    for name in ("mosaic_spread_deg", "misset_x_deg", "misset_y_deg", "misset_z_deg"):
        assert simulate.values()[name] == pytest.approx(refined[name], abs=1e-3)
    assert simulate.values()["distance_mm"] == 100.0


def test_search_step_reaches_the_refiner(make_napari_viewer, wait_refined):
    viewer = _sample_viewer(make_napari_viewer)
    widget = _refine_widget(viewer, iterations=2)
    assert widget.search_deg.value == 4.0
    widget.search_deg.value = 0.0
    refiner, _, _ = widget.build_refiner()
    assert refiner.search_deg == 0.0
    widget.search_deg.value = 2.5
    refiner, _, _ = widget.build_refiner()
    assert refiner.search_deg == 2.5
    widget.run()
    assert widget.readout.text().startswith("starting: trying 27 misset starts 2.5 deg apart")
    wait_refined(widget)
    assert widget.result.search["step_deg"] == 2.5
    assert "orientation search: 27 starts 2.5 deg apart" in widget.errors.text()
    # a second run starts its bar afresh
    widget.iterations.value = 60
    widget.run()
    assert widget.progress.format() == "iteration %v / %m" and widget.progress.value() == 0
    wait_refined(widget)
    assert widget.result.status == "converged"
    assert widget.progress.value() == widget.progress.maximum() == 60
    assert widget.progress.format() == f"converged after {len(widget.result.history)} iterations"


def test_stop_mid_run_then_close_viewer_mid_run(make_napari_viewer, qtbot, wait_refined, refiner_waits_for_stop):
    viewer = _sample_viewer(make_napari_viewer)
    widget = _refine_widget(viewer, iterations=500)
    widget.run()
    qtbot.waitUntil(lambda: len(widget.history) >= 2, timeout=120000)
    assert widget.running  # the refiner waits for the stop: the run cannot end first
    widget.stop()
    wait_refined(widget)
    assert widget.result is not None and widget.result.status == "stopped"
    assert len(widget.history) < 100 and widget.run_button.enabled

    widget.run()
    run = widget.run_state
    qtbot.waitUntil(lambda: len(widget.history) >= 2, timeout=120000)
    assert widget.running and not run.done.is_set()
    viewer.close()  # asks the refiner to stop and waits for it (see refine.abort_run)
    assert run.done.wait(60)  # the generator exited: no thread left inside the refiner
    qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=60000)


def test_shape_mismatch_is_a_notification(make_napari_viewer, errors):
    viewer = _sample_viewer(make_napari_viewer)
    viewer.add_image(np.ones((32, 48), np.float32), name="small")
    widget = _refine_widget(viewer, iterations=3)
    widget.observed.value = "small"
    widget.set_start_values({"mosaic_spread_deg": 0.2})
    widget._base_values.update(spixels=64, fpixels=64)  # model still 64x64: does not fit
    assert widget.run() is None
    assert len(errors) == 1 and "shape mismatch" in errors[0]
    assert widget.run_button.enabled and not widget.running


def test_nan_observed_is_a_notification(make_napari_viewer, errors):
    viewer = _sample_viewer(make_napari_viewer)
    layer = viewer.layers[0]
    data = layer.data.copy()
    data[3, 4] = np.nan
    layer.data = data
    widget = _refine_widget(viewer, iterations=3)
    assert widget.run() is None
    assert len(errors) == 1 and "NaN" in errors[0]


def test_error_inside_a_run_is_a_notification_and_frees_run(make_napari_viewer, qtbot, errors, monkeypatch):
    """An exception the refiner does not handle itself ends the run with a notification."""
    from braggsim.refine import Refiner

    def run_then_fail(self, max_iter):
        yield from ()
        raise MemoryError("out of memory at iteration 0")

    monkeypatch.setattr(Refiner, "run", run_then_fail)
    viewer = _sample_viewer(make_napari_viewer)
    widget = _refine_widget(viewer, iterations=3)
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=60000)
    assert len(errors) == 1 and "out of memory at iteration 0" in errors[0]
    assert widget.run_button.enabled and "predicted" not in viewer.layers


def test_screenshot_shows_predicted_over_observed(make_napari_viewer, wait_refined):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, "synthetic_still")
    widget = _refine_widget(viewer, iterations=3)
    widget.run()
    wait_refined(widget)
    assert "predicted" in viewer.layers and "observed (synthetic still)" in viewer.layers
    for layer in viewer.layers:
        layer.visible = layer.name in ("predicted", "observed (synthetic still)")
    shot = viewer.screenshot(canvas_only=True, flash=False)
    for layer in viewer.layers:
        layer.visible = False
    empty = viewer.screenshot(canvas_only=True, flash=False)
    assert shot.shape == empty.shape and shot.ndim == 3
    assert shot[..., :3].std() > 5
    assert np.abs(shot.astype(int) - empty.astype(int)).mean() > 5


def test_resolution_under_the_cursor(make_napari_viewer):
    from napari_braggsim._layers import resolution_under_cursor

    viewer = _sample_viewer(make_napari_viewer)
    # pixel (0, 0) centre: 3.25 mm along both axes from the beam, 100 mm away, 1 A
    radius = np.hypot(3.25, 3.25)
    expected = 1.0 / (2 * np.sin(np.arctan2(radius, 100.0) / 2))
    assert resolution_under_cursor(viewer, (0.0, 0.0)) == pytest.approx(expected, rel=1e-9)


def test_plugin_modules_import_without_torch():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import napari_braggsim._widgets.simulate, napari_braggsim._widgets.load, napari_braggsim._widgets.refine\n"
        "import napari_braggsim._layers, napari_braggsim._sample_data\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
