"""The pre-numba C kernel, kept only so that benchmarks/bench.py can time it beside the
numba kernel in one run (issue 14).  Not part of braggsim.

Until issue 14, src/braggsim/_fast.py held this C source and compiled it with the
system C compiler at first use (``-O3 -march=native``, OpenMP when available).  Here it
is built once, on a machine with gcc, into braggsim's cache directory:

    python benchmarks/gcc_reference.py            # builds (needs gcc), prints the path

and bench.py then loads the cached library even with no compiler on PATH.  The module
offers the same interface as ``braggsim._fast`` (``available``, ``Table``,
``lattice_sum``, ``image_rows``, ``geometry_rows``), so bench.py can put it in place
of ``braggsim.simulate._fast`` and time the same ``simulate`` calls.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from braggsim import _fast

MAX_NATIVE_OVERSAMPLE = _fast.MAX_NATIVE_OVERSAMPLE
DetectorGeometry = _fast.DetectorGeometry

_HEADER = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define CHUNK 256

/* sin(pi r), cos(pi r) for |r| <= 0.5 as Taylor polynomials (they vectorise; libm's do
   not): to r^13 / r^14 in float (error < 1e-9, far under float32 resolution) and to
   r^21 / r^22 in double (error ~ 3e-16). */
static inline float sinpi_f(float r) {
    float t = r * r;
    float p = 0.00046630280576761234f;
    p = p * t - 0.007370430945714348f;
    p = p * t + 0.08214588661112819f;
    p = p * t - 0.5992645293207919f;
    p = p * t + 2.550164039877345f;
    p = p * t - 5.167712780049969f;
    p = p * t + 3.141592653589793f;
    return r * p;
}
static inline float cospi_f(float r) {
    float t = r * r;
    float p = -0.00010463810492484565f;
    p = p * t + 0.001929574309403922f;
    p = p * t - 0.02580689139001405f;
    p = p * t + 0.23533063035889312f;
    p = p * t - 1.3352627688545893f;
    p = p * t + 4.058712126416768f;
    p = p * t - 4.934802200544679f;
    p = p * t + 1.0f;
    return p;
}
static inline double sinpi_d(double r) {
    double t = r * r;
    double p = 5.392664662608125e-10;
    p = p * t - 2.2948428997269856e-08;
    p = p * t + 7.952054001475508e-07;
    p = p * t - 2.1915353447830204e-05;
    p = p * t + 0.00046630280576761234;
    p = p * t - 0.007370430945714348;
    p = p * t + 0.08214588661112819;
    p = p * t - 0.5992645293207919;
    p = p * t + 2.550164039877345;
    p = p * t - 5.167712780049969;
    p = p * t + 3.141592653589793;
    return r * p;
}
static inline double cospi_d(double r) {
    double t = r * r;
    double p = -7.700707130601346e-11;
    p = p * t + 3.6047307974624982e-09;
    p = p * t - 1.387895246221376e-07;
    p = p * t + 4.303069587032944e-06;
    p = p * t - 0.00010463810492484565;
    p = p * t + 0.001929574309403922;
    p = p * t - 0.02580689139001405;
    p = p * t + 0.23533063035889312;
    p = p * t - 1.3352627688545893;
    p = p * t + 4.058712126416768;
    p = p * t - 4.934802200544679;
    p = p * t + 1.0;
    return p;
}

"""

