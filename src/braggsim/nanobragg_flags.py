"""nanoBragg's command-line flags, mapped onto Crystal, Detector and Beam.

``parse_flags(["-cell", "100", ...])`` returns a :class:`FlagSet`.  Every flag nanoBragg
users type for the features braggsim implements is accepted with nanoBragg's meaning;
anything else raises ValueError naming the flag, so nothing is silently ignored.
"""

from __future__ import annotations

import dataclasses
import math

from .beam import Beam
from .crystal import Crystal
from .detector import Detector
from .mosaic import DEFAULT_MOSAIC_SEED

HC_EV_A = 12398.42  # h*c in eV*Angstrom, as nanoBragg converts -energy


@dataclasses.dataclass
class FlagSet:
    crystal: Crystal
    detector: Detector
    beam: Beam
    floatfile: str | None = None
    intfile: str | None = None
    intfile_scale: float | None = None
    dtype: str = "float32"
    device: str = "cpu"
    extra: dict = dataclasses.field(default_factory=dict)


# flag -> number of values
_VALUE_FLAGS = {
    "-cell": 6,
    "-mat": 1,
    "-hkl": 1,
    "-default_F": 1,
    "-N": 1,
    "-Na": 1,
    "-Nb": 1,
    "-Nc": 1,
    "-misset": 3,
    "-mosaic": 1,
    "-mosaic_dom": 1,
    "-mosaic_domains": 1,
    "-mosaic_seed": 1,
    "-lambda": 1,
    "-wavelength": 1,
    "-energy": 1,
    "-fluence": 1,
    "-distance": 1,
    "-pixel": 1,
    "-detpixels": 1,
    "-detpixels_f": 1,
    "-detpixels_x": 1,
    "-detpixels_s": 1,
    "-detpixels_y": 1,
    "-detsize": 1,
    "-detsize_f": 1,
    "-detsize_s": 1,
    "-Xbeam": 1,
    "-Ybeam": 1,
    "-ORGX": 1,
    "-ORGY": 1,
    "-pivot": 1,
    "-oversample": 1,
    "-phi": 1,
    "-osc": 1,
    "-phisteps": 1,
    "-polar": 1,
    "-fudge": 1,
    "-twotheta": 1,
    "-detector_rotx": 1,
    "-detector_roty": 1,
    "-detector_rotz": 1,
    "-spindle_axis": 3,
    "-floatfile": 1,
    "-intfile": 1,
    "-scale": 1,
    "-noisefile": 1,  # the noise flags' meaning lives in braggsim.noise.nanobragg_noise_options
    "-noiseimage": 1,
    "-seed": 1,
    "-adc": 1,
    "-dtype": 1,
    "-device": 1,
}
_SWITCHES = {
    "-nopolar",
    "-round_xtal",
    "-square_xtal",
    "-gauss_xtal",
    "-tophat_spots",
    "-point_pixel",
    "-oversample_omega",
    "-oversample_polar",
    "-interpolate",
    "-nointerpolate",
    "-xds",
    "-mosflm",
    "-dials",
    "-adxv",
    "-denzo",
    "-nonoise",
    "-nopgm",
    "-noprogress",
}
_CONVENTION_SWITCHES = {"-xds": "xds", "-mosflm": "mosflm", "-dials": "dials", "-adxv": "adxv", "-denzo": "denzo"}
_SHAPE_SWITCHES = {"-round_xtal": "round", "-square_xtal": "square", "-gauss_xtal": "gauss", "-tophat_spots": "tophat"}
SUPPORTED_FLAGS = tuple(sorted(set(_VALUE_FLAGS) | _SWITCHES))


def split_flags(argv: list[str], extra_value_flags: dict | None = None) -> dict:
    """argv -> {flag: [values]} (switches map to []); unknown flags raise ValueError."""
    value_flags = dict(_VALUE_FLAGS, **(extra_value_flags or {}))
    found: dict = {}
    i = 0
    while i < len(argv):
        flag = argv[i]
        if flag in _SWITCHES:
            found[flag] = []
            i += 1
            continue
        if flag not in value_flags:
            if flag.startswith("-"):
                raise ValueError(f"unsupported flag {flag!r} (braggsim never ignores a flag; see --help)")
            raise ValueError(f"unexpected argument {flag!r}: every value must follow its flag")
        count = value_flags[flag]
        values = argv[i + 1 : i + 1 + count]
        if len(values) < count or any(v.startswith("-") and not _is_number(v) for v in values):
            raise ValueError(f"flag {flag} takes {count} value(s), got {values!r}")
        found[flag] = values
        i += 1 + count
    return found


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _float(found, flag, default=None):
    if flag not in found:
        return default
    try:
        return float(found[flag][0])
    except ValueError:
        raise ValueError(f"flag {flag} needs a number, got {found[flag][0]!r}") from None


def _floats(found, flag):
    try:
        return tuple(float(x) for x in found[flag])
    except ValueError:
        raise ValueError(f"flag {flag} needs numbers, got {found[flag]!r}") from None


def _int(found, flag, default=None):
    value = _float(found, flag, None)
    if value is None:
        return default
    if value != int(value):
        raise ValueError(f"flag {flag} needs an integer, got {found[flag][0]!r}")
    return int(value)


