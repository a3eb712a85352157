"""Pure-Python twin of :mod:`braggsim._noise_numba`: the same draws and the same pixels.

Used when numba is unavailable or ``BRAGGSIM_NATIVE=0``, and by the tests as an
independent reference for the compiled loops (it is written differently: vectorised
where the order allows it, single precision emulated rather than typed).  Single
precision is emulated by rounding every float-typed intermediate through a C float
(``_f32``); for +, -, * and / of two floats, rounding the exact double result once gives
the correctly rounded float result, which is what the C code computes.  The point-spread
function is vectorised over pixels, one kernel offset at a time, in an order that adds
the contributions to every output pixel in the same sequence as the compiled loops.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from .mosaic import RAN1_AM as _AM
from .mosaic import RAN1_NDIV as _NDIV
from .mosaic import RAN1_NTAB as _NTAB
from .mosaic import RAN1_RNMX as _RNMX
from .mosaic import Ran1

_FLOAT = struct.Struct("<f")


def _f32(value: float) -> float:
    """``value`` rounded to a C float (round to nearest even)."""
    return _FLOAT.unpack(_FLOAT.pack(value))[0]


class NRState:
    """What nanoBragg and noisify keep in static variables: ran1's shuffle table (shared by
    every seed), gaussdev's spare deviate and poidev's cached constants.  Seeds live in
    :class:`Seed` objects, the C programs' ``long`` variables passed by address."""

    def __init__(self):
        self.iy = 0
        self.iv = [0] * _NTAB
        self.iset = False
        self.gset = 0.0
        self.poi_oldm = -1.0
        self.poi_g = self.poi_sq = self.poi_alxm = 0.0

    def ran1(self, seed: Seed) -> float:
        idum = seed.value
        if idum <= 0 or not self.iy:
            idum = 1 if -idum < 1 else -idum
            for j in range(_NTAB + 7, -1, -1):
                idum = _step(idum)
                if j < _NTAB:
                    self.iv[j] = idum
            self.iy = self.iv[0]
        idum = _step(idum)
        seed.value = idum
        j = self.iy // _NDIV
        self.iy = self.iv[j]
        self.iv[j] = idum
        value = _f32(_AM * self.iy)
        return _RNMX if value > _RNMX else value

    def gaussdev(self, seed: Seed) -> float:
        if self.iset:
            self.iset = False
            return self.gset
        while True:
            v1 = _f32(2.0 * self.ran1(seed) - 1.0)
            v2 = _f32(2.0 * self.ran1(seed) - 1.0)
            rsq = _f32(_f32(v1 * v1) + _f32(v2 * v2))
            if not (rsq >= 1.0 or rsq == 0.0):
                break
        fac = _f32(math.sqrt(-2.0 * math.log(rsq) / rsq))
        self.gset = _f32(v1 * fac)
        self.iset = True
        return _f32(v2 * fac)

    def poidev(self, xm: float, seed: Seed) -> float:
        """xm must already be a C float."""
        if xm > 1.0e6:
            return _f32(xm + math.sqrt(xm) * self.gaussdev(seed))
        if xm < 12.0:
            if xm != self.poi_oldm:
                self.poi_oldm = xm
                self.poi_g = _f32(math.exp(-xm))
            em = -1.0
            t = 1.0
            while True:
                em += 1.0
                t = _f32(t * self.ran1(seed))
                if not t > self.poi_g:
                    return em
        if xm != self.poi_oldm:
            self.poi_oldm = xm
            self.poi_sq = _f32(math.sqrt(2.0 * xm))
            self.poi_alxm = _f32(math.log(xm))
            self.poi_g = _f32(_f32(xm * self.poi_alxm) - _gammln(_f32(xm + 1.0)))
        while True:
            while True:
                y = _f32(math.tan(math.pi * self.ran1(seed)))
                em = _f32(_f32(self.poi_sq * y) + xm)
                if not em < 0.0:
                    break
            em = float(math.floor(em))
            exponent = _f32(_f32(_f32(em * self.poi_alxm) - _gammln(_f32(em + 1.0))) - self.poi_g)
            t = _f32(0.9 * (1.0 + _f32(y * y)) * math.exp(exponent))
            if not self.ran1(seed) > t:
                return em


class Seed:
    """A C ``long`` seed variable, advanced in place by every draw."""

    def __init__(self, value: int):
        self.value = int(value)


_step = Ran1.step  # the Park-Miller step; idum is never negative here, so // is C's division


