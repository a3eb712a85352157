"""Detector noise: noisify and nanoBragg's -noisefile, pixel for pixel; the torch path by its statistics.

References in tests/data/noise (see its README): the public z01 case as files, and
SHA-256 sums of noisify's and nanoBragg's outputs for held-out seeds, fiber and Gaussian
PSFs, copied headers, 32-bit output and the -nonoise path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from braggsim import _noise_numba, _noise_python, cli, noise
from braggsim.noisify_cli import ALL_FLAGS, HELP
from tests.conftest import DATA as TEST_DATA

DATA = TEST_DATA / "noise"
REFERENCE = json.loads((DATA / "reference.json").read_text())
Z01_ARGS = [
    "-distance",
    "100",
    "-detsize",
    "9.6",
    "-pixel",
    "0.1",
    "-seed",
    "7",
    "-readout_noise",
    "3",
    "-psf",
    "gauss",
    "-psf_fwhm",
    "150",
    "-adc",
    "40",
    "-gain",
    "1",
    "-calibration",
    "0.03",
    "-calib_seed",
    "5",
    "-flicker",
    "0.02",
]
Z01_MODEL = noise.DetectorModel(  # Z01_ARGS as a DetectorModel
    readout_noise_adu=3, psf="gauss", psf_fwhm_um=150, adc_offset_adu=40, calibration=0.03, flicker=0.02
)
HEADER_172 = (
    "{\nHEADER_BYTES=512;\nDIM=2;\nBYTE_ORDER=little_endian;\nTYPE=unsigned_short;\nSIZE1=96;\nSIZE2=96;\n"
    "PIXEL_SIZE=0.172;\nDISTANCE=250;\nWAVELENGTH=0.9;\nBEAM_CENTER_X=8.1;\nBEAM_CENTER_Y=8.3;\n}\f"
)


def spots() -> np.ndarray:
    return np.fromfile(DATA / "spots.bin", dtype="<f4").reshape(96, 96)


def z01_pixels() -> np.ndarray:
    return np.fromfile(DATA / "z01_noisify.img", dtype="<u2", offset=512).reshape(96, 96)


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(params=["native", "python"])
def implementation(request, monkeypatch):
    """Run a test through the compiled (numba) loops and through their pure-Python twin."""
    if request.param == "native":
        if _noise_numba.kernels() is None:
            pytest.skip(f"the compiled noise loops are unavailable: {_noise_numba.unavailable_reason()}")
    else:
        monkeypatch.setattr(_noise_numba, "kernels", lambda: None)
    return request.param


def run_noisify(capsys, *argv):
    status = cli.main(["noisify", *map(str, argv)])
    out, err = capsys.readouterr()
    return status, out, err


# ------------------------------------------------------------------ pixel identity
# The tests marked torch_path run again in CI with BRAGGSIM_NATIVE=0, where the Python twin
# does the work (seconds at 96 x 96).
@pytest.mark.torch_path
def test_z01_is_pixel_identical_through_the_api(implementation):
    model = noise.DetectorModel(
        readout_noise_adu=3, psf="gauss", psf_fwhm_um=150, adc_offset_adu=40, calibration=0.03, flicker=0.02
    )
    result = noise.noisify(spots(), pixel_size_mm=0.1, seed=7, calib_seed=5, model=model)
    assert result.counts.dtype == np.uint16
    np.testing.assert_array_equal(result.counts, z01_pixels())
    # noisify reported: 58822 photons before the PSF, radius 4, 0.12851 added back, 58741 after
    assert result.photons_drawn == 58822.0
    assert result.psf_radius_px == 4
    assert result.lost_photons == pytest.approx(0.12851, abs=5e-6)
    assert round(result.photons) == 58741 and result.overloads == 0


@pytest.mark.torch_path
def test_z01_file_is_byte_identical_through_the_cli(tmp_path, capsys):
    out = tmp_path / "z01.img"
    status, stdout, err = run_noisify(capsys, "-floatfile", DATA / "spots.bin", *Z01_ARGS, "-noisefile", out)
    assert status == 0, err
    assert out.read_bytes() == (DATA / "z01_noisify.img").read_bytes()  # header and pixels
    assert "58822 photons on noise image before PSF" in stdout
    assert "58741 photons on noise image (0 overloads)" in stdout
    assert os.listdir(tmp_path) == ["z01.img"]


@pytest.mark.torch_path
@pytest.mark.parametrize("case", REFERENCE["noisify"], ids=lambda c: c["name"])
def test_held_out_noisify_cases_are_byte_identical(case, tmp_path, capsys):
    header = tmp_path / "header172.img"
    header.write_bytes(HEADER_172.encode() + b" " * (512 - len(HEADER_172)) + bytes(2 * 96 * 96))
    args = case["args"].replace("HEADER", str(header)).split()
    names = {"noisefile": tmp_path / "noise.img", "intfile": tmp_path / "int.img", "pgmfile": tmp_path / "img.pgm"}
    outputs = [x for kind in case["sha256"] for x in (f"-{kind}", names[kind])]
    status, stdout, err = run_noisify(capsys, "-floatfile", DATA / case["input"], *args, *outputs)
    assert status == 0, err
    for kind, digest in case["sha256"].items():
        assert sha256(names[kind]) == digest, f"{kind} differs from noisify's"
    said = [line for line in case["noisify_said"] if "photons on noise image (" in line]
    if said:
        assert said[0] in stdout


@pytest.mark.parametrize(
    "name", ["fiber_auto", "small_fiber_auto_full_width", "bits32_wraparound", "small_nonoise_fiber"]
)
def test_python_twin_gives_the_same_files(name, tmp_path, capsys, monkeypatch):
    """Without numba the pure-Python twin must write the same bytes."""
    monkeypatch.setattr(_noise_numba, "kernels", lambda: None)
    test_held_out_noisify_cases_are_byte_identical(
        next(c for c in REFERENCE["noisify"] if c["name"] == name), tmp_path, capsys
    )


@pytest.mark.torch_path
@pytest.mark.parametrize("case", REFERENCE["nanobragg_noisefile"], ids=lambda c: f"{c['input']}-seed{c['seed']}")
def test_nanobragg_noisefile_is_pixel_identical(case, implementation):
    image = np.fromfile(DATA / case["input"], dtype="<f4").reshape(case["shape_slow_fast"])
    result = noise.nanobragg_noise(image, seed=case["seed"], adc_offset_adu=case["adc"], roi=case["roi"])
    assert hashlib.sha256(result.counts.astype("<u2").tobytes()).hexdigest() == case["sha256_u16_le"]
    assert case["nanoBragg_said"] == f"{result.photons:.0f} photons on noise image ({result.overloads} overloads)"


def test_twin_draws_match_the_kernel_draw_for_draw(monkeypatch):
    """Flicker, calibration, readout and Poisson draws (every poidev branch: under 12,
    rejection, above 1e6 photons) agree between the compiled loops and their Python twin."""
    if _noise_numba.kernels() is None:
        pytest.skip(f"the compiled noise loops are unavailable: {_noise_numba.unavailable_reason()}")
    rng = np.random.default_rng(5)
    photons = np.concatenate([rng.uniform(0, 12, 300), rng.uniform(12, 5e3, 300), [0.0, 1.5e6, 3e6, 11.999, 12.0, 1e6]])
    image = photons.astype(np.float32).reshape(2, -1)
    model = noise.DetectorModel(flicker=0.05, calibration=0.04, readout_noise_adu=2.0, adc_offset_adu=0, bits=32)
    native = noise.noisify(image, seed=77, calib_seed=4, model=model)
    monkeypatch.setattr(_noise_numba, "kernels", lambda: None)
    python = noise.noisify(image, seed=77, calib_seed=4, model=model)
    np.testing.assert_array_equal(native.counts, python.counts)
    assert native.photons_drawn == python.photons_drawn and native.photons == python.photons


def test_psf_kernels_sum_to_one_and_match_the_twin():
    if _noise_numba.kernels() is None:
        pytest.skip(f"the compiled noise loops are unavailable: {_noise_numba.unavailable_reason()}")
    for kind, fwhm in (("gauss", 1.5), ("fiber", 1.72)):
        kernel = noise.psf_kernel(30, kind, fwhm)
        twin = _noise_python.psf_kernel(30, kind == "fiber", fwhm).reshape(kernel.shape)
        np.testing.assert_array_equal(kernel, twin)
        assert kernel[30, 30] == kernel.max()
        # a Gaussian is all inside 30 pixels; the fiber PSF's tail beyond r is g / sqrt(g^2 + r^2)
        expected = 1.0 if kind == "gauss" else 1.0 - (0.652383013252053 * fwhm) / 30.0
        assert kernel.sum() == pytest.approx(expected, abs=0.01)


def test_native_0_and_a_missing_numba_select_the_python_twin(monkeypatch):
    """BRAGGSIM_NATIVE=0, or numba failing to import, gives the twin, with the reason, and
    the same pixels."""
    monkeypatch.setenv("BRAGGSIM_NATIVE", "0")
    assert _noise_numba.kernels() is None and _noise_numba.unavailable_reason() == "BRAGGSIM_NATIVE=0"
    np.testing.assert_array_equal(noise.noisify(spots(), seed=7, calib_seed=5, model=Z01_MODEL).counts, z01_pixels())
    monkeypatch.delenv("BRAGGSIM_NATIVE")

    def no_numba(cache=True):
        raise ImportError("No module named 'numba'")

    monkeypatch.setattr(_noise_numba, "_kernels", None)
    monkeypatch.setattr(_noise_numba, "_failed", None)
    monkeypatch.setattr(_noise_numba, "_compile", no_numba)
    assert _noise_numba.kernels() is None
    assert _noise_numba.unavailable_reason() == "numba is unavailable (No module named 'numba')"
    np.testing.assert_array_equal(noise.noisify(spots(), seed=7, calib_seed=5, model=Z01_MODEL).counts, z01_pixels())


def test_noise_calls_on_two_threads_at_once_match_serial_runs():
    """Each call has its own random state: noisify and nanoBragg's noise run on two
    threads at once (the compiled loops release the GIL) give what they give alone."""
    if _noise_numba.kernels() is None:
        pytest.skip(f"the compiled noise loops are unavailable: {_noise_numba.unavailable_reason()}")
    model = noise.DetectorModel(readout_noise_adu=3, psf="fiber", psf_fwhm_um=150, flicker=0.02, calibration=0.03)
    rounds = 10

    def noisify_job():
        return noise.noisify(spots(), seed=7, calib_seed=5, model=model).counts

    def nanobragg_job():
        return noise.nanobragg_noise(spots() * 30, seed=11).counts

    serial = {"noisify": noisify_job(), "nanobragg": nanobragg_job()}
    np.testing.assert_array_equal(noise.noisify(spots(), seed=7, calib_seed=5, model=model).counts, serial["noisify"])
    mismatches = []

    def run(name, job):
        for _ in range(rounds):
            if not np.array_equal(job(), serial[name]):
                mismatches.append(name)

    threads = [
        threading.Thread(target=run, args=item) for item in (("noisify", noisify_job), ("nanobragg", nanobragg_job))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads)
    assert mismatches == []


def test_compiled_noise_loops_are_cached_on_disk(tmp_path, monkeypatch):
    """The first compile writes to BRAGGSIM_CACHE_DIR; fresh dispatchers (what a new
    process makes) then only load from it, and give the same pixels."""
    if _noise_numba.kernels() is None:
        pytest.skip(f"the compiled noise loops are unavailable: {_noise_numba.unavailable_reason()}")
    import numba

    if numba.config.CACHE_DIR:
        pytest.skip("NUMBA_CACHE_DIR is set: numba caches there instead")
    monkeypatch.setenv("BRAGGSIM_CACHE_DIR", str(tmp_path))
    counts = []
    for _ in range(2):
        monkeypatch.setattr(_noise_numba, "_kernels", None)
        assert _noise_numba.warm_up()
        stats = [getattr(_noise_numba.kernels(), name).stats for name in _noise_numba.ENTRY_POINTS]
        counts.append((sum(s.cache_hits.total() for s in stats), sum(s.cache_misses.total() for s in stats)))
        assert noise.noisify(spots(), seed=7, calib_seed=5, model=Z01_MODEL).counts.tobytes() == z01_pixels().tobytes()
    entry_points = len(_noise_numba.ENTRY_POINTS)
    assert counts[0][1] == entry_points and counts[0][0] == 0  # compiled...
    assert counts[1] == (entry_points, 0)  # ...and then only loaded
    assert list((tmp_path / "numba").rglob("*noise_apply_psf*.nbc"))


def test_psf_adds_back_exactly_what_its_kernel_misses():
    """Away from the edges the image total is photons * (kernel sum) + lost photons: for a
    Gaussian that is all the photons; for the fiber PSF noisify's tail estimate
    g / sqrt(g^2 + r^2) is for a continuous disc, so 1.5e-5 of them go missing here."""
    photons = np.zeros((64, 64), dtype=np.float32)
    photons[32, 32] = 1000.0
    for kind, missing in (("gauss", 0.0), ("fiber", 1.5e-5)):
        result = noise.apply_psf(photons, kind=kind, fwhm_pixels=2.0, radius_px=20)
        total = float(result.image.astype(np.float64).sum())
        kernel_sum = float(noise.psf_kernel(20, kind, 2.0).sum())
        assert total == pytest.approx(1000.0 * kernel_sum + result.lost_photons, rel=1e-6)
        assert total == pytest.approx(1000.0 * (1 - missing), rel=2e-6)
        assert result.image[32, 32] < 1000.0 and result.image[32, 33] > 0


def test_psf_wraps_past_the_right_edge_as_noisify_does():
    """noisify's bounds check lets x == xpixels through: that photon lands on the next row."""
    photons = np.zeros((8, 8), dtype=np.float32)
    photons[3, 7] = 100.0  # last column
    result = noise.apply_psf(photons, kind="gauss", fwhm_pixels=1.0, radius_px=1).image
    kernel = noise.psf_kernel(1, "gauss", 1.0)
    each = 100.0 * np.exp(-np.log(16.0)) / 64  # the source's lost photons, spread over 64 pixels
    assert result[4, 0] == pytest.approx(100.0 * kernel[1, 2] + each, rel=1e-6)  # from (3, 8) -> (4, 0)
    assert result[3, 0] == pytest.approx(100.0 * kernel[0, 2] + each, rel=1e-6)  # from (2, 8) -> (3, 0)


