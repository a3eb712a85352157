"""Corrupted frames: read_frame either reads them or raises a clear ValueError/OSError
naming the file, and never takes more than a second.

- random corruptions (bit flips, truncations, header edits, insertions, garbage) of a
  small SMV, CBF, TIFF and EDF;
- the reliability probe's kinds, for every format: truncation at every point of the
  pixel data (an error, never a zero-filled frame), header-only files, headers that lie
  about the size (every one-byte change in a TIFF's directory), non-finite geometry,
  compound pixel types, HDF5 datasets declaring pixels that were never written.
"""

import json
import logging
import re
import struct
import time

import numpy as np
import pytest

import braggsim
from braggsim.io import read_frame, write_smv

CASES_PER_FORMAT = 150


def _small_smv(path):
    slow, fast = np.indices((16, 20))
    write_smv(
        path, 300 + 100 * np.cos(slow / 3.0) + fast, detector=braggsim.Detector(fpixels=20, spixels=16), scale=1.0
    )


def _small_cbf(path):
    from fabio.cbfimage import CbfImage

    slow, fast = np.indices((16, 20))
    data = (500 + 100 * np.sin(fast / 3.0) + slow).astype(np.int32)
    contents = "# Pixel_size 172e-6 m x 172e-6 m\r\n# Detector_distance 0.2 m\r\n# Wavelength 1.0 A\r\n# Beam_xy (10, 8) pixels\r\n"
    CbfImage(data=data, header={"_array_data.header_contents": contents}).write(str(path))


def _small_tiff(path):
    import tifffile

    tifffile.imwrite(path, _pixels())


def _small_edf(path):
    from fabio.edfimage import EdfImage

    EdfImage(data=_pixels()).write(str(path))


def _pixels():
    slow, fast = np.indices((16, 20))
    return (400 + 100 * np.sin(fast / 3.0) + 7 * slow).astype(np.uint16)


def _corrupt(raw: bytes, rng) -> bytes:
    data = bytearray(raw)
    kind = rng.integers(5)
    if kind == 0:  # bit flips anywhere
        for _ in range(rng.integers(1, 20)):
            i = rng.integers(len(data))
            data[i] ^= 1 << int(rng.integers(8))
    elif kind == 1:  # truncation
        data = data[: rng.integers(len(data))]
    elif kind == 2:  # header edits: overwrite a digit or letter run in the first 1 KiB
        for _ in range(rng.integers(1, 6)):
            i = rng.integers(min(len(data), 1024))
            data[i] = int(rng.choice(list(b"0123456789-.;=}{\n eE+x\x00\xff")))
    elif kind == 3:  # inserted or deleted bytes in the header
        i = rng.integers(min(len(data), 600))
        if rng.random() < 0.5:
            data[i:i] = bytes(rng.integers(0, 256, size=int(rng.integers(1, 40)), dtype=np.uint8))
        else:
            del data[i : i + int(rng.integers(1, 40))]
    else:  # garbage appended or a random block overwritten
        if rng.random() < 0.5:
            data += bytes(rng.integers(0, 256, size=int(rng.integers(1, 500)), dtype=np.uint8))
        else:
            i = rng.integers(len(data))
            block = rng.integers(0, 256, size=int(rng.integers(1, 200)), dtype=np.uint8).tobytes()
            data[i : i + len(block)] = block
    return bytes(data)


@pytest.mark.timeout(120)  # a hang fails the test instead of stalling the suite
@pytest.mark.parametrize(
    "suffix,make", [(".img", _small_smv), (".cbf", _small_cbf), (".tif", _small_tiff), (".edf", _small_edf)]
)
def test_fuzzed_frames_fail_cleanly_and_fast(tmp_path, suffix, make):
    original = tmp_path / ("original" + suffix)
    make(original)
    raw = original.read_bytes()
    assert read_frame(original).shape == (16, 20)
    rng = np.random.default_rng(20240611 + len(suffix))
    outcomes = {"read": 0, "error": 0}
    slowest = 0.0
    target = tmp_path / ("fuzzed" + suffix)
    for case in range(CASES_PER_FORMAT):
        corrupted = _corrupt(raw, rng)
        target.write_bytes(corrupted)
        start = time.perf_counter()
        try:
            frame = read_frame(target)
        except (ValueError, OSError) as exc:
            assert str(target) in str(exc), (case, exc)
            outcomes["error"] += 1
        else:
            assert frame.data.ndim == 2 and frame.mask.shape == frame.data.shape
            outcomes["read"] += 1
        elapsed = time.perf_counter() - start
        slowest = max(slowest, elapsed)
        assert elapsed < 1.0, (case, elapsed)
    # the corruptions really exercised both paths
    assert outcomes["error"] >= CASES_PER_FORMAT // 4, outcomes
    assert outcomes["read"] >= 5, outcomes


