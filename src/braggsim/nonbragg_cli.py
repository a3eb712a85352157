"""``braggsim nonbragg``: amorphous scattering from a ``.stol`` table, with nonBragg's flags.

nanoBragg's repository renders water, air and ice with its second program, nonBragg.
This command takes nonBragg's flags (read left to right, integers as atoi reads them) and
draws the same image with :func:`braggsim.simulate.simulate_background`.  nonBragg's
geometry differs from nanoBragg's MOSFLM default in small ways this module reproduces:
the beam centre (Xbeam, Ybeam) is measured along the fast and slow axes with no half
pixel, defaulting to ((detsize - pixel)/2, (detsize + pixel)/2); ORGX/ORGY are
multiplied by the pixel size without the half-pixel shift; the detector normal is always
fast x slow; the pixel count is ceil(detsize / pixel); every sample gets its own solid
angle and polarization; and -sourcefile weights count.
"""

from __future__ import annotations

import math
import sys
import time

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

NONBRAGG_HELP_HEAD = """\
usage: braggsim nonbragg -stol FILE|water|air|ice|nanoice [flags]

Render the scattering of amorphous material (a .stol table: sin(theta)/lambda in 1/A and
F of one molecule) as nanoBragg's nonBragg does: photons/pixel = r_e^2 * fluence *
molecules * F(stol)^2 * polarization * solid angle, averaged over subpixels and sources.
Lengths in mm, angles in degrees.  Flags are read left to right; a flag not listed here
is an error.

"""

