"""Speed benchmark for braggsim (issues 7 and 14): the figures of the issues, the fused
numba kernel against the C kernel it replaced and the plain torch path, first use with a
cold and a warm kernel cache, a scaling table, and optionally nanoBragg on the same cases
in the same run.

    python benchmarks/bench.py                     # full run, a few minutes on 2 cores
    python benchmarks/bench.py --quick             # smoke run, about a minute
    python benchmarks/bench.py --no-compiler       # with gcc, cc and clang hidden from PATH
    python benchmarks/bench.py --nanobragg ./nanoBragg --json out.json

The C kernel (benchmarks/gcc_reference.py) is loaded from braggsim's cache, where it is
built with gcc the first time; ``--no-compiler`` builds it first and then re-runs this
script with no C compiler on PATH and CC unset, as a user who installed from napari's
plugin menu would have.

Every figure is the median of several repeats after a warm-up (min and repeats are in
the JSON).  Wall-clock times on a shared machine vary: the load average at the start
and the end of the run is printed and stored with the results.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from braggsim import Beam, Crystal, Detector, _fast, simulate

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import gcc_reference  # noqa: E402  (beside this script)

SIMULATE_MODULE = sys.modules["braggsim.simulate"]
COMPILER = re.compile(r"^(.*-)?(gcc|g\+\+|cc|c\+\+|clang|clang\+\+|c89|c99|tcc|icc|icx)(-[0-9.]+)?$")
TARGETS_S = {
    "1024x1024, 10 domains, forward": 0.1,
    "512x512, 10 domains, forward": 0.05,
    "refinement demo, forward+backward": 0.005,
    "braggsim demo, whole command": 10.0,
}


# ------------------------------------------------------------------ cases
# nanoBragg's flags for 9 divergence sources: a 3 x 3 grid over 1 x 1 mrad, corners kept
DIVERGENCE_FLAGS = ["-hdivrange", "1", "-vdivrange", "1", "-hdivsteps", "3", "-vdivsteps", "3", "-square_div"]


def still(pixels: int, domains: int, oversample: int = 1, sources: int = 1):
    """A cubic 100 A crystal, N=5, default_F 100 on a 0.1 mm, 100 mm detector; ``sources``
    1 (one beam) or 9 (nanoBragg's 3 x 3 divergence grid, DIVERGENCE_FLAGS)."""
    crystal = Crystal(
        cell=(100, 100, 100, 90, 90, 90),
        N_cells=(5, 5, 5),
        default_F=100,
        misset_deg=(5, 3, -2),
        mosaic_spread_deg=0.5 if domains > 1 else 0.0,
        mosaic_domains=domains if domains > 1 else None,
    )
    detector = Detector(fpixels=pixels, spixels=pixels, pixel_size_mm=0.1, distance_mm=100, oversample=oversample)
    if sources == 9:
        beam = Beam(wavelength_A=1.0, divergence_mrad=(1.0, 1.0), divergence_steps=(3, 3), round_divergence=False)
    else:
        beam = Beam(wavelength_A=1.0)
    return crystal, detector, beam


def still_flags(pixels: int, domains: int, oversample: int = 1, sources: int = 1) -> list[str]:
    """The nanoBragg command line of :func:`still`."""
    flags = [
        "-cell",
        "100",
        "100",
        "100",
        "90",
        "90",
        "90",
        "-N",
        "5",
        "-default_F",
        "100",
        "-misset",
        "5",
        "3",
        "-2",
        "-lambda",
        "1",
        "-distance",
        "100",
        "-pixel",
        "0.1",
        "-detpixels",
        str(pixels),
        "-oversample",
        str(oversample),
    ]
    if domains > 1:
        flags += ["-mosaic", "0.5", "-mosaic_dom", str(domains)]
    if sources == 9:
        flags += DIVERGENCE_FLAGS
    return flags


def demo_step(dtype=torch.float32, kernel="auto"):
    """One refinement iteration of the demo model: forward plus backward in spread and misset."""
    spread = torch.tensor(0.8, dtype=dtype, requires_grad=True)
    misset = [torch.tensor(x, dtype=dtype, requires_grad=True) for x in (5.0, 3.0, -2.0)]
    crystal = Crystal(
        cell=(100, 100, 100, 90, 90, 90),
        N_cells=(5, 5, 5),
        default_F=100,
        misset_deg=misset,
        mosaic_spread_deg=spread,
        mosaic_domains=5,
        mosaic_seed=42,
    )
    detector = Detector(fpixels=64, spixels=64, pixel_size_mm=0.1, distance_mm=100, oversample=2)
    image = simulate(crystal, detector, Beam(wavelength_A=1.0, fluence=1e28), dtype=dtype, kernel=kernel)
    image.sum().backward()
    return spread.grad


# ----------------------------------------------------------------- timing
def timed(fn, repeats: int, warmup: int = 1) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}


