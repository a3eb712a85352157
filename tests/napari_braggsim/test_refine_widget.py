"""The Refine dock: the run in the background, followed on a timer; geometry and mask from
the observed layer; Stop, closing and Apply."""

import numpy as np
import pytest

from .conftest import PLUGIN, SAMPLE, dock, wait_idle, write_small_frame


def _refine(viewer, iterations):
    widget = dock(viewer, "Refine")
    assert widget.observed.value.name == SAMPLE
    assert widget.starts["mosaic_spread_deg"].value == pytest.approx(0.2)  # the sample's start
    widget.iterations.value = iterations
    return widget


def test_preview_shows_the_start_before_a_run(sample_viewer, qtbot):
    widget = _refine(sample_viewer, iterations=4)
    wait_idle(qtbot, widget)
    predicted = sample_viewer.layers["predicted"]
    assert predicted.metadata["braggsim_model"]["mosaic_spread_deg"] == 0.2  # the start
    assert not sample_viewer.layers["residual"].visible
    assert "0 0 1" in list(sample_viewer.layers["predicted spots"].features["hkl"])  # the start's spots
    widget.starts["misset_x_deg"].value = 2.0  # a new start: a new preview
    qtbot.waitUntil(lambda: predicted.metadata["braggsim_model"]["misset_x_deg"] == 2.0, timeout=20000)
    assert sample_viewer.layers["predicted"] is predicted


def test_refine_follows_the_run(sample_viewer, qtbot):
    widget = _refine(sample_viewer, iterations=4)
    wait_idle(qtbot, widget)  # the preview of the start is on screen
    shown = []
    sample_viewer.layers.events.inserted.connect(lambda event: shown.append(event.value.name))
    assert widget.run() is not None
    assert not widget.run_button.enabled and widget.stop_button.enabled
    predicted = sample_viewer.layers["predicted"]
    first = predicted.data.copy()
    wait_idle(qtbot, widget)
    assert sample_viewer.layers["predicted"] is predicted  # updated in place
    assert np.abs(predicted.data - first).max() > 0
    assert predicted.metadata["braggsim_model"]["distance_mm"] == 100.0
    assert widget.progress.value == 4 and widget.progress.native.format() == "max_iter after 4 iterations"
    assert len(widget.history) >= 4 and "loss" in widget.readout.value
    assert widget.plot.losses.size == len(widget.history)
    assert widget.result is not None and "±" in widget.errors.value
    assert widget.run_button.enabled and widget.apply_button.enabled and not widget.stop_button.enabled
    assert sample_viewer.layers["residual"].data.shape == (64, 64)
    assert not sample_viewer.layers["residual"].visible
    # the preview made every layer before the run (the start's image and spots): the run
    # only updated them, and the refined model's overlays are on show
    assert shown == []
    for name in ("predicted spots", "resolution rings", "beam centre"):
        assert sample_viewer.layers[name].visible
    assert sample_viewer.layers.selection.active.name == SAMPLE


def test_search_step_and_a_second_run(sample_viewer, qtbot):
    widget = _refine(sample_viewer, iterations=2)
    assert widget.search_deg.value == 4.0
    widget.search_deg.value = 2.5
    assert widget.prepare()["search_deg"] == 2.5
    widget.run()
    assert widget.readout.value.startswith("starting: trying 27 misset starts 2.5 deg apart")
    wait_idle(qtbot, widget)
    assert widget.result.search["step_deg"] == 2.5
    assert "orientation search: 27 starts 2.5 deg apart" in widget.errors.value
    assert sample_viewer.layers["predicted spots"].visible
    widget.iterations.value = 60
    widget.run()
    # a second run starts its bar afresh and hides the first run's spots
    assert widget.progress.native.format() == "iteration %v / %m" and widget.progress.value == 0
    assert not sample_viewer.layers["predicted spots"].visible
    wait_idle(qtbot, widget)
    assert widget.result.status == "converged"
    assert widget.progress.value == widget.progress.max == 60
    assert widget.progress.native.format() == f"converged after {len(widget.result.history)} iterations"
    assert sample_viewer.layers["predicted spots"].visible
    refined = widget.result.parameters
    assert refined["mosaic_spread_deg"] == pytest.approx(0.8, abs=0.01)
    assert refined["misset_x_deg"] == pytest.approx(5.0, abs=0.05)


