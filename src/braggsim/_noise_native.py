"""Native loops for the noise models that must match nanoBragg and noisify pixel for pixel.

The random draws are inherently sequential (one shuffle table shared by every seed) and
the point-spread function accumulates in single precision in a fixed order, so both are
plain C loops here.  The C below is written to evaluate every expression with the same
C types (float or double) and in the same order as the Numerical Recipes routines that
nanoBragg and noisify use, so the same seeds give the same pixels.

It is compiled on first use with the system C compiler, without ``-march=native`` and
with ``-ffp-contract=off``: a fused multiply-add would round differently from the
separate multiply and add of the reference programs.  When no compiler is available
:mod:`braggsim.noise` falls back to a pure-Python twin of these loops that gives the same
pixels, only slower (``BRAGGSIM_NATIVE=0`` forces the fallback).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define NR_IA 16807
#define NR_IM 2147483647
#define NR_AM (1.0/NR_IM)
#define NR_IQ 127773
#define NR_IR 2836
#define NR_NTAB 32
#define NR_NDIV (1+(NR_IM-1)/NR_NTAB)
#define NR_RNMX (1.0-1.2e-7)

/* Everything the reference programs keep in static variables, shared by all seeds. */
typedef struct {
    int64_t iy;
    int64_t iv[NR_NTAB];
    int32_t iset;
    float gset;
    float poi_sq, poi_alxm, poi_g, poi_oldm;
} nr_state;

int64_t nr_state_size(void) { return (int64_t) sizeof(nr_state); }

void nr_state_init(nr_state *s) {
    s->iy = 0;
    for (int j = 0; j < NR_NTAB; ++j) s->iv[j] = 0;
    s->iset = 0;
    s->gset = 0.0f;
    s->poi_sq = s->poi_alxm = s->poi_g = 0.0f;
    s->poi_oldm = -1.0f;
}

static inline int64_t nr_step(int64_t idum) {
    int64_t k = idum / NR_IQ;
    idum = NR_IA * (idum - k * NR_IQ) - NR_IR * k;
    if (idum < 0) idum += NR_IM;
    return idum;
}

static float nr_ran1(nr_state *s, int64_t *idum) {
    if (*idum <= 0 || !s->iy) {
        *idum = (-(*idum) < 1) ? 1 : -(*idum);
        for (int j = NR_NTAB + 7; j >= 0; j--) {
            *idum = nr_step(*idum);
            if (j < NR_NTAB) s->iv[j] = *idum;
        }
        s->iy = s->iv[0];
    }
    *idum = nr_step(*idum);
    int j = (int) (s->iy / NR_NDIV);
    s->iy = s->iv[j];
    s->iv[j] = *idum;
    float value = (float) (NR_AM * s->iy);
    if (value > NR_RNMX) return (float) NR_RNMX;
    return value;
}

static float nr_gaussdev(nr_state *s, int64_t *idum) {
    if (s->iset) {
        s->iset = 0;
        return s->gset;
    }
    float v1, v2, rsq;
    do {
        v1 = (float) (2.0 * nr_ran1(s, idum) - 1.0);
        v2 = (float) (2.0 * nr_ran1(s, idum) - 1.0);
        rsq = v1 * v1 + v2 * v2;
    } while (rsq >= 1.0f || rsq == 0.0f);
    float fac = (float) sqrt(-2.0 * log((double) rsq) / rsq);
    s->gset = v1 * fac;
    s->iset = 1;
    return v2 * fac;
}

static float nr_gammln(float xx) {
    static const double cof[6] = {76.18009172947146, -86.50532032941677, 24.01409824083091,
                                  -1.231739572450155, 0.1208650973866179e-2, -0.5395239384953e-5};
    double x = xx, y = xx;
    double tmp = x + 5.5;
    tmp -= (x + 0.5) * log(tmp);
    double ser = 1.000000000190015;
    for (int j = 0; j <= 5; ++j) ser += cof[j] / ++y;
    return (float) (-tmp + log(2.5066282746310005 * ser / x));
}

static float nr_poidev(nr_state *s, float xm, int64_t *idum) {
    float em, t, y;
    if (xm > 1.0e6f) {
        return (float) (xm + sqrt((double) xm) * nr_gaussdev(s, idum));
    }
    if (xm < 12.0f) {
        if (xm != s->poi_oldm) {
            s->poi_oldm = xm;
            s->poi_g = (float) exp((double) (-xm));
        }
        em = -1.0f;
        t = 1.0f;
        do {
            em += 1.0f;
            t *= nr_ran1(s, idum);
        } while (t > s->poi_g);
    } else {
        if (xm != s->poi_oldm) {
            s->poi_oldm = xm;
            s->poi_sq = (float) sqrt(2.0 * xm);
            s->poi_alxm = (float) log((double) xm);
            s->poi_g = xm * s->poi_alxm - nr_gammln((float) (xm + 1.0));
        }
        do {
            do {
                y = (float) tan(M_PI * nr_ran1(s, idum));
                em = s->poi_sq * y + xm;
            } while (em < 0.0f);
            em = (float) floor((double) em);
            t = (float) (0.9 * (1.0 + y * y) *
                         exp((double) (em * s->poi_alxm - nr_gammln((float) (em + 1.0)) - s->poi_g)));
        } while (nr_ran1(s, idum) > t);
    }
    return em;
}

/* C's (unsigned short) / (unsigned int) of a double as x86-64 gcc evaluates it, written
   out so the result does not depend on how this file is compiled: truncate toward zero,
   keep the low bits (a value below the 32-bit range becomes 0x80000000 first). */
static inline uint16_t as_u16(double v) {
    if (!(v > -2147483649.0 && v < 2147483648.0)) return 0;
    return (uint16_t) ((int64_t) v & 0xFFFF);
}
static inline uint32_t as_u32(double v) {
    if (!(v > -9.2e18 && v < 9.2e18)) return 0;
    return (uint32_t) ((int64_t) v & 0xFFFFFFFF);
}

/* nanoBragg -noisefile: one Poisson draw per pixel inside the ROI, plus the ADC offset. */
int64_t nanobragg_noise(const float *image, int64_t fpixels, int64_t spixels, const int64_t *roi,
                        double adc_offset, nr_state *s, int64_t *seed, uint16_t *out, double *photons) {
    int64_t overloads = 0;
    double sum = 0.0;
    for (int64_t sp = 0; sp < spixels; ++sp) {
        for (int64_t fp = 0; fp < fpixels; ++fp) {
            int64_t i = sp * fpixels + fp;
            if (fp < roi[0] || fp > roi[1] || sp < roi[2] || sp > roi[3]) { out[i] = 0; continue; }
            double test = nr_poidev(s, image[i], seed);
            sum += test;
            test += adc_offset;
            if (test > 65535.0) { test = 65535.0; ++overloads; }
            out[i] = as_u16(test);
        }
    }
    *photons = sum;
    return overloads;
}

/* noisify, first pass: flicker, calibration error and Poisson draws, in place. */
double noisify_draws(float *photons, int64_t n, double flicker, double calibration, nr_state *s,
                     int64_t *seed, int64_t *calib_seed) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        double photons0 = photons[i];
        if (flicker > 0.0) photons0 *= (1.0 + flicker * nr_gaussdev(s, seed));
        if (calibration > 0.0) photons0 *= (1.0 + calibration * nr_gaussdev(s, calib_seed));
        photons[i] = nr_poidev(s, (float) photons0, seed);
        sum += photons[i];
    }
    return sum;
}

/* noisify, last pass: gain, ADC offset and readout noise to integers.  bits = 16 or 32;
   with readout noise off (nr_state unused) this is also the noiseless -intfile. */
int64_t noisify_adu(const float *photons, int64_t n, double gain, double adc_offset, double readout,
                    int32_t bits, int32_t noiseless, nr_state *s, int64_t *seed, uint16_t *out16,
                    uint32_t *out32, double *photon_sum) {
    int64_t overloads = 0;
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        sum += photons[i];
        double adu = photons[i] * gain + adc_offset;
        if (readout > 0.0) adu += readout * nr_gaussdev(s, seed);
        if (adu > 2147483647.0) {
            adu = 2147483647.0;
            if (bits == 32) ++overloads;
        }
        if (noiseless && adu > 65535.0) adu = 65535.0;
        out32[i] = as_u32(adu);
        if (adu > 65535.0) {
            adu = 65535.0;
            if (bits == 16) ++overloads;
        }
        out16[i] = as_u16(adu);
    }
    *photon_sum = sum;
    return overloads;
}

/* noisify's PSF kernel: the PSF integrated over each pixel of a disc of the given radius,
   (2 radius + 1)^2 values, zero outside the disc.  The Gaussian has the given FWHM; the
   fiber PSF g / (2 pi (g^2 + r^2)^(3/2)) has g = 0.652383013252053 FWHM. */
static double gauss_integ(double x, double y) {
    return 0.125 * (erf(2 * x * sqrt(log(2))) * erf(y * sqrt(log(16))) * sqrt(log(16) / log(2)));
}
static double fiber_integ(double x, double y, double g) {
    return atan((x * y) / (g * sqrt(g * g + x * x + y * y))) / 2.0 / M_PI;
}
void psf_kernel(double *kernel, int64_t radius, int32_t fiber, double fwhm_pixels) {
    int64_t ks = 2 * radius + 1;
    double g = fwhm_pixels * 0.652383013252053;
    for (int64_t dy = -radius; dy <= radius; ++dy) {
        for (int64_t dx = -radius; dx <= radius; ++dx) {
            int64_t k = ks * (radius + dy) + radius + dx;
            kernel[k] = 0.0;
            if ((double) (dx * dx + dy * dy) > (double) (radius * radius)) continue;
            if (fiber) {
                double x = (double) dx, y = (double) dy, h = 0.5;
                kernel[k] = fiber_integ(x + h, y + h, g) - fiber_integ(x + h, y - h, g) -
                            fiber_integ(x - h, y + h, g) + fiber_integ(x - h, y - h, g);
            } else {
                double x = dx / fwhm_pixels, y = dy / fwhm_pixels, h = 1.0 / fwhm_pixels / 2.;
                kernel[k] = gauss_integ(x + h, y + h) - gauss_integ(x + h, y - h) -
                            gauss_integ(x - h, y + h) + gauss_integ(x - h, y - h);
            }
        }
    }
}

/* noisify's point-spread function: every positive pixel spreads over a disc whose radius
   is set from its own photon count (or given), the kernel is the PSF integrated over a
   pixel, and what falls outside the disc is spread evenly over the whole image.  The
   bounds checks admit x == xpixels and y == ypixels, as noisify's do, so a contribution
   one column past the right edge lands on the first pixel of the next row. */
double apply_psf(const float *in, float *out, int64_t xpixels, int64_t ypixels, int32_t fiber,
                 double fwhm_pixels, int64_t user_radius, const double *kernel, int64_t kernel_radius) {
    int64_t pixels = xpixels * ypixels;
    int64_t maxwidth = xpixels > ypixels ? xpixels : ypixels;
    int64_t ks = 2 * kernel_radius + 1;
    double g = fwhm_pixels * 0.652383013252053;
    double total_lost = 0.0;
    for (int64_t i = 0; i <= pixels; ++i) out[i] = 0.0f;
    for (int64_t i = 0; i < pixels; ++i) {
        if (in[i] <= 0.0f) continue;
        int64_t x0 = i % xpixels, y0 = i / xpixels;
        int64_t r;
        if (user_radius != 0) {
            r = user_radius;
        } else {
            double lost = sqrt((double) in[i]) / 10.0;
            double raw;
            if (fiber) raw = 1 + ceil(g * (in[i] / lost));
            else raw = 1 + ceil(sqrt(-log(lost / in[i]) / log(16)) * fwhm_pixels);
            /* under 0.01 photons the Gaussian rule has no radius (noisify crashes there) */
            r = isnan(raw) ? 1 : (int64_t) raw;
        }
        if (r == 0) r = 1;
        if (r > maxwidth) r = maxwidth;
        if (r > kernel_radius) r = kernel_radius;
        double lost;
        if (fiber) {
            lost = in[i] * g / sqrt(g * g + (double) (r * r));
        } else {
            double rsq = (double) r;
            rsq = rsq / fwhm_pixels;
            rsq = rsq * rsq;
            lost = in[i] * exp(-log(16) * rsq);
        }
        total_lost += lost;
        for (int64_t dx = -r; dx <= r; ++dx) {
            for (int64_t dy = -r; dy <= r; ++dy) {
                double kv = kernel[ks * (kernel_radius + dy) + kernel_radius + dx];
                if (kv == 0.0) continue;
                if (dx * dx + dy * dy > r * r) continue;
                int64_t x = x0 + dx, y = y0 + dy;
                if (x < 0 || x > xpixels || y < 0 || y > ypixels) continue;
                int64_t j = y * xpixels + x;
                if (j > pixels) continue;
                out[j] = (float) (out[j] + in[i] * kv);
            }
        }
    }
    double each = total_lost / pixels;
    for (int64_t i = 0; i < pixels; ++i) out[i] = (float) (out[i] + each);
    return total_lost;
}
"""

