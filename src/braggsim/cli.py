"""The ``braggsim`` command: ``simulate`` | ``noisify`` | ``refine`` | ``process`` | ``demo``.

``braggsim simulate`` is a drop-in for nanoBragg: it takes nanoBragg's flags (see
``braggsim simulate --help``), prints a short nanoBragg-like summary and writes
``-floatfile`` (raw float32), ``-intfile`` and ``-noisefile`` (SMV).  ``noisify`` is
nanoBragg's companion program (:mod:`braggsim.noisify_cli`).  ``refine`` and ``demo``
live in :mod:`braggsim.refine_cli`, ``process`` in :mod:`braggsim.process_cli`; each is
imported only when asked for.

Errors are one line on stderr, ``braggsim: error: ...``, with exit status 2.  Output
files are written to temporary names and renamed only once every file is complete, so a
failing run leaves nothing half-written behind; an output that is an input (-hkl, -mat)
or a read-only file is refused before anything is simulated, an existing output keeps its
permissions, and a simulation whose image is not finite writes nothing.  A request whose
memory or time cannot fit is refused up front with the estimate (see braggsim._resources).
"""

from __future__ import annotations

import sys
import time

USAGE = """\
usage: braggsim <command> [options]

commands:
  simulate   simulate a diffraction image from nanoBragg's command-line flags
  noisify    add detector noise to a photons/pixel image, as nanoBragg's noisify
  refine     refine a model against a measured frame
  process    real stills: find spots, index with a known cell, refine; .expt + summary.csv
  demo       simulate a known crystal, then refine a perturbed model back to it

Run 'braggsim <command> --help' for the options of a command.
"""

