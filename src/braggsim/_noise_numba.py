"""Compiled loops for the noise models that must match nanoBragg and noisify pixel for pixel.

The random draws are inherently sequential (one shuffle table shared by every seed) and
the point-spread function accumulates in single precision in a fixed order, so both are
plain loops, compiled by numba (whose wheel ships LLVM: no C compiler is needed on any
platform).  Every expression is evaluated in the C type (float or double) and in the
order of the Numerical Recipes routines that nanoBragg and noisify use, so the same seeds
give the same pixels:

- float variables are numpy float32 scalars and every float literal they meet is a
  float32 constant (``F_ONE`` ...): a Python float would promote the arithmetic to
  double, as a ``1.0`` without ``f`` does in C, which is written here only where the C
  writes it;
- libm is called on doubles only (``math.log(np.float64(x))``): on a float32 numba
  would call ``logf``, the C programs call ``log``;
- ``math.floor``/``math.ceil`` return integers in numba, so ``np.floor``/``np.ceil``;
- no ``fastmath`` at all: a fused multiply-add or a reassociated sum rounds differently
  from the separate operations of the reference programs (numba emits neither without it);
- ``error_model="numpy"``: a division by zero gives inf or nan as in C instead of raising.

The state the C programs keep in ``static`` variables lives in two small arrays made per
call (:func:`new_state`), so calls share nothing and may run on several threads at once
(the loops release the GIL).  numba compiles on first use and keeps the machine code in
braggsim's per-user cache (:func:`braggsim._fast.cache_dir`), so only the first process on
a machine pays for the compile (:func:`warm_up` does it ahead of time).  Without numba,
with an unwritable cache (then it compiles in memory, per process) failing that, or with
``BRAGGSIM_NATIVE=0``, :mod:`braggsim.noise` uses the pure-Python twin
:mod:`braggsim._noise_python`, which gives the same pixels, slower.
"""

from __future__ import annotations

import math
import threading
import types as _pytypes
from typing import Any

import numpy as np

from . import _fast
from .mosaic import RAN1_AM as _AM
from .mosaic import RAN1_IA as _IA
from .mosaic import RAN1_IM as _IM
from .mosaic import RAN1_IQ as _IQ
from .mosaic import RAN1_IR as _IR
from .mosaic import RAN1_NDIV as _NDIV
from .mosaic import RAN1_NTAB as _NTAB

RNMX = 1.0 - 1.2e-7  # NR_RNMX, a double in C
RNMX_F = np.float32(RNMX)  # (float) NR_RNMX
F_ZERO = np.float32(0.0)
F_ONE = np.float32(1.0)
F_MINUS_ONE = np.float32(-1.0)
F_TWELVE = np.float32(12.0)
F_MILLION = np.float32(1.0e6)
GAMMLN_COF = (
    76.18009172947146,
    -86.50532032941677,
    24.01409824083091,
    -1.231739572450155,
    0.1208650973866179e-2,
    -0.5395239384953e-5,
)
# noisify's constant expressions, which its compiler folds (correctly rounded) and the
# Python twin computes with the same libm: the same doubles
LOG16 = math.log(16)
SQRT_LOG2 = math.sqrt(math.log(2))
SQRT_LOG16 = math.sqrt(math.log(16))
GAUSS_NORM = math.sqrt(math.log(16) / math.log(2))
FIBER_G_PER_FWHM = 0.652383013252053

# the layout of the state arrays: ints (int64) = [iy, iv[0] .. iv[31], iset];
# floats (float32) = [gset, poi_sq, poi_alxm, poi_g, poi_oldm]
_ISET = _NTAB + 1
_GSET, _POI_SQ, _POI_ALXM, _POI_G, _POI_OLDM = range(5)
SEED, CALIB = 0, 1  # rows of the seeds array (the C programs' long seed variables)


