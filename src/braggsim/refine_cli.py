"""``braggsim refine`` and ``braggsim demo``: refinement from the command line."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .beam import Beam
from .crystal import Crystal
from .detector import Detector
from .refine import Refiner, RefineResult
from .refine_params import PARAMETERS
from .simulate import simulate

DATA_DIR = Path(__file__).with_name("data")
DEMO_TRUTH = {"mosaic_spread_deg": 0.8, "misset_x_deg": 5.0, "misset_y_deg": 3.0, "misset_z_deg": -2.0}
DEMO_START = {"mosaic_spread_deg": 0.2, "misset_x_deg": 0.0, "misset_y_deg": 0.0, "misset_z_deg": 0.0}

REFINE_HELP = """\
usage: braggsim refine -data FRAME <nanoBragg flags for the starting model>
       braggsim refine -data FRAME -expt MODEL.expt [flags]
                       -refine mosaic,misset[,cell,N,distance,beam_center,scale]
                       [-iterations N] [-json out.json] [-loss mse|poisson]
                       [-optimizer auto|lbfgs|adam] [-gain ADU/photon] [-readout_noise ADU]
                       [-mask FILE] [-beamstop auto|RADIUS_PX] [-search_deg DEG]

Refine the named parameters of the starting model (given with nanoBragg's flags, as for
'braggsim simulate') against FRAME, a nanoBragg float file (shape from its JSON sidecar or
-detpixels) or an SMV/CBF/EDF/TIFF/NeXus frame.  Detector size, pixel size, distance,
beam centre (MOSFLM convention) and wavelength that no flag gives come from FRAME's
header; a flag always wins.  Pixels the reader masks (dead,
saturated) and those zero in -mask are ignored.  Prints Initial | Refined | Std. err.
for each parameter and the losses; -json writes the final values, standard errors and the
per-iteration history.  Groups: mosaic, misset, cell, N, distance, beam_center, scale;
single parameters: {params}.
With -optimizer auto (the default), the refined misset axes are first searched on a grid
of -DEG, 0, +DEG around the start (-search_deg, default 4; 0 turns the search off).
-expt MODEL.expt starts from a DIALS ExperimentList (one still: beam, single-panel detector,
crystal) instead of -cell/-misset and the header's geometry; -N, -default_F/-hkl, -mosaic,
-mosaic_dom, -mosaic_seed, -oversample and -fluence still apply (default_F 1 when not given).
""".format(params=", ".join(PARAMETERS))

_EXTRA_FLAGS = {
    "-data": 1,
    "-refine": 1,
    "-iterations": 1,
    "-json": 1,
    "-loss": 1,
    "-optimizer": 1,
    "-gain": 1,
    "-readout_noise": 1,
    "-mask": 1,
    "-beamstop": 1,
    "-search_deg": 1,
    "-expt": 1,
}


class UsageError(Exception):
    pass


def _fail(message: str) -> int:
    print(f"braggsim: error: {message}", file=sys.stderr)
    return 2


# ------------------------------------------------------------------- tables
def format_table(result: RefineResult, truth: dict[str, float] | None = None) -> str:
    """Parameter | [True] | Initial | Refined | [Error] | Std. err., one row a parameter."""
    header = (
        ["Parameter"]
        + (["True"] if truth else [])
        + ["Initial", "Refined"]
        + (["Error"] if truth else [])
        + ["Std. err."]
    )
    rows = []
    for name, refined in result.parameters.items():
        row = [name]
        if truth:
            row.append(f"{truth[name]:.4f}")
        row += [f"{result.initial_parameters[name]:.4f}", f"{refined:.4f}"]
        if truth:
            row.append(f"{refined - truth[name]:+.2e}")
        row.append(f"{result.standard_errors.get(name, math.nan):.2e}")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=False))]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=False)))
        for r in rows
    ]
    ratio = result.initial_loss / result.final_loss if result.final_loss > 0 else math.inf
    lines.append("")
    lines.append(f"initial loss {result.initial_loss:.6g}  final loss {result.final_loss:.6g}  ratio {ratio:.3g}x")
    lines.append(f"status: {result.status} ({result.message})")
    search_line = format_search(result.search)
    if search_line:
        lines.append(search_line)
    return "\n".join(lines)


def format_search(search: dict | None) -> str:
    """One line on the orientation search, or "" when none ran."""
    if not search:
        return ""
    chosen = ", ".join(f"{name[7]} {value:+.2f}" for name, value in search["chosen"].items())
    return (
        f"orientation search: {search['points_tried']} starts {search['step_deg']:g} deg apart; "
        f"descent began at misset {chosen} deg (loss {search['chosen_loss']:.6g}, "
        f"start {search['start_loss']:.6g})"
    )


def _write_json(path: Path, payload: dict) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_refiner(refiner: Refiner, iterations: int, *, progress: bool = True) -> RefineResult:
    for state in refiner.run(iterations):
        if progress and state.stage != "done" and state.iteration % 5 == 0:
            values = " ".join(f"{k}={v:.4f}" for k, v in state.parameters.items())
            print(f"  iter {state.iteration:4d}  {state.stage:9s}  loss {state.loss:.6g}  {values}", flush=True)
    return refiner.result


# --------------------------------------------------------------------- demo
def demo_model(misset_deg=(0.0, 0.0, 0.0), mosaic_spread_deg=0.2):
    """The demo problem's crystal, detector and beam (64x64, 5 domains, seed 42, fluence 1e28)."""
    crystal = Crystal(
        cell=(100, 100, 100, 90, 90, 90),
        N_cells=(5, 5, 5),
        default_F=100,
        misset_deg=tuple(misset_deg),
        mosaic_spread_deg=mosaic_spread_deg,
        mosaic_domains=5,
        mosaic_seed=42,
    )
    detector = Detector(fpixels=64, spixels=64, pixel_size_mm=0.1, distance_mm=100)
    beam = Beam(wavelength_A=1.0, fluence=1e28)
    return crystal, detector, beam


