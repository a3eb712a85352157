"""The reliability probe of issue 16, re-runnable: bad command lines, damaged files,
threads and SIGKILL mid-write.  Prints the counts of each category and lists every case
that is a defect (traceback, hang, silent garbage, crash).

    PYTHONPATH=src python benchmarks/reliability_probe.py                 # everything (~10-20 min on 2 loaded cores)
    PYTHONPATH=src python benchmarks/reliability_probe.py --parts cli --commands simulate --sample 0.1
    PYTHONPATH=src python benchmarks/reliability_probe.py --parts files --per-format 20

Parts:

cli      For every flag of ``braggsim simulate``, ``refine``, ``nonbragg``, ``noisify`` and
         ``process`` (read from their flag tables and parsers), the bad values that fit
         its kind: a missing value, a non-number, inf, nan, a negative, zero, 1e300, a
         fractional integer, too few values; for file flags a missing file, a directory,
         an empty file and a garbage file; for switches a stray value.  Each call is
         appended to a small valid command line and run in-process (``braggsim.cli.main``
         with stdout/stderr captured, SystemExit caught), in a worker subprocess that a
         watchdog restarts after a hang or a crash.  Categories:
           error      non-zero exit, one line ``braggsim: error: ...`` (and whether it names
                      the flag or the value);
           accepted   exit 0 with finite, non-empty outputs (a valid nanoBragg reading, e.g.
                      atoi of "2.5", or a value that is legal);
           unclear    non-zero exit without a one-line error;
           traceback  an exception escaped main();
           hang       over the time limit (--limit-s);
           garbage    exit 0 with a missing, empty or non-finite output.
files    For each format the readers take (SMV, CBF, TIFF, EDF, HDF5/NeXus, .bin + sidecar,
         .expt, .hkl, .stol) --per-format seeded corruptions (bit flips, truncations,
         insertions, deletions, header edits, garbage), read with read_frame / read_expt /
         read_hkl / read_stol.  Categories: error (ValueError or OSError naming the path),
         read (the corruption was harmless and the values are finite), unclear (a
         ValueError/OSError without the path), garbage (read, but non-finite values),
         crash (any other exception, or the process died), hang.
threads  The same simulations from 4 threads at once and serially: bitwise equal.
kill     ``braggsim simulate`` writing a 4096^2 (64 MiB) -floatfile over an existing
         target, SIGKILLed (every other run) the moment its temporary appears beside the
         target, i.e. mid-write, or at moments spread over the run: the target must be the
         old or the new complete file.

Exit status 0 only when there is no traceback, hang, garbage, crash, thread mismatch or
damaged target.  --json FILE writes every case and its outcome.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TEST_DATA = REPO / "tests" / "data"
CLI_COMMANDS = ("simulate", "refine", "nonbragg", "noisify", "process")
DEFECTS = ("traceback", "hang", "garbage", "crash")

# ------------------------------------------------------------------ valid command lines
# Small and fast: each bad flag is appended (a later flag wins) or replaces the flag.
SIM_BASE = [
    *("-cell", "100", "100", "100", "90", "90", "90"),
    *("-default_F", "100", "-N", "2", "-detpixels", "24", "-pixel", "0.4", "-distance", "100"),
    *("-lambda", "1", "-floatfile", "{out}/out.bin"),
]
NONBRAGG_BASE = [
    *("-stol", "water", "-detpixels", "24", "-pixel", "0.4", "-distance", "100"),
    *("-floatfile", "{out}/out.bin"),
]
NOISIFY_BASE = ["-floatfile", "{fx}/photons24.bin", "-detpixels", "24", "-seed", "1", "-noisefile", "{out}/out.img"]
REFINE_BASE = [
    *("-data", "{fx}/frame.bin", "-cell", "100", "100", "100", "90", "90", "90"),
    *("-default_F", "100", "-N", "5", "-refine", "mosaic", "-iterations", "2", "-json", "{out}/out.json"),
    *("-detpixels", "64", "-pixel", "0.1", "-distance", "100", "-lambda", "1"),  # the frame's geometry
]
PROCESS_BASE = [
    *("{fx}/frame.bin", "--cell", "100", "100", "100", "90", "90", "90"),
    *("--space-group", "P1", "--out", "{out}/proc", "--no-pixel-refine", "--quiet"),
]
OUTPUT_OF = {
    "simulate": "out.bin",
    "nonbragg": "out.bin",
    "noisify": "out.img",
    "refine": "out.json",
    "process": "proc/summary.csv",
}

INTEGER_FLAG = re.compile(
    r"seed|steps|pixels|^-N[abc]?$|mosaic_dom|^-oversample$|^-roi$|printout_pixel|^-bits$|"
    r"iterations|min-spot-size|psf_radius"
)
NUMERIC_BAD = {
    "missing": None,
    "non-number": "abc",
    "inf": "inf",
    "nan": "nan",
    "negative": "-1",
    "zero": "0",
    "huge": "1e300",
}
FILE_BAD = {"missing": None, "nonexistent": "{fx}/no_such_file", "directory": "{fx}/adir"}
FILE_BAD_INPUT = {"empty file": "{fx}/empty", "garbage file": "{fx}/garbage"}
WORD_BAD = {"missing": None, "bogus word": "bogus", "number": "1e300", "empty string": ""}


# ------------------------------------------------------------------ the flags of each command
def _kind_from_usage(name: str, usage_tail: str) -> str:
    if "FILE" in usage_tail:
        return "file"
    words = usage_tail.replace("|", " ").split()
    if any(w in ("beam", "sample", "float32", "cpu", "gauss", "mse", "adam") for w in words):
        return "word"
    return "int" if INTEGER_FLAG.search(name) else "number"


def simulate_flags() -> list[tuple[str, int, str]]:
    """(name, value count, kind) of every flag ``simulate`` accepts, one per alias group."""
    from braggsim.nanobragg_flags import FLAGS

    seen, flags = set(), []
    for name, spec in FLAGS.items():
        if id(spec) in seen:
            continue
        seen.add(id(spec))
        tail = spec.usage.split(" ", 1)[1] if " " in spec.usage else ""
        kind = (
            "switch" if spec.values == 0 else _kind_from_usage(name, tail.split("|")[0] if name == "-misset" else tail)
        )
        if name in ("-floatfile", "-intfile", "-pgmfile", "-noisefile", "-stolout"):
            kind = "outfile"
        if name == "-dump":
            kind = "outfile"  # -dump FILE is written when there is no HKL input
        if name in ("-detector_abs",):
            kind = "number"
        flags.append((name, spec.values, kind))
    return flags


def nonbragg_flags() -> list[tuple[str, int, str]]:
    from braggsim.nonbragg_cli import NONBRAGG_FLAGS

    flags = []
    for name, (count, _group, usage, _meaning) in NONBRAGG_FLAGS.items():
        tail = usage.split(" ", 1)[1] if " " in usage else ""
        kind = "switch" if count == 0 else _kind_from_usage(name, tail)
        if name in ("-floatfile", "-intfile", "-pgmfile", "-noisefile"):
            kind = "outfile"
        flags.append((name, count, kind))
    return flags


def noisify_flags() -> list[tuple[str, int, str]]:
    from braggsim.noisify_cli import _ALIASES, SWITCHES

    flags = [(name, 0, "switch") for name in SWITCHES]
    for name in _ALIASES:
        if name in ("-floatfile", "-header"):
            kind = "file"
        elif name in ("-noisefile", "-intfile", "-pgmfile"):
            kind = "outfile"
        elif name == "-psf":
            kind = "word"
        else:
            kind = "int" if INTEGER_FLAG.search(name) else "number"
        flags.append((name, 1, kind))
    return flags


def refine_flags(shared_fraction: float, rng) -> list[tuple[str, int, str]]:
    """refine's own flags, and a seeded sample of the nanoBragg model flags it shares with
    simulate (they are parsed by the same code; the sample checks the model against a frame)."""
    own = [
        ("-data", 1, "file"),
        ("-refine", 1, "word"),
        ("-iterations", 1, "int"),
        ("-json", 1, "outfile"),
        ("-loss", 1, "word"),
        ("-optimizer", 1, "word"),
        ("-gain", 1, "number"),
        ("-readout_noise", 1, "number"),
        ("-mask", 1, "file"),
        ("-beamstop", 1, "number"),
        ("-search_deg", 1, "number"),
        ("-space_group", 1, "word"),
        ("-expt", 1, "file"),
    ]
    shared = [f for f in simulate_flags() if f[2] != "outfile" and rng.random() < shared_fraction]
    return own + shared


def process_flags() -> list[tuple[str, int, str]]:
    from braggsim.process_cli import build_parser

    flags = []
    for action in build_parser()._actions:
        if not action.option_strings or action.option_strings[0] in ("-h",):
            continue
        name = action.option_strings[0]
        if action.nargs == 0:
            flags.append((name, 0, "switch"))
            continue
        count = action.nargs if isinstance(action.nargs, int) else 1
        if name == "--mask":
            kind = "file"
        elif name == "--out":
            kind = "outdir"
        elif name == "--space-group" or name == "--beamstop":
            kind = "word"
        else:
            kind = "int" if action.type is int else "number"
        flags.append((name, count, kind))
    flags.append(("FRAME", 1, "file"))  # the positional frame
    return flags


def bad_values(kind: str, count: int) -> dict:
    """{label: list of values or None for 'flag given last with no value'}."""
    if kind == "switch":
        return {"stray value": ["7"]}
    table: dict = {}
    if kind in ("number", "int"):
        for label, text in NUMERIC_BAD.items():
            table[label] = None if text is None else [text] * count
        if kind == "int":
            table["fraction"] = ["2.5"] * count
    elif kind == "file":
        for label, text in {**FILE_BAD, **FILE_BAD_INPUT}.items():
            table[label] = None if text is None else [text] * count
    elif kind == "outfile":
        table = {"missing": None, "directory": ["{fx}/adir"], "in missing folder": ["{fx}/no_such_dir/x.out"]}
    elif kind == "outdir":
        table = {"missing": None, "a file": ["{fx}/garbage"], "empty string": [""]}
    else:
        for label, text in WORD_BAD.items():
            table[label] = None if text is None else [text] * count
    if count > 1:
        good = "1"
        table["too few values"] = [good] * (count - 1)
    return table


def cli_cases(commands, shared_fraction: float, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    bases = {
        "simulate": (SIM_BASE, simulate_flags),
        "nonbragg": (NONBRAGG_BASE, nonbragg_flags),
        "noisify": (NOISIFY_BASE, noisify_flags),
        "refine": (REFINE_BASE, lambda: refine_flags(shared_fraction, rng)),
        "process": (PROCESS_BASE, process_flags),
    }
    cases = []
    for command in commands:
        base, flags_of = bases[command]
        # the valid command line itself: it must be accepted, or the command's counts mean nothing
        cases.append(
            {
                "part": "cli",
                "command": command,
                "flag": "(none)",
                "kind": "valid",
                "bad": "valid",
                "argv": base,
                "given": [],
            }
        )
        for name, count, kind in flags_of():
            for label, values in bad_values(kind, count).items():
                argv = list(base)
                if name == "FRAME":  # process's positional frame
                    if values is None:
                        continue
                    argv[0] = values[0]
                    given = values
                elif values is None:
                    argv = argv + [name]
                    given = []
                else:
                    argv = argv + [name, *values]
                    given = values
                if kind == "outfile" and command == "simulate" and name == "-floatfile":
                    pass
                cases.append(
                    {
                        "part": "cli",
                        "command": command,
                        "flag": name,
                        "kind": kind,
                        "bad": label,
                        "argv": argv,
                        "given": given,
                    }
                )
    return cases


# ------------------------------------------------------------------ fixtures
def make_fixtures(folder: Path) -> None:
    """The valid inputs the command lines name, and the bad files ({fx}/empty, garbage, adir)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adir").mkdir(exist_ok=True)
    (folder / "empty").write_bytes(b"")
    (folder / "garbage").write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    shutil.copy(TEST_DATA / "p01_cubic.bin", folder / "frame.bin")
    shutil.copy(TEST_DATA / "p01_cubic.json", folder / "frame.json")
    photons = np.abs(np.random.default_rng(3).normal(5, 2, (24, 24))).astype("<f4")
    (folder / "photons24.bin").write_bytes(photons.tobytes())


