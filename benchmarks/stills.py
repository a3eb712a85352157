"""Real stills, end to end: spots, indexing and refinement of every public thaumatin frame.

    python benchmarks/stills.py [--data DIR] [--repeats N] [--no-pixel-refine]

For each frame in DIR (default ../shared/data/thaumatin_grid) it runs
``braggsim.process.process_frame`` and prints one Markdown table row: strong spots, % indexed,
RMSD (px, 2-D and per axis), refined cell with standard errors, mosaic spread, and the time of
each step (read, spots, index, refine) and of the whole frame.  Then it times the spot finder
alone on the first frame's 6M pixels (median of --repeats runs; reading excluded, and the
read timed apart).  It prints the machine's load first: on a shared machine, quote ratios
measured in one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from braggsim.process import ProcessOptions, process_frame, read_still  # noqa: E402
from braggsim.spotfind import find_spots  # noqa: E402

THAUMATIN = (57.8, 57.8, 150.0, 90.0, 90.0, 90.0)


def _step(result, name: str) -> str:
    if name not in result.times_s:
        return ""
    return f"{result.times_s[name]:.2f} ({result.details['cpu_times_s'][name]:.2f})"


def default_data() -> Path:
    for candidate in (
        HERE.parent.parent.parent / "shared" / "data" / "thaumatin_grid",
        Path("/work/shared/data/thaumatin_grid"),
    ):
        if candidate.is_dir():
            return candidate
    return Path("thaumatin_grid")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-pixel-refine", action="store_true")
    args = parser.parse_args()
    frames = sorted(args.data.glob("*.cbf*"))
    if not frames:
        print(f"no frames in {args.data}", file=sys.stderr)
        return 2
    print(f"load average: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    options = ProcessOptions(cell=THAUMATIN, space_group="P 41 21 2", refine_pixels=not args.no_pixel_refine)
    process_frame(frames[0], options)  # warm up: imports, the native kernels, memos
    print()
    print(
        "| frame | spots | indexed | RMSD px (x, y) | a (A) | c (A) | mosaic (deg) | read s | spots s | index s | refine s | total s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for path in frames:
        r = process_frame(path, options)
        name = path.name.split(".")[0]
        steps = " | ".join(_step(r, k) for k in ("read", "spots", "index", "refine"))
        total = f"{r.time_s:.2f} ({r.details.get('cpu_time_s', 0):.2f})"
        if r.status != "indexed":
            print(f"| {name} | {r.n_spots} | {r.status} | | | | | {steps} | {total} |")
            continue
        d = r.details
        mosaic = f"{r.mosaic_deg:.3f}" if r.mosaic_deg is not None else ""
        print(
            f"| {name} | {r.n_spots} | {r.n_indexed} ({r.n_indexed / r.n_spots:.0%}) "
            f"| {r.rmsd_px:.2f} ({d['rmsd_x_px']:.2f}, {d['rmsd_y_px']:.2f}) "
            f"| {r.cell[0]:.2f} +- {r.cell_sigma[0]:.2f} | {r.cell[2]:.2f} +- {r.cell_sigma[2]:.2f} | {mosaic} "
            f"| {steps} | {total} |"
        )
    print()
    print("times: wall seconds (CPU seconds of this process in brackets: what a step costs on an idle core)")
    frame = None
    reads = []
    for _ in range(max(1, args.repeats)):
        tick = time.perf_counter()
        frame = read_still(str(frames[0]), None, options)
        reads.append(time.perf_counter() - tick)
    finds, find_cpu = [], []
    for _ in range(max(1, args.repeats)):
        tick, cpu = time.perf_counter(), time.process_time()
        spots = find_spots(frame.data, frame.mask, options.spotfinder)
        finds.append(time.perf_counter() - tick)
        find_cpu.append(time.process_time() - cpu)
    print()
    print(
        f"spot finder on {frames[0].name} ({frame.data.size / 1e6:.1f} M pixels, {len(spots)} spots): "
        f"median {statistics.median(finds):.3f} s wall, {statistics.median(find_cpu):.3f} s CPU (reading excluded); "
        f"read {statistics.median(reads):.3f} s; "
        f"read + find {statistics.median(reads) + statistics.median(finds):.3f} s; {len(finds)} runs; "
        f"load now {os.getloadavg()[0]:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
