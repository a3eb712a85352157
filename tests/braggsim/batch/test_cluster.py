"""Batches on a real Dask LocalCluster with two worker processes: results equal the
in-process ones, a killed worker loses no frame, a restart skips finished frames, a
frame that takes its worker down is 'failed'.  The frames are crops of the public
thaumatin stills; the frame functions are cheap doubles (doubles.py) except in
the test that needs the real pipeline."""

from __future__ import annotations

import csv
import functools
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from braggsim.batch import run_batch
from braggsim.batch.pipeline import ProcessOptions, frame_stem
from tests.conftest import DATA, ROOT

from . import doubles as batch_doubles

pytest.importorskip("distributed")

CROPS = DATA / "thaumatin_crops"
NAMES = ["thau_3_2_0003_c512", "thau_3_2_0013_c512", "thau_3_2_0016_c512"]
THAUMATIN = ["--cell", "57.8", "57.8", "150", "90", "90", "90", "--space-group", "P41212"]
TIMES = {"time_s", "times_s", "cpu_time_s", "cpu_times_s", "pid"}  # what may differ between runs


def options():
    return ProcessOptions(cell=(57.8, 57.8, 150.0, 90.0, 90.0, 90.0), space_group="P41212")


def untimed(value):
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k not in TIMES}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


@pytest.fixture(scope="module")
def client():
    """The LocalCluster ``--scheduler local`` makes, with two worker processes; they
    import the doubles as tests.braggsim.batch.doubles (the checkout's root on their path).  A frame may take down one worker (allowed-failures
    1, default 3) before it counts as failed."""
    import dask
    from distributed import Client

    from braggsim.batch.runner import _local_cluster

    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), saved) if p)
    try:
        with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
            cluster = _local_cluster(2)
        client = Client(cluster, set_as_default=False)
        client.wait_for_workers(2, timeout=60)
        yield client
        client.close()
        cluster.close()
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


@pytest.fixture
def frames(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, name in enumerate(NAMES * 2):
        shutil.copy(CROPS / f"{name}.cbf.bz2", folder / f"f_{i + 1}.cbf.bz2")
    return folder


def results(out) -> dict:
    """stem -> the frame's JSON (and .expt) without what may differ between runs (times, process)."""
    found = {}
    for path in sorted(Path(out).glob("f_*.json")):
        data = untimed(json.loads(path.read_text()))
        expt = path.with_suffix(".expt")
        data["expt"] = json.loads(expt.read_text()) if expt.exists() else None
        found[path.stem] = data
    return found


def statuses(out) -> dict:
    with open(Path(out) / "summary.csv", newline="") as handle:
        return {frame_stem(row["frame"]): row["status"] for row in csv.DictReader(handle)}


def pids(out) -> dict:
    return {p.stem: json.loads(p.read_text())["parameters"]["pid"] for p in Path(out).glob("f_*.json")}


def test_cluster_results_equal_in_process_results(tmp_path, frames, client):
    local = run_batch(
        [frames], options(), tmp_path / "dask", scheduler=client, frame_function=batch_doubles.count_spots
    )
    alone = run_batch(
        [frames], options(), tmp_path / "none", scheduler="none", frame_function=batch_doubles.count_spots
    )
    assert local.state == alone.state == "finished" and local.done == alone.done == 6
    assert results(tmp_path / "dask") == results(tmp_path / "none")
    assert (tmp_path / "dask" / "summary.csv").read_text().splitlines()[0].startswith("frame,status,")
    assert len(set(pids(tmp_path / "dask").values())) == 2  # both workers took frames
    assert set(pids(tmp_path / "none").values()) == {os.getpid()}


def test_a_restart_skips_finished_frames(tmp_path, frames, client):
    out = tmp_path / "out"
    first = run_batch(
        [frames / f"f_{i}.cbf.bz2" for i in (1, 2, 3)],
        options(),
        out,
        scheduler=client,
        frame_function=batch_doubles.count_spots,
    )
    assert first.done == 3
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("f_*.json")}
    time.sleep(0.05)
    second = run_batch([frames], options(), out, scheduler=client, frame_function=batch_doubles.count_spots)
    assert second.skipped == 3 and second.done == 3 and second.counts == {"indexed": 4, "no-lattice": 2}
    assert {p: out.joinpath(p).stat().st_mtime_ns for p in stamps} == stamps  # not rewritten
    assert sorted(p.stem for p in out.glob("f_*.json")) == [f"f_{i}" for i in range(1, 7)]