def test_nonoise_gauss_on_faint_pixels_does_not_crash():
    """noisify segfaults here (its radius rule takes the root of a negative number under 0.01
    photons); braggsim uses radius 1 for such pixels."""
    faint = np.full((16, 16), 0.004, dtype=np.float32)
    result = noise.noisify(faint, model=noise.DetectorModel(psf="gauss", psf_fwhm_um=150), add_noise=False)
    assert result.counts is None and result.noiseless.shape == (16, 16)
    assert np.all(result.noiseless == 40)


# --------------------------------------------------------------------- torch path
def test_detector_noise_poisson_statistics():
    """Mean and variance of Poisson counts within 5 standard errors (65536 pixels)."""
    lam = 50.0
    image = torch.full((256, 256), lam, dtype=torch.float64)
    model = noise.DetectorModel(calibration=0.0, adc_offset_adu=0.0)
    counts = noise.detector_noise(image, generator=torch.Generator().manual_seed(1), model=model)
    n = counts.numel()
    assert torch.equal(counts, counts.round()) and counts.min() >= 0
    assert abs(float(counts.mean()) - lam) < 5 * (lam / n) ** 0.5
    # Var(sample variance) of a Poisson = (mu4 - sigma^4) / n = (lam + 2 lam^2) / n
    assert abs(float(counts.var()) - lam) < 5 * ((lam + 2 * lam**2) / n) ** 0.5


