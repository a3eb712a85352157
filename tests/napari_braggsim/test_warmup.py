"""The plugin's background warm-up (napari_braggsim._warmup): no Qt, but it loads napari's
layer types, so it lives with the plugin's tests."""

from __future__ import annotations

import subprocess
import sys

import pytest

from braggsim import _fast, _noise_numba
from tests.conftest import ROOT


def test_warm_up_leaves_the_kernel_and_the_noise_loops_compiled():
    """In a fresh process, after the warm-up and before any simulation, Simulate's
    background job would find the simulation kernel and noisify's loops compiled (or
    loaded from the cache), so a first noisy frame does not wait for numba."""
    if _noise_numba.kernels() is None or not _fast.available():
        pytest.skip(f"numba is off: {_noise_numba.unavailable_reason()}")
    code = (
        "from napari_braggsim import _warmup\n"
        "assert _warmup.wait(timeout_s=600)\n"
        "assert _warmup.error is None, repr(_warmup.error)\n"
        "from braggsim import _fast, _noise_numba\n"
        "loops = _noise_numba.kernels()\n"
        "print(_fast.ready(), all(getattr(loops, name).overloads for name in _noise_numba.ENTRY_POINTS))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["True", "True"]