def expand(argv: list, fx: str, out: str) -> list:
    return [a.replace("{fx}", fx).replace("{out}", out) for a in argv]


# ------------------------------------------------------------------ running one CLI case
class ProbeTimeout(BaseException):
    """Raised by SIGALRM in the worker; a BaseException so no ``except Exception`` eats it."""


def _alarm(signum, frame):
    raise ProbeTimeout


def _finite_file(path: Path, command: str) -> str | None:
    """None when the output is a usable result, else why not."""
    if not path.exists():
        return "no output written"
    if path.stat().st_size == 0:
        return "empty output"
    if command in ("simulate", "nonbragg"):
        pixels = np.fromfile(path, dtype="<f4")
        if not np.isfinite(pixels).all():
            return f"{int((~np.isfinite(pixels)).sum())} non-finite pixels"
    elif command == "noisify":
        from braggsim.io import read_frame

        data = read_frame(path).data
        if not np.isfinite(data).all():
            return "non-finite pixels"
    elif command == "refine":
        result = json.loads(path.read_text())

        def finite(value):
            if isinstance(value, dict):
                return all(finite(v) for v in value.values())
            if isinstance(value, list):
                return all(finite(v) for v in value)
            if isinstance(value, float):
                return math.isfinite(value)
            return True

        if not finite(result.get("parameters", result)):
            return "non-finite parameters in -json"
    return None