# duplicates: a declaration table; its entries share one shape on purpose
# flag -> (values, group, usage, meaning)
NONBRAGG_FLAGS = {
    "-stol": (
        1,
        "material",
        "-stol FILE|name",
        "F against sin(theta)/lambda (1/A); water, air, ice, nanoice ship with braggsim",
    ),
    "-4stol": (1, "material", "-4stol FILE", "the same with 4 sin(theta)/lambda in the first column"),
    "-Q": (1, "material", "-Q FILE", "the same with Q = 4 pi sin(theta)/lambda"),
    "-thickness": (
        1,
        "material",
        "-thickness mm",
        "sample thickness along the beam (default 0.1; also -thick, -sample_thick, -sample_x)",
    ),
    "-samplesize": (1, "material", "-samplesize mm", "edge of a cube-shaped sample (also -sample_size)"),
    "-width": (1, "material", "-width mm", "sample width across the beam (default 0.1; also -sample_width, -sample_y)"),
    "-height": (
        1,
        "material",
        "-height mm",
        "sample height (default 0.1; also -heigh, -sample_heigh, -sample_height, -sample_z)",
    ),
    "-density": (1, "material", "-density g/cm3", "material density (default 1; also -sample_den)"),
    "-molecules": (
        1,
        "material",
        "-molecules n",
        "molecules in the sample instead of the density (also -sample_molecules)",
    ),
    "-MW": (1, "material", "-MW g/mol", "molecular weight (default 18; also -molecular)"),
    "-lambda": (1, "beam", "-lambda A", "wavelength (default 1; also -wave, -wavelength)"),
    "-energy": (1, "beam", "-energy eV", "photon energy instead of -lambda"),
    "-fluence": (1, "beam", "-fluence ph/m^2", "photons/m^2 (default 1.25932015286227e29)"),
    "-flux": (1, "beam", "-flux ph/s", "fluence = flux x exposure / beamsize^2"),
    "-exposure": (1, "beam", "-exposure s", "exposure for -flux (default 1)"),
    "-beamsize": (1, "beam", "-beamsize mm", "beam edge (default 0.1); clips the sample width and height"),
    "-polar": (1, "beam", "-polar K", "Kahn polarization factor (default 0)"),
    "-nopolar": (0, "beam", "-nopolar", "no polarization factor"),
    "-divergence": (1, "beam", "-divergence mrad", "horizontal and vertical divergence range"),
    "-hdivrange": (1, "beam", "-hdivrange mrad", "horizontal divergence range"),
    "-vdivrange": (1, "beam", "-vdivrange mrad", "vertical divergence range"),
    "-hdivstep": (1, "beam", "-hdivstep mrad", "horizontal source spacing"),
    "-vdivstep": (1, "beam", "-vdivstep mrad", "vertical source spacing"),
    "-hdivsteps": (1, "beam", "-hdivsteps n", "horizontal source points"),
    "-vdivsteps": (1, "beam", "-vdivsteps n", "vertical source points"),
    "-divsteps": (1, "beam", "-divsteps n", "source points along both"),
    "-round_div": (0, "beam", "-round_div", "drop grid corners outside the ellipse (default)"),
    "-square_div": (0, "beam", "-square_div", "keep the whole grid"),
    "-dispersion": (1, "beam", "-dispersion pct", "spectral width (%)"),
    "-dispsteps": (1, "beam", "-dispsteps n", "wavelengths across -dispersion"),
    "-sourcefile": (1, "beam", "-sourcefile FILE", "sources 'X Y Z weight wavelength' (m); the weights count"),
    "-beam_vector": (3, "beam", "-beam_vector x y z", "incident beam direction (default 1 0 0)"),
    "-polar_vector": (3, "beam", "-polar_vector x y z", "E-vector axis (default 0 0 1)"),
    "-distance": (1, "detector", "-distance mm", "sample to detector along the beam (default 100); beam pivot"),
    "-close_distance": (1, "detector", "-close_distance mm", "sample to detector plane; sample pivot"),
    "-pixel": (1, "detector", "-pixel mm", "pixel size (default 0.1)"),
    "-detsize": (1, "detector", "-detsize mm", "detector edge (default 102.4; also -detsize_x, -detsize_y)"),
    "-detpixels": (
        1,
        "detector",
        "-detpixels n",
        "pixels along each edge (also -detpixels_f/-detpixels_x, -detpixels_s/-detpixels_y)",
    ),
    "-Xbeam": (1, "detector", "-Xbeam mm", "direct beam along fast from the first pixel's corner; beam pivot"),
    "-Ybeam": (1, "detector", "-Ybeam mm", "direct beam along slow; beam pivot"),
    "-Xclose": (1, "detector", "-Xclose mm", "near point along fast; sample pivot"),
    "-Yclose": (1, "detector", "-Yclose mm", "near point along slow; sample pivot"),
    "-ORGX": (1, "detector", "-ORGX px", "near point along fast, in pixels (x pixel size); sample pivot"),
    "-ORGY": (1, "detector", "-ORGY px", "near point along slow, in pixels; sample pivot"),
    "-pivot": (1, "detector", "-pivot beam|sample", "what stays put when the detector rotates"),
    "-fdet_vector": (3, "detector", "-fdet_vector x y z", "fast axis (default 0 0 1)"),
    "-sdet_vector": (3, "detector", "-sdet_vector x y z", "slow axis (default 0 -1 0); the normal is fast x slow"),
    "-odet_vector": (
        3,
        "detector",
        "-odet_vector x y z",
        "accepted as nonBragg does: replaced by fast x slow (with a note)",
    ),
    "-twotheta_axis": (
        3,
        "detector",
        "-twotheta_axis x y z",
        "two-theta axis (default 0 1 0); like nonBragg it also sets -twotheta to x",
    ),
    "-pix0_vector": (
        3,
        "detector",
        "-pix0_vector x y z",
        "accepted as nonBragg does: recomputed from the beam centre (with a note)",
    ),
    "-twotheta": (1, "detector", "-twotheta deg", "two-theta swing; sample pivot"),
    "-detector_rotx": (1, "detector", "-detector_rotx deg", "rotation about lab x (then y, then z)"),
    "-detector_roty": (1, "detector", "-detector_roty deg", "rotation about lab y"),
    "-detector_rotz": (1, "detector", "-detector_rotz deg", "rotation about lab z"),
    "-curved_det": (0, "detector", "-curved_det", "every pixel at the same distance"),
    "-point_pixel": (0, "detector", "-point_pixel", "solid angle 1/R^2"),
    "-oversample": (1, "detector", "-oversample n", "subpixels per pixel edge (default 1)"),
    "-roi": (4, "detector", "-roi xmin xmax ymin ymax", "render only these pixels (inclusive); others are 0"),
    "-Fmap": (0, "output", "-Fmap", "write F(stol) of each pixel's last sample instead of photons"),
    "-floatfile": (1, "output", "-floatfile FILE", "raw float32, slow axis first (also -floatimage)"),
    "-intfile": (1, "output", "-intfile FILE", "SMV image (also -intimage)"),
    "-pgmfile": (1, "output", "-pgmfile FILE", "8-bit PGM image (also -pgmimage)"),
    "-scale": (1, "output", "-scale s", "-intfile scale (default 55000 / max_I)"),
    "-pgmscale": (1, "output", "-pgmscale s", "-pgmfile scale (default 250 / (5 rmsd))"),
    "-nopgm": (0, "output", "-nopgm", "no PGM (cancels an earlier -pgmfile)"),
    "-noisefile": (
        1,
        "output",
        "-noisefile FILE",
        "SMV noise image: Poisson counts + the ADC offset, as nonBragg (also -noiseimage)",
    ),
    "-seed": (1, "output", "-seed n", "seed of the noise image's draws (default: the clock, printed)"),
    "-nonoise": (0, "output", "-nonoise", "no noise image (cancels an earlier -noisefile)"),
    "-adc": (1, "output", "-adc counts", "offset added to -intfile pixels (default 40)"),
    "-phi": (1, "output", "-phi deg", "PHI and OSC_START written to the -intfile header"),
    "-osc": (1, "output", "-osc deg", "OSC_RANGE written to the -intfile header"),
    "-printout": (0, "output", "-printout", "print every pixel's value"),
    "-printout_pixel": (2, "output", "-printout_pixel f s", "print only this pixel"),
    "-progress": (0, "output", "-progress", "print a progress meter"),
    "-noprogress": (0, "output", "-noprogress", "no progress meter (the default)"),
    "-dtype": (1, "braggsim", "-dtype float32|float64", "arithmetic precision (default float64)"),
    "-device": (1, "braggsim", "-device cpu|cuda|...", "torch device (default cpu)"),
}
_ALIASES = {
    "-thick": "-thickness",
    "-sample_thick": "-thickness",
    "-sample_x": "-thickness",
    "-sample_size": "-samplesize",
    "-sample_width": "-width",
    "-sample_y": "-width",
    "-heigh": "-height",
    "-sample_heigh": "-height",
    "-sample_height": "-height",
    "-sample_z": "-height",
    "-sample_den": "-density",
    "-sample_density": "-density",
    "-sample_molecules": "-molecules",
    "-molecular": "-MW",
    "-molecular_weight": "-MW",
    "-wave": "-lambda",
    "-wavelength": "-lambda",
    "-detsize_x": "-detsize",
    "-detsize_y": "-detsize",
    "-detpixels_f": "-detpixels",
    "-detpixels_x": "-detpixels",
    "-detpixels_s": "-detpixels",
    "-detpixels_y": "-detpixels",
    "-curved_detector": "-curved_det",
    "-floatimage": "-floatfile",
    "-intimage": "-intfile",
    "-pgmimage": "-pgmfile",
    "-noiseimage": "-noisefile",
}
NONBRAGG_REFUSED = {
    "-img": "fitting a .stol profile to a measured image (nonBragg's -img/-stolout mode) is not implemented",
    "-stolout": "written only in nonBragg's -img mode, which braggsim does not implement",
    "-ignore": "part of nonBragg's -img mode, which braggsim does not implement",
    "-noreject": "part of nonBragg's -img mode, which braggsim does not implement",
    "-gain": "used only by nonBragg's -img mode, which braggsim does not implement",
    "-phistep": "nonBragg.c parses it but nothing uses it",
    "-phisteps": "nonBragg.c parses it but nothing uses it",
    "-spindle_axis": "nonBragg.c parses it but nothing uses it",
    "-source_distance": "only the directions of sources matter: every source is at infinity",
    "-coherent": "nonBragg.c sets a variable it never reads",
}