# one body, instantiated for float and double by plain text substitution
_BODY = r"""
/* f = sin(N pi dh) / sin(pi dh) up to a sign that squaring removes, and df, its
   derivative in dh with the same sign.  Series near dh = 0, as in lattice.py. */
static inline void sincg_SUF(REAL dh, REAL n, REAL *f, REAL *df) {
    REAL x = (REAL)M_PI * dh;
    REAL nd = n * dh;
    REAL u = nd - RINT(nd);  /* sin(pi N dh) = +-sin(pi u), |u| <= 1/2 */
    REAL s1 = SINPI(u), c1 = COSPI(u), s0 = SINPI(dh), c0 = COSPI(dh);
    int small = FABS(x) < THRESH;
    REAL inv = (REAL)1 / (small ? (REAL)1 : s0);
    REAL fe = s1 * inv;
    REAL dfe = (REAL)M_PI * (n * c1 - fe * c0) * inv;
    REAL n2 = n * n, x2 = x * x, a = ((REAL)1 - n2) / (REAL)6;
    REAL b = ((REAL)3 * n2 * n2 - (REAL)10 * n2 + (REAL)7) / (REAL)360;
    REAL fs = n * ((REAL)1 + x2 * (a + x2 * b));
    REAL dfs = (REAL)M_PI * n * x * ((REAL)2 * a + (REAL)4 * b * x2);
    *f = small ? fs : fe;
    *df = small ? dfs : dfe;
}

/* F^2 of the nearest table entry for every subpixel of a chunk and one orientation
   (a gather, kept out of the vectorised loops). */
static void fsq_SUF(const REAL *scat, int64_t m0, int64_t m1, const REAL *A, const REAL *table,
                    const int64_t *tmin, const int64_t *tshape, REAL fdef2, REAL *fsq) {
    for (int64_t m = m0; m < m1; m++) {
        REAL sx = scat[3 * m], sy = scat[3 * m + 1], sz = scat[3 * m + 2];
        int64_t ih = (int64_t)CEIL(sx * A[0] + sy * A[1] + sz * A[2] - (REAL)0.5) - tmin[0];
        int64_t ik = (int64_t)CEIL(sx * A[3] + sy * A[4] + sz * A[5] - (REAL)0.5) - tmin[1];
        int64_t il = (int64_t)CEIL(sx * A[6] + sy * A[7] + sz * A[8] - (REAL)0.5) - tmin[2];
        REAL value = fdef2;
        if (ih >= 0 && ik >= 0 && il >= 0 && ih < tshape[0] && ik < tshape[1] && il < tshape[2]) {
            REAL F = table[(ih * tshape[1] + ik) * tshape[2] + il];
            value = F * F;
        }
        fsq[m - m0] = value;
    }
}

#define LATTICE_SUF(with_derivative)                                                   \
    REAL sx = scat[3 * m], sy = scat[3 * m + 1], sz = scat[3 * m + 2];                 \
    REAL h = sx * A[0] + sy * A[1] + sz * A[2];                                        \
    REAL k = sx * A[3] + sy * A[4] + sz * A[5];                                        \
    REAL l = sx * A[6] + sy * A[7] + sz * A[8];                                        \
    REAL fa, fb, fc, da, db, dc;                                                       \
    sincg_SUF(h - CEIL(h - (REAL)0.5), n[0], &fa, &da);                                \
    sincg_SUF(k - CEIL(k - (REAL)0.5), n[1], &fb, &db);                                \
    sincg_SUF(l - CEIL(l - (REAL)0.5), n[2], &fc, &dc);

/* acc[m - m0] = sum_o F^2 (sincg_a sincg_b sincg_c)^2 over orientations o, for the
   scattering vectors scat[m], m0 <= m < m1 (at most CHUNK); F^2 = 1 without a table. */
static void lattice_chunk_SUF(const REAL *scat, int64_t m0, int64_t m1, const REAL *axes,
                              int64_t o_count, const REAL *n, const REAL *table,
                              const int64_t *tmin, const int64_t *tshape, REAL fdef2, REAL *acc) {
    REAL fsq[CHUNK];
    for (int64_t m = m0; m < m1; m++) { acc[m - m0] = 0; fsq[m - m0] = 1; }
    for (int64_t o = 0; o < o_count; o++) {
        const REAL *A = axes + 9 * o;
        if (table) fsq_SUF(scat, m0, m1, A, table, tmin, tshape, fdef2, fsq);
        #pragma omp simd
        for (int64_t m = m0; m < m1; m++) {
            LATTICE_SUF(0)
            REAL latt = fa * fb * fc;
            acc[m - m0] += fsq[m - m0] * latt * latt;
        }
    }
}

void forward_SUF(const REAL *scat, int64_t m_count, const REAL *axes, int64_t o_count,
                 const REAL *n, const REAL *table, const int64_t *tmin, const int64_t *tshape,
                 REAL fdef2, REAL *out, int threads) {
    int64_t chunks = (m_count + CHUNK - 1) / CHUNK;
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t c = 0; c < chunks; c++) {
        int64_t m0 = c * CHUNK, m1 = m0 + CHUNK < m_count ? m0 + CHUNK : m_count;
        lattice_chunk_SUF(scat, m0, m1, axes, o_count, n, table, tmin, tshape, fdef2, out + m0);
    }
}

/* Scattering vectors (1/A), solid angles and polarization factors of count subpixels at
   (s_mm[m], f_mm[m]) on the detector.  geo: pix0[3] fast[3] slow[3] beam[3] e_in[3]
   b_in[3], then pixel_mm, unused, close_distance_mm, kahn, scale.  flags: bit 0
   point_pixel, 3 nopolar. */
static void subpixels_SUF(const REAL *geo, const REAL *s_mm, const REAL *f_mm, int64_t count,
                          REAL wavelength, int flags, REAL *scat, REAL *omega, REAL *polar) {
    const REAL *pix0 = geo, *fast = geo + 3, *slow = geo + 6, *beam = geo + 9;
    const REAL *e_in = geo + 12, *b_in = geo + 15;
    REAL pixel = geo[18], close_mm = geo[20], kahn = geo[21];
    REAL point = (flags & 1) ? (REAL)1 : (REAL)0, nopolar = (flags & 8) ? (REAL)1 : (REAL)0;
    #pragma omp simd
    for (int64_t m = 0; m < count; m++) {
        REAL px = s_mm[m] * slow[0] + f_mm[m] * fast[0] + pix0[0];
        REAL py = s_mm[m] * slow[1] + f_mm[m] * fast[1] + pix0[1];
        REAL pz = s_mm[m] * slow[2] + f_mm[m] * fast[2] + pix0[2];
        REAL air = sqrt(px * px + py * py + pz * pz);
        REAL dx = px / air, dy = py / air, dz = pz / air;
        scat[3 * m] = (dx - beam[0]) / wavelength;
        scat[3 * m + 1] = (dy - beam[1]) / wavelength;
        scat[3 * m + 2] = (dz - beam[2]) / wavelength;
        REAL air_m = air * (REAL)1e-3;
        REAL solid = pixel * pixel / (air * air) * close_mm / air;
        omega[m] = point != 0 ? (REAL)1 / (air_m * air_m) : solid;
        REAL c2 = dx * beam[0] + dy * beam[1] + dz * beam[2];
        REAL eo = dx * e_in[0] + dy * e_in[1] + dz * e_in[2];
        REAL bo = dx * b_in[0] + dy * b_in[1] + dz * b_in[2];
        REAL rad = eo * eo + bo * bo;
        REAL cos2psi = rad > 0 ? (eo * eo - bo * bo) / (rad > 0 ? rad : (REAL)1) : (REAL)1;
        REAL factor = (REAL)0.5 * ((REAL)1 + c2 * c2 - kahn * cos2psi * ((REAL)1 - c2 * c2));
        polar[m] = nopolar != 0 ? (REAL)1 : factor;
    }
}

/* Detector positions of the subpixels of pixels [f0, f1) in row `row`, slow-major. */
static int64_t positions_SUF(REAL sub, int64_t os, int64_t row, int64_t f0, int64_t f1,
                             REAL *s_mm, REAL *f_mm) {
    int64_t m = 0;
    for (int64_t f = f0; f < f1; f++)
        for (int64_t i = 0; i < os; i++)
            for (int64_t j = 0; j < os; j++, m++) {
                s_mm[m] = sub * ((REAL)row * (REAL)os + (REAL)i) + sub / 2;
                f_mm[m] = sub * ((REAL)f * (REAL)os + (REAL)j) + sub / 2;
            }
    return m;
}

/* Subpixel geometry for rows [row0, row0 + rows): scat (rows, fpixels, os*os, 3),
   omega and polar (rows, fpixels, os*os).  os * os <= CHUNK. */
void geometry_SUF(const REAL *geo, int64_t row0, int64_t rows, int64_t fpixels, int64_t os,
                  REAL wavelength, int flags, REAL *scat, REAL *omega, REAL *polar, int threads) {
    REAL sub = geo[18] / (REAL)os;
    int64_t os2 = os * os, group = CHUNK / os2;
    int64_t groups_per_row = (fpixels + group - 1) / group;
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t c = 0; c < rows * groups_per_row; c++) {
        int64_t r = c / groups_per_row, f0 = (c % groups_per_row) * group;
        int64_t f1 = f0 + group < fpixels ? f0 + group : fpixels;
        REAL s_mm[CHUNK], f_mm[CHUNK];
        int64_t count = positions_SUF(sub, os, row0 + r, f0, f1, s_mm, f_mm);
        int64_t m0 = (r * fpixels + f0) * os2;
        subpixels_SUF(geo, s_mm, f_mm, count, wavelength, flags, scat + 3 * m0, omega + m0, polar + m0);
    }
}

/* The whole pixel for rows [row0, row0 + rows), geometry included (the no-gradient
   path).  flags as subpixels_SUF plus bit 1 oversample_omega, 2 oversample_polar.
   os * os <= CHUNK. out: (rows, fpixels). */
void image_SUF(const REAL *geo, int64_t row0, int64_t rows, int64_t fpixels, int64_t os,
               REAL wavelength, int flags, const REAL *axes, int64_t o_count, const REAL *n,
               const REAL *table, const int64_t *tmin, const int64_t *tshape, REAL fdef2,
               REAL *out, int threads) {
    REAL scale = geo[22];
    int64_t os2 = os * os, group = CHUNK / os2;  /* pixels per chunk */
    int64_t groups_per_row = (fpixels + group - 1) / group;
    REAL sub = geo[18] / (REAL)os;
    int sub_omega = (flags & 2) != 0, sub_polar = (flags & 4) != 0;
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t c = 0; c < rows * groups_per_row; c++) {
        int64_t r = c / groups_per_row, f0 = (c % groups_per_row) * group;
        int64_t f1 = f0 + group < fpixels ? f0 + group : fpixels;
        REAL s_mm[CHUNK], f_mm[CHUNK], scat[3 * CHUNK], omega[CHUNK], polar[CHUNK], acc[CHUNK];
        int64_t count = positions_SUF(sub, os, row0 + r, f0, f1, s_mm, f_mm);
        subpixels_SUF(geo, s_mm, f_mm, count, wavelength, flags, scat, omega, polar);
        lattice_chunk_SUF(scat, 0, count, axes, o_count, n, table, tmin, tshape, fdef2, acc);
        for (int64_t f = f0, k = 0; f < f1; f++, k += os2) {
            REAL total = 0;
            for (int64_t q = 0; q < os2; q++)
                total += acc[k + q] * (sub_omega ? omega[k + q] : (REAL)1) * (sub_polar ? polar[k + q] : (REAL)1);
            /* without oversample_omega/polar nanoBragg uses the first subpixel's factor */
            out[r * fpixels + f] = scale * total * (sub_omega ? (REAL)1 : omega[k]) * (sub_polar ? (REAL)1 : polar[k]);
        }
    }
}

/* Given g[m] = dLoss/dout[m]: writes grad_scat (m_count, 3) and grad_axes (o_count, 3, 3). */
void backward_SUF(const REAL *scat, int64_t m_count, const REAL *axes, int64_t o_count,
                  const REAL *n, const REAL *table, const int64_t *tmin, const int64_t *tshape,
                  REAL fdef2, const REAL *g, REAL *grad_scat, REAL *grad_axes, int threads) {
    int64_t chunks = (m_count + CHUNK - 1) / CHUNK;
    double *total = (double *)calloc((size_t)(9 * o_count), sizeof(double));
    #pragma omp parallel num_threads(threads)
    {
        double *mine = (double *)calloc((size_t)(9 * o_count), sizeof(double));
        #pragma omp for schedule(static)
        for (int64_t c = 0; c < chunks; c++) {
            int64_t m0 = c * CHUNK, m1 = m0 + CHUNK < m_count ? m0 + CHUNK : m_count;
            REAL gx[CHUNK], gy[CHUNK], gz[CHUNK], fsq[CHUNK];
            for (int64_t m = m0; m < m1; m++) { gx[m - m0] = gy[m - m0] = gz[m - m0] = 0; fsq[m - m0] = 1; }
            for (int64_t o = 0; o < o_count; o++) {
                const REAL *A = axes + 9 * o;
                if (table) fsq_SUF(scat, m0, m1, A, table, tmin, tshape, fdef2, fsq);
                REAL r0 = 0, r1 = 0, r2 = 0, r3 = 0, r4 = 0, r5 = 0, r6 = 0, r7 = 0, r8 = 0;
                #pragma omp simd reduction(+:r0,r1,r2,r3,r4,r5,r6,r7,r8)
                for (int64_t m = m0; m < m1; m++) {
                    LATTICE_SUF(1)
                    REAL w = (REAL)2 * g[m] * fsq[m - m0] * fa * fb * fc;
                    REAL gh = w * da * fb * fc, gk = w * fa * db * fc, gl = w * fa * fb * dc;
                    gx[m - m0] += gh * A[0] + gk * A[3] + gl * A[6];
                    gy[m - m0] += gh * A[1] + gk * A[4] + gl * A[7];
                    gz[m - m0] += gh * A[2] + gk * A[5] + gl * A[8];
                    r0 += gh * sx; r1 += gh * sy; r2 += gh * sz;
                    r3 += gk * sx; r4 += gk * sy; r5 += gk * sz;
                    r6 += gl * sx; r7 += gl * sy; r8 += gl * sz;
                }
                double *M = mine + 9 * o;
                M[0] += r0; M[1] += r1; M[2] += r2; M[3] += r3; M[4] += r4;
                M[5] += r5; M[6] += r6; M[7] += r7; M[8] += r8;
            }
            for (int64_t m = m0; m < m1; m++) {
                grad_scat[3 * m] = gx[m - m0];
                grad_scat[3 * m + 1] = gy[m - m0];
                grad_scat[3 * m + 2] = gz[m - m0];
            }
        }
        #pragma omp critical
        for (int64_t i = 0; i < 9 * o_count; i++) total[i] += mine[i];
        free(mine);
    }
    for (int64_t i = 0; i < 9 * o_count; i++) grad_axes[i] = (REAL)total[i];
    free(total);
}
#undef LATTICE_SUF
"""

