"""Memory and time budgets: refuse, up front and with the estimate, what cannot fit.

The memory budget is the least of:
- ``BRAGGSIM_MEMORY_BUDGET`` (bytes, or with a K/M/G/T suffix), when set;
- the address space left under the soft ``RLIMIT_AS`` (``ulimit -v``: HPC batch nodes,
  Dask workers), i.e. the limit minus this process's current ``VmSize``;
- the cgroup's ``memory.max`` minus its ``memory.current`` (containers, Slurm);
- ``MemAvailable`` from /proc/meminfo (there is no swap to fall back on here).

The time budget is ``BRAGGSIM_TIME_BUDGET_S`` seconds (default one day).  Time estimates
use deliberately fast nominal rates, so they are lower bounds: a request is refused only
when even the optimistic estimate does not fit.
"""

from __future__ import annotations

import math
import os
import re

MEMORY_ENV = "BRAGGSIM_MEMORY_BUDGET"
TIME_ENV = "BRAGGSIM_TIME_BUDGET_S"
DEFAULT_TIME_BUDGET_S = 24 * 3600.0

# nominal rates for lower-bound time estimates, per thread, a few times faster than
# measured on a loaded 2-core machine (native kernel: 9e6 subpixels/s with one
# orientation, 6e7 pixel-orientation evaluations/s with 100; torch path: 1.5e5 and 4e5)
NATIVE_RATES = {"subpixels_per_s": 5e7, "evaluations_per_s": 2e8}
TORCH_RATES = {"subpixels_per_s": 1e6, "evaluations_per_s": 2e6}
MOSAIC_DRAWS_PER_S = 1e6  # nanoBragg's ran1, in plain Python (measured about 1e5/s)
# requests below both are not checked against the budgets
SMALL_BYTES = 64 << 20
SMALL_SECONDS = 1.0

_SUFFIX = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class ResourceLimitError(ValueError):
    """A request that cannot fit the memory or time budget; the message gives the estimate."""


