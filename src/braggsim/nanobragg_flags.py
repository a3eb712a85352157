"""nanoBragg's command-line flags, mapped onto Crystal, Detector, Beam and a background.

``parse_flags(["-cell", "100", ...])`` returns a :class:`FlagSet`.  The rules:

- Flags are read left to right, as nanoBragg.c reads them, so a later flag overrides an
  earlier one that sets the same thing: ``-mosflm -xds`` is XDS, ``-energy X -lambda Y``
  is Y, ``-gauss_xtal -round_xtal`` is round, ``-nointerpolate -interpolate`` interpolates.
- Integers are read as C's ``atoi`` reads them: ``-N 2.5`` is 2 (a note says so).  Text
  that is not a number, and infinite or NaN values, are errors naming the flag.
- Every flag nanoBragg.c parses (listed in tests/data/nanobragg_c_flags.txt) is accepted
  with its meaning (``FLAGS``) or refused with a reason (``REFUSED``); any other flag is
  an error.  A flag
  that would have no effect in the combination given is an error that says why.

Where nanoBragg.c's parsing has a side effect the images show (``-twotheta_axis`` also
sets the two-theta angle to its first component; ``-pix0_vector`` is recomputed from the
beam centre and distance) braggsim does the same and prints a note; the full list is in
docs/physics.md.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .background import AmorphousBackground
from .beam import Beam, fluence_from_flux
from .crystal import Crystal
from .detector import Detector
from .flag_values import (
    at_least,
    is_number,
    non_negative,
    parse_integer,
    parse_number,
    parse_vector,
    positive,
    resolve_axis,
)
from .mosaic import DEFAULT_MOSAIC_SEED

HC_EV_A = 12398.42  # h*c in eV*Angstrom, as nanoBragg converts -energy


@dataclasses.dataclass
class FlagSet:
    """The model and the outputs a command line asks for."""

    crystal: Crystal
    detector: Detector
    beam: Beam
    background: AmorphousBackground | None = None
    floatfile: str | None = None
    intfile: str | None = None
    intfile_scale: float | None = None
    pgmfile: str | None = None
    pgm_scale: float | None = None
    adc_offset: float = 40.0
    printout: bool = False
    printout_pixel: tuple | None = None
    stolout: str | None = None
    progress: bool = False
    dump_write: str | None = None
    calculate_noise: bool = False
    noisefile: str | None = None
    seed: int | None = None
    dtype: str = "float32"
    device: str = "cpu"
    dtype_given: bool = False
    notes: list = dataclasses.field(default_factory=list)
    extra: dict = dataclasses.field(default_factory=dict)
    values: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Flag:
    """One accepted flag: how many values follow it, where --help lists it, what it does."""

    names: tuple
    values: int
    group: str
    usage: str
    meaning: str
    apply: Callable


FLAGS: dict[str, Flag] = {}
GROUPS = ("crystal", "beam", "detector", "sensor", "background", "output", "braggsim")

# nanoBragg.c flags braggsim does not accept, and why (shown by --help)
REFUSED = {
    "-coherent": "nanoBragg.c sets a variable it never reads: its images are the same with and without it",
    # not one of nanoBragg.c's flags (its parsing is commented out), listed for users of nonBragg
    "-source_distance": "every source is at infinity (only its direction counts), so no distance changes the image",
}


def flag(names: str, values: int, group: str, usage: str, meaning: str):
    """Register a handler ``apply(state, values)`` for the space-separated ``names``."""

    def register(apply):
        spec = Flag(tuple(names.split()), values, group, usage, meaning, apply)
        for name in spec.names:
            FLAGS[name] = spec
        return apply

    return register


# ------------------------------------------------------------------------- state
# duplicates: alike to nonbragg_cli._State on purpose: each holds its own C program's
# variables with that program's defaults (nonBragg computes in float64, has no crystal)
class _State:
    """nanoBragg's variables while the flags are read (command-line units: A, mm, deg)."""

    def __init__(self):
        self.given: list[str] = []
        self.notes: list[str] = []
        # crystal
        self.cell = None
        self.mat = None
        self.hkl = None
        self.default_F = 0.0
        self.n_cells = [1, 1, 1]
        self.misset = (0.0, 0.0, 0.0)
        self.misset_random = False
        self.misset_seed = None
        self.sample_mm = [0.0, 0.0, 0.0]
        self.mosaic_deg = None
        self.mosaic_domains = None
        self.mosaic_seed = DEFAULT_MOSAIC_SEED
        self.shape = "square"
        self.fudge = 1.0
        self.interpolate = None
        self.phi0 = 0.0
        self.osc = None
        self.phistep = None
        self.phisteps = None
        self.spindle = None
        self.dump = None
        # beam
        self.wavelength_A = 1.0
        self.fluence = Beam().fluence
        self.flux = 0.0
        self.exposure_s = 1.0
        self.beamsize_mm = 0.1
        self.kahn = 0.0
        self.nopolar = False
        self.div = {"h": [None, None, None], "v": [None, None, None]}  # range mrad, step mrad, steps
        self.round_div = True
        self.dispersion_pct = None
        self.dispsteps = None
        self.sourcefile = None
        # detector
        self.convention = "mosflm"
        self.pivot_tracked = "beam"
        self.pivot_explicit = None
        self.vectors: dict = {}
        self.vectors_given: set = set()
        self.pix0_m = None
        self.distance = 100.0
        self.close_distance = None
        self.x_beam = self.y_beam = self.x_close = self.y_close = None
        self.orgx = self.orgy = None
        self.header_orgx = self.header_orgy = None  # from an -img/-mask header: used where ORGX means something
        self.rot = [0.0, 0.0, 0.0]
        self.twotheta = 0.0
        self.detsize = [None, None]
        self.pixels = [None, None]
        self.pixel = 0.1
        self.curved = False
        self.point_pixel = False
        self.oversample = None
        self.oversample_thick = self.oversample_polar = self.oversample_omega = False
        self.roi = None
        self.dmin = None
        self.thick_um = None
        self.absorb = None  # attenuation length in um, or "inf"
        self.thicksteps = None
        self.mask_image = None
        # background
        self.water_um = None
        self.stol = None
        self.density = None
        self.mw = None
        # outputs
        self.floatfile = self.intfile = self.pgmfile = self.stolout = None
        self.write_pgm = False
        self.scale = None
        self.pgm_scale = None
        self.adc = 40.0
        self.printout = False
        self.printout_pixel = None
        self.progress = False
        self.calculate_noise = False
        self.noisefile = None
        self.seed = None
        self.dtype = "float32"
        self.device = "cpu"
        self.values: dict = {}

    def pivot(self, value: str) -> None:
        self.pivot_tracked = value


# duplicates: the @flag registrations below share one shape on purpose (one small parser a
# flag, as nanoBragg.c's argument loop has one branch a flag)
# ------------------------------------------------------------------ crystal flags
@flag("-cell", 6, "crystal", "-cell a b c al be ga", "unit cell (A, deg); missing values: b = c = a, angles 90")
def _cell(state, values):
    numbers = [parse_number("-cell", x) for x in values]
    if any(x <= 0 for x in numbers[:3]):
        raise ValueError(f"flag -cell needs positive edges a b c, got {values[:3]!r}")
    while len(numbers) < 6:
        numbers.append(numbers[0] if len(numbers) < 3 else 90.0)
    state.cell = tuple(numbers)


@flag("-mat", 1, "crystal", "-mat FILE", "MOSFLM orientation matrix (reciprocal axes x lambda) instead of -cell")
def _mat(state, values):
    state.mat = values[0]


@flag("-hkl", 1, "crystal", "-hkl FILE", "'h k l F' text file (no symmetry, not even Friedel)")
def _hkl(state, values):
    state.hkl = values[0]


@flag("-default_F", 1, "crystal", "-default_F F", "structure factor of every hkl not in the -hkl table (default 0)")
def _default_f(state, values):
    state.default_F = non_negative("-default_F", parse_number("-default_F", values[0]))