def demo_observed(source: str, dtype=torch.float64) -> np.ndarray:
    """The demo's observed frame: simulated by braggsim, or nanoBragg's own (p02)."""
    if source == "nanobragg":
        return np.fromfile(DATA_DIR / "p02_seed_truth.bin", "<f4").reshape(64, 64).astype(np.float64)
    crystal, detector, beam = demo_model(
        (DEMO_TRUTH["misset_x_deg"], DEMO_TRUTH["misset_y_deg"], DEMO_TRUTH["misset_z_deg"]),
        DEMO_TRUTH["mosaic_spread_deg"],
    )
    with torch.no_grad():
        return simulate(crystal, detector, beam, dtype=dtype).numpy()


def demo_main(argv) -> int:
    parser = argparse.ArgumentParser(
        prog="braggsim demo",
        description=(
            "Recover mosaic spread 0.8 deg and misset (5, 3, -2) deg from a 64x64 frame "
            "(100 A cubic cell, N=5, 5 mosaic domains, mosaic_seed 42, fluence 1e28), starting "
            "from mosaic 0.2 deg and misset (0, 0, 0). Prints True | Initial | Refined | Error, "
            "writes refinement_demo.png and refinement_demo.json."
        ),
    )
    parser.add_argument("--iterations", type=int, default=100, help="iteration limit (default 100)")
    parser.add_argument(
        "--observed",
        choices=("braggsim", "nanobragg"),
        default="braggsim",
        help="observed frame: simulated by braggsim (default) or nanoBragg's own image",
    )
    parser.add_argument("--loss", choices=("mse", "poisson"), default="mse", help="loss (default mse)")
    parser.add_argument(
        "--optimizer", choices=("auto", "lbfgs", "adam"), default="auto", help="auto = staged L-BFGS (default)"
    )
    parser.add_argument(
        "--search-deg",
        type=float,
        default=4.0,
        help="orientation search step before refining, auto optimizer only (default 4; 0: none)",
    )
    parser.add_argument("--output-dir", type=Path, default=Path("."), help="where the PNG and JSON go (default .)")
    parser.add_argument("--no-plot", action="store_true", help="skip refinement_demo.png")
    args = parser.parse_args(argv)
    if args.iterations < 1:
        return _fail(f"--iterations must be >= 1, got {args.iterations}")
    if not (math.isfinite(args.search_deg) and args.search_deg >= 0):
        return _fail(f"--search-deg must be >= 0 deg, got {args.search_deg}")
    if not args.output_dir.is_dir():
        return _fail(f"--output-dir {args.output_dir} is not a directory")

    t0 = time.perf_counter()
    observed = demo_observed(args.observed)
    crystal, detector, beam = demo_model()
    refiner = Refiner(
        crystal,
        detector,
        beam,
        observed,
        refine=("mosaic", "misset"),
        loss=args.loss,
        optimizer=args.optimizer,
        search_deg=args.search_deg,
    )
    initial_image = refiner.predict(refiner._internal.detach()).detach().numpy()
    print(
        f"braggsim demo: observed frame from {args.observed}; refining mosaic and misset "
        f"for at most {args.iterations} iterations"
    )
    result = run_refiner(refiner, args.iterations)
    elapsed = time.perf_counter() - t0
    print()
    print(format_table(result, DEMO_TRUTH))
    iterations = len(result.history)
    print(f"iterations: {iterations}  wall time: {elapsed:.2f} s")

    json_path = args.output_dir / "refinement_demo.json"
    _write_json(
        json_path,
        dict(result.to_dict(), truth=DEMO_TRUTH, observed=args.observed, iterations=iterations, wall_time_s=elapsed),
    )
    print(f"wrote {json_path}")
    if not args.no_plot:
        png_path = args.output_dir / "refinement_demo.png"
        final_image = simulate(result.crystal, result.detector, result.beam, dtype=torch.float64).numpy() * result.scale
        plot_demo(png_path, observed, initial_image, final_image, result, DEMO_TRUTH)
        print(f"wrote {png_path}")
    ok = all(abs(result.parameters[k] - DEMO_TRUTH[k]) <= (0.1 if k.startswith("mosaic") else 1.0) for k in DEMO_TRUTH)
    print("result: " + ("PASS (mosaic within 0.1 deg, misset within 1 deg)" if ok else "FAIL"))
    return 0 if ok else 1