def test_stop_takes_effect_within_one_iteration(sample_viewer, qtbot):
    widget = _refine(sample_viewer, iterations=500)
    widget.optimizer.value = "adam"  # many quick iterations
    widget.run()
    qtbot.waitUntil(lambda: len(widget.controller.history()) >= 3, timeout=30000)
    widget.stop_button.clicked()
    iterations_at_stop = len(widget.controller.history())
    assert not widget.stop_button.enabled
    wait_idle(qtbot, widget)
    assert widget.result.status == "stopped"
    assert len(widget.result.history) <= iterations_at_stop + 1
    assert widget.run_button.enabled


def test_closing_the_dock_stops_the_run(sample_viewer, qtbot):
    dock_widget, widget = sample_viewer.window.add_plugin_dock_widget(PLUGIN, "Refine")
    widget.iterations.value = 100000
    widget.optimizer.value = "adam"
    widget.run()
    qtbot.waitUntil(lambda: len(widget.controller.history()) >= 2, timeout=30000)
    sample_viewer.window.remove_dock_widget(dock_widget)  # what the dock's close button does
    assert widget.controller.job.wait(10)
    assert widget.controller.refiner.result.status == "stopped"


def test_closing_the_viewer_stops_the_run(sample_viewer, qtbot):
    widget = _refine(sample_viewer, iterations=100000)
    widget.optimizer.value = "adam"
    widget.run()
    qtbot.waitUntil(lambda: len(widget.controller.history()) >= 2, timeout=30000)
    job = widget.controller.job
    sample_viewer.close()
    assert job.wait(10)  # the refiner ended: no thread left inside it
    assert widget.controller.refiner.result.status == "stopped"


def test_reader_then_refine_then_run(make_napari_viewer, qtbot, tmp_path, errors):
    """A frame opened like a drop (not through Load frame) refines with its own geometry."""
    path = write_small_frame(tmp_path / "frame.img", shape=(48, 64), distance_mm=90.0)
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin=PLUGIN)
    widget = dock(viewer, "Refine")
    assert widget.observed.value.name == "frame.img"
    assert widget.mask.value.name == "frame.img mask"  # the frame's own mask, picked with it
    plan = widget.prepare()
    assert (plan["values"]["spixels"], plan["values"]["fpixels"]) == (48, 64)
    assert plan["values"]["distance_mm"] == 90.0
    widget.iterations.value = 1
    widget.search_deg.value = 0.0
    assert widget.run() is not None
    wait_idle(qtbot, widget)
    assert not any("shape" in message for message in errors), errors
    assert widget.result is not None and sample_predicted_shape(viewer) == (48, 64)


def sample_predicted_shape(viewer):
    return viewer.layers["predicted"].data.shape


def test_every_registry_group_is_offered(sample_viewer):
    from braggsim.refine import PARAMETER_GROUPS, PARAMETERS

    widget = _refine(sample_viewer, iterations=1)
    assert list(widget.checks) == list(PARAMETER_GROUPS)
    assert set(widget.starts) == set(PARAMETERS)
    assert widget.starts["wavelength_A"].value == 1.0 and widget.starts["background"].value == 0.0
    widget.checks["mosaic"].value = widget.checks["misset"].value = False
    widget.checks["scale"].value = widget.checks["background"].value = True
    widget.starts["background"].value = 3.0
    plan = widget.prepare()
    assert plan["groups"] == ["scale", "background"] and plan["initial"] == {"scale": 1.0, "background": 3.0}