def forward(pixels, domains, oversample=1, kernel="auto", sources=1):
    crystal, detector, beam = still(pixels, domains, oversample, sources)

    def run():
        with torch.no_grad():
            return simulate(crystal, detector, beam, dtype=torch.float32, kernel=kernel)

    return run


def with_kernel(module, fn):
    """``fn`` with ``module`` (braggsim._fast or gcc_reference) as simulate's kernel."""

    def run():
        saved = SIMULATE_MODULE._fast
        SIMULATE_MODULE._fast = module
        try:
            return fn()
        finally:
            SIMULATE_MODULE._fast = saved

    return run


def timed_interleaved(functions: dict, repeats: int, warmup: int = 1) -> dict:
    """Like :func:`timed` for several functions, one call of each in turn, so that a change
    of load on a shared machine hits all of them alike."""
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    times: dict = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: {"median_s": statistics.median(t), "min_s": min(t), "repeats": repeats} for name, t in times.items()}


def first_use_s() -> dict:
    """Fresh interpreters: import, then the first 512x512x10 float32 simulate, with an empty
    kernel cache (the first process on a machine) and then with the cache it left; and the
    whole background warm-up (the plugin's kernels, see _fast.warm_up) on an empty cache."""
    simulate_code = (
        "import time; w=time.perf_counter(); c=time.process_time(); import torch, braggsim;"
        "from braggsim import _fast;"
        f"import sys; sys.path.insert(0, {str(HERE)!r}); import bench;"
        "w1=time.perf_counter(); c1=time.process_time(); d=bench.still(512,10); braggsim.simulate(*d);"
        "print(w1-w, time.perf_counter()-w1, time.process_time()-c1, _fast.available())"
    )
    warm_up_code = (
        "import time; from braggsim import _fast; w=time.perf_counter(); c=time.process_time();"
        "_fast.warm_up(background=False); print(time.perf_counter()-w, time.process_time()-c, _fast.ready())"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    results = {}
    with tempfile.TemporaryDirectory() as cache:
        for label in ("cold cache", "warm cache"):
            out = subprocess.run(
                [sys.executable, "-c", simulate_code],
                capture_output=True,
                text=True,
                env={**env, "BRAGGSIM_CACHE_DIR": cache},
                check=True,
            ).stdout.split()
            results[label] = {
                "import_s": float(out[0]),
                "first_simulate_s": float(out[1]),
                "first_simulate_cpu_s": float(out[2]),
                "native": out[3] == "True",
            }
    with tempfile.TemporaryDirectory() as cache:
        out = subprocess.run(
            [sys.executable, "-c", warm_up_code],
            capture_output=True,
            text=True,
            env={**env, "BRAGGSIM_CACHE_DIR": cache},
            check=True,
        ).stdout.split()
        results["warm-up, cold cache"] = {"wall_s": float(out[0]), "cpu_s": float(out[1]), "ready": out[2] == "True"}
    return results


def compilers_on_path() -> list[str]:
    found = [name for name in ("gcc", "cc", "clang") if shutil.which(name)]
    return found + (["$CC"] if os.environ.get("CC") else [])


def rerun_without_compilers(argv: list[str]) -> int:
    """Build the C reference kernel while gcc is visible, then run this script again with
    every C compiler hidden from PATH and CC unset."""
    try:
        print(
            f"C reference kernel: {gcc_reference.build() if not gcc_reference.library_path().exists() else gcc_reference.library_path()}"
        )
    except RuntimeError as exc:
        print(f"C reference kernel: not built ({exc}); the comparison will be skipped")
    with tempfile.TemporaryDirectory() as shadow:
        seen = set()
        for directory in os.environ.get("PATH", "").split(os.pathsep):
            if not os.path.isdir(directory):
                continue
            for entry in sorted(os.listdir(directory)):
                path = os.path.join(directory, entry)
                if entry in seen or COMPILER.match(entry) or not (os.path.isfile(path) and os.access(path, os.X_OK)):
                    continue
                seen.add(entry)
                os.symlink(path, os.path.join(shadow, entry))
        env = {k: v for k, v in os.environ.items() if k != "CC"}
        env["PATH"] = shadow
        env["BRAGGSIM_BENCH_NO_COMPILER"] = "1"
        return subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv], env=env).returncode


