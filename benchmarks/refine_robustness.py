"""Robustness of the default refinement strategy on random truths.

Draws truths with misset uniform in +-5 deg on each axis (--range-deg) and mosaic
spread uniform in 0.3..1.2 deg (the demo's crystal otherwise), simulates each observed
frame, refines mosaic + misset from misset (0, 0, 0) and mosaic 0.2 deg, and counts a
success when the mosaic is within 0.1 deg and every misset angle within 1 deg.  Prints
each case, the success rate and the median time per refinement; writes JSON.

    python benchmarks/refine_robustness.py [--cases 10] [--seed 0] [--iterations 100]
    python benchmarks/refine_robustness.py --search-deg 0     # without the orientation search
    python benchmarks/refine_robustness.py --optimizer adam   # one Adam stage, no search
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from braggsim.demo import demo_model
from braggsim.refine import Refiner
from braggsim.simulate import simulate

MOSAIC_TOL_DEG = 0.1
MISSET_TOL_DEG = 1.0


def random_truths(n: int, seed: int, range_deg: float = 5.0) -> list:
    rng = np.random.default_rng(seed)
    return [
        {
            "misset": tuple(float(x) for x in rng.uniform(-range_deg, range_deg, 3)),
            "mosaic": float(rng.uniform(0.3, 1.2)),
        }
        for _ in range(n)
    ]


def refine_case(truth: dict, iterations: int, optimizer: str = "auto", search_deg: float = 4.0) -> dict:
    crystal, detector, beam = demo_model(truth["misset"], truth["mosaic"])
    with torch.no_grad():
        observed = simulate(crystal, detector, beam, dtype=torch.float64).numpy()
    start_crystal, _, _ = demo_model((0, 0, 0), 0.2)
    t0 = time.perf_counter()
    refiner = Refiner(
        start_crystal, detector, beam, observed, refine=("mosaic", "misset"), optimizer=optimizer, search_deg=search_deg
    )
    for _ in refiner.run(iterations):
        pass
    elapsed = time.perf_counter() - t0
    result = refiner.result
    p = result.parameters
    errors = {
        "mosaic": p["mosaic_spread_deg"] - truth["mosaic"],
        **{axis: p[f"misset_{axis}_deg"] - truth["misset"][i] for i, axis in enumerate("xyz")},
    }
    success = abs(errors["mosaic"]) <= MOSAIC_TOL_DEG and all(abs(errors[a]) <= MISSET_TOL_DEG for a in "xyz")
    return {
        "truth": truth,
        "refined": p,
        "errors": errors,
        "success": success,
        "time_s": elapsed,
        "iterations": len(result.history),
        "final_loss": result.final_loss,
        "initial_loss": result.initial_loss,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--optimizer", default="auto", choices=("auto", "lbfgs", "adam"))
    parser.add_argument(
        "--search-deg", type=float, default=4.0, help="orientation search step of the default strategy (0: none)"
    )
    parser.add_argument("--range-deg", type=float, default=5.0, help="truths' misset drawn in +-this, per axis")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/refine_robustness.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = []
    print(
        f"{'case':>4} {'truth misset (deg)':>24} {'mosaic':>7} | {'err mosaic':>10} {'max err misset':>14} {'iters':>5} {'time s':>7} ok"
    )
    for i, truth in enumerate(random_truths(args.cases, args.seed, args.range_deg)):
        r = refine_case(truth, args.iterations, args.optimizer, args.search_deg)
        results.append(r)
        misset = " ".join(f"{x:+.2f}" for x in truth["misset"])
        worst = max(abs(r["errors"][a]) for a in "xyz")
        print(
            f"{i:4d} {misset:>24} {truth['mosaic']:7.3f} | {r['errors']['mosaic']:+10.2e} {worst:14.2e} "
            f"{r['iterations']:5d} {r['time_s']:7.2f} {'yes' if r['success'] else 'NO'}",
            flush=True,
        )
    successes = sum(r["success"] for r in results)
    median_time = statistics.median(r["time_s"] for r in results)
    print(
        f"success {successes}/{len(results)}; median time per refinement {median_time:.2f} s; "
        f"median iterations {statistics.median(r['iterations'] for r in results):.0f}"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k != "json"}
    args.json.write_text(
        json.dumps(
            {"settings": settings, "cases": results, "successes": successes, "median_time_s": median_time}, indent=1
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
