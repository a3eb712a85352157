"""The Batch dock on crops of the public thaumatin stills: a folder and a several-frame
HDF5 open as lazy stacks, Process all fills a sortable table with the pipeline's numbers,
selecting a row moves the slider and draws that frame's predictions, cancel keeps the
finished frames, and the window keeps responding."""

from __future__ import annotations

import csv
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt

from tests.conftest import DATA

from .conftest import dock, wait_idle
from .test_responsiveness import STALL_LIMIT_MS, StallMeter, _load

CROPS = DATA / "thaumatin_crops"
NAMES = ["thau_3_2_0003_c512", "thau_3_2_0013_c512", "thau_3_2_0016_c512"]  # two lattices, one blank
CELL, SPACE_GROUP = "57.8 57.8 150 90 90 90", "P 41 21 2"


@pytest.fixture
def crops(tmp_path):
    folder = tmp_path / "grid"
    folder.mkdir()
    for i, name in enumerate(NAMES):
        shutil.copy(CROPS / f"{name}.cbf.bz2", folder / f"f_{i + 1}.cbf.bz2")
    return folder


@pytest.fixture
def reads(monkeypatch):
    """The frames (stems) the lazy stack reads, in order."""
    import braggsim.batch.stack as stack_module

    seen = []
    original = stack_module.read_pixels

    def counting(ref):
        seen.append(ref.name)
        return original(ref)

    monkeypatch.setattr(stack_module, "read_pixels", counting)
    return seen


def opened(viewer, qtbot, spec):
    widget = dock(viewer, "Batch")
    widget.open(spec)
    wait_idle(qtbot, widget)
    return widget


def column(widget, heading: str) -> list:
    from napari_braggsim._batch import COLUMNS

    number = [h for _, h in COLUMNS].index(heading)
    return [widget.table.item(row, number).text() for row in range(widget.table.rowCount())]


def summary(out: Path) -> dict:
    with open(out / "summary.csv", newline="") as handle:
        return {Path(row["frame"]).name.split(".")[0]: row for row in csv.DictReader(handle)}


def test_a_folder_opens_as_a_lazy_stack(make_napari_viewer, qtbot, tmp_path, reads):
    """Frames are read when shown, the next and previous ones ahead in a thread, and no
    others; the slider then finds them read (napari slices on the GUI thread)."""
    from braggsim.io import read_frame

    folder = tmp_path / "grid"
    folder.mkdir()
    for i, name in enumerate(NAMES * 2):
        shutil.copy(CROPS / f"{name}.cbf.bz2", folder / f"f_{i + 1}.cbf.bz2")
    viewer = make_napari_viewer()
    widget = opened(viewer, qtbot, folder)
    layer = viewer.layers["grid"]
    assert layer.data.shape == (6, 512, 512) and type(layer.data).__module__.startswith("dask")
    assert viewer.dims.current_step[0] == 0
    # the first frame was read by the opening thread (not counted here), the second ahead
    assert reads == ["f_2"]
    viewer.dims.set_current_step(0, 1)  # already read: napari takes it from the cache
    wait_idle(qtbot, widget)
    assert sorted(reads) == ["f_2", "f_3"]
    viewer.dims.set_current_step(0, 4)
    wait_idle(qtbot, widget)
    assert sorted(reads) == ["f_2", "f_3", "f_4", "f_5", "f_6"]  # f_5 shown, f_4 and f_6 ahead; f_1 never again
    np.testing.assert_array_equal(np.asarray(layer.data[4]), read_frame(folder / "f_5.cbf.bz2").data)
    np.testing.assert_array_equal(np.asarray(layer._slice.image.raw), read_frame(folder / "f_5.cbf.bz2").data)
    assert widget.out.value == tmp_path / "grid_braggsim"
    assert "6 frames of 512 x 512 px" in widget.status.value
    assert layer.contrast_limits[1] > layer.contrast_limits[0]


def test_a_several_frame_hdf5_opens_as_a_stack(make_napari_viewer, qtbot, tmp_path, reads):
    import h5py

    from braggsim.io import read_frame

    pixels = read_frame(CROPS / f"{NAMES[0]}.cbf.bz2").data.astype(np.int32)[:64, :80]
    path = tmp_path / "series.h5"
    with h5py.File(path, "w") as h5:
        h5["entry/data/data"] = np.stack([pixels, pixels + 10, pixels + 20])
        detector = h5.create_group("entry/instrument/detector")
        detector["x_pixel_size"], detector["detector_distance"] = 172e-6, 0.351
        detector["beam_center_x"], detector["beam_center_y"] = 40.0, 30.0
        h5["entry/instrument/beam/incident_wavelength"] = 0.96859
    single = tmp_path / "one"
    single.mkdir()
    shutil.copy(CROPS / f"{NAMES[0]}.cbf.bz2", single)
    viewer = make_napari_viewer()
    widget = opened(viewer, qtbot, single)
    assert widget.out.value == tmp_path / "one_braggsim" and viewer.layers["one"].data.shape == (1, 512, 512)
    widget.open(path)  # the output folder filled in for the first follows the frames
    wait_idle(qtbot, widget)
    assert widget.out.value == tmp_path / "series_braggsim"
    layer = viewer.layers["series.h5"]
    assert layer.data.shape == (3, 64, 80)
    np.testing.assert_array_equal(np.asarray(layer.data[1]), read_frame(path, 1).data)
    assert read_frame(path, 2).data[5, 7] == read_frame(path, 0).data[5, 7] + 20


