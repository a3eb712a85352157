"""Amorphous background (nonBragg), braggsim nonbragg, -water, and nanoBragg's extra
outputs (PGM, stol profile, printout, dump, progress, ADC), plus one-line errors for bad
input to all of them."""

from __future__ import annotations

import math
import os
import re

import numpy as np
import pytest
import torch

from braggsim import AmorphousBackground, Beam, Crystal, Detector, cli, read_stol, simulate, simulate_background
from braggsim.background import TABLES, table_path
from braggsim.io import write_smv

F64 = torch.float64
SMALL = [
    "-cell",
    "100",
    "100",
    "100",
    "90",
    "90",
    "90",
    "-default_F",
    "100",
    "-N",
    "5",
    "-detpixels",
    "32",
    "-oversample",
    "1",
]


def run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


# ------------------------------------------------------------------ .stol tables
@pytest.mark.parametrize("name", TABLES)
def test_shipped_tables_read_by_name(name):
    table = read_stol(name)
    assert len(table.F) >= 100 and np.all(np.diff(table.stol_per_A) > 0)
    assert table_path(name).is_file()
    assert (table_path(name).parent / "LICENSE.nanoBragg").read_text().startswith("MIT License")


def test_water_table_is_nanobraggs():
    table = read_stol("water")
    # water's forward F is 2.57 electrons (nanoBragg's water_F)
    assert table.F[0] == pytest.approx(2.57, abs=0.01) and table.stol_per_A[-1] == 0.5


@pytest.mark.parametrize("units,factor", [("stol", 1.0), ("4stol", 0.25), ("Q", 1 / (4 * math.pi))])
def test_table_units(tmp_path, units, factor):
    path = tmp_path / "t.stol"
    path.write_text("0 3\n0.4 2\n0.8 1\n")
    np.testing.assert_allclose(read_stol(path, units=units).stol_per_A, np.array([0, 0.4, 0.8]) * factor)


def test_interpolation_passes_through_the_table_and_is_cubic_between():
    table = read_stol("air")
    stol = torch.as_tensor(table.stol_per_A[5:8], dtype=F64)
    np.testing.assert_allclose(table.interpolate(stol).numpy(), table.F[5:8], rtol=1e-12)
    x = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    cubic = read_stol_from(x, x**3 - x)
    np.testing.assert_allclose(
        cubic.interpolate(torch.tensor([0.15, 0.25], dtype=F64)).numpy(), [0.15**3 - 0.15, 0.25**3 - 0.25]
    )


