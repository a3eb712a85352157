"""Detector noise: nanoBragg's ``-noisefile`` and noisify's detector model.

Two ways to add noise to a photons/pixel image (``(slow, fast)``):

- **Identical to the C programs** (numpy in, numpy out): :func:`noisify` is noisify's
  detector model (beam flicker, per-pixel calibration error, Poisson counting, a
  point-spread function, gain, ADC offset, readout noise, 16- or 32-bit integers) and
  :func:`nanobragg_noise` is nanoBragg's own ``-noisefile`` (Poisson counts plus the ADC
  offset).  With the same seeds they return the same pixels as noisify and nanoBragg:
  they reproduce Numerical Recipes' ``ran1``, ``gasdev`` and ``poidev`` draw for draw,
  including the float/double roundings, the one shuffle table that every seed shares
  and the spare Gaussian deviate that carries over from one call to the next (so with
  flicker on, noisify's calibration error takes the second deviate of each flicker
  pair, whatever ``calib_seed`` says).  The loops are compiled by numba
  (:mod:`braggsim._noise_numba`, no C compiler needed); without numba, or with
  ``BRAGGSIM_NATIVE=0``, a pure-Python twin (:mod:`braggsim._noise_python`) gives the
  same pixels, slower.
- **Seeded by torch** (tensor in, tensor out, any device): :func:`detector_noise`
  applies the same model with ``torch.Generator`` draws.  Statistically the same detector, but
  NOT pixel-identical to noisify, and its PSF keeps a fixed radius (see its docstring).

All noise is in photons/pixel before the gain; ADU after it.  The PSF is applied to the
noisy photon image (detector blur acts on the photons that arrived), and the photons
that fall outside the rendering radius are added back evenly over the image, as noisify
does.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np
import torch

from . import _noise_numba, _noise_python
from .beam import R_E_SQ

# noisify's (and nanoBragg.c's) default fluence literal: r_e^2 times it is exactly 1.0 in
# double precision (braggsim.beam.DEFAULT_FLUENCE, 1.25932015286227e29, gives 1 - 7e-16)
NOISIFY_DEFAULT_FLUENCE = 125932015286227086360700780544.0
NOISIFY_DEFAULT_CALIB_STATE = 123456789  # noisify's built-in calibration seed variable (not negated)
PSF_KINDS = ("gauss", "fiber")
FIBER_G_PER_FWHM = 0.652383013252053  # fiber PSF g / FWHM, sqrt(2^(2/3) - 1) / 2 inverted
SMV_HEADER_BYTES = 512


__all__ = [
    "DetectorModel",
    "FIBER_G_PER_FWHM",
    "NANOBRAGG_DEFAULT_ADC",
    "NANOBRAGG_NOISE_VALUE_FLAGS",
    "NOISIFY_DEFAULT_CALIB_STATE",
    "NOISIFY_DEFAULT_FLUENCE",
    "NanoBraggNoise",
    "NanoBraggNoiseOptions",
    "NoisifyResult",
    "PSFResult",
    "PSF_KINDS",
    "SMV_HEADER_BYTES",
    "apply_psf",
    "as_photon_image",
    "auto_psf_radius",
    "detector_noise",
    "fwhm_in_pixels",
    "nanobragg_noise",
    "nanobragg_noise_options",
    "noisify",
    "psf_kernel",
    "time_seed",
]


@dataclasses.dataclass(frozen=True)
class DetectorModel:
    """noisify's detector: what turns photons/pixel into integer pixel values.

    gain_adu_per_photon: ADU per photon; adc_offset_adu: added to every pixel;
    readout_noise_adu: Gaussian sigma added after the gain; flicker: fractional Gaussian
    error of the incident intensity, drawn per pixel; calibration: fractional Gaussian
    error of each pixel's sensitivity, from its own seed so it repeats shot to shot
    (noisify's default is 3 %); psf: None, "gauss" or "fiber"; psf_fwhm_um: its full
    width at half maximum (noisify's default 46 um); psf_radius_px: rendering radius in
    pixels, 0 = chosen per pixel from its photon count; bits: 16 or 32-bit output.
    """

    gain_adu_per_photon: float = 1.0
    adc_offset_adu: float = 40.0
    readout_noise_adu: float = 0.0
    flicker: float = 0.0
    calibration: float = 0.03
    psf: str | None = None
    psf_fwhm_um: float = 46.0
    psf_radius_px: int = 0
    bits: int = 16

    def __post_init__(self):
        _require(self.gain_adu_per_photon, "gain_adu_per_photon", positive=True)
        _require(self.adc_offset_adu, "adc_offset_adu")
        for name in ("readout_noise_adu", "flicker", "calibration"):
            _require(getattr(self, name), name, non_negative=True)
        if self.psf is not None and self.psf not in PSF_KINDS:
            raise ValueError(f"psf must be None, 'gauss' or 'fiber', got {self.psf!r}")
        _require(self.psf_fwhm_um, "psf_fwhm_um", positive=True)
        if isinstance(self.psf_radius_px, bool) or not isinstance(self.psf_radius_px, (int, np.integer)):
            raise ValueError(f"psf_radius_px must be an integer >= 0 (0 = automatic), got {self.psf_radius_px!r}")
        if self.psf_radius_px < 0:
            raise ValueError(f"psf_radius_px must be >= 0 (0 = automatic), got {self.psf_radius_px!r}")
        if self.bits not in (16, 32):
            raise ValueError(f"bits must be 16 or 32, got {self.bits!r}")


def _require(value, name: str, *, positive: bool = False, non_negative: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and not number > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if non_negative and number < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return number


def _check_seed(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if abs(int(value)) >= 2**31:
        # the C programs read seeds into an int
        raise ValueError(f"{name} must fit a 32-bit integer, got {value!r}")
    return int(value)


def time_seed() -> int:
    """The seed nanoBragg and noisify use when none is given: the current Unix time."""
    return int(time.time()) % 2**31


def as_photon_image(image, name: str = "image") -> np.ndarray:
    """``image`` as a C-contiguous float32 (slow, fast) array, checked finite."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    data = np.ascontiguousarray(np.asarray(image, dtype=np.float32))
    if data.ndim != 2 or data.size == 0:
        raise ValueError(f"{name} must be a non-empty (slow, fast) array, got shape {data.shape}")
    bad = np.flatnonzero(~np.isfinite(data))
    if bad.size:
        slow, fast = divmod(int(bad[0]), data.shape[1])
        raise ValueError(f"{name} has {bad.size} non-finite pixel(s), the first at slow={slow} fast={fast}")
    return data


# ------------------------------------------------------------------ the draws' state
class _Draws:
    """The C programs' static random-number state and seed variables, for the compiled
    loops (``kernels`` is their namespace) or for the Python twin (``kernels`` is None)."""

    def __init__(self, **seeds: int):
        self.kernels = _noise_numba.kernels()
        self.state: Any  # (ints, floats, seeds) arrays for the compiled loops; an NRState for the twin
        self.seeds: dict[str, Any]  # the twin's Seed objects
        if self.kernels is not None:
            self.state = _noise_numba.new_state(seeds.get("seed", 0), seeds.get("calib", 0))
            self.seeds = {}
        else:
            self.state = _noise_python.NRState()
            self.seeds = {name: _noise_python.Seed(value) for name, value in seeds.items()}


# ----------------------------------------------------------------- nanoBragg -noisefile
@dataclasses.dataclass
class NanoBraggNoise:
    """nanoBragg's noise image: ``counts`` (slow, fast) uint16, the Poisson photons drawn
    in total, the pixels clipped at 65535 and the seed used."""

    counts: np.ndarray
    photons: float
    overloads: int
    seed: int


def nanobragg_noise(image, *, seed: int | None = None, adc_offset_adu: float = 40.0, roi=None) -> NanoBraggNoise:
    """nanoBragg's ``-noisefile`` for a photons/pixel ``image`` (slow, fast), pixel-identical.

    Each pixel inside ``roi`` = (fast_min, fast_max, slow_min, slow_max) (inclusive, as
    ``-roi``; default the whole image) becomes poidev(photons) + ``adc_offset_adu``,
    truncated to an unsigned short and clipped at 65535; pixels outside are 0.  ``seed``
    is nanoBragg's ``-seed`` (default: the current time, as nanoBragg).  The image is
    taken in single precision, as nanoBragg holds it.
    """
    data = as_photon_image(image)
    seed = time_seed() if seed is None else _check_seed(seed, "seed")
    adc = _require(adc_offset_adu, "adc_offset_adu")
    spixels, fpixels = data.shape
    bounds = (0, fpixels, 0, spixels) if roi is None else tuple(int(v) for v in roi)
    if len(bounds) != 4:
        raise ValueError(f"roi must be (fast_min, fast_max, slow_min, slow_max), got {roi!r}")
    draws = _Draws(seed=-seed)
    if draws.kernels is not None:
        counts = np.zeros(data.shape, dtype=np.uint16)
        roi_array = np.asarray(bounds, dtype=np.int64)
        overloads, photons = draws.kernels.nanobragg_noise(data, roi_array, adc, *draws.state, counts)
        return NanoBraggNoise(counts, float(photons), int(overloads), seed)
    counts, total, overloads = _noise_python.nanobragg_noise(data, bounds, adc, draws.state, draws.seeds["seed"])
    return NanoBraggNoise(counts, total, overloads, seed)


# ----------------------------------------------------------------------------- the PSF
def fwhm_in_pixels(psf_fwhm_um: float, pixel_size_mm: float) -> float:
    """noisify's PSF width in pixels: it holds the FWHM in a C float, in metres."""
    return float(np.float32(psf_fwhm_um / 1e6)) / (pixel_size_mm / 1000.0)


def psf_kernel(radius_px: int, kind: str, fwhm_pixels: float) -> np.ndarray:
    """The PSF integrated over each pixel of a disc, ((2 r + 1), (2 r + 1)) float64, zero
    outside the disc.  ``kind`` "gauss": a Gaussian of the given FWHM; "fiber":
    g / (2 pi (g^2 + r^2)^(3/2)) with g = 0.652383013252053 * FWHM (noisify's kernels)."""
    if kind not in PSF_KINDS:
        raise ValueError(f"psf must be 'gauss' or 'fiber', got {kind!r}")
    radius = int(radius_px)
    compiled = _noise_numba.kernels()
    fiber = kind == "fiber"
    if compiled is not None:
        kernel = np.zeros((2 * radius + 1) ** 2)
        compiled.psf_kernel(kernel, radius, fiber, float(fwhm_pixels))
    else:
        kernel = _noise_python.psf_kernel(radius, fiber, float(fwhm_pixels))
    return kernel.reshape(2 * radius + 1, 2 * radius + 1)


def auto_psf_radius(max_photons: float, kind: str, fwhm_pixels: float) -> int:
    """noisify's rendering radius for the brightest pixel: beyond it, less than a tenth of
    that pixel's Poisson error would fall.  At least 1."""
    lost = math.sqrt(max_photons) / 10.0
    if kind == "fiber":
        return max(1, int(1 + math.ceil(fwhm_pixels * FIBER_G_PER_FWHM * (max_photons / lost))))
    squared = -math.log(lost / max_photons) / math.log(4) / 2
    if squared < 0:
        return 1  # under 0.01 photons the Gaussian rule has no solution (noisify's sqrt gives NaN)
    return max(1, int(1 + math.ceil(math.sqrt(squared) * fwhm_pixels)))


@dataclasses.dataclass
class PSFResult:
    """``image``: the blurred photons (slow, fast) float32; ``lost_photons``: what fell
    outside the rendering radii and was added back evenly; ``radius_px``: the kernel
    radius (None when nothing was blurred)."""

    image: np.ndarray
    lost_photons: float
    radius_px: int | None


def apply_psf(photons, *, kind: str, fwhm_pixels: float, radius_px: int = 0) -> PSFResult:
    """noisify's point-spread function on a photons/pixel image (slow, fast), identical.

    Every positive pixel spreads over a disc, radius ``radius_px`` or (0) one chosen from
    its own photon count; the photons beyond the disc are added back evenly to every
    pixel.  noisify's bounds checks let a contribution one column past the right edge land
    on the first pixel of the next row; that is reproduced too.
    """
    data = as_photon_image(photons, "photons")
    if kind not in PSF_KINDS:
        raise ValueError(f"psf must be 'gauss' or 'fiber', got {kind!r}")
    _require(fwhm_pixels, "fwhm_pixels", positive=True)
    if isinstance(radius_px, bool) or int(radius_px) != radius_px or radius_px < 0:
        raise ValueError(f"radius_px must be an integer >= 0 (0 = automatic), got {radius_px!r}")
    ypixels, xpixels = data.shape
    maxwidth = max(xpixels, ypixels)
    user_radius = int(radius_px)
    if user_radius > 0:
        kernel_radius = user_radius
    else:
        max_photons = max(float(data.max()), 0.0)
        if max_photons <= 0.0:
            return PSFResult(np.zeros_like(data), 0.0, None)  # noisify: "no photons, PSF skipped"
        kernel_radius = auto_psf_radius(max_photons, kind, fwhm_pixels)
    kernel_radius = min(kernel_radius, maxwidth)
    kernel = psf_kernel(kernel_radius, kind, fwhm_pixels).ravel()
    fiber = kind == "fiber"
    flat = data.ravel()
    compiled = _noise_numba.kernels()
    if compiled is not None:
        out = np.empty(flat.size + 1, dtype=np.float32)  # one spare slot, as noisify's padding
        lost = compiled.apply_psf(
            flat, out, xpixels, ypixels, fiber, float(fwhm_pixels), user_radius, kernel, kernel_radius
        )
        blurred = out[:-1]
    else:
        blurred, lost = _noise_python.apply_psf(
            flat, xpixels, ypixels, fiber, float(fwhm_pixels), user_radius, kernel, kernel_radius
        )
    return PSFResult(blurred.reshape(data.shape), float(lost), kernel_radius)


# ---------------------------------------------------------------------------- noisify
@dataclasses.dataclass
class NoisifyResult:
    """What noisify makes of one image.

    counts: the noise image (noisify's ``-noisefile``), (slow, fast) uint16 or uint32, or
    None without noise; noiseless: the noiseless image (``-intfile``: photons * gain +
    ADC offset, clipped at 65535), same dtype; photons_drawn: Poisson photons before the
    PSF; photons: photons after it; lost_photons: photons the PSF added back evenly;
    psf_radius_px: the PSF kernel radius (None without PSF); overloads: pixels clipped
    at the top of the integer range; seed, calib_seed: the seeds, as given on noisify's
    command line (calib_seed None = noisify's built-in default).
    """

    counts: np.ndarray | None
    noiseless: np.ndarray
    photons_drawn: float
    photons: float
    lost_photons: float
    psf_radius_px: int | None
    overloads: int
    seed: int
    calib_seed: int | None


def noisify(
    image,
    *,
    pixel_size_mm: float = 0.1,
    seed: int | None = None,
    calib_seed: int | None = None,
    model: DetectorModel | None = None,
    photon_scale: float = 1.0,
    fluence: float = NOISIFY_DEFAULT_FLUENCE,
    add_noise: bool = True,
) -> NoisifyResult:
    """noisify's detector model on a photons/pixel ``image`` (slow, fast), pixel-identical.

    ``seed`` is noisify's ``-seed`` (default: the current time), ``calib_seed`` its
    ``-calib_seed`` (default: noisify's built-in one).  ``pixel_size_mm`` converts the
    PSF width to pixels.  The image is scaled by ``fluence * r_e^2 * photon_scale``
    (1 by default) and taken in single precision, as noisify reads it.  Per pixel, in
    raster order: flicker, calibration error, Poisson draw; then the PSF over the whole
    image; then gain, ADC offset and readout noise, truncated to integers.
    ``add_noise=False`` is ``-nonoise``: no draws, the PSF blurs the noiseless image and
    only ``noiseless`` is made.
    """
    model = DetectorModel() if model is None else model
    data = as_photon_image(image)
    pixel = _require(pixel_size_mm, "pixel_size_mm", positive=True)
    scale = _require(photon_scale, "photon_scale", positive=True)
    flux = _require(fluence, "fluence", positive=True)
    seed = time_seed() if seed is None else _check_seed(seed, "seed")
    calib_state = NOISIFY_DEFAULT_CALIB_STATE if calib_seed is None else -_check_seed(calib_seed, "calib_seed")
    photons = ((flux * R_E_SQ) * scale * data.astype(np.float64)).astype(np.float32).ravel()
    fwhm_pixels = fwhm_in_pixels(model.psf_fwhm_um, pixel)
    draws = _Draws(seed=-seed, calib=calib_state)
    flicker, calibration, readout = model.flicker, model.calibration, model.readout_noise_adu
    if not add_noise:
        flicker = calibration = readout = 0.0
    psf_radius, lost = None, 0.0
    if not add_noise and model.psf is not None:
        blurred = apply_psf(
            photons.reshape(data.shape), kind=model.psf, fwhm_pixels=fwhm_pixels, radius_px=model.psf_radius_px
        )
        photons, psf_radius, lost = blurred.image.ravel(), blurred.radius_px, blurred.lost_photons
    noiseless16, noiseless32, _, total = _to_integers(photons, model, 0.0, True, draws)
    noiseless = (noiseless16 if model.bits == 16 else noiseless32).reshape(data.shape)
    if not add_noise:
        return NoisifyResult(None, noiseless, total, total, lost, psf_radius, 0, seed, calib_seed)

    drawn = photons.copy()
    if draws.kernels is not None:
        photons_drawn = draws.kernels.noisify_draws(drawn, float(flicker), float(calibration), *draws.state)
    else:
        photons_drawn = _noise_python.noisify_draws(
            drawn, flicker, calibration, draws.state, draws.seeds["seed"], draws.seeds["calib"]
        )
    if model.psf is not None:
        blurred = apply_psf(
            drawn.reshape(data.shape), kind=model.psf, fwhm_pixels=fwhm_pixels, radius_px=model.psf_radius_px
        )
        drawn, psf_radius, lost = blurred.image.ravel(), blurred.radius_px, blurred.lost_photons
    out16, out32, overloads, total = _to_integers(drawn, model, readout, False, draws)
    counts = (out16 if model.bits == 16 else out32).reshape(data.shape)
    return NoisifyResult(counts, noiseless, float(photons_drawn), total, lost, psf_radius, overloads, seed, calib_seed)


def _to_integers(photons: np.ndarray, model: DetectorModel, readout: float, noiseless: bool, draws: _Draws):
    if draws.kernels is not None:
        out16 = np.empty(photons.size, dtype=np.uint16)
        out32 = np.empty(photons.size, dtype=np.uint32)
        overloads, total = draws.kernels.noisify_adu(
            photons,
            float(model.gain_adu_per_photon),
            float(model.adc_offset_adu),
            float(readout),
            int(model.bits),
            bool(noiseless),
            *draws.state,
            out16,
            out32,
        )
        return out16, out32, int(overloads), float(total)
    return _noise_python.noisify_adu(
        photons,
        model.gain_adu_per_photon,
        model.adc_offset_adu,
        readout,
        model.bits,
        noiseless,
        draws.state,
        draws.seeds["seed"],
    )


# ------------------------------------------------------------------- fast torch path
def detector_noise(
    image: torch.Tensor,
    *,
    generator: torch.Generator,
    model: DetectorModel | None = None,
    pixel_size_mm: float = 0.1,
    calib_seed: int = NOISIFY_DEFAULT_CALIB_STATE,
) -> torch.Tensor:
    """noisify's detector model with torch's random numbers: NOT noisify-identical.

    image: (slow, fast) photons/pixel, on any device (``generator`` on the same device).
    Returns (slow, fast) ADU in ``image``'s dtype (float32 for integer input),
    whole numbers clipped to [0, 2^bits - 1].  Flicker, Poisson and readout draws come
    from ``generator`` (so a seeded generator repeats the frame); the calibration error
    comes from its own generator seeded with ``calib_seed``, so it is the same pattern on
    every frame, as on a real detector.  The PSF uses one radius for every pixel
    (``psf_radius_px``, or noisify's choice for the brightest pixel) and adds back what
    the kernel misses evenly, so the photon total is kept.  Same distributions as
    :func:`noisify`, different draws: use :func:`noisify` to reproduce noisify's pixels.
    Nothing here is differentiable (the draws are discrete).  It runs wherever the
    tensor lives (a GPU included); on a CPU it takes about as long
    as :func:`noisify` (benchmarks/noise.py).  Arithmetic is in ``image``'s precision.
    """
    model = DetectorModel() if model is None else model
    if not isinstance(image, torch.Tensor) or image.ndim != 2 or image.numel() == 0:
        raise ValueError(f"image must be a non-empty (slow, fast) tensor, got {getattr(image, 'shape', image)!r}")
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != image.device.type:
        raise ValueError(
            f"generator is on {generator.device} but image is on {image.device}: make it on the image's device"
        )
    pixel = _require(pixel_size_mm, "pixel_size_mm", positive=True)
    calib_seed = _check_seed(calib_seed, "calib_seed")
    dtype = image.dtype if image.dtype.is_floating_point else torch.float32
    with torch.no_grad():
        photons = image.detach().to(dtype)
        if not torch.isfinite(photons).all():
            raise ValueError("image has non-finite pixels")
        device = photons.device
        if model.flicker > 0:
            photons = photons * (1 + model.flicker * _normal(photons, generator))
        if model.calibration > 0:
            calibration_generator = torch.Generator(device=device).manual_seed(abs(int(calib_seed)))
            photons = photons * (1 + model.calibration * _normal(photons, calibration_generator))
        counts = torch.poisson(photons.clamp(min=0), generator=generator)
        if model.psf is not None:
            counts = _blur(counts, model, fwhm_in_pixels(model.psf_fwhm_um, pixel))
        adu = counts * model.gain_adu_per_photon + model.adc_offset_adu
        if model.readout_noise_adu > 0:
            adu = adu + model.readout_noise_adu * _normal(adu, generator)
        adu = adu.clamp(0, 2.0**model.bits - 1).floor()
    return adu.to(dtype)


def _normal(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)


def _blur(counts: torch.Tensor, model: DetectorModel, fwhm_pixels: float) -> torch.Tensor:
    peak = float(counts.max())
    if peak <= 0:
        return counts
    psf = model.psf
    assert psf is not None  # _blur runs only with a PSF
    radius = model.psf_radius_px or auto_psf_radius(peak, psf, fwhm_pixels)
    radius = min(radius, max(counts.shape))
    kernel = torch.as_tensor(psf_kernel(radius, psf, fwhm_pixels), dtype=counts.dtype, device=counts.device)
    # linear convolution by FFT (padded so nothing wraps): 30x faster than conv2d in float64
    slow, fast = counts.shape
    size = (slow + 2 * radius, fast + 2 * radius)
    spectrum = torch.fft.rfft2(counts, s=size) * torch.fft.rfft2(kernel, s=size)
    blurred = torch.fft.irfft2(spectrum, s=size)[radius : radius + slow, radius : radius + fast]
    return blurred + (counts.sum() - blurred.sum()) / counts.numel()


# ------------------------------------------------------- simulate's nanoBragg flags
NANOBRAGG_NOISE_VALUE_FLAGS = {"-noisefile": 1, "-noiseimage": 1, "-seed": 1, "-adc": 1}
NANOBRAGG_DEFAULT_ADC = 40.0


@dataclasses.dataclass(frozen=True)
class NanoBraggNoiseOptions:
    """simulate's noise flags: ``noisefile`` (None = no noise image), ``seed`` (None = the
    time, as nanoBragg), ``adc_offset_adu`` (nanoBragg adds it to -intfile and -noisefile)."""

    noisefile: str | None = None
    seed: int | None = None
    adc_offset_adu: float = NANOBRAGG_DEFAULT_ADC


def nanobragg_noise_options(argv) -> NanoBraggNoiseOptions:
    """Read nanoBragg's noise flags from a simulate command line (already checked by
    :func:`braggsim.nanobragg_flags.split_flags`, so each flag's value follows it).

    ``-noisefile``/``-noiseimage FILE`` asks for the noise image; ``-nonoise`` cancels it
    (whichever comes last wins, as in nanoBragg); ``-seed N``; ``-adc ADU``.
    """
    argv = list(argv)
    noisefile, seed, adc = None, None, NANOBRAGG_DEFAULT_ADC
    for i, flag in enumerate(argv):
        value = argv[i + 1] if i + 1 < len(argv) else None
        if flag in ("-noisefile", "-noiseimage"):
            noisefile = value
        elif flag == "-nonoise":
            noisefile = None
        elif flag == "-seed":
            seed = _parse_int(flag, value)
        elif flag == "-adc":
            adc = _parse_float(flag, value)
    return NanoBraggNoiseOptions(noisefile, seed, adc)


def _parse_int(flag: str, text) -> int:
    try:
        number = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"flag {flag} needs an integer, got {text!r}") from None
    if not number.is_integer() or abs(number) >= 2**31:
        raise ValueError(f"flag {flag} needs an integer that fits 32 bits, got {text!r}")
    return int(number)


def _parse_float(flag: str, text) -> float:
    try:
        number = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"flag {flag} needs a number, got {text!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"flag {flag} needs a finite number, got {text!r}")
    return number