_INSTANCES = {
    "f32": {
        "REAL": "float",
        "sqrt": "sqrtf",
        "SINPI": "sinpi_f",
        "COSPI": "cospi_f",
        "RINT": "rintf",
        "CEIL": "ceilf",
        "FABS": "fabsf",
        "THRESH": "1e-2f",
    },
    "f64": {
        "REAL": "double",
        "SINPI": "sinpi_d",
        "COSPI": "cospi_d",
        "RINT": "rint",
        "CEIL": "ceil",
        "FABS": "fabs",
        "THRESH": "1e-4",
    },
}


def _instantiate(suffix: str) -> str:
    text = _BODY.replace("_SUF", "_" + suffix)
    for name, value in _INSTANCES[suffix].items():
        text = re.sub(rf"\b{name}\b", value, text)
    return text


_SOURCE = _HEADER + "".join(_instantiate(s) for s in _INSTANCES)

_FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared"]
_library: ctypes.CDLL | None = None
_load_failed: str | None = None


def _cpu_key() -> str:
    # -march=native code must not be reused on a CPU with fewer instruction sets
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return platform.machine() + platform.processor() + flags


def library_path() -> Path:
    key = hashlib.sha256((_SOURCE + " ".join(_FLAGS) + _cpu_key()).encode()).hexdigest()[:16]
    return _fast.cache_dir() / "reference" / f"gcc-kernel-{key}.so"