def plot_demo(path: Path, observed, initial, refined, result: RefineResult, truth: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(12, 7.5))
    vmax = float(np.percentile(observed, 99.8)) or 1.0
    for ax, image, title in zip(
        axes[0], (observed, initial, refined), ("experimental", "initial model", "refined model"), strict=False
    ):
        ax.imshow(image, cmap="gray_r", vmin=0, vmax=vmax, origin="upper")
        ax.set_title(title)
        ax.set_xlabel("fast (px)")
        ax.set_ylabel("slow (px)")
    iterations = [h["iteration"] for h in result.history]
    losses = [h["loss"] for h in result.history]
    axes[1, 0].semilogy(iterations, np.maximum(losses, 1e-300), color="k")
    axes[1, 0].set_title("loss")
    axes[1, 0].set_xlabel("iteration")
    mosaic = [h["parameters"]["mosaic_spread_deg"] for h in result.history]
    axes[1, 1].plot(iterations, mosaic, color="C0")
    axes[1, 1].axhline(truth["mosaic_spread_deg"], color="C0", ls="--", lw=1, label="truth")
    axes[1, 1].set_title("mosaic spread (deg)")
    axes[1, 1].set_xlabel("iteration")
    axes[1, 1].legend()
    for i, axis in enumerate("xyz"):
        name = f"misset_{axis}_deg"
        axes[1, 2].plot(iterations, [h["parameters"][name] for h in result.history], color=f"C{i + 1}", label=axis)
        axes[1, 2].axhline(truth[name], color=f"C{i + 1}", ls="--", lw=1)
    axes[1, 2].set_title("misset (deg); dashed = truth")
    axes[1, 2].set_xlabel("iteration")
    axes[1, 2].legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)


