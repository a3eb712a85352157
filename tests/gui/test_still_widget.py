"""The Real still dock on a thaumatin still: find spots, index, refine against the pixels,
save and load the model as a DIALS .expt.

The frame is the 614 strong spots braggsim found on thau_3_2_0013 (tests/data, a cached
spot list) drawn back onto a Pilatus3 6M at that frame's header geometry (Poisson
background of 2.8 counts, the frame's mean; each spot a Gaussian of its intensity), so the
tests need neither the 2.3 MB frame nor seconds to read it, and the lattice is the real one.
"""

import json
import math
import time

import numpy as np
import pytest
from conftest import DATA, dock, wait_idle

from napari_braggsim._frames import layer_data

HEADER = {  # thau_3_2_0013.cbf.bz2's header, as the reader gives it
    "shape": [2527, 2463],
    "distance_mm": 351.0,
    "pixel_size_mm": 0.172,
    "wavelength_A": 0.96859,
    "beam_center_mm": [224.71112, 216.91092],
    "beam_center_convention": "mosflm",
    "saturation": 115897.0,
    "format": "cbf",
}
THAUMATIN = {"a": "57.8", "b": "57.8", "c": "150", "alpha": "90", "beta": "90", "gamma": "90"}
SPACE_GROUP = "P 41 21 2"


def drawn_frame(spots: np.ndarray | None, seed: int = 0) -> np.ndarray:
    """A Pilatus-sized frame of Poisson background with the spots (slow, fast, intensity) drawn."""
    rng = np.random.default_rng(seed)
    shape = tuple(HEADER["shape"])
    expected = np.full(shape, 2.8, dtype=np.float32)
    if spots is not None:
        offsets = np.arange(-4, 5)
        for slow, fast, intensity in spots:
            s0, f0 = int(round(slow)), int(round(fast))
            ds = offsets + s0 - slow
            df = offsets + f0 - fast
            profile = np.exp(-0.5 * (ds[:, None] ** 2 + df[None, :] ** 2) / 0.6**2)
            block = expected[s0 - 4 : s0 + 5, f0 - 4 : f0 + 5]
            block += (intensity * profile / profile.sum()).astype(np.float32)[: block.shape[0], : block.shape[1]]
    return rng.poisson(expected).astype(np.float32)


@pytest.fixture(scope="module")
def lattice_frame():
    spots = np.loadtxt(DATA / "thau_0013_spots.csv", delimiter=",")
    return drawn_frame(spots)


@pytest.fixture(scope="module")
def blank_frame():
    return drawn_frame(None, seed=1)


def add_frame(viewer, data, name="thau_3_2_0013.cbf"):
    """The frame's layers as the reader makes them (mask, then image with its geometry)."""
    trusted = np.ones(data.shape, bool)
    trusted[:, 487:494] = False  # a module gap
    for array, kwargs, kind in layer_data(name, data, trusted, {"braggsim_frame": {**HEADER, "path": name}}):
        getattr(viewer, f"add_{kind}")(array, **kwargs)
    return viewer.layers[name]


def still_dock(viewer, data, name="thau_3_2_0013.cbf"):
    image = add_frame(viewer, data, name)
    widget = dock(viewer, "Real still")
    assert widget.observed.value is image and widget.mask.value is viewer.layers[name + " mask"]
    return widget


def fill_crystal(widget, cell=THAUMATIN, group=SPACE_GROUP):
    for key, value in cell.items():
        widget.cell_fields[key].value = value
    widget.space_group.value = group


