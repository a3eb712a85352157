"""Parity with nanoBragg: every golden case, float64 and float32, API and CLI.

The references in tests/data are nanoBragg's own -floatfile images (see
tests/data/README.md).  A faithful simulator gives Pearson r >= 0.9999 and a total
within 0.1 % of nanoBragg's.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from braggsim import cli, simulate
from braggsim.nanobragg_flags import parse_flags
from tests.conftest import DATA

pytestmark = pytest.mark.torch_path  # CI runs these on the torch path too (BRAGGSIM_NATIVE=0)

CASES = json.loads((DATA / "cases.json").read_text())
CASE_NAMES = [case["name"] for case in CASES]
MIN_PEARSON = 0.9999
MAX_TOTAL_ERROR = 1e-3


def case_args(case: dict) -> list[str]:
    args = shlex.split(case["args"])
    if case.get("hkl"):
        args += ["-hkl", str(DATA / case["hkl"])]
    if case.get("sourcefile"):
        args += ["-sourcefile", str(DATA / case["sourcefile"])]
    return args


def reference(name: str) -> np.ndarray:
    shape = json.loads((DATA / f"{name}.json").read_text())["shape_slow_fast"]
    return np.fromfile(DATA / f"{name}.bin", dtype="<f4").reshape(shape)


def assert_matches(image: np.ndarray, expected: np.ndarray) -> None:
    assert image.shape == expected.shape
    assert np.all(np.isfinite(image))
    pearson = np.corrcoef(image.ravel().astype(np.float64), expected.ravel().astype(np.float64))[0, 1]
    total_error = abs(float(image.sum(dtype=np.float64)) / float(expected.sum(dtype=np.float64)) - 1)
    assert pearson >= MIN_PEARSON, f"Pearson r = {pearson:.7f}"
    assert total_error <= MAX_TOTAL_ERROR, f"total differs by {total_error:.2e}"


def test_every_golden_case_is_listed_with_its_files():
    assert len(CASES) == 15  # p01-p16 (there is no p12)
    for case in CASES:
        assert (DATA / f"{case['name']}.bin").is_file()
        assert reference(case["name"]).sum() > 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", CASE_NAMES)
def test_api_reproduces_nanobragg(name, dtype):
    case = next(c for c in CASES if c["name"] == name)
    flags = parse_flags(case_args(case))
    image = simulate(flags.crystal, flags.detector, flags.beam, dtype=dtype)
    assert image.dtype == dtype
    assert tuple(image.shape) == flags.detector.shape
    assert_matches(image.numpy(), reference(name))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", CASE_NAMES)
def test_cli_floatfile_reproduces_nanobragg(name, dtype, tmp_path, capsys):
    case = next(c for c in CASES if c["name"] == name)
    out = tmp_path / "out.bin"
    status = cli.main(["simulate", *case_args(case), "-dtype", dtype, "-floatfile", str(out)])
    assert status == 0, capsys.readouterr().err
    expected = reference(name)
    # raw float32, no header, slow axis first: exactly the nanoBragg layout
    assert out.stat().st_size == expected.size * 4
    assert_matches(np.fromfile(out, dtype="<f4").reshape(expected.shape), expected)
    assert "max_I" in capsys.readouterr().out


def test_cli_subprocess_matches_nanobragg_and_reports(tmp_path):
    """One real run of the installed console script (p02: auto oversample, mosaic, seed)."""
    case = next(c for c in CASES if c["name"] == "p02_seed_truth")
    out = tmp_path / "p02.bin"
    script = shutil.which("braggsim", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "braggsim.cli"]
    result = subprocess.run(
        [*command, "simulate", *case_args(case), "-floatfile", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert_matches(np.fromfile(out, dtype="<f4").reshape(64, 64), reference("p02_seed_truth"))
    # nanoBragg said: auto-selected 2-fold oversampling, 5 domains, max_I = 9.91126
    assert "auto-selected 2-fold oversampling" in result.stdout
    assert "5 mosaic domains" in result.stdout
    max_line = next(line for line in result.stdout.splitlines() if line.startswith("max_I"))
    assert float(max_line.split()[2]) == pytest.approx(9.91126, rel=1e-4)
    # nanoBragg reports the brightest pixel at Fdet 0.004075 m, Sdet 0.006375 m
    assert "(pixel slow=63 fast=40)" in max_line


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", CASE_NAMES)
def test_cuda_reproduces_nanobragg_and_the_cpu(name, dtype):
    """The torch path on a GPU: nanoBragg parity, and the CPU image to float rounding."""
    case = next(c for c in CASES if c["name"] == name)
    flags = parse_flags(case_args(case))
    image = simulate(flags.crystal, flags.detector, flags.beam, dtype=dtype, device="cuda")
    assert image.device.type == "cuda" and image.dtype == dtype
    on_gpu = image.cpu().numpy()
    assert_matches(on_gpu, reference(name))
    on_cpu = simulate(flags.crystal, flags.detector, flags.beam, dtype=dtype).numpy()
    tolerance = 1e-9 if dtype == torch.float64 else 1e-4
    assert np.abs(on_gpu - on_cpu).max() <= tolerance * np.abs(on_cpu).max()


@needs_cuda
def test_cuda_gradients_match_the_cpu():
    from braggsim import Beam, Crystal, Detector

    def gradient(device):
        spread = torch.tensor(0.5, dtype=torch.float64, device=device, requires_grad=True)
        misset = torch.tensor([5.0, 3.0, -2.0], dtype=torch.float64, device=device, requires_grad=True)
        crystal = Crystal(
            cell=(100, 100, 100, 90, 90, 90),
            N_cells=(5, 5, 5),
            default_F=100,
            misset_deg=tuple(misset.unbind()),
            mosaic_spread_deg=spread,
            mosaic_domains=5,
        )
        detector = Detector(fpixels=32, spixels=32, pixel_size_mm=0.2, distance_mm=100, oversample=2)
        image = simulate(crystal, detector, Beam(wavelength_A=1.0), dtype=torch.float64, device=device)
        image.sum().backward()
        return torch.cat([spread.grad.reshape(1), misset.grad]).cpu()

    torch.testing.assert_close(gradient("cuda"), gradient("cpu"), rtol=1e-8, atol=0)


def test_cli_picks_float64_for_a_large_crystal(tmp_path, capsys):
    """p16 has 50 cells a side: without -dtype the command line computes in float64."""
    case = next(c for c in CASES if c["name"] == "p16_flux_xtalsize")
    out = tmp_path / "p16.bin"
    assert cli.main(["simulate", *case_args(case), "-floatfile", str(out)]) == 0
    assert "float64 arithmetic: the crystal is 50 cells along an edge" in capsys.readouterr().out
    image = np.fromfile(out, dtype="<f4").astype(np.float64)
    expected = reference("p16_flux_xtalsize").ravel().astype(np.float64)
    assert abs(image.sum() / expected.sum() - 1) < 1e-7
