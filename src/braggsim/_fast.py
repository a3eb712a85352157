"""A fused kernel for the hot loop: sum over orientations of F^2 * F_latt^2.

The eager torch path materialises (subpixels, orientations, 3) intermediates and
streams them through memory a few dozen times; this kernel works through 256 subpixels
at a time in L1 cache, in loops that LLVM vectorises.  It covers the common case (square lattice transform, integer
N_cells, F from ``default_F`` or the nearest table entry) and is a
``torch.autograd.Function`` with a hand-written backward that recomputes what it needs
instead of storing per-orientation intermediates.  Gradients reach the scattering
vectors (so the detector, beam and wavelength) and the lattice axes (so cell, misset,
phi and mosaic spread); ``default_F`` and fluence scale the result outside the kernel.

The kernels below are plain Python compiled by numba, whose wheel ships LLVM: no C
compiler is needed on any platform.  Each is compiled twice, for float32 and float64,
from the same source with the precision's constants as globals (a float64 literal would
promote float32 arithmetic).  numba compiles on first call and keeps the machine code in
a per-user cache (:func:`cache_dir`), so only the first process on a machine pays for
it; :func:`warm_up` does that work in a background thread.  The kernels run without the
GIL on threads of this module's own pool, not numba's threading layer: its portable
default (workqueue) aborts the process when two Python threads launch parallel work at
once, which a refinement thread and live simulation would.

``BRAGGSIM_NATIVE=0`` selects the torch path everywhere.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
import types as _pytypes
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

CHUNK = 256  # subpixels handled together: their work vectorises and stays in L1
MAX_NATIVE_OVERSAMPLE = 16  # the image kernel holds a pixel's subpixels in one chunk


class DetectorGeometry(NamedTuple):
    """Everything the geometry and image kernels need to place and weigh subpixels.

    Vectors are (x, y, z) in the lab frame: ``pix0_mm`` the first pixel's corner in mm,
    ``fast``/``slow`` the detector's unit axes, ``beam`` the unit incident direction,
    ``e_in``/``b_in`` the polarization basis; ``pixel_mm`` the pixel edge,
    ``close_distance_mm`` the sample-detector distance along the normal, ``kahn`` the
    polarization (Kahn) factor, ``wavelength_A`` in Angstrom.  The flags follow
    :class:`~braggsim.detector.Detector` and :class:`~braggsim.beam.Beam`.  The values
    are plain Python numbers, so a geometry is hashable (a memo key) and
    :meth:`in_precision` converts it for a kernel.
    """

    pix0_mm: tuple
    fast: tuple
    slow: tuple
    beam: tuple
    e_in: tuple
    b_in: tuple
    pixel_mm: float
    close_distance_mm: float
    kahn: float
    wavelength_A: float
    point_pixel: bool = False
    nopolar: bool = False
    oversample_omega: bool = False
    oversample_polar: bool = False

    def in_precision(self, real) -> DetectorGeometry:
        """The same geometry with every number a numpy scalar of type ``real``."""
        values: list = []
        for value in self:
            if isinstance(value, bool):
                values.append(value)
            elif isinstance(value, tuple):
                values.append(tuple(real(x) for x in value))
            else:
                values.append(real(value))
        return DetectorGeometry(*values)


# ------------------------------------------------------------------ kernel source
# Compiled once per precision by _compile_kernels; REAL, ZERO, ONE, HALF, TWO, PI,
# THRESH, SIN_POLY and COS_POLY are that precision's globals.  Loops that vectorise
# index arrays from 0 through views of one chunk, so that numba's negative-index
# handling folds away.

# sin(pi r) = r P(r^2) and cos(pi r) = Q(r^2) for |r| <= 0.5 as Taylor polynomials (they
# vectorise; libm's calls do not): to r^13 / r^14 in float32 (error < 1e-9, far under
# float32 resolution) and to r^21 / r^22 in float64 (error ~ 3e-16).  Highest power
# first; the loops over these constant tuples unroll at compile time.
_SIN_TAIL = (
    0.00046630280576761234,
    -0.007370430945714348,
    0.08214588661112819,
    -0.5992645293207919,
    2.550164039877345,
    -5.167712780049969,
    3.141592653589793,
)
_COS_TAIL = (
    -0.00010463810492484565,
    0.001929574309403922,
    -0.02580689139001405,
    0.23533063035889312,
    -1.3352627688545893,
    4.058712126416768,
    -4.934802200544679,
    1.0,
)
_SIN_HEAD_F64 = (5.392664662608125e-10, -2.2948428997269856e-08, 7.952054001475508e-07, -2.1915353447830204e-05)
_COS_HEAD_F64 = (-7.700707130601346e-11, 3.6047307974624982e-09, -1.387895246221376e-07, 4.303069587032944e-06)


def _precision_globals(real) -> dict:
    f32 = real is np.float32
    sin_poly = _SIN_TAIL if f32 else _SIN_HEAD_F64 + _SIN_TAIL
    cos_poly = _COS_TAIL if f32 else _COS_HEAD_F64 + _COS_TAIL
    return {
        "REAL": real,
        "ZERO": real(0.0),
        "ONE": real(1.0),
        "HALF": real(0.5),
        "TWO": real(2.0),
        "PI": real(math.pi),
        # below it sincg uses its series (the same threshold as lattice.py)
        "THRESH": real(1e-2 if f32 else 1e-4),
        "SIN_POLY": tuple(real(c) for c in sin_poly),
        "COS_POLY": tuple(real(c) for c in cos_poly),
    }


# Each compiled copy of the kernels gets its precision's values of these names as
# globals; at module level they hold the float64 ones, so the kernels also run as plain
# Python (slowly), which helps when debugging them.
_PRECISION_NAMES = ("REAL", "ZERO", "ONE", "HALF", "TWO", "PI", "THRESH", "SIN_POLY", "COS_POLY")
REAL, ZERO, ONE, HALF, TWO, PI, THRESH, SIN_POLY, COS_POLY = (
    _precision_globals(np.float64)[name] for name in _PRECISION_NAMES
)


def _sincg(d, count, n, f):
    """f[i] = sin(N pi d[i]) / sin(pi d[i]) for |d[i]| <= 1/2, up to a sign that squaring
    removes; the series near 0 as in lattice.py."""
    a = (ONE - n * n) / REAL(6.0)
    b = (REAL(3.0) * n * n * n * n - REAL(10.0) * n * n + REAL(7.0)) / REAL(360.0)
    for i in range(count):
        x = PI * d[i]
        nd = n * d[i]
        u = nd - np.rint(nd)  # sin(pi N d) = +-sin(pi u), |u| <= 1/2
        tu = u * u
        t0 = d[i] * d[i]
        s1 = SIN_POLY[0]
        s0 = SIN_POLY[0]
        for c in SIN_POLY[1:]:
            s1 = s1 * tu + c
            s0 = s0 * t0 + c
        small = abs(x) < THRESH
        x2 = x * x
        series = n * (ONE + x2 * (a + x2 * b))
        f[i] = series if small else (u * s1) / (ONE if small else d[i] * s0)


def _sincg_slope(d, count, n, f, df):
    """:func:`_sincg` and df[i], its derivative in d with the same sign."""
    a = (ONE - n * n) / REAL(6.0)
    b = (REAL(3.0) * n * n * n * n - REAL(10.0) * n * n + REAL(7.0)) / REAL(360.0)
    for i in range(count):
        x = PI * d[i]
        nd = n * d[i]
        u = nd - np.rint(nd)
        tu = u * u
        t0 = d[i] * d[i]
        s1 = SIN_POLY[0]
        s0 = SIN_POLY[0]
        for c in SIN_POLY[1:]:
            s1 = s1 * tu + c
            s0 = s0 * t0 + c
        c1 = COS_POLY[0]
        c0 = COS_POLY[0]
        for c in COS_POLY[1:]:
            c1 = c1 * tu + c
            c0 = c0 * t0 + c
        s1 = u * s1
        s0 = d[i] * s0
        small = abs(x) < THRESH
        inv = ONE / (ONE if small else s0)
        exact = s1 * inv
        x2 = x * x
        f[i] = n * (ONE + x2 * (a + x2 * b)) if small else exact
        df[i] = PI * n * x * (TWO * a + REAL(4.0) * b * x2) if small else PI * (n * c1 - exact * c0) * inv


def _offsets(s, count, axes, o, table, index_min, table_shape, default_sq, dh, dk, dl, fsq, scratch):
    """For the chunk's scattering vectors s (count * 3, flat) and orientation o: dh, dk, dl
    = (h, k, l) minus the nearest integers (nanoBragg's ceil(h - 1/2)) and, with a table,
    fsq = F^2 of that nearest entry (default_F^2 off the table).  scratch: (3, CHUNK)."""
    at = 9 * o
    a0, a1, a2 = axes[at], axes[at + 1], axes[at + 2]
    a3, a4, a5 = axes[at + 3], axes[at + 4], axes[at + 5]
    a6, a7, a8 = axes[at + 6], axes[at + 7], axes[at + 8]
    h0, k0, l0 = scratch[0], scratch[1], scratch[2]
    for i in range(count):
        sx = s[3 * i]
        sy = s[3 * i + 1]
        sz = s[3 * i + 2]
        h = sx * a0 + sy * a1 + sz * a2
        k = sx * a3 + sy * a4 + sz * a5
        l = sx * a6 + sy * a7 + sz * a8
        h0[i] = np.ceil(h - HALF)
        k0[i] = np.ceil(k - HALF)
        l0[i] = np.ceil(l - HALF)
        dh[i] = h - h0[i]
        dk[i] = k - k0[i]
        dl[i] = l - l0[i]
    if table.size == 0:
        return
    # the gather is kept out of the loop above, which vectorises
    for i in range(count):
        ih = np.int64(h0[i]) - index_min[0]
        ik = np.int64(k0[i]) - index_min[1]
        il = np.int64(l0[i]) - index_min[2]
        inside = 0 <= ih < table_shape[0] and 0 <= ik < table_shape[1] and 0 <= il < table_shape[2]
        amplitude = table[(ih * table_shape[1] + ik) * table_shape[2] + il] if inside else ZERO
        fsq[i] = amplitude * amplitude if inside else default_sq


def _forward_range(start, stop, scat, axes, n_cells, table, index_min, table_shape, default_sq, out):
    """out[m] = sum_o F^2 (sincg_a sincg_b sincg_c)^2 over orientations for the scattering
    vectors m in [start, stop) of scat (M * 3, flat), chunk by chunk; F^2 = 1 without a
    table."""
    na, nb, nc = n_cells
    work = np.empty((10, CHUNK), REAL)
    fsq, dh, dk, dl, fa, fb, fc = work[0], work[1], work[2], work[3], work[4], work[5], work[6]
    for m0 in range(start, stop, CHUNK):
        m1 = min(m0 + CHUNK, stop)
        count = m1 - m0
        s = scat[3 * m0 : 3 * m1]
        acc = out[m0:m1]
        for i in range(count):
            acc[i] = ZERO
            fsq[i] = ONE
        for o in range(axes.shape[0] // 9):
            _offsets(s, count, axes, o, table, index_min, table_shape, default_sq, dh, dk, dl, fsq, work[7:])
            _sincg(dh, count, na, fa)
            _sincg(dk, count, nb, fb)
            _sincg(dl, count, nc, fc)
            for i in range(count):
                lattice = fa[i] * fb[i] * fc[i]
                acc[i] += fsq[i] * lattice * lattice


def _outer_sum(gh, gk, gl, s, count, grad_axes, at):
    """grad_axes[at + 3 j + c] += sum_i g_j[i] s_c[i] for j = h, k, l (float64 sums)."""
    r0 = r1 = r2 = r3 = r4 = r5 = r6 = r7 = r8 = ZERO
    for i in range(count):
        sx = s[3 * i]
        sy = s[3 * i + 1]
        sz = s[3 * i + 2]
        r0 += gh[i] * sx
        r1 += gh[i] * sy
        r2 += gh[i] * sz
        r3 += gk[i] * sx
        r4 += gk[i] * sy
        r5 += gk[i] * sz
        r6 += gl[i] * sx
        r7 += gl[i] * sy
        r8 += gl[i] * sz
    grad_axes[at] += r0
    grad_axes[at + 1] += r1
    grad_axes[at + 2] += r2
    grad_axes[at + 3] += r3
    grad_axes[at + 4] += r4
    grad_axes[at + 5] += r5
    grad_axes[at + 6] += r6
    grad_axes[at + 7] += r7
    grad_axes[at + 8] += r8


def _backward_range(
    start,
    stop,
    scat,
    grad_out,
    axes,
    n_cells,
    table,
    index_min,
    table_shape,
    default_sq,
    grad_scat,
    grad_axes,
    block,
):
    """Given grad_out[m] = dLoss/dout[m] for m in [start, stop): writes grad_scat rows
    [start, stop) (M * 3 flat) and adds each chunk's share of the lattice-axis gradient to
    row (m - start) // block of grad_axes ((stop - start) / block, K * 9), float64."""
    na, nb, nc = n_cells
    work = np.empty((19, CHUNK), REAL)
    fsq, dh, dk, dl, fa, fb, fc = work[0], work[1], work[2], work[3], work[4], work[5], work[6]
    da, db, dc = work[7], work[8], work[9]
    gx, gy, gz, gh, gk, gl = work[10], work[11], work[12], work[13], work[14], work[15]
    for m0 in range(start, stop, CHUNK):
        m1 = min(m0 + CHUNK, stop)
        count = m1 - m0
        s = scat[3 * m0 : 3 * m1]
        g = grad_out[m0:m1]
        for i in range(count):
            gx[i] = ZERO
            gy[i] = ZERO
            gz[i] = ZERO
            fsq[i] = ONE
        for o in range(axes.shape[0] // 9):
            _offsets(s, count, axes, o, table, index_min, table_shape, default_sq, dh, dk, dl, fsq, work[16:])
            _sincg_slope(dh, count, na, fa, da)
            _sincg_slope(dk, count, nb, fb, db)
            _sincg_slope(dl, count, nc, fc, dc)
            at = 9 * o
            a0, a1, a2 = axes[at], axes[at + 1], axes[at + 2]
            a3, a4, a5 = axes[at + 3], axes[at + 4], axes[at + 5]
            a6, a7, a8 = axes[at + 6], axes[at + 7], axes[at + 8]
            for i in range(count):
                w = TWO * g[i] * fsq[i] * fa[i] * fb[i] * fc[i]
                wh = w * da[i] * fb[i] * fc[i]
                wk = w * fa[i] * db[i] * fc[i]
                wl = w * fa[i] * fb[i] * dc[i]
                gx[i] += wh * a0 + wk * a3 + wl * a6
                gy[i] += wh * a1 + wk * a4 + wl * a7
                gz[i] += wh * a2 + wk * a5 + wl * a8
                gh[i] = wh
                gk[i] = wk
                gl[i] = wl
            _outer_sum(gh, gk, gl, s, count, grad_axes[(m0 - start) // block], at)
        dest = grad_scat[3 * m0 : 3 * m1]
        for i in range(count):
            dest[3 * i] = gx[i]
            dest[3 * i + 1] = gy[i]
            dest[3 * i + 2] = gz[i]


def _subpixels(geo, oversample, row, f0, f1, scat, omega, polar, scratch):
    """Scattering vectors (count * 3, flat, 1/A), solid angles and polarization factors
    (count,) of the subpixels of pixels [f0, f1) in detector ``row``, slow-major; returns
    count.  scratch: (2, CHUNK)."""
    pix0, fast, slow, beam, e_in, b_in = geo.pix0_mm, geo.fast, geo.slow, geo.beam, geo.e_in, geo.b_in
    pixel, close_mm, kahn, wavelength = geo.pixel_mm, geo.close_distance_mm, geo.kahn, geo.wavelength_A
    point, nopolar = geo.point_pixel, geo.nopolar
    sub_mm = pixel / REAL(oversample)
    s_mm, f_mm = scratch[0], scratch[1]
    count = 0
    for f in range(f0, f1):
        for i in range(oversample):
            for j in range(oversample):
                s_mm[count] = sub_mm * (REAL(row) * REAL(oversample) + REAL(i)) + sub_mm / TWO
                f_mm[count] = sub_mm * (REAL(f) * REAL(oversample) + REAL(j)) + sub_mm / TWO
                count += 1
    for i in range(count):
        px = s_mm[i] * slow[0] + f_mm[i] * fast[0] + pix0[0]
        py = s_mm[i] * slow[1] + f_mm[i] * fast[1] + pix0[1]
        pz = s_mm[i] * slow[2] + f_mm[i] * fast[2] + pix0[2]
        air = np.sqrt(px * px + py * py + pz * pz)
        dx = px / air
        dy = py / air
        dz = pz / air
        scat[3 * i] = (dx - beam[0]) / wavelength
        scat[3 * i + 1] = (dy - beam[1]) / wavelength
        scat[3 * i + 2] = (dz - beam[2]) / wavelength
        air_m = air * REAL(1e-3)
        solid = pixel * pixel / (air * air) * close_mm / air
        omega[i] = ONE / (air_m * air_m) if point else solid
        c2 = dx * beam[0] + dy * beam[1] + dz * beam[2]
        eo = dx * e_in[0] + dy * e_in[1] + dz * e_in[2]
        bo = dx * b_in[0] + dy * b_in[1] + dz * b_in[2]
        rad = eo * eo + bo * bo
        cos2psi = (eo * eo - bo * bo) / (rad if rad > ZERO else ONE) if rad > ZERO else ONE
        factor = HALF * (ONE + c2 * c2 - kahn * cos2psi * (ONE - c2 * c2))
        polar[i] = ONE if nopolar else factor
    return count


def _geometry_range(start, stop, geo, row0, fpixels, oversample, scat, omega, polar):
    """Subpixel geometry of detector rows row0 + [start, stop): scat (rows * fpixels * o2 * 3,),
    omega and polar (rows * fpixels * o2,), flat, row0's first."""
    o2 = oversample * oversample
    group = CHUNK // o2
    scratch = np.empty((2, CHUNK), REAL)
    for r in range(start, stop):
        for f0 in range(0, fpixels, group):
            f1 = min(f0 + group, fpixels)
            m0 = (r * fpixels + f0) * o2
            m1 = (r * fpixels + f1) * o2
            _subpixels(geo, oversample, row0 + r, f0, f1, scat[3 * m0 : 3 * m1], omega[m0:m1], polar[m0:m1], scratch)


def _image_range(
    start, stop, geo, row0, fpixels, oversample, axes, n_cells, table, index_min, table_shape, default_sq, scale, out
):
    """Finished pixels of detector rows row0 + [start, stop), geometry included, into
    out (rows, fpixels).  Without oversample_omega/polar nanoBragg applies the first
    subpixel's factor to the whole pixel."""
    o2 = oversample * oversample
    group = CHUNK // o2
    sub_omega, sub_polar = geo.oversample_omega, geo.oversample_polar
    scat = np.empty(3 * CHUNK, REAL)
    omega = np.empty(CHUNK, REAL)
    polar = np.empty(CHUNK, REAL)
    acc = np.empty(CHUNK, REAL)
    positions = np.empty((2, CHUNK), REAL)
    for r in range(start, stop):
        for f0 in range(0, fpixels, group):
            f1 = min(f0 + group, fpixels)
            count = _subpixels(geo, oversample, row0 + r, f0, f1, scat, omega, polar, positions)
            _forward_range(0, count, scat, axes, n_cells, table, index_min, table_shape, default_sq, acc)
            k = 0
            for f in range(f0, f1):
                total = ZERO
                for q in range(k, k + o2):
                    value = acc[q]
                    if sub_omega:
                        value *= omega[q]
                    if sub_polar:
                        value *= polar[q]
                    total += value
                pixel = scale * total
                if not sub_omega:
                    pixel *= omega[k]
                if not sub_polar:
                    pixel *= polar[k]
                out[r, f] = pixel
                k += o2


# name -> numba options; the callees come first.  "contract" lets LLVM fuse a * b + c
# as gcc did by default; _outer_sum may also reassociate its nine sums, which is what
# lets them vectorise (as OpenMP's simd reduction did in C).
_NUMBA_OPTIONS: dict[str, Any] = {"nogil": True, "cache": True, "error_model": "numpy", "boundscheck": False}
# called only from compiled code: no Python or C-callable wrappers to build
_HELPER: dict[str, Any] = {"no_cpython_wrapper": True, "no_cfunc_wrapper": True}
_KERNELS: dict[str, dict[str, Any]] = {
    "_sincg": {**_HELPER, "fastmath": {"contract"}},
    "_sincg_slope": {**_HELPER, "fastmath": {"contract"}},
    "_offsets": {**_HELPER, "fastmath": {"contract"}},
    "_forward_range": {"fastmath": {"contract"}},
    "_outer_sum": {**_HELPER, "fastmath": {"contract", "reassoc"}},
    "_backward_range": {"fastmath": {"contract"}},
    "_subpixels": {**_HELPER, "fastmath": {"contract"}},
    "_geometry_range": {"fastmath": {"contract"}},
    "_image_range": {"fastmath": {"contract"}},
}
_PRECISIONS = {torch.float32: np.float32, torch.float64: np.float64}


# ------------------------------------------------------------------ loading
_lock = threading.Lock()
_kernels: dict | None = None  # torch dtype -> {name: numba dispatcher}
_failed: str | None = None
_warm = threading.Event()  # set once warm_up has compiled (or loaded) the kernels it covers
_warm_thread: threading.Thread | None = None
_warm_failed: str | None = None  # why the last warm-up did not finish


def cache_dir() -> Path:
    """Where compiled kernels live: $BRAGGSIM_CACHE_DIR, else $XDG_CACHE_HOME/braggsim
    (~/.cache/braggsim).  $NUMBA_CACHE_DIR, when set, takes precedence for numba."""
    if os.environ.get("BRAGGSIM_CACHE_DIR"):
        return Path(os.environ["BRAGGSIM_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "braggsim"


def disabled() -> bool:
    """True when ``BRAGGSIM_NATIVE=0`` asks for the torch path."""
    return os.environ.get("BRAGGSIM_NATIVE", "1") == "0"


@contextlib.contextmanager
def _numba_cache_in(path: Path):
    # numba fixes a function's cache directory when it is decorated, from
    # numba.config.CACHE_DIR; point it at ours for our functions only
    import numba

    config: Any = numba.config
    previous = config.CACHE_DIR
    if not previous:
        config.CACHE_DIR = str(path)
    try:
        yield
    finally:
        config.CACHE_DIR = previous


def _compile_kernels(cache: bool = True) -> dict:
    """numba dispatchers for both precisions (compiled lazily, on first call)."""
    import numba

    njit: Any = numba.njit  # its overloads do not type options given as a mapping
    kernels = {}
    with _numba_cache_in(cache_dir() / "numba"):
        for dtype, real in _PRECISIONS.items():
            suffix = "f32" if real is np.float32 else "f64"
            namespace = dict(globals())
            namespace.update(_precision_globals(real))
            for name, options in _KERNELS.items():
                source = globals()[name]
                function = _pytypes.FunctionType(source.__code__, namespace, name, source.__defaults__)
                function.__qualname__ = f"{name}_{suffix}"  # one cache entry per precision
                function.__doc__ = source.__doc__
                namespace[name] = njit(**{**_NUMBA_OPTIONS, "cache": cache}, **options)(function)
            kernels[dtype] = {name: namespace[name] for name in _KERNELS}
    return kernels


def available() -> bool:
    """Whether the fused kernel can run here (numba importable, not disabled).  Does not
    compile: the first call of each kernel does, unless :func:`warm_up` ran."""
    return _load() is not None


def unavailable_reason() -> str | None:
    """Why :func:`available` is False (None when it is True)."""
    if disabled():
        return "BRAGGSIM_NATIVE=0"
    _load()
    return _failed


def _load() -> dict | None:
    global _kernels, _failed
    if disabled():
        return None
    if _kernels is not None or _failed is not None:
        return _kernels
    with _lock:
        if _kernels is None and _failed is None:
            try:
                try:
                    _kernels = _compile_kernels()
                except (RuntimeError, OSError):  # numba found no writable cache directory
                    _kernels = _compile_kernels(cache=False)
            except ImportError as exc:  # numba missing or broken: the torch path still works
                _failed = f"numba is unavailable ({exc})"
    return _kernels


def ready() -> bool:
    """True once the kernels that live simulation (float32, no gradients) and refinement
    (float64) use are compiled or loaded (:func:`warm_up`), or the torch path is in use
    anyway: then those calls no longer compile."""
    return _warm.is_set() or disabled() or _failed is not None


def warm_up(background: bool = True) -> threading.Thread | None:
    """Compile (or load from the cache) the kernels of live simulation (float32 image) and
    of refinement (float64: image, geometry, forward and backward).

    With ``background`` the work runs once per process in a daemon thread, which is
    returned (None when there is nothing to do); otherwise in the caller.  A failure is
    only remembered: the first real call will raise it where it can be reported.
    """
    global _warm_thread
    if ready():
        return None
    if not background:
        _warm_up_now()
        return None
    with _lock:
        if _warm_thread is None:
            _warm_thread = threading.Thread(target=_warm_up_now, name="braggsim-kernel-warm-up", daemon=True)
            _warm_thread.start()
    return _warm_thread


def _warm_up_now() -> None:
    global _warm_failed
    if not available():
        return
    geometry = DetectorGeometry(
        pix0_mm=(100.0, 0.5, -0.5),
        fast=(0.0, 0.0, 1.0),
        slow=(0.0, -1.0, 0.0),
        beam=(1.0, 0.0, 0.0),
        e_in=(0.0, 0.0, 1.0),
        b_in=(0.0, 1.0, 0.0),
        pixel_mm=0.1,
        close_distance_mm=100.0,
        kahn=0.0,
        wavelength_A=1.0,
    )
    try:
        # live simulation's kernel first; refinement's (float64, with gradients) after
        for dtype, gradients in ((torch.float32, False), (torch.float64, True)):
            axes = torch.eye(3, dtype=dtype).mul(50.0).expand(2, 3, 3)
            image_rows(geometry, range(2), 2, 1, axes, (2, 2, 2), None, scale=1.0, dtype=dtype)
            if gradients:
                scat, _, _ = geometry_rows(geometry, range(2), 2, 1, dtype=dtype)
                scat.requires_grad_(True)
                lattice_sum(scat, axes.clone().requires_grad_(True), (2, 2, 2)).sum().backward()
    except Exception as exc:  # noqa: BLE001  kept for the report; the real call raises it again
        _warm_failed = f"{exc.__class__.__name__}: {exc}"
        return
    _warm.set()


# ------------------------------------------------------------------ threads
_pool: ThreadPoolExecutor | None = None


PARTS_PER_THREAD = 4  # smaller parts than threads, so a thread that lost its core is not waited for
PARTIAL_CHUNKS = 64  # chunks per partial sum of the lattice-axis gradient (see _LatticeSum.backward)


def _threads(evaluations: int) -> int:
    # below ~1M evaluations (a few ms on one core) waking more threads costs more than it
    # saves, above all on a busy machine where a woken thread may wait for a time slice
    return min(torch.get_num_threads(), os.cpu_count() or 1) if evaluations >= 1 << 20 else 1


def _split(stop: int, threads: int, align: int = 1) -> list[tuple[int, int]]:
    """[0, stop) in contiguous ranges, PARTS_PER_THREAD per thread (one with one thread),
    whose starts are multiples of ``align``.  The ranges depend only on the arguments, so
    any per-range partial results always add up in the same order."""
    parts = 1 if threads <= 1 else threads * PARTS_PER_THREAD
    step = -(-stop // parts)
    step = max(align, -(-step // align) * align)
    return [(start, min(start + step, stop)) for start in range(0, stop, step)]


def _run(tasks: list, threads: int) -> None:
    """Call every task (a function of no arguments) on up to ``threads`` threads: the
    calling one and the pool's, each taking the next task until none is left.  The
    kernels release the GIL, so they run at once."""
    global _pool
    queue = iter(tasks)

    def drain():
        # next() on a list iterator is atomic under the GIL: every task runs exactly once
        for task in queue:
            task()

    helpers = min(threads, len(tasks)) - 1
    if helpers <= 0:
        drain()
        return
    if _pool is None:
        with _lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="braggsim-kernel")
    futures = [_pool.submit(drain) for _ in range(helpers)]
    try:
        drain()
    finally:
        for future in futures:
            future.result()


def _run_split(function, ranges: list[tuple[int, int]], threads: int, *args) -> None:
    """function(start, stop, *args) for every range, on up to ``threads`` threads."""
    _run([functools.partial(function, start, stop, *args) for start, stop in ranges], threads)


# ------------------------------------------------------------------ torch interface
class Table:
    """A structure-factor table in the kernel's layout (values with default_F filled in)."""

    def __init__(self, values: torch.Tensor, index_min, default_F: float):
        self.values = values.detach().contiguous()
        self.index_min = tuple(int(i) for i in index_min)
        self.shape = tuple(int(n) for n in values.shape)
        self.default_sq = float(default_F) ** 2


def _table_args(table: Table | None, dtype, real):
    """(table values, index_min, table shape, default F^2) as the kernels take them."""
    if table is None:
        return np.empty(0, real), (0, 0, 0), (0, 0, 0), real(0.0)
    values = table.values.to(dtype).reshape(-1).numpy()
    return values, table.index_min, table.shape, real(table.default_sq)


def _check(dtype) -> dict:
    if dtype not in _PRECISIONS:
        raise ValueError(f"the native kernel takes float32/float64 CPU tensors, got {dtype}")
    kernels = _load()
    if kernels is None:
        raise RuntimeError(f"the native kernel is unavailable: {unavailable_reason()}")
    return kernels[dtype]


def _flat(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().contiguous().reshape(-1).numpy()


class _LatticeSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scat, axes, n_cells, table):
        kernels = _check(scat.dtype)
        real = _PRECISIONS[scat.dtype]
        scat_c = scat.detach().contiguous()
        axes_c = axes.detach().contiguous()
        out = torch.empty(scat_c.shape[:-1], dtype=scat.dtype)
        count = out.numel()
        n = tuple(real(x) for x in n_cells)
        threads = _threads(count * axes_c.shape[0])
        _run_split(
            kernels["_forward_range"],
            _split(count, threads, CHUNK),
            threads,
            _flat(scat_c),
            _flat(axes_c),
            n,
            *_table_args(table, scat.dtype, real),
            out.reshape(-1).numpy(),
        )
        ctx.save_for_backward(scat_c, axes_c)
        ctx.n_cells, ctx.table = n_cells, table
        return out

    @staticmethod
    def backward(ctx, grad_out):
        scat, axes = ctx.saved_tensors
        kernels = _check(scat.dtype)
        real = _PRECISIONS[scat.dtype]
        g = _flat(grad_out.to(scat.dtype))
        count = g.shape[0]
        grad_scat = torch.empty_like(scat)
        threads = _threads(count * axes.shape[0])
        # the lattice-axis gradient is summed per block of PARTIAL_CHUNKS chunks, each block
        # by one thread in chunk order, and the blocks are added in a fixed order: the
        # result is bitwise the same whatever the number of threads and whichever ran what
        block = PARTIAL_CHUNKS * CHUNK
        ranges = _split(count, threads, block)
        partials = np.zeros((-(-count // block), axes.numel()), np.float64)
        table_args = _table_args(ctx.table, scat.dtype, real)
        n = tuple(real(x) for x in ctx.n_cells)
        backward = kernels["_backward_range"]
        grad_flat = grad_scat.reshape(-1).numpy()
        scat_flat, axes_flat = _flat(scat), _flat(axes)
        _run(
            [
                functools.partial(
                    backward,
                    start,
                    stop,
                    scat_flat,
                    g,
                    axes_flat,
                    n,
                    *table_args,
                    grad_flat,
                    partials[start // block : -(-stop // block)],
                    block,
                )
                for start, stop in ranges
            ],
            threads,
        )
        grad_axes = torch.from_numpy(partials.sum(axis=0)).to(axes.dtype).reshape(axes.shape)
        return grad_scat, grad_axes, None, None


def lattice_sum(scat: torch.Tensor, axes: torch.Tensor, n_cells, table: Table | None = None) -> torch.Tensor:
    """sum_k F^2 * F_latt^2 over orientations, for the square lattice transform.

    scat: (..., 3) scattering vectors in 1/A (any leading shape, e.g. rows, pixels and
    any number of samples per pixel); axes: (K, 3, 3) real axes (rows a, b, c) in A;
    n_cells: three integers.  F^2 is 1 without a table (the caller scales by
    default_F^2), else the nearest table entry squared.  Returns (...), differentiable
    in ``scat`` and ``axes``.
    """
    if scat.dtype not in _PRECISIONS or scat.device.type != "cpu" or axes.dtype != scat.dtype:
        raise ValueError(f"the native kernel takes float32/float64 CPU tensors, got {scat.dtype} on {scat.device}")
    _check(scat.dtype)
    return _LatticeSum.apply(scat, axes, tuple(float(x) for x in n_cells), table)


def image_rows(
    geometry: DetectorGeometry,
    rows: range,
    fpixels: int,
    oversample: int,
    axes: torch.Tensor,
    n_cells,
    table: Table | None = None,
    *,
    scale: float,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Finished pixel values for detector rows ``rows`` without autograd, (len(rows), fpixels).

    ``scale`` multiplies every pixel (r_e^2 fluence / steps, times default_F^2 without a
    table); F^2 as in :func:`lattice_sum`.  Computed in ``dtype``.
    """
    if oversample > MAX_NATIVE_OVERSAMPLE:
        raise ValueError(f"oversample {oversample} exceeds the native kernel's {MAX_NATIVE_OVERSAMPLE}")
    kernels = _check(dtype)
    real = _PRECISIONS[dtype]
    axes_c = axes.detach().to(dtype).contiguous()
    out = torch.empty((len(rows), fpixels), dtype=dtype)
    threads = _threads(out.numel() * oversample * oversample * axes_c.shape[0])
    _run_split(
        kernels["_image_range"],
        _split(len(rows), threads),
        threads,
        geometry.in_precision(real),
        rows.start,
        fpixels,
        oversample,
        _flat(axes_c),
        tuple(real(x) for x in n_cells),
        *_table_args(table, dtype, real),
        real(scale),
        out.numpy(),
    )
    return out


def geometry_rows(
    geometry: DetectorGeometry, rows: range, fpixels: int, oversample: int, *, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Subpixel geometry without autograd: scattering vectors (r, f, o2, 3) in 1/A, solid
    angles and polarization factors (r, f, o2), in ``dtype``."""
    if oversample > MAX_NATIVE_OVERSAMPLE:
        raise ValueError(f"oversample {oversample} exceeds the native kernel's {MAX_NATIVE_OVERSAMPLE}")
    kernels = _check(dtype)
    o2 = oversample * oversample
    scat = torch.empty((len(rows), fpixels, o2, 3), dtype=dtype)
    omega = torch.empty((len(rows), fpixels, o2), dtype=dtype)
    polar = torch.empty_like(omega)
    threads = _threads(omega.numel() * 8)
    _run_split(
        kernels["_geometry_range"],
        _split(len(rows), threads),
        threads,
        geometry.in_precision(_PRECISIONS[dtype]),
        rows.start,
        fpixels,
        oversample,
        scat.reshape(-1).numpy(),
        omega.reshape(-1).numpy(),
        polar.reshape(-1).numpy(),
    )
    return scat, omega, polar