def build(target: Path | None = None) -> Path:
    """Compile the C kernel with gcc (or $CC) into ``target`` (default: the cache)."""
    target = target or library_path()
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise RuntimeError("no C compiler found")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        source = Path(tmp) / "braggsim_kernel.c"
        source.write_text(_SOURCE)
        built = Path(tmp) / target.name
        for extra in (["-fopenmp"], []):  # OpenMP when the compiler has it
            result = subprocess.run(
                [compiler, *_FLAGS, *extra, str(source), "-o", str(built), "-lm"], capture_output=True, text=True
            )
            if result.returncode == 0:
                break
        else:
            raise RuntimeError(f"compiling the C kernel failed: {result.stderr[-2000:]}")
        os.replace(built, target)
    return target


def library() -> ctypes.CDLL | None:
    """The cached C library, built first when a compiler is at hand; None otherwise."""
    global _library, _load_failed
    if _library is not None or _load_failed is not None:
        return _library
    target = library_path()
    try:
        if not target.exists():
            build(target)
        lib = ctypes.CDLL(str(target))
        _declare(lib)
        _library = lib
    except (OSError, RuntimeError) as exc:
        _load_failed = f"{exc}; build it once with gcc on PATH: python benchmarks/gcc_reference.py"
    return _library


def available() -> bool:
    return library() is not None


