"""``braggsim process``: the per-frame pipeline over many frames, on Dask or in-process."""

from __future__ import annotations

import argparse
import os
import sys

DESCRIPTION = """\
Process frames: for each, DIR/<frame>.json (and DIR/<frame>.expt when indexed) and one row
of DIR/summary.csv (frame, status, reason, n_spots, n_indexed, rmsd_px, cell, mosaic_deg,
time_s).  Results are written as frames finish; summary.csv is rewritten atomically about
once a second and at the end.  A rerun skips frames already in DIR unless --force, and
refuses a DIR made with different options.  A frame that cannot be processed is 'failed'
with its reason and the others go on.  Ctrl-C stops cleanly, keeping what is done
(exit status 130).

FRAME is a file, a folder (its frame files, in natural order), a quoted glob pattern
('grid/*.cbf.bz2'), or a multi-image HDF5/NeXus file (an Eiger master: one frame per image,
named <stem>_NNNNNN from index 0).
"""

EPILOG = """\
schedulers:
  local          a LocalCluster on this machine: --workers processes (default one per
                 core, at most one per frame), one thread each
  none           in this process, one frame after another
  tcp://HOST:PORT  an existing Dask scheduler (workers need braggsim installed and the
                 frame paths readable); see docs/scaling.md for SLURM
Results do not depend on the scheduler: each frame runs with one torch thread and RNGs
seeded from its name.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        from ..cli import CommandError

        raise CommandError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="braggsim process",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("frames", nargs="+", metavar="FRAME", help="frame files, folders, patterns or masters")
    parser.add_argument(
        "--cell", nargs=6, type=float, metavar=("A", "B", "C", "AL", "BE", "GA"), help="unit cell (Angstrom, degrees)"
    )
    parser.add_argument("--space-group", metavar="SG", help="space group symbol, e.g. P43212")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
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
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    return parser


def process_main(argv) -> int:
    """``braggsim process ...``; returns the exit status."""
    from ..cli import CommandError

    args = build_parser().parse_args(argv)
    if args.workers is not None and args.workers < 1:
        raise CommandError(f"--workers must be >= 1, got {args.workers}")
    if args.workers is not None and args.scheduler != "local":
        raise CommandError(f"--workers applies to --scheduler local, not {args.scheduler!r}")
    if args.max_in_flight is not None and args.max_in_flight < 1:
        raise CommandError(f"--max-in-flight must be >= 1, got {args.max_in_flight}")
    if args.scheduler not in ("local", "none") and "://" not in args.scheduler:
        raise CommandError(f"--scheduler {args.scheduler!r} is not local, none or an address like tcp://host:port")

    from .pipeline import ProcessOptions
    from .progress import ProgressPrinter, format_duration
    from .runner import BatchError, run_batch
    from .sources import expand_frames
    from .store import OutputFolderError

    try:
        options = ProcessOptions(cell=tuple(args.cell) if args.cell else None, space_group=args.space_group)
    except (TypeError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    try:
        refs = expand_frames(args.frames)
    except (OSError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    printer = None if args.quiet else ProgressPrinter()
    try:
        final = run_batch(
            refs,
            options,
            args.out,
            scheduler=args.scheduler,
            workers=args.workers,
            force=args.force,
            max_in_flight=args.max_in_flight,
            on_progress=printer,
        )
    except OutputFolderError as exc:
        raise CommandError(str(exc)) from None
    except BatchError as exc:
        print(f"braggsim: error: {exc}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{status} {n}" for status, n in sorted(final.counts.items()) if n) or "nothing"
    verb = {"finished": "processed", "interrupted": "interrupted after", "cancelled": "cancelled after"}[final.state]
    before = f" ({final.skipped} were done before)" if final.skipped else ""
    rate = f", {final.frames_per_s:.2f} frames/s" if final.done else ""
    print(f"{verb} {final.done} of {final.total} frames{before} in {format_duration(final.elapsed_s)}{rate}: {counts}")
    print(f"results in {os.path.join(args.out, 'summary.csv')}")
    return 130 if final.state == "interrupted" else 0