def test_process_all_fills_the_table_sorts_and_a_row_shows_its_frame(
    make_napari_viewer, qtbot, crops, errors, warnings_shown
):
    from scipy.spatial import cKDTree

    from braggsim.batch import frame_predictions
    from braggsim.io import read_frame
    from braggsim.spotfind import SpotFinderOptions, find_spots

    viewer = make_napari_viewer()
    widget = opened(viewer, qtbot, crops)
    widget.cell.value, widget.space_group.value, widget.scheduler.value = CELL, SPACE_GROUP, "none"
    with StallMeter() as meter:
        assert widget.process_all() is not None
        wait_idle(qtbot, widget, timeout=180000)
    assert errors == [] and warnings_shown == []
    out = crops.parent / "grid_braggsim"
    assert widget.table.rowCount() == 3
    statuses = dict(zip(column(widget, "frame"), column(widget, "status"), strict=True))
    assert statuses == {"f_1": "indexed", "f_2": "indexed", "f_3": "no-lattice"}
    assert {k: r["status"] for k, r in summary(out).items()} == statuses  # the same as braggsim process writes
    rows = {widget.rows[i]["frame"].split("/")[-1].split(".")[0]: widget.rows[i] for i in widget.rows}
    assert rows["f_1"]["n_spots"] == 65 and rows["f_2"]["n_spots"] == 49 and rows["f_3"]["n_spots"] == 0
    for name in ("f_1", "f_2"):
        assert 0.2 < rows[name]["rmsd_px"] < 1.0
        assert abs(rows[name]["a"] - 57.8) < 0.3 and abs(rows[name]["c"] - 150.0) < 1.0
        assert rows[name]["mosaic_deg"] > 0
    assert widget.progress.value == 3 and widget.progress.max == 3
    assert "finished" in widget.status.value and "indexed 2, no-lattice 1" in widget.status.value
    assert sum(widget.plot.histograms["a"][1]) == 2 and sum(widget.plot.histograms["mosaic_deg"][1]) == 2
    assert list(widget.plot.rmsd_frames) == [0, 1]
    assert meter.longest_ms <= STALL_LIMIT_MS, f"longest stall {meter.longest_ms:.0f} ms (load {_load()})"

    # sorting: by spots, most first; by RMSD, smallest first with the blank frame (no RMSD) last
    from napari_braggsim._batch import COLUMNS

    headings = [h for _, h in COLUMNS]
    widget.table.sortItems(headings.index("spots"), Qt.SortOrder.DescendingOrder)
    assert column(widget, "frame") == ["f_1", "f_2", "f_3"] and column(widget, "spots") == ["65", "49", "0"]
    widget.table.sortItems(headings.index("RMSD px"), Qt.SortOrder.AscendingOrder)
    rmsd = column(widget, "RMSD px")
    assert float(rmsd[0]) < float(rmsd[1]) and rmsd[2] == ""
    assert column(widget, "frame")[2] == "f_3"

    # a row jumps to its frame and draws its predictions there
    widget.table.selectRow(widget.row_of(1))
    assert viewer.dims.current_step[0] == 1 and widget.plot.selected == 1
    wait_idle(qtbot, widget)
    overlay = viewer.layers["grid predicted"]
    points = np.asarray(overlay.data)
    expected = frame_predictions(out, "f_2")
    assert len(points) == len(expected) > 20
    assert np.all(points[:, 0] == 1)
    np.testing.assert_allclose(points[:, 1:], expected.px)
    frame = read_frame(crops / "f_2.cbf.bz2", zeros_are_dead=False)
    strong = find_spots(frame.data, frame.mask, SpotFinderOptions()).px
    near = cKDTree(points[:, 1:]).query(strong)[0] < 3.0
    assert near.mean() > 0.6, f"{near.sum()} of {len(strong)} strong spots within 3 px of a prediction"
    # the blank frame has no model: its row removes the overlay
    widget.table.selectRow(widget.row_of(2))
    wait_idle(qtbot, widget)
    assert viewer.dims.current_step[0] == 2 and "grid predicted" not in viewer.layers
    # the slider moved by hand selects that frame's row and draws its predictions
    viewer.dims.set_current_step(0, 0)
    wait_idle(qtbot, widget)
    assert widget.table.selectionModel().selectedRows()[0].row() == widget.row_of(0)
    points = np.asarray(viewer.layers["grid predicted"].data)
    assert np.all(points[:, 0] == 0) and len(points) == len(frame_predictions(out, "f_1"))

    # a rerun finds every frame done and shows them again
    widget.process_all()
    wait_idle(qtbot, widget, timeout=60000)
    assert widget.table.rowCount() == 3 and widget.progress_state.skipped == 3 and widget.progress_state.done == 0


