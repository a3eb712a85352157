import os

import pytest

# napari's canvas needs OpenGL: run these under Xvfb (pytest-xvfb), never offscreen Qt
os.environ.pop("QT_QPA_PLATFORM", None) if os.environ.get("QT_QPA_PLATFORM") == "offscreen" else None


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.gui)


# Waiting on widget state, never on a worker's signal: a signal emitted before the test
# starts listening is lost, and a fast machine (or a warm kernel) can get there first.
# The timeouts are generous upper bounds for a busy machine compiling a cold kernel.
@pytest.fixture
def wait_simulated(qtbot):
    """Wait until a Simulate widget's newest request has reached its layer (it runs in a
    worker when the image is large or the kernel is still compiling)."""

    def wait(widget, timeout=120000):
        qtbot.waitUntil(lambda: widget._applied == widget._request, timeout=timeout)

    return wait


@pytest.fixture
def wait_refined(qtbot):
    """Wait until a Refine widget's run has ended and its result is shown."""

    def wait(widget, timeout=120000):
        qtbot.waitUntil(lambda: not widget.running, timeout=timeout)

    return wait


@pytest.fixture
def refiner_waits_for_stop(monkeypatch):
    """Refiner.run yields two states and then waits until stop() is asked for, as a long
    refinement would still be running; then it carries on and ends as stopped.  Makes a
    test of stopping mid-run independent of how fast the machine converges."""
    import threading

    from braggsim.refine import Refiner

    gates: dict = {}
    original_run, original_stop = Refiner.run, Refiner.stop

    def run(self, max_iter=100):
        gate = gates.setdefault(id(self), threading.Event())
        for count, state in enumerate(original_run(self, max_iter), start=1):
            yield state
            if count == 2:
                assert gate.wait(120), "nobody asked the refiner to stop"

    def stop(self):
        original_stop(self)
        gates.setdefault(id(self), threading.Event()).set()

    monkeypatch.setattr(Refiner, "run", run)
    monkeypatch.setattr(Refiner, "stop", stop)