@flag(
    "-dump",
    1,
    "crystal",
    "-dump FILE",
    "with -hkl: also write the F table as nanoBragg's binary dump; without: read F from it",
)
def _dump(state, values):
    state.dump = values[0]


@flag("-N", 1, "crystal", "-N n", "unit cells along every axis (0 counts as 1, as in nanoBragg)")
def _n(state, values):
    n = non_negative("-N", parse_integer(state, "-N", values[0]))
    state.n_cells = [n, n, n]


def _n_axis(index: int, name: str):
    def apply(state, values):
        state.n_cells[index] = non_negative(name, parse_integer(state, name, values[0]))

    return apply


for _index, _name in enumerate(("-Na", "-Nb", "-Nc")):
    flag(_name, 1, "crystal", f"{_name} n", f"unit cells along {'abc'[_index]}")(_n_axis(_index, _name))


@flag(
    "-misset",
    3,
    "crystal",
    "-misset x y z | -misset random",
    "rotations about lab x, then y, then z (deg); random: a random orientation",
)
def _misset(state, values):
    state.misset = tuple(parse_number("-misset", x) for x in values)
    state.misset_random = False


@flag("-misset_seed", 1, "crystal", "-misset_seed s", "seed of the -misset random orientation (default: the clock)")
def _misset_seed(state, values):
    state.misset_seed = parse_integer(state, "-misset_seed", values[0])


def _size(axes: tuple, name: str):
    def apply(state, values):
        size = positive(name, parse_number(name, values[0]), "mm")
        for axis in axes:
            state.sample_mm[axis] = size

    return apply


for _names, _axes, _what in (
    (
        "-xtalsize -xtal_size -samplesize -sample_size",
        (0, 1, 2),
        "crystal size along a, b and c (mm): N = ceil(size / edge)",
    ),
    ("-xtal_thick -xtal_x -sample_thick -sample_x", (0,), "crystal size along a (mm)"),
    ("-xtal_width -xtal_y -sample_width -sample_y -width", (1,), "crystal size along b (mm; clipped to -beamsize)"),
    (
        "-xtal_heigh -xtal_height -xtal_z -sample_heigh -sample_height -sample_z -heigh -height",
        (2,),
        "crystal size along c (mm; clipped to -beamsize)",
    ),
):
    flag(_names, 1, "crystal", f"{_names.split()[0]} mm", _what)(_size(_axes, _names.split()[0]))


@flag("-mosaic -mosaici -mosaicity -mosaic_spr -mosaic_spread", 1, "crystal", "-mosaic deg", "mosaic spread (deg)")
def _mosaic(state, values):
    state.mosaic_deg = non_negative("-mosaic", parse_number("-mosaic", values[0]))


@flag("-mosaic_dom -mosaic_domains", 1, "crystal", "-mosaic_dom n", "mosaic domains (default 10 with -mosaic)")
def _mosaic_dom(state, values):
    state.mosaic_domains = at_least("-mosaic_dom", parse_integer(state, "-mosaic_dom", values[0]), 1)


@flag(
    "-mosaic_seed", 1, "crystal", "-mosaic_seed s", "seed of nanoBragg's ran1 draws for the domains (default 12345678)"
)
def _mosaic_seed(state, values):
    seed = parse_integer(state, "-mosaic_seed", values[0])
    if abs(seed) >= 2**31:
        # nanoBragg reads the seed into a C int; larger values would not mean the same seed
        raise ValueError(f"-mosaic_seed must fit a 32-bit integer, got {values[0]!r}")
    state.mosaic_seed = seed


def _shape(name: str):
    def apply(state, values):
        state.shape = name

    return apply


for _names, _shape_name, _what in (
    ("-square_xtal", "square", "lattice transform sin(N pi h)/sin(pi h) (the default)"),
    ("-round_xtal", "round", "lattice transform of a sphere (sinc3)"),
    ("-gauss_xtal", "gauss", "Gaussian spots, no inter-Bragg maxima"),
    ("-tophat_spots -binary_spots", "tophat", "flat-top spots of the same height and volume"),
):
    flag(_names, 0, "crystal", _names.replace(" ", " | "), _what)(_shape(_shape_name))


@flag("-fudge", 1, "crystal", "-fudge f", "width factor for the round/gauss/tophat shapes")
def _fudge(state, values):
    state.fudge = positive("-fudge", parse_number("-fudge", values[0]))


@flag("-interpolate", 0, "crystal", "-interpolate", "tricubic F interpolation on (default: on if any N <= 2)")
def _interpolate(state, values):
    state.interpolate = True


@flag("-nointerpolate", 0, "crystal", "-nointerpolate", "tricubic F interpolation off")
def _nointerpolate(state, values):
    state.interpolate = False


@flag("-phi", 1, "crystal", "-phi deg", "spindle angle at the start")
def _phi(state, values):
    state.phi0 = parse_number("-phi", values[0])


@flag("-osc", 1, "crystal", "-osc deg", "oscillation range (alone: 2 phi steps)")
def _osc(state, values):
    state.osc = non_negative("-osc", parse_number("-osc", values[0]))


@flag("-phistep", 1, "crystal", "-phistep deg", "spindle step (nanoBragg's rules fill in -osc/-phisteps)")
def _phistep(state, values):
    state.phistep = positive("-phistep", parse_number("-phistep", values[0]), "deg")


@flag("-phisteps", 1, "crystal", "-phisteps n", "spindle steps (alone: over 1 deg, as nanoBragg)")
def _phisteps(state, values):
    steps = non_negative("-phisteps", parse_integer(state, "-phisteps", values[0]))
    state.phisteps = max(steps, 1)


@flag(
    "-spindle_axis",
    3,
    "crystal",
    "-spindle_axis x y z",
    "spindle direction; selects the CUSTOM convention, as in nanoBragg",
)
def _spindle(state, values):
    state.spindle = parse_vector("-spindle_axis", values)
    state.vectors_given.add("-spindle_axis")
    state.convention = "custom"


# --------------------------------------------------------------------- beam flags
@flag("-lambda -wave -wavelength", 1, "beam", "-lambda A", "wavelength (default 1 A)")
def _lambda(state, values):
    state.wavelength_A = positive("-lambda", parse_number("-lambda", values[0]), "A")


@flag("-energy", 1, "beam", "-energy eV", "photon energy instead of -lambda (lambda = 12398.42 / E)")
def _energy(state, values):
    state.wavelength_A = HC_EV_A / positive("-energy", parse_number("-energy", values[0]), "eV")


@flag("-fluence", 1, "beam", "-fluence f", "photons/m^2 (default 1.25932015286227e29, r_e^2 x fluence = 1)")
def _fluence(state, values):
    state.fluence = positive("-fluence", parse_number("-fluence", values[0]), "photons/m^2")


@flag("-flux", 1, "beam", "-flux ph/s", "fluence = flux x exposure / beamsize^2 instead of -fluence")
def _flux(state, values):
    state.flux = positive("-flux", parse_number("-flux", values[0]), "photons/s")


@flag("-exposure", 1, "beam", "-exposure s", "exposure time for -flux (default 1 s)")
def _exposure(state, values):
    state.exposure_s = positive("-exposure", parse_number("-exposure", values[0]), "s")


@flag(
    "-beamsize",
    1,
    "beam",
    "-beamsize mm",
    "square beam edge for -flux (default 0.1 mm); clips the crystal and -water sizes",
)
def _beamsize(state, values):
    state.beamsize_mm = positive("-beamsize", parse_number("-beamsize", values[0]), "mm")


@flag("-polar", 1, "beam", "-polar K", "Kahn polarization factor (default 0, unpolarized)")
def _polar(state, values):
    state.kahn = parse_number("-polar", values[0])
    state.nopolar = False


@flag("-nopolar", 0, "beam", "-nopolar", "no polarization factor at all")
def _nopolar(state, values):
    state.nopolar = True


