"""Bad input fails early with a ValueError that names the value and says why."""

from __future__ import annotations

import math
import os

import pytest
import torch

import braggsim
from braggsim import cli
from braggsim.nanobragg_flags import parse_flags

NAN = float("nan")
CUBIC = (100.0, 100.0, 100.0, 90.0, 90.0, 90.0)


@pytest.mark.parametrize(
    "cell,pattern",
    [
        ((0.0, 100, 100, 90, 90, 90), r"cell edge a must be > 0, got 0\.0"),
        ((100, -5.0, 100, 90, 90, 90), r"cell edge b must be > 0, got -5\.0"),
        ((100, 100, NAN, 90, 90, 90), r"cell edge c must be a finite number, got nan"),
        ((100, 100, 100, 0.0, 90, 90), r"cell angle alpha must lie in \(0, 180\) deg, got 0\.0"),
        ((100, 100, 100, 90, 180.0, 90), r"cell angle beta must lie in \(0, 180\) deg, got 180\.0"),
        ((100, 100, 100, 90, 90, NAN), r"cell angle gamma must be a finite number, got nan"),
        # gamma larger than alpha + beta: no such cell exists
        ((100, 100, 100, 30.0, 40.0, 100.0), r"impossible cell angles alpha=30\.0, beta=40\.0, gamma=100\.0"),
        # angles summing to more than 360 deg
        ((100, 100, 100, 150.0, 150.0, 150.0), r"impossible cell angles"),
        ((100, 100, 100, 90, 90), r"cell must have 6 entries"),
    ],
)
def test_bad_cell(cell, pattern):
    with pytest.raises(ValueError, match=pattern):
        braggsim.Crystal(cell=cell, default_F=1)


def test_flat_cell_with_angles_summing_to_360_is_rejected():
    with pytest.raises(ValueError, match="impossible cell angles"):
        braggsim.Crystal(cell=(100, 100, 100, 120.0, 120.0, 120.0), default_F=1)


def test_bad_cell_given_as_tensors_is_caught_too():
    with pytest.raises(ValueError, match=r"cell edge a must be > 0, got -1\.0"):
        braggsim.Crystal(cell=(torch.tensor(-1.0, requires_grad=True), 100, 100, 90, 90, 90), default_F=1)


@pytest.mark.parametrize(
    "n_cells,pattern",
    [
        ((0, 5, 5), r"N_cells Na must be >= 1, got 0"),
        ((5, 0.5, 5), r"N_cells Nb must be >= 1, got 0\.5"),
        ((5, 5, -3), r"N_cells Nc must be >= 1, got -3"),
        ((5, 5, NAN), r"N_cells Nc must be a finite number, got nan"),
    ],
)
def test_bad_number_of_cells(n_cells, pattern):
    with pytest.raises(ValueError, match=pattern):
        braggsim.Crystal(cell=CUBIC, N_cells=n_cells, default_F=1)


@pytest.mark.parametrize(
    "field,value,pattern",
    [
        ("misset_deg", (0.0, NAN, 0.0), r"misset_deg\[y\] must be a finite number, got nan"),
        ("mosaic_spread_deg", NAN, r"mosaic_spread_deg must be a finite number, got nan"),
        ("mosaic_spread_deg", -0.1, r"mosaic_spread_deg must be >= 0, got -0\.1"),
        ("mosaic_domains", 0, r"mosaic_domains must be >= 1, got 0"),
        ("default_F", NAN, r"default_F must be a finite number, got nan"),
        ("phi_start_deg", NAN, r"phi_start_deg must be a finite number, got nan"),
        ("osc_deg", -1.0, r"osc_deg must be >= 0, got -1\.0"),
        ("shape", "cubic", r"shape must be one of .*got 'cubic'"),
    ],
)
def test_bad_crystal_fields(field, value, pattern):
    with pytest.raises(ValueError, match=pattern):
        braggsim.Crystal(cell=CUBIC, **{"default_F": 1.0, field: value})


@pytest.mark.parametrize(
    "wavelength,pattern",
    [
        (0.0, r"wavelength_A must be > 0, got 0\.0 A"),
        (-1.0, r"wavelength_A must be > 0, got -1\.0 A"),
        (NAN, r"wavelength_A must be a finite number, got nan"),
        (math.inf, r"wavelength_A must be a finite number, got inf"),
    ],
)
def test_bad_wavelength(wavelength, pattern):
    with pytest.raises(ValueError, match=pattern):
        braggsim.Beam(wavelength_A=wavelength)


