"""A refinement in a worker thread and live simulation on another thread at the same time.

This is what the napari plugin does: the Refine dock runs the Refiner in a thread while
the Simulate dock re-simulates on the GUI thread.  Both share the module-level memos
(detector frames, subpixel geometry, cell axes, spindle and mosaic terms) and the fused
kernel's thread pool.  Every run must give exactly what it gives alone: the memos are
keyed on every input and the kernels split work and sum partial gradients in a fixed
order, so results are compared bitwise, not to a tolerance.
"""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
import torch

from braggsim import Beam, Crystal, Detector, crystal, mosaic, simulate
from braggsim.refine import Refiner

simulate_module = sys.modules["braggsim.simulate"]
ROUNDS = 50


def _refine_job():
    """Three L-BFGS iterations of a small demo-like problem: the losses, the parameters
    and the last predicted image."""
    truth = Crystal(
        cell=(100, 100, 100, 90, 90, 90),
        N_cells=(5, 5, 5),
        default_F=100,
        misset_deg=(1.0, 0.5, -0.5),
        mosaic_spread_deg=0.6,
        mosaic_domains=4,
        mosaic_seed=42,
    )
    detector = Detector(fpixels=32, spixels=32, pixel_size_mm=0.2, distance_mm=100, oversample=2)
    beam = Beam(wavelength_A=1.0, fluence=1e28)
    with torch.no_grad():
        observed = simulate(truth, detector, beam, dtype=torch.float64).numpy()
    start = truth.replace(misset_deg=(0.0, 0.0, 0.0), mosaic_spread_deg=0.3)
    refiner = Refiner(start, detector, beam, observed, refine=("mosaic", "misset"), search_deg=0.0)
    states = list(refiner.run(3))
    return (
        [state.loss for state in states],
        [sorted(state.parameters.items()) for state in states],
        states[-1].predicted,
    )


def _live_job():
    """What live Simulate does while the user edits fields: a few different models, no
    gradients, in float32 (the widget's) and float64."""
    images = []
    for distance_mm, misset_z, dtype in (
        (90.0, 0.0, torch.float32),
        (95.0, 3.0, torch.float64),
        (90.0, 7.0, torch.float32),
    ):
        crystal_ = Crystal(
            cell=(100, 100, 100, 90, 90, 90),
            N_cells=(5, 5, 5),
            default_F=100,
            misset_deg=(5.0, 3.0, misset_z),
            mosaic_spread_deg=0.5,
            mosaic_domains=6,
            mosaic_seed=7,
        )
        detector = Detector(fpixels=48, spixels=40, pixel_size_mm=0.15, distance_mm=distance_mm, oversample=2)
        with torch.no_grad():
            images.append(simulate(crystal_, detector, Beam(wavelength_A=1.1), dtype=dtype).numpy())
    return images


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.fixture
def small_memos(monkeypatch):
    """Memos of two entries: the threads keep evicting each other's values mid-run."""
    for memo in (
        simulate_module._FRAMES,
        simulate_module._GEOMETRY,
        crystal._UNROTATED,
        crystal._PHI,
        mosaic._CONSTANTS,
    ):
        memo.clear()
        monkeypatch.setattr(memo, "max_entries", 2)


def test_refinement_and_live_simulation_at_once_match_serial_runs(small_memos):
    serial_refine = _refine_job()
    serial_live = _live_job()
    assert serial_refine[0][-1] < serial_refine[0][0]  # the refinement moves
    assert len({float(image.sum()) for image in serial_live}) == 3  # three different images

    failures = []
    for round_ in range(ROUNDS):
        results: dict = {}
        errors: list = []
        barrier = threading.Barrier(2)

        def worker(name, job, results=results, errors=errors, barrier=barrier):
            try:
                barrier.wait(timeout=60)
                results[name] = job()
            except Exception as exc:  # noqa: BLE001  reported by the main thread below
                errors.append(f"{name}: {exc!r}")

        threads = [
            threading.Thread(target=worker, args=("refine", _refine_job)),
            threading.Thread(target=worker, args=("live", _live_job)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads), f"round {round_}: a thread hung"
        assert not errors, f"round {round_}: {errors}"
        if not _same(results["refine"], serial_refine):
            failures.append(f"round {round_}: the refinement differs from its serial run")
        if not _same(results["live"], serial_live):
            failures.append(f"round {round_}: live simulation differs from its serial run")
    assert not failures, failures
