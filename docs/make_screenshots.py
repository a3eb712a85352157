"""Screenshots for docs/user-guide.md, one per dock widget, on a thaumatin still, taken headless.

    xvfb-run -a .venv/bin/python docs/make_screenshots.py [--frame PATH]

Writes docs/images/{load_frame,simulate,simulate_scene,refine,still,batch}.png.  The frame is
thau_3_2_0003 of the thaumatin grid scan in the shared data (a Pilatus3 6M still, 2463 x
2527 pixels):

* load_frame: the frame through the Load frame widget (percentile contrast, the excluded
  pixels tinted), the Simulate widget filled with its geometry, zoomed on the beam;
* simulate: a thaumatin crystal (P4(1)2(1)2, a = b = 57.8 A, c = 150 A, an arbitrary
  orientation) simulated at that detector's geometry, with its spots, rings and beam
  centre, zoomed in far enough for the hkl labels;
* simulate_scene: a realistic thaumatin frame (512 x 512 Pilatus pixels) from the
  Simulate widget's collapsed sections, opened: beam divergence and bandwidth, a 450 um
  sensor, a water film, noisify's noise with readout noise and a PSF;
* refine: a refinement at that geometry (the 640 x 640 pixels around the beam) against
  a simulated thaumatin still of known orientation, started 0.15-0.25 deg off on each
  misset axis and with half its mosaic spread.  The real frames carry no orientation
  (indexing is still to come), so there is nothing true to refine them towards.
* still: the frame itself through the Real still dock as docs/real-data.md walks through
  it: opened with napari's reader (File > Open), Find spots, Index with P 41 21 2 and
  57.8 57.8 150 90 90 90, Refine (the dock's defaults), Save .expt (to a temporary
  folder); zoomed on the predicted circles, their hkl labels and the strong spots' crosses.
  The dock's readouts are printed for the walkthrough's numbers.
* batch: the six thaumatin stills of that folder opened as a stack in the Batch dock,
  processed in-process (results in a temporary folder), the table sorted by RMSD and the
  frame of the first row shown with its predicted spots, zoomed on the beam.

Everything goes through the widgets as a user drives them (fields, buttons), and every
image is napari's own screenshot of the window.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_API", "pyqt6")

import napari  # noqa: E402
from qtpy.QtWidgets import QApplication  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
FRAME_NAME = Path("data") / "thaumatin_grid" / "thau_3_2_0003.cbf.bz2"
PLUGIN = "napari-braggsim"
WINDOW = (1400, 860)
THAUMATIN = {
    "cell_a_A": 57.8,
    "cell_b_A": 57.8,
    "cell_c_A": 150.0,
    "cell_alpha_deg": 90.0,
    "cell_beta_deg": 90.0,
    "cell_gamma_deg": 90.0,
    "N_a": 15.0,
    "N_b": 15.0,
    "N_c": 6.0,
    "default_F": 100.0,
    "mosaic_spread_deg": 0.1,
    "mosaic_domains": 5,
    "misset_x_deg": 17.0,
    "misset_y_deg": -31.0,
    "misset_z_deg": 8.0,
    "fluence": 1e31,
}


def default_frame() -> Path:
    for shared in (ROOT.parent / "shared", ROOT.parents[1] / "shared"):
        if (shared / FRAME_NAME).is_file():
            return shared / FRAME_NAME
    return ROOT.parent / "shared" / FRAME_NAME


def _settle(seconds: float = 0.5) -> None:
    end = time.time() + seconds
    while time.time() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def _wait(widget, timeout_s: float = 900) -> None:
    end = time.time() + timeout_s
    while widget.busy and time.time() < end:
        _settle(0.1)
    if widget.busy:
        raise RuntimeError(f"{type(widget).__name__} still busy after {timeout_s} s")


def _viewer():
    from napari.settings import get_settings

    get_settings().application.gui_notification_level = "none"  # no toasts in the pictures
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(*WINDOW)
    viewer.window._qt_window.showNormal()
    _settle()
    return viewer


def _dock(viewer, name):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def _point_at(viewer, position) -> None:
    """As if the cursor rested at ``position`` (data coordinates): the status bar's d-spacing."""
    from types import SimpleNamespace

    viewer.cursor.position = tuple(position)
    for callback in viewer.mouse_move_callbacks:
        callback(viewer, SimpleNamespace(position=tuple(position)))


def _save(viewer, name: str) -> Path:
    _settle(1.0)
    path = IMAGES / f"{name}.png"
    image = viewer.screenshot(canvas_only=False, flash=False)
    from PIL import Image

    # an adaptive 256-colour palette keeps each PNG well under 300 KB
    Image.fromarray(image[..., :3]).quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"{path.relative_to(ROOT)}: {path.stat().st_size // 1024} KB", flush=True)
    return path


def _load(viewer, frame: Path):
    loader = _dock(viewer, "Load frame")
    loader.file.value = frame
    loader.load_button.clicked()
    _wait(loader)
    return loader, viewer.layers[frame.name[: -len(".bz2")]]


