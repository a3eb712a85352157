"""Refinement at the edges (issue 16): garbage never reports success, a result survives
every ending, outputs are checked before the work and never overwrite an input."""

import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from braggsim import refine_cli
from braggsim.cli import main as cli_main
from braggsim.demo import DEMO_TRUTH, demo_flags, demo_model, demo_observed
from braggsim.refine import GATE_STATUSES, PARAMETERS, Refiner, check_fit, check_ranges, check_signal
from tests.conftest import DATA

START_FLAGS = demo_flags()


@pytest.fixture(scope="module")
def truth_frame():
    return demo_observed("braggsim")


def _write(tmp_path, name, image) -> Path:
    path = tmp_path / f"{name}.bin"
    np.asarray(image, "<f4").tofile(path)
    return path


def _refine(capsys, data, *flags):
    status = cli_main(["refine", "-data", str(data), *START_FLAGS, "-refine", "mosaic,misset", *flags])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# ------------------------------------------------------------------ the gates
def _garbage(kind: str, truth: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(16)
    if kind == "zeros":
        return np.zeros((64, 64))
    if kind == "gauss":
        return rng.normal(0.0, 1.0, (64, 64))
    return rng.poisson(0.1 * truth).astype(np.float64)  # "weak": a tenth of the signal, Poisson counts


@pytest.mark.parametrize(
    "kind, gates",
    [
        ("zeros", {"no-signal"}),
        # the float reader masks the negative half, and the positive half's tail can lift a
        # few pixels above the threshold; then the fit gate refuses the refined model
        ("gauss", {"no-signal", "diverged"}),
        ("weak", {"diverged"}),  # the model is 10x too bright and only its shape moves
    ],
)
def test_garbage_and_weak_frames_end_with_a_gate_status(tmp_path, capsys, truth_frame, kind, gates):
    """The issue's frames: all-zero (was mosaic 25 deg, max_iter, exit 0), Gaussian noise
    (506 deg), a weak Poisson frame ("converged" at 623,475,114 deg)."""
    data = _write(tmp_path, kind, _garbage(kind, truth_frame))
    out = tmp_path / "out.json"
    # the gates do not depend on how far the descent went: a short one keeps the test fast
    status, printed, _ = _refine(capsys, data, "-json", str(out), "-iterations", "10", "-search_deg", "0")
    payload = json.loads(out.read_text())
    assert status == refine_cli.EXIT_GATE
    gate = payload["status"]
    assert gate in gates and f"status: {gate}" in printed
    assert payload["gates"][0]["status"] == gate and payload["gates"][0]["reason"] in payload["message"]
    if gate == "no-signal":  # nothing to refine: the start is reported untouched, without errors
        assert payload["ending"] == "not-run" and payload["history"] == []
        assert payload["parameters"] == payload["initial_parameters"]
        assert all(math.isnan(e) for e in payload["standard_errors"].values())


def test_signal_gate():
    rng = np.random.default_rng(3)
    noise = rng.normal(10.0, 2.0, (64, 64))
    assert check_signal(np.zeros((64, 64))).reason.startswith("the frame is flat")
    assert check_signal(noise).status == "no-signal"
    spot = noise.copy()
    spot[30:33, 30:33] += 40.0  # 20 sigma
    assert check_signal(spot) is None
    background = rng.poisson(0.3, (64, 64)).astype(float)
    assert check_signal(background, loss="poisson").status == "no-signal"
    background[10:12, 20:22] += 12
    assert check_signal(background, loss="poisson") is None
    # ADU with a gain: the same counts, scaled, give the same answer
    assert check_signal(4.0 * background, loss="poisson", gain=4.0) is None
    assert check_signal(demo_observed("braggsim")) is None  # noise-free: every spot pixel stands out


def test_fit_gate():
    # 4096 pixels, 4 parameters: the likelihood-ratio statistic needs about 18.5
    assert check_fit(0.5, 1.0, n_values=4096, n_parameters=4) is None
    assert check_fit(0.999, 1.0, n_values=4096, n_parameters=4).status == "diverged"  # 4.1: chance
    assert check_fit(1.2, 1.0, n_values=4096, n_parameters=4).status == "diverged"  # worse than flat
    assert check_fit(math.nan, 1.0, n_values=4096, n_parameters=4).status == "diverged"
    assert check_fit(0.0, 1.0, n_values=10, n_parameters=2) is None  # a perfect fit
    assert check_fit(0.30, 0.31, n_values=4096, n_parameters=4, loss="poisson") is None  # 2n * 0.01 = 82
    assert check_fit(0.309, 0.31, n_values=4096, n_parameters=4, loss="poisson").status == "diverged"


def test_range_gate():
    failure = check_ranges({"mosaic_spread_deg": 623475114.0, "N_a": 0.5, "misset_x_deg": 400.0}, PARAMETERS)
    assert failure.status == "out-of-range"
    assert "mosaic_spread_deg = 6.23475e+08 deg outside (0, 90)" in failure.reason
    assert "N_a = 0.5 cells outside [1, inf)" in failure.reason and "misset" not in failure.reason
    assert check_ranges({"mosaic_spread_deg": 0.8, "cell_a_A": 100.0}, PARAMETERS) is None


def test_out_of_range_result_is_reported(truth_frame):
    crystal, detector, beam = demo_model((5, 3, -2), 0.8)
    refiner = Refiner(
        crystal,
        detector,
        beam,
        truth_frame,
        refine="mosaic",
        initial={"mosaic_spread_deg": 120.0},
        bounds={"mosaic_spread_deg": (95.0, 200.0)},
    )
    list(refiner.run(2))
    result = refiner.result
    assert result.status == "out-of-range" and not result.ok
    assert result.ending in ("converged", "max_iter")
    assert "mosaic_spread_deg" in result.gates[0]["reason"]


def test_gates_can_be_turned_off():
    crystal, detector, beam = demo_model()
    refiner = Refiner(crystal, detector, beam, np.zeros((64, 64)), refine="scale", gates=False)
    list(refiner.run(1))
    assert refiner.result.status in ("converged", "max_iter") and refiner.result.gates == []


# ------------------------------------------------------- results survive endings
@pytest.mark.parametrize("error", [MemoryError("cannot allocate 8 GB"), torch.OutOfMemoryError("CUDA out of memory")])
def test_out_of_memory_in_the_standard_errors_keeps_the_parameters(truth_frame, monkeypatch, error):
    import braggsim.refine.refiner as refiner_module

    def out_of_memory(*args, **kwargs):
        raise error

    monkeypatch.setattr(refiner_module, "standard_errors", out_of_memory)
    crystal, detector, beam = demo_model()
    refiner = Refiner(crystal, detector, beam, truth_frame, refine="misset", search_deg=0)
    states = list(refiner.run(3))
    result = refiner.result
    assert result is not None and states[-1].stage == "done"
    assert result.status == "max_iter" and all(math.isfinite(v) for v in result.parameters.values())
    assert all(math.isnan(e) for e in result.standard_errors.values())
    assert type(error).__name__ in result.standard_errors_note and "standard errors not computed" in result.message
    assert "standard_errors_note" in result.to_dict()


def test_out_of_memory_in_the_first_simulation_is_a_failed_result(truth_frame, monkeypatch):
    crystal, detector, beam = demo_model()
    refiner = Refiner(crystal, detector, beam, truth_frame, refine="misset")

    def out_of_memory(self, internal):
        raise MemoryError("cannot allocate 64 GB")

    monkeypatch.setattr(Refiner, "predict", out_of_memory)
    states = list(refiner.run(5))
    assert [s.stage for s in states] == ["done"]
    assert refiner.result.status == "failed" and "MemoryError: cannot allocate 64 GB" in refiner.result.message
    assert refiner.result.parameters == refiner.result.initial_parameters


def test_keyboard_interrupt_keeps_the_best_parameters(truth_frame):
    crystal, detector, beam = demo_model()
    refiner = Refiner(crystal, detector, beam, truth_frame, refine="misset", search_deg=0)
    run = refiner.run(50)
    next(run), next(run)
    with pytest.raises(KeyboardInterrupt):
        run.throw(KeyboardInterrupt)  # Ctrl-C while the consumer holds the second state
    result = refiner.result
    assert result.status == "stopped" and "KeyboardInterrupt" in result.message
    assert result.final_loss < result.initial_loss and len(result.history) == 2
    assert result.standard_errors_note == "not computed: interrupted"


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_finishes_the_step_then_writes_table_and_json(tmp_path, capsys, monkeypatch, signum, code):
    out = tmp_path / "out.json"
    real_progress = refine_cli._print_progress
    previous_handler = signal.getsignal(signum)

    def progress_then_signal(state):
        real_progress(state)
        os.kill(os.getpid(), signum)  # as if the user pressed Ctrl-C / the batch system ended the job

    monkeypatch.setattr(refine_cli, "_print_progress", progress_then_signal)
    status, printed, err = _refine(
        capsys, DATA / "p02_seed_truth.bin", "-search_deg", "0", "-iterations", "200", "-json", str(out)
    )
    assert status == code
    assert signal.Signals(signum).name in err and "Traceback" not in err
    assert "Std. err." in printed and "status: stopped" in printed
    payload = json.loads(out.read_text())
    assert payload["status"] == "stopped" and len(payload["history"]) == 1  # the step in progress finished
    assert payload["final_loss"] < payload["initial_loss"]
    assert set(payload["parameters"]) == set(DEMO_TRUTH)
    assert signal.getsignal(signum) is previous_handler  # the handlers are put back


# --------------------------------------------------- outputs checked before work
def test_json_into_a_missing_folder_fails_before_the_work(tmp_path, capsys):
    status, printed, err = _refine(capsys, DATA / "p02_seed_truth.bin", "-json", str(tmp_path / "no" / "out.json"))
    assert status == 2 and "does not exist" in err and "braggsim refine:" not in printed


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write into a read-only folder")
def test_json_into_a_read_only_folder_fails_before_the_work(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        status, printed, err = _refine(capsys, DATA / "p02_seed_truth.bin", "-json", str(folder / "out.json"))
    finally:
        folder.chmod(0o755)
    assert status == 2 and "not writable" in err and "braggsim refine:" not in printed


def test_json_never_writes_over_an_input_or_a_read_only_file(tmp_path, capsys, truth_frame):
    data = _write(tmp_path, "frame", truth_frame)
    sidecar = tmp_path / "frame.json"
    sidecar.write_text(json.dumps({"shape_slow_fast": [64, 64]}))
    protected = tmp_path / "protected.json"
    protected.write_text("keep me")
    protected.chmod(0o444)
    mask = tmp_path / "mask.bin"
    np.ones((64, 64), "<f4").tofile(mask)
    for target, expected in ((data, "input"), (sidecar, "input"), (mask, "input"), (protected, "read-only")):
        before = target.read_bytes()
        status, printed, err = _refine(capsys, data, "-mask", str(mask), "-json", str(target))
        assert status == 2 and expected in err, (target, err)
        assert target.read_bytes() == before and "braggsim refine:" not in printed
    status, _, err = _refine(capsys, data, "-json", str(tmp_path))
    assert status == 2 and "directory" in err
    sidecar.unlink()  # a -json named like the frame's sidecar would be read as one next time
    status, _, err = _refine(capsys, data, "-json", str(sidecar))
    assert status == 2 and "sidecar" in err and not sidecar.exists()


def test_unavailable_device_is_an_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    status, printed, err = _refine(capsys, DATA / "p02_seed_truth.bin", "-device", "cuda")
    assert status == 2 and "CUDA is not available" in err and "braggsim refine:" not in printed
    status, _, err = _refine(capsys, DATA / "p02_seed_truth.bin", "-device", "abacus")
    assert status == 2 and "not a torch device" in err
    crystal, detector, beam = demo_model()
    with pytest.raises(ValueError, match="CUDA is not available"):
        Refiner(crystal, detector, beam, np.zeros((64, 64)), device="cuda")


def test_gate_statuses_are_documented():
    assert set(GATE_STATUSES) == {"no-signal", "diverged", "out-of-range"}
    assert all(status in refine_cli.REFINE_HELP for status in GATE_STATUSES)
    assert "130 / 143" in refine_cli.REFINE_HELP