# ------------------------------------------------------------------- refine
def refine_main(argv) -> int:
    if any(a in ("-h", "--help", "-help") for a in argv):
        print(REFINE_HELP, end="")
        return 0
    from .nanobragg_flags import parse_flags

    try:
        argv = _with_expt_placeholders(list(argv))
        flags = parse_flags(list(argv), extra_value_flags=_EXTRA_FLAGS)
        extra = flags.extra
        if "-expt" in extra:
            flags.crystal, flags.detector, flags.beam = _model_from_expt(extra["-expt"][0], flags, argv)
        if "-data" not in extra:
            raise UsageError("give the observed frame with -data FRAME")
        if "-refine" not in extra:
            raise UsageError("say what to refine with -refine, e.g. -refine mosaic,misset")
        iterations = _int_flag(extra, "-iterations", 100)
        frame_path = Path(extra["-data"][0])
        observed, mask, detector, beam, from_header = _read_observed(
            frame_path, flags, list(argv), extra, geometry_given="-expt" in extra
        )
        dtype = torch.float64 if flags.dtype == "float64" else torch.float32
        refiner = Refiner(
            flags.crystal,
            detector,
            beam,
            observed,
            mask,
            refine=extra["-refine"][0],
            loss=extra.get("-loss", ["mse"])[0],
            optimizer=extra.get("-optimizer", ["auto"])[0],
            gain=_float_flag(extra, "-gain", 1.0),
            readout_noise=_float_flag(extra, "-readout_noise", 0.0),
            search_deg=_float_flag(extra, "-search_deg", 4.0),
            dtype=torch.float64 if "-dtype" not in argv else dtype,
        )
    except (ValueError, UsageError, OSError) as exc:
        return _fail(str(exc))
    t0 = time.perf_counter()
    print(
        f"braggsim refine: {frame_path} ({observed.shape[0]}x{observed.shape[1]}, "
        f"{int(mask.sum())} trusted pixels); refining {', '.join(refiner.names)}"
    )
    if from_header:
        print(f"  from the frame's header: {'; '.join(from_header)}")
    result = run_refiner(refiner, iterations)
    elapsed = time.perf_counter() - t0
    print()
    print(format_table(result))
    print(f"iterations: {len(result.history)}  wall time: {elapsed:.2f} s")
    if "-json" in extra:
        json_path = Path(extra["-json"][0])
        _write_json(json_path, dict(result.to_dict(), data=str(frame_path), wall_time_s=elapsed))
        print(f"wrote {json_path}")
    return 0 if result.status != "failed" else 1


def _int_flag(extra, flag, default):
    if flag not in extra:
        return default
    try:
        value = int(extra[flag][0])
    except ValueError:
        raise UsageError(f"{flag} needs an integer, got {extra[flag][0]!r}") from None
    if value < 1:
        raise UsageError(f"{flag} must be >= 1, got {value}")
    return value


def _float_flag(extra, flag, default):
    if flag not in extra:
        return default
    try:
        return float(extra[flag][0])
    except ValueError:
        raise UsageError(f"{flag} needs a number, got {extra[flag][0]!r}") from None


# nanoBragg flags that set each piece of geometry a frame header also carries
_HEADER_FIELDS = {
    "size": (
        "-detpixels",
        "-detpixels_f",
        "-detpixels_x",
        "-detpixels_s",
        "-detpixels_y",
        "-detsize",
        "-detsize_f",
        "-detsize_s",
    ),
    "pixel": ("-pixel",),
    "distance": ("-distance",),
    "beam_center": ("-Xbeam", "-Ybeam", "-ORGX", "-ORGY"),
    "wavelength": ("-lambda", "-wavelength", "-energy"),
}


def _with_expt_placeholders(argv: list) -> list:
    """With -expt, the cell and F need no flags: add placeholders the .expt model replaces."""
    if "-expt" not in argv:
        return argv
    if "-cell" not in argv and "-mat" not in argv:
        argv += ["-cell", "1", "1", "1", "90", "90", "90"]
    if "-default_F" not in argv and "-hkl" not in argv:
        argv += ["-default_F", "1"]
    return argv