def demo_command_s(repeats: int) -> dict:
    """Wall time of the whole ``braggsim demo`` command (start-up, refinement, PNG, JSON)."""
    script = Path(sys.executable).with_name("braggsim")
    command = (
        [str(script)]
        if script.is_file()
        else [sys.executable, "-c", "from braggsim.cli import main; raise SystemExit(main())"]
    )
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(command + ["demo", "--output-dir", tmp], capture_output=True, check=True, cwd=tmp)
            times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}


def run_nanobragg(binary: str, flags: list[str], repeats: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "image.bin"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        command = [binary, *flags, "-floatfile", str(out)]

        def run():
            subprocess.run(command, capture_output=True, check=True, env=env, cwd=tmp)

        result = timed(run, repeats, warmup=0)
        result["image"] = np.fromfile(out, dtype="<f4")
    return result


# ------------------------------------------------------------------ report
def _numba_version() -> str | None:
    try:
        import numba
    except ImportError:
        return None
    return numba.__version__


def machine_info(threads: int) -> dict:
    cpu = platform.processor()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))  # noqa: SIM115  closed in the block below / by the generator
    return {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": threads,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "native_kernel": _fast.available(),
        "native_unavailable": _fast.unavailable_reason(),
        "numba": _numba_version(),
        "c_compilers_on_path": compilers_on_path(),
        "loadavg_start": os.getloadavg(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and cases: a smoke run")
    parser.add_argument("--nanobragg", metavar="PATH", help="a nanoBragg binary to time on the same cases")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--json", default=str(HERE / "results" / "bench.json"), help="where to write the results")
    parser.add_argument(
        "--only",
        choices=("sources",),
        help="run one section: 'sources' = issue 11's 1 and 9 divergence sources (with --nanobragg, in one run)",
    )
    parser.add_argument(
        "--no-compiler",
        action="store_true",
        help="run with gcc, cc and clang hidden from PATH and CC unset (the C reference kernel is built first)",
    )
    args = parser.parse_args(argv)
    if args.no_compiler and not os.environ.get("BRAGGSIM_BENCH_NO_COMPILER"):
        return rerun_without_compilers(list(argv if argv is not None else sys.argv[1:]))
    if args.nanobragg and shutil.which(args.nanobragg) is None and not Path(args.nanobragg).is_file():
        parser.error(f"--nanobragg: no such program {args.nanobragg!r}")
    torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else 7
    info = machine_info(args.threads)
    rows, results = [], {"machine": info}

    print(f"braggsim benchmark  (float32, medians of {repeats} repeats after a warm-up)")
    for key in (
        "date",
        "cpu",
        "cores",
        "threads",
        "torch",
        "numba",
        "python",
        "native_kernel",
        "c_compilers_on_path",
        "loadavg_start",
    ):
        print(f"  {key:14s} {info[key]}")
    if not info["native_kernel"]:
        print(f"  native kernel unavailable: {info['native_unavailable']}")

    def record(name, result, nanobragg_flags=None, evaluations=None):
        target = TARGETS_S.get(name)
        row = {"case": name, **result}
        if evaluations:
            row["evaluations"] = evaluations
            row["ns_per_evaluation"] = result["median_s"] / evaluations * 1e9
        if target is not None:
            row["target_s"] = target
            row["meets_target"] = result["median_s"] <= target
        if args.nanobragg and nanobragg_flags is not None:
            nb = run_nanobragg(args.nanobragg, nanobragg_flags, 1 if args.quick else 3, args.threads)
            row["nanobragg_median_s"] = nb["median_s"]
            row["speedup_vs_nanobragg"] = nb["median_s"] / result["median_s"]
            if "image" in result:
                ours = result.pop("image").ravel().astype(np.float64)
                row["pearson_vs_nanobragg"] = float(np.corrcoef(ours, nb["image"].astype(np.float64))[0, 1])
        row.pop("image", None)
        rows.append(row)
        text = f"  {name:44s} {row['median_s'] * 1e3:10.2f} ms"
        if target is not None:
            text += f"   target {target * 1e3:6.1f} ms: {'met' if row['meets_target'] else 'NOT met'}"
        if "nanobragg_median_s" in row:
            text += f"   nanoBragg {row['nanobragg_median_s']:.3f} s, x{row['speedup_vs_nanobragg']:.1f}"
            if "pearson_vs_nanobragg" in row:
                text += f" (r={row['pearson_vs_nanobragg']:.6f})"
        print(text, flush=True)

    def forward_case(name, pixels, domains, oversample=1, kernel="auto", reps=repeats, sources=1):
        fn = forward(pixels, domains, oversample, kernel, sources)
        result = timed(fn, reps)
        if args.nanobragg and kernel == "auto":
            result["image"] = fn().numpy()
        record(
            name,
            result,
            still_flags(pixels, domains, oversample, sources) if kernel == "auto" else None,
            pixels * pixels * domains * oversample**2 * sources,
        )

    print("\nissue 11 figures: divergence sources (one more axis of the pixel sum)")
    forward_case("1024x1024, 10 domains, 1 source, forward", 1024, 10, reps=min(repeats, 3))
    forward_case("1024x1024, 10 domains, 9 sources, forward", 1024, 10, reps=min(repeats, 3), sources=9)
    by_case = {row["case"]: row for row in rows}
    one, nine = (
        by_case["1024x1024, 10 domains, 1 source, forward"],
        by_case["1024x1024, 10 domains, 9 sources, forward"],
    )
    print(f"  9 sources / 1 source: braggsim x{nine['median_s'] / one['median_s']:.1f}", end="")
    if "nanobragg_median_s" in nine:
        print(f", nanoBragg x{nine['nanobragg_median_s'] / one['nanobragg_median_s']:.1f}", end="")
    print()
    if args.only == "sources":
        info["loadavg_end"] = os.getloadavg()
        print(f"\n  load average at start {info['loadavg_start']}, at end {info['loadavg_end']}")
        results.update(rows=rows)
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1, default=float))
        print(f"  results written to {out}")
        return 0

    print("\nthe numba kernel against the C kernel it replaced and the torch path (issue 14), interleaved")
    reference = gcc_reference.available()
    if not reference:
        print(f"  C reference kernel unavailable: {gcc_reference.unavailable_reason()}")
    comparison = {}
    cases = [
        ("1024x1024, 10 domains, forward", forward(1024, 10), forward(1024, 10, kernel="torch"), repeats, 3),
        ("512x512, 10 domains, forward", forward(512, 10), forward(512, 10, kernel="torch"), repeats, 3),
        ("refinement demo, forward+backward", demo_step, lambda: demo_step(kernel="torch"), 30, 10),
        (
            "refinement demo, forward+backward, float64",
            lambda: demo_step(torch.float64),
            lambda: demo_step(torch.float64, kernel="torch"),
            30,
            10,
        ),
    ]
    if args.quick:
        cases = [case[:3] + (3 if "forward," in case[0] else 10, 1) for case in cases[::2]]
    for name, fn, torch_fn, reps, torch_reps in cases:
        functions = {"numba": fn}
        if reference:
            functions["gcc"] = with_kernel(gcc_reference, fn)
        row = timed_interleaved(functions, reps)
        row["torch"] = timed(torch_fn, torch_reps)
        numba_s = row["numba"]["median_s"]
        text = f"  {name:44s} numba {numba_s * 1e3:9.2f} ms"
        if reference:
            row["numba_over_gcc"] = numba_s / row["gcc"]["median_s"]
            text += f"   gcc {row['gcc']['median_s'] * 1e3:9.2f} ms   numba/gcc {row['numba_over_gcc']:5.2f}"
        row["torch_over_numba"] = row["torch"]["median_s"] / numba_s
        text += f"   torch {row['torch']['median_s'] * 1e3:9.1f} ms ({row['torch_over_numba']:.0f}x numba)"
        comparison[name] = row
        print(text, flush=True)
    results["kernel_comparison"] = comparison

    print("\nissue 7 figures")
    forward_case("1024x1024, 1 domain, forward", 1024, 1)
    forward_case("1024x1024, 10 domains, forward", 1024, 10)
    if not args.quick:
        forward_case("1024x1024, 50 domains, forward", 1024, 50)
    forward_case("512x512, 10 domains, forward", 512, 10)
    record("refinement demo, forward+backward", timed(demo_step, 10 if args.quick else 30, warmup=3))
    if not args.quick:
        record("refinement demo, forward+backward, float64", timed(lambda: demo_step(torch.float64), 30, warmup=3))

    record("braggsim demo, whole command", demo_command_s(1 if args.quick else 3))

    print("\nfirst use (fresh processes)")
    results["first_use"] = first_use_s()
    for label in ("cold cache", "warm cache"):
        item = results["first_use"][label]
        print(
            f"  {label:10s}: import {item['import_s']:.2f} s, first 512x512x10 simulate "
            f"{item['first_simulate_s']:.2f} s (CPU {item['first_simulate_cpu_s']:.2f} s)"
        )
    item = results["first_use"]["warm-up, cold cache"]
    print(
        f"  the whole warm-up (float32 image; float64 image, geometry, forward, backward), cold cache: {item['wall_s']:.2f} s (CPU {item['cpu_s']:.2f} s)"
    )

    print("\nscaling: cost per evaluation (pixel x domain x subpixel) should stay flat")
    print(
        f"  {'pixels':>9s} {'domains':>8s} {'oversample':>10s} {'evaluations':>12s} {'median ms':>10s} {'ns/eval':>8s}"
    )
    scaling = []
    grid = [(256, 1, 1), (512, 1, 1), (1024, 1, 1), (512, 5, 1), (512, 10, 1), (512, 20, 1), (512, 10, 2)]
    if not args.quick:
        grid += [(1024, 10, 1), (1024, 20, 1), (512, 10, 3), (2048, 5, 1)]
    for pixels, domains, oversample in grid:
        result = timed(forward(pixels, domains, oversample), repeats)
        evaluations = pixels * pixels * domains * oversample**2
        item = {
            "pixels": pixels * pixels,
            "domains": domains,
            "oversample": oversample,
            "evaluations": evaluations,
            **result,
            "ns_per_evaluation": result["median_s"] / evaluations * 1e9,
        }
        scaling.append(item)
        print(
            f"  {pixels:>4d}x{pixels:<4d} {domains:>8d} {oversample:>10d} {evaluations:>12d} "
            f"{result['median_s'] * 1e3:>10.2f} {item['ns_per_evaluation']:>8.2f}",
            flush=True,
        )

    info["loadavg_end"] = os.getloadavg()
    print(f"\n  load average at start {info['loadavg_start']}, at end {info['loadavg_end']}")
    print("  memory (2048x2048, 20 domains, oversample 2): see benchmarks/memory.py")
    results.update(rows=rows, scaling=scaling)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=float))
    print(f"  results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
