"""Field specs: every number a widget shows, declared once with its unit, range, step,
decimals, meaning and the nanoBragg flag it maps to; and the one helper that turns a
spec into a magicgui field.

The widgets build their fields from these lists and never from literals of their own, so
a step size or a number of decimals cannot drift between two widgets.  When the core's
parameter registry (``braggsim.refine`` parameters) lands, the refinable entries here are
generated from it; the rest (detector size, seeds, fluence) stay plugin-only.

No Qt here: magicgui is imported when a field is made.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """One number in the model.

    name: the flat model name (``_model`` and the refinement engine speak it).
    label: short text shown beside the field; unit: shown in brackets ("" for none).
    low, high: the field's range; step: one arrow click; decimals: None = integer field,
    -1 = free text in scientific notation (quantities like 1e28 that no spin box holds).
    meaning: one sentence for the tooltip; flag: the nanoBragg flag ("" if none).
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

    @property
    def text(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit else self.label

    @property
    def tooltip(self) -> str:
        lines = [self.meaning]
        if self.unit:
            lines.append(f"Unit: {self.unit}.")
        if self.decimals == -1:
            lines.append(f"Range {self.low:g} to {self.high:g}.")
        else:
            lines.append(f"Range {self.low:g} to {self.high:g}, step {self.step:g}.")
        lines.append(f"nanoBragg flag: {self.flag}" if self.flag else "No nanoBragg flag (braggsim only).")
        return "\n".join(lines)

    def clip(self, value: float) -> float:
        """``value`` inside [low, high]; an angle outside a +-180 deg (or wider) range
        wraps into [-180, 180) instead (a misset angle is periodic)."""
        value = float(value)
        if self.low <= value <= self.high:
            return value
        if self.unit == "deg" and self.low <= -180 and self.high >= 180 and math.isfinite(value):
            return (value + 180.0) % 360.0 - 180.0
        return min(max(value, self.low), self.high)


def _specs(*specs: FieldSpec) -> dict:
    return {spec.name: spec for spec in specs}


_ANGLE = "Rotation of the crystal about the lab {axis} axis, applied x then y then z (nanoBragg's misset)."
_CELL_EDGE = "Unit-cell edge {edge}."
_CELL_ANGLE = "Unit-cell angle {angle}."
_N = "Crystal size along {axis}, in unit cells; spots get narrower as it grows."

# the crystal, detector and beam of the model, in the order the Simulate widget shows them
MODEL_FIELDS = _specs(
    FieldSpec("cell_a_A", "a", "Å", 1.0, 10000.0, 0.5, 3, _CELL_EDGE.format(edge="a"), "-cell a b c α β γ"),
    FieldSpec("cell_b_A", "b", "Å", 1.0, 10000.0, 0.5, 3, _CELL_EDGE.format(edge="b"), "-cell a b c α β γ"),
    FieldSpec("cell_c_A", "c", "Å", 1.0, 10000.0, 0.5, 3, _CELL_EDGE.format(edge="c"), "-cell a b c α β γ"),
    FieldSpec("cell_alpha_deg", "α", "deg", 1.0, 179.0, 0.5, 3, _CELL_ANGLE.format(angle="α"), "-cell a b c α β γ"),
    FieldSpec("cell_beta_deg", "β", "deg", 1.0, 179.0, 0.5, 3, _CELL_ANGLE.format(angle="β"), "-cell a b c α β γ"),
    FieldSpec("cell_gamma_deg", "γ", "deg", 1.0, 179.0, 0.5, 3, _CELL_ANGLE.format(angle="γ"), "-cell a b c α β γ"),
    FieldSpec("N_a", "N_a", "cells", 1.0, 1000.0, 1.0, 2, _N.format(axis="a"), "-Na"),
    FieldSpec("N_b", "N_b", "cells", 1.0, 1000.0, 1.0, 2, _N.format(axis="b"), "-Nb"),
    FieldSpec("N_c", "N_c", "cells", 1.0, 1000.0, 1.0, 2, _N.format(axis="c"), "-Nc"),
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
    FieldSpec("misset_x_deg", "misset x", "deg", -360.0, 360.0, 0.5, 3, _ANGLE.format(axis="x"), "-misset x y z"),
    FieldSpec("misset_y_deg", "misset y", "deg", -360.0, 360.0, 0.5, 3, _ANGLE.format(axis="y"), "-misset x y z"),
    FieldSpec("misset_z_deg", "misset z", "deg", -360.0, 360.0, 0.5, 3, _ANGLE.format(axis="z"), "-misset x y z"),
    FieldSpec(
        "mosaic_spread_deg",
        "mosaic spread",
        "deg",
        0.0,
        90.0,
        0.05,
        3,
        "Spread of the mosaic domains' orientations; spots stretch along arcs as it grows.",
        "-mosaic",
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
        "distance_mm",
        "distance",
        "mm",
        0.1,
        10000.0,
        1.0,
        2,
        "Sample to detector distance along the beam.",
        "-distance",
    ),
    FieldSpec(
        "beam_x_mm",
        "beam Xbeam",
        "mm",
        -1000.0,
        1000.0,
        0.05,
        4,
        "Direct-beam position along the slow axis from the first pixel's centre (MOSFLM convention); "
        "while it sits at nanoBragg's default it follows a change of detector size.",
        "-Xbeam",
    ),
    FieldSpec(
        "beam_y_mm",
        "beam Ybeam",
        "mm",
        -1000.0,
        1000.0,
        0.05,
        4,
        "Direct-beam position along the fast axis from the first pixel's centre (MOSFLM convention); "
        "while it sits at nanoBragg's default it follows a change of detector size.",
        "-Ybeam",
    ),
    FieldSpec("wavelength_A", "wavelength", "Å", 0.01, 100.0, 0.001, 5, "X-ray wavelength.", "-lambda"),
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
)
SECTIONS = {
    "Crystal": [name for name in MODEL_FIELDS if name.startswith(("cell_", "N_", "default_F", "misset_", "mosaic_"))],
    "Detector": ["fpixels", "spixels", "pixel_size_mm", "distance_mm", "beam_x_mm", "beam_y_mm"],
    "Beam": ["wavelength_A", "fluence"],
}

SCALE = FieldSpec(
    "scale",
    "scale",
    "×",
    1e-6,
    1e6,
    0.1,
    5,
    "Overall factor on the predicted image (refined; applying it multiplies the fluence).",
)
# refinement groups -> the parameters each refines, in the Refine widget's order
GROUPS = {
    "mosaic": ["mosaic_spread_deg"],
    "misset": ["misset_x_deg", "misset_y_deg", "misset_z_deg"],
    "cell": ["cell_a_A", "cell_b_A", "cell_c_A", "cell_alpha_deg", "cell_beta_deg", "cell_gamma_deg"],
    "N": ["N_a", "N_b", "N_c"],
    "distance": ["distance_mm"],
    "beam_center": ["beam_x_mm", "beam_y_mm"],
    "scale": ["scale"],
}
DEFAULT_GROUPS = ("mosaic", "misset")
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


def spec(name: str) -> FieldSpec:
    """The spec of any model or refinement name; KeyError for an unknown one."""
    if name == "scale":
        return SCALE
    return MODEL_FIELDS[name] if name in MODEL_FIELDS else REFINE_OPTIONS[name]


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
    """A magicgui field for ``field`` holding ``value``, with its tooltip: a SpinBox for an
    integer, a FloatSpinBox with the spec's decimals, or a LineEdit for -1 decimals."""
    from magicgui.widgets import FloatSpinBox, LineEdit, SpinBox

    text = label if label is not None else field.text
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
    """The number a field holds; ValueError naming the field for unreadable free text."""
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
    if field.decimals is None:
        widget.value = int(round(field.clip(value)))
    elif field.decimals == -1:
        widget.value = f"{float(value):g}"
    else:
        widget.value = field.clip(value)