def test_plain_image_layer_takes_its_size(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    viewer.add_image(np.ones((32, 48), np.float32), name="small")
    widget = dock(viewer, "Refine")
    widget.observed.value = viewer.layers["small"]
    plan = widget.prepare()
    assert (plan["values"]["spixels"], plan["values"]["fpixels"]) == (32, 48)
    assert plan["trusted"] is None


def test_mask_convention(sample_viewer):
    widget = _refine(sample_viewer, iterations=1)
    mask = sample_viewer.layers[SAMPLE + " mask"]
    assert widget.mask.value is mask
    data = mask.data.copy()
    data[10:20, 30:40] = 1  # painted with label 1: excluded
    mask.data = data
    trusted = widget.prepare()["trusted"]
    assert not trusted[10:20, 30:40].any() and trusted.sum() == 64 * 64 - 100


def test_nan_pixels_must_be_masked(sample_viewer, errors):
    image = sample_viewer.layers[SAMPLE]
    data = image.data.copy()
    data[3, 4] = np.nan
    image.data = data
    widget = _refine(sample_viewer, iterations=1)
    assert widget.run() is None
    assert len(errors) == 1 and "NaN" in errors[0] and "mask" in errors[0]
    mask = sample_viewer.layers[SAMPLE + " mask"]
    labels = mask.data.copy()
    labels[3, 4] = 1
    mask.data = labels
    assert widget.prepare()["trusted"][3, 4] == False  # noqa: E712


def test_error_inside_a_run_is_a_notification(sample_viewer, qtbot, errors, monkeypatch):
    from braggsim.refine import Refiner

    def run_then_fail(self, max_iter):
        yield from ()
        raise MemoryError("out of memory at iteration 0")

    monkeypatch.setattr(Refiner, "run", run_then_fail)
    widget = _refine(sample_viewer, iterations=3)
    assert widget.run() is not None
    wait_idle(qtbot, widget)
    assert len(errors) == 1 and "out of memory at iteration 0" in errors[0]
    assert widget.run_button.enabled
    # no refined image: the predicted layer, if the start's preview made it, shows the start
    layers = sample_viewer.layers
    assert "predicted" not in layers or "braggsim_parameters" not in layers["predicted"].metadata


def test_bad_model_is_a_notification(sample_viewer, qtbot, errors):
    widget = _refine(sample_viewer, iterations=1)
    widget.starts["cell_alpha_deg"].value = 10.0  # with beta, gamma 90: no such cell
    widget.starts["cell_beta_deg"].value = 170.0
    widget.run()
    wait_idle(qtbot, widget)
    assert len(errors) == 1 and widget.result is None and widget.run_button.enabled


def test_apply_writes_the_model_and_clips(sample_viewer, qtbot, warnings_shown):
    simulate = dock(sample_viewer, "Simulate")
    widget = _refine(sample_viewer, iterations=6)
    widget.run()
    wait_idle(qtbot, widget)
    refined = widget.result.parameters
    assert refined["misset_x_deg"] > 2.0  # six iterations already move the misset towards 5 3 -2
    widget.apply_button.clicked()
    for name in ("mosaic_spread_deg", "misset_x_deg", "misset_y_deg", "misset_z_deg"):
        assert simulate.values()[name] == pytest.approx(refined[name], abs=1e-3)
        assert widget.starts[name].value == pytest.approx(refined[name], abs=1e-3)  # the next run's start
    assert simulate.values()["distance_mm"] == 100.0 and not warnings_shown
    # a result outside the fields' ranges (issue 17: mosaic 91.4, misset -360.9) is clipped
    widget.result.parameters.update(mosaic_spread_deg=91.4, misset_x_deg=-360.9)
    widget.apply_button.clicked()
    assert simulate.values()["mosaic_spread_deg"] == 90.0
    assert simulate.values()["misset_x_deg"] == pytest.approx(-0.9)  # the same orientation
    assert len(warnings_shown) == 1 and "mosaic spread" in warnings_shown[0] and "90" in warnings_shown[0]


def test_screenshot_shows_predicted_over_observed(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, "synthetic_still")
    widget = _refine(viewer, iterations=3)
    widget.run()
    wait_idle(qtbot, widget)
    for layer in viewer.layers:
        layer.visible = layer.name in ("predicted", SAMPLE)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    for layer in viewer.layers:
        layer.visible = False
    empty = viewer.screenshot(canvas_only=True, flash=False)
    assert shot.shape == empty.shape and shot.ndim == 3
    assert shot[..., :3].std() > 5
    assert np.abs(shot.astype(int) - empty.astype(int)).mean() > 5