# duplicates: alike to nanobragg_flags._State on purpose: nonBragg.c's variables and its
# defaults, which differ from nanoBragg.c's (float64, a sample instead of a crystal)
class _State:
    def __init__(self):
        self.given = []
        self.notes = []
        self.stol = None
        self.sample_mm = [0.1, 0.1, 0.1]
        self.density = 1.0
        self.molecules = None
        self.mw = 18.0
        self.wavelength_A = 1.0
        self.fluence = None
        self.flux = 0.0
        self.exposure = 1.0
        self.beamsize = 0.1
        self.kahn = 0.0
        self.nopolar = False
        self.div = {"h": [None, None, None], "v": [None, None, None]}
        self.round_div = True
        self.dispersion = None
        self.dispsteps = None
        self.sourcefile = None
        self.vectors = {"fast_axis": (0.0, 0.0, 1.0), "slow_axis": (0.0, -1.0, 0.0)}
        self.distance = 100.0
        self.close_distance = None
        self.pixel = 0.1
        self.detsize = [102.4, 102.4]
        self.pixels = [None, None]
        self.x_beam = self.y_beam = self.x_close = self.y_close = self.orgx = self.orgy = None
        self.pivot = "beam"
        self.rot = [0.0, 0.0, 0.0]
        self.twotheta = 0.0
        self.curved = self.point_pixel = self.fmap = False
        self.oversample = 1
        self.roi = None
        self.outputs = {}
        self.scale = self.pgm_scale = None
        self.write_pgm = False
        self.adc = 40.0
        self.phi = 0.0
        self.osc = 0.0
        self.printout = False
        self.printout_pixel = None
        self.progress = False
        self.noisefile = None
        self.seed = None
        self.dtype = "float64"
        self.device = "cpu"


