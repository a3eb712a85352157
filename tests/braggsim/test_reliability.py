"""Reliability at the edges (issue 16): one case per item, fast.

1. memory proportional to the frame, also under a 4 GiB address-space cap;
2. readers: sizes checked against the data present, non-finite geometry refused
   (the many kinds of corrupt file are in io/test_fuzz.py);
3. outputs: never an input, never a read-only file, modes kept, pairs checked;
4. non-finite results and float16/bfloat16 refused; parts re-validated when changed;
5. requests that cannot fit refused up front with the estimate; streaming statistics.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

import braggsim
from braggsim import _resources, cli
from braggsim.io import FrameReadError, read_frame, write_float, write_smv
from braggsim.io._atomic import OutputPathError, atomic_group, atomic_output, check_output_path
from tests.conftest import DATA, ROOT

CELL = ["-cell", "70", "80", "90", "90", "90", "90"]
SMALL = [*CELL, "-default_F", "100", "-N", "3", "-detpixels", "16", "-pixel", "0.4", "-oversample", "1"]
CAP_BYTES = 4 << 30
SRC = str(ROOT / "src")


def run(capsys, *argv):
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def _under_cap(code: str, cap_bytes: int = CAP_BYTES, env_extra: dict | None = None):
    """Run ``code`` in a fresh interpreter under ``ulimit -v`` = cap_bytes."""
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env_extra or {}))

    def limit():
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (cap_bytes, cap_bytes))

    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        preexec_fn=limit,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


# ------------------------------------------------------------------ 1. memory
def test_frame_read_and_imports_work_under_a_4_gib_address_space_cap(tmp_path):
    frame = tmp_path / "small.img"
    write_smv(frame, np.arange(64 * 64, dtype=float).reshape(64, 64) % 97, scale=1.0)
    gz = tmp_path / "small.img.gz"
    import gzip

    gz.write_bytes(gzip.compress(frame.read_bytes()))
    result = _under_cap(
        f"""
        import torch, numba, braggsim.cli, braggsim.refine_cli
        from braggsim.io import read_frame
        from braggsim._resources import memory_budget
        for path in ({str(frame)!r}, {str(gz)!r}):
            print(read_frame(path).shape)
        print(*memory_budget())
        """,
        env_extra={_resources.MEMORY_ENV: ""},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.split("\n")
    assert lines[:2] == ["(64, 64)", "(64, 64)"]
    # the cap is part of the memory budget (unless free memory is lower still)
    budget, reason = lines[2].split(" ", 1)
    assert 0 < int(budget) < CAP_BYTES and ("ulimit -v" in reason or "MemAvailable" in reason), lines[2]


def test_a_frame_larger_than_the_memory_budget_is_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "frame.img"
    write_smv(path, np.ones((64, 64)), scale=1.0)
    monkeypatch.setenv(_resources.MEMORY_ENV, "10K")
    with pytest.raises(
        FrameReadError,
        match=r"needs about .* more than the 10 KiB available \(the budget BRAGGSIM_MEMORY_BUDGET sets\)",
    ):
        read_frame(path)
    monkeypatch.setenv(_resources.MEMORY_ENV, "lots")
    with pytest.raises(ValueError, match="BRAGGSIM_MEMORY_BUDGET='lots' is not a size"):
        _resources.memory_budget()


# ------------------------------------------------------------------ 2. readers
def test_one_byte_change_in_a_tiff_no_longer_reads_as_a_giant_frame(tmp_path):
    import tifffile

    path = tmp_path / "t.tif"
    tifffile.imwrite(path, np.arange(320, dtype=np.uint16).reshape(16, 20))
    raw = bytearray(path.read_bytes())
    assert len(raw) == 896
    raw[32] ^= 0x80  # ImageLength 16 -> 8,388,624 rows (the probe's 8,060,944 x 20)
    path.write_bytes(bytes(raw))
    start = time.perf_counter()
    with pytest.raises(FrameReadError, match=r"8388624x20 uint16 pixels \(335544960 bytes\), its strips hold 640"):
        read_frame(path)
    assert time.perf_counter() - start < 1.0


def test_truncated_and_header_only_edf_are_errors(tmp_path):
    from fabio.edfimage import EdfImage

    path = tmp_path / "e.edf"
    EdfImage(data=np.ones((16, 20), dtype=np.uint16)).write(str(path))
    raw = path.read_bytes()
    path.write_bytes(raw[:-1])
    with pytest.raises(FrameReadError, match="truncated: EDF header promises 20x16 UnsignedShort pixels"):
        read_frame(path)
    path.write_bytes(raw[: raw.find(b"}\n") + 2])
    with pytest.raises(FrameReadError, match="the file has 0 after its header"):
        read_frame(path)


def test_hdf5_declaring_unwritten_pixels_fails_at_once(tmp_path):
    import h5py

    path = tmp_path / "huge.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("entry/data/data", shape=(40000, 40000), dtype="f4")
    start = time.perf_counter()
    with pytest.raises(
        FrameReadError, match=r"huge.h5: /entry/data/data declares 40000x40000 pixels but holds no data"
    ):
        read_frame(path)
    assert time.perf_counter() - start < 1.0


def test_an_empty_hdf5_is_reported_empty_whatever_memory_is_free(tmp_path, monkeypatch):
    """The reason given must not depend on the machine: with a budget far below the
    declared image the file is still reported as holding no data."""
    import h5py

    path = tmp_path / "huge.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("entry/data/data", shape=(40000, 40000), dtype="f4")
    monkeypatch.setenv("BRAGGSIM_MEMORY_BUDGET", "1M")
    with pytest.raises(FrameReadError, match="holds no data"):
        read_frame(path)


def test_compound_hdf5_and_nan_geometry_are_errors(tmp_path):
    import h5py

    path = tmp_path / "compound.h5"
    with h5py.File(path, "w") as h5:
        h5["entry/data/data"] = np.zeros((4, 5), dtype=[("a", "f4"), ("b", "i4")])
    with pytest.raises(FrameReadError, match="not pixel numbers"):
        read_frame(path)
    binary = tmp_path / "f.bin"
    write_float(binary, np.ones((4, 5), dtype=np.float32), sidecar=True)
    side = tmp_path / "f.json"
    side.write_text(json.dumps(dict(json.loads(side.read_text()), beam_center_mm=[float("nan"), 1.0])))
    with pytest.raises(FrameReadError, match=r"beam_center_mm=\[nan, 1.0\] is not finite"):
        read_frame(binary)


# ------------------------------------------------------------------ 3. outputs
def test_floatfile_onto_the_hkl_input_is_refused(tmp_path, capsys):
    hkl = tmp_path / "good.hkl"
    hkl.write_text("1 2 3 100\n")
    link = tmp_path / "link.bin"
    link.symlink_to(hkl)
    for target in (hkl, link):
        status, out, err = run(
            capsys, "simulate", *CELL, "-hkl", str(hkl), "-detpixels", "8", "-floatfile", str(target)
        )
        assert status == 2 and "it is the input" in err and "max_I" not in out
        assert hkl.read_text() == "1 2 3 100\n"


def test_read_only_output_is_left_alone(tmp_path, capsys):
    target = tmp_path / "ro.bin"
    target.write_bytes(b"keep me")
    target.chmod(0o444)
    status, out, err = run(capsys, "simulate", *SMALL, "-floatfile", str(target))
    assert status == 2 and "refusing to replace read-only" in err and "0444" in err
    assert target.read_bytes() == b"keep me" and "max_I" not in out  # refused before simulating
    with pytest.raises(OutputPathError, match="read-only"):
        write_float(target, np.ones((2, 2)))
    assert target.read_bytes() == b"keep me"


def test_outputs_keep_the_target_mode_and_new_files_follow_the_umask(tmp_path, capsys):
    existing, new = tmp_path / "old.bin", tmp_path / "new.img"
    existing.write_bytes(b"x")
    existing.chmod(0o640)
    old_umask = os.umask(0o027)
    try:
        status, _, _ = run(capsys, "simulate", *SMALL, "-floatfile", str(existing), "-intfile", str(new))
    finally:
        os.umask(old_umask)
    assert status == 0
    assert stat.S_IMODE(existing.stat().st_mode) == 0o640 and existing.stat().st_size == 16 * 16 * 4
    assert stat.S_IMODE(new.stat().st_mode) == 0o640  # 0666 less the umask 027, not 0600
    assert sorted(os.listdir(tmp_path)) == ["new.img", "old.bin"]


def test_a_failure_between_pair_renames_is_never_read_as_one_frame(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    write_float(path, np.zeros((64, 256), dtype=np.float32), sidecar=True)
    real_replace = os.replace
    calls = []

    def fail_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(5, "I/O error")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_second)
    with pytest.raises(OSError):
        write_float(path, np.ones((128, 128), dtype=np.float32), sidecar=True)
    monkeypatch.undo()
    # new pixels, old sidecar (same byte count: 64x256 = 128x128): refused, not misread
    with pytest.raises(FrameReadError, match="do not match the sidecar"):
        read_frame(path)
    assert sorted(os.listdir(tmp_path)) == ["f.bin", "f.json"]  # no temporaries left


def test_atomic_helpers_refuse_inputs_and_clean_up(tmp_path):
    source = tmp_path / "in.dat"
    source.write_bytes(b"input")
    with pytest.raises(OutputPathError, match="it is the input"):
        check_output_path(source, inputs=[source])
    hard = tmp_path / "hard.dat"
    os.link(source, hard)
    with pytest.raises(OutputPathError, match="it is the input"):
        check_output_path(hard, inputs=[source])
    with pytest.raises(RuntimeError), atomic_output(tmp_path / "out.dat") as handle:
        handle.write(b"half")
        raise RuntimeError("crash")
    with pytest.raises(RuntimeError), atomic_group([tmp_path / "a", tmp_path / "b"]) as temporary:
        for name in temporary.values():
            open(name, "wb").close()
        raise RuntimeError("crash")
    assert sorted(os.listdir(tmp_path)) == ["hard.dat", "in.dat"]


# ------------------------------------------------------------------ 4. non-finite, dtypes, changed parts
@pytest.mark.parametrize(
    "flags,fragment",
    [
        (["-cell", "1e-30", "1e-30", "1e-30", "90", "90", "90"], "non-finite pixels"),
        (["-cell", "1e-300", "1e-300", "1e-300", "90", "90", "90"], "volume 0.0"),
        (["-mat", "ZEROS"], "singular"),
        (["-mat", "NAN"], "must be finite"),
    ],
)
def test_non_finite_simulations_write_nothing(tmp_path, capsys, flags, fragment):
    matrices = {"ZEROS": "0 0 0\n0 0 0\n0 0 0\n", "NAN": "nan 0 0\n0 0.01 0\n0 0 0.01\n"}
    flags = list(flags)
    if flags[0] == "-mat":
        mat = tmp_path / "a.mat"
        mat.write_text(matrices[flags[1]])
        flags[1] = str(mat)
    out = tmp_path / "out.bin"
    argv = [*flags, "-default_F", "1", "-detpixels", "8", "-oversample", "1", "-floatfile", str(out)]
    status, _, err = run(capsys, "simulate", *argv)
    assert status == 2 and fragment in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_refused(dtype):
    crystal = braggsim.Crystal(default_F=1.0, mosaic_spread_deg=torch.tensor(0.1, dtype=dtype))
    detector = braggsim.Detector(fpixels=4, oversample=1)
    with pytest.raises(ValueError, match=rf"dtype {dtype} is not supported"):
        braggsim.simulate(crystal, detector)
    with pytest.raises(ValueError, match="float32 or float64"):
        braggsim.simulate(braggsim.Crystal(default_F=1.0), detector, dtype=dtype)


def test_parts_changed_after_construction_are_checked_again():
    crystal = braggsim.Crystal(default_F=1.0)
    detector = braggsim.Detector(fpixels=4, oversample=1)
    beam = braggsim.Beam()
    assert torch.isfinite(braggsim.simulate(crystal, detector, beam)).all()
    detector.distance_mm = -5.0
    with pytest.raises(ValueError, match=r"Detector: distance_mm must be > 0, got -5.0"):
        braggsim.simulate(crystal, detector, beam)
    detector.distance_mm = 100.0
    beam.wavelength_A = float("nan")
    with pytest.raises(ValueError, match="Beam: wavelength_A must be a finite number"):
        braggsim.simulate(crystal, detector, beam)
    beam.wavelength_A = 1.0
    detector.beam_center_mm = (float("inf"), 1.0)
    with pytest.raises(ValueError, match="Detector: beam_center_mm Xbeam must be a finite number"):
        write_smv(os.devnull + ".never", np.ones((4, 4)), detector=detector)


@pytest.mark.parametrize(
    "part",
    [
        braggsim.Crystal(default_F=1.0, N_cells=4, mosaic_spread_deg=0.3, misset_deg=(1, 2, 3)),
        braggsim.Crystal(mosflm_matrix=np.diag([0.01, 0.012, 0.014]), matrix_wavelength_A=1.0, default_F=1.0),
        braggsim.Detector(fpixels=8, convention="XDS", beam_center_mm=(0.3, 0.4), oversample=2),
        braggsim.Detector(fpixels=8, spixels=None),
        braggsim.Beam(wavelength_A=1.5, polarization=0.9),
    ],
)
def test_revalidation_is_idempotent(part):
    """revalidate re-runs __post_init__, so running it must not change a valid part."""
    from braggsim._validate import revalidate

    before = {k: np.asarray(v).tolist() if isinstance(v, np.ndarray) else v for k, v in vars(part).items()}
    revalidate(part)
    revalidate(part)
    after = {k: np.asarray(v).tolist() if isinstance(v, np.ndarray) else v for k, v in vars(part).items()}
    assert after == before


# ------------------------------------------------------------------ 5. up-front refusals
def test_mosaic_dom_1e8_is_refused_at_once_with_the_estimate(capsys, monkeypatch):
    monkeypatch.setenv(_resources.MEMORY_ENV, "8G")
    start = time.perf_counter()
    # (written out: -mosaic_dom 1e8 would be 1 domain, as nanoBragg's atoi reads it)
    status, _, err = run(capsys, "simulate", *CELL, "-default_F", "1", "-mosaic", "1", "-mosaic_dom", "100000000")
    assert time.perf_counter() - start < 5
    assert status == 2 and "100,000,000 crystal orientations" in err and "GiB of memory" in err


def test_time_budget_refuses_what_would_run_for_days(capsys, monkeypatch):
    monkeypatch.setenv(_resources.TIME_ENV, "60")
    argv = [*CELL, "-default_F", "1", "-mosaic", "1", "-mosaic_dom", "100000", "-detpixels", "1024", "-oversample", "2"]
    status, _, err = run(capsys, "simulate", *argv)
    assert status == 2 and "would take at least" in err and "1 min time budget" in err


def test_hkl_tables_one_reflection_and_a_far_index(tmp_path, capsys, monkeypatch):
    one = tmp_path / "one.hkl"
    one.write_text("1 2 3 100\n")
    # N=1: tricubic interpolation on a 1x1x1 table (an IndexError before): default_F everywhere
    status, out, err = run(capsys, "simulate", *CELL, "-hkl", str(one), "-default_F", "3", "-N", "1", "-detpixels", "8")
    assert status == 0, err
    far = tmp_path / "far.hkl"
    far.write_text("-1500 0 0 1\n1500 1500 1500 2\n")
    monkeypatch.setenv(_resources.MEMORY_ENV, "8G")
    status, _, err = run(capsys, "simulate", *CELL, "-hkl", str(far), "-detpixels", "8")
    assert status == 2 and "far.hkl" in err and "3001x1501x1501 entries" in err and "164 GiB" in err


def test_streamed_statistics_and_writers_match_whole_frame_numpy(tmp_path, monkeypatch):
    rng = np.random.default_rng(7)
    image = rng.gamma(2.0, 3.0, size=(37, 29)).astype(np.float32)
    image[5, 7] = 1000.0
    stats = cli.image_statistics(image, block_pixels=100)
    flat = image.astype(np.float64).ravel()
    assert stats["max"] == 1000.0 and stats["max_slow_fast"] == (5, 7) and stats["non_finite"] == 0
    assert stats["mean"] == pytest.approx(flat.mean(), rel=1e-12)
    assert stats["rms"] == pytest.approx(np.sqrt(np.mean(flat * flat)), rel=1e-12)
    assert stats["rmsd"] == pytest.approx(flat.std(), rel=1e-12)
    image[0, 0] = np.nan
    assert cli.image_statistics(image, block_pixels=100)["non_finite"] == 1
    from braggsim.io import write as write_module

    whole_smv, whole_bin = tmp_path / "whole.img", tmp_path / "whole.bin"
    write_smv(whole_smv, image, scale=2.0)
    write_float(whole_bin, image)
    monkeypatch.setattr(write_module, "BLOCK_PIXELS", 64)
    blocks_smv, blocks_bin = tmp_path / "blocks.img", tmp_path / "blocks.bin"
    write_smv(blocks_smv, image, scale=2.0)
    write_float(blocks_bin, image)
    assert blocks_smv.read_bytes() == whole_smv.read_bytes()
    assert blocks_bin.read_bytes() == whole_bin.read_bytes() == image.astype("<f4").tobytes()


# ------------------------------------------------ found by benchmarks/reliability_probe.py
def test_an_enormous_automatic_oversample_is_refused_up_front(tmp_path, capsys):
    # -xtal_width 1e300 is clipped to the beam (1000 cells along b): nanoBragg's rule then
    # asks for a 12000^2 oversample; the block path tried to allocate 41 GB and failed
    out = tmp_path / "out.bin"
    flags = [*SMALL[:-2], "-distance", "100", "-floatfile", str(out)]
    status, _, err = run(capsys, "simulate", *flags, "-xtal_width", "1e300")
    assert status == 2 and err.count("\n") == 1
    assert "x 12,000^2 subpixels" in err and "of memory, more than" in err, err
    assert not out.exists()
    status, _, err = run(capsys, "simulate", *flags, "-xtal_thick", "1e300")
    assert status == 2 and "1.2e+305^2 subpixels" in err and "unbounded amount of memory" in err, err
    assert "and it would take at least forever" in err, err
    assert _resources.format_bytes(float("inf")) == "an unbounded amount"
    assert _resources.format_seconds(float("inf")) == "forever"


@pytest.mark.parametrize(
    "command,flags",
    [
        ("nonbragg", ["-stol", "water", "-detpixels", "8", "-flux", "1e300"]),
        ("simulate", [*SMALL, "-dtype", "float64", "-fluence", "1e300"]),
    ],
)
def test_float64_pixels_beyond_float32_are_not_written_as_inf(tmp_path, capsys, command, flags):
    out = tmp_path / "out.bin"
    status, _, err = run(capsys, command, *flags, "-floatfile", str(out))
    assert status == 2 and err.count("\n") == 1
    assert f"-floatfile {out}: a pixel of" in err and "does not fit float32" in err, err
    assert not out.exists()


def test_binary_hkl_and_expt_files_name_the_file(tmp_path):
    from braggsim.io.expt import read_expt
    from braggsim.structure_factors import read_hkl

    junk = tmp_path / "junk.hkl"
    junk.write_bytes(b"\x8b\x1f 1 2 3 4\n")
    with pytest.raises(ValueError, match=r"junk\.hkl: not a text HKL file"):
        read_hkl(junk)
    expt = tmp_path / "junk.expt"
    expt.write_bytes(b'{"a": "\xe8\x01"}')
    with pytest.raises(ValueError, match=r"junk\.expt: not a text file"):
        read_expt(expt)


def test_a_nexus_data_entry_that_is_not_a_dataset_is_a_frame_error(tmp_path):
    import h5py

    path = tmp_path / "typed.h5"
    with h5py.File(path, "w") as h5:
        h5["entry/data/data"] = np.dtype("<f4")  # a named datatype where the image should be
    with pytest.raises(FrameReadError, match="typed.h5: entry/data holds no readable 2-D image"):
        read_frame(path)


def test_beamstop_radius_is_checked_and_a_huge_one_masks_everything(tmp_path, capsys):
    from braggsim.io.masks import disk_mask

    assert not disk_mask((4, 5), (2.0, 2.0), 1e300).any()  # was OverflowError
    assert disk_mask((4, 5), (2.0, 2.0), 0.5).sum() == 19
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="beamstop radius"):
            disk_mask((4, 5), (2.0, 2.0), bad)
    data = str(DATA / "p01_cubic.bin")
    refine = ["-data", data, *CELL, "-default_F", "100", "-refine", "mosaic", "-iterations", "1"]
    refine += ["-detpixels", "64", "-pixel", "0.1", "-distance", "100"]
    for bad in ("nan", "inf", "-1"):
        status, _, err = run(capsys, "refine", *refine, "-beamstop", bad)
        assert (
            status == 2
            and err == f"braggsim: error: -beamstop must be 'auto' or a radius >= 0 in pixels, got '{bad}'\n"
        )


def test_process_refuses_missing_frames_and_unreadable_masks_and_reports_failures(tmp_path, capsys):
    from braggsim.process_cli import process_main

    garbage = tmp_path / "garbage.img"
    garbage.write_bytes(bytes(range(256)) * 4)
    (tmp_path / "empty").mkdir()  # a folder is many frames (issue 13); one with none is refused
    common = ["--cell", *CELL[1:], "--space-group", "P1", "--out", str(tmp_path / "out"), "--quiet"]
    for argv, fragment in (
        ([str(tmp_path / "missing.cbf"), *common], f"FRAME {tmp_path / 'missing.cbf'}: frame file not found"),
        ([str(tmp_path / "empty"), *common], f"folder {tmp_path / 'empty'} holds no frame files"),
        ([str(garbage), *common, "--mask", str(tmp_path / "nomask.tif")], "--mask"),
        ([str(garbage), *common, "--beamstop", "nan"], "--beamstop must be 'auto' or a radius >= 0"),
    ):
        with pytest.raises(SystemExit) as info:
            process_main(argv)
        _, err = capsys.readouterr()
        assert info.value.code == 2 and err.startswith("braggsim: error: ") and err.count("\n") == 1, err
        assert fragment in err, err
    assert not (tmp_path / "out").exists()  # refused before anything was made
    # a frame that fails says so on stderr even with --quiet (it used to exit 1 silently)
    assert process_main([str(garbage), *common]) == 1
    _, err = capsys.readouterr()
    assert err.startswith(f"braggsim: error: {garbage}: failed (") and err.count("\n") == 1, err