def run_cli_case(case: dict, fx: str, scratch: Path, limit_s: float) -> dict:
    from braggsim import cli

    out = scratch / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    argv = expand(case["argv"], fx, str(out))
    stdout, stderr = io.StringIO(), io.StringIO()
    code, escaped = None, None
    cwd = os.getcwd()
    os.chdir(out)  # commands that write default names write them here
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, limit_s)
    started = time.perf_counter()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = cli.main([case["command"], *argv])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except ProbeTimeout:
        escaped = "hang"
    except BaseException as exc:  # noqa: BLE001  any exception escaping main() is a traceback
        escaped = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        os.chdir(cwd)
    elapsed = time.perf_counter() - started
    err = stderr.getvalue()
    result = {"elapsed_s": round(elapsed, 3), "code": code}
    if escaped == "hang":
        result.update(category="hang", detail=f"over {limit_s:g} s")
    elif escaped is not None:
        result.update(category="traceback", detail=escaped.splitlines()[-1][:300])
    elif "Traceback (most recent call last)" in err:
        result.update(category="traceback", detail=err.strip().splitlines()[-1][:300])
    elif code == 0:
        why = _finite_file(out / OUTPUT_OF[case["command"]], case["command"])
        if why is None:
            result.update(category="accepted", detail="")
        else:
            result.update(category="garbage", detail=why)
    else:
        errors = [line for line in err.splitlines() if line.startswith("braggsim: error:")]
        # refine's sanity gates (exit 3) and failures (exit 1) end with one "status: ..." line
        status = [line for line in stdout.getvalue().splitlines() if line.startswith("status: ")]
        if not errors and case["command"] == "refine" and code in (1, 3) and len(status) == 1:
            errors = status
        if len(errors) == 1:
            message = errors[0]
            named = case["flag"] in message or any(v and v in message for v in expand(case["given"], fx, str(out)))
            result.update(category="error", detail=message[:300], named=bool(named))
        else:
            result.update(category="unclear", detail=" | ".join(err.strip().splitlines()[-3:])[:300])
    shutil.rmtree(out, ignore_errors=True)
    return result


