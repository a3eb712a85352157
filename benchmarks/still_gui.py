"""The Real still dock on a whole thaumatin still, driven as a user drives it: the wall
time of each step and the longest event-loop stall while it runs.

    xvfb-run -a .venv/bin/python benchmarks/still_gui.py [--frame PATH] [--repeats 3]

Steps: open the frame with napari's reader (File > Open), then in the dock "Find spots",
"Index" (P 41 21 2, 57.8 57.8 150 90 90 90), "Refine" (20 iterations, 150 reflections,
the dock's defaults) and "Save .expt".  A step's time runs from the button's click to the
dock being idle with its layers on screen.  A stall is the longest gap between two ticks
of a 20 ms QTimer (benchmarks/gui_checks.py's meter), so 20 ms means none.  Opening the
frame happens on the GUI thread (napari's reader does), so its stall is the read itself.

Each repeat uses a fresh viewer; the figures printed are medians over the repeats, with
the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_API", "pyqt6")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gui_checks import PLUGIN, StallMeter, _viewer, _wait  # noqa: E402

FRAME_NAME = Path("data") / "thaumatin_grid" / "thau_3_2_0013.cbf.bz2"
THAUMATIN = {"a": "57.8", "b": "57.8", "c": "150", "alpha": "90", "beta": "90", "gamma": "90"}


def default_frame() -> Path:
    for shared in (HERE.parents[1] / "shared", HERE.parents[2] / "shared", Path("/work/shared")):
        if (shared / FRAME_NAME).is_file():
            return shared / FRAME_NAME
    return HERE.parents[1] / "shared" / FRAME_NAME


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"


def one_run(frame: Path, out_dir: Path) -> dict:
    viewer = _viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Real still")
    _wait(lambda: getattr(widget, "ready", True), 60)
    times, stalls, notes = {}, {}, {}

    def step(name, action, done):
        started = time.perf_counter()
        with StallMeter() as meter:
            action()
            if not _wait(done, 300):
                raise RuntimeError(f"{name} did not finish in 300 s")
        times[name] = time.perf_counter() - started
        stalls[name] = meter.longest_ms

    name = frame.name[: -len(".bz2")] if frame.name.endswith(".bz2") else frame.name
    step("open", lambda: viewer.open(str(frame), plugin=PLUGIN), lambda: name in viewer.layers)
    _wait(lambda: widget.observed.value is viewer.layers[name], 10)
    for key, value in THAUMATIN.items():
        widget.cell_fields[key].value = value
    widget.space_group.value = "P 41 21 2"
    step("find spots", widget.find_button.clicked, lambda: not widget.busy)
    notes["spots"] = widget.found.count
    step("index", widget.index_button.clicked, lambda: not widget.busy)
    indexed = widget.indexed
    if widget.model is None:
        raise RuntimeError(f"not indexed: {widget.index_status.value}")
    notes["indexed"] = f"{indexed.n_indexed} ({100 * indexed.n_indexed / indexed.n_spots:.0f} %)"
    notes["rmsd_px"] = f"{indexed.rmsd_px:.2f}"
    step("refine", widget.refine_button.clicked, lambda: not widget.busy)
    result = widget.refined.refinement
    notes["refine"] = (
        f"{len(widget.history) - 1} iterations, {result.iterations} evaluations, mosaic {result.mosaic_deg:.3f} deg, "
        f"accepted {result.accepted}"
    )
    path = out_dir / "thau.expt"
    step("save", lambda: widget.save(path), lambda: path.is_file())
    viewer.close()
    return {"times": times, "stalls": stalls, "notes": notes}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frame", type=Path, default=default_frame(), help="a thaumatin still (CBF)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if not args.frame.is_file():
        parser.error(f"no frame at {args.frame}; pass --frame PATH")
    import napari
    from napari._qt.qt_event_loop import get_qapp

    get_qapp()
    import qtpy

    print(f"napari {napari.__version__}, {qtpy.API_NAME}, {args.frame.name}, load average {_load()}")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            run = one_run(args.frame, Path(tmp))
            runs.append(run)
            print(
                f"run {repeat + 1}: "
                + ", ".join(f"{k} {run['times'][k]:.2f} s (stall {run['stalls'][k]:.0f} ms)" for k in run["times"])
            )
            print("       " + ", ".join(f"{k} {v}" for k, v in run["notes"].items()), flush=True)
    print(f"medians over {len(runs)} runs (load average now {_load()}):")
    print("| step | wall s | longest stall ms |")
    print("|---|---|---|")
    for key in runs[0]["times"]:
        wall = statistics.median(r["times"][key] for r in runs)
        stall = statistics.median(r["stalls"][key] for r in runs)
        print(f"| {key} | {wall:.2f} | {stall:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
