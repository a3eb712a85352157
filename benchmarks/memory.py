"""Peak memory of a 2048 x 2048 detector, 20 mosaic domains, oversample 2.

Runs each case in a fresh subprocess (so one case's peak cannot hide in another's) and
prints the child's peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``)
and wall time:

    forward            simulate() under torch.no_grad()
    forward+backward   gradient of the image sum w.r.t. mosaic spread and misset

Usage: python benchmarks/memory.py [--pixels 2048] [--domains 20] [--oversample 2]
       [--dtype float32] [--case forward|backward|all]
Target: under 2 GB for each case.  A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

TARGET_GB = 2.0

CHILD = r"""
import json, resource, sys, time
import torch
import braggsim

case, pixels, domains, oversample, dtype = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
dtype = getattr(torch, dtype)
baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
need_grad = case == "backward"
spread = torch.tensor(0.5, dtype=dtype, requires_grad=need_grad)
misset = [torch.tensor(x, dtype=dtype, requires_grad=need_grad) for x in (5.0, 3.0, -2.0)]
crystal = braggsim.Crystal(cell=(100, 100, 100, 90, 90, 90), N_cells=(5, 5, 5), default_F=100,
                           misset_deg=misset, mosaic_spread_deg=spread, mosaic_domains=domains, mosaic_seed=42)
detector = braggsim.Detector(fpixels=pixels, pixel_size_mm=0.1, distance_mm=100, oversample=oversample)
beam = braggsim.Beam(wavelength_A=1.0)
start = time.perf_counter()
if need_grad:
    image = braggsim.simulate(crystal, detector, beam, dtype=dtype)
    image.sum().backward()
    grads = [float(spread.grad)] + [float(m.grad) for m in misset]
else:
    with torch.no_grad():
        image = braggsim.simulate(crystal, detector, beam, dtype=dtype)
    grads = []
elapsed = time.perf_counter() - start
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: kilobytes
print(json.dumps({"case": case, "peak_gb": peak_kb / 1024**2, "import_gb": baseline_kb / 1024**2,
                  "seconds": elapsed, "sum": float(image.detach().sum()), "grads": grads,
                  "threads": torch.get_num_threads()}))
"""


def run_case(case: str, args) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, case, str(args.pixels), str(args.domains), str(args.oversample), args.dtype],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"{case} failed (exit {result.returncode}):\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pixels", type=int, default=2048)
    parser.add_argument("--domains", type=int, default=20)
    parser.add_argument("--oversample", type=int, default=2)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--case", default="all", choices=("forward", "backward", "all"))
    args = parser.parse_args()
    cases = ("forward", "backward") if args.case == "all" else (args.case,)
    print(
        f"{args.pixels}x{args.pixels} pixels, {args.domains} mosaic domains, oversample {args.oversample}, {args.dtype}"
    )
    within = True
    for case in cases:
        r = run_case(case, args)
        label = "forward" if case == "forward" else "forward+backward"
        ok = r["peak_gb"] < TARGET_GB
        within &= ok
        grads = (
            "" if not r["grads"] else "  d(sum)/d(spread, misset xyz) = " + ", ".join(f"{g:.4g}" for g in r["grads"])
        )
        print(
            f"{label:17s} peak RSS {r['peak_gb']:.3f} GB (after imports {r['import_gb']:.3f} GB)  "
            f"time {r['seconds']:.1f} s  threads {r['threads']}  {'OK' if ok else 'OVER'} (< {TARGET_GB} GB){grads}"
        )
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
