"""The ``braggsim`` command: ``simulate`` | ``nonbragg`` | ``noisify`` | ``refine`` | ``process`` | ``demo``.

``braggsim simulate`` is a drop-in for nanoBragg: it takes nanoBragg's flags (see
``braggsim simulate --help``), prints a short nanoBragg-like summary and writes
``-floatfile`` (raw float32), ``-intfile`` and ``-noisefile`` (SMV) and nanoBragg's other
outputs.  ``nonbragg`` and ``noisify`` are nanoBragg's companion programs
(:mod:`braggsim.nonbragg_cli`, :mod:`braggsim.noisify_cli`).  ``refine`` and ``demo``
live in :mod:`braggsim.refine_cli`, ``process`` in :mod:`braggsim.process_cli`; each is
imported only when asked for.

Errors are one line on stderr, ``braggsim: error: ...``, with exit status 2.  Output
files are written to temporary names and renamed only once every file is complete, so a
failing run leaves nothing half-written behind; an output that is an input (-hkl, -mat,
-sourcefile, ...) or a read-only file is refused before anything is simulated, an existing
output keeps its permissions, and a simulation whose image is not finite writes nothing.
A request whose memory or time cannot fit is refused up front with the estimate (see
braggsim._resources).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

USAGE = """\
usage: braggsim <command> [options]

commands:
  simulate   simulate a diffraction image from nanoBragg's command-line flags
  nonbragg   render amorphous scattering (water, air, ice) from nonBragg's flags
  noisify    add detector noise to a photons/pixel image, as nanoBragg's noisify
  refine     refine a model against a measured frame
  process    real stills: find spots, index with a known cell, refine; .expt + summary.csv
  demo       simulate a known crystal, then refine a perturbed model back to it
  process    process many frames (files, folders, Eiger masters) in-process or on Dask

Run 'braggsim <command> --help' for the options of a command.
"""

SIMULATE_HELP_HEAD = """\
usage: braggsim simulate -cell a b c alpha beta gamma (-default_F F | -hkl FILE) [flags]

Simulate a still or rotation image as nanoBragg does, with nanoBragg's flag names and
meanings.  Lengths in Angstrom (crystal) and mm (detector), angles in degrees.  Flags are
read left to right: a later flag overrides an earlier one that sets the same thing.
Integers are read as nanoBragg reads them (-N 2.5 is 2).  A flag that is not listed here
is an error, and so is one that would have no effect; nothing is silently ignored.

"""

SIMULATE_HELP_TAIL = """
braggsim writes only the files it is asked for (nanoBragg also writes floatimage.bin,
intimage.img, image.pgm and noiseimage.img by default).  Outputs are written whole, then
renamed into place; an existing file keeps its permissions.  An output that is an input
(-hkl, -mat, -sourcefile, -stol, -img, -mask, a -dump that is read) or a read-only file
is refused before simulating, and an image with non-finite pixels is never written.

resources: a request whose memory or time cannot fit is refused up front with the
estimate.  BRAGGSIM_MEMORY_BUDGET (e.g. 8G) caps memory (default: what the address-space
limit, the cgroup and free memory allow); BRAGGSIM_TIME_BUDGET_S caps the estimated
compute time (default 86400).

