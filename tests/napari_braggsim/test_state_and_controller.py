"""The plugin's Qt-free half: the per-viewer state and the refinement controller."""

import subprocess
import sys
import time

import numpy as np
import pytest

QT_FREE = "napari_braggsim._state, napari_braggsim._jobs, napari_braggsim._fields, napari_braggsim._frames"


def test_plugin_modules_import_without_torch():
    code = (
        "import sys\n"
        "import napari_braggsim\n"
        "import napari_braggsim._widgets.simulate, napari_braggsim._widgets.load, napari_braggsim._widgets.refine\n"
        "import napari_braggsim._layers, napari_braggsim._sample_data, napari_braggsim._reader\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_state_and_controller_need_no_qt():
    code = f"import sys\nimport {QT_FREE}\nprint(sorted(m for m in sys.modules if 'Qt' in m or m == 'qtpy'))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_state_events_and_the_beam_centre_rule():
    from napari_braggsim._state import BraggsimState

    state = BraggsimState()
    seen = []
    state.events.values.connect(seen.append)
    state.update_values({"distance_mm": 150.0})
    assert len(seen) == 1 and seen[0]["distance_mm"] == 150.0
    state.update_values({"distance_mm": 150.0})
    assert len(seen) == 1  # no change, no event
    state.update_values({"fpixels": 100, "spixels": 200})  # the centre sat at the default: it follows
    assert (state.values["beam_x_mm"], state.values["beam_y_mm"]) == pytest.approx((10.05, 5.05))


def test_job_keeps_only_the_newest_item():
    from napari_braggsim._jobs import Job

    def work(job):
        for i in range(1000):
            job.publish(i)
        return "done"

    job = Job(work).start()
    assert job.wait(10)
    taken = job.take()
    assert taken.latest == 999 and taken.done and taken.result == "done" and taken.error is None
    assert job.take() is None  # nothing new, the outcome reported once


def test_job_error_is_kept_for_the_gui():
    from napari_braggsim._jobs import Job

    def work(job):
        raise ValueError("bad cell")

    job = Job(work).start()
    job.wait(10)
    taken = job.take()
    assert taken.done and isinstance(taken.error, ValueError)


def test_controller_runs_a_refiner_headless():
    """The same controller the Refine dock uses, driven from plain Python."""
    import braggsim
    from braggsim.refine import Refiner
    from napari_braggsim._jobs import RefineController
    from napari_braggsim._model import DEFAULTS, build_model, start_values

    observed = braggsim.simulate(*build_model(DEFAULTS)).numpy()
    controller = RefineController()

    def make():
        return Refiner(*build_model(start_values()), observed, refine=("mosaic", "misset"))

    job = controller.start(make, 8, observed=observed, after=lambda result: result.status)
    seen = 0
    while controller.running:
        taken = controller.take()
        seen += taken is not None
        time.sleep(0.01)
    taken = controller.take()
    result, after = taken.result
    assert job.finished.is_set() and after == result.status == "max_iter"
    history = controller.history()
    assert [i for i, _ in history[:-1]] == list(range(len(history) - 1))  # every iteration, none lost
    progress = taken.latest
    if progress is not None:  # the newest state: the final one
        assert progress.state.stage == "done"
        np.testing.assert_allclose(progress.residual, observed - progress.state.predicted, rtol=1e-6)


def test_the_demo_values_are_the_cores():
    """_model keeps a torch-free copy of braggsim.demo's values (importing braggsim imports
    torch, which a docking widget must not do on the GUI thread); they must agree."""
    from braggsim.demo import DEMO_START, DEMO_VALUES
    from napari_braggsim._model import DEFAULTS, START_CHANGES

    assert DEFAULTS == DEMO_VALUES and START_CHANGES == DEMO_START


def test_fields_come_from_the_registry():
    from braggsim.refine import PARAMETER_GROUPS, PARAMETERS
    from napari_braggsim._fields import groups, model_fields, registry

    assert groups() == {group: list(names) for group, names in PARAMETER_GROUPS.items()}
    for name, parameter in PARAMETERS.items():
        field = registry()[name]
        assert (field.label, field.unit, field.step, field.decimals) == (
            parameter.label,
            parameter.unit,
            parameter.gui_step,
            parameter.decimals,
        )
        assert (field.low, field.high) == tuple(parameter.gui_range)
    fields = model_fields()
    assert fields["mosaic_spread_deg"] is registry()["mosaic_spread_deg"]
    assert fields["mosaic_spread_deg"].flag == "-mosaic" and fields["cell_a_A"].flag == "-cell"
    assert "scale" not in fields and "fpixels" in fields  # refiner-only / plugin-only