# ------------------------------------------------------------------ damaged files
def _pixels(shape=(16, 20)):
    slow, fast = np.indices(shape)
    return (400 + 100 * np.sin(fast / 3.0) + 7 * slow).astype(np.uint16)


def make_originals(folder: Path) -> dict:
    """A small valid file of every format: {format: path}."""
    import braggsim
    from braggsim.io import write_smv
    from braggsim.io.expt import from_braggsim, write_expt
    from braggsim.io.write import write_float

    folder.mkdir(parents=True, exist_ok=True)
    detector = braggsim.Detector(fpixels=20, spixels=16)
    files = {}
    files["smv"] = folder / "frame.img"
    write_smv(files["smv"], _pixels().astype(np.float64), detector=detector, scale=1.0)

    from fabio.cbfimage import CbfImage
    from fabio.edfimage import EdfImage

    contents = (
        "# Pixel_size 172e-6 m x 172e-6 m\r\n# Detector_distance 0.2 m\r\n# Wavelength 1.0 A\r\n"
        "# Beam_xy (10, 8) pixels\r\n"
    )
    files["cbf"] = folder / "frame.cbf"
    CbfImage(data=_pixels().astype(np.int32), header={"_array_data.header_contents": contents}).write(str(files["cbf"]))
    import tifffile

    files["tiff"] = folder / "frame.tif"
    tifffile.imwrite(files["tiff"], _pixels())
    files["edf"] = folder / "frame.edf"
    EdfImage(data=_pixels()).write(str(files["edf"]))

    import h5py

    files["nexus"] = folder / "frame.h5"
    with h5py.File(files["nexus"], "w") as h5:
        h5["entry/data/data"] = _pixels()[None].astype(np.uint32)
        det = h5.create_group("entry/instrument/detector")
        for key, value, units in (
            ("detector_distance", 0.15, "m"),
            ("x_pixel_size", 7.5e-5, "m"),
            ("beam_center_x", 10.0, "pixel"),
            ("beam_center_y", 8.0, "pixel"),
        ):
            det[key] = value
            det[key].attrs["units"] = units
        h5["entry/instrument/beam/incident_wavelength"] = 0.8
        h5["entry/instrument/beam/incident_wavelength"].attrs["units"] = "angstrom"

    files["bin+sidecar"] = folder / "frame.bin"
    write_float(
        files["bin+sidecar"], _pixels().astype(np.float32), sidecar=True, detector=detector, beam=braggsim.Beam()
    )

    files["expt"] = folder / "model.expt"
    crystal = braggsim.Crystal(cell=(60, 70, 80, 90, 95, 90), default_F=1.0, misset_deg=(3.0, 1.0, 2.0))
    write_expt(files["expt"], from_braggsim(crystal, detector, braggsim.Beam()))

    files["hkl"] = folder / "small.hkl"
    lines = [f"{h} {k} {l} {10 + h * h + k + l:.2f}" for h in range(-3, 4) for k in range(-3, 4) for l in range(-2, 3)]
    files["hkl"].write_text("\n".join(lines) + "\n")

    files["stol"] = folder / "water.stol"
    stol = (REPO / "src" / "braggsim" / "data" / "stol" / "water.stol").read_text().splitlines()
    files["stol"].write_text("\n".join(stol[::50]) + "\n")  # 200 rows
    return files


