"""Time braggsim's noise models on a Pilatus-6M-sized image (2527 x 2463 = 6.2 M pixels).

    python benchmarks/noise.py                      # braggsim only
    python benchmarks/noise.py --noisify ./noisify  # also a noisify binary, same run, same flags

The image is synthetic: 0.5 to 3 photons of background and 2000 3 x 3 spots of up to
5e4 photons.  Each configuration runs ``--repeats`` times; medians are printed, and with
``--noisify`` the ratio C time / braggsim time.  "api" times :func:`braggsim.noise.noisify`
on an array in memory; "cli" times ``braggsim noisify`` end to end (reading the float
file and writing the SMV), which is what the C program's time includes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from braggsim import _noise_native, noise

SLOW, FAST = 2527, 2463
CONFIGS = {
    "noise only": "-seed 7 -readout_noise 3 -flicker 0.02 -calibration 0.03 -calib_seed 5",
    "gauss PSF auto": "-seed 7 -readout_noise 3 -flicker 0.02 -calibration 0.03 -calib_seed 5 -psf gauss -psf_fwhm 150",
    "fiber PSF r=10": "-seed 7 -readout_noise 3 -calibration 0.03 -psf fiber -psf_fwhm 100 -psf_radius 10",
}


def make_image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.uniform(0.5, 3.0, (SLOW, FAST)).astype(np.float32)
    for s, f, peak in zip(
        rng.integers(2, SLOW - 2, 2000), rng.integers(2, FAST - 2, 2000), rng.uniform(10, 5e4, 2000), strict=True
    ):
        image[s - 1 : s + 2, f - 1 : f + 2] += np.float32(peak) * np.array(
            [[0.3, 0.6, 0.3], [0.6, 1, 0.6], [0.3, 0.6, 0.3]]
        )
    return image


def model_of(flags: str) -> tuple[noise.DetectorModel, dict]:
    words = flags.split()
    values = dict(zip(words[::2], words[1::2], strict=True))
    model = noise.DetectorModel(
        readout_noise_adu=float(values.get("-readout_noise", 0)),
        flicker=float(values.get("-flicker", 0)),
        calibration=float(values.get("-calibration", 0.03)),
        psf=values.get("-psf"),
        psf_fwhm_um=float(values.get("-psf_fwhm", 46)),
        psf_radius_px=int(values.get("-psf_radius", 0)),
    )
    seeds = {
        "seed": int(values["-seed"]),
        "calib_seed": int(values["-calib_seed"]) if "-calib_seed" in values else None,
    }
    return model, seeds


def median_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noisify", help="path of a noisify binary to time with the same flags")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if _noise_native.library() is None:
        sys.exit("the native noise kernel is unavailable (no C compiler?): nothing to benchmark")
    image = make_image()
    with open("/proc/loadavg") as handle:
        load = handle.read().split()[:3]
    print(f"image {SLOW} x {FAST} = {image.size / 1e6:.1f} M pixels; load average {' '.join(load)}")
    with tempfile.TemporaryDirectory() as tmp:
        floatfile = os.path.join(tmp, "image.bin")
        image.tofile(floatfile)
        size = ["-detpixels_x", str(FAST), "-detpixels_y", str(SLOW), "-pixel", "0.172", "-floatfile", floatfile]
        out, ref, int_file = (os.path.join(tmp, name) for name in ("bs.img", "c.img", "i.img"))
        for name, flags in CONFIGS.items():
            model, seeds = model_of(flags)
            api = median_time(
                lambda m=model, s=seeds: noise.noisify(image, pixel_size_mm=0.172, model=m, **s), args.repeats
            )
            cli = median_time(
                lambda f=flags: subprocess.run(
                    [sys.executable, "-m", "braggsim.cli", "noisify", *size, *f.split(), "-noisefile", out],
                    check=True,
                    capture_output=True,
                ),
                args.repeats,
            )
            line = f"{name:16s} braggsim api {api:7.3f} s   cli {cli:7.3f} s"
            if args.noisify:
                c_time = median_time(
                    lambda f=flags: subprocess.run(
                        [
                            args.noisify,
                            *size,
                            *f.split(),
                            "-noisefile",
                            ref,
                            "-intfile",
                            int_file,
                            "-nopgm",
                        ],
                        check=True,
                        capture_output=True,
                    ),
                    args.repeats,
                )
                same = Path(ref).read_bytes() == Path(out).read_bytes()
                line += f"   noisify C {c_time:7.3f} s   C / braggsim cli {c_time / cli:5.2f}   files identical: {same}"
            print(line)
        generator = torch.Generator().manual_seed(7)
        tensor = torch.from_numpy(image)
        for name, flags in CONFIGS.items():
            model, _ = model_of(flags)
            t = median_time(
                lambda m=model: noise.detector_noise(tensor, generator=generator, model=m, pixel_size_mm=0.172),
                args.repeats,
            )
            print(f"{name:16s} detector_noise (torch, not noisify-identical) {t:7.3f} s")


if __name__ == "__main__":
    main()