def _apply(state, name: str, values: list) -> None:  # noqa: C901  one branch per flag, as nonBragg's loop
    number = lambda: parse_number(name, values[0])  # noqa: E731
    if name in ("-stol", "-4stol", "-Q"):
        state.stol = (values[0], {"-stol": "stol", "-4stol": "4stol", "-Q": "Q"}[name])
    elif name == "-thickness":
        state.sample_mm[0] = positive(name, number(), "mm")
    elif name == "-samplesize":
        state.sample_mm = [positive(name, number(), "mm")] * 3
    elif name == "-width":
        state.sample_mm[1] = positive(name, number(), "mm")
    elif name == "-height":
        state.sample_mm[2] = positive(name, number(), "mm")
    elif name == "-density":
        state.density = positive(name, number(), "g/cm^3")
    elif name == "-molecules":
        state.molecules = positive(name, number())
    elif name == "-MW":
        state.mw = positive(name, number(), "g/mol")
    elif name == "-lambda":
        state.wavelength_A = positive(name, number(), "A")
    elif name == "-energy":
        state.wavelength_A = 12398.42 / positive(name, number(), "eV")
    elif name == "-fluence":
        state.fluence = positive(name, number(), "photons/m^2")
    elif name == "-flux":
        state.flux = positive(name, number(), "photons/s")
    elif name == "-exposure":
        state.exposure = positive(name, number(), "s")
    elif name == "-beamsize":
        state.beamsize = positive(name, number(), "mm")
    elif name == "-polar":
        state.kahn, state.nopolar = number(), False
    elif name == "-nopolar":
        state.nopolar = True
    elif name in ("-divergence", "-hdivrange", "-vdivrange", "-hdivstep", "-vdivstep"):
        part = 1 if name.endswith("step") else 0
        mrad = positive(name, number(), "mrad") if part else non_negative(name, number())
        for axis in "hv" if name == "-divergence" else name[1]:
            state.div[axis][part] = mrad
    elif name in ("-hdivsteps", "-vdivsteps", "-divsteps"):
        count = at_least(name, parse_integer(state, name, values[0]), 1)
        for axis in "hv" if name == "-divsteps" else name[1]:
            state.div[axis][2] = count
    elif name in ("-round_div", "-square_div"):
        state.round_div = name == "-round_div"
    elif name == "-dispersion":
        state.dispersion = non_negative(name, number())
    elif name == "-dispsteps":
        state.dispsteps = at_least(name, parse_integer(state, name, values[0]), 1)
    elif name == "-sourcefile":
        state.sourcefile = values[0]
    elif name in ("-beam_vector", "-polar_vector", "-fdet_vector", "-sdet_vector"):
        field = {"-beam_vector": "beam_axis", "-polar_vector": "polarization_axis"}.get(name, name[1] + "_axis")
        field = {"f_axis": "fast_axis", "s_axis": "slow_axis"}.get(field, field)
        state.vectors[field] = parse_vector(name, values)
    elif name == "-odet_vector":
        parse_vector(name, values)
        state.notes.append("note: nonBragg replaces -odet_vector by fast x slow, and so does braggsim")
    elif name == "-twotheta_axis":
        state.vectors["twotheta_axis"] = parse_vector(name, values)
        state.twotheta = parse_number(name, values[0])  # nonBragg's "-twotheta" test matches it too
        state.pivot = "sample"
        state.notes.append(f"note: -twotheta_axis also sets the two-theta angle to {values[0]} deg, as in nonBragg")
    elif name == "-pix0_vector":
        [parse_number(name, x) for x in values]
        state.notes.append(
            "note: nonBragg recomputes -pix0_vector from the beam centre and distance, and so does braggsim"
        )
    elif name == "-distance":
        state.distance, state.close_distance, state.pivot = positive(name, number(), "mm"), None, "beam"
    elif name == "-close_distance":
        state.close_distance, state.pivot = positive(name, number(), "mm"), "sample"
    elif name == "-pixel":
        state.pixel = positive(name, number(), "mm")
    elif name == "-detsize":
        size = positive(name, number(), "mm")
        given = state.given[-1]
        for index in {"-detsize_x": (0,), "-detsize_y": (1,)}.get(given, (0, 1)):
            state.detsize[index] = size
    elif name == "-detpixels":
        n = at_least(name, parse_integer(state, name, values[0]), 1)
        given = state.given[-1]
        axes = {"-detpixels_f": (0,), "-detpixels_x": (0,), "-detpixels_s": (1,), "-detpixels_y": (1,)}
        for index in axes.get(given, (0, 1)):
            state.pixels[index] = n
    elif name in ("-Xbeam", "-Ybeam", "-Xclose", "-Yclose", "-ORGX", "-ORGY"):
        attribute = {"-Xbeam": "x_beam", "-Ybeam": "y_beam", "-Xclose": "x_close", "-Yclose": "y_close"}
        setattr(state, attribute.get(name, name[1:].lower()), number())
        state.pivot = "beam" if name.endswith("beam") else "sample"
    elif name == "-pivot":
        if values[0] not in ("beam", "sample"):
            raise ValueError(f"flag -pivot must be beam or sample, got {values[0]!r}")
        state.pivot = values[0]
    elif name == "-twotheta":
        state.twotheta, state.pivot = number(), "sample"
    elif name.startswith("-detector_rot"):
        state.rot["xyz".index(name[-1])] = number()
    elif name in (
        "-curved_det",
        "-point_pixel",
        "-Fmap",
        "-printout",
        "-progress",
        "-noprogress",
        "-nopgm",
        "-nonoise",
    ):
        flags = {"-curved_det": "curved", "-point_pixel": "point_pixel", "-Fmap": "fmap", "-printout": "printout"}
        if name in flags:
            setattr(state, flags[name], True)
        elif name in ("-progress", "-noprogress"):
            state.progress = name == "-progress"
        elif name == "-nopgm":
            state.write_pgm = False
        elif name == "-nonoise":
            state.noisefile = None
    elif name == "-oversample":
        state.oversample = at_least(name, parse_integer(state, name, values[0]), 1)
    elif name == "-roi":
        state.roi = tuple(parse_integer(state, name, x) for x in values)
    elif name in ("-floatfile", "-intfile", "-pgmfile"):
        state.outputs[name] = values[0]
        state.write_pgm = state.write_pgm or name == "-pgmfile"
    elif name == "-noisefile":
        state.noisefile = values[0]
    elif name == "-seed":
        state.seed = parse_integer(state, name, values[0])
        if abs(state.seed) >= 2**31:
            raise ValueError(f"-seed must fit a 32-bit integer, got {values[0]!r}")
    elif name == "-scale":
        state.scale = positive(name, number())
    elif name == "-pgmscale":
        state.pgm_scale, state.write_pgm = positive(name, number()), True
    elif name == "-adc":
        state.adc = number()
    elif name == "-phi":
        state.phi = number()
    elif name == "-osc":
        state.osc = non_negative(name, number())
    elif name == "-printout_pixel":
        state.printout = True
        state.printout_pixel = tuple(parse_integer(state, name, x) for x in values)
    elif name == "-dtype":
        if values[0] not in ("float32", "float64"):
            raise ValueError(f"-dtype must be float32 or float64, got {values[0]!r}")
        state.dtype = values[0]
    elif name == "-device":
        state.device = values[0]


