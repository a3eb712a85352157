"""Batch throughput (issue 13): frames/s in-process and on a LocalCluster of 1 and 2
workers, and what each task costs the scheduler.

    python benchmarks/batch_scaling.py                       # the six public stills, x2
    python benchmarks/batch_scaling.py --frames 'dir/*.cbf' --copies 1 --workers 1 2 4
    python benchmarks/batch_scaling.py --quick               # crops from tests/data, seconds

Frames/s: each configuration first runs one frame per worker (imports, first calls),
then times the whole set through ``braggsim.batch.run_batch`` -- the path
``braggsim process`` takes: the task, reading the frame on the worker, the pipeline, the
result back, its JSON and summary.csv.  Cluster start-up is reported apart.

Overhead per task: ``--overhead-tasks`` no-op frames (a function that returns a result
without reading anything) through the same path on one worker, against the same no-op
frames in-process; the difference is what the scheduler adds to each frame (submit,
schedule, run on a worker, result back), with ``client.map`` of a bare no-op for
comparison.  Frames are linked (not copied) under a temporary folder with distinct names.
The load average at start and end is printed, and for each configuration the cores it
actually obtained (the frames' CPU seconds, as the pipeline reports them, over the wall
time): on a shared machine a second worker only helps when a second core is free.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# the project's ../shared (a worktree sits one level deeper)
PUBLIC = next(
    (d / "shared" / "data" / "thaumatin_grid" for d in (ROOT.parent, ROOT.parent.parent) if (d / "shared").is_dir()),
    ROOT.parent / "shared" / "data" / "thaumatin_grid",
)
CROPS = ROOT / "tests" / "data" / "thaumatin_crops"


def noop_frame(source, options):
    """A frame that costs nothing: the scheduler's share of a task, alone."""
    from braggsim.batch import FrameRef
    from braggsim.batch.pipeline import FrameResult

    ref = FrameRef(*source) if isinstance(source, tuple) else FrameRef(source)
    return FrameResult(frame=ref.name, status="no-lattice")


def bare_noop(x):
    return x


def linked_frames(patterns, copies: int, folder: Path) -> list:
    sources = sorted({p for pattern in patterns for p in glob.glob(pattern)})
    if not sources:
        raise SystemExit(f"no frames match {patterns}")
    linked = []
    for copy in range(copies):
        for source in sources:
            name = Path(source).name
            target = folder / f"c{copy}_{name}"
            os.symlink(os.path.abspath(source), target)
            linked.append(str(target))
    return linked


def timed_batch(refs, options, out: Path, scheduler, frame_function=None, max_in_flight=None) -> float:
    from braggsim.batch import run_batch

    started = time.perf_counter()
    final = run_batch(
        refs, options, out, scheduler=scheduler, frame_function=frame_function, force=True, max_in_flight=max_in_flight
    )
    elapsed = time.perf_counter() - started
    assert final.state == "finished" and final.done == len(refs), final
    return elapsed