def read_stol_from(stol, F):
    from braggsim import StolTable

    return StolTable(stol, F, "test")


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("", "no data"),
        ("0 1\n0.1 x\n", "line 2: 'x' is not a number"),
        ("0 1\n0.1\n", "line 2: expected at least 2 numbers"),
        ("0 1\n0.2 2\n0.1 3\n", "line 3: stol must increase"),
        ("0 1\n0.1 inf\n", "line 2: 'inf' is not a finite number"),
    ],
)
def test_bad_tables_name_the_file_and_line(tmp_path, text, fragment):
    path = tmp_path / "bad.stol"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        read_stol(path)
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_missing_table_and_a_binary_file_are_named(tmp_path):
    with pytest.raises(ValueError, match="absent.stol"):
        read_stol(tmp_path / "absent.stol")
    binary = tmp_path / "b.stol"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ValueError, match="b.stol: not a text file"):
        read_stol(binary)


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"thickness_mm": -1}, "thickness_mm"),
        ({"molecular_weight": 0}, "molecular_weight"),
        ({"scale": float("nan")}, "scale"),
    ],
)
def test_bad_background_fields(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        AmorphousBackground(**kwargs)


# ------------------------------------------------------------- the background
def test_background_is_linear_in_volume_density_and_scale():
    detector = Detector(fpixels=16, distance_mm=100.0, oversample=1)
    base = simulate_background(detector, Beam(), AmorphousBackground("water"), dtype=F64)
    doubled = simulate_background(
        detector, Beam(), AmorphousBackground("water", thickness_mm=0.2, density_g_cm3=0.5, scale=2.0), dtype=F64
    )
    torch.testing.assert_close(doubled, 2 * base, rtol=1e-12, atol=0)


def test_simulate_adds_the_background_to_the_spots():
    crystal = Crystal(cell=(100, 100, 100, 90, 90, 90), N_cells=(5, 5, 5), default_F=100.0, misset_deg=(5, 3, -2))
    detector = Detector(fpixels=24, distance_mm=100.0, oversample=1)
    beam = Beam(divergence_mrad=(1.0, 1.0), divergence_steps=(2, 2))
    background = AmorphousBackground("water", thickness_mm=0.01, width_mm=0.01, height_mm=0.01)
    both = simulate(crystal, detector, beam, background=background, dtype=F64)
    spots = simulate(crystal, detector, beam, dtype=F64)
    alone = simulate_background(detector, beam, background, oversample=1, dtype=F64)
    torch.testing.assert_close(both, spots + alone, rtol=1e-12, atol=0)


def _water(tmp_path, capsys, fluence: str) -> np.ndarray:
    spots, both = tmp_path / f"spots{fluence}.bin", tmp_path / f"water{fluence}.bin"
    common = [*SMALL, "-fluence", fluence, "-mosaic", "0.5", "-mosaic_dom", "4"]
    assert run(capsys, "simulate", *common, "-floatfile", spots)[0] == 0
    assert run(capsys, "simulate", *common, "-water", "50", "-floatfile", both)[0] == 0
    return np.fromfile(both, "<f4").astype(np.float64) - np.fromfile(spots, "<f4")


def test_water_flag_is_nonbraggs_water_not_nanobragg_cs(tmp_path, capsys):
    water = _water(tmp_path, capsys, "1e24")
    # nonBragg for the same 50 um cube: -samplesize 0.05 on the same detector; nonBragg's
    # -Xbeam/-Ybeam are MOSFLM's Fbeam/Sbeam, 1.65 mm + half a pixel
    nonbragg = tmp_path / "nonbragg.bin"
    status = run(
        capsys,
        "nonbragg",
        "-stol",
        "water",
        "-samplesize",
        "0.05",
        "-detpixels",
        "32",
        "-distance",
        "100",
        "-fluence",
        "1e24",
        "-Xbeam",
        "1.7",
        "-Ybeam",
        "1.7",
        "-floatfile",
        nonbragg,
    )[0]
    assert status == 0
    np.testing.assert_allclose(water, np.fromfile(nonbragg, "<f4"), rtol=1e-5)
    # linear in the fluence (nanoBragg.c's -water goes with its square) and not divided by
    # the mosaic domains (nanoBragg.c's is)
    np.testing.assert_allclose(_water(tmp_path, capsys, "1e25"), 10 * water, rtol=1e-3)


# --------------------------------------------------------------- nonbragg CLI
def test_nonbragg_help_lists_flags_and_refusals(capsys):
    status, out, _ = run(capsys, "nonbragg", "--help")
    assert status == 0 and "-stol" in out and "-Fmap" in out and "-img" in out and "not implemented" in out


def test_nonbragg_sourcefile_weights_count(tmp_path, capsys):
    one, two = tmp_path / "one.txt", tmp_path / "two.txt"
    one.write_text("-10 0 0 1\n")
    two.write_text("-10 0 0 2\n")
    images = []
    for sources in (one, two):
        out = tmp_path / f"{sources.stem}.bin"
        assert (
            run(capsys, "nonbragg", "-stol", "water", "-detpixels", "16", "-sourcefile", sources, "-floatfile", out)[0]
            == 0
        )
        images.append(np.fromfile(out, "<f4"))
    np.testing.assert_allclose(images[1], 2 * images[0], rtol=1e-6)


def test_nonbragg_molecules_sets_the_density(tmp_path, capsys):
    by_density, by_count = tmp_path / "d.bin", tmp_path / "n.bin"
    common = ["nonbragg", "-stol", "water", "-detpixels", "16", "-samplesize", "0.05"]
    molecules = 0.05**3 * 1e-3 * 1.0 * 6.02214179e23 / 18.0
    assert run(capsys, *common, "-floatfile", by_density)[0] == 0
    assert run(capsys, *common, "-molecules", repr(molecules), "-floatfile", by_count)[0] == 0
    np.testing.assert_allclose(np.fromfile(by_count, "<f4"), np.fromfile(by_density, "<f4"), rtol=1e-6)


def test_nonbragg_fmap_writes_F(tmp_path, capsys):
    out = tmp_path / "f.bin"
    assert run(capsys, "nonbragg", "-stol", "water", "-detpixels", "16", "-Fmap", "-floatfile", out)[0] == 0
    image = np.fromfile(out, "<f4")
    assert image.min() > 2.0 and image.max() <= 2.6  # water's F falls slowly from 2.57 at small angles


# ------------------------------------------------------------------- outputs
def test_pgm_and_intfile_follow_nanobragg(tmp_path, capsys):
    floatfile, pgm, intfile = tmp_path / "a.bin", tmp_path / "a.pgm", tmp_path / "a.img"
    status, out, err = run(
        capsys, "simulate", *SMALL, "-floatfile", floatfile, "-pgmfile", pgm, "-intfile", intfile, "-adc", "0"
    )
    assert status == 0, err
    image = np.fromfile(floatfile, "<f4").astype(np.float64).reshape(32, 32)
    raw = pgm.read_bytes()
    header = re.match(rb"P5\n(\d+) (\d+)\n# pixels scaled by (\S+)\n255\n", raw)
    assert header and header.group(1) == b"32" and header.group(2) == b"32"
    scale = 250.0 / (5.0 * image.std(ddof=1))
    assert float(header.group(3)) == pytest.approx(scale, rel=1e-5)
    pixels = np.frombuffer(raw[header.end() :], dtype=np.uint8).reshape(32, 32)
    np.testing.assert_array_equal(pixels, np.clip(image * float(header.group(3)), 0, 255).astype(np.uint8))
    counts = np.frombuffer(intfile.read_bytes()[512:], dtype="<u2").reshape(32, 32)
    assert counts.max() == 55000  # -adc 0: no offset


def test_stolout_profile(tmp_path, capsys):
    out = tmp_path / "p.txt"
    assert run(capsys, "simulate", *SMALL, "-stolout", out)[0] == 0
    rows = np.loadtxt(out)
    assert rows.shape[1] == 4 and np.all(np.diff(rows[:, 0]) > 0) and rows[:, 3].sum() == 32 * 32


def test_printout_pixel_prints_that_pixel(tmp_path, capsys):
    floatfile = tmp_path / "a.bin"
    status, out, _ = run(capsys, "simulate", *SMALL, "-printout_pixel", "7", "9", "-floatfile", floatfile)
    assert status == 0
    line = next(line for line in out.splitlines() if line.startswith("   7    9 :"))
    value = float(line.split("pixel")[-1])
    assert value == pytest.approx(float(np.fromfile(floatfile, "<f4").reshape(32, 32)[9, 7]), rel=1e-6)


def test_dump_round_trip(tmp_path, capsys):
    hkl, dump = tmp_path / "f.hkl", tmp_path / "F.bin"
    hkl.write_text("0 0 1 10\n1 0 0 20\n0 1 0 30\n1 1 1 40\n")
    with_hkl, from_dump = tmp_path / "a.bin", tmp_path / "b.bin"
    base = ["-cell", "100", "100", "100", "90", "90", "90", "-N", "5", "-detpixels", "32", "-oversample", "1"]
    assert run(capsys, "simulate", *base, "-hkl", hkl, "-dump", dump, "-floatfile", with_hkl)[0] == 0
    assert dump.read_bytes().startswith(b"0 1 0 1 0 1\n\f")
    assert run(capsys, "simulate", *base, "-dump", dump, "-floatfile", from_dump)[0] == 0
    reference = np.fromfile(with_hkl, "<f4")
    assert reference.sum() > 0
    np.testing.assert_array_equal(np.fromfile(from_dump, "<f4"), reference)


def test_progress_meter(capsys):
    status, out, _ = run(capsys, "simulate", *SMALL, "-progress")
    assert status == 0 and "100% done" in out


def test_mask_and_img_headers(tmp_path, capsys):
    mask_image = np.ones((32, 32))
    mask_image[:, :10] = 0
    mask = tmp_path / "mask.img"
    write_smv(mask, mask_image, detector=Detector(fpixels=32, pixel_size_mm=0.1, distance_mm=100), scale=1.0)
    out = tmp_path / "m.bin"
    assert run(capsys, "simulate", *SMALL, "-mask", mask, "-floatfile", out)[0] == 0
    image = np.fromfile(out, "<f4").reshape(32, 32)
    assert np.all(image[:, :10] == 0) and image[:, 10:].sum() > 0
    header = tmp_path / "h.img"
    write_smv(
        header,
        np.zeros((20, 24)),
        detector=Detector(fpixels=24, spixels=20, pixel_size_mm=0.2, distance_mm=80),
        beam=Beam(wavelength_A=1.3),
    )
    status, out, _ = run(capsys, "simulate", *[a for a in SMALL if a not in ("-detpixels", "32")], "-img", header)
    assert status == 0 and "24x20 pixels" in out and "distance=80 mm" in out and "wavelength=1.3 A" in out


# ------------------------------------------------------------ bad input, CLI
@pytest.mark.parametrize(
    "extra,fragment",
    [
        (["-water", "10", "-stol", "{tmp}/absent.stol"], "absent.stol"),
        (["-water", "10", "-stol", "{tmp}/empty.stol"], "no data"),
        (["-water", "10", "-stol", "{tmp}/garbled.stol"], "line 2"),
        (["-sourcefile", "{tmp}/garbled.txt"], "garbled.txt, line 1"),
        (["-sourcefile", "{tmp}/empty.stol"], "no data"),
        (["-detector_thick", "0"], "-detector_thick"),
        (["-detector_thick", "-5"], "-detector_thick"),
        (["-detector_thick", "100", "-detector_thicksteps", "0"], "-detector_thicksteps"),
        (["-detector_thicksteps", "3"], "need -detector_thick"),
        (["-detector_abs", "inf", "-detector_thick", "100"], "all-zero"),
        (["-dispsteps", "0"], "-dispsteps"),
        (["-dispersion", "1", "-dispsteps", "-2"], "-dispsteps"),
        (["-hdivsteps", "0"], "-hdivsteps"),
        (["-dispsteps", "4"], "need a range"),
        (["-divsteps", "4"], "need a range"),
        (["-stol", "water"], "only take effect with -water"),
        (["-density", "2"], "only take effect with -water"),
        (["-exposure", "2"], "without -flux"),
        (["-flux", "1e12", "-fluence", "1e20"], "give one"),
        (["-misset_seed", "3"], "without -misset random"),
        (["-pgmscale", "2"], "-pgmfile"),
        (["-Xclose", "2"], "no effect with the MOSFLM"),
        (["-fdet_vector", "0", "0", "1", "-xds"], "resets the detector vectors"),
        (["-detsize", "5"], "no effect with a pixel count"),
        (["-mask", "{tmp}/absent.img"], "absent.img"),
        (["-mask", "{tmp}/empty.stol"], "empty.stol"),
        (["-img", "{tmp}/garbled.stol"], "garbled.stol"),
        (["-dump", "{tmp}/empty.stol"], "empty.stol"),
        (["-roi", "1", "2", "3"], "-roi"),
        (["-polar", "3"], "Kahn"),
    ],
)
def test_bad_simulate_input_is_one_line_and_writes_nothing(extra, fragment, tmp_path, capsys):
    (tmp_path / "empty.stol").write_text("")
    (tmp_path / "garbled.stol").write_text("0 1\nzero 2\n")
    (tmp_path / "garbled.txt").write_text("-10 0 O\n")
    before = sorted(os.listdir(tmp_path))
    out = tmp_path / "never.bin"
    status, stdout, err = run(capsys, "simulate", *SMALL, *[a.format(tmp=tmp_path) for a in extra], "-floatfile", out)
    assert status == 2, stdout
    assert err.count("\n") == 1 and err.startswith("braggsim: error:") and fragment in err and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.parametrize(
    "extra,fragment",
    [
        ([], "give the material with -stol"),
        (["-stol", "{tmp}/absent.stol"], "absent.stol"),
        (["-stol", "water", "-thickness", "0"], "-thickness"),
        (["-stol", "water", "-oversample", "0"], "-oversample"),
        (["-stol", "water", "-img", "x.img"], "not implemented"),
        (["-stol", "water", "-bogus", "1"], "-bogus"),
        (["-stol", "water", "-detpixels", "inf"], "-detpixels"),
        (["-stol", "water", "-pgmscale", "3"], "-pgmfile"),
    ],
)
def test_bad_nonbragg_input_is_one_line_and_writes_nothing(extra, fragment, tmp_path, capsys):
    out = tmp_path / "never.bin"
    status, _, err = run(capsys, "nonbragg", *[a.format(tmp=tmp_path) for a in extra], "-floatfile", out)
    assert status == 2 and err.count("\n") == 1 and fragment in err and "Traceback" not in err
    assert not out.exists()


def test_nonbragg_noisefile_is_nanobraggs_noise_of_the_image(tmp_path, capsys):
    from braggsim.noise import nanobragg_noise

    floatfile, noisefile = tmp_path / "w.bin", tmp_path / "w.img"
    argv = ["nonbragg", "-stol", "water", "-detpixels", "16", "-fluence", "1e20", "-seed", "4", "-adc", "10"]
    assert run(capsys, *argv, "-floatfile", floatfile, "-noisefile", noisefile)[0] == 0
    image = np.fromfile(floatfile, "<f4").reshape(16, 16)
    counts = np.frombuffer(noisefile.read_bytes()[512:], dtype="<u2").reshape(16, 16)
    np.testing.assert_array_equal(counts, nanobragg_noise(image, seed=4, adc_offset_adu=10).counts)
    assert image.mean() > 1  # enough photons that the draws are not all zero