def _div(axes: str, part: int, name: str, kind: str):
    def apply(state, values):
        if kind == "int":
            value = at_least(name, parse_integer(state, name, values[0]), 1)
        elif kind == "step":
            value = positive(name, parse_number(name, values[0]), "mrad")
        else:
            value = non_negative(name, parse_number(name, values[0]))
        for axis in axes:
            state.div[axis][part] = value

    return apply


for _name, _div_axes, _part, _kind, _what in (
    ("-divergence", "hv", 0, "range", "horizontal and vertical divergence range (mrad)"),
    ("-hdivrange", "h", 0, "range", "horizontal divergence range (mrad)"),
    ("-vdivrange", "v", 0, "range", "vertical divergence range (mrad)"),
    ("-hdivstep", "h", 1, "step", "horizontal spacing of source points (mrad)"),
    ("-vdivstep", "v", 1, "step", "vertical spacing of source points (mrad)"),
    ("-hdivsteps", "h", 2, "int", "horizontal source points"),
    ("-vdivsteps", "v", 2, "int", "vertical source points"),
    ("-divsteps", "hv", 2, "int", "source points along both"),
):
    flag(_name, 1, "beam", f"{_name} {'n' if _kind == 'int' else 'mrad'}", _what)(_div(_div_axes, _part, _name, _kind))


@flag("-round_div", 0, "beam", "-round_div", "drop grid corners outside the divergence ellipse (default)")
def _round_div(state, values):
    state.round_div = True


@flag("-square_div", 0, "beam", "-square_div", "keep the full divergence grid")
def _square_div(state, values):
    state.round_div = False


@flag("-dispersion", 1, "beam", "-dispersion pct", "spectral width delta-lambda/lambda (%), alone in 2 wavelengths")
def _dispersion(state, values):
    value = non_negative("-dispersion", parse_number("-dispersion", values[0]))
    if value >= 200:
        raise ValueError(f"flag -dispersion must be below 200 % (wavelengths stay > 0), got {value!r}")
    state.dispersion_pct = value


@flag("-dispsteps", 1, "beam", "-dispsteps n", "wavelengths across -dispersion")
def _dispsteps(state, values):
    state.dispsteps = at_least("-dispsteps", parse_integer(state, "-dispsteps", values[0]), 1)


@flag(
    "-sourcefile",
    1,
    "beam",
    "-sourcefile FILE",
    "sources 'X Y Z weight wavelength' (m) a line; nanoBragg.c ignores the weights, so does simulate",
)
def _sourcefile(state, values):
    state.sourcefile = values[0]


@flag("-beam_vector", 3, "beam", "-beam_vector x y z", "incident beam direction (CUSTOM convention)")
def _beam_vector(state, values):
    _custom(state, "beam_axis", "-beam_vector", values)


@flag("-polar_vector", 3, "beam", "-polar_vector x y z", "E-vector (polarization) axis (CUSTOM convention)")
def _polar_vector(state, values):
    _custom(state, "polarization_axis", "-polar_vector", values)


# ----------------------------------------------------------------- detector flags
@flag("-distance", 1, "detector", "-distance mm", "sample to detector along the beam (default 100); beam pivot")
def _distance(state, values):
    state.distance = positive("-distance", parse_number("-distance", values[0]), "mm")
    state.close_distance = None
    state.pivot("beam")


@flag(
    "-close_distance",
    1,
    "detector",
    "-close_distance mm",
    "sample to detector plane instead of -distance; sample pivot",
)
def _close_distance(state, values):
    state.close_distance = positive("-close_distance", parse_number("-close_distance", values[0]), "mm")
    state.pivot("sample")


@flag("-pixel", 1, "detector", "-pixel mm", "pixel size (default 0.1)")
def _pixel(state, values):
    state.pixel = positive("-pixel", parse_number("-pixel", values[0]), "mm")


@flag("-detpixels", 1, "detector", "-detpixels n", "square detector of n x n pixels (default 1024)")
def _detpixels(state, values):
    n = at_least("fpixels (-detpixels)", parse_integer(state, "-detpixels", values[0]), 1)
    state.pixels = [n, n]


def _pixels_axis(index: int, name: str):
    def apply(state, values):
        state.pixels[index] = at_least(f"{'fs'[index]}pixels ({name})", parse_integer(state, name, values[0]), 1)

    return apply


flag("-detpixels_f -detpixels_x", 1, "detector", "-detpixels_f n", "pixels along the fast axis")(
    _pixels_axis(0, "-detpixels_f")
)
flag("-detpixels_s -detpixels_y", 1, "detector", "-detpixels_s n", "pixels along the slow axis")(
    _pixels_axis(1, "-detpixels_s")
)


def _detsize(axes: tuple, name: str):
    def apply(state, values):
        # a zero size would otherwise fall back to the 1024-pixel default unnoticed
        size = positive(name, parse_number(name, values[0]), "mm")
        for axis in axes:
            state.detsize[axis] = size

    return apply


flag("-detsize", 1, "detector", "-detsize mm", "detector edge, when no pixel count is given")(
    _detsize((0, 1), "-detsize")
)
flag("-detsize_f", 1, "detector", "-detsize_f mm", "detector size along fast")(_detsize((0,), "-detsize_f"))
flag("-detsize_s", 1, "detector", "-detsize_s mm", "detector size along slow")(_detsize((1,), "-detsize_s"))


def _beam_center(attribute: str, name: str, pivot: str):
    def apply(state, values):
        setattr(state, attribute, parse_number(name, values[0]))
        state.pivot(pivot)

    return apply


flag("-Xbeam", 1, "detector", "-Xbeam mm", "beam centre X in the convention's meaning; beam pivot")(
    _beam_center("x_beam", "-Xbeam", "beam")
)
flag("-Ybeam", 1, "detector", "-Ybeam mm", "beam centre Y in the convention's meaning; beam pivot")(
    _beam_center("y_beam", "-Ybeam", "beam")
)
flag("-Xclose", 1, "detector", "-Xclose mm", "near point along fast (XDS, DIALS, CUSTOM); sample pivot")(
    _beam_center("x_close", "-Xclose", "sample")
)
flag("-Yclose", 1, "detector", "-Yclose mm", "near point along slow (XDS, DIALS, CUSTOM); sample pivot")(
    _beam_center("y_close", "-Yclose", "sample")
)
flag("-ORGX", 1, "detector", "-ORGX px", "XDS origin along fast (pixels); sample pivot")(
    _beam_center("orgx", "-ORGX", "sample")
)
flag("-ORGY", 1, "detector", "-ORGY px", "XDS origin along slow (pixels); sample pivot")(
    _beam_center("orgy", "-ORGY", "sample")
)


@flag("-pivot", 1, "detector", "-pivot beam|sample", "what stays put when the detector rotates")
def _pivot(state, values):
    text = values[0].lower()
    if text not in ("beam", "sample"):
        raise ValueError(f"flag -pivot must be beam or sample, got {values[0]!r}")
    state.pivot(text)
    state.pivot_explicit = text


def _convention(name: str, pivot: str):
    def apply(state, values):
        state.convention = name
        state.pivot(pivot)
        if state.vectors_given:
            raise ValueError(
                f"-{name} after {', '.join(sorted(state.vectors_given))} resets the detector vectors "
                "(nanoBragg.c does); give the convention first"
            )

    return apply


for _name, _pivot_name in (
    ("mosflm", "beam"),
    ("xds", "sample"),
    ("adxv", "beam"),
    ("denzo", "beam"),
    ("dials", "beam"),
):
    flag(
        f"-{_name}",
        0,
        "detector",
        f"-{_name}",
        f"{_name.upper()} detector convention{' (default)' if _name == 'mosflm' else ''}",
    )(_convention(_name, _pivot_name))


def _custom(state, field: str, name: str, values) -> None:
    state.vectors[field] = parse_vector(name, values)
    state.vectors_given.add(name)
    state.convention = "custom"


