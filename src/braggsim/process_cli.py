"""``braggsim process FRAME... --cell a b c al be ga --space-group SG --out DIR``."""

from __future__ import annotations

import argparse
import math
import sys

PROCESS_DESCRIPTION = """\
Process real stills one after another: find spots (DIALS' dispersion threshold), index with
the known cell and space group (no starting orientation), refine on the spot positions
(DIALS' stills predictor), then against the pixels around the spots (background plane and a
free intensity per reflection, Poisson likelihood).  For each frame DIR gets <stem>.json
(spots, indexed, RMSD, refined parameters with standard errors, times) and, when indexed,
<stem>.expt (a DIALS ExperimentList); DIR/summary.csv gets one row per frame (frame, status
indexed / no-lattice / failed, n_spots, n_indexed, rmsd_px, cell, mosaic_deg, time_s).
A frame that cannot be processed is 'failed' with its reason and the others go on; each
failed frame is one line 'braggsim: error: FRAME: failed (reason)' on stderr, with --quiet
too.  A FRAME that does not exist or is a folder, and a --mask that cannot be read, are bad
arguments, refused before any frame is processed.
Exit status: 0 when every frame was processed (indexed or no-lattice), 1 if any failed,
2 for bad arguments.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, as every braggsim command
        print(f"braggsim: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="braggsim process", description=PROCESS_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "frames", nargs="+", metavar="FRAME", help="still images (CBF, SMV, EDF, TIFF, NeXus; .gz/.bz2 ok)"
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
    parser.add_argument("--quiet", action="store_true", help="no line per frame")
    return parser


def process_main(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .process import ProcessOptions, process_frames
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
    # the files after the options: a bad option is reported whatever the files are
    from .io import read_frame
    from .io.errors import check_readable_file

    for frame in args.frames:
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
        import os

        os.makedirs(args.out, exist_ok=True)
    except OSError as exc:
        parser.error(f"cannot create --out {args.out!r}: {exc}")

    def report(result):
        if args.quiet and result.status != "failed":
            return
        if result.status == "indexed":
            a, b, c, al, be, ga = result.cell
            mosaic = f"  mosaic {result.mosaic_deg:.3f} deg" if result.mosaic_deg is not None else ""
            print(
                f"{result.frame}: indexed {result.n_indexed}/{result.n_spots} spots "
                f"({result.n_indexed / max(result.n_spots, 1):.0%}), RMSD {result.rmsd_px:.2f} px, "
                f"cell {a:.2f} {b:.2f} {c:.2f} {al:.1f} {be:.1f} {ga:.1f}{mosaic}  ({result.time_s:.1f} s)",
                flush=True,
            )
        elif result.status == "failed":
            print(f"braggsim: error: {result.frame}: failed ({result.reason})", file=sys.stderr, flush=True)
        else:
            print(f"{result.frame}: {result.status} ({result.reason})  ({result.time_s:.1f} s)", flush=True)

    results = process_frames(list(args.frames), options, args.out, progress=report)
    counts = {status: sum(r.status == status for r in results) for status in ("indexed", "no-lattice", "failed")}
    if not args.quiet:
        print(
            f"{len(results)} frames: {counts['indexed']} indexed, {counts['no-lattice']} no-lattice, {counts['failed']} failed; wrote {args.out}/summary.csv"
        )
    return 1 if counts["failed"] else 0