def test_detector_noise_gain_offset_readout_flicker_and_calibration():
    lam, gain, adc, readout, flicker, calibration = 200.0, 2.0, 100.0, 5.0, 0.03, 0.04
    image = torch.full((256, 256), lam, dtype=torch.float64)
    model = noise.DetectorModel(
        gain_adu_per_photon=gain,
        adc_offset_adu=adc,
        readout_noise_adu=readout,
        flicker=flicker,
        calibration=calibration,
    )
    adu = noise.detector_noise(image, generator=torch.Generator().manual_seed(2), model=model)
    # mean: gain * lam + adc - 0.5 (truncation); variance: gain^2 (lam + lam^2 (f^2 + c^2 + f^2 c^2)) + r^2 + 1/12
    var_photons = lam + lam**2 * ((1 + flicker**2) * (1 + calibration**2) - 1)
    expected_var = gain**2 * var_photons + readout**2 + 1 / 12
    n = adu.numel()
    assert abs(float(adu.mean()) - (gain * lam + adc - 0.5)) < 5 * (expected_var / n) ** 0.5
    assert float(adu.var()) == pytest.approx(expected_var, rel=0.03)  # sd of the estimate ~0.6 %


def test_detector_noise_is_seeded_and_calibration_is_static():
    image = torch.full((64, 64), 1000.0)
    model = noise.DetectorModel(calibration=0.1)
    first = noise.detector_noise(image, generator=torch.Generator().manual_seed(3), model=model)
    again = noise.detector_noise(image, generator=torch.Generator().manual_seed(3), model=model)
    other = noise.detector_noise(image, generator=torch.Generator().manual_seed(4), model=model)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.dtype == torch.float32
    # the calibration pattern (10 %) repeats on every frame; Poisson noise (3 %) does not
    r = np.corrcoef(first.ravel().numpy(), other.ravel().numpy())[0, 1]
    assert 0.8 < r < 0.95  # expected 0.01 / (0.01 + 0.001) = 0.91