docs/physics.md explains every flag and where braggsim differs from nanoBragg.c.  For
noisify's fuller detector model (readout noise, flicker, calibration error, PSF, gain)
run 'braggsim noisify' on the -floatfile.
"""

REFINE_HELP_FALLBACK = "usage: braggsim {name} [options]\n\n{what}\n"
_REFINE_WHAT = {
    "refine": "Refine a model against a measured frame.",
    "demo": "Simulate a known crystal, then refine a perturbed model back to it.",
}


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def main(argv=None) -> int:
    """Entry point of the ``braggsim`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    try:
        if command == "simulate":
            return simulate_main(rest)
        if command == "nonbragg":
            from .nonbragg_cli import nonbragg_main

            return nonbragg_main(rest)
        if command == "noisify":
            from .noisify_cli import NoisifyError, noisify_main

            try:
                return noisify_main(rest)
            except NoisifyError as exc:
                raise CommandError(str(exc)) from None
        if command in ("refine", "demo"):
            return _dispatch_refine(command, rest)
        if command == "process":
            from .process_cli import process_main

            return int(process_main(rest) or 0)
        raise CommandError(
            f"unknown command {command!r} (choose from simulate, nonbragg, noisify, refine, process, demo)"
        )
    except CommandError as exc:
        return _fail(str(exc))


def _fail(message: str) -> int:
    print(f"braggsim: error: {message}", file=sys.stderr)
    return 2


# ---------------------------------------------------------------- refine / demo
def _dispatch_refine(command: str, argv: list) -> int:
    import importlib

    try:
        refine_cli = importlib.import_module("braggsim.refine_cli")
    except ModuleNotFoundError as exc:
        if exc.name != "braggsim.refine_cli":
            raise  # a dependency of refine_cli is missing: show the real cause
        if any(a in ("-h", "--help") for a in argv):
            print(REFINE_HELP_FALLBACK.format(name=command, what=_REFINE_WHAT[command]), end="")
        raise CommandError(
            f"'braggsim {command}' is not available in this installation (braggsim.refine_cli is missing)"
        ) from None
    entry = refine_cli.refine_main if command == "refine" else refine_cli.demo_main
    return int(entry(argv) or 0)


# --------------------------------------------------------------------- simulate
def simulate_help() -> str:
    from .nanobragg_flags import help_text

    return SIMULATE_HELP_HEAD + help_text() + SIMULATE_HELP_TAIL


def simulate_main(argv: list) -> int:
    """``braggsim simulate <nanoBragg flags>``; returns the exit status."""
    if any(a in ("-h", "--help", "-help") for a in argv):
        print(simulate_help(), end="")
        return 0
    from .nanobragg_flags import parse_flags

    try:
        flags = parse_flags(argv)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    outputs = [flags.floatfile, flags.intfile, flags.noisefile, flags.pgmfile, flags.stolout, flags.dump_write]
    inputs = input_paths(argv, flags)
    check_outputs([p for p in outputs if p is not None], inputs)
    _choose_precision(flags)
    dtype, device = torch_dtype_device(flags.dtype, flags.device)

    from .simulate import auto_oversample, simulate

    crystal, detector, beam = flags.crystal, flags.detector, flags.beam
    oversample = auto_oversample(crystal, detector, beam)
    for note in flags.notes:
        print(note)
    _print_setup(flags, oversample)
    started = time.perf_counter()
    try:
        simulated = simulate(
            crystal,
            detector,
            beam,
            background=flags.background,
            dtype=dtype,
            device=device,
            progress=progress_meter() if flags.progress else None,
        )
    except ValueError as exc:  # bad input, or a request that cannot fit (with its estimate)
        raise CommandError(str(exc)) from None
    except (MemoryError, OverflowError, RuntimeError) as exc:
        # e.g. an enormous automatic oversample; report it, there is no output to clean up
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(
            f"braggsim: error: simulation failed ({oversample}x{oversample} oversample): {first_line}", file=sys.stderr
        )
        return 1
    image = simulated.detach().cpu().numpy()
    elapsed = time.perf_counter() - started
    stats = image_statistics(image)
    if stats["non_finite"]:
        raise CommandError(
            f"the simulation gave {stats['non_finite']} non-finite pixels of {image.size} "
            f"({flags.dtype} overflowed or underflowed: check the cell, -mat, -fluence and -N, "
            f"or try -dtype float64); nothing was written"
        )
    max_i = print_summary(stats, detector, elapsed)
    if flags.printout:
        from .outputs import printout_lines

        for line in printout_lines(image, crystal, detector, beam, flags.printout_pixel, oversample):
            print(line)
    write_outputs(flags, image, max_i, noise_image(image, flags), inputs)
    return 0


def noise_image(image, flags):
    """nanoBragg's -noisefile counts for the float image, or None when not asked for."""
    if flags.noisefile is None:
        return None
    from .noise import nanobragg_noise

    result = nanobragg_noise(image, seed=flags.seed, adc_offset_adu=flags.adc_offset, roi=flags.detector.roi)
    print(f"noise seed: {result.seed}{'' if flags.seed is not None else ' (from the time)'}")
    print(f"{result.photons:.0f} photons on noise image ({result.overloads} overloads)")
    return result.counts


LARGE_CRYSTAL_CELLS = 20


def _choose_precision(flags) -> None:
    """float64 for crystals over 20 cells a side unless -dtype says otherwise.

    float32 rounding of the fractional Miller index is magnified N times by sin(N pi h):
    at 50 cells it already costs 1.5e-4 of the total (nanoBragg computes in double)."""
    from ._validate import as_number

    cells = max(as_number(n) for n in flags.crystal.N_cells)
    if not flags.dtype_given and cells > LARGE_CRYSTAL_CELLS:
        flags.dtype = "float64"
        print(f"float64 arithmetic: the crystal is {cells:g} cells along an edge (give -dtype float32 to override)")


def progress_meter():
    """A callback printing nanoBragg-style 'N% done' lines, at most one per 5 %."""
    shown = [-1]

    def report(fraction: float) -> None:
        percent = int(fraction * 100)
        if percent // 5 > shown[0] // 5 or percent == 100:
            shown[0] = percent
            print(f"{percent}% done", flush=True)

    return report


# flags whose value is a file the run reads: never an output
INPUT_FLAGS = ("-hkl", "-mat", "-sourcefile", "-stol", "-4stol", "-Q", "-img", "-mask")


def input_paths(argv: list, flags=None) -> list:
    """Every file named after an input flag (all occurrences, whichever one is used), and a
    -dump that is read rather than written."""
    inputs = [argv[i + 1] for i, flag in enumerate(argv[:-1]) if flag in INPUT_FLAGS]
    if flags is not None and getattr(flags, "dump_write", None) is None:
        inputs += [argv[i + 1] for i, flag in enumerate(argv[:-1]) if flag == "-dump"]
    return inputs


def check_outputs(paths: list, inputs: list | tuple = ()) -> None:
    """Fail before simulating when an output cannot or must not be written: a missing
    directory, a directory, a read-only file, an input file, or two outputs the same."""
    from .io import OutputPathError, check_output_path

    try:
        reals = [check_output_path(path, inputs=inputs) for path in paths]
    except OutputPathError as exc:
        raise CommandError(str(exc)) from None
    if len(set(reals)) < len(reals):
        raise CommandError("two outputs name the same file")


def torch_dtype_device(dtype_name: str, device_name: str):
    import torch

    from ._validate import resolve_device

    dtype = {"float32": torch.float32, "float64": torch.float64}[dtype_name]
    try:
        return dtype, resolve_device(device_name)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _print_setup(flags, oversample: int) -> None:
    from ._validate import as_number

    crystal, detector, beam = flags.crystal, flags.detector, flags.beam
    how = "user-specified" if detector.oversample is not None else "auto-selected"
    print(f"{how} {oversample}-fold oversampling")
    n_cells = "x".join(f"{as_number(n):g}" for n in crystal.N_cells)
    print(f"{crystal.shape} xtal: {n_cells} cells")
    print(f"wavelength={as_number(beam.wavelength_A):g} A  Kahn polarization factor: {as_number(beam.polarization):f}")
    print(f"incident fluence: {as_number(beam.fluence):g} photons/m^2")
    print(
        f"distance={as_number(detector.distance_mm):g} mm  pixel={as_number(detector.pixel_size_mm):g} mm "
        f"({detector.fpixels}x{detector.spixels} pixels, {detector.convention} convention)"
    )
    if detector.has_sensor:
        print(
            f"sensor {as_number(detector.sensor_thickness_um):g} um in {detector.n_layers} layers, attenuation length "
            f"{as_number(detector.sensor_attenuation_um or detector.sensor_thickness_um):g} um"
        )
    print(f"{beam.n_sources} sources")
    print(f"{crystal.n_domains} mosaic domains over mosaic spread of {as_number(crystal.mosaic_spread_deg):g} degrees")
    phi0 = as_number(crystal.phi_start_deg)
    print(f"{crystal.n_phi} phi steps from {phi0:g} to {phi0 + as_number(crystal.osc_deg):g} degrees")
    if flags.background is not None:
        import torch

        molecules = float(flags.background.molecules(torch.float64, "cpu"))
        print(f"amorphous background: {molecules:g} molecules of {flags.background.table.source}")
    print(f"{oversample}x{oversample} pixel oversample steps  ({flags.dtype} on {flags.device})")
    from ._resources import format_bytes, format_seconds, simulation_estimate

    itemsize = 4 if flags.dtype == "float32" else 8
    samples = beam.n_sources * detector.n_layers
    estimate = simulation_estimate(crystal, detector, oversample, itemsize, crystal.shape == "square", samples)
    print(
        f"estimated: {estimate['evaluations']:.3g} pixel evaluations, at least "
        f"{format_seconds(estimate['seconds'])} and about {format_bytes(estimate['memory_bytes'])}"
    )


def image_statistics(image, block_pixels: int = 1 << 22) -> dict:
    """max (and where), sum, mean, rms, rmsd and the count of non-finite pixels of a
    (slow, fast) array, in float64, streaming through row blocks: a 16384^2 float32 image
    needs no 2 GiB float64 copy (two passes, so rmsd is as exact as numpy's std)."""
    import numpy as np

    rows = max(1, block_pixels // max(1, image.shape[1]))
    blocks = [slice(start, start + rows) for start in range(0, image.shape[0], rows)]
    total, squares, non_finite, max_i, where = 0.0, 0.0, 0, -np.inf, (0, 0)
    # pixels near float64's limit square to inf: the summary then says inf, without a
    # RuntimeWarning on stderr before the command's own one-line verdict
    with np.errstate(over="ignore", invalid="ignore"):
        for block in blocks:
            values = np.asarray(image[block], dtype=np.float64)
            non_finite += int(values.size - np.count_nonzero(np.isfinite(values)))
            total += float(values.sum())
            squares += float(np.square(values).sum())
            index = int(np.argmax(values))
            if values.flat[index] > max_i:
                max_i = float(values.flat[index])
                row, column = divmod(index, image.shape[1])
                where = (block.start + row, column)
        count = image.size
        mean = total / count
        deviations = sum(float(np.square(np.asarray(image[b], dtype=np.float64) - mean).sum()) for b in blocks)
    return {
        "max": max_i,
        "max_slow_fast": where,
        "sum": total,
        "mean": mean,
        "rms": float(np.sqrt(squares / count)),
        "rmsd": float(np.sqrt(deviations / count)),
        "non_finite": non_finite,
    }


def print_summary(stats: dict, detector, elapsed_s: float) -> float:
    from ._validate import as_number

    slow, fast = stats["max_slow_fast"]
    max_i = stats["max"]
    pixel_m = as_number(detector.pixel_size_mm) * 1e-3
    print(f"simulated in {elapsed_s:.3f} s")
    print(
        f"max_I = {max_i:g}  at {(fast + 0.5) * pixel_m:g} {(slow + 0.5) * pixel_m:g} (pixel slow={slow} fast={fast})"
    )
    print(f"mean= {stats['mean']:g} rms= {stats['rms']:g} rmsd= {stats['rmsd']:g}")
    print(f"sum= {stats['sum']:g}")
    return max_i


def write_outputs(flags, image, max_i: float, noisy=None, inputs: list | tuple = ()) -> None:
    """Write every output completely under a temporary name, then rename them all
    (:func:`braggsim.io.atomic_group`: modes kept, read-only files and inputs refused)."""
    files = _output_files(flags, image, max_i, noisy)
    if not files:
        return
    from .io import atomic_group

    try:
        with atomic_group([path for path, _, _ in files], inputs=inputs) as temporary:
            for path, write, _ in files:
                write(temporary[path])
    except (OSError, ValueError) as exc:
        raise CommandError(f"writing output failed: {exc}") from None
    for final, _, what in files:
        print(f"wrote {final} ({what})")


def _output_files(flags, image, max_i: float, noisy=None) -> list:
    """[(path, write(temporary_path), description)] of every output asked for."""
    files = []
    if flags.floatfile is not None:
        _check_float32_range(image, f"-floatfile {flags.floatfile}")
        write_float, _ = _writers()
        files.append(
            (
                flags.floatfile,
                lambda path: write_float(path, image),
                f"float32, {image.shape[0]}x{image.shape[1]}, slow axis first",
            )
        )
    scale = flags.intfile_scale
    if scale is None:
        scale = 55000.0 / max_i if max_i > 0 else 1.0
    if flags.intfile is not None:
        _, write_smv = _writers()
        files.append(
            (
                flags.intfile,
                lambda path: write_smv(
                    path,
                    image,
                    detector=flags.detector,
                    beam=flags.beam,
                    scale=scale,
                    adc_offset=flags.adc_offset,
                    header_extra=rotation_header(flags.crystal),
                ),
                f"SMV, scale {scale:g}, ADC offset {flags.adc_offset:g}",
            )
        )
    if noisy is not None and flags.noisefile is not None:
        _, write_smv = _writers()
        # the counts already hold the ADC offset: scale 1 writes them unchanged
        files.append(
            (
                flags.noisefile,
                lambda path: write_smv(
                    path,
                    noisy.astype("float64"),
                    detector=flags.detector,
                    beam=flags.beam,
                    scale=1.0,
                    header_extra=rotation_header(flags.crystal),
                ),
                "SMV noise image",
            )
        )
    if flags.pgmfile is not None:
        from .outputs import pgm_bytes, pgm_scale

        pgm = flags.pgm_scale if flags.pgm_scale is not None else pgm_scale(image, flags.detector, scale)
        files.append(
            (
                flags.pgmfile,
                lambda path: Path(path).write_bytes(pgm_bytes(image, flags.detector, pgm)),
                f"PGM, scale {pgm:g}",
            )
        )
    if flags.stolout is not None:
        from .outputs import stol_profile

        text = stol_profile(image, flags.detector, flags.beam)
        files.append(
            (flags.stolout, lambda path: Path(path).write_text(text), "mean intensity against sin(theta)/lambda")
        )
    if flags.dump_write is not None:
        from ._validate import as_number
        from .structure_factors import dump_bytes

        data = dump_bytes(flags.crystal.hkl, as_number(flags.crystal.default_F))
        files.append((flags.dump_write, lambda path: Path(path).write_bytes(data), "nanoBragg F dump"))
    return files


def _check_float32_range(image, what: str, block_pixels: int = 1 << 22) -> None:
    """CommandError when a float64 image holds values float32 cannot (they would be
    written as inf): nonbragg computes in float64, and so does ``simulate -dtype float64``."""
    import numpy as np

    if image.dtype == np.float32:
        return
    largest = float(np.finfo(np.float32).max)
    rows = max(1, block_pixels // max(1, image.shape[1]))
    for start in range(0, image.shape[0], rows):
        peak = float(np.abs(image[start : start + rows]).max(initial=0.0))
        if peak > largest:
            raise CommandError(
                f"{what}: a pixel of {peak:.3g} does not fit float32 (largest {largest:.3g}); "
                "lower -fluence, -flux or the sample's size or density; nothing was written"
            )


def rotation_header(crystal) -> dict:
    """PHI / OSC_START / OSC_RANGE of the exposure, as nanoBragg writes them."""
    from ._validate import as_number

    phi0 = as_number(crystal.phi_start_deg)
    return {"PHI": phi0, "OSC_START": phi0, "OSC_RANGE": as_number(crystal.osc_deg)}


def _writers():
    """braggsim.io's writers, imported only when a file is to be written."""
    try:
        from .io import write_float, write_smv
    except ImportError as exc:
        raise CommandError(f"the image writers (braggsim.io) are not available: {exc}") from None
    return write_float, write_smv


if __name__ == "__main__":
    sys.exit(main())