# ------------------------------------------------------------- the probe's kinds of input
def _expect_error(path, *fragments):
    start = time.perf_counter()
    with pytest.raises((ValueError, OSError)) as info:
        read_frame(path)
    assert time.perf_counter() - start < 1.0
    assert str(path) in str(info.value), info.value
    for fragment in fragments:
        assert fragment in str(info.value), info.value
    return str(info.value)


def _data_start(suffix, raw):
    """Offset of the first pixel byte: every cut before the end of the pixels is a truncation."""
    if suffix == ".img":
        return 512
    if suffix == ".cbf":
        return raw.find(b"\x0c\x1a\x04\xd5") + 4
    if suffix == ".edf":
        return raw.find(b"}\n") + 2
    return len(raw) - 16 * 20 * 2  # the TIFF writer puts the pixels last


@pytest.mark.parametrize(
    "suffix,make", [(".img", _small_smv), (".cbf", _small_cbf), (".tif", _small_tiff), (".edf", _small_edf)]
)
def test_every_truncation_is_an_error_never_a_zero_filled_frame(tmp_path, suffix, make):
    logging.disable(logging.ERROR)  # fabio logs "Data stream is incomplete" before zero-filling
    try:
        original = tmp_path / ("original" + suffix)
        make(original)
        raw = original.read_bytes()
        if suffix == ".cbf":
            end = _data_start(suffix, raw) + int(re.search(rb"X-Binary-Size:\s*(\d+)", raw).group(1))
        else:
            end = len(raw)
        cuts = sorted(set(np.linspace(0, len(raw) - 1, 40).astype(int)) | {_data_start(suffix, raw), end - 1})
        target = tmp_path / ("cut" + suffix)
        for cut in cuts:
            if cut >= end:
                continue  # past the pixels (a CBF's closing MIME lines): the frame is whole
            target.write_bytes(raw[:cut])
            _expect_error(target)
    finally:
        logging.disable(logging.NOTSET)


def test_header_only_files_are_errors(tmp_path):
    logging.disable(logging.ERROR)
    try:
        for suffix, make in ((".img", _small_smv), (".edf", _small_edf), (".cbf", _small_cbf)):
            path = tmp_path / ("full" + suffix)
            make(path)
            raw = path.read_bytes()
            path.write_bytes(raw[: _data_start(suffix, raw)])
            _expect_error(path)
    finally:
        logging.disable(logging.NOTSET)


def test_every_one_byte_change_in_a_tiff_directory_reads_right_or_fails(tmp_path):
    """The probe's 896-byte TIFF: one changed byte once read as an 8,060,944 x 20 frame."""
    original = tmp_path / "t.tif"
    _small_tiff(original)
    raw = original.read_bytes()
    pixels_at = len(raw) - 16 * 20 * 2
    target = tmp_path / "changed.tif"
    errors = 0
    for index in range(pixels_at):
        for value in (0x00, 0xFF, raw[index] ^ 0x01, raw[index] ^ 0x80):
            changed = bytearray(raw)
            changed[index] = value
            target.write_bytes(bytes(changed))
            try:
                frame = read_frame(target)
            except (ValueError, OSError) as exc:
                assert str(target) in str(exc)
                errors += 1
                continue
            # whatever still reads is the same frame (the byte was in a tag nobody uses)
            assert frame.shape == (16, 20), (index, value, frame.shape)
            np.testing.assert_array_equal(frame.data, _pixels().astype(np.float32), err_msg=f"byte {index}")
    assert errors > 100