def test_detector_noise_psf_keeps_the_photon_total():
    image = torch.zeros((64, 64), dtype=torch.float64)
    image[20:23, 30:33] = 5000.0
    # a large gain makes truncating each pixel to whole ADU negligible (< 1 ADU of 1000 per photon)
    plain = noise.DetectorModel(calibration=0.0, adc_offset_adu=0.0, bits=32, gain_adu_per_photon=1000)
    fiber = dataclasses.replace(plain, psf="fiber", psf_fwhm_um=200)
    sharp = noise.detector_noise(image, generator=torch.Generator().manual_seed(5), model=plain)
    blurred = noise.detector_noise(image, generator=torch.Generator().manual_seed(5), model=fiber)
    assert abs(float(blurred.sum()) - float(sharp.sum())) <= image.numel()
    assert float(blurred.max()) < 0.6 * float(sharp.max())


# ------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"psf": "box"}, "psf"),
        ({"psf_fwhm_um": 0.0}, "psf_fwhm_um"),
        ({"psf_fwhm_um": -5.0}, "psf_fwhm_um"),
        ({"psf_radius_px": -1}, "psf_radius_px"),
        ({"psf_radius_px": 2.5}, "psf_radius_px"),
        ({"gain_adu_per_photon": 0.0}, "gain_adu_per_photon"),
        ({"readout_noise_adu": -1.0}, "readout_noise_adu"),
        ({"flicker": float("nan")}, "flicker"),
        ({"bits": 8}, "bits"),
    ],
)
def test_bad_detector_model_names_the_value(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        noise.DetectorModel(**kwargs)


def test_bad_images_and_seeds_are_refused():
    with pytest.raises(ValueError, match="non-finite pixel.*slow=1 fast=2"):
        image = np.ones((3, 4), dtype=np.float32)
        image[1, 2] = np.nan
        noise.noisify(image, seed=1)
    with pytest.raises(ValueError, match="seed must fit a 32-bit integer"):
        noise.nanobragg_noise(np.ones((2, 2)), seed=2**40)
    with pytest.raises(ValueError, match="shape"):
        noise.nanobragg_noise(np.ones(5), seed=1)
    with pytest.raises(ValueError, match="generator"):
        noise.detector_noise(torch.ones(4, 4), generator=3)


@pytest.fixture
def garbled(tmp_path):
    files = {
        "empty.bin": b"",
        "odd.bin": b"\0" * 10,
        "nan.bin": np.array([1.0, np.nan, 2.0, 3.0], dtype="<f4").tobytes(),
        "notsmv.img": b"P5\n96 96\n255\n" + bytes(600),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


@pytest.mark.parametrize(
    "argv,fragment",
    [
        ([], "-floatfile"),
        (["-floatfile", "{tmp}/absent.bin"], "absent.bin"),
        (["-floatfile", "{tmp}/empty.bin"], "empty.bin"),
        (["-floatfile", "{tmp}/odd.bin"], "odd.bin"),
        (["-floatfile", "{tmp}/nan.bin"], "nan.bin"),
        (["-floatfile", "{spots}", "-detpixels_x", "100"], "9216 floats"),
        (["-floatfile", "{spots}", "-header", "{tmp}/notsmv.img"], "notsmv.img"),
        (["-floatfile", "{spots}", "-header", "{tmp}/absent.img"], "absent.img"),
        (["-floatfile", "{spots}", "-psf", "box"], "-psf"),
        (["-floatfile", "{spots}", "-psf", "fiber", "-psf_fwhm", "0"], "-psf_fwhm"),
        (["-floatfile", "{spots}", "-psf", "fiber", "-psf_fwhm", "-40"], "-psf_fwhm"),
        (["-floatfile", "{spots}", "-psf", "gauss", "-psf_radius", "-2"], "-psf_radius"),
        (["-floatfile", "{spots}", "-gain", "0"], "-gain"),
        (["-floatfile", "{spots}", "-readout_noise", "-3"], "-readout_noise"),
        (["-floatfile", "{spots}", "-flicker", "lots"], "-flicker"),
        (["-floatfile", "{spots}", "-bits", "8"], "-bits"),
        (["-floatfile", "{spots}", "-seed", "1.5"], "-seed"),
        (["-floatfile", "{spots}", "-scale", "-1"], "-scale"),
        (["-floatfile", "{spots}", "-detpixels", "-96"], "-detpixels"),
        (["-floatfile", "{spots}", "-psf_sigma", "2"], "-psf_sigma"),
        (["-floatfile", "{spots}", "-seed"], "-seed"),
        (["-floatfile", "{spots}", "-noisefile", "{tmp}/no/such/dir/x.img"], "does not exist"),
        (["-floatfile", "{spots}", "-noisefile", "{tmp}/same.img", "-intfile", "{tmp}/same.img"], "same file"),
    ],
)
def test_noisify_bad_input_is_one_line_and_writes_nothing(argv, fragment, garbled, capsys, monkeypatch):
    monkeypatch.chdir(garbled)  # the default noiseimage.img would land here
    before = sorted(os.listdir(garbled))
    argv = [a.format(tmp=garbled, spots=DATA / "spots.bin") for a in argv]
    status, _, err = run_noisify(capsys, *argv)
    assert status == 2
    assert err.startswith("braggsim: error:") and err.count("\n") == 1 and fragment in err
    assert "Traceback" not in err
    assert sorted(os.listdir(garbled)) == before


def test_noisify_failed_write_leaves_nothing_half_written(tmp_path, capsys, monkeypatch):
    keep = tmp_path / "noise.img"
    keep.write_bytes(b"previous")
    real_replace = os.replace
    calls = []

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    status, _, err = run_noisify(
        capsys, "-floatfile", DATA / "spots.bin", *Z01_ARGS, "-noisefile", keep, "-intfile", tmp_path / "int.img"
    )
    assert status == 2 and "No space left on device" in err
    assert sorted(os.listdir(tmp_path)) == ["noise.img"]  # no temporaries left behind


def test_noisify_defaults_to_noiseimage_img(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, _, err = run_noisify(capsys, DATA / "spots.bin", *Z01_ARGS)  # a bare input name, as noisify takes
    assert status == 0, err
    assert os.listdir(tmp_path) == ["noiseimage.img"]
    assert (tmp_path / "noiseimage.img").read_bytes() == (DATA / "z01_noisify.img").read_bytes()


def test_noisify_warns_about_negative_intensities_and_goes_on(tmp_path, capsys):
    image = np.full((4, 4), 5.0, dtype="<f4")
    image[1, 1] = -2.0
    (tmp_path / "neg.bin").write_bytes(image.tobytes())
    status, out, err = run_noisify(capsys, tmp_path / "neg.bin", "-seed", "3", "-noisefile", tmp_path / "n.img")
    assert status == 0, err
    assert "WARNING: 1 negative intensities" in out
    counts = np.frombuffer((tmp_path / "n.img").read_bytes()[512:], dtype="<u2").reshape(4, 4)
    assert counts[1, 1] == 40  # no photons drawn for a negative mean: the ADC offset only


def test_noisify_help_lists_every_flag(capsys):
    status, out, _ = run_noisify(capsys, "--help")
    assert status == 0 and out == HELP
    missing = [flag for flag in ALL_FLAGS if not re.search(re.escape(flag) + r"(?![\w])", out)]
    assert missing == []


def test_top_level_help_lists_noisify(capsys):
    assert cli.main(["--help"]) == 0
    assert "noisify" in capsys.readouterr().out


# ------------------------------------------------------------- simulate -noisefile
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
    "-distance",
    "100",
    "-pixel",
    "0.1",
    "-detpixels",
    "32",
    "-oversample",
    "1",
]


def test_simulate_noisefile_is_nanobraggs_noise_of_the_float_image(tmp_path, capsys):
    floatfile, noisefile = tmp_path / "img.bin", tmp_path / "noise.img"
    status = cli.main(
        ["simulate", *SMALL, "-floatfile", str(floatfile), "-noisefile", str(noisefile), "-seed", "9", "-adc", "25"]
    )
    out, err = capsys.readouterr()
    assert status == 0, err
    image = np.fromfile(floatfile, dtype="<f4").reshape(32, 32)
    expected = noise.nanobragg_noise(image, seed=9, adc_offset_adu=25)
    raw = noisefile.read_bytes()
    counts = np.frombuffer(raw[512:], dtype="<u2").reshape(32, 32)
    np.testing.assert_array_equal(counts, expected.counts)
    assert b"SIZE1=32;" in raw[:512]
    assert f"{expected.photons:.0f} photons on noise image (0 overloads)" in out
    assert "noise seed: 9" in out


@pytest.mark.parametrize(
    "order,written", [(["-noisefile", "N", "-nonoise"], False), (["-nonoise", "-noisefile", "N"], True)]
)
def test_simulate_nonoise_and_noisefile_last_one_wins(order, written, tmp_path, capsys):
    target = tmp_path / "noise.img"
    argv = [str(target) if a == "N" else a for a in order]
    assert cli.main(["simulate", *SMALL, *argv, "-seed", "1"]) == 0
    capsys.readouterr()
    assert target.exists() == written


def test_simulate_adc_offsets_the_intfile(tmp_path, capsys):
    floatfile, intfile = tmp_path / "img.bin", tmp_path / "img.img"
    assert cli.main(["simulate", *SMALL, "-floatfile", str(floatfile), "-intfile", str(intfile), "-adc", "7"]) == 0
    capsys.readouterr()
    image = np.fromfile(floatfile, dtype="<f4").reshape(32, 32).astype(np.float64)
    counts = np.frombuffer(intfile.read_bytes()[512:], dtype="<u2").reshape(32, 32)
    np.testing.assert_array_equal(counts, np.floor(image * (55000.0 / image.max()) + 7 + 0.5).astype(np.uint16))


@pytest.mark.parametrize(
    "extra,fragment", [(["-seed", "x"], "-seed"), (["-adc", "inf"], "-adc"), (["-seed", "99999999999"], "-seed")]
)
def test_simulate_bad_noise_flags(extra, fragment, tmp_path, capsys):
    status = cli.main(["simulate", *SMALL, *extra, "-noisefile", str(tmp_path / "n.img")])
    err = capsys.readouterr().err
    assert status == 2 and fragment in err and err.count("\n") == 1
    assert os.listdir(tmp_path) == []
