"""One path for frames: the reader (File > Open, drag-and-drop), the Load frame widget and
the sample give the same layers: a hidden mask (label 1 = excluded pixel), then the image
with its geometry in metadata and percentile contrast, selected."""

import numpy as np
import pytest
from qtpy.QtCore import QThreadPool

from napari_braggsim._reader import get_reader

from .conftest import ADSC, DATA, PLUGIN, SAMPLE, dock, wait_idle, write_small_frame


def _load(viewer, qtbot, path=ADSC):
    loader = dock(viewer, "Load frame")
    loader.file.value = path
    loader.load_button.clicked()
    assert not loader.load_button.enabled and "reading" in loader.status.value
    wait_idle(qtbot, loader)
    assert loader.load_button.enabled
    return loader


def test_load_frame_layers(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    simulate = dock(viewer, "Simulate")
    loader = _load(viewer, qtbot)
    assert [layer.name for layer in viewer.layers] == ["adsc_q4_2002.img mask", "adsc_q4_2002.img"]
    mask, image = viewer.layers
    assert viewer.layers.selection.active is image  # not the hidden mask: no paint tools
    assert image.data.shape == mask.data.shape == (2304, 2304) and not mask.visible
    geometry = image.metadata["braggsim_frame"]
    assert geometry["distance_mm"] == 250.0 and geometry["pixel_size_mm"] == pytest.approx(0.0816)
    # contrast from percentiles (it was 0..14872, a black frame)
    high = image.contrast_limits[1]
    assert high <= 10 * np.percentile(image.data, 99.9)
    assert 72 < high < 2000 and image.contrast_limits[0] > 20
    # the mask: label 1 = excluded (seams and beamstop), 0 = used
    assert mask.data[1152, :].all() and mask.data[:, 1152].all()
    assert mask.data[1120, 1200] == 1 and mask.data[300, 300] == 0
    # geometry reached the shared model: the Simulate fields show it
    values = simulate.values()
    assert (values["distance_mm"], values["fpixels"], values["spixels"]) == (250.0, 2304, 2304)
    assert (values["beam_x_mm"], values["beam_y_mm"]) == pytest.approx(tuple(geometry["beam_center_mm"]), abs=1e-4)
    assert "pixel 0.0816 mm" in loader.status.value and "distance 250 mm" in loader.status.value


def test_reader_gives_the_same_layers_as_load_frame(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    _load(viewer, qtbot)
    loaded_mask, loaded = viewer.layers
    opened = make_napari_viewer()
    layers = opened.open(str(ADSC), plugin=PLUGIN)
    assert [layer.name for layer in layers] == [loaded_mask.name, loaded.name]
    mask, image = layers
    assert opened.layers.selection.active is image
    assert image.contrast_limits == pytest.approx(loaded.contrast_limits)
    assert image.metadata == loaded.metadata
    np.testing.assert_array_equal(mask.data, loaded_mask.data)
    assert not mask.visible and image.blending == loaded.blending == "additive"


def test_sample_gives_the_same_kind_of_layers(sample_viewer):
    mask, image = sample_viewer.layers
    assert image.name == SAMPLE and mask.name == SAMPLE + " mask"
    assert sample_viewer.layers.selection.active is image
    assert mask.data.sum() == 0 and not mask.visible  # a simulation trusts every pixel
    reference = np.fromfile(DATA / "p02_seed_truth.bin", "<f4").reshape(64, 64)
    # the sample is braggsim's image of nanoBragg golden case p02 (the demo's truth)
    assert np.corrcoef(image.data.ravel(), reference.ravel())[0, 1] > 0.9999
    assert image.metadata["braggsim_start"]["mosaic_spread_deg"] == 0.2
    assert image.metadata["braggsim_frame"]["shape"] == [64, 64]
    low, high = image.contrast_limits
    assert low == pytest.approx(np.percentile(image.data, 1.0)) and high < image.data.max()


def test_get_reader_declines_what_it_cannot_read(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "empty.img").write_bytes(b"")
    (tmp_path / "lonely.bin").write_bytes(b"\0" * 16)
    (tmp_path / "fake.h5").write_text("not hdf5")
    for path in ("notes.txt", "empty.img", "lonely.bin", "fake.h5", "missing.cbf"):
        assert get_reader(str(tmp_path / path)) is None, path
    assert get_reader(str(tmp_path)) is None
    assert get_reader(None) is None
    assert get_reader(["a.img", "b.img"]) is None
    assert get_reader(str(ADSC)) is not None
    assert get_reader(str(DATA / "p01_cubic.bin")) is not None


def test_napari_opens_a_small_frame_through_the_plugin(make_napari_viewer, tmp_path):
    path = write_small_frame(tmp_path / "sim.img")
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin=PLUGIN)
    assert [layer.name for layer in layers] == ["sim.img mask", "sim.img"]
    assert layers[1].metadata["braggsim_frame"]["distance_mm"] == 90.0
    assert layers[1].data.shape == (48, 64)
    assert not layers[0].visible and layers[0].data.sum() == 0  # simulated: nothing masked


def test_corrupt_file_is_a_notification(make_napari_viewer, tmp_path, errors):
    viewer = make_napari_viewer()
    loader = dock(viewer, "Load frame")
    bad = tmp_path / "broken.img"
    bad.write_bytes(b"{\nHEADER_BYTES=512;\nSIZE1=100;\n}\n" + b"\x00" * 40)
    assert loader.load(bad) is None
    assert len(errors) == 1 and "broken.img" in errors[0]
    assert len(viewer.layers) == 0


def test_corrupt_file_through_the_button_is_a_notification(make_napari_viewer, tmp_path, errors, qtbot):
    viewer = make_napari_viewer()
    loader = dock(viewer, "Load frame")
    bad = tmp_path / "broken.img"
    bad.write_bytes(b"{\nHEADER_BYTES=512;\nSIZE1=100;\n}\n" + b"\x00" * 40)
    loader.file.value = bad
    loader.load_button.clicked()
    wait_idle(qtbot, loader)
    assert len(errors) == 1 and "broken.img" in errors[0]
    assert loader.status.value == "failed: broken.img" and loader.load_button.enabled
    assert len(viewer.layers) == 0
    loader.file.value = tmp_path / "missing.img"
    assert loader.load_in_background() is None
    assert len(errors) == 2 and "no such file" in errors[1]


def test_closing_the_viewer_while_a_frame_is_read(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    loader = dock(viewer, "Load frame")
    job = loader.load_in_background(ADSC)
    assert job is not None
    viewer.close()
    assert job.wait(60)
    qtbot.wait(200)  # the poll timer is stopped: nothing touches the closed widgets
    assert QThreadPool.globalInstance().activeThreadCount() == 0
