"""Bad input to read_frame: each gives a clear ValueError/OSError naming the file and problem."""

import bz2

import numpy as np
import pytest

import braggsim
from braggsim.io import FrameReadError, read_frame, write_smv


@pytest.fixture
def smv(tmp_path):
    slow, fast = np.indices((24, 32))
    image = 200 + 100 * np.sin(slow / 4.0) + fast
    path = tmp_path / "good.img"
    write_smv(path, image, detector=braggsim.Detector(fpixels=32, spixels=24), scale=1.0)
    return path


def _expect(path, pattern, kind=FrameReadError):
    with pytest.raises(kind) as info:
        read_frame(path)
    message = str(info.value)
    assert str(path) in message, message
    assert pattern in message, message
    return message


def test_good_file_reads(smv):
    assert read_frame(smv).shape == (24, 32)


def test_truncated(smv):
    smv.write_bytes(smv.read_bytes()[:-100])
    _expect(smv, "truncated")


def test_header_lies_about_size(smv):
    raw = smv.read_bytes().replace(b"SIZE1=32;", b"SIZE1=31;")
    smv.write_bytes(raw)
    _expect(smv, "does not match the file size")
    smv.write_bytes(raw.replace(b"SIZE1=31;", b"SIZE1=-1;"))
    _expect(smv, "SIZE1=-1 is outside")


def test_header_bytes_not_a_number(smv):
    raw = smv.read_bytes()
    assert raw.startswith(b"{\nHEADER_BYTES=512;")
    smv.write_bytes(raw.replace(b"HEADER_BYTES=512;", b"HEADER_BYTES=9e99;"))
    _expect(smv, "HEADER_BYTES='9e99' is not an integer")


def test_wrong_byte_order(smv):
    raw = smv.read_bytes().replace(b"BYTE_ORDER=little_endian;", b"BYTE_ORDER=big_endian;   ")
    smv.write_bytes(raw)
    _expect(smv, "wrong byte order")
    smv.write_bytes(raw.replace(b"BYTE_ORDER=big_endian;", b"BYTE_ORDER=middle_end;"))
    _expect(smv, "BYTE_ORDER must be")


def test_bad_geometry_value(smv):
    smv.write_bytes(smv.read_bytes().replace(b"PIXEL_SIZE=0.1;", b"PIXEL_SIZE=-.1;"))
    _expect(smv, "PIXEL_SIZE=-0.1 must be positive")


def test_empty_file(tmp_path):
    for name in ("empty.img", "empty.cbf", "empty.tif"):
        (tmp_path / name).write_bytes(b"")
        _expect(tmp_path / name, "empty file")


def test_directory_and_missing_path(tmp_path):
    folder = tmp_path / "frames.img"
    folder.mkdir()
    _expect(folder, "is a directory", IsADirectoryError)
    _expect(tmp_path / "nope.img", "not found", FileNotFoundError)


def test_corrupt_compression(tmp_path, smv):
    packed = bz2.compress(smv.read_bytes())
    path = tmp_path / "x.img.bz2"
    path.write_bytes(packed[: len(packed) // 2])
    _expect(path, "cannot decompress")
    path.write_bytes(packed)
    assert read_frame(path).shape == (24, 32)


def test_not_a_frame(tmp_path):
    path = tmp_path / "notes.cbf"
    path.write_text("hello, this is not a CBF\n" * 10)
    _expect(path, "CBF has no binary data section")
    path = tmp_path / "notes.h5"
    path.write_text("not hdf5")
    _expect(path, "cannot read it as HDF5")