def corrupt(raw: bytes, rng) -> tuple[str, bytes]:
    data = bytearray(raw)
    kind = int(rng.integers(6))
    head = min(len(data), 1024)
    if kind == 0 and data:
        for _ in range(int(rng.integers(1, 20))):
            i = int(rng.integers(len(data)))
            data[i] ^= 1 << int(rng.integers(8))
        return "bit flips", bytes(data)
    if kind == 1:
        return "truncation", bytes(data[: int(rng.integers(len(data)))])
    if kind == 2 and data:
        for _ in range(int(rng.integers(1, 6))):
            i = int(rng.integers(head))
            data[i] = int(rng.choice(list(b"0123456789-.;=}{\n eE+x\x00\xff")))
        return "header edit", bytes(data)
    if kind == 3:
        i = int(rng.integers(max(1, min(len(data), 600))))
        data[i:i] = rng.integers(0, 256, size=int(rng.integers(1, 40)), dtype=np.uint8).tobytes()
        return "insertion", bytes(data)
    if kind == 4:
        i = int(rng.integers(max(1, min(len(data), 600))))
        del data[i : i + int(rng.integers(1, 40))]
        return "deletion", bytes(data)
    if rng.random() < 0.5:
        data += rng.integers(0, 256, size=int(rng.integers(1, 500)), dtype=np.uint8).tobytes()
        return "garbage appended", bytes(data)
    i = int(rng.integers(max(1, len(data))))
    block = rng.integers(0, 256, size=int(rng.integers(1, 200)), dtype=np.uint8).tobytes()
    data[i : i + len(block)] = block
    return "block overwritten", bytes(data)


def file_cases(per_format: int, seed: int) -> list[dict]:
    formats = ("smv", "cbf", "tiff", "edf", "nexus", "bin+sidecar", "expt", "hkl", "stol")
    return [
        {"part": "files", "format": fmt, "index": i, "seed": seed + 1000 * k + i}
        for k, fmt in enumerate(formats)
        for i in range(per_format)
    ]


def _read_any(fmt: str, path: Path):
    """Read ``path`` as ``fmt``; returns the arrays that must be finite."""
    if fmt == "expt":
        from braggsim.io.expt import read_expt, to_braggsim

        arrays = []
        for experiment in read_expt(path):
            crystal, detector, beam = to_braggsim(experiment)
            arrays += [np.asarray(crystal.cell, float), np.asarray([detector.distance_mm, beam.wavelength_A], float)]
        return arrays
    if fmt == "hkl":
        from braggsim.structure_factors import read_hkl

        table = read_hkl(path)
        return [table.amplitudes[table.present]]
    if fmt == "stol":
        from braggsim.background import read_stol

        table = read_stol(str(path))
        return [np.asarray(table.stol_per_A, float), np.asarray(table.F, float)]
    from braggsim.io import read_frame

    frame = read_frame(path)
    geometry = [
        v
        for v in (frame.distance_mm, frame.pixel_size_mm, frame.wavelength_A, *(frame.beam_center_mm or ()))
        if v is not None
    ]
    return [frame.data, np.asarray(geometry, float)]


