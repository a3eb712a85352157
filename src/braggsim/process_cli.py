"""``braggsim process FRAME... --cell a b c al be ga --space-group SG --out DIR``."""

from __future__ import annotations

import argparse
import math
import os
import sys

PROCESS_DESCRIPTION = """\
Process real stills: find spots (DIALS' dispersion threshold), index with
the known cell and space group (no starting orientation), refine on the spot positions
(DIALS' stills predictor), then against the pixels around the spots (background plane and a
free intensity per reflection, Poisson likelihood).  For each frame DIR gets <stem>.json
(spots, indexed, RMSD, refined parameters with standard errors, times) and, when indexed,
<stem>.expt (a DIALS ExperimentList); DIR/summary.csv gets one row per frame (frame, status
indexed / no-lattice / failed, n_spots, n_indexed, rmsd_px, cell, mosaic_deg, time_s).
A frame that cannot be processed is 'failed' with its reason and the others go on; each
failed frame is one line 'braggsim: error: FRAME: failed (reason)' on stderr, with --quiet
too.  A FRAME file that does not exist, a pattern or folder that names no frame, and a
--mask that cannot be read, are bad arguments, refused before any frame is processed.

Many frames: FRAME may be a file, a folder (its frame files, in natural order), a quoted
glob pattern ('grid/*.cbf.bz2') or a multi-image HDF5/NeXus file (an Eiger master: one
frame per image, <stem>_NNNNN from index 0).  Each frame is one Dask task (--scheduler);
results are written as frames finish (summary.csv rewritten atomically about once a second
and at the end, rows in natural frame order, 'frame' the absolute path).  A rerun skips
frames already in DIR unless --force, and refuses a DIR made with other options (recorded
in DIR/options.json).  Ctrl-C stops cleanly and keeps what is done.
Exit status: 0 when every frame was processed (indexed or no-lattice), 1 if any failed
(or the frames could not run on the cluster), 2 for bad arguments, 130 after Ctrl-C.
"""

