"""read_frame on every format, write_smv/write_float round trips, masks, metadata."""

import json

import numpy as np
import pytest

import braggsim
from braggsim import resolution, spots
from braggsim.io import (
    Frame,
    beamstop_mask,
    frame_from_metadata,
    read_frame,
    user_mask,
    write_float,
    write_smv,
)
from tests.conftest import DATA


def _pattern(shape=(30, 40)):
    slow, fast = np.indices(shape)
    return (100 + 50 * np.sin(slow / 3.0) * np.cos(fast / 5.0) + slow).astype(np.float64)


@pytest.mark.parametrize(
    "detector_kwargs",
    [
        {"fpixels": 40, "spixels": 30, "pixel_size_mm": 0.172, "distance_mm": 123.4, "beam_center_mm": (2.5, 3.7)},
        {"fpixels": 40, "spixels": 30, "pixel_size_mm": 0.1, "distance_mm": 100.0},
        {
            "fpixels": 40,
            "spixels": 30,
            "pixel_size_mm": 0.11,
            "distance_mm": 90.0,
            "beam_center_mm": (1.3, 2.9),
            "convention": "xds",
            "orgx_px": 17.25,
            "orgy_px": 11.5,
        },
    ],
)
def test_smv_round_trip_keeps_geometry(tmp_path, detector_kwargs):
    detector = braggsim.Detector(**detector_kwargs)
    beam = braggsim.Beam(wavelength_A=1.2345)
    image = _pattern()
    path = tmp_path / "frame.img"
    scale = write_smv(path, image, detector=detector, beam=beam)
    assert scale == pytest.approx(55000 / image.max())
    raw = path.read_bytes()
    assert len(raw) == 512 + 30 * 40 * 2 and raw.startswith(b"{\nHEADER_BYTES=512;")
    frame = read_frame(path)
    assert frame.format == "smv" and frame.shape == (30, 40)
    expected = np.floor(image * scale + 0.5)
    np.testing.assert_array_equal(frame.data, expected.astype(np.float32))
    assert frame.pixel_size_mm == detector.pixel_size_mm
    assert frame.wavelength_A == 1.2345
    # the frame's MOSFLM geometry puts the beam on the same pixel as the written detector
    assert spots.beam_center_px(frame) == pytest.approx(spots.beam_center_px(detector), abs=1e-9)
    if detector.convention == "mosflm":
        assert frame.distance_mm == detector.distance_mm
        assert frame.beam_center_mm == (detector.beam_center_mm or detector.default_beam_center_mm())
    for key in (
        "DIM",
        "BYTE_ORDER",
        "TYPE",
        "SIZE1",
        "SIZE2",
        "PIXEL_SIZE",
        "DISTANCE",
        "WAVELENGTH",
        "BEAM_CENTER_X",
        "BEAM_CENTER_Y",
        "MOSFLM_CENTER_X",
        "MOSFLM_CENTER_Y",
        "XDS_ORGX",
        "XDS_ORGY",
        "CLOSE_DISTANCE",
        "PHI",
        "OSC_START",
        "OSC_RANGE",
        "TWOTHETA",
    ):
        assert key in frame.header, key
    if detector.convention == "xds":
        assert float(frame.header["XDS_ORGX"]) == pytest.approx(17.25, abs=1e-9)
        assert float(frame.header["XDS_ORGY"]) == pytest.approx(11.5, abs=1e-9)


def test_smv_scale_rounding_clipping_and_extra_header(tmp_path):
    image = np.array([[0.0, 0.49, 0.5, 1.5], [-3.0, 70000.0, 2.51, np.nan]])
    path = tmp_path / "s.smv"
    write_smv(path, image, scale=1.0, header_extra={"PHI": 12.5, "OSC_RANGE": 0.25})
    frame = read_frame(path)
    np.testing.assert_array_equal(frame.data, [[0, 0, 1, 2], [0, 65535, 3, 0]])
    assert frame.header["PHI"] == "12.5" and frame.header["OSC_RANGE"] == "0.25"
    # written by a simulator: zeros are values, 65535 is saturated
    np.testing.assert_array_equal(frame.mask, [[True, True, True, True], [True, False, True, True]])
    with pytest.raises(ValueError, match="SIZE1"):
        write_smv(tmp_path / "bad.img", image, header_extra={"SIZE1": 3})


def test_write_is_atomic_and_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "keep.img"
    write_smv(path, _pattern())
    before = path.read_bytes()
    with pytest.raises(ValueError):
        write_smv(path, _pattern(), detector=braggsim.Detector(fpixels=8))
    assert path.read_bytes() == before
    with pytest.raises(ValueError):
        write_smv(path, _pattern(), header_extra={"NOTE": "a;b"})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.img"]


