"""The ``braggsim`` command line: help, simulate outputs, errors, dispatch."""

from __future__ import annotations

import os
import re
import sys
import types

import numpy as np
import pytest

from braggsim import cli
from braggsim.nanobragg_flags import SUPPORTED_FLAGS

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
    "-lambda",
    "1",
    "-distance",
    "100",
    "-pixel",
    "0.1",
    "-detpixels",
    "32",
    "-oversample",
    "1",
]


def run(capsys, *argv):
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def read_smv(path):
    raw = path.read_bytes()
    header_bytes = int(re.search(rb"HEADER_BYTES=\s*(\d+);", raw[:512]).group(1))
    header = dict(re.findall(r"(\w+)=([^;]*);", raw[:header_bytes].decode("ascii", "replace")))
    size1, size2 = int(header["SIZE1"]), int(header["SIZE2"])
    data = np.frombuffer(raw[header_bytes:], dtype="<u2").reshape(size2, size1)
    return header, data


def test_top_level_help_lists_the_commands(capsys):
    status, out, _ = run(capsys, "--help")
    assert status == 0
    for command in ("simulate", "refine", "demo"):
        assert command in out


def test_no_command_is_a_usage_error(capsys):
    status, out, _ = run(capsys)
    assert status == 2 and "usage" in out


def test_unknown_command_is_an_error(capsys):
    status, _, err = run(capsys, "simulat")
    assert status == 2
    assert err.startswith("braggsim: error:") and "'simulat'" in err


def test_simulate_help_documents_every_supported_flag(capsys):
    status, out, _ = run(capsys, "simulate", "--help")
    assert status == 0
    missing = [flag for flag in SUPPORTED_FLAGS if not re.search(re.escape(flag) + r"(?![\w])", out)]
    assert missing == []


def test_simulate_prints_a_nanobragg_like_summary(capsys):
    status, out, _ = run(capsys, "simulate", *SMALL, "-mosaic", "0.5", "-mosaic_dom", "3")
    assert status == 0
    assert "user-specified 1-fold oversampling" in out
    assert "3 mosaic domains over mosaic spread of 0.5 degrees" in out
    max_line = next(line for line in out.splitlines() if line.startswith("max_I"))
    assert float(max_line.split()[2]) > 0
    assert re.search(r"^mean= \S+", out, re.M) and re.search(r"^sum= \S+", out, re.M)


def test_auto_oversample_is_reported(capsys):
    # crystal 5 x 100 A at 1 A, 100 mm, 0.1 mm pixels: ceil(3 * 500 / 1000) = 2
    argv = SMALL[: SMALL.index("-oversample")]
    status, out, _ = run(capsys, "simulate", *argv)
    assert status == 0 and "auto-selected 2-fold oversampling" in out


def test_floatfile_and_intfile_agree(tmp_path, capsys):
    floatfile, intfile = tmp_path / "img.bin", tmp_path / "img.img"
    status, out, err = run(
        capsys, "simulate", *SMALL, "-phi", "10", "-osc", "1", "-floatfile", str(floatfile), "-intfile", str(intfile)
    )
    assert status == 0, err
    image = np.fromfile(floatfile, dtype="<f4").reshape(32, 32)
    header, counts = read_smv(intfile)
    assert (header["SIZE1"], header["SIZE2"]) == ("32", "32")
    assert float(header["DISTANCE"]) == 100 and float(header["PIXEL_SIZE"]) == 0.1
    assert float(header["WAVELENGTH"]) == 1.0
    assert float(header["OSC_START"]) == 10 and float(header["OSC_RANGE"]) == 1
    # nanoBragg's -intfile scale: the brightest pixel becomes 55000 counts, plus the ADC offset 40
    scale = 55000.0 / image.max()
    np.testing.assert_array_equal(counts, np.floor(image.astype(np.float64) * scale + 40 + 0.5).astype(np.uint16))
    assert counts.max() == 55040
    assert sorted(os.listdir(tmp_path)) == ["img.bin", "img.img"]


def test_intfile_scale_flag(tmp_path, capsys):
    intfile = tmp_path / "img.img"
    status, _, err = run(capsys, "simulate", *SMALL, "-intfile", str(intfile), "-scale", "2")
    assert status == 0, err
    floatfile = tmp_path / "img.bin"
    run(capsys, "simulate", *SMALL, "-floatfile", str(floatfile))
    image = np.fromfile(floatfile, dtype="<f4").reshape(32, 32)
    _, counts = read_smv(intfile)
    np.testing.assert_array_equal(counts, np.floor(image.astype(np.float64) * 2 + 40 + 0.5).astype(np.uint16))