def run_file_case(case: dict, originals: dict, scratch: Path, limit_s: float) -> dict:
    fmt = case["format"]
    rng = np.random.default_rng(case["seed"])
    original = Path(originals[fmt])
    work = scratch / "files"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    target = work / original.name
    if fmt == "bin+sidecar":
        sidecar = original.with_suffix(".json")
        damaged_sidecar = rng.random() < 0.5
        shutil.copy(original, target)
        shutil.copy(sidecar, work / sidecar.name)
        victim = work / sidecar.name if damaged_sidecar else target
        how, data = corrupt(victim.read_bytes(), rng)
        victim.write_bytes(data)
        how = ("sidecar " if damaged_sidecar else ".bin ") + how
    else:
        how, data = corrupt(original.read_bytes(), rng)
        target.write_bytes(data)
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, limit_s)
    started = time.perf_counter()
    try:
        try:
            arrays = _read_any(fmt, target)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except ProbeTimeout:
        return {"category": "hang", "detail": how, "elapsed_s": limit_s}
    except (ValueError, OSError) as exc:
        message = str(exc)
        # the message names the file read (for .bin + sidecar: the .bin or its sidecar)
        category = "error" if str(work) in message else "unclear"
        detail = f"{how}: {type(exc).__name__}: {message[:200]}"
        return {"category": category, "detail": detail, "elapsed_s": round(time.perf_counter() - started, 3)}
    except BaseException as exc:  # noqa: BLE001
        detail = f"{how}: {type(exc).__name__}: {str(exc)[:200]}"
        return {"category": "crash", "detail": detail, "elapsed_s": round(time.perf_counter() - started, 3)}
    finite = all(np.isfinite(np.asarray(a, dtype=float)).all() for a in arrays)
    return {
        "category": "read" if finite else "garbage",
        "detail": how + ("" if finite else ": non-finite values read"),
        "elapsed_s": round(time.perf_counter() - started, 3),
    }


# ------------------------------------------------------------------ worker and watchdog
def worker(cases_path: str, start: int, results_path: str, limit_s: float) -> None:
    """Run cases[start:] in this process, one JSON line per start and per result."""
    import logging
    import warnings

    logging.disable(logging.CRITICAL)  # fabio logs before it fails; the result is what counts
    warnings.simplefilter("ignore")
    spec = json.loads(Path(cases_path).read_text())
    cases, fx = spec["cases"], spec["fixtures"]
    scratch = Path(spec["scratch"])
    originals = spec.get("originals", {})
    with open(results_path, "a") as log:
        for index in range(start, len(cases)):
            log.write(json.dumps({"start": index}) + "\n")
            log.flush()
            case = cases[index]
            if case["part"] == "cli":
                result = run_cli_case(case, fx, scratch, limit_s)
            else:
                result = run_file_case(case, originals, scratch, limit_s)
            log.write(json.dumps({"index": index, **result}) + "\n")
            log.flush()


def run_cases(cases: list[dict], folder: Path, limit_s: float, originals: dict | None = None) -> list[dict]:
    """Run every case in worker processes; a worker silent for limit_s + 30 s is killed and
    its case is a hang; a worker that dies is a crash.  Returns the cases with results."""
    fx = folder / "fixtures"
    make_fixtures(fx)
    spec_path = folder / "cases.json"
    spec_path.write_text(
        json.dumps(
            {
                "cases": cases,
                "fixtures": str(fx),
                "scratch": str(folder),
                "originals": {k: str(v) for k, v in (originals or {}).items()},
            }
        )
    )
    results_path = folder / "results.jsonl"
    results_path.write_text("")
    results: dict = {}
    start, last_report = 0, time.time()
    while start < len(cases):
        command = [sys.executable, __file__, "--worker", str(spec_path), str(start), str(results_path), str(limit_s)]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        last_line_at, current, seen = time.time(), None, 0
        while True:
            time.sleep(0.2)
            lines = results_path.read_text().splitlines()
            for line in lines[seen:]:
                record = json.loads(line)
                last_line_at = time.time()
                if "start" in record:
                    current = record["start"]
                else:
                    results[record["index"]] = record
                    current = None
            seen = len(lines)
            if time.time() - last_report > 30:
                print(f"  ... {len(results)}/{len(cases)} cases", flush=True)
                last_report = time.time()
            status = process.poll()
            if status is not None:
                if current is not None and current not in results:
                    stderr_tail = (process.stderr.read() or "").strip().splitlines()[-1:] if process.stderr else []
                    died = f"the process died (status {status}) {' '.join(stderr_tail)}"[:300]
                    results[current] = {"index": current, "category": "crash", "detail": died}
                    start = current + 1
                else:
                    start = len(cases) if status == 0 else (max(results) + 1 if results else start)
                    if status != 0 and not results:
                        raise RuntimeError(f"the worker failed: {process.stderr.read() if process.stderr else ''}")
                break
            if current is not None and time.time() - last_line_at > limit_s + 30:
                process.kill()
                process.wait()
                results[current] = {"index": current, "category": "hang", "detail": f"killed after {limit_s + 30:g} s"}
                start = current + 1
                break
        # results written by a worker that was killed after its last line are already read
        lines = results_path.read_text().splitlines()
        for line in lines[seen:]:
            record = json.loads(line)
            if "index" in record:
                results[record["index"]] = record
    return [{**case, **results.get(i, {"category": "lost", "detail": ""})} for i, case in enumerate(cases)]