def unavailable_reason() -> str | None:
    library()
    return _load_failed


def _declare(lib: ctypes.CDLL) -> None:
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    for suffix, real in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
        fn = getattr(lib, f"forward_{suffix}")
        fn.argtypes = [p, i64, p, i64, p, p, p, p, real, p, i32]
        fn.restype = None
        fn = getattr(lib, f"image_{suffix}")
        fn.argtypes = [p, i64, i64, i64, i64, real, i32, p, i64, p, p, p, p, real, p, i32]
        fn.restype = None
        fn = getattr(lib, f"geometry_{suffix}")
        fn.argtypes = [p, i64, i64, i64, i64, real, i32, p, p, p, i32]
        fn.restype = None
        fn = getattr(lib, f"backward_{suffix}")
        fn.argtypes = [p, i64, p, i64, p, p, p, p, real, p, p, p, i32]
        fn.restype = None


_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
_FLAG_BITS = {"point_pixel": 1, "oversample_omega": 2, "oversample_polar": 4, "nopolar": 8}


class Table:
    """A structure-factor table in the C kernel's layout (values with default_F filled in)."""

    def __init__(self, values: torch.Tensor, index_min, default_F: float):
        self.values = values.detach().contiguous()
        self.index_min = torch.tensor(list(index_min), dtype=torch.int64)
        self.shape = torch.tensor(list(values.shape), dtype=torch.int64)
        self.default_sq = float(default_F) ** 2