def parse_nonbragg(argv: list[str]) -> dict:
    """nonBragg flags -> {detector, beam, background, outputs...}; ValueError on bad input."""

    state = _State()
    i = 0
    while i < len(argv):
        given = argv[i]
        if given in NONBRAGG_REFUSED:
            raise ValueError(f"flag {given} is not supported by braggsim nonbragg: {NONBRAGG_REFUSED[given]}")
        name = _ALIASES.get(given, given)
        if name not in NONBRAGG_FLAGS:
            if given.startswith("-"):
                raise ValueError(f"unsupported flag {given!r} (see braggsim nonbragg --help)")
            raise ValueError(f"unexpected argument {given!r}: every value must follow its flag")
        count = NONBRAGG_FLAGS[name][0]
        values = argv[i + 1 : i + 1 + count]
        if len(values) < count or any(v.startswith("-") and not is_number(v) for v in values):
            raise ValueError(f"flag {given} takes {count} value(s), got {values!r}")
        state.given.append(given)
        _apply(state, name, values)
        i += 1 + count
    return _build(state)


def _build(state) -> dict:
    from .background import AmorphousBackground, read_stol
    from .beam import Beam, fluence_from_flux
    from .detector import Detector

    if state.stol is None:
        raise ValueError("give the material with -stol FILE (or water, air, ice, nanoice)")
    table = read_stol(state.stol[0], units=state.stol[1])
    pixel_m = state.pixel / 1000.0
    counts, sizes_m = [], []
    for axis in range(2):
        size_m = state.detsize[axis] / 1000.0 if state.pixels[axis] is None else pixel_m * state.pixels[axis]
        sizes_m.append(size_m)
        counts.append(max(1, math.ceil(size_m / pixel_m)))  # nonBragg: ceil(detsize / pixel), in metres
    fpixels, spixels = counts
    # nonBragg: Xclose = ORGX * pixel, else (detsize_x - pixel)/2; Yclose likewise with + pixel
    x_close = state.x_close
    if x_close is None:
        x_close = state.orgx * state.pixel if state.orgx is not None else (sizes_m[0] * 1000.0 - state.pixel) / 2.0
    y_close = state.y_close
    if y_close is None:
        y_close = state.orgy * state.pixel if state.orgy is not None else (sizes_m[1] * 1000.0 + state.pixel) / 2.0
    x_beam = state.x_beam if state.x_beam is not None else x_close
    y_beam = state.y_beam if state.y_beam is not None else y_close
    centre = (x_beam, y_beam) if state.pivot == "beam" else (x_close, y_close)
    roi = None
    if state.roi is not None:
        xmin, xmax, ymin, ymax = state.roi
        roi = (max(xmin, 0), xmax if xmax >= 0 else fpixels, max(ymin, 0), ymax if ymax >= 0 else spixels)
    detector = Detector(
        fpixels=fpixels,
        spixels=spixels,
        pixel_size_mm=state.pixel,
        distance_mm=state.distance,
        close_distance_mm=state.close_distance,
        convention="custom",
        pivot=state.pivot,
        beam_center_mm=centre,
        rotation_deg=tuple(state.rot),
        twotheta_deg=state.twotheta,
        curved=state.curved,
        point_pixel=state.point_pixel,
        oversample=state.oversample,
        roi=roi,
        **state.vectors,
    )
    fluence = state.fluence if state.fluence is not None else Beam().fluence
    if state.flux:
        fluence = fluence_from_flux(state.flux, state.exposure, state.beamsize)
    beam_kwargs = {
        "wavelength_A": state.wavelength_A,
        "fluence": fluence,
        "polarization": state.kahn,
        "nopolar": state.nopolar,
    }
    if not -1.0 <= state.kahn <= 1.0:
        raise ValueError(f"-polar (Kahn factor) must lie in [-1, 1], got {state.kahn!r}")
    if state.sourcefile is not None:
        from .sources import read_source_file

        beam = Beam(
            **beam_kwargs,
            sources=read_source_file(
                state.sourcefile,
                beam_axis=state.vectors.get("beam_axis", (1.0, 0.0, 0.0)),
                wavelength_A=state.wavelength_A,
            ),
        )
    else:
        (hr, hn, hs), (vr, vn, vs) = (resolve_axis(f"-{a}divsteps", *state.div[a]) for a in "hv")
        dr, dn, _ = resolve_axis("-dispsteps", state.dispersion, None, state.dispsteps)
        if hr or vr or hn > 1 or vn > 1:
            beam_kwargs.update(divergence_mrad=(hr, vr), divergence_steps=(hn, vn), round_divergence=state.round_div)
            if hs is not None or vs is not None:
                beam_kwargs["divergence_step_mrad"] = (
                    hs if hs is not None else (hr / (hn - 1) if hn > 1 else max(hr, 1.0)),
                    vs if vs is not None else (vr / (vn - 1) if vn > 1 else max(vr, 1.0)),
                )
        if dr:
            beam_kwargs.update(dispersion_pct=dr, dispersion_steps=dn)
        beam = Beam(**beam_kwargs)
    thickness, width, height = state.sample_mm
    width, height = min(width, state.beamsize), min(height, state.beamsize)  # nonBragg clips to the beam
    density = state.density
    if state.molecules is not None:
        volume_cm3 = thickness * width * height * 1e-3
        density = state.molecules / volume_cm3 / 6.02214179e23 * state.mw
    background = AmorphousBackground(
        table,
        thickness_mm=thickness,
        width_mm=width,
        height_mm=height,
        density_g_cm3=density,
        molecular_weight=state.mw,
    )
    if state.seed is not None and state.noisefile is None:
        raise ValueError("-seed has no effect without -noisefile (it seeds the noise image)")
    if state.write_pgm and "-pgmfile" not in state.outputs:
        raise ValueError("-pgmscale needs -pgmfile FILE (braggsim writes no file it was not asked for)")
    return {"state": state, "detector": detector, "beam": beam, "background": background}


