"""Time braggsim's noise models.

    python benchmarks/noise.py                      # Pilatus 6M size, braggsim only
    python benchmarks/noise.py --noisify ./noisify  # also a noisify binary, same run, same flags
    python benchmarks/noise.py --kernels            # 1024 x 1024: numba vs the removed C kernel
                                                    # vs the Python twin, and first use

Default: a Pilatus-6M-sized image (2527 x 2463 = 6.2 M pixels), synthetic: 0.5 to 3
photons of background and 2000 3 x 3 spots of up to 5e4 photons.  Each configuration
runs ``--repeats`` times; medians are printed, and with ``--noisify`` the ratio C time /
braggsim time.  "api" times :func:`braggsim.noise.noisify` on an array in memory; "cli"
times ``braggsim noisify`` end to end (reading the float file and writing the SMV), which
is what the C program's time includes.

``--kernels`` (issue 14's noise port): the same kind of image at 1024 x 1024 (330 spots),
:func:`braggsim.noise.noisify` with each configuration through the numba loops, through
the C kernel they replaced and through the pure-Python twin, interleaved, medians of
``--repeats`` (the twin once: it takes tens of seconds), and a check that all three give
the same pixels.  The C kernel is ``src/braggsim/_noise_native.py`` as it was before its
removal, taken from git history and built with the system C compiler in a temporary
directory (so this mode needs git and gcc; nothing of it is kept), and called through the
numba loops' interface, so the Python around the loops is the same for both.  Then the
first use in fresh processes: the first ``noisify`` with a Gaussian PSF (which compiles
the loops it uses) and ``_noise_numba.warm_up()`` (all of them), with an empty and with a
warm kernel cache.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

from braggsim import _noise_numba, noise

SLOW, FAST = 2527, 2463
CONFIGS = {
    "noise only": "-seed 7 -readout_noise 3 -flicker 0.02 -calibration 0.03 -calib_seed 5",
    "gauss PSF auto": "-seed 7 -readout_noise 3 -flicker 0.02 -calibration 0.03 -calib_seed 5 -psf gauss -psf_fwhm 150",
    "fiber PSF r=10": "-seed 7 -readout_noise 3 -calibration 0.03 -psf fiber -psf_fwhm 100 -psf_radius 10",
}


HERE = Path(__file__).resolve().parent
KERNELS_SIZE = 1024
OLD_MODULE = "src/braggsim/_noise_native.py"  # the C kernel, removed when the loops moved to numba


def make_image(seed: int = 0, slow: int = SLOW, fast: int = FAST) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.uniform(0.5, 3.0, (slow, fast)).astype(np.float32)
    spots = round(2000 * slow * fast / (SLOW * FAST))  # the same density of spots
    for s, f, peak in zip(
        rng.integers(2, slow - 2, spots), rng.integers(2, fast - 2, spots), rng.uniform(10, 5e4, spots), strict=True
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


def load_average() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


# ------------------------------------------------------------------ --kernels
class CReference:
    """The removed C kernel, rebuilt from git history in ``workdir``, behind the numba
    loops' interface (the attributes of ``_noise_numba.kernels()``)."""

    def __init__(self, workdir: Path):
        repo = HERE.parent
        deleted = subprocess.run(
            ["git", "-C", str(repo), "log", "--diff-filter=D", "-1", "--format=%H", "--", OLD_MODULE],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if not deleted:
            raise RuntimeError(f"{OLD_MODULE} is not in this checkout's history")
        source = subprocess.run(
            ["git", "-C", str(repo), "show", f"{deleted}^:{OLD_MODULE}"], capture_output=True, text=True, check=True
        ).stdout
        path = workdir / "_noise_c_reference.py"
        path.write_text(source)
        # a module of the braggsim package, so that its relative import of _fast.cache_dir works
        spec = importlib.util.spec_from_file_location("braggsim._noise_c_reference", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        previous = os.environ.get("BRAGGSIM_CACHE_DIR")
        os.environ["BRAGGSIM_CACHE_DIR"] = str(workdir)  # build it there, not in the user's cache
        try:
            started = time.perf_counter()
            self.lib = module.library()
            self.build_s = time.perf_counter() - started
        finally:
            if previous is None:
                del os.environ["BRAGGSIM_CACHE_DIR"]
            else:
                os.environ["BRAGGSIM_CACHE_DIR"] = previous
        if self.lib is None:
            raise RuntimeError(f"the C kernel did not build: {module._load_failed or 'BRAGGSIM_NATIVE=0'}")
        self._state: tuple = (None, None)

    def state(self, ints: np.ndarray):
        # the numba loops carry the static state in (ints, floats); the C kernel in its own
        # struct: one struct per noisify call, recognised by that call's ints array
        if self._state[0] is not ints:
            buffer = ctypes.create_string_buffer(int(self.lib.nr_state_size()))
            self.lib.nr_state_init(buffer)
            self._state = (ints, buffer)
        return self._state[1]

    def kernels(self) -> types.SimpleNamespace:
        lib = self.lib

        def nanobragg_noise(image, roi, adc, ints, floats, seeds, out):
            photons = ctypes.c_double()
            overloads = lib.nanobragg_noise(
                image.ctypes.data,
                image.shape[1],
                image.shape[0],
                roi.ctypes.data,
                adc,
                self.state(ints),
                seeds.ctypes.data,
                out.ctypes.data,
                ctypes.addressof(photons),
            )
            return overloads, photons.value

        def noisify_draws(photons, flicker, calibration, ints, floats, seeds):
            return lib.noisify_draws(
                photons.ctypes.data,
                photons.size,
                flicker,
                calibration,
                self.state(ints),
                seeds.ctypes.data,
                seeds.ctypes.data + seeds.itemsize,
            )

        def noisify_adu(photons, gain, adc, readout, bits, noiseless, ints, floats, seeds, out16, out32):
            total = ctypes.c_double()
            overloads = lib.noisify_adu(
                photons.ctypes.data,
                photons.size,
                gain,
                adc,
                readout,
                bits,
                int(noiseless),
                self.state(ints),
                seeds.ctypes.data,
                out16.ctypes.data,
                out32.ctypes.data,
                ctypes.addressof(total),
            )
            return overloads, total.value

        def psf_kernel(kernel, radius, fiber, fwhm_pixels):
            lib.psf_kernel(kernel.ctypes.data, radius, int(fiber), fwhm_pixels)

        def apply_psf(image, out, xpixels, ypixels, fiber, fwhm_pixels, user_radius, kernel, kernel_radius):
            return lib.apply_psf(
                image.ctypes.data,
                out.ctypes.data,
                xpixels,
                ypixels,
                int(fiber),
                fwhm_pixels,
                user_radius,
                kernel.ctypes.data,
                kernel_radius,
            )

        return types.SimpleNamespace(
            nanobragg_noise=nanobragg_noise,
            noisify_draws=noisify_draws,
            noisify_adu=noisify_adu,
            psf_kernel=psf_kernel,
            apply_psf=apply_psf,
        )


@contextlib.contextmanager
def loops(namespace):
    """braggsim.noise with ``namespace`` as its loops (None: the Python twin)."""
    original = _noise_numba.kernels
    _noise_numba.kernels = lambda: namespace
    try:
        yield
    finally:
        _noise_numba.kernels = original


def first_use(cache: str, mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), mode],
        capture_output=True,
        text=True,
        env={**env, "BRAGGSIM_CACHE_DIR": cache},
        check=True,
    ).stdout
    return json.loads(out.splitlines()[-1])