def test_find_spots_shows_the_core_count(make_napari_viewer, qtbot, lattice_frame, errors):
    from braggsim.spotfind import find_spots

    viewer = make_napari_viewer()
    widget = still_dock(viewer, lattice_frame)
    widget.find_button.clicked()
    wait_idle(qtbot, widget)
    assert errors == []
    mask = viewer.layers["thau_3_2_0013.cbf mask"].data == 0
    expected = find_spots(lattice_frame, mask)
    assert 450 <= len(expected) <= 640  # of the 614 drawn spots, the faintest are lost in the noise
    layer = viewer.layers["strong spots"]
    assert len(layer.data) == len(expected) == widget.found.count
    assert widget.spots_status.value.startswith(f"{len(expected)} strong spots")
    np.testing.assert_allclose(layer.data, expected.px)
    # a marker as wide as the spot: an n-pixel spot gets a cross 2 sqrt(n / pi) + 2 px wide
    np.testing.assert_allclose(layer.size, 2 * np.sqrt(expected.size / math.pi) + 2)
    assert 4 < np.median(layer.size) < 8
    assert viewer.layers.selection.active.name == "thau_3_2_0013.cbf"  # the frame stays selected


def test_index_a_lattice_frame_then_refine_save_and_load(make_napari_viewer, qtbot, lattice_frame, tmp_path, errors):
    viewer = make_napari_viewer()
    widget = still_dock(viewer, lattice_frame)
    fill_crystal(widget)
    assert not widget.refine_button.enabled and not widget.save_button.enabled
    widget.index_button.clicked()  # finds the spots first
    assert not widget.index_button.enabled
    wait_idle(qtbot, widget)
    assert errors == []
    indexed = widget.indexed
    assert indexed.status == "indexed" and indexed.n_indexed >= 0.8 * indexed.n_spots
    # the drawn spots sit where the real ones were found: braggsim process gives 1.30 px on the
    # real frame (docs/real-data.md: the crystal's mosaic blocks scatter the spots about the beam)
    assert 0.5 < indexed.rmsd_px < 1.5
    assert widget.index_status.value.startswith(f"indexed: {indexed.n_indexed} of {indexed.n_spots} strong spots")
    assert "RMSD" in widget.index_status.value and "(P 41 21 2)" in widget.index_status.value
    a, _, c = widget.model.cell[:3]
    assert abs(a / 57.8 - 1) < 0.005 and abs(c / 150.0 - 1) < 0.005
    predicted = viewer.layers["still predictions"]
    assert len(predicted.data) == widget.model.n_indexed == indexed.n_indexed
    # each indexed strong spot has its predicted reflection nearby
    spots = widget.found.spots.px[widget.model.indexed]
    assert np.median(np.linalg.norm(predicted.data - spots, axis=1)) < 1.5
    labels = list(predicted.features["hkl"])
    assert all(len(label.split()) == 3 for label in labels)
    # hkl labels only once zoomed in (the overlay machinery's rule)
    viewer.camera.zoom = 0.3
    qtbot.wait(300)
    assert not predicted.text.visible
    viewer.camera.center = tuple(predicted.data[0])
    viewer.camera.zoom = 8.0
    qtbot.waitUntil(lambda: predicted.text.visible, timeout=5000)
    assert 0 < np.count_nonzero(predicted.features["label"] != "") <= 150
    assert widget.refine_button.enabled and widget.save_button.enabled

    # refine against the pixels, followed live
    widget.iterations.value = 6
    widget.max_reflections.value = 60
    moved = []
    predicted.events.data.connect(lambda event: moved.append(1))
    widget.refine_button.clicked()
    assert widget.stop_button.enabled
    wait_idle(qtbot, widget, timeout=120000)
    assert errors == []
    result = widget.refined.refinement
    assert result.final_nll < result.initial_nll and result.n_reflections == 60
    assert [it for it, _ in widget.history] == list(range(len(widget.history)))
    assert len(widget.history) >= 3 and widget.plot.losses.size == len(widget.history)
    assert moved, "the predictions never moved during the run"
    assert "mosaic" in widget.readout.value and "±" in widget.readout.value
    assert widget.model.experiment.half_mosaicity_deg == pytest.approx(result.mosaic_deg / 2)
    assert viewer.layers["still predictions"] is predicted  # updated in place

    # save, and load into a fresh dock on a fresh viewer
    path = tmp_path / "thau_0013.expt"
    widget.save_path.value = path
    widget.save_button.clicked()
    assert errors == [] and path.is_file()
    document = json.loads(path.read_text())
    assert document["__id__"] == "ExperimentList" and document["crystal"][0]["space_group_hall_symbol"]
    saved = widget.model

    other = make_napari_viewer()
    loader = still_dock(other, lattice_frame)
    loader.load_path.value = path
    loader.load_button.clicked()
    wait_idle(qtbot, loader)
    assert errors == []
    np.testing.assert_allclose(loader.model.experiment.real_space, saved.experiment.real_space, atol=1e-9)
    np.testing.assert_allclose(loader.model.experiment.geometry.origin, saved.experiment.geometry.origin, atol=1e-9)
    assert loader.model.experiment.domain_size_A == pytest.approx(saved.experiment.domain_size_A)
    assert loader.model.n_indexed == saved.n_indexed
    assert loader.cell_fields["c"].value == f"{saved.cell[2]:.4g}" and loader.space_group.value == "P 41 21 2"
    np.testing.assert_allclose(other.layers["still predictions"].data, predicted.data, atol=1e-6)