def _model_from_expt(path: str, flags, argv: list):
    """(crystal, detector, beam) from a one-still .expt, with the crystal flags given on top."""
    from .io.expt import read_expt, to_braggsim

    experiments = read_expt(path)
    if len(experiments) != 1 or experiments[0].real_space is None:
        raise UsageError(f"-expt {path}: need exactly one experiment with a crystal, found {len(experiments)}")
    crystal, detector, beam = to_braggsim(experiments[0])
    given = set(argv)
    changes = {"default_F": flags.crystal.default_F, "hkl": flags.crystal.hkl, "shape": flags.crystal.shape}
    if given & {"-N", "-Na", "-Nb", "-Nc"}:
        changes["N_cells"] = flags.crystal.N_cells
    if "-mosaic" in given:
        changes["mosaic_spread_deg"] = flags.crystal.mosaic_spread_deg
    if given & {"-mosaic_dom", "-mosaic_domains"}:
        changes["mosaic_domains"] = flags.crystal.mosaic_domains
    if "-mosaic_seed" in given:
        changes["mosaic_seed"] = flags.crystal.mosaic_seed
    crystal = crystal.replace(**changes)
    if "-oversample" in given:
        detector = detector.replace(oversample=flags.detector.oversample)
    if "-fluence" in given:
        beam = beam.replace(fluence=flags.beam.fluence)
    return crystal, detector, beam


def _read_observed(path: Path, flags, argv: list, extra, geometry_given: bool = False):
    """(observed (slow, fast) float64, mask, detector, beam, [what came from the header]).

    Geometry that no flag gives is taken from the frame's header: detector size, pixel
    size, distance, beam centre (MOSFLM convention only: the header's centre is in it)
    and wavelength.  A flag always wins over the header; with ``geometry_given`` (a .expt
    model) nothing comes from the header.
    """
    from .io import read_frame

    beamstop = False
    if "-beamstop" in extra:
        value = extra["-beamstop"][0]
        beamstop = "auto" if value == "auto" else _float_flag(extra, "-beamstop", 0.0)
    detector, beam = flags.detector, flags.beam
    frame = read_frame(path, shape=detector.shape, beamstop=beamstop)
    given = {key for key, names in _HEADER_FIELDS.items() if geometry_given or any(name in argv for name in names)}
    changes, taken = {}, []
    if "size" not in given and frame.shape != detector.shape:
        changes["spixels"], changes["fpixels"] = frame.shape
        taken.append(f"{frame.shape[0]}x{frame.shape[1]} pixels")
    if "pixel" not in given and frame.pixel_size_mm is not None:
        changes["pixel_size_mm"] = float(frame.pixel_size_mm)
        taken.append(f"pixel {frame.pixel_size_mm:g} mm")
    if "distance" not in given and frame.distance_mm is not None:
        changes["distance_mm"] = float(frame.distance_mm)
        taken.append(f"distance {frame.distance_mm:g} mm")
    if "beam_center" not in given and frame.beam_center_mm is not None and detector.convention == "mosflm":
        changes["beam_center_mm"] = tuple(float(x) for x in frame.beam_center_mm)
        taken.append("beam centre ({:g}, {:g}) mm".format(*changes["beam_center_mm"]))
    if changes:
        detector = detector.replace(**changes)
    if "wavelength" not in given and frame.wavelength_A is not None:
        beam = beam.replace(wavelength_A=float(frame.wavelength_A))
        taken.append(f"wavelength {frame.wavelength_A:g} A")
    if frame.shape != detector.shape:
        raise UsageError(
            f"{path}: the frame is {frame.shape[0]}x{frame.shape[1]} (slow x fast) but the model detector is "
            f"{detector.shape[0]}x{detector.shape[1]}; give matching -detpixels or leave it to the header"
        )
    mask = frame.mask.copy()
    if "-mask" in extra:
        from .io import user_mask

        mask &= user_mask(extra["-mask"][0], shape=frame.shape)
    return frame.data.astype(np.float64), mask, detector, beam, taken