for _name, _field, _what in (
    ("-fdet_vector", "fast_axis", "fast pixel axis"),
    ("-sdet_vector", "slow_axis", "slow pixel axis"),
    ("-odet_vector", "normal_axis", "detector normal (a non-unit vector is replaced by fast x slow, as in nanoBragg)"),
):
    flag(_name, 3, "detector", f"{_name} x y z", f"{_what} (CUSTOM convention)")(
        lambda state, values, _f=_field, _n=_name: _custom(state, _f, _n, values)
    )


@flag(
    "-twotheta_axis",
    3,
    "detector",
    "-twotheta_axis x y z",
    "two-theta axis (CUSTOM); like nanoBragg.c it also sets -twotheta to x",
)
def _twotheta_axis(state, values):
    _custom(state, "twotheta_axis", "-twotheta_axis", values)
    # nanoBragg.c's "-twotheta" test matches "-twotheta_axis" too: the angle becomes x deg
    angle = parse_number("-twotheta_axis", values[0])
    if angle != state.twotheta:
        state.notes.append(
            f"note: -twotheta_axis also sets the two-theta angle to {angle:g} deg, as in nanoBragg.c "
            "(give -twotheta after it)"
        )
    state.twotheta = angle
    state.pivot("sample")


@flag(
    "-pix0_vector",
    3,
    "detector",
    "-pix0_vector x y z",
    "first pixel's position (m); nanoBragg.c recomputes it from the beam centre, braggsim too (with a note)",
)
def _pix0(state, values):
    state.pix0_m = tuple(parse_number("-pix0_vector", x) for x in values)
    state.vectors_given.add("-pix0_vector")
    state.convention = "custom"


@flag("-twotheta", 1, "detector", "-twotheta deg", "two-theta swing about the convention's axis; sample pivot")
def _twotheta(state, values):
    state.twotheta = parse_number("-twotheta", values[0])
    state.pivot("sample")


def _rot(index: int, name: str):
    def apply(state, values):
        state.rot[index] = parse_number(name, values[0])

    return apply


for _index, _axis in enumerate("xyz"):
    _name = f"-detector_rot{_axis}"
    flag(_name, 1, "detector", f"{_name} deg", f"detector rotation about lab {_axis} (x, then y, then z)")(
        _rot(_index, _name)
    )


@flag("-curved_det -curved_detector", 0, "detector", "-curved_det", "every pixel at the same distance from the sample")
def _curved(state, values):
    state.curved = True


@flag("-point_pixel", 0, "detector", "-point_pixel", "solid angle 1/R^2 instead of the pixel's")
def _point_pixel(state, values):
    state.point_pixel = True


@flag("-oversample", 1, "detector", "-oversample n", "subpixels per pixel edge (default: nanoBragg's automatic rule)")
def _oversample(state, values):
    state.oversample = at_least("-oversample", parse_integer(state, "-oversample", values[0]), 1)


def _switch(attribute: str):
    def apply(state, values):
        setattr(state, attribute, True)

    return apply


flag("-oversample_omega", 0, "detector", "-oversample_omega", "solid angle per subpixel")(_switch("oversample_omega"))
flag("-oversample_polar", 0, "detector", "-oversample_polar", "polarization per subpixel and source")(
    _switch("oversample_polar")
)


@flag(
    "-roi",
    4,
    "detector",
    "-roi xmin xmax ymin ymax",
    "simulate only these fast (x) and slow (y) pixels, inclusive; others are 0",
)
def _roi(state, values):
    state.roi = tuple(parse_integer(state, "-roi", x) for x in values)


@flag(
    "-mask",
    1,
    "detector",
    "-mask FILE",
    "SMV image: pixels that are 0 there are not simulated; its header sets the geometry",
)
def _mask(state, values):
    pass  # read before the other flags, as nanoBragg does (see _read_headers)


@flag("-img", 1, "detector", "-img FILE", "take the geometry from an ADSC/SMV header (flags override it)")
def _img(state, values):
    pass  # read before the other flags, as nanoBragg does (see _read_headers)


@flag("-dmin", 1, "detector", "-dmin A", "skip samples with resolution finer than this")
def _dmin(state, values):
    state.dmin = positive("-dmin", parse_number("-dmin", values[0]), "A")


# ------------------------------------------------------------------- sensor flags
@flag("-detector_thick", 1, "sensor", "-detector_thick um", "sensor thickness (parallax and capture fraction)")
def _thick(state, values):
    state.thick_um = positive(
        "-detector_thick", parse_number("-detector_thick", values[0]), "um (leave it out for a thin sensor)"
    )


@flag(
    "-detector_abs -detector_absorb -detector_absorption",
    1,
    "sensor",
    "-detector_abs um|inf",
    "attenuation length (default: the thickness); inf or 0: no sensor",
)
def _absorb(state, values):
    text = values[0]
    if "inf" in text.lower() or parse_number("-detector_abs", text, finite=False) == 0.0:
        state.absorb = "inf"
        state.thick_um = None  # nanoBragg: no absorption means no sensor
    else:
        state.absorb = positive("-detector_abs", parse_number("-detector_abs", text), "um")


@flag(
    "-detector_thicksteps -thicksteps",
    1,
    "sensor",
    "-detector_thicksteps n",
    "depth layers of the sensor (default 2; layers 0..n-1 at thickness/(n-1) apart)",
)
def _thicksteps(state, values):
    state.thicksteps = at_least("-detector_thicksteps", parse_integer(state, "-detector_thicksteps", values[0]), 1)


flag("-oversample_thick", 0, "sensor", "-oversample_thick", "capture fraction per subpixel and layer")(
    _switch("oversample_thick")
)


# --------------------------------------------------------------- background flags
@flag(
    "-water", 1, "background", "-water um", "add a cube of amorphous material (default water) rendered as nonBragg does"
)
def _water(state, values):
    state.water_um = non_negative("-water", parse_number("-water", values[0]))


def _stol(units: str, name: str):
    def apply(state, values):
        state.stol = (values[0], units, name)

    return apply


flag("-stol", 1, "background", "-stol FILE|water|air|ice|nanoice", "-water's material: F against sin(theta)/lambda")(
    _stol("stol", "-stol")
)
flag("-4stol", 1, "background", "-4stol FILE", "the same with 4 sin(theta)/lambda in the first column")(
    _stol("4stol", "-4stol")
)
flag("-Q", 1, "background", "-Q FILE", "the same with Q = 4 pi sin(theta)/lambda in the first column")(_stol("Q", "-Q"))


@flag(
    "-density -sample_den -sample_density", 1, "background", "-density g/cm3", "-water's material density (default 1)"
)
def _density(state, values):
    state.density = positive("-density", parse_number("-density", values[0]), "g/cm^3")


@flag("-MW -molec -molecular_weight", 1, "background", "-MW g/mol", "-water's molecular weight (default 18)")
def _mw(state, values):
    state.mw = positive("-MW", parse_number("-MW", values[0]), "g/mol")


# ------------------------------------------------------------------ output flags
def _path(attribute: str, extra=None):
    def apply(state, values):
        setattr(state, attribute, values[0])
        if extra:
            extra(state)

    return apply


flag(
    "-floatfile -floatimage",
    1,
    "output",
    "-floatfile FILE",
    "raw float32 little-endian, slow axis first (as nanoBragg)",
)(_path("floatfile"))
flag("-intfile -intimage", 1, "output", "-intfile FILE", "SMV image (unsigned short) with a geometry header")(
    _path("intfile")
)
flag("-pgmfile -pgmimage", 1, "output", "-pgmfile FILE", "8-bit PGM image")(
    _path("pgmfile", lambda s: setattr(s, "write_pgm", True))
)
flag("-stolout", 1, "output", "-stolout FILE", "the image's mean intensity against sin(theta)/lambda, as text")(
    _path("stolout")
)


@flag("-scale", 1, "output", "-scale s", "-intfile scale (default 55000 / max_I)")
def _scale(state, values):
    state.scale = positive("-scale", parse_number("-scale", values[0]))


@flag("-pgmscale", 1, "output", "-pgmscale s", "-pgmfile scale (default 250 / (5 rmsd))")
def _pgmscale(state, values):
    state.pgm_scale = positive("-pgmscale", parse_number("-pgmscale", values[0]))
    state.write_pgm = True