def test_float_round_trip_and_sidecar(tmp_path):
    image = _pattern().astype(np.float32)
    path = tmp_path / "f.bin"
    detector = braggsim.Detector(fpixels=40, spixels=30, pixel_size_mm=0.1, distance_mm=80.0, beam_center_mm=(1.0, 2.0))
    write_float(path, image, sidecar=True, detector=detector, beam=braggsim.Beam(wavelength_A=0.9))
    assert path.read_bytes() == image.astype("<f4").tobytes()
    frame = read_frame(path)
    np.testing.assert_array_equal(frame.data, image)
    assert frame.format == "nanobragg_float"
    assert frame.detector_kwargs() == {
        "fpixels": 40,
        "spixels": 30,
        "convention": "mosflm",
        "pixel_size_mm": 0.1,
        "distance_mm": 80.0,
        "beam_center_mm": (1.0, 2.0),
    }
    assert frame.beam_kwargs() == {"wavelength_A": 0.9}
    (tmp_path / "f.json").unlink()
    with pytest.raises(ValueError, match="shape"):
        read_frame(path)
    assert read_frame(path, shape=(30, 40)).distance_mm is None
    with pytest.raises(ValueError, match="float32"):
        read_frame(path, shape=(40, 40))


def test_golden_nanobragg_float_with_sidecar_args():
    frame = read_frame(DATA / "p05_detector_tilt.bin")
    info = json.loads((DATA / "p05_detector_tilt.json").read_text())
    assert frame.shape == tuple(info["shape_slow_fast"])
    assert float(frame.data.max()) == pytest.approx(info["max"], rel=1e-6)
    assert frame.mask.all()
    assert frame.distance_mm == 100 and frame.pixel_size_mm == 0.1 and frame.wavelength_A == 1
    p01 = read_frame(DATA / "p01_cubic.bin")
    # MOSFLM default beam centre: (detsize + pixel) / 2 = 3.25 mm
    assert p01.beam_center_mm == pytest.approx((3.25, 3.25), abs=1e-9)


def test_cbf_edf_tiff(tmp_path):
    import fabio
    from fabio.cbfimage import CbfImage
    from fabio.edfimage import EdfImage
    from fabio.tifimage import TifImage

    data = (_pattern() * 10).astype(np.int32)
    data[3, 4] = -1  # Pilatus gap marker
    data[5, 6] = 1048500  # at the count cutoff
    contents = (
        "# Detector: PILATUS 6M\r\n# Pixel_size 172e-6 m x 172e-6 m\r\n# Detector_distance 0.25000 m\r\n"
        "# Wavelength 0.9795 A\r\n# Beam_xy (20.50, 12.00) pixels\r\n# Count_cutoff 1048500 counts\r\n"
    )
    cbf = CbfImage(data=data, header={"_array_data.header_contents": contents})
    cbf.write(str(tmp_path / "p.cbf"))
    frame = read_frame(tmp_path / "p.cbf")
    assert frame.format == "cbf"
    np.testing.assert_array_equal(frame.data, data.astype(np.float32))
    assert frame.pixel_size_mm == pytest.approx(0.172) and frame.distance_mm == pytest.approx(250.0)
    assert frame.wavelength_A == pytest.approx(0.9795) and frame.saturation == 1048500
    assert frame.beam_center_mm == pytest.approx((11.5 * 0.172, 20.0 * 0.172))
    assert not frame.mask[3, 4] and not frame.mask[5, 6] and frame.mask.sum() == data.size - 2

    EdfImage(
        data=data.astype(np.float32),
        header={
            "PSize_1": "1e-4",
            "SampleDistance": "0.1",
            "WaveLength": "1.1e-10",
            "Center_1": "20",
            "Center_2": "15",
        },
    ).write(str(tmp_path / "e.edf"))
    edf = read_frame(tmp_path / "e.edf")
    assert edf.format == "edf" and edf.pixel_size_mm == pytest.approx(0.1)
    assert edf.distance_mm == pytest.approx(100.0) and edf.wavelength_A == pytest.approx(1.1)
    assert edf.beam_center_mm == pytest.approx((1.45, 1.95))

    TifImage(data=data.astype(np.uint16).clip(0)).write(str(tmp_path / "t.tif"))
    tif = read_frame(tmp_path / "t.tif")
    assert tif.format == "tiff" and tif.distance_mm is None and tif.beam_center_mm is None
    assert tif.saturation == 65535
    np.testing.assert_array_equal(tif.data, data.astype(np.uint16).clip(0).astype(np.float32))
    assert fabio.version  # fabio really decoded these


