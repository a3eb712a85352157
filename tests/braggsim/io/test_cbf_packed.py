"""CBF compressions fabio lacks (CCP4 "packed", "packed_v2": Rayonix and CSPAD frames) are
read through pycbf (CBFlib) instead, with the Pilatus header geometry as usual."""

import bz2

import numpy as np
import pytest

from braggsim.io import read_frame

pycbf = pytest.importorskip("pycbf")

HEADER = (
    "# Detector: PILATUS3 6M, S/N 60-0119\r\n"
    "# Pixel_size 172e-6 m x 172e-6 m\r\n"
    "# Wavelength 0.96859 A\r\n"
    "# Detector_distance 0.35100 m\r\n"
    "# Beam_xy (4.00, 3.00) pixels\r\n"
    "# Count_cutoff 115897 counts\r\n"
)


def _write_cbf(path, data: np.ndarray, compression) -> None:
    """A mini-CBF written by CBFlib itself, with ``compression``."""
    cbf = pycbf.cbf_handle_struct()
    cbf.new_datablock(b"image_1")
    cbf.new_category(b"array_data")
    cbf.new_column(b"header_convention")
    cbf.set_value(b"PILATUS_1.2")
    cbf.new_column(b"header_contents")
    cbf.set_value(HEADER.encode())
    cbf.new_column(b"data")
    slow, fast = data.shape
    cbf.set_integerarray_wdims_fs(
        compression, 1, data.astype(np.int32).tobytes(), 4, 1, data.size, b"little_endian", fast, slow, 1, 0
    )
    cbf.write_file(str(path).encode(), pycbf.CBF, pycbf.MIME_HEADERS | pycbf.MSG_DIGEST, pycbf.ENC_NONE)


@pytest.fixture
def counts():
    data = np.random.default_rng(7).poisson(30.0, size=(6, 9)).astype(np.int32)
    data[2, 5] = 1_000_000  # needs the packing's long codes
    data[0, :] = -1  # Pilatus gap marker
    return data


@pytest.mark.parametrize("name", ["CBF_PACKED", "CBF_PACKED_V2"])
def test_packed_cbf_reads_through_pycbf(tmp_path, counts, name):
    import fabio

    path = tmp_path / "packed.cbf"
    _write_cbf(path, counts, getattr(pycbf, name))
    with pytest.raises(Exception, match="not yet supported"):
        fabio.open(str(path))  # what the fallback is for
    frame = read_frame(path)
    np.testing.assert_array_equal(frame.data, counts.astype(np.float32))
    assert frame.header["reader"] == "pycbf"
    assert frame.pixel_size_mm == pytest.approx(0.172) and frame.distance_mm == pytest.approx(351.0)
    assert frame.wavelength_A == pytest.approx(0.96859) and frame.saturation == 115897
    # Beam_xy (4, 3) px, fast then slow, pixel centres at half-integers -> MOSFLM mm
    assert frame.beam_center_mm == pytest.approx(((3.0 - 0.5) * 0.172, (4.0 - 0.5) * 0.172))
    expected = np.ones(counts.shape, bool)
    expected[0, :] = False  # gap markers
    expected[2, 5] = False  # above the Count_cutoff
    np.testing.assert_array_equal(frame.mask, expected)


def test_compressed_packed_cbf(tmp_path, counts):
    plain = tmp_path / "packed.cbf"
    _write_cbf(plain, counts, pycbf.CBF_PACKED)
    packed = tmp_path / "packed.cbf.bz2"
    packed.write_bytes(bz2.compress(plain.read_bytes()))
    np.testing.assert_array_equal(read_frame(packed).data, counts.astype(np.float32))


def test_damaged_packed_cbf_is_a_frame_read_error(tmp_path, counts):
    from braggsim.io import FrameReadError

    path = tmp_path / "packed.cbf"
    _write_cbf(path, counts, pycbf.CBF_PACKED)
    raw = bytearray(path.read_bytes())
    start = raw.find(b"\x0c\x1a\x04\xd5")
    raw[start + 40 : start + 60] = b"\xff" * 20  # the MD5 no longer matches
    path.write_bytes(bytes(raw))
    with pytest.raises(FrameReadError, match="fabio cannot decode it.*pycbf cannot decode it either"):
        read_frame(path)


def test_a_fuzzed_packed_cbf_never_crashes_the_reader(tmp_path, counts):
    """CBFlib can crash on garbage; it runs in a child process, so this is an error."""
    from braggsim.io import FrameReadError

    path = tmp_path / "packed.cbf"
    _write_cbf(path, counts, pycbf.CBF_PACKED)
    raw = bytearray(path.read_bytes())
    start = raw.find(b"\x0c\x1a\x04\xd5")
    rng = np.random.default_rng(3)
    for _ in range(3):
        broken = bytearray(raw)
        broken[start + 4 :] = rng.integers(0, 256, len(broken) - start - 4, dtype=np.uint8).tobytes()
        path.write_bytes(bytes(broken))
        with pytest.raises(FrameReadError):
            read_frame(path)
