"""Issue 13's judging, reproduced: a real ``dask scheduler`` and two ``dask worker``
processes on localhost, ``braggsim process`` through them, one worker SIGKILLed once the
first frame has finished; then the same frames with ``--scheduler none``.  Every frame
must be in both summary.csv files with the same status.  Prints both wall times.

    python benchmarks/kill_worker.py                     # the six public stills
    python benchmarks/kill_worker.py --frames 'held_out/*.cbf' --copies 1
    python benchmarks/kill_worker.py --nthreads 1        # workers with one thread each

The workers are started as a user would start them (``dask worker ADDRESS``, default
threads), with this checkout's ``src`` first on their PYTHONPATH.  The killed process is
the ``dask worker`` command itself (its nanny); its worker process goes with it.  Exit
status 0 when every frame matches, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the project's ../shared (a worktree sits one level deeper)
PUBLIC = next(
    (d / "shared" / "data" / "thaumatin_grid" for d in (ROOT.parent, ROOT.parent.parent) if (d / "shared").is_dir()),
    ROOT.parent / "shared" / "data" / "thaumatin_grid",
)
CELL = ["57.8", "57.8", "150.0", "90", "90", "90"]


TIMES = {"time_s", "times_s", "cpu_time_s", "cpu_times_s"}


def statuses(out: Path) -> dict:
    from braggsim.process import frame_stem

    with open(out / "summary.csv", newline="") as handle:
        return {frame_stem(row["frame"]): row["status"] for row in csv.DictReader(handle)}


def untimed(value):
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k not in TIMES}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def same_results(first: Path, second: Path, stem: str) -> bool:
    """The frame's JSON (times aside) and .expt are the same, number for number."""
    for suffix in (".json", ".expt"):
        a, b = first / (stem + suffix), second / (stem + suffix)
        if a.exists() != b.exists():
            return False
        if a.exists() and untimed(json.loads(a.read_text())) != untimed(json.loads(b.read_text())):
            return False
    return True


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", nargs="+", help="frame files or patterns (default: the six public stills)")
    parser.add_argument("--copies", type=int, default=2, help="each frame this many times, linked (default 2)")
    parser.add_argument("--nthreads", type=int, help="threads per dask worker (default: dask's)")
    parser.add_argument("--keep", type=Path, help="keep the outputs in this folder")
    args = parser.parse_args(argv)

    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    )
    bindir = Path(sys.executable).parent
    dask, braggsim = str(bindir / "dask"), [sys.executable, "-m", "braggsim.cli"]
    work = Path(tempfile.mkdtemp(prefix="braggsim-kill-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    frames = work / "frames"
    frames.mkdir(exist_ok=True)
    sources = sorted({p for pattern in (args.frames or [str(PUBLIC / "*.cbf.bz2")]) for p in glob.glob(pattern)})
    if not sources:
        raise SystemExit("no frames")
    for copy in range(args.copies):
        for source in sources:
            target = frames / (f"c{copy}_" + Path(source).name if args.copies > 1 else Path(source).name)
            if not target.exists():
                os.symlink(os.path.abspath(source), target)
    n_frames = len(list(frames.iterdir()))
    print(f"{n_frames} frames; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    started = []
    logs = contextlib.ExitStack()
    try:
        scheduler_file = work / "scheduler.json"
        scheduler_file.unlink(missing_ok=True)
        started.append(
            subprocess.Popen(
                [dask, "scheduler", "--scheduler-file", str(scheduler_file), "--port", "0", "--no-dashboard"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=logs.enter_context(open(work / "scheduler.log", "w")),  # noqa: SIM115  closed by the ExitStack
            )
        )
        wait_for(scheduler_file.exists, 120, "the scheduler")
        address = wait_for(lambda: json.loads(scheduler_file.read_text() or "{}").get("address"), 30, "its address")
        worker_args = [dask, "worker", address, "--no-dashboard"]
        if args.nthreads:
            worker_args += ["--nthreads", str(args.nthreads)]
        workers = [
            subprocess.Popen(
                worker_args,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=logs.enter_context(open(work / f"worker{i}.log", "w")),  # noqa: SIM115  closed by the ExitStack
            )
            for i in (1, 2)
        ]
        started.extend(workers)
        from distributed import Client

        with Client(address, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=180)
        print(f"scheduler {address}, 2 workers (pids {workers[0].pid}, {workers[1].pid})")

        out = work / "out_dask"
        command = [*braggsim, "process", str(frames), "--cell", *CELL, "--space-group", "P41212", "--quiet"]
        t0 = time.perf_counter()
        run = subprocess.Popen([*command, "--scheduler", address, "--out", str(out)], env=env)
        wait_for(lambda: any(p.name != "options.json" for p in out.glob("*.json")), 1800, "the first frame")
        t_kill = time.perf_counter() - t0
        os.kill(workers[0].pid, signal.SIGKILL)
        print(f"first frame done at {t_kill:.1f} s: SIGKILL to dask worker pid {workers[0].pid}")
        status = run.wait()
        wall_dask = time.perf_counter() - t0

        t0 = time.perf_counter()
        status_none = subprocess.run(
            [*command, "--scheduler", "none", "--out", str(work / "out_none")], env=env
        ).returncode
        wall_none = time.perf_counter() - t0
    finally:
        for process in reversed(started):
            if process.poll() is None:
                process.terminate()
        for process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        logs.close()

    with_dask, alone = statuses(out), statuses(work / "out_none")
    names = sorted(set(with_dask) | set(alone))
    print(f"\n{'frame':24s} {'dask, one worker killed':>24s} {'--scheduler none':>18s}  results")
    identical = 0
    for name in names:
        mark = "" if with_dask.get(name) == alone.get(name) else "   <-- differs"
        same = same_results(out, work / "out_none", name)
        identical += same
        print(
            f"{name:24s} {with_dask.get(name, 'MISSING'):>24s} {alone.get(name, 'MISSING'):>18s}"
            f"  {'identical' if same else 'DIFFERENT'}{mark}"
        )
    print(f"{identical} of {len(names)} frames: the same JSON (times aside) and .expt, number for number")
    ok = status == status_none == 0 and len(with_dask) == len(alone) == n_frames and with_dask == alone
    print(
        f"\nwall time: {wall_dask:.1f} s on dask (2 workers, one killed at {t_kill:.1f} s), {wall_none:.1f} s in-process"
    )
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("PASS: every frame, same status" if ok else "FAIL")
    print(f"outputs in {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
