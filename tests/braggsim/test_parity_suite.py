"""Parity with nonBragg (suite/) and with held-out nanoBragg/nonBragg cases (heldout/).

The suite cases n01 and n02 are nonBragg's own images (../shared/golden/suite); the
held-out cases were made with nanoBragg.c and nonBragg.c rebuilt outside the repository
(tests/data/heldout/README.md).  Each is checked through the API and through the command
line, in float64 and float32: Pearson r >= 0.9999 and a total within 0.1 %.
"""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
import torch

from braggsim import cli, simulate
from braggsim.nanobragg_flags import parse_flags
from braggsim.nonbragg_cli import parse_nonbragg
from braggsim.simulate import simulate_background
from tests.conftest import DATA

pytestmark = pytest.mark.torch_path  # CI runs these on the torch path too (BRAGGSIM_NATIVE=0)

SUITE = [c for c in json.loads((DATA / "suite" / "cases.json").read_text()) if c["program"] == "nonBragg"]
HELDOUT = json.loads((DATA / "heldout" / "cases.json").read_text())
MIN_PEARSON = 0.9999
MAX_TOTAL_ERROR = 1e-3


def suite_args(case: dict) -> list[str]:
    args = shlex.split(case["args"])
    index = args.index("-stol") + 1
    args[index] = str(DATA / "suite" / args[index])
    return args


def heldout_args(case: dict) -> list[str]:
    return shlex.split(case["args"].replace("{data}", str(DATA)))


def assert_matches(image: np.ndarray, expected: np.ndarray) -> None:
    image, expected = image.ravel().astype(np.float64), expected.ravel().astype(np.float64)
    assert image.shape == expected.shape and np.all(np.isfinite(image))
    pearson = np.corrcoef(image, expected)[0, 1]
    total_error = abs(image.sum() / expected.sum() - 1)
    assert pearson >= MIN_PEARSON, f"Pearson r = {pearson:.7f}"
    assert total_error <= MAX_TOTAL_ERROR, f"total differs by {total_error:.2e}"


def test_the_cases_are_all_here():
    assert [c["name"] for c in SUITE] == ["n01_water", "n02_air_div"]
    assert len(HELDOUT) == 20
    for case in HELDOUT:
        image = np.fromfile(DATA / "heldout" / f"{case['name']}.bin", dtype="<f4")
        assert image.size == case["pixels"] and image.sum(dtype=np.float64) == pytest.approx(case["sum"])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", SUITE, ids=[c["name"] for c in SUITE])
def test_nonbragg_suite_through_the_api(case, dtype):
    parsed = parse_nonbragg(suite_args(case))
    image = simulate_background(parsed["detector"], parsed["beam"], parsed["background"], dtype=dtype)
    assert image.dtype == dtype
    assert_matches(image.numpy(), np.fromfile(DATA / "suite" / f"{case['name']}.bin", dtype="<f4"))


@pytest.mark.parametrize("case", SUITE, ids=[c["name"] for c in SUITE])
def test_nonbragg_suite_through_the_cli(case, tmp_path, capsys):
    out = tmp_path / "out.bin"
    assert cli.main(["nonbragg", *suite_args(case), "-floatfile", str(out)]) == 0, capsys.readouterr().err
    assert_matches(np.fromfile(out, dtype="<f4"), np.fromfile(DATA / "suite" / f"{case['name']}.bin", dtype="<f4"))


def _reference(case) -> np.ndarray:
    return np.fromfile(DATA / "heldout" / f"{case['name']}.bin", dtype="<f4")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", HELDOUT, ids=[c["name"] for c in HELDOUT])
def test_heldout_through_the_api(case, dtype):
    if case["program"] == "nonBragg":
        parsed = parse_nonbragg(heldout_args(case))
        image = simulate_background(parsed["detector"], parsed["beam"], parsed["background"], dtype=dtype)
    else:
        flags = parse_flags(heldout_args(case))
        image = simulate(flags.crystal, flags.detector, flags.beam, background=flags.background, dtype=dtype)
    assert_matches(image.numpy(), _reference(case))


@pytest.mark.parametrize("case", HELDOUT, ids=[c["name"] for c in HELDOUT])
def test_heldout_through_the_cli(case, tmp_path, capsys):
    out = tmp_path / "out.bin"
    command = "nonbragg" if case["program"] == "nonBragg" else "simulate"
    status = cli.main([command, *heldout_args(case), "-floatfile", str(out)])
    assert status == 0, capsys.readouterr().err
    assert_matches(np.fromfile(out, dtype="<f4"), _reference(case))