def new_state(seed: int, calib: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fresh (ints, floats, seeds) arrays: the C programs' static state at start-up and
    their two seed variables (``seed`` and ``calib`` as the C code holds them, i.e.
    already negated where it negates them)."""
    ints = np.zeros(_NTAB + 2, dtype=np.int64)
    floats = np.zeros(5, dtype=np.float32)
    floats[_POI_OLDM] = -1.0
    seeds = np.array([seed, calib], dtype=np.int64)
    return ints, floats, seeds


# ------------------------------------------------------------------ the draws
def _step(idum):
    # the Park-Miller step by Schrage's method; idum > 0 here, so // is C's division
    k = idum // _IQ
    idum = _IA * (idum - k * _IQ) - _IR * k
    if idum < 0:
        idum += _IM
    return idum


def _ran1(ints, seeds, which):
    idum = seeds[which]
    if idum <= 0 or ints[0] == 0:
        idum = 1 if -idum < 1 else -idum
        for j in range(_NTAB + 7, -1, -1):
            idum = _step(idum)
            if j < _NTAB:
                ints[1 + j] = idum
        ints[0] = ints[1]
    idum = _step(idum)
    seeds[which] = idum
    j = ints[0] // _NDIV
    ints[0] = ints[1 + j]
    ints[1 + j] = idum
    value = np.float32(_AM * ints[0])
    if value > RNMX:
        return RNMX_F
    return value


def _gaussdev(ints, floats, seeds, which):
    if ints[_ISET] != 0:
        ints[_ISET] = 0
        return floats[_GSET]
    while True:
        v1 = np.float32(2.0 * _ran1(ints, seeds, which) - 1.0)
        v2 = np.float32(2.0 * _ran1(ints, seeds, which) - 1.0)
        rsq = v1 * v1 + v2 * v2
        if not (rsq >= F_ONE or rsq == F_ZERO):
            break
    fac = np.float32(math.sqrt(-2.0 * math.log(np.float64(rsq)) / rsq))
    floats[_GSET] = v1 * fac
    ints[_ISET] = 1
    return v2 * fac


def _gammln(xx):
    x = np.float64(xx)
    y = x
    tmp = x + 5.5
    tmp -= (x + 0.5) * math.log(tmp)
    ser = 1.000000000190015
    for c in GAMMLN_COF:
        y += 1.0
        ser += c / y
    return np.float32(-tmp + math.log(2.5066282746310005 * ser / x))


def _poidev(ints, floats, xm, seeds, which):
    """One Poisson deviate of mean ``xm`` (a float32), as a float32."""
    if xm > F_MILLION:
        return np.float32(
            np.float64(xm) + math.sqrt(np.float64(xm)) * np.float64(_gaussdev(ints, floats, seeds, which))
        )
    if xm < F_TWELVE:
        if xm != floats[_POI_OLDM]:
            floats[_POI_OLDM] = xm
            floats[_POI_G] = np.float32(math.exp(np.float64(-xm)))
        g = floats[_POI_G]
        em = F_MINUS_ONE
        t = F_ONE
        while True:
            em += F_ONE
            t *= _ran1(ints, seeds, which)
            if not t > g:
                break
        return em
    if xm != floats[_POI_OLDM]:
        floats[_POI_OLDM] = xm
        floats[_POI_SQ] = np.float32(math.sqrt(2.0 * np.float64(xm)))
        alxm = np.float32(math.log(np.float64(xm)))
        floats[_POI_ALXM] = alxm
        floats[_POI_G] = xm * alxm - _gammln(np.float32(np.float64(xm) + 1.0))
    sq = floats[_POI_SQ]
    alxm = floats[_POI_ALXM]
    g = floats[_POI_G]
    while True:
        while True:
            y = np.float32(math.tan(math.pi * np.float64(_ran1(ints, seeds, which))))
            em = sq * y + xm
            if not em < F_ZERO:
                break
        em = np.float32(np.floor(np.float64(em)))
        exponent = em * alxm - _gammln(np.float32(np.float64(em) + 1.0)) - g
        t = np.float32(0.9 * (1.0 + np.float64(y * y)) * math.exp(np.float64(exponent)))
        if not _ran1(ints, seeds, which) > t:
            break
    return em


# C's (unsigned short) / (unsigned int) of a double as x86-64 gcc evaluates it: truncate
# toward zero, keep the low bits (a value outside the 32-bit range becomes 0x80000000 first)
def _as_u16(value):
    if not (value > -2147483649.0 and value < 2147483648.0):
        return np.uint16(0)
    return np.uint16(np.int64(value) & 0xFFFF)


def _as_u32(value):
    if not (value > -9.2e18 and value < 9.2e18):
        return np.uint32(0)
    return np.uint32(np.int64(value) & 0xFFFFFFFF)


# ------------------------------------------------------------------ the loops
def nanobragg_noise(image, roi, adc_offset, ints, floats, seeds, out):
    """nanoBragg's -noisefile: image (slow, fast) float32 -> out (slow, fast) uint16 (zeros
    outside roi = (fast_min, fast_max, slow_min, slow_max)).  Returns (overloads, photons)."""
    spixels, fpixels = image.shape
    overloads = 0
    total = 0.0
    for sp in range(spixels):
        for fp in range(fpixels):
            if fp < roi[0] or fp > roi[1] or sp < roi[2] or sp > roi[3]:
                out[sp, fp] = 0
                continue
            test = np.float64(_poidev(ints, floats, image[sp, fp], seeds, SEED))
            total += test
            test += adc_offset
            if test > 65535.0:
                test = 65535.0
                overloads += 1
            out[sp, fp] = _as_u16(test)
    return overloads, total


def noisify_draws(photons, flicker, calibration, ints, floats, seeds):
    """noisify's first pass on photons (n,) float32, in place: flicker, calibration error
    and the Poisson draw per pixel.  Returns the photons drawn."""
    total = 0.0
    for i in range(photons.size):
        photons0 = np.float64(photons[i])
        if flicker > 0.0:
            photons0 *= 1.0 + flicker * np.float64(_gaussdev(ints, floats, seeds, SEED))
        if calibration > 0.0:
            photons0 *= 1.0 + calibration * np.float64(_gaussdev(ints, floats, seeds, CALIB))
        drawn = _poidev(ints, floats, np.float32(photons0), seeds, SEED)
        photons[i] = drawn
        total += np.float64(drawn)
    return total


def noisify_adu(photons, gain, adc_offset, readout, bits, noiseless, ints, floats, seeds, out16, out32):
    """noisify's last pass: photons (n,) float32 -> out16 (n,) uint16 and out32 (n,)
    uint32 (gain, ADC offset, readout noise; with ``noiseless`` the -intfile's clip at
    65535).  Returns (overloads for ``bits``, photon sum)."""
    overloads = 0
    total = 0.0
    for i in range(photons.size):
        value = np.float64(photons[i])
        total += value
        adu = value * gain + adc_offset
        if readout > 0.0:
            adu += readout * np.float64(_gaussdev(ints, floats, seeds, SEED))
        if adu > 2147483647.0:
            adu = 2147483647.0
            if bits == 32:
                overloads += 1
        if noiseless and adu > 65535.0:
            adu = 65535.0
        out32[i] = _as_u32(adu)
        if adu > 65535.0:
            adu = 65535.0
            if bits == 16:
                overloads += 1
        out16[i] = _as_u16(adu)
    return overloads, total


def _gauss_integral(x, y):
    return 0.125 * (math.erf(2 * x * SQRT_LOG2) * math.erf(y * SQRT_LOG16) * GAUSS_NORM)


def _fiber_integral(x, y, g):
    return math.atan((x * y) / (g * math.sqrt(g * g + x * x + y * y))) / 2.0 / math.pi


def psf_kernel(kernel, radius, fiber, fwhm_pixels):
    """noisify's PSF integrated over each pixel of a disc: kernel ((2 radius + 1)^2,)
    float64, zero outside the disc."""
    size = 2 * radius + 1
    g = fwhm_pixels * FIBER_G_PER_FWHM
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            k = size * (radius + dy) + radius + dx
            kernel[k] = 0.0
            if dx * dx + dy * dy > radius * radius:
                continue
            if fiber:
                x = np.float64(dx)
                y = np.float64(dy)
                h = 0.5
                kernel[k] = (
                    _fiber_integral(x + h, y + h, g)
                    - _fiber_integral(x + h, y - h, g)
                    - _fiber_integral(x - h, y + h, g)
                    + _fiber_integral(x - h, y - h, g)
                )
            else:
                x = dx / fwhm_pixels
                y = dy / fwhm_pixels
                h = 1.0 / fwhm_pixels / 2.0
                kernel[k] = (
                    _gauss_integral(x + h, y + h)
                    - _gauss_integral(x + h, y - h)
                    - _gauss_integral(x - h, y + h)
                    + _gauss_integral(x - h, y - h)
                )


def apply_psf(image, out, xpixels, ypixels, fiber, fwhm_pixels, user_radius, kernel, kernel_radius):
    """noisify's point-spread function: image (pixels,) float32 -> out (pixels + 1,)
    float32, zeroed here; the spare last slot takes what noisify's bounds checks let
    through at j == pixels.  Every positive pixel spreads over a disc whose radius is set
    from its own photon count (or given); a contribution one column past the right edge
    lands on the first pixel of the next row, as in noisify.  Returns the photons that
    fell outside the discs, which are added back evenly."""
    pixels = xpixels * ypixels
    maxwidth = max(xpixels, ypixels)
    size = 2 * kernel_radius + 1
    g = fwhm_pixels * FIBER_G_PER_FWHM
    total_lost = 0.0
    for i in range(pixels + 1):
        out[i] = F_ZERO
    for i in range(pixels):
        source = image[i]
        if source <= F_ZERO:
            continue
        value = np.float64(source)
        x0 = i % xpixels
        y0 = i // xpixels
        if user_radius != 0:
            r = user_radius
        else:
            lost = math.sqrt(value) / 10.0
            if fiber:
                raw = 1.0 + np.ceil(g * (value / lost))
            else:
                raw = 1.0 + np.ceil(math.sqrt(-math.log(lost / value) / LOG16) * fwhm_pixels)
            # under 0.01 photons the Gaussian rule has no radius (noisify crashes there)
            r = 1 if math.isnan(raw) else np.int64(raw)
        if r == 0:
            r = 1
        r = min(r, maxwidth, kernel_radius)
        if fiber:
            lost = value * g / math.sqrt(g * g + np.float64(r * r))
        else:
            rsq = np.float64(r) / fwhm_pixels
            rsq = rsq * rsq
            lost = value * math.exp(-LOG16 * rsq)
        total_lost += lost
        for dx in range(-r, r + 1):
            for dy in range(-r, r + 1):
                weight = kernel[size * (kernel_radius + dy) + kernel_radius + dx]
                if weight == 0.0:
                    continue
                if dx * dx + dy * dy > r * r:
                    continue
                x = x0 + dx
                y = y0 + dy
                if x < 0 or x > xpixels or y < 0 or y > ypixels:
                    continue
                j = y * xpixels + x
                if j > pixels:
                    continue
                out[j] = np.float32(np.float64(out[j]) + value * weight)
    each = total_lost / pixels
    for i in range(pixels):
        out[i] = np.float32(np.float64(out[i]) + each)
    return total_lost


# ------------------------------------------------------------------ compiling
# name -> numba options, the callees first.  No fastmath (see the module docstring).
_OPTIONS: dict[str, Any] = {"nogil": True, "cache": True, "error_model": "numpy", "boundscheck": False}
# The helpers are called once or more per pixel with the state arrays.  As separate
# functions with reference-counted array arguments they cost six atomic reference-count
# updates per call, which made the draws 1.6x (the readout pass 2.5x) slower than the C
# kernel; inlined by LLVM (forceinline) and compiled without numba's runtime (_nrt=False:
# they allocate nothing), they run at the C kernel's speed.  numba itself compiles its
# allocation-free helpers this way.
_HELPER: dict[str, Any] = {"no_cpython_wrapper": True, "no_cfunc_wrapper": True, "forceinline": True, "_nrt": False}
_FUNCTIONS: dict[str, dict[str, Any]] = {
    "_step": _HELPER,
    "_ran1": _HELPER,
    "_gaussdev": _HELPER,
    "_gammln": _HELPER,
    "_poidev": _HELPER,
    "_as_u16": _HELPER,
    "_as_u32": _HELPER,
    "_gauss_integral": _HELPER,
    "_fiber_integral": _HELPER,
    "nanobragg_noise": {},
    "noisify_draws": {},
    "noisify_adu": {},
    "psf_kernel": {},
    "apply_psf": {},
}
ENTRY_POINTS = ("nanobragg_noise", "noisify_draws", "noisify_adu", "psf_kernel", "apply_psf")

_lock = threading.Lock()
_kernels: _pytypes.SimpleNamespace | None = None
_failed: str | None = None


def _compile(cache: bool = True) -> _pytypes.SimpleNamespace:
    """numba dispatchers for the entry points (each compiled lazily, on its first call)."""
    import numba

    njit: Any = numba.njit  # its overloads do not type options given as a mapping
    namespace = dict(globals())
    with _fast._numba_cache_in(_fast.cache_dir() / "numba"):
        for name, options in _FUNCTIONS.items():
            source = globals()[name]
            function = _pytypes.FunctionType(source.__code__, namespace, name, source.__defaults__)
            function.__qualname__ = f"noise{name}" if name.startswith("_") else f"noise_{name}"
            function.__doc__ = source.__doc__
            namespace[name] = njit(**{**_OPTIONS, "cache": cache}, **options)(function)
    return _pytypes.SimpleNamespace(**{name: namespace[name] for name in ENTRY_POINTS})


def kernels() -> _pytypes.SimpleNamespace | None:
    """The compiled loops (attributes named as :data:`ENTRY_POINTS`), or None when numba is
    unavailable or ``BRAGGSIM_NATIVE=0``: then the pure-Python twin is used."""
    global _kernels, _failed
    if _fast.disabled():
        return None
    if _kernels is not None or _failed is not None:
        return _kernels
    with _lock:
        if _kernels is None and _failed is None:
            try:
                try:
                    _kernels = _compile()
                except (RuntimeError, OSError):  # numba found no writable cache directory
                    _kernels = _compile(cache=False)
            except ImportError as exc:  # numba missing or broken: the Python twin still works
                _failed = f"numba is unavailable ({exc})"
    return _kernels


def unavailable_reason() -> str | None:
    """Why :func:`kernels` is None (None when it is not)."""
    if _fast.disabled():
        return "BRAGGSIM_NATIVE=0"
    kernels()
    return _failed


def warm_up() -> bool:
    """Compile (or load from the cache) every noise loop now, in the caller's thread, by
    running each once on a tiny input.  True when the compiled loops are in use."""
    compiled = kernels()
    if compiled is None:
        return False
    ints, floats, seeds = new_state(-1, -2)
    image = np.array([[0.5, 20.0]], dtype=np.float32)
    compiled.nanobragg_noise(
        image, np.array([0, 1, 0, 0], dtype=np.int64), 40.0, ints, floats, seeds, np.zeros(image.shape, dtype=np.uint16)
    )
    photons = image.ravel().copy()
    compiled.noisify_draws(photons, 0.0, 0.03, ints, floats, seeds)
    kernel = np.zeros(9)
    compiled.psf_kernel(kernel, 1, False, 1.5)
    out = np.zeros(photons.size + 1, dtype=np.float32)
    compiled.apply_psf(photons, out, 2, 1, False, 1.5, 0, kernel, 1)
    compiled.noisify_adu(
        out[:-1],
        1.0,
        40.0,
        3.0,
        16,
        False,
        ints,
        floats,
        seeds,
        np.zeros(2, dtype=np.uint16),
        np.zeros(2, dtype=np.uint32),
    )
    return True