@flag("-nopgm", 0, "output", "-nopgm", "no PGM image (cancels an earlier -pgmfile)")
def _nopgm(state, values):
    state.write_pgm = False


@flag(
    "-noisefile -noiseimage",
    1,
    "output",
    "-noisefile FILE",
    "SMV noise image: Poisson counts of each pixel + the ADC offset (braggsim.noise)",
)
def _noisefile(state, values):
    state.noisefile = values[0]
    state.calculate_noise = True


@flag("-nonoise", 0, "output", "-nonoise", "no noise image (cancels an earlier -noisefile)")
def _nonoise(state, values):
    state.calculate_noise = False


@flag("-seed", 1, "output", "-seed n", "seed of the -noisefile Poisson draws (default: the clock, printed)")
def _seed(state, values):
    seed = parse_integer(state, "-seed", values[0])
    if abs(seed) >= 2**31:
        raise ValueError(f"-seed must fit a 32-bit integer, got {values[0]!r}")
    state.seed = seed


@flag("-adc", 1, "output", "-adc counts", "offset added to -intfile pixels (default 40, as nanoBragg)")
def _adc(state, values):
    state.adc = parse_number("-adc", values[0])


@flag("-printout", 0, "output", "-printout", "print every pixel's value, geometry and factors")
def _printout(state, values):
    state.printout = True


@flag("-printout_pixel", 2, "output", "-printout_pixel f s", "print only fast pixel f, slow pixel s")
def _printout_pixel(state, values):
    state.printout = True
    state.printout_pixel = (
        parse_integer(state, "-printout_pixel", values[0]),
        parse_integer(state, "-printout_pixel", values[1]),
    )


@flag("-progress", 0, "output", "-progress", "print a progress meter")
def _progress(state, values):
    state.progress = True


@flag("-noprogress", 0, "output", "-noprogress", "no progress meter (the default)")
def _noprogress(state, values):
    state.progress = False


# ---------------------------------------------------------------- braggsim's own
@flag(
    "-dtype",
    1,
    "braggsim",
    "-dtype float32|float64",
    "arithmetic precision (default float32; float64 for crystals over 20 cells a side)",
)
def _dtype(state, values):
    if values[0] not in ("float32", "float64"):
        raise ValueError(f"-dtype must be float32 or float64, got {values[0]!r}")
    state.dtype = values[0]


@flag("-device", 1, "braggsim", "-device cpu|cuda|...", "torch device (default cpu)")
def _device(state, values):
    state.device = values[0]


SUPPORTED_FLAGS = tuple(sorted(FLAGS))


# ------------------------------------------------------------------- the reader
def read_argv(argv: list[str], extra_value_flags: dict | None = None):
    """[(flag, values)] in order, and {extra flag: values}; unknown flags raise ValueError."""
    extra_value_flags = extra_value_flags or {}
    found: list[tuple[str, list[str]]] = []
    extra: dict[str, list[str]] = {}
    i = 0
    while i < len(argv):
        name = argv[i]
        if name in extra_value_flags:
            count = extra_value_flags[name]
            values = argv[i + 1 : i + 1 + count]
            if len(values) < count:
                raise ValueError(f"flag {name} takes {count} value(s), got {values!r}")
            extra[name] = values
            i += 1 + count
            continue
        if name in REFUSED:
            raise ValueError(f"flag {name} is not supported: {REFUSED[name]}")
        spec = FLAGS.get(name)
        if spec is None:
            if name.startswith("-"):
                raise ValueError(f"unsupported flag {name!r} (braggsim never ignores a flag; see --help)")
            raise ValueError(f"unexpected argument {name!r}: every value must follow its flag")
        count = spec.values
        if name == "-cell":  # nanoBragg reads up to six values, stopping at the next flag
            values = []
            while len(values) < 6 and i + 1 + len(values) < len(argv):
                text = argv[i + 1 + len(values)]
                if text.startswith("-"):
                    break
                values.append(text)
            if not values:
                raise ValueError("flag -cell takes 1 to 6 value(s) (a b c alpha beta gamma), got []")
            count = len(values)
        elif name == "-misset" and i + 1 < len(argv) and "rand" in argv[i + 1]:
            found.append(("-misset random", []))
            i += 2
            continue
        values = argv[i + 1 : i + 1 + count]
        if len(values) < count or any(v.startswith("-") and not is_number(v) for v in values):
            raise ValueError(f"flag {name} takes {count} value(s), got {values!r}")
        found.append((name, values))
        i += 1 + count
    return found, extra


def parse_flags(argv: list[str], extra_value_flags: dict | None = None) -> FlagSet:
    """Build the model and outputs from nanoBragg flags (see the module docstring)."""
    found, extra = read_argv(list(argv), extra_value_flags)
    state = _State()
    _read_headers(state, found)
    for name, values in found:
        state.given.append(name)
        if name == "-misset random":
            state.misset_random = True
            continue
        FLAGS[name].apply(state, values)
    return _build(state, extra)


# ----------------------------------------------------------- headers (-img, -mask)
def _read_headers(state, found) -> None:
    """nanoBragg reads -mask and -img before every other flag: their headers set the
    geometry, which later flags override."""
    for name, values in found:
        if name in ("-img", "-mask"):
            header, pixels = _read_smv(name, values[0])
            _apply_header(state, header, flip_y=name == "-mask")
            if name == "-mask":
                state.mask_image = pixels != 0