def _call_args(dtype, n_cells, table):
    n = torch.as_tensor(n_cells, dtype=dtype).contiguous()
    if table is None:
        return n, None, (None, None, None, 0.0)
    values = table.values.to(dtype).contiguous()
    return n, values, (values.data_ptr(), table.index_min.data_ptr(), table.shape.data_ptr(), table.default_sq)


def _threads(evaluations: int) -> int:
    return torch.get_num_threads() if evaluations >= 1 << 20 else 1


def _geometry_vector(geometry: DetectorGeometry, scale: float, dtype) -> tuple[torch.Tensor, int]:
    # the C kernel's 23 numbers: pix0, fast, slow, beam, e_in, b_in, pixel_mm, unused,
    # close_distance_mm, kahn, scale
    values = [*geometry.pix0_mm, *geometry.fast, *geometry.slow, *geometry.beam, *geometry.e_in, *geometry.b_in]
    values += [geometry.pixel_mm, 1.0, geometry.close_distance_mm, geometry.kahn, scale]
    flags = sum(bit for name, bit in _FLAG_BITS.items() if getattr(geometry, name))
    return torch.tensor(values, dtype=dtype), flags


class _LatticeSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scat, axes, n_cells, table):
        scat_c = scat.detach().contiguous()
        axes_c = axes.detach().contiguous()
        n, keep, (tab, tmin, tshape, fdef2) = _call_args(scat.dtype, n_cells, table)
        out = torch.empty(scat_c.shape[:-1], dtype=scat.dtype)
        getattr(library(), "forward_" + _SUFFIX[scat.dtype])(
            scat_c.data_ptr(), out.numel(), axes_c.data_ptr(), axes_c.shape[0], n.data_ptr(),
            tab, tmin, tshape, fdef2, out.data_ptr(), _threads(out.numel() * axes_c.shape[0]),
        )  # fmt: skip
        ctx.save_for_backward(scat_c, axes_c)
        ctx.n_cells, ctx.table = n_cells, table
        return out

    @staticmethod
    def backward(ctx, grad_out):
        scat, axes = ctx.saved_tensors
        n, keep, (tab, tmin, tshape, fdef2) = _call_args(scat.dtype, ctx.n_cells, ctx.table)
        g = grad_out.contiguous()
        grad_scat = torch.empty_like(scat)
        grad_axes = torch.empty_like(axes)
        getattr(library(), "backward_" + _SUFFIX[scat.dtype])(
            scat.data_ptr(), g.numel(), axes.data_ptr(), axes.shape[0], n.data_ptr(), tab, tmin, tshape, fdef2,
            g.data_ptr(), grad_scat.data_ptr(), grad_axes.data_ptr(), _threads(g.numel() * axes.shape[0]),
        )  # fmt: skip
        return grad_scat, grad_axes, None, None


