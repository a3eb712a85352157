"""The napari reader contribution: get_reader claims frames, never raises, and builds layers."""

from pathlib import Path

import numpy as np
import pytest

from napari_braggsim._reader import get_reader

DATA = Path(__file__).resolve().parents[1] / "data"


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
    assert get_reader(str(DATA / "adsc_q4_2002.img.bz2")) is not None
    assert get_reader(str(DATA / "p01_cubic.bin")) is not None


def test_reader_layers_for_the_real_frame():
    reader = get_reader(str(DATA / "adsc_q4_2002.img.bz2"))
    (data, image_kwargs, image_type), (labels, label_kwargs, label_type) = reader(str(DATA / "adsc_q4_2002.img.bz2"))
    assert image_type == "image" and label_type == "labels"
    assert data.shape == labels.shape == (2304, 2304) and labels.dtype == np.uint8
    info = image_kwargs["metadata"]["braggsim_frame"]
    assert info["distance_mm"] == 250.0 and info["pixel_size_mm"] == pytest.approx(0.0816)
    assert info["format"] == "smv"
    low, high = image_kwargs["contrast_limits"]
    assert 20 < low < 72 < high < 2000
    assert label_kwargs["name"] == "adsc_q4_2002.img.bz2 mask" and label_kwargs["visible"] is False
    assert labels[1152, :].all() and labels[:, 1152].all()  # seams
    assert labels[1120, 1200] == 1 and labels[1180, 1230] == 1  # beamstop shadow (trusted pixels before)
    assert labels[300, 300] == 0


def test_napari_opens_a_frame_through_the_plugin(make_napari_viewer, tmp_path):
    import braggsim
    from braggsim.io import write_smv

    path = tmp_path / "sim.img"
    image = np.arange(48 * 64, dtype=float).reshape(48, 64)
    write_smv(path, image, detector=braggsim.Detector(fpixels=64, spixels=48, distance_mm=90.0))
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin="napari-braggsim")
    assert [layer.name for layer in layers] == ["sim.img", "sim.img mask"]
    assert layers[0].metadata["braggsim_frame"]["distance_mm"] == 90.0
    assert layers[0].data.shape == (48, 64)
    assert not layers[1].visible and layers[1].data.sum() == 0