def test_bad_beam_fields():
    with pytest.raises(ValueError, match=r"fluence must be a finite number, got nan"):
        braggsim.Beam(fluence=NAN)
    with pytest.raises(ValueError, match=r"polarization \(Kahn factor\) must lie in \[-1, 1\], got 1\.5"):
        braggsim.Beam(polarization=1.5)


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        ({"fpixels": 0}, r"fpixels must be >= 1, got 0"),
        ({"fpixels": 8, "spixels": 0}, r"spixels must be >= 1, got 0"),
        ({"fpixels": 8, "pixel_size_mm": 0.0}, r"pixel_size_mm must be > 0, got 0\.0 mm"),
        ({"fpixels": 8, "pixel_size_mm": NAN}, r"pixel_size_mm must be a finite number, got nan"),
        ({"fpixels": 8, "distance_mm": -100.0}, r"distance_mm must be > 0, got -100\.0 mm"),
        ({"fpixels": 8, "distance_mm": NAN}, r"distance_mm must be a finite number, got nan"),
        ({"fpixels": 8, "beam_center_mm": (NAN, 1.0)}, r"beam_center_mm Xbeam must be a finite number, got nan"),
        ({"fpixels": 8, "rotation_deg": (0, 0, NAN)}, r"rotation_deg\[z\] must be a finite number, got nan"),
        ({"fpixels": 8, "twotheta_deg": NAN}, r"twotheta_deg must be a finite number, got nan"),
        ({"fpixels": 8, "oversample": 0}, r"oversample must be >= 1, got 0"),
        ({"fpixels": 8, "convention": "cbf"}, r"convention must be one of .*got 'cbf'"),
        ({"fpixels": 2.5}, r"fpixels must be an integer, got 2\.5"),
    ],
)
def test_bad_detector(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        braggsim.Detector(**kwargs)


def test_no_structure_factors_is_an_error():
    with pytest.raises(ValueError, match="no structure factors"):
        braggsim.simulate(braggsim.Crystal(cell=CUBIC), braggsim.Detector(fpixels=4))


@pytest.mark.parametrize(
    "lines,bad_line,what",
    [
        (["1 0 0 10.0", "0 1 0 12.0", "0 0 1 x"], 3, "integers h k l and a number F"),
        (["1 0 0 10.0", "# a comment", "", "0 1 0"], 4, "expected 'h k l F'"),
        (["1.5 0 0 10.0"], 1, "integers h k l"),
        (["1 0 0 10.0", "0 1 0 nan"], 2, "F must be finite"),
    ],
)
def test_malformed_hkl_line_names_file_and_line(tmp_path, lines, bad_line, what):
    path = tmp_path / "bad.hkl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as info:
        braggsim.read_hkl(path)
    message = str(info.value)
    assert str(path) in message and f"line {bad_line}" in message and what in message
    # the same error reaches the user through Crystal and through the CLI
    with pytest.raises(ValueError, match=f"line {bad_line}"):
        braggsim.Crystal(cell=CUBIC, hkl=path)


def test_missing_hkl_file_names_it(tmp_path):
    path = tmp_path / "absent.hkl"
    with pytest.raises(ValueError, match="absent.hkl"):
        braggsim.read_hkl(path)


@pytest.mark.parametrize("flag", ["-bogus", "-noise", "-readout_noise", "-adcx"])
def test_unsupported_flag_names_the_flag(flag):
    with pytest.raises(ValueError, match=f"unsupported flag '{flag}'"):
        parse_flags(["-cell", *map(str, CUBIC), "-default_F", "1", flag, "1"])


def test_stray_value_is_an_error():
    with pytest.raises(ValueError, match=r"unexpected argument '7'"):
        parse_flags(["-cell", *map(str, CUBIC), "-default_F", "1", "-N", "5", "7"])


def test_failing_cli_run_leaves_nothing_behind(tmp_path, capsys):
    hkl = tmp_path / "bad.hkl"
    hkl.write_text("1 0 0 10\n0 1 0 oops\n")
    floatfile, intfile = tmp_path / "out.bin", tmp_path / "out.img"
    status = cli.main(
        [
            "simulate",
            "-cell",
            *map(str, CUBIC),
            "-hkl",
            str(hkl),
            "-detpixels",
            "8",
            "-floatfile",
            str(floatfile),
            "-intfile",
            str(intfile),
        ]
    )
    err = capsys.readouterr().err
    assert status == 2 and "line 2" in err and str(hkl) in err
    assert sorted(os.listdir(tmp_path)) == ["bad.hkl"]