SCHEDULERS = """schedulers:
  local            a LocalCluster on this machine: --workers processes (default one per
                   core, at most one per frame), one thread each; a single frame
                   without --workers runs in this process
  none             in this process, one frame after another
  tcp://HOST:PORT  an existing Dask scheduler (the scheduler and workers need braggsim
                   installed and the frame paths readable); see docs/scaling.md for SLURM
Results do not depend on the scheduler: every frame runs with one torch thread and RNGs
seeded from its name.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, as every braggsim command
        print(f"braggsim: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="braggsim process",
        description=PROCESS_DESCRIPTION,
        epilog=SCHEDULERS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "frames",
        nargs="+",
        metavar="FRAME",
        help="still images (CBF, SMV, EDF, TIFF, NeXus; .gz/.bz2 ok), folders, patterns or Eiger masters",
    )
    parser.add_argument(
        "--cell",
        nargs=6,
        type=float,
        required=True,
        metavar=("A", "B", "C", "AL", "BE", "GA"),
        help="known unit cell (Angstrom, degrees)",
    )
    # duplicates: argparse declarations, alike in shape only
    parser.add_argument(
        "--space-group",
        required=True,
        metavar="SG",
        help="space group: name ('P 41 21 2', 'P41212'), number or Hall symbol",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    parser.add_argument("--no-pixel-refine", action="store_true", help="stop after the refinement on spot positions")
    parser.add_argument(
        "--beamstop",
        default=None,
        metavar="auto|RADIUS_PX",
        help="mask the beamstop: 'auto' or a radius in pixels (default: none)",
    )
    parser.add_argument("--mask", default=None, metavar="FILE", help="user mask image (nonzero = trusted)")
    parser.add_argument(
        "--gain", type=float, default=1.0, help="detector gain, ADU per photon (default 1: a Pilatus counts photons)"
    )
    parser.add_argument(
        "--sigma-strong", type=float, default=3.0, help="spot finder: strong-pixel threshold in sigmas (default 3)"
    )
    parser.add_argument(
        "--sigma-background", type=float, default=6.0, help="spot finder: dispersion threshold in sigmas (default 6)"
    )
    parser.add_argument("--min-spot-size", type=int, default=3, help="spot finder: smallest spot in pixels (default 3)")
    parser.add_argument(
        "--scheduler", default="local", metavar="local|none|ADDRESS", help="where frames run (default local)"
    )
    parser.add_argument(
        "--workers", type=int, metavar="N", help="LocalCluster worker processes (default: one per core)"
    )
    parser.add_argument("--force", action="store_true", help="reprocess frames already done in DIR")
    parser.add_argument(
        "--max-in-flight", type=int, metavar="N", help="tasks submitted at a time (default: one per worker thread)"
    )
    parser.add_argument("--quiet", action="store_true", help="no line per frame and no progress display")
    return parser


def process_main(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .process import ProcessOptions
    from .spotfind import SpotFinderOptions

    beamstop = args.beamstop
    if beamstop is not None and beamstop != "auto":
        try:
            beamstop = float(beamstop)
        except ValueError:
            parser.error(f"--beamstop must be 'auto' or a radius in pixels, got {args.beamstop!r}")
        if not (math.isfinite(beamstop) and beamstop >= 0):
            parser.error(f"--beamstop must be 'auto' or a radius >= 0 in pixels, got {args.beamstop!r}")
    if not (math.isfinite(args.gain) and args.gain > 0):
        parser.error(f"--gain must be > 0 ADU per photon, got {args.gain!r}")
    try:
        spotfinder = SpotFinderOptions(
            gain=args.gain,
            sigma_strong=args.sigma_strong,
            sigma_background=args.sigma_background,
            min_spot_size=args.min_spot_size,
        )
        options = ProcessOptions(
            cell=tuple(args.cell),
            space_group=args.space_group,
            spotfinder=spotfinder,
            beamstop=beamstop,
            mask=args.mask,
            refine_pixels=not args.no_pixel_refine,
            pixel_refine={"gain": args.gain},
        )
    except ValueError as exc:
        parser.error(str(exc))
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    if args.workers is not None and args.scheduler != "local":
        parser.error(f"--workers applies to --scheduler local, not {args.scheduler!r}")
    if args.max_in_flight is not None and args.max_in_flight < 1:
        parser.error(f"--max-in-flight must be >= 1, got {args.max_in_flight}")
    if args.scheduler not in ("local", "none") and "://" not in args.scheduler:
        parser.error(f"--scheduler {args.scheduler!r} is not local, none or an address like tcp://host:port")

    from .batch import BatchError, ProgressPrinter, expand_frames, run_batch
    from .batch.progress import format_duration
    from .batch.store import OutputFolderError

    # the files after the options: a bad option is reported whatever the files are
    from .io import read_frame
    from .io.errors import check_readable_file

    for frame in args.frames:
        if os.path.isdir(frame) or (not os.path.exists(frame) and any(c in frame for c in "*?[")):
            continue  # a folder or a pattern: expand_frames says when it names no frame
        try:
            check_readable_file(frame)
        except OSError as exc:
            parser.error(f"FRAME {frame}: {exc.strerror or exc}")
    if args.mask is not None:
        try:
            read_frame(args.mask)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            parser.error(f"--mask {args.mask}: {reason}")
    try:
        refs = expand_frames(args.frames)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))

    def report(result) -> str | None:
        if result.status == "failed":
            return None  # on stderr, by fail_line below
        if result.status == "indexed":
            a, b, c, al, be, ga = result.cell
            mosaic = f"  mosaic {result.mosaic_deg:.3f} deg" if result.mosaic_deg is not None else ""
            return (
                f"{result.frame}: indexed {result.n_indexed}/{result.n_spots} spots "
                f"({result.n_indexed / max(result.n_spots, 1):.0%}), RMSD {result.rmsd_px:.2f} px, "
                f"cell {a:.2f} {b:.2f} {c:.2f} {al:.1f} {be:.1f} {ga:.1f}{mosaic}  ({result.time_s:.1f} s)"
            )
        return f"{result.frame}: {result.status} ({result.reason})  ({result.time_s:.1f} s)"

    printer = None if args.quiet else ProgressPrinter(frame_line=report, out=sys.stdout)

    def on_progress(progress) -> None:
        result = progress.result
        if result is not None and result.status == "failed":
            line = f"braggsim: error: {result.frame}: failed ({result.reason})"
            if printer is not None:
                printer._print(line)  # on stderr, above the progress display
            else:
                print(line, file=sys.stderr, flush=True)
        if printer is not None:
            printer(progress)

    try:
        final = run_batch(
            refs,
            options,
            args.out,
            scheduler=args.scheduler,
            workers=args.workers,
            force=args.force,
            max_in_flight=args.max_in_flight,
            on_progress=on_progress,
        )
    except OutputFolderError as exc:
        parser.error(str(exc))
    except BatchError as exc:
        print(f"braggsim: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the output folder filled up or went away mid-run
        print(f"braggsim: error: writing the results in {args.out} failed: {exc}", file=sys.stderr)
        return 1
    counts = {status: final.counts.get(status, 0) for status in ("indexed", "no-lattice", "failed")}
    before = f", {final.skipped} of them done before" if final.skipped else ""
    rate = f", {final.frames_per_s:.2f} frames/s" if final.done else ""
    stopped = " (interrupted: the others were not processed)" if final.state == "interrupted" else ""
    print(
        f"{final.skipped + final.done} frames: {counts['indexed']} indexed, {counts['no-lattice']} no-lattice, "
        f"{counts['failed']} failed{stopped}; {final.done} processed in {format_duration(final.elapsed_s)}"
        f"{rate}{before}; wrote {args.out}/summary.csv"
    )
    if final.state == "interrupted":
        return 130
    return 1 if counts["failed"] else 0
