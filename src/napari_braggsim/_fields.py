"""Field specs: every number a widget shows, with its unit, range, step, decimals, meaning
and the nanoBragg flag it maps to; and the one helper that turns a spec into a magicgui
field (Simulate and Refine share it, so a step or a number of decimals cannot drift).

The refinable parameters' specs are generated from the core's registry,
``braggsim.refine.PARAMETERS`` (label, unit, GUI range, step, decimals, description), and
the Refine widget's groups from ``braggsim.refine.PARAMETER_GROUPS``: a parameter added
there appears in the widgets.  Only the model values nothing refines (detector size,
pixel size, mosaic domains and seed, default F, fluence) and the run options are declared
here.

``braggsim.refine`` imports torch (about 3 s).  The widgets therefore build their number
fields once the background warm-up has loaded it (``_warmup.core_ready()``); nothing here
imports it at module import.  No Qt here: magicgui is imported when a field is made.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """One number in the model.

    name: the flat model name (``_model`` and the refinement engine speak it).
    label: short text shown beside the field; unit: shown in brackets ("" for none).
    low, high: the field's range; step: one arrow click; decimals: None = integer field,
    -1 = free text in scientific notation (quantities like 1e28 that no spin box holds).
    meaning: one sentence for the tooltip; flag: the nanoBragg flag ("" if none), a
    companion program's ("noisify -seed", "nonBragg -stol air") or a braggsim command's
    option ("braggsim process --gain").
    choices: a switch (on/off, ``SWITCH``) or the texts of a choice; () for a number.
    """

    name: str
    label: str
    unit: str
    low: float
    high: float
    step: float
    decimals: int | None
    meaning: str
    flag: str = ""
    choices: tuple = ()

    @property
    def kind(self) -> str:
        """ "number", "switch" (a tick box) or "choice" (a drop-down of texts)."""
        if not self.choices:
            return "number"
        return "switch" if self.choices == SWITCH else "choice"

    @property
    def text(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit else self.label

    @property
    def tooltip(self) -> str:
        lines = [self.meaning]
        if self.unit:
            lines.append(f"Unit: {self.unit}.")
        if self.kind == "choice":
            lines.append(f"One of: {', '.join(self.choices)}.")
        elif self.kind == "number" and self.decimals == -1:
            lines.append(f"Range {self.low:g} to {self.high:g}.")
        elif self.kind == "number":
            lines.append(f"Range {self.low:g} to {self.high:g}, step {self.step:g}.")
        if not self.flag:
            lines.append("No nanoBragg flag (braggsim only).")
        elif self.flag.startswith("-"):
            lines.append(f"nanoBragg flag: {self.flag}")
        elif self.flag.startswith("braggsim "):  # a braggsim command's option (the Real still fields)
            lines.append(f"Command line: {self.flag}")
        elif self.flag.split(" ")[0] in COMPANIONS:
            program, _, flag = self.flag.partition(" ")
            lines.append(f"{program} flag: {flag} ({COMPANIONS[program]})")
        else:
            lines.append(f"Flag: {self.flag}")
        return "\n".join(lines)

    def clip(self, value: float) -> float:
        """``value`` inside [low, high]; an angle outside a +-180 deg (or wider) range
        wraps into [-180, 180) instead (a misset angle is periodic)."""
        if self.kind != "number":
            return value
        value = float(value)
        if self.low <= value <= self.high:
            return value
        if self.unit == "deg" and self.low <= -180 and self.high >= 180 and math.isfinite(value):
            return (value + 180.0) % 360.0 - 180.0
        return min(max(value, self.low), self.high)


SWITCH = (False, True)  # FieldSpec.choices of an on/off tick box
# nanoBragg's companion programs, whose flags some fields name ("noisify -seed")
COMPANIONS = {
    "noisify": "nanoBragg's detector-noise program; braggsim noisify",
    "nonBragg": "nanoBragg's amorphous-scattering program; braggsim nonbragg",
}


def _specs(*specs: FieldSpec) -> dict:
    return {spec.name: spec for spec in specs}


# the model values nothing refines (the registry has no entry for them)
PLUGIN_FIELDS = _specs(
    FieldSpec(
        "default_F",
        "default F",
        "e",
        0.0,
        1e6,
        10.0,
        2,
        "Structure-factor amplitude given to every reflection (no HKL file).",
        "-default_F",
    ),
    FieldSpec(
        "mosaic_domains",
        "mosaic domains",
        "",
        1,
        10000,
        1,
        None,
        "How many mosaic domains are summed (more: smoother arcs, slower).",
        "-mosaic_dom",
    ),
    FieldSpec(
        "mosaic_seed",
        "mosaic seed",
        "",
        -(2**31),
        2**31 - 1,
        1,
        None,
        "Seed of the random domain orientations (the same seed gives the same image).",
        "-mosaic_seed",
    ),
    FieldSpec("fpixels", "fast pixels", "px", 1, 8192, 1, None, "Detector width along the fast axis.", "-detpixels_f"),
    FieldSpec("spixels", "slow pixels", "px", 1, 8192, 1, None, "Detector height along the slow axis.", "-detpixels_s"),
    FieldSpec("pixel_size_mm", "pixel size", "mm", 0.001, 10.0, 0.001, 4, "Edge of one square pixel.", "-pixel"),
    FieldSpec(
        "fluence",
        "fluence",
        "photons/m²",
        0.0,
        1e40,
        0.0,
        -1,
        "Photons per square metre on the crystal; the image scales with it.",
        "-fluence",
    ),
    # what makes a frame realistic: beam divergence and bandwidth, the sensor, amorphous
    # background and detector noise (all off by default: _model.SCENE_DEFAULTS)
    FieldSpec(
        "divergence_h_mrad",
        "divergence h",
        "mrad",
        0.0,
        100.0,
        0.1,
        3,
        "Full horizontal range of incident directions, sampled by a grid of sources; 0 = a parallel beam.",
        "-hdivrange",
    ),
    FieldSpec(
        "divergence_v_mrad",
        "divergence v",
        "mrad",
        0.0,
        100.0,
        0.1,
        3,
        "Full vertical range of incident directions, sampled by a grid of sources; 0 = a parallel beam.",
        "-vdivrange",
    ),
    FieldSpec(
        "divergence_steps",
        "divergence steps",
        "",
        0,
        101,
        1,
        None,
        "Source directions across each divergence range above 0 (at least 2, as nanoBragg); the grid's "
        "corners outside the ellipse are dropped (nanoBragg's round divergence). More: smoother spots, slower.",
        "-divsteps",
    ),
    FieldSpec(
        "dispersion_pct",
        "bandwidth",
        "%",
        0.0,
        50.0,
        0.05,
        3,
        "Full spectral width delta-lambda/lambda, centred on the wavelength (an XFEL pulse spans about "
        "0.3 %); 0 = one wavelength.",
        "-dispersion",
    ),
    FieldSpec(
        "dispersion_steps",
        "bandwidth steps",
        "",
        0,
        101,
        1,
        None,
        "Wavelengths across the bandwidth when it is above 0 (at least 2, as nanoBragg).",
        "-dispsteps",
    ),
    FieldSpec(
        "sensor_on",
        "thick sensor (parallax, capture)",
        "",
        0,
        1,
        1,
        None,
        "Model the sensor's thickness: photons are absorbed through its depth (parallax, spots streak away "
        "from the beam) and a thin sensor lets some through. Off: every photon is absorbed at the surface "
        "(nanoBragg's default).",
        "-detector_thick",
        choices=SWITCH,
    ),
    FieldSpec(
        "sensor_thickness_um",
        "sensor thickness",
        "µm",
        0.0,
        10000.0,
        10.0,
        1,
        "Thickness of the sensor (a Pilatus has 450 µm of silicon); must be above 0 with the thick sensor on.",
        "-detector_thick",
    ),
    FieldSpec(
        "sensor_attenuation_um",
        "attenuation length",
        "µm",
        0.0,
        100000.0,
        10.0,
        1,
        "Depth over which the sensor absorbs all but 1/e of the photons (nanoBragg's default: the "
        "thickness); must be above 0 with the thick sensor on.",
        "-detector_abs",
    ),
    FieldSpec(
        "sensor_layers",
        "sensor layers",
        "",
        0,
        100,
        1,
        None,
        "Depth samples through the sensor (nanoBragg's default 2); at least 1 with the thick sensor on.",
        "-detector_thicksteps",
    ),
    FieldSpec(
        "water_um",
        "water",
        "µm",
        0.0,
        1000.0,
        0.1,
        3,
        "Edge of a cube of water around the crystal (clipped to the beam size across the beam), rendered "
        "from nonBragg's water table as nonBragg does (not nanoBragg.c's own -water, which is wrong); 0 = none.",
        "-water",
    ),
    FieldSpec(
        "air_mm",
        "air path",
        "mm",
        0.0,
        10000.0,
        1.0,
        1,
        "Length of air in the beam (0.0012 g/cm³, 29 g/mol, one beam size across), rendered from nonBragg's "
        "air table as nonBragg does; 0 = none.",
        "nonBragg -stol air -thickness",
    ),
    FieldSpec(
        "beam_size_mm",
        "beam size",
        "mm",
        0.001,
        100.0,
        0.01,
        3,
        "Edge of the square beam: the water and the air are clipped to it across the beam.",
        "-beamsize",
    ),
    FieldSpec(
        "noise_on",
        "detector noise",
        "",
        0,
        1,
        1,
        None,
        "Turn the photons into detector counts as noisify does: Poisson counting, its 3 % per-pixel "
        "calibration error, gain 1 ADU/photon and ADC offset 40 ADU (noisify's defaults), with the readout "
        "noise and PSF below. The image is then in ADU; the same seed gives the same image.",
        "noisify -noisefile",
        choices=SWITCH,
    ),
    FieldSpec(
        "noise_seed",
        "noise seed",
        "",
        -(2**31) + 1,
        2**31 - 1,
        1,
        None,
        "Seed of the noise draws: the same seed gives the same noisy image.",
        "noisify -seed",
    ),
    FieldSpec(
        "readout_noise_adu",
        "readout noise",
        "ADU",
        0.0,
        10000.0,
        0.5,
        2,
        "Gaussian readout noise (sigma) added to every pixel after the gain.",
        "noisify -readout_noise",
    ),
    FieldSpec(
        "psf",
        "PSF",
        "",
        0,
        0,
        0,
        None,
        "Point-spread function that spreads each pixel's photons over its neighbours: none, a Gaussian, "
        "or a fiber-optic taper's long-tailed one.",
        "noisify -psf",
        choices=("none", "gauss", "fiber"),
    ),
    FieldSpec(
        "psf_fwhm_um",
        "PSF FWHM",
        "µm",
        0.0,
        10000.0,
        5.0,
        1,
        "Full width at half maximum of the PSF (noisify's default 46 µm); must be above 0 with a PSF.",
        "noisify -psf_fwhm",
    ),
)
# the Simulate widget's sections, in order (registry names and plugin names mixed)
SECTIONS = {
    "Crystal": [
        "cell_a_A",
        "cell_b_A",
        "cell_c_A",
        "cell_alpha_deg",
        "cell_beta_deg",
        "cell_gamma_deg",
        "N_a",
        "N_b",
        "N_c",
        "default_F",
        "misset_x_deg",
        "misset_y_deg",
        "misset_z_deg",
        "mosaic_spread_deg",
        "mosaic_domains",
        "mosaic_seed",
    ],
    "Detector": ["fpixels", "spixels", "pixel_size_mm", "distance_mm", "beam_x_mm", "beam_y_mm"],
    "Beam": ["wavelength_A", "fluence"],
    "Beam divergence and bandwidth": [
        "divergence_h_mrad",
        "divergence_v_mrad",
        "divergence_steps",
        "dispersion_pct",
        "dispersion_steps",
    ],
    "Sensor": ["sensor_on", "sensor_thickness_um", "sensor_attenuation_um", "sensor_layers"],
    "Background (water, air)": ["water_um", "air_mm", "beam_size_mm"],
    "Noise": ["noise_on", "noise_seed", "readout_noise_adu", "psf", "psf_fwhm_um"],
}
# sections shown collapsed (a click on the title opens them): the realistic-frame extras
COLLAPSED_SECTIONS = ("Beam divergence and bandwidth", "Sensor", "Background (water, air)", "Noise")
DEFAULT_GROUPS = ("mosaic", "misset")
# the starting value of a refined parameter the model's values do not hold
REFINER_STARTS = {"scale": 1.0, "background": 0.0}
REFINE_OPTIONS = _specs(
    FieldSpec(
        "search_deg",
        "misset search step",
        "deg",
        0.0,
        30.0,
        0.5,
        2,
        "Before refining (auto optimizer), try the start misset shifted by -step, 0, +step on each refined "
        "axis and descend from the best; 0 turns the search off.",
        "braggsim refine --search-deg",
    ),
    FieldSpec(
        "iterations",
        "iterations (max)",
        "",
        1,
        100000,
        1,
        None,
        "Most optimizer iterations the run may take.",
        "braggsim refine --iterations",
    ),
)
# the Real still widget: the crystal the frame is indexed with (text fields, empty until
# given; ``_still.process_options`` reads them), the spot finder and the pixel refinement
CELL_FIELDS = _specs(
    *(
        FieldSpec(
            name,
            name if len(name) == 1 else {"alpha": "α", "beta": "β", "gamma": "γ"}[name],
            "Å" if len(name) == 1 else "deg",
            0.5 if len(name) == 1 else 1.0,
            10000.0 if len(name) == 1 else 179.0,
            0.1,
            -1,
            f"Unit-cell {'edge' if len(name) == 1 else 'angle'} {name} of the crystal on the frame (known, "
            "e.g. from the sample's literature); indexing searches orientations for this cell.",
            "braggsim process --cell",
        )
        for name in ("a", "b", "c", "alpha", "beta", "gamma")
    )
)
STILL_FIELDS = _specs(
    FieldSpec(
        "gain",
        "gain",
        "ADU/photon",
        0.01,
        1000.0,
        0.1,
        2,
        "Pixel value per photon: 1 for a photon-counting detector (Pilatus, Eiger); used by the spot "
        "finder's noise model and the Poisson likelihood.",
        "braggsim process --gain",
    ),
    FieldSpec(
        "sigma_strong",
        "sigma strong",
        "",
        0.5,
        100.0,
        0.5,
        1,
        "A strong pixel stands this many standard deviations above its 7 x 7 window's mean (DIALS' "
        "dispersion threshold).",
        "braggsim process --sigma-strong",
    ),
    FieldSpec(
        "sigma_background",
        "sigma background",
        "",
        0.5,
        100.0,
        0.5,
        1,
        "The window's variance must exceed Poisson noise by this many standard deviations (DIALS' "
        "dispersion threshold).",
        "braggsim process --sigma-background",
    ),
    FieldSpec(
        "min_spot_size",
        "min spot size",
        "px",
        1,
        1000,
        1,
        None,
        "Smallest spot, in pixels; smaller regions (a hot pixel is one) are dropped.",
        "braggsim process --min-spot-size",
    ),
    FieldSpec(
        "iterations",
        "iterations (max)",
        "",
        1,
        1000,
        1,
        None,
        "Most L-BFGS iterations of the refinement against the pixels.",
        "",
    ),
    FieldSpec(
        "max_reflections",
        "spots fitted",
        "",
        5,
        5000,
        10,
        None,
        "How many of the strongest indexed spots are fitted, each in a 9 x 9 pixel box with its own "
        "background plane and intensity (the time grows with it).",
        "",
    ),
)
_FLAG = re.compile(r"nanoBragg (-\w+)")


def from_parameter(parameter) -> FieldSpec:
    """A ``braggsim.refine.Parameter`` as a field spec (its description names the flag)."""
    flag = _FLAG.search(parameter.description)
    meaning = parameter.description[:1].upper() + parameter.description[1:]
    low, high = parameter.gui_range
    return FieldSpec(
        parameter.name,
        parameter.label,
        parameter.unit,
        float(low),
        float(high),
        float(parameter.gui_step),
        int(parameter.decimals),
        meaning.rstrip(".") + ".",
        flag.group(1) if flag else "",
    )


@functools.cache
def registry() -> dict:
    """{name: FieldSpec} of every refinable parameter, from ``braggsim.refine.PARAMETERS``.
    Imports torch: call it once ``_warmup.core_ready()``, never on a cold GUI thread."""
    from braggsim.refine import PARAMETERS

    return {name: from_parameter(parameter) for name, parameter in PARAMETERS.items()}


@functools.cache
def groups() -> dict:
    """{group: [parameter names]}, the Refine widget's tick boxes (``PARAMETER_GROUPS``)."""
    from braggsim.refine import PARAMETER_GROUPS

    return {group: list(names) for group, names in PARAMETER_GROUPS.items()}