_FLAGS = ["-O2", "-fPIC", "-shared", "-ffp-contract=off"]
_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_load_failed: str | None = None


def _compile(target: Path) -> None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise RuntimeError("no C compiler found")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        source = Path(tmp) / "braggsim_noise.c"
        source.write_text(_SOURCE)
        built = Path(tmp) / target.name
        result = subprocess.run(
            [compiler, *_FLAGS, str(source), "-o", str(built), "-lm"], capture_output=True, text=True
        )
        if result.returncode != 0:
            raise RuntimeError(f"compiling the noise kernel failed: {result.stderr[-2000:]}")
        os.replace(built, target)  # atomic: a concurrent process never loads half a file


def _declare(lib: ctypes.CDLL) -> None:
    p, i64, i32, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_double
    lib.nr_state_size.argtypes, lib.nr_state_size.restype = [], i64
    lib.nr_state_init.argtypes, lib.nr_state_init.restype = [p], None
    lib.nanobragg_noise.argtypes = [p, i64, i64, p, f64, p, p, p, p]
    lib.nanobragg_noise.restype = i64
    lib.noisify_draws.argtypes = [p, i64, f64, f64, p, p, p]
    lib.noisify_draws.restype = f64
    lib.noisify_adu.argtypes = [p, i64, f64, f64, f64, i32, i32, p, p, p, p, p]
    lib.noisify_adu.restype = i64
    lib.apply_psf.argtypes = [p, p, i64, i64, i32, f64, i64, p, i64]
    lib.apply_psf.restype = f64
    lib.psf_kernel.argtypes, lib.psf_kernel.restype = [p, i64, i32, f64], None


def library() -> ctypes.CDLL | None:
    """The compiled noise kernel, built on first use; None when unavailable or disabled."""
    global _library, _load_failed
    if os.environ.get("BRAGGSIM_NATIVE", "1") == "0" or not sys.platform.startswith("linux"):
        return None
    if _library is not None or _load_failed is not None:
        return _library
    with _lock:
        if _library is None and _load_failed is None:
            from ._fast import cache_dir

            compiler = os.environ.get("CC", "")
            key = hashlib.sha256((_SOURCE + " ".join(_FLAGS) + compiler).encode()).hexdigest()[:16]
            target = cache_dir() / f"noise-{key}.so"
            try:
                if not target.exists():
                    _compile(target)
                lib = ctypes.CDLL(str(target))
                _declare(lib)
                _library = lib
            except (OSError, RuntimeError) as exc:
                _load_failed = str(exc)
    return _library