def test_nexus_master(tmp_path):
    import h5py

    stack = np.stack([_pattern().astype(np.uint32), np.zeros((30, 40), np.uint32)])
    stack[0, 2, 2] = 4294967295
    pixel_mask = np.zeros((30, 40), np.uint32)
    pixel_mask[7, 8] = 1
    data_file = tmp_path / "x_data_000001.h5"
    with h5py.File(data_file, "w") as h5:
        h5["entry/data/data"] = stack
    with h5py.File(tmp_path / "x_master.h5", "w") as h5:
        h5["entry/data/data_000001"] = h5py.ExternalLink(data_file.name, "entry/data/data")
        det = h5.create_group("entry/instrument/detector")
        for key, value, units in (
            ("detector_distance", 0.15, "m"),
            ("x_pixel_size", 7.5e-5, "m"),
            ("beam_center_x", 20.0, "pixel"),
            ("beam_center_y", 10.0, "pixel"),
        ):
            det[key] = value
            det[key].attrs["units"] = units
        det["detectorSpecific/pixel_mask"] = pixel_mask
        det["detectorSpecific/countrate_correction_count_cutoff"] = 100000
        h5["entry/instrument/beam/incident_wavelength"] = 0.8
        h5["entry/instrument/beam/incident_wavelength"].attrs["units"] = "angstrom"
    frame = read_frame(tmp_path / "x_master.h5")
    assert frame.format == "nexus"
    assert frame.distance_mm == pytest.approx(150.0) and frame.pixel_size_mm == pytest.approx(0.075)
    assert frame.wavelength_A == pytest.approx(0.8) and frame.saturation == 100000
    assert frame.beam_center_mm == pytest.approx((9.5 * 0.075, 19.5 * 0.075))
    assert not frame.mask[7, 8] and not frame.mask[2, 2] and frame.mask.sum() == 30 * 40 - 2
    data_file.unlink()
    with pytest.raises(ValueError, match="no readable 2-D image"):
        read_frame(tmp_path / "x_master.h5")


def test_masks_user_and_beamstop(tmp_path):
    shape = (50, 60)
    image = np.full(shape, 100.0)
    slow, fast = np.indices(shape)
    image[(slow - 25) ** 2 + (fast - 30) ** 2 < 64] = 5.0  # an 8-px shadow
    image[:, 10] = 0  # a seam through nothing
    found = ~beamstop_mask(image, (25.0, 30.0), grow_px=0)
    radius_sq = (slow - 25) ** 2 + (fast - 30) ** 2
    assert found[radius_sq < 64].all() and not found[radius_sq >= 81].any()
    grown = ~beamstop_mask(image, (25.0, 30.0), grow_px=2)
    assert grown[radius_sq < 81].all() and not grown[radius_sq >= 144].any()
    assert beamstop_mask(image, (25.0, 30.0), radius_px=3).sum() == image.size - 29
    assert beamstop_mask(np.full(shape, 100.0), (25.0, 30.0)).all()
    flags = np.zeros(shape, np.uint8)
    flags[1, 2] = 1
    assert user_mask(flags, shape).sum() == 1
    assert user_mask(flags, shape, invert=True).sum() == image.size - 1
    np.save(tmp_path / "m.npy", flags)
    write_float(tmp_path / "m.bin", flags, sidecar=True)
    assert user_mask(tmp_path / "m.bin", shape, invert=True)[1, 2] == False  # noqa: E712
    with pytest.raises(ValueError, match="shape"):
        user_mask(flags, (5, 5))


def test_metadata_is_json_and_rebuilds_the_geometry(tmp_path):
    detector = braggsim.Detector(
        fpixels=40, spixels=30, pixel_size_mm=0.2, distance_mm=150.0, beam_center_mm=(2.0, 3.0)
    )
    write_smv(tmp_path / "m.img", _pattern(), detector=detector, beam=braggsim.Beam(wavelength_A=1.1))
    frame = read_frame(tmp_path / "m.img")
    metadata = json.loads(json.dumps(frame.metadata()))
    kwargs = frame_from_metadata(metadata)
    assert kwargs["detector"] == frame.detector_kwargs()
    assert kwargs["beam"] == {"wavelength_A": 1.1}
    assert metadata["braggsim_frame"]["format"] == "smv"
    assert resolution.resolution_map(metadata).shape == (30, 40)
    with pytest.raises(ValueError, match="braggsim_frame"):
        frame_from_metadata({})
    assert isinstance(frame, Frame) and frame.shape == (30, 40)