def _read_smv(name: str, path: str):
    from .io import read_bytes
    from .io.smv import check_layout, header_fields

    try:
        raw = read_bytes(path)
    except OSError as exc:
        raise ValueError(f"{name} {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        layout = check_layout(path, raw)
    except ValueError as exc:
        raise ValueError(f"{name} {exc}") from None
    header = header_fields(raw[: layout["header_bytes"]])
    pixels = np.frombuffer(raw, dtype=layout["dtype"], offset=layout["header_bytes"]).reshape(layout["shape"])
    return header, pixels


def _apply_header(state, header: dict, flip_y: bool) -> None:
    def number(key):
        text = header.get(key)
        if text is None:
            return None
        try:
            value = float(text)
        except ValueError:
            return None
        return value if math.isfinite(value) else None

    fpixels, spixels = int(header["SIZE1"]), int(header["SIZE2"])
    state.pixels = [fpixels, spixels]
    if number("PIXEL_SIZE"):
        state.pixel = number("PIXEL_SIZE")
    if number("DISTANCE"):
        state.distance = number("DISTANCE")
    if number("CLOSE_DISTANCE"):
        state.close_distance = number("CLOSE_DISTANCE")
    if number("WAVELENGTH"):
        state.wavelength_A = number("WAVELENGTH")
    if number("BEAM_CENTER_X") is not None:
        state.x_beam = number("BEAM_CENTER_X")
    if number("BEAM_CENTER_Y") is not None:
        # nanoBragg reads a -mask header's Y from the far edge, an -img header's as is
        state.y_beam = state.pixel * spixels - number("BEAM_CENTER_Y") if flip_y else number("BEAM_CENTER_Y")
    for key, attribute in (("ORGX", "header_orgx"), ("ORGY", "header_orgy")):
        value = number(key) if number(key) is not None else number("XDS_" + key)
        if value is not None:
            setattr(state, attribute, value)
    if number("PHI") is not None:
        state.phi0 = number("PHI")
    if number("OSC_RANGE") is not None:
        state.osc = number("OSC_RANGE")


# ------------------------------------------------------------------ the model
def _build_beam(state) -> Beam:
    fluence = state.fluence
    if state.flux:
        if "-fluence" in state.given:
            raise ValueError("-fluence and -flux both set the fluence (nanoBragg.c takes -flux); give one")
        fluence = fluence_from_flux(state.flux, state.exposure_s, state.beamsize_mm)
    elif "-exposure" in state.given:
        raise ValueError("-exposure has no effect without -flux (give -flux, or -fluence alone)")
    kwargs = {
        "wavelength_A": state.wavelength_A,
        "fluence": fluence,
        "polarization": state.kahn,
        "nopolar": state.nopolar,
    }
    if not -1.0 <= state.kahn <= 1.0:
        raise ValueError(f"-polar (Kahn factor) must lie in [-1, 1], got {state.kahn!r}")
    divergence = []
    for axis in "hv":
        range_value, step, steps = state.div[axis]
        divergence.append(resolve_axis(f"-{axis}divsteps", range_value, step, steps))
    d_range, d_steps, d_step = resolve_axis("-dispsteps", state.dispersion_pct, None, state.dispsteps)
    if state.sourcefile is not None:
        from .sources import Sources, read_source_file

        if any(state.div[axis][k] is not None for axis in "hv" for k in range(3)) or d_range or state.dispsteps:
            state.notes.append("note: -sourcefile replaces the divergence and dispersion grid, as in nanoBragg")
        sources = read_source_file(
            state.sourcefile,
            beam_axis=state.vectors.get("beam_axis", _convention_beam(state)),
            wavelength_A=state.wavelength_A,
        )
        # nanoBragg.c never reads the weight column in its pixel loop
        return Beam(**kwargs, sources=Sources(sources.directions, None, sources.wavelengths_A))
    (h_range, h_steps, h_step), (v_range, v_steps, v_step) = divergence
    if h_range or v_range or h_steps > 1 or v_steps > 1:
        kwargs.update(
            divergence_mrad=(h_range, v_range),
            divergence_steps=(h_steps, v_steps),
            round_divergence=state.round_div,
        )
        if h_step is not None or v_step is not None:
            kwargs["divergence_step_mrad"] = (
                h_step if h_step is not None else (h_range / (h_steps - 1) if h_steps > 1 else max(h_range, 1.0)),
                v_step if v_step is not None else (v_range / (v_steps - 1) if v_steps > 1 else max(v_range, 1.0)),
            )
    if d_range:
        kwargs.update(dispersion_pct=d_range, dispersion_steps=d_steps)
    return Beam(**kwargs)


def _convention_beam(state) -> tuple:
    from .detector import convention_axes

    return convention_axes(state.convention).beam


def _cells_for_size(state) -> tuple | None:
    """nanoBragg's N = ceil(size / |axis|) for the -xtalsize family (y, z clipped to the beam).

    The edge lengths are recomputed exactly as nanoBragg.c computes them, in metres, so
    that a size that is a whole number of cells rounds the way nanoBragg's does (often up
    by one cell: 0.0006 mm of a 100 A cell is 61 cells there)."""
    if not any(state.sample_mm):
        return None
    sizes_m = [x / 1000 for x in state.sample_mm]
    beam_m = state.beamsize_mm / 1000
    for axis in (1, 2):
        if sizes_m[axis] > beam_m:
            state.notes.append(
                f"note: clipping the crystal's {'bc'[axis - 1]} size {state.sample_mm[axis]:g} mm "
                f"to the {state.beamsize_mm:g} mm beam"
            )
            sizes_m[axis] = beam_m
    lengths_m = _nanobragg_edges_m(state)
    cells = [max(1, n) for n in state.n_cells]
    for axis in range(3):
        if sizes_m[axis] > 0:
            cells[axis] = max(1, math.ceil(sizes_m[axis] / lengths_m[axis]))
    return tuple(cells)


def _cross(x, y):
    return [x[1] * y[2] - x[2] * y[1], x[2] * y[0] - x[0] * y[2], x[0] * y[1] - x[1] * y[0]]


def _magnitude(x) -> float:
    return math.sqrt(x[0] * x[0] + x[1] * x[1] + x[2] * x[2])


def _rotate_xyz(v, angles):
    """nanoBragg's rotate(): about x, then y, then z, skipping zero angles."""
    x, y, z = v
    phix, phiy, phiz = angles
    if phix != 0:
        y, z = y * math.cos(phix) + z * -math.sin(phix), y * math.sin(phix) + z * math.cos(phix)
    if phiy != 0:
        x, z = x * math.cos(phiy) + y * 0 + z * math.sin(phiy), x * -math.sin(phiy) + y * 0 + z * math.cos(phiy)
    if phiz != 0:
        x, y = x * math.cos(phiz) + y * -math.sin(phiz), x * math.sin(phiz) + y * math.cos(phiz)
    return [x, y, z]


def _nanobragg_edges_m(state) -> list[float]:
    """|a|, |b|, |c| in metres, by nanoBragg.c's own sequence of double operations."""
    rtd = 180.0 * (1.0 / math.pi)
    user_cell = state.cell is not None
    if user_cell:
        a, b, c = state.cell[:3]
        alpha, beta, gamma = (x / rtd for x in state.cell[3:])
        aavg = (alpha + beta + gamma) / 2
        skew = abs(math.sin(aavg) * math.sin(aavg - alpha) * math.sin(aavg - beta) * math.sin(aavg - gamma))
        v_cell = 2.0 * a * b * c * math.sqrt(skew)
        v_star = 1.0 / v_cell
        a_len, b_len, c_len = (
            b * c * math.sin(alpha) * v_star,
            c * a * math.sin(beta) * v_star,
            a * b * math.sin(gamma) * v_star,
        )
        sin_gamma_star = min(c * v_star / a_len / b_len, 1.0)
        cos_alpha_star = (math.cos(beta) * math.cos(gamma) - math.cos(alpha)) / (math.sin(beta) * math.sin(gamma))
        cos_beta_star = (math.cos(gamma) * math.cos(alpha) - math.cos(beta)) / (math.sin(gamma) * math.sin(alpha))
        cos_gamma_star = (math.cos(alpha) * math.cos(beta) - math.cos(gamma)) / (math.sin(alpha) * math.sin(beta))
        cos_alpha_star, cos_beta_star, cos_gamma_star = (
            1.0 if x * x > 1.0 else x for x in (cos_alpha_star, cos_beta_star, cos_gamma_star)
        )
        a_star = [a_len, 0.0, 0.0]
        b_star = [b_len * cos_gamma_star, b_len * sin_gamma_star, 0.0]
        c_star = [
            c_len * cos_beta_star,
            c_len * (cos_alpha_star - cos_beta_star * cos_gamma_star) / sin_gamma_star,
            c_len * v_cell / (a * b * c * sin_gamma_star),
        ]
    if state.mat is not None:
        from .crystal import read_mosflm_matrix

        matrix = read_mosflm_matrix(state.mat)
        scale = 1e-10 / (state.wavelength_A / 1e10)
        a_star, b_star, c_star = ([float(matrix[row, col]) * scale for row in range(3)] for col in range(3))
    random = state.misset_random
    angles = list(_random_misset_rad(state.misset_seed)) if random else [x / rtd for x in state.misset]
    if any(angles):
        a_star, b_star, c_star = (_rotate_xyz(v, angles) for v in (a_star, b_star, c_star))
    bc, ca, ab = _cross(b_star, c_star), _cross(c_star, a_star), _cross(a_star, b_star)
    v_star = sum(x * y for x, y in zip(a_star, bc, strict=True))
    if user_cell:
        bc, ca, ab = (
            [length / v_cell / (_magnitude(vec) or 1.0) * x for x in vec] for vec, length in ((bc, a), (ca, b), (ab, c))
        )
        v_star = 1.0 / v_cell
    v_cell = 1.0 / v_star
    return [_magnitude([x * v_cell * 1e-10 for x in vec]) for vec in (bc, ca, ab)]


def _phi_rules(state) -> tuple:
    """nanoBragg's (osc, steps, step) from -osc, -phistep and -phisteps."""
    osc, step, steps = state.osc, state.phistep, state.phisteps
    if steps is None:
        if osc is None:
            return (0.0, 1, None) if step is None else (step, 2, step)
        if step is None:
            return osc, 2, None
        return osc, max(1, math.ceil(osc / step)), step
    if osc is None:
        return (1.0, steps, None) if step is None else (step, 2, step)
    return osc, steps, step


def _random_misset_rad(seed: int) -> tuple:
    """nanoBragg's -misset random: a rotation drawn like a 90-rad mosaic domain, as x, y, z
    rotation angles in radians (nanoBragg's umat2misset)."""
    from .mosaic import Ran1

    rng = Ran1(seed)
    r1, r2, r3 = (2.0 * rng() - 1.0 for _ in range(3))
    xyrad = math.sqrt(1.0 - r2 * r2)
    rot = float(np.float32(90.0) * np.power(np.float32(1.0 - r3 * r3), np.float32(1.0 / 3.0)))
    v1, v2, v3 = xyrad * math.sin(math.pi * r1), xyrad * math.cos(math.pi * r1), r2
    c, s = math.cos(rot), math.sin(rot)
    t = 1.0 - c
    umat = np.array(
        [
            [c + t * v1 * v1, t * v1 * v2 - s * v3, t * v1 * v3 + s * v2],
            [t * v1 * v2 + s * v3, c + t * v2 * v2, t * v2 * v3 - s * v1],
            [t * v1 * v3 - s * v2, t * v2 * v3 + s * v1, c + t * v3 * v3],
        ]
    )
    uzx, uzy, uzz = umat[2]
    if uzx * uzx < 1.0:
        angles = (
            math.atan2(uzy, uzz),
            math.atan2(-uzx, math.sqrt(uzy * uzy + uzz * uzz)),
            math.atan2(umat[1, 0], umat[0, 0]),
        )
    else:
        angles = (math.pi, math.pi / 2, math.atan2(umat[0, 1], -umat[1, 1]))
    return angles


def _build_crystal(state) -> Crystal:
    if state.cell is None and state.mat is None:
        raise ValueError("give the unit cell with -cell a b c alpha beta gamma (or a -mat file)")
    hkl = state.hkl
    if hkl is None and state.dump is not None:
        from .structure_factors import read_dump

        hkl = read_dump(state.dump)
    if hkl is None and state.default_F == 0.0:
        raise ValueError("give structure factors with -hkl FILE, -dump FILE or -default_F F")
    misset = state.misset
    if state.misset_random:
        if state.misset_seed is None:
            state.misset_seed = int(time.time())  # nanoBragg seeds it with the clock too
        rtd = 180.0 * (1.0 / math.pi)
        misset = tuple(x * rtd for x in _random_misset_rad(state.misset_seed))
        state.notes.append(
            "random orientation misset angles: {:f} {:f} {:f} deg (-misset_seed {})".format(*misset, state.misset_seed)
        )
    elif state.misset_seed is not None:
        raise ValueError("-misset_seed has no effect without -misset random")
    osc, phisteps, phistep = _phi_rules(state)
    mosaic = state.mosaic_deg if state.mosaic_deg is not None else 0.0
    domains = state.mosaic_domains if mosaic > 0 else None
    crystal = Crystal(
        cell=state.cell if state.cell is not None else (1, 1, 1, 90, 90, 90),
        mosflm_matrix=state.mat,
        matrix_wavelength_A=state.wavelength_A if state.mat is not None else None,
        N_cells=tuple(max(1, n) for n in state.n_cells),
        default_F=state.default_F,
        hkl=hkl,
        misset_deg=misset,
        mosaic_spread_deg=mosaic,
        mosaic_domains=domains,
        mosaic_seed=state.mosaic_seed,
        shape=state.shape,
        phi_start_deg=state.phi0,
        osc_deg=osc,
        phi_steps=phisteps,
        phi_step_deg=phistep,
        spindle_axis=state.spindle,
        interpolate=state.interpolate,
        fudge=state.fudge,
    )
    cells = _cells_for_size(state)
    if cells is not None:
        crystal = crystal.replace(N_cells=cells)
    return crystal


def _detector_shape(state) -> tuple[int, int]:
    pixel = state.pixel
    for axis, names in ((0, ("-detsize", "-detsize_f")), (1, ("-detsize", "-detsize_s"))):
        if state.pixels[axis] is not None and any(n in state.given for n in names):
            raise ValueError(
                f"{'/'.join(n for n in names if n in state.given)} has no effect with a pixel count "
                "(nanoBragg.c takes the count); give one of them"
            )
    counts = []
    for axis in range(2):
        if state.pixels[axis] is not None:
            counts.append(state.pixels[axis])
        elif state.detsize[axis] is not None:
            # nanoBragg: ceil(detsize / pixel - 0.5) in metres
            counts.append(max(1, math.ceil((state.detsize[axis] / 1000.0) / (pixel / 1000.0) - 0.5)))
        else:
            counts.append(None)
    fpixels = counts[0] if counts[0] is not None else 1024
    spixels = counts[1] if counts[1] is not None else (counts[0] if state.detsize[1] is None and counts[0] else 1024)
    return fpixels, spixels


def _build_detector(state) -> Detector:
    fpixels, spixels = _detector_shape(state)
    custom = state.convention == "custom"
    kwargs = {
        "fpixels": fpixels,
        "spixels": spixels,
        "pixel_size_mm": state.pixel,
        "distance_mm": state.distance,
        "convention": state.convention,
        "rotation_deg": tuple(state.rot),
        "twotheta_deg": state.twotheta,
        "oversample": state.oversample,
        "point_pixel": state.point_pixel,
        "oversample_omega": state.oversample_omega,
        "oversample_polar": state.oversample_polar,
        "oversample_thick": state.oversample_thick,
        "curved": state.curved,
        "d_min_A": state.dmin,
        "close_distance_mm": state.close_distance,
    }
    if state.roi is not None:
        xmin, xmax, ymin, ymax = state.roi
        # nanoBragg: a negative bound means the default (the whole detector)
        kwargs["roi"] = (
            xmin if xmin >= 0 else 0,
            xmax if xmax >= 0 else fpixels,
            ymin if ymin >= 0 else 0,
            ymax if ymax >= 0 else spixels,
        )
    if state.mask_image is not None:
        if state.mask_image.shape != (spixels, fpixels):
            raise ValueError(
                f"-mask image is {state.mask_image.shape[1]}x{state.mask_image.shape[0]} pixels, "
                f"the detector {fpixels}x{spixels}"
            )
        kwargs["pixel_mask"] = state.mask_image
    _sensor(state, kwargs)
    if custom:
        _custom_geometry(state, kwargs)
    else:
        _named_geometry(state, kwargs, fpixels, spixels)
    return Detector(**kwargs)


def _sensor(state, kwargs: dict) -> None:
    if state.thick_um is None:
        if state.thicksteps is not None or "-oversample_thick" in state.given:
            raise ValueError("-detector_thicksteps and -oversample_thick need -detector_thick (a sensor thickness)")
        if state.absorb not in (None, "inf"):
            raise ValueError("-detector_abs needs -detector_thick (a sensor thickness)")
        return
    if state.absorb == "inf":
        raise ValueError(
            "-detector_thick after -detector_abs inf: a sensor that absorbs nothing captures no photons "
            "(nanoBragg.c gives an all-zero image); give -detector_abs a length"
        )
    thick = state.thick_um
    layers = state.thicksteps
    if layers is None:
        # nanoBragg: two layers, thickness/2 apart, covering the thickness
        kwargs.update(sensor_thickness_um=thick, sensor_layers=2)
    else:
        layers = max(layers, 2)
        # nanoBragg spaces n layers thickness/(n-1) apart: they reach one spacing deeper
        kwargs.update(sensor_thickness_um=thick * layers / (layers - 1), sensor_layers=layers)
    kwargs["sensor_attenuation_um"] = state.absorb if state.absorb is not None else thick


def _named_geometry(state, kwargs: dict, fpixels: int, spixels: int) -> None:
    if state.convention not in ("xds", "dials"):
        for names, attributes in (
            (("-Xclose", "-Yclose"), ("x_close", "y_close")),
            (("-ORGX", "-ORGY"), ("orgx", "orgy")),
        ):
            if any(getattr(state, a) is not None for a in attributes):
                raise ValueError(
                    f"{'/'.join(names)} have no effect with the {state.convention.upper()} convention "
                    "(nanoBragg.c ignores them there); use -Xbeam/-Ybeam"
                )
    x = state.x_beam if state.x_beam is not None else state.x_close
    y = state.y_beam if state.y_beam is not None else state.y_close
    if x is not None or y is not None:
        probe = Detector(fpixels=fpixels, spixels=spixels, pixel_size_mm=state.pixel, convention=state.convention)
        default_x, default_y = probe.default_beam_center_mm()
        kwargs["beam_center_mm"] = (x if x is not None else default_x, y if y is not None else default_y)
    if state.convention in ("xds", "dials"):
        kwargs["orgx_px"] = state.orgx if state.orgx is not None else state.header_orgx
        kwargs["orgy_px"] = state.orgy if state.orgy is not None else state.header_orgy
    kwargs["pivot"] = state.pivot_explicit


def _custom_geometry(state, kwargs: dict) -> None:
    """nanoBragg's CUSTOM convention: Fbeam = Fclose = Xbeam, which defaults to Xclose,
    then to ORGX, then to half the detector; the pivot is the last flag's that set one."""
    pixel = state.pixel
    fpixels, spixels = kwargs["fpixels"], kwargs["spixels"]
    orgx = state.orgx if state.orgx is not None else state.header_orgx
    orgy = state.orgy if state.orgy is not None else state.header_orgy
    f_close = (orgx - 0.5) * pixel if orgx is not None else fpixels * pixel / 2.0
    s_close = (orgy - 0.5) * pixel if orgy is not None else spixels * pixel / 2.0
    x = state.x_beam if state.x_beam is not None else (state.x_close if state.x_close is not None else f_close)
    y = state.y_beam if state.y_beam is not None else (state.y_close if state.y_close is not None else s_close)
    kwargs["beam_center_mm"] = (x, y)
    kwargs["pivot"] = state.pivot_tracked
    vectors = dict(state.vectors)
    normal = vectors.get("normal_axis")
    if normal is None:
        vectors["normal_axis"] = (1.0, 0.0, 0.0)  # nanoBragg's initial odet, kept unless given
    elif math.sqrt(normal[0] * normal[0] + normal[1] * normal[1] + normal[2] * normal[2]) != 1.0:
        # nanoBragg.c replaces a non-unit -odet_vector by fast x slow
        state.notes.append(
            "note: -odet_vector is not a unit vector, so it is replaced by fast x slow (as nanoBragg.c does)"
        )
        del vectors["normal_axis"]
    kwargs.update(vectors)


def _check_pix0(state, detector: Detector) -> None:
    if state.pix0_m is None:
        return
    import torch

    from .detector import detector_frame

    with torch.no_grad():
        frame = detector_frame(detector, torch.float64, "cpu")
    placed = frame.pix0_mm.numpy() / 1000.0
    given = np.array(state.pix0_m)
    if np.allclose(placed, given, rtol=0, atol=1e-9):
        return
    state.notes.append(
        "note: -pix0_vector {} m differs from the origin nanoBragg.c computes from the beam centre and "
        "distance ({:.6g} {:.6g} {:.6g} m); nanoBragg.c uses the computed one, and so does braggsim".format(
            " ".join(f"{x:g}" for x in given), *placed
        )
    )


def _build_background(state, beam_size_mm: float):
    needs_water = [name for name in ("-stol", "-4stol", "-Q", "-density", "-MW") if _given_any(state, name)]
    if state.water_um is None:
        if needs_water:
            raise ValueError(
                f"{', '.join(needs_water)} only take effect with -water SIZE (the amount of material); "
                "nanoBragg.c reads them but does not use them"
            )
        return None
    from .background import read_stol

    table = read_stol(state.stol[0], units=state.stol[1]) if state.stol else read_stol("water")
    size_mm = state.water_um / 1000.0
    # nonBragg clips the sample's width and height to the beam
    across = min(size_mm, beam_size_mm)
    return AmorphousBackground(
        table,
        thickness_mm=size_mm,
        width_mm=across,
        height_mm=across,
        density_g_cm3=state.density if state.density is not None else 1.0,
        molecular_weight=state.mw if state.mw is not None else 18.0,
    )


def _given_any(state, name: str) -> bool:
    return any(FLAGS[g].names == FLAGS[name].names for g in state.given if g in FLAGS)


def _build(state, extra: dict) -> FlagSet:
    beam = _build_beam(state)
    crystal = _build_crystal(state)
    detector = _build_detector(state)
    _check_pix0(state, detector)
    if "-beamsize" in state.given and not (state.flux or any(state.sample_mm) or state.water_um is not None):
        raise ValueError("-beamsize has no effect without -flux, a crystal size (-xtalsize ...) or -water")
    background = _build_background(state, state.beamsize_mm)
    if state.seed is not None and state.noisefile is None:
        # (with a -noisefile that -nonoise cancels, the seed is simply not needed)
        raise ValueError("-seed has no effect without -noisefile (it seeds the noise image)")
    if state.write_pgm and state.pgmfile is None:
        raise ValueError("-pgmscale needs -pgmfile FILE (braggsim writes no file it was not asked for)")
    dump_write = state.dump if state.hkl is not None else None
    if state.dump is not None and state.hkl is not None and Path(state.dump).resolve() == Path(state.hkl).resolve():
        raise ValueError("-dump names the -hkl file: it would overwrite the input")
    return FlagSet(
        crystal,
        detector,
        beam,
        background=background,
        floatfile=state.floatfile,
        intfile=state.intfile,
        intfile_scale=state.scale,
        pgmfile=state.pgmfile if state.write_pgm else None,
        pgm_scale=state.pgm_scale,
        adc_offset=state.adc,
        printout=state.printout,
        printout_pixel=state.printout_pixel,
        stolout=state.stolout,
        progress=state.progress,
        dump_write=dump_write,
        calculate_noise=state.calculate_noise,
        noisefile=state.noisefile if state.calculate_noise else None,
        seed=state.seed,
        dtype=state.dtype,
        device=state.device,
        dtype_given="-dtype" in state.given,
        notes=list(state.notes),
        extra=extra,
        values=state.values,
    )


# ------------------------------------------------------------------ --help text
def help_text() -> str:
    """The flag list of ``braggsim simulate --help``, grouped, from the flag table."""
    lines = []
    seen = set()
    for group in GROUPS:
        lines.append(f"{group}:")
        for spec in FLAGS.values():
            if spec.group != group or spec.names in seen:
                continue
            seen.add(spec.names)
            usage = spec.usage
            aliases = [n for n in spec.names if n != usage.split()[0]]
            if aliases:
                usage += "  (also " + " ".join(aliases) + ")"
            if len(usage) <= 30:
                lines.append(f"  {usage:<30} {spec.meaning}")
            else:
                lines.append(f"  {usage}")
                lines.append(f"  {'':<30} {spec.meaning}")
        lines.append("")
    lines.append("refused (nanoBragg.c parses them; braggsim does not accept them):")
    for name, reason in REFUSED.items():
        lines.append(f"  {name:<30} {reason}")
    return "\n".join(lines) + "\n"


def help_markdown() -> str:
    """The flag table as Markdown (docs/physics.md carries a copy; a test keeps them equal)."""
    rows = ["| flag | also | meaning |", "|---|---|---|"]
    seen = set()
    for group in GROUPS:
        for spec in FLAGS.values():
            if spec.group != group or spec.names in seen:
                continue
            seen.add(spec.names)
            main = spec.usage.split(" | ")[0]
            aliases = " ".join(f"`{n}`" for n in spec.names if n != main.split()[0])
            usage = spec.usage.replace("|", "\\|")
            rows.append(f"| `{usage}` | {aliases} | {group}: {spec.meaning} |")
    for name, reason in REFUSED.items():
        rows.append(f"| `{name}` | | refused: {reason} |")
    return "\n".join(rows) + "\n"