SIMULATE_HELP = """\
usage: braggsim simulate -cell a b c alpha beta gamma (-default_F F | -hkl FILE) [flags]

Simulate a still or rotation image as nanoBragg does, with nanoBragg's flag names and
meanings.  Lengths in Angstrom (crystal) and mm (detector), angles in degrees.  A flag
that is not listed here is an error; nothing is silently ignored.

crystal:
  -cell a b c al be ga     unit cell (Angstrom, degrees)
  -mat FILE                MOSFLM orientation matrix instead of -cell (uses -lambda)
  -misset x y z            rotations about lab x, then y, then z (degrees)
  -N n | -Na -Nb -Nc n     unit cells along each axis (default 1)
  -default_F F             structure factor for every hkl not in the -hkl table
  -hkl FILE                'h k l F' text file (no symmetry, not even Friedel)
  -interpolate | -nointerpolate
                           force tricubic F interpolation on/off (default: on if any N <= 2)
  -square_xtal | -round_xtal | -gauss_xtal | -tophat_spots
                           lattice transform (default square, i.e. sincg)
  -fudge f                 width factor for the round/gauss/tophat shapes
  -mosaic deg              mosaic spread (degrees)
  -mosaic_dom n            mosaic domains (alias -mosaic_domains; default 10 with -mosaic)
  -mosaic_seed s           seed of nanoBragg's ran1 draws (default 12345678)
  -phi deg  -osc deg  -phisteps n
                           spindle start, oscillation and steps (-osc alone: 2 steps)
  -spindle_axis x y z      spindle direction (default: the convention's)

beam:
  -lambda A | -wavelength A | -energy eV
                           wavelength (default 1 A)
  -fluence f               photons/m^2 (default 1.25932015286227e29)
  -polar K                 Kahn polarization factor (default 0, unpolarized)
  -nopolar                 no polarization factor at all

detector:
  -distance mm             sample-to-detector distance (default 100)
  -pixel mm                pixel size (default 0.1)
  -detpixels n             square detector of n x n pixels (default 1024)
  -detpixels_f|-detpixels_x n  -detpixels_s|-detpixels_y n
                           fast / slow pixel counts
  -detsize mm | -detsize_f mm | -detsize_s mm
                           detector size, when no pixel count is given
  -Xbeam mm  -Ybeam mm     beam centre in the convention's meaning
  -ORGX px  -ORGY px       XDS origin (pixels)
  -mosflm | -xds | -dials | -adxv | -denzo
                           detector convention (default mosflm)
  -pivot beam|sample       pivot for detector rotations (default: the convention's)
  -detector_rotx deg  -detector_roty deg  -detector_rotz deg
                           detector rotations about lab x, then y, then z
  -twotheta deg            two-theta swing about the convention's axis
  -oversample n            subpixels per pixel edge (default: nanoBragg's automatic rule)
  -oversample_omega  -oversample_polar
                           evaluate solid angle / polarization per subpixel
  -point_pixel             solid angle 1/R^2 instead of the pixel's solid angle

output:
  -floatfile FILE          raw float32 little-endian, slow axis first (as nanoBragg)
  -intfile FILE            SMV image (unsigned short) with a geometry header:
                           photons * scale + ADC offset, rounded
  -scale s                 -intfile scale (default 55000 / max_I)
  -noisefile FILE          SMV noise image: a Poisson draw of each pixel's photons plus the
                           ADC offset, clipped at 65535 (alias -noiseimage); pixel-identical
                           to nanoBragg's for the same -seed and float image
  -nonoise                 no noise image (cancels an earlier -noisefile, as in nanoBragg)
  -seed n                  seed of the Poisson draws (default: the time, printed)
  -adc ADU                 offset added to -intfile and -noisefile pixels (default 40)
  Outputs are written whole, then renamed into place; an existing file keeps its
  permissions.  An output that is an input (-hkl, -mat) or a read-only file is refused
  before simulating, and an image with non-finite pixels is never written.

braggsim:
  -dtype float32|float64   arithmetic precision (default float32)
  -device cpu|cuda|...     torch device (default cpu)

resources: a request whose memory or time cannot fit is refused up front with the
estimate.  BRAGGSIM_MEMORY_BUDGET (e.g. 8G) caps memory (default: what the address-space
limit, the cgroup and free memory allow); BRAGGSIM_TIME_BUDGET_S caps the estimated
compute time (default 86400).

accepted for nanoBragg compatibility, with no effect (braggsim writes no PGM and
shows no progress meter): -nopgm -noprogress

Unlike nanoBragg, braggsim writes only the files you name: nanoBragg also writes
floatimage.bin, intimage.img, image.pgm and noiseimage.img when they are not named.
For noisify's fuller detector model (readout noise, flicker, calibration error, PSF,
gain) run 'braggsim noisify' on the -floatfile.
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
        raise CommandError(f"unknown command {command!r} (choose from simulate, noisify, refine, process, demo)")
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
def simulate_main(argv: list) -> int:
    """``braggsim simulate <nanoBragg flags>``; returns the exit status."""
    if any(a in ("-h", "--help", "-help") for a in argv):
        print(SIMULATE_HELP, end="")
        return 0
    from .nanobragg_flags import parse_flags
    from .noise import nanobragg_noise_options

    try:
        flags = parse_flags(argv)
        noise_options = nanobragg_noise_options(argv)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    outputs = [p for p in (flags.floatfile, flags.intfile, noise_options.noisefile) if p is not None]
    inputs = _input_paths(argv)
    _check_outputs(outputs, inputs)
    dtype, device = _torch_dtype_device(flags.dtype, flags.device)

    from .simulate import auto_oversample, simulate

    crystal, detector, beam = flags.crystal, flags.detector, flags.beam
    oversample = auto_oversample(crystal, detector, beam)
    _print_setup(flags, oversample)
    started = time.perf_counter()
    try:
        simulated = simulate(crystal, detector, beam, dtype=dtype, device=device)
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
    max_i = _print_summary(stats, detector, elapsed)
    noisy = _noise_image(image, noise_options)
    _write_outputs(flags, image, max_i, inputs, noise_options, noisy)
    return 0


def _noise_image(image, options):
    """nanoBragg's -noisefile counts for the float image, or None when not asked for."""
    if options.noisefile is None:
        return None
    from .noise import nanobragg_noise

    result = nanobragg_noise(image, seed=options.seed, adc_offset_adu=options.adc_offset_adu)
    print(f"noise seed: {result.seed}{'' if options.seed is not None else ' (from the time)'}")
    print(f"{result.photons:.0f} photons on noise image ({result.overloads} overloads)")
    return result.counts