@pytest.mark.parametrize(
    "extra,named",
    [
        (["-bogus_flag", "3"], "-bogus_flag"),
        (["-coherent"], "-coherent"),  # a nanoBragg.c flag braggsim refuses, with its reason
        (["-sourcefile", "x.txt"], "x.txt"),  # a missing source file is named
    ],
)
def test_unsupported_flag_is_an_error_naming_it(extra, named, tmp_path, capsys):
    out = tmp_path / "never.bin"
    status, stdout, err = run(capsys, "simulate", *SMALL, *extra, "-floatfile", str(out))
    assert status == 2
    assert err.startswith("braggsim: error:") and named in err
    assert "Traceback" not in err and stdout == ""
    assert not out.exists()


@pytest.mark.parametrize(
    "extra,fragment",
    [
        (["-dtype", "float16"], "float16"),
        (["-N"], "-N"),
        (["-cell", "-100"], "-cell"),
        (["-distance", "far"], "far"),
        (["-detpixels", "0"], "fpixels"),
        (["-lambda", "-1"], "-lambda"),
        (["-distance", "nan"], "-distance"),
        (["-pixel", "0", "-detsize", "10"], "-pixel"),
        (["-detsize", "0"], "-detsize"),
        (["-scale", "0"], "-scale"),
        (["-mosaic_seed", "inf"], "-mosaic_seed"),
        (["-mosaic_seed", "99999999999"], "-mosaic_seed"),
        (["-detpixels", "inf"], "-detpixels"),
        (["-oversample", "inf"], "-oversample"),
    ],
)
def test_bad_values_are_one_line_errors(extra, fragment, tmp_path, capsys):
    out = tmp_path / "never.bin"
    status, _, err = run(capsys, "simulate", *SMALL, *extra, "-floatfile", str(out))
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("braggsim: error:") and fragment in err
    assert os.listdir(tmp_path) == []


def test_resource_failure_is_reported_without_traceback(capsys):
    # 1e-13 A: nanoBragg's automatic rule asks for ~1.5e13 subpixels per edge, which cannot be
    # computed in any time: refused up front with the estimate, before anything is allocated
    argv = SMALL[: SMALL.index("-lambda")] + [
        "-lambda",
        "1e-13",
        "-distance",
        "100",
        "-pixel",
        "0.1",
        "-detpixels",
        "8",
    ]
    status, _, err = run(capsys, "simulate", *argv)
    assert status == 2
    assert err.startswith("braggsim: error: this simulation") and "would take at least" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_missing_output_directory_fails_before_simulating(tmp_path, capsys):
    status, out, err = run(capsys, "simulate", *SMALL, "-floatfile", str(tmp_path / "no" / "such" / "x.bin"))
    assert status == 2 and "does not exist" in err
    assert "max_I" not in out  # no time spent simulating


def test_unavailable_device_is_an_error(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    status, _, err = run(capsys, "simulate", *SMALL, "-device", "cuda")
    assert status == 2 and "cuda" in err


def test_failing_writer_leaves_nothing_half_written(tmp_path, capsys, monkeypatch):
    floatfile, intfile = tmp_path / "a.bin", tmp_path / "a.img"
    real_write_float, _ = cli._writers()

    def broken_write_smv(path, image, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"{\nHEADER_BYTES=512;")  # a torn file, as a full disk would leave
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli, "_writers", lambda: (real_write_float, broken_write_smv))
    status, _, err = run(capsys, "simulate", *SMALL, "-floatfile", str(floatfile), "-intfile", str(intfile))
    assert status == 2 and "No space left on device" in err
    # the float file was complete, but is not published alone, and no temporary is left
    assert os.listdir(tmp_path) == []


def test_failing_run_keeps_an_existing_output_intact(tmp_path, capsys):
    floatfile = tmp_path / "keep.bin"
    floatfile.write_bytes(b"previous result")
    status, _, _ = run(capsys, "simulate", *SMALL, "-N", "-3", "-floatfile", str(floatfile))
    assert status == 2
    assert floatfile.read_bytes() == b"previous result"
    assert os.listdir(tmp_path) == ["keep.bin"]


@pytest.mark.parametrize("command,entry", [("refine", "refine_main"), ("demo", "demo_main")])
def test_refine_and_demo_dispatch_to_refine_cli(command, entry, monkeypatch):
    calls = []
    fake = types.ModuleType("braggsim.refine_cli")
    fake.refine_main = lambda argv: calls.append(("refine_main", argv)) or 0
    fake.demo_main = lambda argv: calls.append(("demo_main", argv)) or 3
    monkeypatch.setitem(sys.modules, "braggsim.refine_cli", fake)
    status = cli.main([command, "--help", "-x", "1"])
    assert calls == [(entry, ["--help", "-x", "1"])]
    assert status == (0 if command == "refine" else 3)


@pytest.mark.parametrize("command", ["refine", "demo"])
def test_missing_refine_cli_is_a_clear_error(command, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "braggsim.refine_cli", None)  # import now fails
    status, _, err = run(capsys, command)
    assert status == 2
    assert f"'braggsim {command}' is not available" in err and "Traceback" not in err