def lattice_sum(scat, axes, n_cells, table=None):
    return _LatticeSum.apply(scat, axes, tuple(float(x) for x in n_cells), table)


def image_rows(geometry, rows, fpixels, oversample, axes, n_cells, table=None, *, scale, dtype):
    geo, flags = _geometry_vector(geometry, scale, dtype)
    axes_c = axes.detach().to(dtype).contiguous()
    n, keep, (tab, tmin, tshape, fdef2) = _call_args(dtype, n_cells, table)
    out = torch.empty((len(rows), fpixels), dtype=dtype)
    evaluations = out.numel() * oversample * oversample * axes_c.shape[0]
    getattr(library(), "image_" + _SUFFIX[dtype])(
        geo.data_ptr(), rows.start, len(rows), fpixels, oversample, float(geometry.wavelength_A), flags,
        axes_c.data_ptr(), axes_c.shape[0], n.data_ptr(), tab, tmin, tshape, fdef2, out.data_ptr(),
        _threads(evaluations),
    )  # fmt: skip
    return out


def geometry_rows(geometry, rows, fpixels, oversample, *, dtype):
    geo, flags = _geometry_vector(geometry, 0.0, dtype)
    o2 = oversample * oversample
    scat = torch.empty((len(rows), fpixels, o2, 3), dtype=dtype)
    omega = torch.empty((len(rows), fpixels, o2), dtype=dtype)
    polar = torch.empty_like(omega)
    getattr(library(), "geometry_" + _SUFFIX[dtype])(
        geo.data_ptr(), rows.start, len(rows), fpixels, oversample, float(geometry.wavelength_A), flags,
        scat.data_ptr(), omega.data_ptr(), polar.data_ptr(), _threads(omega.numel() * 8),
    )  # fmt: skip
    return scat, omega, polar


if __name__ == "__main__":
    path = build()
    print(path)
    sys.exit(0)
