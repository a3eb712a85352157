"""The fused native kernel (braggsim._fast) against the reference torch path.

Values must agree with the eager torch path (float64 to round-off, float32 to float32
resolution) and gradients must be exact: gradcheck in float64 through ``simulate``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest
import torch

from braggsim import Beam, Crystal, Detector, _fast, simulate
from braggsim.nanobragg_flags import parse_flags
from braggsim.simulate import ForwardModel
from tests.conftest import DATA

pytestmark = pytest.mark.torch_path  # CI runs these on the torch path too (BRAGGSIM_NATIVE=0)

CASES = {c["name"]: c for c in json.loads((DATA / "cases.json").read_text())}
# p16's crystal has 50 cells a side: float32 rounding of h costs it 1.5e-4 of the total
# (sin(N pi h) magnifies it N times); test_parity holds it to nanoBragg's 1e-3
NATIVE_CASES = [n for n in CASES if n not in ("p06_round_polar", "p16_flux_xtalsize")]


def flags_for(name: str):
    case = CASES[name]
    args = shlex.split(case["args"])
    if case.get("hkl"):
        args += ["-hkl", str(DATA / case["hkl"])]
    return parse_flags(args)


def relative_max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("name", NATIVE_CASES)
def test_native_matches_torch_on_golden_cases(name, kernel):
    flags = flags_for(name)
    args = (flags.crystal, flags.detector, flags.beam)
    native64 = simulate(*args, dtype=torch.float64, kernel=kernel)
    torch64 = simulate(*args, dtype=torch.float64, kernel="torch")
    assert relative_max_error(native64, torch64) < 1e-10
    native32 = simulate(*args, dtype=torch.float32, kernel=kernel).double()
    # float32 rounding of h near the lattice nodes limits both paths to ~1e-5 of the peak
    assert relative_max_error(native32, torch64) < 2e-4
    assert abs(float(native32.sum() / torch64.sum()) - 1) < 1e-5


def test_auto_uses_native_only_where_exact(monkeypatch, device):
    flags = flags_for("p06_round_polar")
    model = ForwardModel(flags.crystal, flags.detector, flags.beam, torch.float64, device)
    assert not model.native  # round lattice transform: torch path
    with pytest.raises(ValueError, match="lattice shape 'round'"):
        simulate(flags.crystal, flags.detector, flags.beam, kernel="native")
    with pytest.raises(ValueError, match="kernel must be one of"):
        simulate(flags.crystal, flags.detector, flags.beam, kernel="fastest")
    crystal = Crystal(default_F=100, N_cells=(5.5, 5, 5))
    model = ForwardModel(crystal, Detector(fpixels=4), Beam(), torch.float64, device)
    assert not model.native  # non-integer N needs the continuous sincg
    monkeypatch.setattr(_fast, "available", lambda: False)
    model = ForwardModel(Crystal(default_F=100), Detector(fpixels=4), Beam(), torch.float64, device)
    assert not model.native  # no kernel (numba missing): silently the torch path
    monkeypatch.undo()
    monkeypatch.setenv("BRAGGSIM_NATIVE", "0")
    assert not _fast.available() and _fast.unavailable_reason() == "BRAGGSIM_NATIVE=0"
    model = ForwardModel(Crystal(default_F=100), Detector(fpixels=4), Beam(), torch.float64, device)
    assert not model.native


def _demo_inputs(dtype, spread=0.8, misset=(5.0, 3.0, -2.0)):
    spread = torch.tensor(spread, dtype=dtype, requires_grad=True)
    misset = torch.tensor(misset, dtype=dtype, requires_grad=True)
    return spread, misset


def _small_image(spread, misset, wavelength=None, kernel="native", block_evaluations=1 << 21):
    crystal = Crystal(
        cell=(100, 100, 100, 90, 90, 90),
        N_cells=(5, 5, 5),
        default_F=100,
        misset_deg=tuple(misset.unbind()),
        mosaic_spread_deg=spread,
        mosaic_domains=3,
        mosaic_seed=42,
    )
    # a corner of the demo detector that holds the edge of a spot: values and slopes vary
    detector = Detector(
        fpixels=6, spixels=5, pixel_size_mm=0.4, distance_mm=60, beam_center_mm=(1.2, 1.0), oversample=2
    )
    beam = Beam(wavelength_A=wavelength if wavelength is not None else 1.0, fluence=1e28)
    return simulate(crystal, detector, beam, kernel=kernel, block_evaluations=block_evaluations)


def test_native_gradcheck_mosaic_spread_misset_and_wavelength(kernel):
    wavelength = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)

    def image(spread, misset, wavelength):
        return _small_image(spread, misset, wavelength, kernel=kernel)

    spread, misset = _demo_inputs(torch.float64)
    assert image(spread, misset, wavelength).abs().max() > 0
    assert torch.autograd.gradcheck(image, (spread, misset, wavelength), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_native_gradients_equal_torch_gradients(dtype, kernel):
    weights = torch.linspace(-1, 2, 30, dtype=torch.float64).reshape(5, 6)
    grads = {}
    for path in (kernel, "torch"):
        spread, misset = _demo_inputs(dtype)
        loss = (_small_image(spread, misset, kernel=path).double() * weights).sum()
        grads[path] = torch.autograd.grad(loss, (spread, misset))
    tolerance = 1e-9 if dtype == torch.float64 else 1e-3
    for native, reference in zip(grads[kernel], grads["torch"], strict=False):
        assert float(reference.abs().max()) > 0
        assert relative_max_error(native, reference) < tolerance


def test_native_blocks_and_checkpoints_give_the_same_gradient(kernel):
    spread, misset = _demo_inputs(torch.float64)
    whole = _small_image(spread, misset, kernel=kernel)
    g_whole = torch.autograd.grad(whole.sum(), (spread, misset))
    blocked = _small_image(spread, misset, kernel=kernel, block_evaluations=6 * 4 * 3)  # one row per block
    g_blocked = torch.autograd.grad(blocked.sum(), (spread, misset))
    assert torch.allclose(whole, blocked, rtol=1e-12, atol=0)
    for a, b in zip(g_whole, g_blocked, strict=False):
        assert torch.allclose(a, b, rtol=1e-10, atol=0)


def test_native_table_path_matches_torch_and_refined_default_F_falls_back(kernel, device):
    flags = flags_for("p04_phi_osc")
    # a long cell puts part of the image outside the table's -8..8 range, where default_F rules
    crystal = flags.crystal.replace(default_F=3.0, cell=(300, 300, 300, 90, 90, 90))
    detector = flags.detector.replace(fpixels=16, spixels=16, pixel_size_mm=0.8)
    native = simulate(crystal, detector, flags.beam, dtype=torch.float64, kernel=kernel)
    reference = simulate(crystal, detector, flags.beam, dtype=torch.float64, kernel="torch")
    assert relative_max_error(native, reference) < 1e-10
    default_F = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    refined = crystal.replace(default_F=default_F)
    assert not ForwardModel(refined, detector, flags.beam, torch.float64, device).native
    (grad,) = torch.autograd.grad(simulate(refined, detector, flags.beam).sum(), default_F)
    eps = 1e-4
    up = simulate(crystal.replace(default_F=3.0 + eps), detector, flags.beam, dtype=torch.float64).sum()
    down = simulate(crystal.replace(default_F=3.0 - eps), detector, flags.beam, dtype=torch.float64).sum()
    assert float(grad) > 0
    assert float(grad) == pytest.approx(float(up - down) / (2 * eps), rel=1e-6)


@pytest.mark.usefixtures("kernel")  # skipped where the fused kernel is off
def test_compiled_kernel_is_cached_across_processes(tmp_path):
    """The first process compiles into BRAGGSIM_CACHE_DIR; a second one only loads."""
    code = (
        "import torch, braggsim; from braggsim import _fast\n"
        "image = braggsim.simulate(braggsim.Crystal(default_F=100), braggsim.Detector(fpixels=8), kernel='native')\n"
        "stats = _fast._load()[torch.float32]['_image_range'].stats\n"
        "print(stats.cache_hits.total(), stats.cache_misses.total(), float(image.sum()))\n"
    )
    env = {**os.environ, "BRAGGSIM_CACHE_DIR": str(tmp_path)}
    env.pop("NUMBA_CACHE_DIR", None)
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    (hits_cold, misses_cold, total_cold), (hits_warm, misses_warm, total_warm) = (
        [float(x) for x in run.stdout.split()] for run in runs
    )
    assert (hits_cold, misses_cold) == (0, 1)  # compiled...
    assert (hits_warm, misses_warm) == (1, 0)  # ...and then only loaded
    assert total_cold == total_warm > 0
    assert list((tmp_path / "numba").rglob("*_image_range_f32*.nbc"))


@pytest.mark.usefixtures("kernel")  # skipped where the fused kernel is off
def test_lattice_sum_takes_any_number_of_samples_per_pixel():
    """(rows, pixels, S, 3) with S not a square (beam sources, sensor layers): values and
    gradients in the scattering vectors and the axes match the torch formula."""
    from braggsim.lattice import lattice_factor, nearest_integer

    generator = torch.Generator().manual_seed(5)
    scat = (torch.rand(2, 3, 7, 3, generator=generator, dtype=torch.float64) - 0.5) * 0.2
    axes = torch.eye(3, dtype=torch.float64) * 40 + torch.rand(4, 3, 3, generator=generator, dtype=torch.float64)
    scat.requires_grad_(True)
    axes.requires_grad_(True)
    weights = torch.rand(2, 3, 7, generator=generator, dtype=torch.float64)

    def reference(scat, axes):
        hkl = torch.einsum("rfsj,kij->rfski", scat, axes)
        f_latt = lattice_factor(
            hkl - nearest_integer(hkl.detach()), torch.tensor([3.0, 4.0, 5.0], dtype=torch.float64), "square"
        )
        return (f_latt * f_latt).sum(-1)

    native = _fast.lattice_sum(scat, axes, (3, 4, 5))
    expected = reference(scat, axes)
    assert native.shape == (2, 3, 7)
    assert relative_max_error(native.detach(), expected.detach()) < 1e-12
    grads = torch.autograd.grad((native * weights).sum(), (scat, axes))
    expected_grads = torch.autograd.grad((expected * weights).sum(), (scat, axes))
    for got, want in zip(grads, expected_grads, strict=True):
        assert relative_max_error(got, want) < 1e-9
    assert torch.autograd.gradcheck(lambda s, a: _fast.lattice_sum(s, a, (3, 4, 5)), (scat, axes), eps=1e-7, atol=1e-6)


@pytest.mark.parametrize(
    "detector_options, beam_options",
    [
        ({}, {"polarization": 0.9}),
        ({"point_pixel": True, "oversample_omega": True}, {"nopolar": True}),
        ({"oversample_polar": True, "twotheta_deg": 10.0, "rotation_deg": (1.0, -2.0, 3.0)}, {"polarization": 0.5}),
        ({"convention": "xds", "orgx_px": 7.0, "orgy_px": 12.0}, {"polarization": 1.0}),
    ],
)
def test_native_image_geometry_matches_torch(detector_options, beam_options, kernel):
    crystal = Crystal(
        cell=(60, 70, 80, 85, 95, 100),
        N_cells=(4, 6, 5),
        default_F=20,
        misset_deg=(3, -7, 11),
        mosaic_spread_deg=0.6,
        mosaic_domains=4,
    )
    detector = Detector(fpixels=24, spixels=20, pixel_size_mm=0.5, distance_mm=70, oversample=3, **detector_options)
    beam = Beam(wavelength_A=1.3, **beam_options)
    native = simulate(crystal, detector, beam, dtype=torch.float64, kernel=kernel)
    reference = simulate(crystal, detector, beam, dtype=torch.float64, kernel="torch")
    assert float(reference.max()) > 5 * float(reference.mean())  # spots, not a flat field
    assert relative_max_error(native, reference) < 1e-10
    native32 = simulate(crystal, detector, beam, dtype=torch.float32, kernel=kernel).double()
    assert relative_max_error(native32, reference) < 2e-4


def test_memoised_geometry_follows_every_detector_and_beam_change(kernel):
    spread, misset = _demo_inputs(torch.float64)
    crystal = Crystal(
        cell=(100, 100, 100, 90, 90, 90),
        N_cells=(5, 5, 5),
        default_F=100,
        misset_deg=tuple(misset.unbind()),
        mosaic_spread_deg=spread,
        mosaic_domains=3,
    )
    detector = Detector(
        fpixels=6, spixels=5, pixel_size_mm=0.4, distance_mm=60, beam_center_mm=(1.2, 1.0), oversample=2
    )
    beam = Beam(wavelength_A=1.0, fluence=1e28)
    changes = [
        (detector, beam),
        (detector.replace(distance_mm=61), beam),
        (detector.replace(beam_center_mm=(1.3, 1.0)), beam),
        (detector, beam.replace(wavelength_A=1.01)),
        (detector, beam.replace(polarization=0.7)),
        (detector, beam),
    ]
    images = []
    for det, bm in changes:
        native = simulate(crystal, det, bm, kernel=kernel)
        reference = simulate(crystal, det, bm, kernel="torch")
        assert native.requires_grad
        assert relative_max_error(native.detach(), reference.detach()) < 1e-10
        images.append(native.detach())
    for i in range(1, 5):
        assert not torch.equal(images[0], images[i])
    assert torch.equal(images[0], images[5])


def test_memoised_crystal_constants_follow_every_crystal_change():
    """Cell, spindle and mosaic constants are memoised; a changed field must never meet a stale one."""
    from braggsim import crystal as crystal_module
    from braggsim import mosaic as mosaic_module

    def clear():
        crystal_module._UNROTATED.clear()
        crystal_module._PHI.clear()
        mosaic_module._CONSTANTS.clear()

    base = Crystal(
        cell=(100, 100, 100, 90, 90, 90),
        N_cells=(5, 5, 5),
        default_F=100,
        misset_deg=(5, 3, -2),
        mosaic_spread_deg=0.8,
        mosaic_domains=5,
        mosaic_seed=42,
    )
    detector = Detector(fpixels=24, spixels=20, pixel_size_mm=0.3, distance_mm=60, oversample=1)
    beam = Beam(wavelength_A=1.0, fluence=1e28)
    variants = [
        base,
        base.replace(cell=(101, 100, 100, 90, 90, 90)),
        base.replace(cell=(100, 100, 100, 90, 91, 90)),
        base.replace(phi_start_deg=2.0),
        base.replace(phi_start_deg=2.0, osc_deg=1.0, phi_steps=3),
        base.replace(phi_start_deg=2.0, spindle_axis=(0, 1, 0)),
        base.replace(mosaic_seed=7),
        base.replace(mosaic_domains=4),
        base,
    ]
    memoised, fresh = [], []
    for variant in variants:
        memoised.append(simulate(variant, detector, beam, dtype=torch.float64))
    for variant in variants:
        clear()
        fresh.append(simulate(variant, detector, beam, dtype=torch.float64))
    for i, (a, b) in enumerate(zip(memoised, fresh, strict=False)):
        assert torch.equal(a, b), f"variant {i} met a stale constant"
    for i in range(1, len(variants) - 1):
        assert not torch.equal(memoised[0], memoised[i]), f"variant {i} did not change the image"
    assert torch.equal(memoised[0], memoised[-1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.usefixtures("kernel")  # skipped where the fused kernel is off
def test_kernel_results_do_not_depend_on_the_thread_count(dtype, monkeypatch):
    """Forward values and both gradients are bitwise the same on 1 and on 2 threads (the
    lattice-axis gradient is summed in fixed blocks, added in a fixed order)."""
    generator = torch.Generator().manual_seed(3)
    scat = (torch.rand(1 << 17, 3, generator=generator, dtype=dtype) - 0.5) * 0.4
    axes = torch.eye(3, dtype=dtype) * 60 + torch.rand(10, 3, 3, generator=generator, dtype=dtype)
    weights = torch.rand(1 << 17, generator=generator, dtype=dtype)
    results = []
    for threads in (1, 2):
        monkeypatch.setattr(_fast, "_threads", lambda evaluations, threads=threads: threads)
        s, a = scat.clone().requires_grad_(True), axes.clone().requires_grad_(True)
        out = _fast.lattice_sum(s, a, (5, 5, 5))
        results.append((out.detach(), *torch.autograd.grad((out * weights).sum(), (s, a))))
    assert float(results[0][2].abs().max()) > 0
    for one, two in zip(*results, strict=True):
        assert torch.equal(one, two)


def test_warm_up_compiles_what_the_plugin_uses(kernel):
    """After warm_up, live simulation (float32 image) and a refinement step (float64
    geometry, forward, backward, image) find their kernels compiled."""
    thread = _fast.warm_up(background=True)
    if thread is not None:
        thread.join(timeout=300)
    assert _fast.ready()
    assert _fast.warm_up() is None  # nothing left to do
    kernels = _fast._load()
    compiled = {
        (dtype, name): len(kernels[dtype][name].overloads)
        for dtype, name in [
            (torch.float32, "_image_range"),
            (torch.float64, "_image_range"),
            (torch.float64, "_geometry_range"),
            (torch.float64, "_forward_range"),
            (torch.float64, "_backward_range"),
        ]
    }
    assert all(count >= 1 for count in compiled.values()), compiled
    spread, misset = _demo_inputs(torch.float64)
    torch.autograd.grad(_small_image(spread, misset, kernel=kernel).sum(), (spread, misset))  # a refinement step
    with torch.no_grad():
        simulate(Crystal(default_F=100), Detector(fpixels=8), dtype=torch.float32)  # live simulation
    after = {key: len(kernels[key[0]][key[1]].overloads) for key in compiled}
    assert after == compiled  # nothing new was compiled
