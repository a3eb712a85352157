"""Parity with nanoBragg: Pearson r and total-intensity error of every golden case.

Simulates each case of tests/data/cases.json from its nanoBragg flags, in float64 and
float32, and compares with nanoBragg's own -floatfile image in tests/data.  The tests
assert r >= 0.9999 and a total within 0.1 %; this prints the actual values.

    python benchmarks/parity.py
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from braggsim import simulate
from braggsim.nanobragg_flags import parse_flags

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def main() -> int:
    cases = json.loads((DATA / "cases.json").read_text())
    print(f"{'case':24s} {'dtype':8s} {'Pearson r':>12s} {'total error':>12s}")
    worst_r, worst_total = 1.0, 0.0
    for case in cases:
        args = shlex.split(case["args"]) + (["-hkl", str(DATA / case["hkl"])] if case.get("hkl") else [])
        flags = parse_flags(args)
        shape = json.loads((DATA / f"{case['name']}.json").read_text())["shape_slow_fast"]
        expected = np.fromfile(DATA / f"{case['name']}.bin", dtype="<f4").reshape(shape).astype(np.float64)
        for dtype in (torch.float64, torch.float32):
            image = simulate(flags.crystal, flags.detector, flags.beam, dtype=dtype).numpy().astype(np.float64)
            r = float(np.corrcoef(image.ravel(), expected.ravel())[0, 1])
            total = abs(image.sum() / expected.sum() - 1)
            worst_r, worst_total = min(worst_r, r), max(worst_total, total)
            print(f"{case['name']:24s} {str(dtype)[6:]:8s} {r:12.8f} {total:12.2e}")
    print(f"worst: r = {worst_r:.8f}, total error = {worst_total:.2e}  (criteria: r >= 0.9999, total <= 1e-3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