def parse_flags(argv: list[str], extra_value_flags: dict | None = None) -> FlagSet:
    """Build the model from nanoBragg flags (see module docstring)."""
    found = split_flags(list(argv), extra_value_flags)
    if "-cell" not in found and "-mat" not in found:
        raise ValueError("give the unit cell with -cell a b c alpha beta gamma (or a -mat file)")
    if "-hkl" not in found and _float(found, "-default_F", 0.0) == 0.0:
        raise ValueError("give structure factors with -hkl FILE or -default_F F")

    wavelength = _float(found, "-lambda", _float(found, "-wavelength", 1.0))
    if "-energy" in found:
        energy = _float(found, "-energy")
        if energy <= 0:
            raise ValueError(f"-energy must be > 0 eV, got {energy!r}")
        wavelength = HC_EV_A / energy

    n_all = _float(found, "-N", 1.0)
    n_cells = tuple(_float(found, f, n_all) for f in ("-Na", "-Nb", "-Nc"))
    shape = "square"
    for switch, name in _SHAPE_SWITCHES.items():
        if switch in found:
            shape = name
    interpolate = None
    if "-interpolate" in found:
        interpolate = True
    if "-nointerpolate" in found:
        interpolate = False
    seed = _int(found, "-mosaic_seed", DEFAULT_MOSAIC_SEED)
    if abs(seed) >= 2**31:
        # nanoBragg reads the seed into a C int; larger values would not mean the same seed
        raise ValueError(f"-mosaic_seed must fit a 32-bit integer, got {found['-mosaic_seed'][0]!r}")
    scale = _float(found, "-scale")
    if scale is not None and not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"-scale must be a positive number, got {found['-scale'][0]!r}")
    mosaic = _float(found, "-mosaic", 0.0)
    domains = _int(found, "-mosaic_dom", _int(found, "-mosaic_domains", None))
    crystal = Crystal(
        cell=_floats(found, "-cell") if "-cell" in found else (1, 1, 1, 90, 90, 90),
        mosflm_matrix=found["-mat"][0] if "-mat" in found else None,
        matrix_wavelength_A=wavelength if "-mat" in found else None,
        N_cells=n_cells,
        default_F=_float(found, "-default_F", 0.0),
        hkl=found["-hkl"][0] if "-hkl" in found else None,
        misset_deg=_floats(found, "-misset") if "-misset" in found else (0.0, 0.0, 0.0),
        mosaic_spread_deg=mosaic,
        mosaic_domains=domains,
        mosaic_seed=seed,
        shape=shape,
        phi_start_deg=_float(found, "-phi", 0.0),
        osc_deg=_float(found, "-osc", 0.0),
        phi_steps=_int(found, "-phisteps", None),
        spindle_axis=_floats(found, "-spindle_axis") if "-spindle_axis" in found else None,
        interpolate=interpolate,
        fudge=_float(found, "-fudge", 1.0),
    )

    pixel = _float(found, "-pixel", 0.1)
    if not (math.isfinite(pixel) and pixel > 0):
        raise ValueError(f"-pixel must be > 0 mm, got {found['-pixel'][0]!r}")  # before dividing by it
    fpixels = _int(found, "-detpixels", None)
    spixels = fpixels
    size = _float(found, "-detsize", None)
    size_f = _float(found, "-detsize_f", size)
    size_s = _float(found, "-detsize_s", size)
    for flag, value in (("-detsize", size), ("-detsize_f", size_f), ("-detsize_s", size_s)):
        # a zero size would otherwise fall back to the 1024-pixel default unnoticed
        if flag in found and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{flag} must be > 0 mm, got {found[flag][0]!r}")
    fpixels = _int(found, "-detpixels_f", _int(found, "-detpixels_x", fpixels))
    spixels = _int(found, "-detpixels_s", _int(found, "-detpixels_y", spixels))
    if fpixels is None:
        fpixels = int(round(size_f / pixel)) if size_f else 1024
    if spixels is None:
        spixels = int(round(size_s / pixel)) if size_s else fpixels
    convention = "mosflm"
    for switch, name in _CONVENTION_SWITCHES.items():
        if switch in found:
            convention = name
    x_beam, y_beam = _float(found, "-Xbeam"), _float(found, "-Ybeam")
    beam_center = None
    if x_beam is not None or y_beam is not None:
        probe = Detector(fpixels=fpixels, spixels=spixels, pixel_size_mm=pixel, convention=convention)
        default_x, default_y = probe.default_beam_center_mm()
        beam_center = (x_beam if x_beam is not None else default_x, y_beam if y_beam is not None else default_y)
    pivot = found["-pivot"][0].lower() if "-pivot" in found else None
    detector = Detector(
        fpixels=fpixels,
        spixels=spixels,
        pixel_size_mm=pixel,
        distance_mm=_float(found, "-distance", 100.0),
        beam_center_mm=beam_center,
        convention=convention,
        rotation_deg=tuple(_float(found, f"-detector_rot{a}", 0.0) for a in "xyz"),
        twotheta_deg=_float(found, "-twotheta", 0.0),
        oversample=_int(found, "-oversample", None),
        point_pixel="-point_pixel" in found,
        pivot=pivot,
        orgx_px=_float(found, "-ORGX"),
        orgy_px=_float(found, "-ORGY"),
        oversample_omega="-oversample_omega" in found,
        oversample_polar="-oversample_polar" in found,
    )
    beam = Beam(
        wavelength_A=wavelength,
        fluence=_float(found, "-fluence", Beam().fluence),
        polarization=_float(found, "-polar", 0.0),
        nopolar="-nopolar" in found,
    )
    dtype = found.get("-dtype", ["float32"])[0]
    if dtype not in ("float32", "float64"):
        raise ValueError(f"-dtype must be float32 or float64, got {dtype!r}")
    extra = {k: v for k, v in found.items() if extra_value_flags and k in extra_value_flags}
    return FlagSet(
        crystal,
        detector,
        beam,
        floatfile=found.get("-floatfile", [None])[0],
        intfile=found.get("-intfile", [None])[0],
        intfile_scale=scale,
        dtype=dtype,
        device=found.get("-device", ["cpu"])[0],
        extra=extra,
    )