# ------------------------------------------------------------------ threads and kills
def probe_threads(repetitions: int) -> dict:
    import torch

    from braggsim import Beam, Crystal, Detector, simulate

    jobs = []
    for misset_z, dtype in ((0.0, torch.float32), (3.0, torch.float64), (7.0, torch.float32), (11.0, torch.float64)):
        crystal = Crystal(
            cell=(100, 100, 100, 90, 90, 90),
            N_cells=(5, 5, 5),
            default_F=100,
            misset_deg=(1.0, 0.5, misset_z),
            mosaic_spread_deg=0.5,
            mosaic_domains=6,
            mosaic_seed=42,
        )
        jobs.append((crystal, Detector(fpixels=48, spixels=48, pixel_size_mm=0.2, oversample=2), Beam(), dtype))

    def run(job):
        crystal, detector, beam, dtype = job
        with torch.no_grad():
            return simulate(crystal, detector, beam, dtype=dtype).numpy().copy()

    serial = [run(job) for job in jobs]
    mismatches = 0
    for _ in range(repetitions):
        threaded: list = [None] * len(jobs)

        def target(i, out=threaded):
            out[i] = run(jobs[i])

        threads = [threading.Thread(target=target, args=(i,)) for i in range(len(jobs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        mismatches += sum(not np.array_equal(a, b) for a, b in zip(serial, threaded, strict=True))
    return {"runs": repetitions * len(jobs), "mismatches": mismatches}


def probe_kills(kills: int, folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "target.bin"
    argv = [
        sys.executable,
        "-m",
        "braggsim.cli",
        "simulate",
        *("-cell", "100", "100", "100", "90", "90", "90", "-default_F", "100", "-N", "1", "-oversample", "1"),
        *("-detpixels", "4096", "-pixel", "0.025", "-distance", "100", "-floatfile", str(target)),
    ]
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH") or str(REPO / "src")}
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    full_s = time.perf_counter() - started
    new = target.read_bytes()
    old = np.full(4096 * 4096, 1.5, dtype="<f4").tobytes()
    outcomes: Counter = Counter()
    for k in range(kills):
        target.write_bytes(old)
        for leftover in folder.glob(".*.part"):
            leftover.unlink()
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        if k % 2 == 0:
            # mid-write: the moment the temporary beside the target appears
            while process.poll() is None and not any(n.endswith(".part") for n in os.listdir(folder)):
                time.sleep(0.001)
            outcomes["killed with a temporary present"] += process.poll() is None
        else:
            # at moments spread from the start-up to past the end of the writing
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=full_s * (0.5 + 0.55 * (k + 0.5) / kills))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait()
        content = target.read_bytes()
        outcomes["old" if content == old else "new" if content == new else "damaged"] += 1
        # SIGKILL leaves the temporary (nothing can remove it); it is never the target
        outcomes["temporaries left"] += len(list(folder.glob(".*.part")))
    return {"kills": kills, "full_run_s": round(full_s, 1), **outcomes}


# ------------------------------------------------------------------ report
def table(rows: list[dict], key: str, categories: tuple) -> str:
    by = defaultdict(Counter)
    for row in rows:
        by[row[key]][row["category"]] += 1
        by["all"][row["category"]] += 1
    width = max(len(str(k)) for k in by) + 2
    lines = [f"{key:<{width}}{'cases':>7}" + "".join(f"{c:>18}" for c in categories)]
    for name in [k for k in by if k != "all"] + ["all"]:
        counts = by[name]
        total = sum(counts.values())
        cells = "".join(f"{counts[c]:>8} ({100 * counts[c] / total:5.1f}%)" for c in categories)
        lines.append(f"{name:<{width}}{total:>7}{cells}")
    return "\n".join(lines)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="cli,files,threads,kill", help="comma list of cli,files,threads,kill")
    parser.add_argument("--commands", default=",".join(CLI_COMMANDS), help="CLI commands to probe")
    parser.add_argument("--sample", type=float, default=1.0, help="fraction of the CLI cases to run (seeded)")
    parser.add_argument(
        "--refine-shared", type=float, default=0.2, help="fraction of the shared model flags probed through refine"
    )
    parser.add_argument("--per-format", type=int, default=150, help="corruptions per file format")
    parser.add_argument("--limit-s", type=float, default=30.0, help="time limit of one call")
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--thread-reps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--json", default=None, help="write every case and its outcome here")
    parser.add_argument("--list-accepted", action="store_true", help="also list the accepted bad calls")
    parser.add_argument("--worker", nargs=4, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.worker[2], float(args.worker[3]))
        return 0
    parts = set(args.parts.split(","))
    started = time.time()
    print(f"load average at start: {load_average()}")
    report: dict = {}
    bad = 0
    with tempfile.TemporaryDirectory(prefix="probe-") as tmp:
        folder = Path(tmp)
        if "cli" in parts:
            cases = cli_cases(args.commands.split(","), args.refine_shared, args.seed)
            if args.sample < 1:
                keep = np.random.default_rng(args.seed).random(len(cases)) < args.sample
                cases = [c for c, k in zip(cases, keep, strict=True) if k or c["kind"] == "valid"]
            t0 = time.perf_counter()
            rows = run_cases(cases, folder / "cli", args.limit_s)
            for row in [r for r in rows if r["kind"] == "valid"]:
                if row["category"] != "accepted":
                    print(f"the valid {row['command']} command line failed: {row['detail']}")
                    bad += 1
            rows = [r for r in rows if r["kind"] != "valid"]
            categories = ("error", "accepted", "unclear", "traceback", "hang", "garbage")
            print(f"\n== bad command lines: {len(rows)} calls in {time.perf_counter() - t0:.0f} s")
            print(table(rows, "command", categories))
            errors = [r for r in rows if r["category"] == "error"]
            unnamed = [r for r in errors if not r.get("named")]
            print(f"one-line errors that name neither the flag nor the value: {len(unnamed)} of {len(errors)}")
            for row in rows:
                if row["category"] in DEFECTS + ("unclear", "lost") or (
                    args.list_accepted and row["category"] == "accepted"
                ):
                    given = " ".join(row["given"]) if row["given"] else "(no value)"
                    print(
                        f"  {row['category']:9s} {row['command']} {row['flag']} {given} [{row['bad']}]: {row['detail']}"
                    )
            bad += sum(r["category"] in DEFECTS + ("lost",) for r in rows)
            report["cli"] = rows
        if "files" in parts:
            originals = make_originals(folder / "originals")
            cases = file_cases(args.per_format, args.seed)
            t0 = time.perf_counter()
            rows = run_cases(cases, folder / "files", min(args.limit_s, 10.0), originals)
            categories = ("error", "read", "unclear", "garbage", "crash", "hang")
            print(f"\n== damaged files: {len(rows)} reads in {time.perf_counter() - t0:.0f} s")
            print(table(rows, "format", categories))
            for row in rows:
                if row["category"] in DEFECTS + ("unclear", "lost"):
                    print(f"  {row['category']:9s} {row['format']} #{row['index']}: {row['detail']}")
            bad += sum(r["category"] in DEFECTS + ("lost",) for r in rows)
            report["files"] = rows
        if "threads" in parts:
            result = probe_threads(args.thread_reps)
            print(f"\n== threads: {result['runs']} threaded simulations, {result['mismatches']} differ from serial")
            bad += result["mismatches"]
            report["threads"] = result
        if "kill" in parts:
            result = probe_kills(args.kills, folder / "kill")
            print(
                f"\n== SIGKILL mid-write: {result['kills']} kills (full run {result['full_run_s']} s): "
                f"target old {result.get('old', 0)}, new {result.get('new', 0)}, damaged {result.get('damaged', 0)}; "
                f"{result.get('killed with a temporary present', 0)} killed mid-write (the temporary beside the "
                f"target present); hidden temporaries left behind {result.get('temporaries left', 0)}"
            )
            bad += result.get("damaged", 0)
            report["kill"] = result
    print(f"\nload average at end: {load_average()}; {time.time() - started:.0f} s in all")
    print(f"defects: {bad}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