def _beam_px(viewer):
    return viewer.layers["beam centre"].data[0] if "beam centre" in viewer.layers else None


def load_shot(frame: Path):
    viewer = _viewer()
    _dock(viewer, "Simulate")
    _, image = _load(viewer, frame)
    viewer.layers[image.name + " mask"].visible = True  # module gaps and bad pixels, tinted
    center = image.metadata["braggsim_frame"]["beam_center_mm"]
    pixel = image.metadata["braggsim_frame"]["pixel_size_mm"]
    beam = (center[0] / pixel, center[1] / pixel)
    viewer.camera.center = beam
    viewer.camera.zoom = 1.6
    _point_at(viewer, (beam[0] - 120, beam[1] + 160))
    _save(viewer, "load_frame")
    viewer.close()


def simulate_shot(frame: Path):
    viewer = _viewer()
    simulate = _dock(viewer, "Simulate")
    _, image = _load(viewer, frame)
    image.visible = False
    viewer.layers[image.name + " mask"].visible = False
    simulate.set_values(THAUMATIN)
    simulate.run_button.clicked()
    _wait(simulate)
    layer = viewer.layers["simulated"]
    low, high = layer.contrast_limits
    layer.contrast_limits = (low, low + (high - low) * 0.5)
    beam = _beam_px(viewer)
    viewer.camera.center = (beam[0] - 260, beam[1] + 200)
    viewer.camera.zoom = 4.0  # close enough for the hkl labels
    _settle(0.5)
    _point_at(viewer, (beam[0] - 250, beam[1] + 210))
    _save(viewer, "simulate")
    viewer.close()


SCENE = {
    "fpixels": 512,
    "spixels": 512,
    "pixel_size_mm": 0.172,
    "distance_mm": 200.0,
    "wavelength_A": 0.98,
    "beam_x_mm": 44.1,
    "beam_y_mm": 44.1,
    "fluence": 1e30,
    "divergence_h_mrad": 1.0,
    "divergence_v_mrad": 1.0,
    "dispersion_pct": 0.3,
    "sensor_on": True,
    "water_um": 0.05,
    "noise_on": True,
    "noise_seed": 1,
    "readout_noise_adu": 3.0,
    "psf": "gauss",
    "psf_fwhm_um": 100.0,
}


def scene_shot(frame: Path):
    """Needs no frame: the realistic-frame sections open, their image beside them."""
    viewer = _viewer()
    simulate = _dock(viewer, "Simulate")
    while not simulate.ready:
        _settle(0.1)
    simulate.overlays.value = False
    simulate.set_values({**THAUMATIN, **SCENE})
    for title in ("Beam divergence and bandwidth", "Background (water, air)", "Noise"):
        simulate.sections[title].expanded = True
    simulate.run_button.clicked()
    _wait(simulate)
    layer = viewer.layers["simulated"]
    layer.contrast_limits = (30.0, 400.0)  # the ADC offset (40 ADU) and the water up to the spots
    viewer.camera.center = (180.0, 330.0)  # towards a corner: the water ring's rise
    viewer.camera.zoom = 1.6
    # the dock scrolled to the sections just opened
    scroll = simulate.body.native.parent().parent()
    scroll.verticalScrollBar().setValue(scroll.verticalScrollBar().maximum())
    _save(viewer, "simulate_scene")
    print(simulate.status.value, flush=True)
    viewer.close()


def refine_shot(frame: Path):
    """A simulated thaumatin still at the frame's geometry (the 640 x 640 pixels around the
    beam), refined from a start a fraction of a degree off."""
    import numpy as np
    import torch

    import braggsim
    from braggsim.io import read_frame
    from napari_braggsim._frames import layer_data
    from napari_braggsim._model import DEFAULTS, build_model, frame_metadata

    header = read_frame(frame)
    size = 640
    pixel = header.pixel_size_mm
    x_beam, y_beam = header.beam_center_mm
    # keep the beam where it is relative to the pixels cut around it
    slow0, fast0 = int(round(x_beam / pixel)) - size // 2, int(round(y_beam / pixel)) - size // 2
    truth = {
        **DEFAULTS,
        **THAUMATIN,
        "fpixels": size,
        "spixels": size,
        "pixel_size_mm": pixel,
        "distance_mm": header.distance_mm,
        "wavelength_A": header.wavelength_A,
        "beam_x_mm": x_beam - slow0 * pixel,
        "beam_y_mm": y_beam - fast0 * pixel,
    }
    with torch.no_grad():
        observed = braggsim.simulate(*build_model(truth)).numpy().astype("float32")
    start = {**truth, "misset_x_deg": 17.25, "misset_y_deg": -31.2, "misset_z_deg": 8.15, "mosaic_spread_deg": 0.05}
    metadata = {"braggsim_frame": frame_metadata(truth), "braggsim_start": start, "braggsim_truth": truth}

    viewer = _viewer()
    for data, kwargs, kind in layer_data(
        "thaumatin still (simulated)", observed, np.ones(observed.shape, bool), metadata
    ):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = _dock(viewer, "Refine")
    widget.iterations.value = 40
    widget.search_deg.value = 0.0  # the start is within the descent's reach
    widget.run_button.clicked()
    _wait(widget, timeout_s=1800)
    viewer.layers["residual"].visible = False
    beam = _beam_px(viewer)
    viewer.camera.center = (beam[0] - 70, beam[1] + 70)
    viewer.camera.zoom = 5.0  # close enough for the hkl labels
    _settle(0.5)
    _point_at(viewer, (beam[0] - 60, beam[1] + 80))
    _save(viewer, "refine")
    print(widget.errors.value, flush=True)
    viewer.close()