def help_text() -> str:
    groups: dict[str, list[tuple[str, str]]] = {}
    for _name, (_, group, usage, meaning) in NONBRAGG_FLAGS.items():
        groups.setdefault(group, []).append((usage, meaning))
    lines = []
    for group, entries in groups.items():
        lines.append(f"{group}:")
        for usage, meaning in entries:
            lines.append(f"  {usage:<28} {meaning}" if len(usage) <= 28 else f"  {usage}\n  {'':<28} {meaning}")
        lines.append("")
    lines.append("refused (nonBragg parses them; braggsim nonbragg does not accept them):")
    lines.extend(f"  {name:<28} {reason}" for name, reason in NONBRAGG_REFUSED.items())
    return NONBRAGG_HELP_HEAD + "\n".join(lines) + "\n"


def nonbragg_main(argv: list) -> int:
    """``braggsim nonbragg <nonBragg flags>``; returns the exit status."""
    from .cli import (
        CommandError,
        check_outputs,
        image_statistics,
        input_paths,
        noise_image,
        print_summary,
        progress_meter,
        torch_dtype_device,
        write_outputs,
    )

    if any(a in ("-h", "--help", "-help") for a in argv):
        print(help_text(), end="")
        return 0
    try:
        parsed = parse_nonbragg(list(argv))
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    state, detector, beam, background = parsed["state"], parsed["detector"], parsed["beam"], parsed["background"]
    inputs = input_paths(list(argv))
    check_outputs([*state.outputs.values(), *([state.noisefile] if state.noisefile else [])], inputs)
    dtype, device = torch_dtype_device(state.dtype, state.device)
    import torch

    from .simulate import simulate_background

    for note in state.notes:
        print(note)
    molecules = float(background.molecules(torch.float64, "cpu"))
    print(f"{background.table.source}: {len(background.table.F)} points")
    print(
        f"sample {background.thickness_mm:g} x {background.width_mm:g} x {background.height_mm:g} mm, "
        f"{background.density_g_cm3:g} g/cm^3, {background.molecular_weight:g} g/mol ({molecules:g} molecules)"
    )
    print(f"{beam.n_sources} sources, {detector.oversample}x{detector.oversample} oversample")
    started = time.perf_counter()
    try:
        with torch.no_grad():
            if state.fmap:
                image = _fmap(detector, beam, background, dtype)
            else:
                image = simulate_background(
                    detector,
                    beam,
                    background,
                    dtype=dtype,
                    device=device,
                    progress=progress_meter() if state.progress else None,
                )
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    image = image.detach().cpu().numpy()
    stats = image_statistics(image)
    if stats["non_finite"]:
        raise CommandError(f"the image has {stats['non_finite']} non-finite pixels; nothing was written")
    max_i = print_summary(stats, detector, time.perf_counter() - started)
    if state.printout:
        for fast, slow in _printout_pixels(state, detector):
            print(f"{fast:4d} {slow:4d} : pixel {float(image[slow, fast]):.10g}")
    outputs = _Outputs(state, detector, beam)
    write_outputs(outputs, image, max_i, noise_image(image, outputs), inputs)
    return 0


