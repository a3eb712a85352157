"""What every test shares: where the data lie, and the device and kernel under test.

The tests mirror the package layout: tests/braggsim/ (with io/ and refine/) for the core,
tests/napari_braggsim/ for the plugin (all marked ``gui``, see its conftest), and here the
project-wide checks (packaging, lint).  Every folder is a package, so two test files may
share a name and a test imports these constants as ``from tests.conftest import DATA``.

- ``DATA``: tests/data, the small references copied into the repository (always present).
- ``SHARED``: the read-only material beside the checkout (../shared, or BRAGGSIM_SHARED):
  ``GOLDEN`` (nanoBragg's reference images) and ``SHARED_DATA`` (real frames).  A fresh
  clone has none of it: a test that needs it carries ``needs_shared(...)`` and is skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
DATA = TESTS / "data"


def _find_shared() -> Path:
    """../shared beside the main checkout, or two levels up from a worktree (wt/<name>)."""
    candidates = [Path(os.environ["BRAGGSIM_SHARED"])] if os.environ.get("BRAGGSIM_SHARED") else []
    candidates += [ROOT.parent / "shared", ROOT.parent.parent / "shared"]
    return next((path for path in candidates if path.is_dir()), candidates[0])


SHARED = _find_shared()
GOLDEN = SHARED / "golden"
SHARED_DATA = SHARED / "data"


def needs_shared(*parts: str) -> pytest.MarkDecorator:
    """Skip unless ``SHARED/<parts>`` is here (a fresh clone has no ../shared)."""
    path = SHARED.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"{path} is not here (../shared is read-only material)")


def _fused_kernel_reason() -> str | None:
    """None when simulate's default picks the fused numba kernel, else why not."""
    from braggsim import _fast

    return None if _fast.available() else _fast.unavailable_reason()


@pytest.fixture
def device() -> torch.device:
    """The torch device the CPU tests compute on (the CUDA tests name theirs)."""
    return torch.device("cpu")


@pytest.fixture
def kernel() -> str:
    """The fused simulation kernel, ``"native"``, for the tests that compare it with the torch
    path; they are skipped where it is off (numba missing, or BRAGGSIM_NATIVE=0 as in CI's
    torch-path run)."""
    reason = _fused_kernel_reason()
    if reason is not None:
        pytest.skip(f"no native kernel: {reason}")
    return "native"


def pytest_report_header(config) -> list[str]:
    reason = _fused_kernel_reason()
    kernel_name = "native (fused numba)" if reason is None else f"torch ({reason})"
    shared = SHARED if SHARED.is_dir() else "absent (tests that need it are skipped)"
    return [f"braggsim: simulation kernel {kernel_name}; ../shared {shared}"]