def test_a_corrupt_frame_among_good_ones_is_failed_and_the_rest_indexed(tmp_path, frames, client):
    """The real pipeline (braggsim.process) on the workers."""
    (frames / "f_4.cbf.bz2").write_bytes((frames / "f_4.cbf.bz2").read_bytes()[:5000])  # truncated
    final = run_batch([frames / f"f_{i}.cbf.bz2" for i in (1, 2, 4)], options(), tmp_path / "out", scheduler=client)
    rows = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "out").glob("f_*.json")}
    assert final.state == "finished" and final.counts == {"indexed": 2, "failed": 1}
    assert rows["f_4"]["status"] == "failed" and "f_4.cbf.bz2" in rows["f_4"]["reason"]
    assert rows["f_1"]["status"] == rows["f_2"]["status"] == "indexed"
    assert rows["f_1"]["n_indexed"] / rows["f_1"]["n_spots"] > 0.9 and rows["f_1"]["rmsd_px"] < 1.0
    assert sorted(p.name for p in (tmp_path / "out").glob("f_*.expt")) == ["f_1.expt", "f_2.expt"]


def test_cli_through_a_scheduler_address_with_a_worker_killed(tmp_path, frames, client, capsys):
    """``braggsim process --scheduler tcp://...`` with the real pipeline; a worker is
    SIGKILLed once the first frame's JSON appears: every frame is in summary.csv with the
    status ``--scheduler none`` gives, and every result and model is the same, number for
    number (one torch thread and seeded RNGs per frame, whichever process runs it)."""
    from braggsim.cli import main

    client.wait_for_workers(2, timeout=120)  # nannies restart killed workers; the tests that kill run last
    out = tmp_path / "dask"
    pid = next(iter(client.run(os.getpid).values()))
    killed = threading.Event()

    def kill_after_first_frame():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not any(p.name != "options.json" for p in out.glob("*.json")):
            time.sleep(0.01)
        os.kill(pid, signal.SIGKILL)
        killed.set()

    killer = threading.Thread(target=kill_after_first_frame, daemon=True)
    killer.start()
    args = ["process", str(frames), *THAUMATIN, "--quiet"]
    assert main([*args, "--out", str(out), "--scheduler", client.scheduler.address]) == 0
    assert main([*args, "--out", str(tmp_path / "none"), "--scheduler", "none"]) == 0
    killer.join(timeout=310)
    assert killed.is_set()
    with_dask, alone = statuses(out), statuses(tmp_path / "none")
    assert list(with_dask) == [f"f_{i}" for i in range(1, 7)] and with_dask == alone
    assert list(with_dask.values()) == ["indexed", "indexed", "no-lattice"] * 2
    assert results(out) == results(tmp_path / "none")
    assert (
        capsys.readouterr().out.splitlines()[0].startswith("6 frames: 4 indexed, 2 no-lattice, 0 failed; 6 processed")
    )


def test_killing_a_worker_mid_frame_loses_no_frame(tmp_path, frames, client):
    client.wait_for_workers(2, timeout=120)
    killed = {}

    def kill_a_busy_worker(progress):
        if progress.result is None or killed:
            return
        for address, keys in client.processing().items():
            if keys:  # this worker is running a frame right now
                pid = client.run(os.getpid, workers=[address])[address]
                killed.update(pid=pid, frames=[k.split("-")[2] for k in keys])
                os.kill(pid, signal.SIGKILL)
                return

    slow = functools.partial(batch_doubles.slow, delay_s=1.0)
    final = run_batch(
        [frames],
        options(),
        tmp_path / "dask",
        scheduler=client,
        frame_function=slow,
        on_progress=kill_a_busy_worker,
    )
    run_batch([frames], options(), tmp_path / "none", scheduler="none", frame_function=batch_doubles.count_spots)
    assert killed, "no worker was busy when the first frame finished"
    assert final.state == "finished" and final.done == 6
    assert results(tmp_path / "dask") == results(tmp_path / "none")
    by_pid = pids(tmp_path / "dask")
    for name in killed["frames"]:  # the killed worker's frame was run again by a live one
        assert by_pid[name] != killed["pid"]


def test_a_frame_that_kills_its_worker_every_time_is_failed(tmp_path, frames, client):
    # last in the module: on a loaded machine a nanny may fail to restart a worker after this
    client.wait_for_workers(2, timeout=120)
    deadly = functools.partial(batch_doubles.kills_process_on, bad="f_2")
    final = run_batch([frames], options(), tmp_path / "out", scheduler=client, frame_function=deadly)
    rows = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "out").glob("f_*.json")}
    assert final.state == "finished" and len(rows) == 6
    assert rows["f_2"]["status"] == "failed" and "workers running this frame died" in rows["f_2"]["reason"]
    assert [rows[f"f_{i}"]["status"] for i in (1, 3, 4, 5, 6)] == [
        "indexed",
        "no-lattice",
        "indexed",
        "indexed",
        "no-lattice",
    ]