def still_shot(frame: Path):
    """The Real still dock on the frame: spots, index, refine, save; a zoomed overlay."""
    import tempfile

    import numpy as np

    viewer = _viewer()
    widget = _dock(viewer, "Real still")
    timings = {}
    started = time.perf_counter()
    viewer.open(str(frame), plugin=PLUGIN)  # File > Open
    timings["open"] = time.perf_counter() - started
    name = frame.name[: -len(".bz2")] if frame.name.endswith(".bz2") else frame.name
    _settle(0.5)
    assert widget.observed.value is viewer.layers[name], widget.observed.value
    for key, value in {"a": "57.8", "b": "57.8", "c": "150.0", "alpha": "90", "beta": "90", "gamma": "90"}.items():
        widget.cell_fields[key].value = value
    widget.space_group.value = "P 41 21 2"
    for step, button in (("find spots", widget.find_button), ("index", widget.index_button)):
        started = time.perf_counter()
        button.clicked()
        _wait(widget)
        timings[step] = time.perf_counter() - started
    print(widget.spots_status.value, widget.index_status.value, sep="\n", flush=True)
    if widget.model is None:
        raise RuntimeError(f"not indexed: {widget.index_status.value}")
    started = time.perf_counter()
    widget.refine_button.clicked()
    _wait(widget)
    timings["refine"] = time.perf_counter() - started
    print(widget.readout.value, widget.index_status.value, sep="\n", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name.split('.')[0]}.expt"
        started = time.perf_counter()
        widget.save(path)
        timings["save"] = time.perf_counter() - started
        print(f"saved {path.name}: {path.stat().st_size} bytes", flush=True)
    print("wall s: " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()), flush=True)

    # zoom where the spots are close enough together for a screenful, far enough from the
    # beam that the predicted circle and the observed cross can be told apart
    predicted = viewer.layers["still predictions"]
    points = np.asarray(predicted.data)
    beam = _beam_of(viewer.layers[name])
    radius = np.linalg.norm(points - beam, axis=1)
    candidates = points[(radius > 350) & (radius < 700)]
    crowd = [np.count_nonzero(np.linalg.norm(points - p, axis=1) < 70) for p in candidates]
    viewer.camera.center = tuple(candidates[int(np.argmax(crowd))])
    viewer.camera.zoom = 5.0  # close enough for the hkl labels
    viewer.layers.selection.active = viewer.layers[name]
    _settle(1.0)
    _save(viewer, "still")
    viewer.close()


def _beam_of(image):
    import numpy as np

    geometry = image.metadata["braggsim_frame"]
    return np.asarray(geometry["beam_center_mm"], dtype=float) / geometry["pixel_size_mm"]


def batch_shot(frame: Path):
    import tempfile

    viewer = _viewer()
    widget = _dock(viewer, "Batch")
    widget.out.value = Path(tempfile.mkdtemp(prefix="braggsim-batch-shot-"))
    widget.open(frame.parent)
    _wait(widget)
    widget.cell.value, widget.space_group.value, widget.scheduler.value = "57.8 57.8 150 90 90 90", "P 41 21 2", "none"
    widget.process_all()
    _wait(widget)
    from qtpy.QtCore import Qt

    widget.table.sortItems(4, Qt.SortOrder.AscendingOrder)  # RMSD, smallest first
    widget.table.selectRow(0)
    _wait(widget)
    index = widget.plot.selected
    shape = widget.stack.cache.read(widget.stack.refs[index]).shape
    viewer.scene.camera.center = (0, shape[0] / 2 + 60, shape[1] / 2 - 120)
    viewer.scene.camera.zoom = 1.5
    _save(viewer, "batch")
    print(widget.status.value, flush=True)
    viewer.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frame", type=Path, default=default_frame(), help="the thaumatin still (a CBF)")
    shots = {
        "load_frame": load_shot,
        "simulate": simulate_shot,
        "simulate_scene": scene_shot,
        "refine": refine_shot,
        "still": still_shot,
        "batch": batch_shot,
    }
    parser.add_argument("--only", choices=list(shots), action="append")
    args = parser.parse_args(argv)
    if set(args.only or shots) - {"simulate_scene"} and not args.frame.is_file():
        parser.error(f"no frame at {args.frame}; pass --frame PATH")
    IMAGES.mkdir(parents=True, exist_ok=True)
    for name in args.only or list(shots):
        shots[name](args.frame)
    return 0


if __name__ == "__main__":
    sys.exit(main())