def first_use_child(mode: str) -> None:
    """In a fresh process (braggsim already imported by this script): the first and the
    second noisify with a Gaussian PSF at 1024 x 1024, or (``warm_up``) every loop's compile."""
    result: dict = {}
    if mode == "--warm-up-child":
        started, started_cpu = time.perf_counter(), time.process_time()
        result["native"] = _noise_numba.warm_up()
        result["warm_up_s"] = time.perf_counter() - started
        result["warm_up_cpu_s"] = time.process_time() - started_cpu
    else:
        image = make_image(1, KERNELS_SIZE, KERNELS_SIZE)
        model, seeds = model_of(CONFIGS["gauss PSF auto"])
        for label in ("first", "second"):
            started, started_cpu = time.perf_counter(), time.process_time()
            noise.noisify(image, pixel_size_mm=0.172, model=model, **seeds)
            result[f"{label}_s"] = time.perf_counter() - started
            result[f"{label}_cpu_s"] = time.process_time() - started_cpu
        result["native"] = _noise_numba.kernels() is not None
    print(json.dumps(result))


def kernels_main(repeats: int, python: bool) -> None:
    if _noise_numba.kernels() is None:
        sys.exit(f"the numba loops are unavailable ({_noise_numba.unavailable_reason()}): nothing to compare")
    image = make_image(1, KERNELS_SIZE, KERNELS_SIZE)
    print(f"image {KERNELS_SIZE} x {KERNELS_SIZE}; load average at the start {load_average()}")
    _noise_numba.warm_up()
    with tempfile.TemporaryDirectory(prefix="braggsim-noise-c-") as tmp:
        try:
            reference = CReference(Path(tmp))
            c_loops = reference.kernels()
            print(f"C kernel (removed) rebuilt from git history in {reference.build_s:.2f} s (gcc -O2)")
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
            c_loops = None
            print(f"C kernel unavailable: {exc}")
        implementations = {"numba": _noise_numba.kernels()}
        if c_loops is not None:
            implementations["C"] = c_loops
        print(f"medians of {repeats}, interleaved, wall and CPU (this thread's) time; the Python twin once")
        for name, flags in CONFIGS.items():
            model, seeds = model_of(flags)

            def run(model=model, seeds=seeds):
                return noise.noisify(image, pixel_size_mm=0.172, model=model, **seeds)

            wall: dict[str, list[float]] = {label: [] for label in implementations}
            cpu: dict[str, list[float]] = {label: [] for label in implementations}
            counts = {}
            for _ in range(repeats):
                for label, namespace in implementations.items():
                    with loops(namespace):
                        started, started_cpu = time.perf_counter(), time.thread_time()
                        counts[label] = run().counts
                        cpu[label].append(time.thread_time() - started_cpu)
                        wall[label].append(time.perf_counter() - started)
            wall_s = {label: statistics.median(t) for label, t in wall.items()}
            cpu_s = {label: statistics.median(t) for label, t in cpu.items()}
            line = f"{name:16s} numba {wall_s['numba'] * 1e3:7.1f} ms (CPU {cpu_s['numba'] * 1e3:7.1f})"
            if "C" in wall_s:
                line += f"   C {wall_s['C'] * 1e3:7.1f} ms (CPU {cpu_s['C'] * 1e3:7.1f})"
                line += f"   numba / C {wall_s['numba'] / wall_s['C']:5.2f} (CPU {cpu_s['numba'] / cpu_s['C']:5.2f})"
            if python:
                with loops(None):
                    started, started_cpu = time.perf_counter(), time.thread_time()
                    counts["Python"] = run().counts
                    python_cpu_s = time.thread_time() - started_cpu
                    python_s = time.perf_counter() - started
                line += f"   Python twin {python_s:5.1f} s (CPU {python_cpu_s:5.1f},"
                line += (
                    f" {python_cpu_s / image.size * 1e6:4.1f} us/pixel, {python_cpu_s / cpu_s['numba']:3.0f}x numba)"
                )
            same = all(np.array_equal(c, counts["numba"]) for c in counts.values())
            print(f"{line}   same pixels: {same}")
    print(f"load average at the end {load_average()}")
    print("first use in fresh processes (after importing braggsim)")
    with tempfile.TemporaryDirectory(prefix="braggsim-noise-cache-") as cache:
        for label in ("empty cache", "warm cache"):
            item = first_use(cache, "--first-use-child")
            print(
                f"  first noisify, Gaussian PSF, {label}: {item['first_s']:.2f} s (CPU {item['first_cpu_s']:.2f});"
                f" the second {item['second_s']:.2f} s (CPU {item['second_cpu_s']:.2f}); numba: {item['native']}"
            )
    with tempfile.TemporaryDirectory(prefix="braggsim-noise-cache-") as cache:
        for label in ("empty cache", "warm cache"):
            item = first_use(cache, "--warm-up-child")
            print(
                f"  _noise_numba.warm_up() (every loop), {label}: {item['warm_up_s']:.2f} s"
                f" (CPU {item['warm_up_cpu_s']:.2f})"
            )


# ------------------------------------------------------------------ default
def main() -> None:
    if len(sys.argv) == 2 and sys.argv[1] in ("--first-use-child", "--warm-up-child"):
        first_use_child(sys.argv[1])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noisify", help="path of a noisify binary to time with the same flags")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--kernels", action="store_true", help="1024 x 1024: numba vs the removed C kernel vs the Python twin"
    )
    parser.add_argument("--no-python", action="store_true", help="with --kernels: skip the (slow) Python twin")
    args = parser.parse_args()
    if args.kernels:
        kernels_main(args.repeats, not args.no_python)
        return
    if _noise_numba.kernels() is None:
        sys.exit(f"the numba loops are unavailable ({_noise_numba.unavailable_reason()}): nothing to benchmark")
    image = make_image()
    print(f"image {SLOW} x {FAST} = {image.size / 1e6:.1f} M pixels; load average {load_average()}")
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