def test_cancel_keeps_the_finished_frames(make_napari_viewer, qtbot, crops):
    from braggsim.process import process_frame

    gate = threading.Event()

    def frame_function(source, options):
        if not str(source).endswith("f_1.cbf.bz2"):
            gate.wait(60)  # the second frame waits until the test has pressed Cancel
        return process_frame(source, options)

    viewer = make_napari_viewer()
    widget = opened(viewer, qtbot, crops)
    widget.cell.value, widget.space_group.value, widget.scheduler.value = CELL, SPACE_GROUP, "none"
    widget.frame_function = frame_function
    widget.process_all()
    qtbot.waitUntil(lambda: widget.table.rowCount() == 1, timeout=120000)
    widget.cancel_button.clicked()
    assert widget.controller.cancel_event.is_set()
    gate.set()
    wait_idle(qtbot, widget, timeout=120000)
    assert widget.progress_state.state == "cancelled" and "cancelled" in widget.status.value
    assert sorted(column(widget, "frame")) == ["f_1", "f_2"]  # the running frame finished; f_3 never started
    assert sorted(summary(crops.parent / "grid_braggsim")) == ["f_1", "f_2"]
    assert widget.process_button.enabled and not widget.cancel_button.enabled
    # Process all again does only the frame left, and the table shows all three
    widget.frame_function = None
    widget.process_all()
    wait_idle(qtbot, widget, timeout=120000)
    assert widget.progress_state.skipped == 2 and widget.progress_state.done == 1
    assert sorted(column(widget, "frame")) == ["f_1", "f_2", "f_3"]


def test_bad_input_becomes_a_notification(make_napari_viewer, qtbot, crops, tmp_path, errors):
    viewer = make_napari_viewer()
    widget = dock(viewer, "Batch")
    assert widget.process_all() is None and "open a folder" in errors[-1]
    widget.open(tmp_path / "nothing here")
    wait_idle(qtbot, widget)
    assert "cannot open" in errors[-1] and "nothing here" in errors[-1]
    widget = opened(viewer, qtbot, crops)
    widget.cell.value, widget.space_group.value = "57.8 57.8 150", SPACE_GROUP
    assert widget.process_all() is None and "six numbers" in errors[-1]
    widget.cell.value, widget.space_group.value = CELL, "P 9"
    assert widget.process_all() is None and "P 9" in errors[-1]
    assert widget.table.rowCount() == 0 and not (crops.parent / "grid_braggsim" / "summary.csv").exists()


def test_process_all_on_a_local_cluster(make_napari_viewer, qtbot, crops, errors):
    """The default scheduler: a LocalCluster (one worker process here), started and closed
    by the batch thread; the same statuses as in-process."""
    viewer = make_napari_viewer()
    widget = opened(viewer, qtbot, crops)
    widget.cell.value, widget.space_group.value = CELL, SPACE_GROUP
    assert widget.scheduler.value == "local"
    widget.workers.value = 1
    with StallMeter() as meter:
        widget.process_all()
        qtbot.waitUntil(lambda: "LocalCluster" in widget.status.value or not widget.busy, timeout=180000)
        wait_idle(qtbot, widget, timeout=300000)
    assert errors == []
    assert widget.progress_state.state == "finished" and widget.progress_state.workers == 1
    statuses = dict(zip(column(widget, "frame"), column(widget, "status"), strict=True))
    assert statuses == {"f_1": "indexed", "f_2": "indexed", "f_3": "no-lattice"}
    assert meter.longest_ms <= STALL_LIMIT_MS, f"longest stall {meter.longest_ms:.0f} ms (load {_load()})"


def test_frame_cache_reads_each_frame_once_and_keeps_the_last(crops, reads):
    from braggsim.batch import expand_frames
    from napari_braggsim._batch import FrameCache, histogram

    refs = expand_frames([crops])
    cache = FrameCache(size=2)
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.read(refs[1]))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert reads == ["f_2"] and all(r is results[0] for r in results)  # four asked, one read
    assert cache.prefetch(refs) == 2 and reads == ["f_2", "f_1", "f_3"]
    assert refs[0] in cache and refs[1] not in cache and refs[2] in cache  # two kept: the two read last
    edges, counts = histogram([57.7, 57.8, None, float("nan"), 57.9], bins=2)
    assert list(counts) == [1, 2] and edges[0] == 57.7 and edges[-1] == 57.9
    edges, counts = histogram([150.0], bins=3)
    assert counts.sum() == 1 and edges[0] < 150.0 < edges[-1]


def test_the_batch_half_without_qt_and_the_dock_without_torch():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import napari_braggsim._batch\n"
        "assert not sorted(m for m in sys.modules if 'Qt' in m or m == 'qtpy'), 'Qt'\n"
        "import napari_braggsim._widgets.batch\n"
        "print('torch' in sys.modules, 'dask' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False False"