def test_a_blank_frame_has_no_lattice(make_napari_viewer, qtbot, blank_frame, errors):
    viewer = make_napari_viewer()
    widget = still_dock(viewer, blank_frame, name="thau_3_2_0016.cbf")
    fill_crystal(widget)
    widget.index_button.clicked()
    wait_idle(qtbot, widget)
    assert errors == []
    assert widget.indexed.status == "no-lattice" and widget.model is None
    assert widget.index_status.value.startswith("no-lattice:")
    assert "still predictions" not in viewer.layers
    assert not widget.refine_button.enabled and not widget.save_button.enabled


@pytest.mark.parametrize(
    ("cell", "group", "message"),
    [
        ({**THAUMATIN, "b": "60"}, SPACE_GROUP, "does not fit P 41 21 2"),
        ({**THAUMATIN, "gamma": ""}, SPACE_GROUP, "cell gamma is empty"),
        ({**THAUMATIN, "a": "-5"}, SPACE_GROUP, "cell edges must be > 0"),
        ({**THAUMATIN, "c": "long"}, SPACE_GROUP, "cell c must be a number"),
        (THAUMATIN, "P 99 zz", "unknown space group 'P 99 zz'"),
    ],
)
def test_a_bad_crystal_is_a_notification(make_napari_viewer, qtbot, blank_frame, errors, cell, group, message):
    viewer = make_napari_viewer()
    widget = still_dock(viewer, blank_frame)
    fill_crystal(widget, cell, group)
    widget.index_button.clicked()
    wait_idle(qtbot, widget)
    assert len(errors) == 1 and errors[0].startswith("Index: ") and message in errors[0], errors
    assert widget.model is None and "still predictions" not in viewer.layers
    assert widget.index_button.enabled


def test_nothing_to_refine_or_save_and_no_frame_geometry(make_napari_viewer, qtbot, tmp_path, errors):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32), name="plain")  # no header geometry
    widget = dock(viewer, "Real still")
    widget.refine()
    widget.save(tmp_path / "x.expt")
    assert errors[:2] == [
        "Refine: index the frame or load an .expt first",
        "Save .expt: no model yet (index the frame or load an .expt)",
    ]
    widget.observed.value = viewer.layers["plain"]
    widget.find_button.clicked()
    wait_idle(qtbot, widget)
    assert "has no wavelength_A, distance_mm, pixel_size_mm, beam_center_mm" in errors[-1]
    widget.load(tmp_path / "missing.expt")
    assert errors[-1].startswith("Load .expt: no such file")
    assert not (tmp_path / "x.expt").exists()


def test_closing_the_dock_stops_the_refinement(make_napari_viewer, qtbot, lattice_frame, errors):
    viewer = make_napari_viewer()
    widget = still_dock(viewer, lattice_frame)
    fill_crystal(widget)
    widget.index()
    wait_idle(qtbot, widget)
    widget.iterations.value = 500
    job = widget.refine()
    qtbot.waitUntil(lambda: len(widget.history) >= 2, timeout=60000)
    viewer.window.remove_dock_widget(widget.native.parent())
    started = time.monotonic()
    assert job.wait(30.0), "the refinement went on after its dock closed"
    assert time.monotonic() - started < 30.0
    assert errors == []