def model_fields() -> dict:
    """{name: FieldSpec} of every model value, in the Simulate widget's order."""
    known = {**registry(), **PLUGIN_FIELDS}
    return {name: known[name] for names in SECTIONS.values() for name in names}


def spec(name: str) -> FieldSpec:
    """The spec of any model, refinement or option name; KeyError for an unknown one."""
    for table in (PLUGIN_FIELDS, REFINE_OPTIONS):
        if name in table:
            return table[name]
    return registry()[name]


def unit(name: str) -> str:
    try:
        return spec(name).unit
    except KeyError:
        return ""


def format_value(name: str, value: float) -> str:
    """A readout number with the field's decimals and unit: ``12.300 Å``."""
    try:
        field = spec(name)
    except KeyError:
        return f"{value:.6g}"
    if field.kind != "number":
        return str(value)
    if not math.isfinite(value):
        text = f"{value}"
    elif field.decimals is None:
        text = f"{int(round(value))}"
    elif field.decimals == -1 or abs(value) >= 1e6 or (value != 0 and abs(value) < 10**-field.decimals):
        text = f"{value:.4g}"
    else:
        text = f"{value:.{field.decimals}f}"
    return f"{text} {field.unit}" if field.unit and field.unit not in ("×", "cells") else text


def make_field(field: FieldSpec, value, label: str | None = None):
    """A magicgui field for ``field`` holding ``value``, with its tooltip: a CheckBox for a
    switch, a ComboBox for a choice, a SpinBox for an integer, a FloatSpinBox with the
    spec's decimals, or a LineEdit for -1 decimals."""
    from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, LineEdit, SpinBox

    text = label if label is not None else field.text
    if field.kind == "switch":
        # the text beside the box says what it switches; no label column
        return CheckBox(name=field.name, text=text, label="", value=bool(value), tooltip=field.tooltip)
    if field.kind == "choice":
        widget = ComboBox(name=field.name, label=text, choices=field.choices, value=str(value), tooltip=field.tooltip)
        widget.native.setMinimumWidth(90)
        return widget
    if field.decimals is None:
        widget = SpinBox(
            name=field.name,
            label=text,
            min=int(field.low),
            max=int(field.high),
            step=int(field.step),
            value=int(round(float(value))),
            tooltip=field.tooltip,
        )
    elif field.decimals == -1:
        widget = LineEdit(name=field.name, label=text, value=f"{float(value):g}", tooltip=field.tooltip)
    else:
        widget = FloatSpinBox(
            name=field.name, label=text, min=field.low, max=field.high, step=field.step, tooltip=field.tooltip
        )
        widget.native.setDecimals(field.decimals)  # before the value, so it is not rounded to 2 places
        widget.value = float(value)
    widget.native.setMinimumWidth(90)  # room for the widest value with its decimals
    return widget


def read_field(field: FieldSpec, widget) -> float | int:
    """The value a field holds (a number, or a switch's bool, or a choice's text);
    ValueError naming the field for unreadable free text."""
    if field.kind == "switch":
        return bool(widget.value)
    if field.kind == "choice":
        return str(widget.value)
    if field.decimals is None:
        return int(widget.value)
    if field.decimals == -1:
        try:
            number = float(str(widget.value).strip())
        except ValueError:
            raise ValueError(f"{field.label} must be a number in {field.unit}, got {widget.value!r}") from None
        if not (math.isfinite(number) and field.low <= number <= field.high):
            raise ValueError(f"{field.label} must be between {field.low:g} and {field.high:g}, got {widget.value!r}")
        return number
    return float(widget.value)


def write_field(field: FieldSpec, widget, value) -> None:
    """Show ``value`` in ``widget`` (clipped to the field's range)."""
    if field.kind == "switch":
        widget.value = bool(value)
    elif field.kind == "choice":
        widget.value = str(value) if str(value) in field.choices else field.choices[0]
    elif field.decimals is None:
        widget.value = int(round(field.clip(value)))
    elif field.decimals == -1:
        widget.value = f"{float(value):g}"
    else:
        widget.value = field.clip(value)
