"""Random corruptions of a small SMV and a small CBF: read_frame either reads them or
raises a clear ValueError/OSError, and never takes more than a second."""

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
@pytest.mark.parametrize("suffix,make", [(".img", _small_smv), (".cbf", _small_cbf)])
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