_COF = (
    76.18009172947146,
    -86.50532032941677,
    24.01409824083091,
    -1.231739572450155,
    0.1208650973866179e-2,
    -0.5395239384953e-5,
)


def _gammln(xx: float) -> float:
    x = y = xx
    tmp = x + 5.5
    tmp -= (x + 0.5) * math.log(tmp)
    ser = 1.000000000190015
    for c in _COF:
        y += 1.0
        ser += c / y
    return _f32(-tmp + math.log(2.5066282746310005 * ser / x))


def as_u16(values: np.ndarray) -> np.ndarray:
    """C's (unsigned short) of doubles as x86-64 gcc does it: truncate, keep the low 16 bits."""
    values = np.asarray(values, dtype=np.float64)
    inside = (values > -2147483649.0) & (values < 2147483648.0)
    truncated = np.trunc(np.where(inside, values, 0.0)).astype(np.int64)
    return (truncated & 0xFFFF).astype(np.uint16)


def as_u32(values: np.ndarray) -> np.ndarray:
    """C's (unsigned int) of doubles as x86-64 gcc does it: truncate, keep the low 32 bits."""
    values = np.asarray(values, dtype=np.float64)
    inside = (values > -9.2e18) & (values < 9.2e18)
    truncated = np.trunc(np.where(inside, values, 0.0)).astype(np.int64)
    return (truncated & 0xFFFFFFFF).astype(np.uint32)


def nanobragg_noise(image: np.ndarray, roi, adc_offset: float, state: NRState, seed: Seed):
    """Twin of the compiled ``nanobragg_noise``: (counts uint16 (s, f), photons, overloads)."""
    spixels, fpixels = image.shape
    tests = np.zeros(image.shape, dtype=np.float64)
    inside = np.zeros(image.shape, dtype=bool)
    total = 0.0
    flat = image.astype(np.float32).tolist()
    for sp in range(max(0, roi[2]), min(spixels - 1, roi[3]) + 1):
        for fp in range(max(0, roi[0]), min(fpixels - 1, roi[1]) + 1):
            test = state.poidev(flat[sp][fp], seed)
            total += test
            tests[sp, fp] = test + adc_offset
            inside[sp, fp] = True
    overloads = int(np.count_nonzero(inside & (tests > 65535.0)))
    counts = as_u16(np.minimum(tests, 65535.0))
    counts[~inside] = 0
    return counts, total, overloads


def noisify_draws(photons: np.ndarray, flicker: float, calibration: float, state: NRState, seed: Seed, calib: Seed):
    """Twin of the compiled ``noisify_draws``; ``photons`` (float32, flat) is replaced in place."""
    total = 0.0
    values = photons.tolist()
    for i, value in enumerate(values):
        photons0 = value
        if flicker > 0.0:
            photons0 *= 1.0 + flicker * state.gaussdev(seed)
        if calibration > 0.0:
            photons0 *= 1.0 + calibration * state.gaussdev(calib)
        drawn = state.poidev(_f32(photons0), seed)
        values[i] = drawn
        total += drawn
    photons[:] = np.asarray(values, dtype=np.float32)
    return total


def noisify_adu(
    photons: np.ndarray, gain: float, adc_offset: float, readout: float, bits: int, noiseless: bool, state, seed
):
    """Twin of the compiled ``noisify_adu``: (uint16, uint32, overloads, photon sum)."""
    values = photons.astype(np.float64)
    total = float(np.cumsum(values)[-1]) if values.size else 0.0  # sequential, as the C loop
    adu = values * gain + adc_offset
    if readout > 0.0:
        deviates = np.array([state.gaussdev(seed) for _ in range(values.size)], dtype=np.float64)
        adu = adu + readout * deviates
    above_32 = adu > 2147483647.0
    adu = np.where(above_32, 2147483647.0, adu)
    if noiseless:
        adu = np.minimum(adu, 65535.0)
    out32 = as_u32(adu)
    above_16 = adu > 65535.0
    out16 = as_u16(np.minimum(adu, 65535.0))
    overloads = int(np.count_nonzero(above_32 if bits == 32 else above_16))
    return out16, out32, overloads, total