def _printout_pixels(state, detector):
    if state.printout_pixel is not None:
        fast, slow = state.printout_pixel
        if 0 <= fast < detector.fpixels and 0 <= slow < detector.spixels:
            return [(fast, slow)]
        print(f"-printout_pixel {fast} {slow} lies outside the detector", file=sys.stderr)
        return []
    return [(f, s) for s in range(detector.spixels) for f in range(detector.fpixels)]


def _fmap(detector, beam, background, dtype):
    """nonBragg's -Fmap: F(stol) of each pixel's last sample (last subpixel, last source)."""
    import torch

    from .detector import detector_frame
    from .sample_geometry import sample_geometry

    frame = detector_frame(detector, torch.float64, "cpu")
    pixel = torch.tensor(float(detector.pixel_size_mm), dtype=torch.float64)
    geo = sample_geometry(detector, frame, pixel, range(detector.spixels), detector.oversample)
    incident, wavelengths, _ = beam.source_tensors(frame.beam, frame.polar_axis, torch.float64, "cpu")
    scattering = (geo.diffracted[:, :, -1, -1] - incident[-1]) / wavelengths[-1]
    image = background.table.interpolate(0.5 * torch.linalg.vector_norm(scattering, dim=-1)).to(dtype)
    keep = detector.simulated_pixels()
    return image if keep is None else torch.where(torch.as_tensor(keep), image, torch.zeros_like(image))


class _Outputs:
    """The attributes of a FlagSet that cli.write_outputs reads, for nonbragg's outputs."""

    def __init__(self, state, detector, beam):
        self.floatfile = state.outputs.get("-floatfile")
        self.intfile = state.outputs.get("-intfile")
        self.pgmfile = state.outputs.get("-pgmfile") if state.write_pgm else None
        self.intfile_scale = state.scale
        self.pgm_scale = state.pgm_scale
        self.adc_offset = state.adc
        self.stolout = None
        self.dump_write = None
        self.noisefile, self.seed = state.noisefile, state.seed
        self.detector, self.beam = detector, beam
        self.crystal = _Rotation(state.phi, state.osc)


class _Rotation:
    """What cli.rotation_header reads: the PHI/OSC header values."""

    def __init__(self, phi_deg: float, osc_deg: float):
        self.phi_start_deg, self.osc_deg = phi_deg, osc_deg