def frame_cpu_seconds(out: Path) -> list:
    """The CPU seconds the pipeline reports for each frame of a finished batch."""
    found = [json.loads(p.read_text()).get("details", {}).get("cpu_time_s") for p in out.glob("*.json")]
    return [c for c in found if c is not None]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", nargs="+", help="frame files or patterns (default: the six public stills)")
    parser.add_argument("--copies", type=int, default=2, help="each frame this many times (default 2)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="LocalCluster sizes (default 1 2)")
    parser.add_argument("--overhead-tasks", type=int, default=200, help="no-op tasks for the overhead (default 200)")
    parser.add_argument("--quick", action="store_true", help="the 256x256 crops of tests/data, fewer no-op tasks")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    from braggsim.batch import expand_frames
    from braggsim.batch.pipeline import ProcessOptions, process_frame
    from braggsim.batch.runner import _local_cluster

    patterns = args.frames or [str((CROPS if args.quick else PUBLIC) / "*.cbf.bz2")]
    if args.quick:
        args.overhead_tasks = min(args.overhead_tasks, 50)
    options = ProcessOptions(cell=(57.8, 57.8, 150.0, 90.0, 90.0, 90.0), space_group="P41212")
    load_start = os.getloadavg()
    figures = {"pipeline": f"{process_frame.__module__}.{process_frame.__name__}", "load_start": load_start}
    with tempfile.TemporaryDirectory(prefix="braggsim-batch-bench-") as tmp:
        tmp = Path(tmp)
        (tmp / "frames").mkdir()
        refs = expand_frames(linked_frames(patterns, args.copies, tmp / "frames"))
        print(f"{len(refs)} frames ({args.copies} x {len(refs) // args.copies}), pipeline {figures['pipeline']}")
        print(f"load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")

        timed_batch(refs[:1], options, tmp / "warm", "none")
        wall = timed_batch(refs, options, tmp / "none", "none")
        cpu = frame_cpu_seconds(tmp / "none")
        figures["none"] = {"wall_s": wall, "frames_per_s": len(refs) / wall, "cores_obtained": sum(cpu) / wall}
        print(
            f"in-process      : {wall:7.2f} s  {len(refs) / wall:6.3f} frames/s"
            f"  (frames' CPU / wall = {sum(cpu) / wall:.2f} cores obtained)"
        )
        if cpu:  # the pipeline reports its CPU seconds: what a frame costs a free core
            figures["cpu_s_per_frame_median"] = statistics.median(cpu)
            print(
                f"CPU per frame (one thread), median of {len(cpu)}: {statistics.median(cpu):.2f} s"
                f" (min {min(cpu):.2f}, max {max(cpu):.2f}) -> {1 / statistics.median(cpu):.3f} frames/s per free core"
            )
        from distributed import Client

        for n_workers in args.workers:
            started = time.perf_counter()
            cluster = _local_cluster(n_workers)
            client = Client(cluster, set_as_default=False)
            client.wait_for_workers(n_workers)
            startup = time.perf_counter() - started
            try:
                timed_batch(refs[:n_workers], options, tmp / f"warm{n_workers}", client)
                wall = timed_batch(refs, options, tmp / f"dask{n_workers}", client)
            finally:
                client.close()
                cluster.close()
            obtained = sum(frame_cpu_seconds(tmp / f"dask{n_workers}")) / wall
            figures[f"workers_{n_workers}"] = {
                "wall_s": wall,
                "frames_per_s": len(refs) / wall,
                "cluster_startup_s": startup,
                "cores_obtained": obtained,
            }
            print(
                f"{n_workers} worker{'s' if n_workers > 1 else ' '}       : {wall:7.2f} s  {len(refs) / wall:6.3f} frames/s"
                f"  ({obtained:.2f} cores obtained; cluster start-up {startup:.1f} s, then a warm-up frame per worker)"
            )
        base = figures.get("workers_1", {}).get("frames_per_s")
        for n_workers in args.workers[1:]:
            if base:
                speedup = figures[f"workers_{n_workers}"]["frames_per_s"] / base
                print(f"speed-up {n_workers} workers / 1 worker: {speedup:.2f}")
                figures[f"speedup_{n_workers}"] = speedup

        # the scheduler's share of one task
        fake = [type(refs[0])(str(tmp / "frames" / f"noop_{i}.cbf")) for i in range(args.overhead_tasks)]
        in_process = timed_batch(fake, options, tmp / "noop_none", "none", noop_frame) / len(fake)
        cluster = _local_cluster(1)
        client = Client(cluster, set_as_default=False)
        try:
            client.wait_for_workers(1)
            timed_batch(fake[:5], options, tmp / "noop_warm", client, noop_frame)
            per_task, pipelined = [], []
            for repeat in range(3):
                per_task.append(timed_batch(fake, options, tmp / f"noop_dask{repeat}", client, noop_frame) / len(fake))
                pipelined.append(
                    timed_batch(fake, options, tmp / f"noop_deep{repeat}", client, noop_frame, max_in_flight=64)
                    / len(fake)
                )
            client.gather(client.map(bare_noop, range(20)))
            bare = []
            for repeat in range(3):
                started = time.perf_counter()
                client.gather(
                    client.map(
                        bare_noop,
                        range(args.overhead_tasks),
                        key=[f"b{repeat}-{i}" for i in range(args.overhead_tasks)],
                    )
                )
                bare.append((time.perf_counter() - started) / args.overhead_tasks)
        finally:
            client.close()
            cluster.close()
        through_dask, deep = statistics.median(per_task), statistics.median(pipelined)
        figures["overhead"] = {
            "tasks": len(fake),
            "in_process_per_frame_ms": in_process * 1e3,
            "dask_per_frame_ms": through_dask * 1e3,
            "scheduler_overhead_per_task_ms": (through_dask - in_process) * 1e3,
            "dask_64_in_flight_per_frame_ms": deep * 1e3,
            "bare_client_map_per_task_ms": statistics.median(bare) * 1e3,
        }
        print(f"no-op frames, {len(fake)} tasks on 1 worker, median of 3:")
        print(f"  in-process (the client's JSON + summary.csv per frame): {in_process * 1e3:6.2f} ms/frame")
        print(
            f"  through Dask, one in flight (the default):             {through_dask * 1e3:6.2f} ms/frame"
            f"  -> scheduler round trip {1e3 * (through_dask - in_process):.2f} ms/task"
        )
        print(f"  through Dask, 64 in flight (pipelined):                {deep * 1e3:6.2f} ms/frame")
        print(f"  bare client.map of a no-op, all in flight:             {statistics.median(bare) * 1e3:6.2f} ms/task")
    figures["load_end"] = os.getloadavg()
    print(
        f"load average at end: {figures['load_end'][0]:.2f} {figures['load_end'][1]:.2f} {figures['load_end'][2]:.2f}"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