def psf_kernel(radius: int, fiber: bool, fwhm_pixels: float) -> np.ndarray:
    """Twin of the compiled ``psf_kernel``: ((2 radius + 1) ** 2,) float64."""
    size = 2 * radius + 1
    kernel = np.zeros(size * size)
    g = fwhm_pixels * 0.652383013252053
    sqrt_log2, sqrt_log16, norm = math.sqrt(math.log(2)), math.sqrt(math.log(16)), math.sqrt(math.log(16) / math.log(2))

    def gauss(x, y):
        return 0.125 * (math.erf(2 * x * sqrt_log2) * math.erf(y * sqrt_log16) * norm)

    def fib(x, y):
        return math.atan((x * y) / (g * math.sqrt(g * g + x * x + y * y))) / 2.0 / math.pi

    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx * dx + dy * dy > radius * radius:
                continue
            if fiber:
                x, y, h, f = float(dx), float(dy), 0.5, fib
            else:
                x, y, h, f = dx / fwhm_pixels, dy / fwhm_pixels, 1.0 / fwhm_pixels / 2.0, gauss
            value = f(x + h, y + h) - f(x + h, y - h) - f(x - h, y + h) + f(x - h, y - h)
            kernel[size * (radius + dy) + radius + dx] = value
    return kernel


def source_radii(values: np.ndarray, fiber: bool, fwhm_pixels: float, user_radius: int, limit: int) -> np.ndarray:
    """The PSF radius of every (positive) source pixel, as the compiled ``apply_psf`` picks it."""
    if user_radius != 0:
        radius = np.full(values.shape, user_radius, dtype=np.int64)
    else:
        v = values.astype(np.float64)
        lost = np.sqrt(v) / 10.0  # sqrt and / are exact in numpy; log and exp come from libm below
        if fiber:
            raw = 1 + np.ceil(fwhm_pixels * 0.652383013252053 * (v / lost))
        else:
            logs = np.array([math.log(q) for q in (lost / v).tolist()])
            with np.errstate(invalid="ignore"):
                raw = 1 + np.ceil(np.sqrt(-logs / math.log(16)) * fwhm_pixels)
        radius = np.where(np.isnan(raw), 1, raw).astype(np.int64)
    radius[radius == 0] = 1
    return np.minimum(radius, limit)


def apply_psf(
    image: np.ndarray,
    xpixels: int,
    ypixels: int,
    fiber: bool,
    fwhm_pixels: float,
    user_radius: int,
    kernel: np.ndarray,
    kernel_radius: int,
):
    """Twin of the compiled ``apply_psf``: (blurred float32 flat, lost photons added back)."""
    pixels = xpixels * ypixels
    maxwidth = max(xpixels, ypixels)
    out = np.zeros(pixels + 1, dtype=np.float32)  # the extra slot takes j == pixels, as noisify's padding
    source = np.flatnonzero(image > 0.0)
    values = image[source].astype(np.float64)
    radius = source_radii(image[source], fiber, fwhm_pixels, user_radius, min(maxwidth, kernel_radius))
    g = fwhm_pixels * 0.652383013252053
    if fiber:
        lost = values * g / np.sqrt(g * g + (radius * radius).astype(np.float64))
    else:
        scaled = radius.astype(np.float64) / fwhm_pixels
        lost = values * np.array([math.exp(-math.log(16) * q) for q in (scaled * scaled).tolist()])
    total_lost = float(np.cumsum(lost)[-1]) if lost.size else 0.0  # sequential sum, as the C loop
    x0, y0 = source % xpixels, source // xpixels
    size = 2 * kernel_radius + 1
    offsets = [
        (dx, dy)
        for dx in range(-kernel_radius, kernel_radius + 1)
        for dy in range(-kernel_radius, kernel_radius + 1)
        if kernel[size * (kernel_radius + dy) + kernel_radius + dx] != 0.0
    ]
    # An output pixel j receives from source j - (dy * xpixels + dx): taking offsets in
    # decreasing order visits its sources in increasing order, as the C loop over sources
    # does; equal offsets (possible when the radius exceeds half the width) come from the
    # same source, in the C loop's dx-then-dy order, which the stable sort keeps.
    offsets.sort(key=lambda o: -(o[1] * xpixels + o[0]))
    for dx, dy in offsets:
        reach = max(abs(dx), abs(dy))
        x, y = x0 + dx, y0 + dy
        use = (radius >= reach) & (dx * dx + dy * dy <= radius * radius)
        use &= (x >= 0) & (x <= xpixels) & (y >= 0) & (y <= ypixels)
        j = y * xpixels + x
        use &= j <= pixels
        if not use.any():
            continue
        target = j[use]
        weight = kernel[size * (kernel_radius + dy) + kernel_radius + dx]
        out[target] = (out[target].astype(np.float64) + values[use] * weight).astype(np.float32)
    result = out[:pixels]
    result[:] = (result.astype(np.float64) + total_lost / pixels).astype(np.float32)
    return result, total_lost
