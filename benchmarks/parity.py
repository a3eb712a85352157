"""Parity with nanoBragg: Pearson r and total-intensity error of every golden case.

Simulates each case of tests/data/cases.json (nanoBragg, p01-p16), suite/cases.json
(nonBragg, n01-n02) and heldout/cases.json (20 held-out nanoBragg and nonBragg cases)
from its flags, in float64 and float32, and compares with the program's own -floatfile
image in tests/data.  The tests assert r >= 0.9999 and a total within 0.1 %; this prints
the actual values.

    python benchmarks/parity.py
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from braggsim import simulate, simulate_background
from braggsim.nanobragg_flags import parse_flags
from braggsim.nonbragg_cli import parse_nonbragg

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def _cases():
    """(name, program, args, expected image path) of every reference image."""
    for case in json.loads((DATA / "cases.json").read_text()):
        args = shlex.split(case["args"])
        for key, flag in (("hkl", "-hkl"), ("sourcefile", "-sourcefile")):
            if case.get(key):
                args += [flag, str(DATA / case[key])]
        yield case["name"], "nanoBragg", args, DATA / f"{case['name']}.bin"
    for case in json.loads((DATA / "suite" / "cases.json").read_text()):
        if case["program"] == "nonBragg":
            args = shlex.split(case["args"])
            args[args.index("-stol") + 1] = str(DATA / "suite" / args[args.index("-stol") + 1])
            yield case["name"], "nonBragg", args, DATA / "suite" / f"{case['name']}.bin"
    for case in json.loads((DATA / "heldout" / "cases.json").read_text()):
        args = shlex.split(case["args"].replace("{data}", str(DATA)))
        yield case["name"], case["program"], args, DATA / "heldout" / f"{case['name']}.bin"


def _simulate(program: str, args: list, dtype) -> np.ndarray:
    if program == "nonBragg":
        parsed = parse_nonbragg(args)
        image = simulate_background(parsed["detector"], parsed["beam"], parsed["background"], dtype=dtype)
    else:
        flags = parse_flags(args)
        image = simulate(flags.crystal, flags.detector, flags.beam, background=flags.background, dtype=dtype)
    return image.numpy().astype(np.float64)


def main() -> int:
    print(f"{'case':28s} {'dtype':8s} {'Pearson r':>12s} {'total error':>12s}")
    worst_r, worst_total = 1.0, 0.0
    for name, program, args, path in _cases():
        expected = np.fromfile(path, dtype="<f4").astype(np.float64)
        for dtype in (torch.float64, torch.float32):
            image = _simulate(program, args, dtype)
            r = float(np.corrcoef(image.ravel(), expected.ravel())[0, 1])
            total = abs(image.sum() / expected.sum() - 1)
            worst_r, worst_total = min(worst_r, r), max(worst_total, total)
            print(f"{name:28s} {str(dtype)[6:]:8s} {r:12.8f} {total:12.2e}")
    print(f"worst: r = {worst_r:.8f}, total error = {worst_total:.2e}  (criteria: r >= 0.9999, total <= 1e-3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
