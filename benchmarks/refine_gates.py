"""The sanity gates on issue 16's garbage and weak frames, through ``braggsim refine``.

Writes 64x64 float frames (all zero; Gaussian noise; Poisson counts of a tenth of the
demo's signal; Poisson counts of the full signal, a real frame that must pass) and
refines mosaic + misset from the demo's starting model with the MSE and the Poisson
loss, printing the exit status, the status and the gate's reason for each.

    python benchmarks/refine_gates.py [--seed 0] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np

from braggsim.cli import main as braggsim
from braggsim.demo import demo_flags, demo_observed


def frames(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    truth = demo_observed("braggsim")
    return {
        "zeros": np.zeros((64, 64)),
        "gauss": rng.normal(0.0, 1.0, (64, 64)),
        "weak": rng.poisson(0.1 * truth).astype(np.float64),
        "full": rng.poisson(truth).astype(np.float64),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument("--out", type=Path, default=None, help="keep the frames and JSON here (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.out or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for name, image in frames(args.seed).items():
            data = folder / f"{name}.bin"
            np.asarray(image, "<f4").tofile(data)
            for loss in ("mse", "poisson"):
                out = folder / f"{name}_{loss}.json"
                argv = ["refine", "-data", str(data), *demo_flags(), "-refine", "mosaic,misset", "-loss", loss]
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    status = braggsim([*argv, "-json", str(out)])
                result = json.loads(out.read_text())
                reason = result["gates"][0]["reason"] if result["gates"] else result["message"]
                mosaic = result["parameters"]["mosaic_spread_deg"]
                print(f"{name:6s} {loss:8s} exit {status}  {result['status']:12s} mosaic {mosaic:9.4g} deg  {reason}")


if __name__ == "__main__":
    main()