# flags whose value is a file the run reads: never an output
INPUT_FLAGS = ("-hkl", "-mat")


def _input_paths(argv: list) -> list:
    """Every file named after an input flag (all occurrences, whichever one is used)."""
    return [argv[i + 1] for i, flag in enumerate(argv[:-1]) if flag in INPUT_FLAGS]


def _check_outputs(paths: list, inputs: list | tuple = ()) -> None:
    """Fail before simulating when an output cannot or must not be written: a missing
    directory, a directory, a read-only file, an input file, or two outputs the same."""
    from .io._atomic import OutputPathError, check_output_path

    try:
        reals = [check_output_path(path, inputs=inputs) for path in paths]
    except OutputPathError as exc:
        raise CommandError(str(exc)) from None
    if len(set(reals)) < len(reals):
        raise CommandError("two of -floatfile, -intfile and -noisefile name the same file")


def _torch_dtype_device(dtype_name: str, device_name: str):
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
    print(
        f"distance={as_number(detector.distance_mm):g} mm  pixel={as_number(detector.pixel_size_mm):g} mm "
        f"({detector.fpixels}x{detector.spixels} pixels, {detector.convention} convention)"
    )
    print(f"{crystal.n_domains} mosaic domains over mosaic spread of {as_number(crystal.mosaic_spread_deg):g} degrees")
    phi0 = as_number(crystal.phi_start_deg)
    print(f"{crystal.n_phi} phi steps from {phi0:g} to {phi0 + as_number(crystal.osc_deg):g} degrees")
    print(f"{oversample}x{oversample} pixel oversample steps  ({flags.dtype} on {flags.device})")
    from ._resources import format_bytes, format_seconds, simulation_estimate

    itemsize = 4 if flags.dtype == "float32" else 8
    estimate = simulation_estimate(crystal, detector, oversample, itemsize, native=crystal.shape == "square")
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


def _print_summary(stats: dict, detector, elapsed_s: float) -> float:
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


def _write_outputs(flags, image, max_i: float, inputs: list | tuple = (), noise_options=None, noisy=None) -> None:
    """Write every output completely under a temporary name, then rename them all
    (:func:`braggsim.io._atomic.atomic_group`: modes kept, read-only files and inputs refused)."""
    noisefile = None if noise_options is None or noisy is None else noise_options.noisefile
    adc_offset = 0.0 if noise_options is None else noise_options.adc_offset_adu
    if flags.floatfile is None and flags.intfile is None and noisefile is None:
        return
    write_float, write_smv = _writers()
    from .io._atomic import atomic_group

    outputs = [p for p in (flags.floatfile, flags.intfile, noisefile) if p is not None]
    scale = flags.intfile_scale
    if scale is None:
        scale = 55000.0 / max_i if max_i > 0 else 1.0
    try:
        with atomic_group(outputs, inputs=inputs) as temporary:
            if flags.floatfile is not None:
                write_float(temporary[flags.floatfile], image)
            if flags.intfile is not None:
                write_smv(
                    temporary[flags.intfile],
                    image,
                    detector=flags.detector,
                    beam=flags.beam,
                    scale=scale,
                    adc_offset=adc_offset,
                    header_extra=_rotation_header(flags.crystal),
                )
            if noisefile is not None:
                # the counts already hold the ADC offset: scale 1 writes them unchanged
                write_smv(
                    temporary[noisefile],
                    noisy.astype("float64"),
                    detector=flags.detector,
                    beam=flags.beam,
                    scale=1.0,
                    header_extra=_rotation_header(flags.crystal),
                )
    except (OSError, ValueError) as exc:
        raise CommandError(f"writing output failed: {exc}") from None
    if flags.floatfile is not None:
        print(f"wrote {flags.floatfile} (float32, {image.shape[0]}x{image.shape[1]}, slow axis first)")
    if flags.intfile is not None:
        print(f"wrote {flags.intfile} (SMV, scale {scale:g}, ADC offset {adc_offset:g})")
    if noisefile is not None:
        print(f"wrote {noisefile} (SMV noise image)")


def _rotation_header(crystal) -> dict:
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