def format_bytes(n_bytes: float) -> str:
    if not math.isfinite(n_bytes):
        return "an unbounded amount"
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n_bytes >= size:
            return f"{n_bytes / size:.3g} {unit}"
    return f"{int(n_bytes)} B"


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "forever"
    for unit, size in (("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def parse_bytes(text: str) -> int:
    """'8G' / '512m' / '1000000' -> bytes; ValueError naming the text otherwise."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", str(text))
    if match is None:
        raise ValueError(f"{MEMORY_ENV}={text!r} is not a size (bytes, or a number with K, M, G or T)")
    return int(float(match.group(1)) * _SUFFIX[match.group(2).lower()])


def _proc_kib(path: str, key: str) -> int | None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_headroom() -> int | None:
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as handle:
            limit = handle.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as handle:
            current = int(handle.read().strip())
        return int(limit) - current
    except (OSError, ValueError):
        return None


def memory_budget() -> tuple[int, str]:
    """(bytes this process may still allocate, what sets that number)."""
    candidates = []
    if os.environ.get(MEMORY_ENV, "").strip():
        candidates.append((parse_bytes(os.environ[MEMORY_ENV]), f"the budget {MEMORY_ENV} sets"))
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            used = _proc_kib("/proc/self/status", "VmSize") or 0
            candidates.append((soft - used, f"address-space limit (ulimit -v) of {format_bytes(soft)}"))
    except (ImportError, OSError, ValueError):
        pass
    headroom = _cgroup_headroom()
    if headroom is not None:
        candidates.append((headroom, "the cgroup's memory.max"))
    available = _proc_kib("/proc/meminfo", "MemAvailable")
    if available is not None:
        candidates.append((available, "MemAvailable"))
    if not candidates:
        return (1 << 62, "no known limit")
    budget, reason = min(candidates)
    return (max(0, budget), reason)


def time_budget_s() -> float:
    text = os.environ.get(TIME_ENV, "").strip()
    if not text:
        return DEFAULT_TIME_BUDGET_S
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"{TIME_ENV}={text!r} is not a number of seconds") from None
    if not seconds > 0:
        raise ValueError(f"{TIME_ENV}={text!r} must be a positive number of seconds")
    return seconds


def check_memory(what: str, needed_bytes: float) -> None:
    """Raise ResourceLimitError when ``needed_bytes`` exceed the memory budget."""
    budget, reason = memory_budget()
    if needed_bytes > budget:
        raise ResourceLimitError(
            f"{what} needs about {format_bytes(needed_bytes)} of memory, more than the "
            f"{format_bytes(budget)} available ({reason}"
            + ("" if MEMORY_ENV in reason else f"; {MEMORY_ENV} sets a budget")
            + ")"
        )


def simulation_estimate(crystal, detector, oversample: int, itemsize: int, native: bool, samples: int = 1) -> dict:
    """Memory (bytes) and a lower bound on the time (s) of one ``simulate`` call, from
    the sizes alone, before anything is allocated.  ``samples``: beam sources x sensor
    layers, each a further evaluation of every subpixel."""
    import torch

    orientations = crystal.n_domains * crystal.n_phi
    pixels = detector.fpixels * detector.spixels
    evaluations = float(pixels) * oversample * oversample * orientations * samples
    # per orientation: the frozen draws (float64 axis and factor, twice), four (3, 3)
    # rotation constants, the rotations, the combined and the final axes
    per_orientation = 2 * 4 * 8 + 7 * 9 * itemsize
    # the torch path holds about 16 numbers per evaluation of one block (see simulate.py),
    # and a block is never less than one pixel row; the native image kernel holds none,
    # but only up to MAX_NATIVE_OVERSAMPLE and for one sample per subpixel: beyond that
    # the block path runs, holding at least a row's subpixel positions (an enormous
    # automatic oversample, e.g. from -xtal_width 1e300, asked for 41 GB and failed)
    from ._fast import MAX_NATIVE_OVERSAMPLE

    row_subpixels = float(detector.fpixels) * oversample * oversample * samples
    if native and oversample <= MAX_NATIVE_OVERSAMPLE and samples == 1:
        block = 0.0
    elif native:
        block = row_subpixels * 16 * itemsize
    else:
        block = max(float(1 << 21), row_subpixels * orientations) * 16 * itemsize
    memory = pixels * itemsize + orientations * per_orientation + block
    rates = NATIVE_RATES if native else TORCH_RATES
    threads = max(1, torch.get_num_threads())
    subpixels = float(pixels) * oversample * oversample * samples
    seconds = (
        subpixels / (rates["subpixels_per_s"] * threads)
        + evaluations / (rates["evaluations_per_s"] * threads)
        + crystal.n_domains / MOSAIC_DRAWS_PER_S
    )
    return {
        "memory_bytes": memory,
        "seconds": seconds,
        "evaluations": evaluations,
        "orientations": orientations,
        "pixels": pixels,
    }


def _count(n) -> str:
    """1,000,000 up to a billion, then 1.2e+301 rather than three hundred digits."""
    return f"{n:,}" if n < 1e9 else f"{float(n):.3g}"


def check_simulation(crystal, detector, oversample: int, itemsize: int, native: bool, samples: int = 1) -> dict:
    """Raise ResourceLimitError, with the estimate, for a simulation that cannot fit."""
    estimate = simulation_estimate(crystal, detector, oversample, itemsize, native, samples)
    if estimate["memory_bytes"] < SMALL_BYTES and estimate["seconds"] < SMALL_SECONDS:
        return estimate  # a refinement's every step: not worth reading /proc each time
    size = (
        f"{detector.spixels}x{detector.fpixels} pixels x {_count(oversample)}^2 subpixels x "
        + (f"{_count(samples)} sources x layers x " if samples > 1 else "")
        + f"{_count(estimate['orientations'])} crystal orientations"
    )
    budget = time_budget_s()
    too_slow = estimate["seconds"] > budget
    slow = (
        f"would take at least {format_seconds(estimate['seconds'])}, more than the "
        f"{format_seconds(budget)} time budget ({TIME_ENV} sets it)"
    )
    try:
        check_memory(f"this simulation ({size})", estimate["memory_bytes"])
    except ResourceLimitError as exc:
        # both budgets exceeded (an absurd oversample): say both
        raise ResourceLimitError(f"{exc}; and it {slow}" if too_slow else str(exc)) from None
    if too_slow:
        raise ResourceLimitError(f"this simulation ({size} = {estimate['evaluations']:.3g} evaluations) {slow}")
    if not math.isfinite(estimate["memory_bytes"]):
        raise ResourceLimitError(f"this simulation ({size}) has no finite size")
    return estimate