def test_size_lies_in_edf_and_smv_headers(tmp_path):
    edf = tmp_path / "e.edf"
    _small_edf(edf)
    raw = edf.read_bytes()
    edf.write_bytes(raw.replace(b"Dim_2 = 16 ;", b"Dim_2 = 61 ;"))
    _expect_error(edf, "Size=640 is less than 20x61")
    edf.write_bytes(raw.replace(b"Dim_2 = 16 ;", b"Dim_2 = 61 ;").replace(b"Size = 640 ;", b"Size = 2440;"))
    _expect_error(edf, "truncated")
    edf.write_bytes(raw.replace(b"Size = 640 ;", b"Size = 64  ;"))
    _expect_error(edf, "Size=64")
    smv = tmp_path / "s.img"
    _small_smv(smv)
    smv.write_bytes(smv.read_bytes().replace(b"SIZE2=16;", b"SIZE2=61;"))
    _expect_error(smv, "truncated")


def test_cbf_binary_section_shorter_than_declared(tmp_path):
    cbf = tmp_path / "c.cbf"
    _small_cbf(cbf)
    raw = cbf.read_bytes()
    start = _data_start(".cbf", raw)
    cbf.write_bytes(raw[: start + 10])
    _expect_error(cbf, "truncated")


def test_hdf5_kinds(tmp_path):
    import h5py
    import hdf5plugin  # noqa: F401  imported before the timed reads (its first import is slow)

    cases = {}

    def make(name, build):
        path = tmp_path / name
        with h5py.File(path, "w") as h5:
            build(h5)
        cases[name] = path
        return path

    # 40000 x 40000 declared in a 3.4 KB file: HDF5 would hand back 6.4 GB of fill value
    make("huge.h5", lambda h5: h5.create_dataset("entry/data/data", shape=(40000, 40000), dtype="f4"))
    make(
        "huge_chunked.h5",
        lambda h5: h5.create_dataset("entry/data/data", shape=(1, 40000, 40000), dtype="u2", chunks=(1, 500, 500)),
    )

    def partly_written(h5):
        data = h5.create_dataset("entry/data/data", shape=(1, 64, 64), dtype="u2", chunks=(1, 32, 32))
        data[0, :32, :32] = 7

    make("partly_written.h5", partly_written)
    compound = np.zeros((4, 5), dtype=[("a", "f4"), ("b", "i4")])
    make("compound.h5", lambda h5: h5.create_dataset("entry/data/data", data=compound))

    def nan_centre(h5):
        h5["entry/data/data"] = np.ones((8, 9), dtype="u2")
        detector = h5.create_group("entry/instrument/detector")
        detector["x_pixel_size"] = 1e-4
        detector["beam_center_x"] = float("nan")
        detector["beam_center_y"] = 3.0

    make("nan_centre.h5", nan_centre)
    assert (tmp_path / "huge.h5").stat().st_size < 10_000
    _expect_error(cases["huge.h5"], "holds no data")
    _expect_error(cases["huge_chunked.h5"], "holds no data")
    _expect_error(cases["partly_written.h5"], "truncated", "1 are written")
    _expect_error(cases["compound.h5"], "not pixel numbers")
    _expect_error(cases["nan_centre.h5"], "beam_center_x", "finite")


def test_sidecar_kinds(tmp_path):
    from braggsim.io import write_float

    path = tmp_path / "f.bin"
    write_float(path, _pixels().astype(np.float32), sidecar=True, detector=braggsim.Detector(fpixels=20, spixels=16))
    assert read_frame(path).shape == (16, 20)
    side = tmp_path / "f.json"
    info = json.loads(side.read_text())
    for key, value in (("beam_center_mm", [float("nan"), 1.0]), ("distance_mm", float("inf"))):
        side.write_text(json.dumps(dict(info, **{key: value})))
        _expect_error(path, key)
    # header-only: the sidecar without its pixels, and pixels that lie about the shape
    side.write_text(json.dumps(info))
    raw = path.read_bytes()
    path.write_bytes(b"")
    _expect_error(path, "empty file")
    path.write_bytes(raw[:-4])
    _expect_error(path, "do not make a 16x20")
    # a .bin from another run with the same shape: the CRC-32 tells them apart
    path.write_bytes(struct.pack("<f", 1.0) + raw[4:])
    _expect_error(path, "do not match the sidecar")
