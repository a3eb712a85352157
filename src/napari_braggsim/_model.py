"""The plugin's flat model description: a dict of named values <-> braggsim objects.

Every widget speaks the same flat names, which are also the refinement engine's
parameter names (``misset_x_deg``, ``beam_x_mm`` ...), so refined values apply to the
Simulate widget by name.  Layer metadata carries:

* ``braggsim_frame``: the geometry a frame's header gives (distance_mm, pixel_size_mm,
  wavelength_A, beam_center_mm as (Xbeam, Ybeam) MOSFLM, any may be None);
* ``braggsim_model``: a full value dict (the model that simulated the layer);
* ``braggsim_start``: a full value dict to start a refinement from.

torch is imported only when objects are built.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

# the refinement demo's ground truth (nanoBragg golden case p02_seed_truth).  The same
# values as braggsim.demo.DEMO_VALUES / DEMO_START (a test keeps them equal): an intended
# copy, because importing braggsim imports torch (3 s), which a widget must not do on the
# GUI thread when it docks.
DEFAULTS: dict = {
    "cell_a_A": 100.0,
    "cell_b_A": 100.0,
    "cell_c_A": 100.0,
    "cell_alpha_deg": 90.0,
    "cell_beta_deg": 90.0,
    "cell_gamma_deg": 90.0,
    "N_a": 5.0,
    "N_b": 5.0,
    "N_c": 5.0,
    "default_F": 100.0,
    "misset_x_deg": 5.0,
    "misset_y_deg": 3.0,
    "misset_z_deg": -2.0,
    "mosaic_spread_deg": 0.8,
    "mosaic_domains": 5,
    "mosaic_seed": 42,
    "fpixels": 64,
    "spixels": 64,
    "pixel_size_mm": 0.1,
    "distance_mm": 100.0,
    "beam_x_mm": 3.25,
    "beam_y_mm": 3.25,
    "wavelength_A": 1.0,
    "fluence": 1e28,
}
# the demo's starting model: the truth with a wrong mosaic spread and no misset
START_CHANGES: dict = {"mosaic_spread_deg": 0.2, "misset_x_deg": 0.0, "misset_y_deg": 0.0, "misset_z_deg": 0.0}
# what makes a frame realistic (the Simulate widget's collapsed sections): beam divergence
# and bandwidth, a thick sensor, amorphous background and detector noise.  All off, so the
# demo's image is unchanged; the numbers behind a switch are nanoBragg's and noisify's
# usual values, ready when it is switched on.
SCENE_DEFAULTS: dict = {
    "divergence_h_mrad": 0.0,
    "divergence_v_mrad": 0.0,
    "divergence_steps": 3,
    "dispersion_pct": 0.0,
    "dispersion_steps": 3,
    "sensor_on": False,
    "sensor_thickness_um": 450.0,
    "sensor_attenuation_um": 450.0,
    "sensor_layers": 2,
    "water_um": 0.0,
    "air_mm": 0.0,
    "beam_size_mm": 0.1,
    "noise_on": False,
    "noise_seed": 1,
    "readout_noise_adu": 0.0,
    "psf": "none",
    "psf_fwhm_um": 46.0,
}
VALUE_DEFAULTS: dict = {**DEFAULTS, **SCENE_DEFAULTS}  # every value the plugin's model holds

INT_KEYS = (
    "mosaic_domains",
    "mosaic_seed",
    "fpixels",
    "spixels",
    "divergence_steps",
    "dispersion_steps",
    "sensor_layers",
    "noise_seed",
)
BOOL_KEYS = ("sensor_on", "noise_on")
TEXT_KEYS = ("psf",)
PSF_CHOICES = ("none", "gauss", "fiber")
# nonBragg's air (the n02 golden case's material): density g/cm^3 and molecular weight g/mol
AIR_DENSITY_G_CM3 = 0.0012
AIR_MOLECULAR_WEIGHT = 29.0
CELL_KEYS = ("cell_a_A", "cell_b_A", "cell_c_A", "cell_alpha_deg", "cell_beta_deg", "cell_gamma_deg")
GEOMETRY_KEYS = ("distance_mm", "pixel_size_mm", "wavelength_A", "beam_x_mm", "beam_y_mm", "fpixels", "spixels")


def start_values() -> dict:
    return {**DEFAULTS, **START_CHANGES}


def complete(values: Mapping) -> dict:
    """VALUE_DEFAULTS overlaid with ``values`` (unknown keys dropped), ints as ints,
    switches as bools, texts as str."""
    out = dict(VALUE_DEFAULTS)
    out.update({k: values[k] for k in values if k in VALUE_DEFAULTS})
    for key in INT_KEYS:
        out[key] = int(round(float(out[key])))
    for key in BOOL_KEYS:
        out[key] = bool(out[key])
    for key in TEXT_KEYS:
        out[key] = str(out[key])
    return out


def _refuse(name: str, value, bound: str, condition: str = "") -> ValueError:
    """ "<label> must be <bound> <unit><condition> (<flag>), got <value> <unit>": a
    ValueError naming the field, its unit and its flag (no Qt, no torch)."""
    from ._fields import PLUGIN_FIELDS

    field = PLUGIN_FIELDS[name]
    if field.kind == "number":
        unit = f" {field.unit}" if field.unit else ""
        shown = f"{float(value):g}{unit}"
    else:
        unit, shown = "", repr(value)
    return ValueError(f"{field.label} must be {bound}{unit}{condition} ({field.flag}), got {shown}")


def check_scene(values: Mapping) -> dict:
    """The completed value dict, its beam, sensor, background and noise values checked:
    ValueError naming the field, its unit and flag for a value outside its range, a zero
    step count, or a zero thickness, attenuation length or PSF width where it is used.
    Cheap and torch-free (the GUI calls it before starting a simulation)."""
    from ._fields import PLUGIN_FIELDS

    v = complete(values)
    for name in ("divergence_steps", "dispersion_steps"):
        if v[name] < 1:
            raise _refuse(name, v[name], "at least 1")
    for name in SCENE_DEFAULTS:
        field = PLUGIN_FIELDS[name]
        value = v[name]
        if field.kind == "choice" and value not in field.choices:
            raise _refuse(name, value, "one of " + ", ".join(field.choices))
        if field.kind != "number":
            continue
        if not (math.isfinite(float(value)) and field.low <= float(value) <= field.high):
            raise _refuse(name, value, f"between {field.low:g} and {field.high:g}")
    if v["sensor_on"]:
        for name in ("sensor_thickness_um", "sensor_attenuation_um"):
            if not v[name] > 0:
                raise _refuse(name, v[name], "above 0", " with the thick sensor on")
        if v["sensor_layers"] < 1:
            raise _refuse("sensor_layers", v["sensor_layers"], "at least 1", " with the thick sensor on")
    if v["noise_on"] and v["psf"] != "none" and not v["psf_fwhm_um"] > 0:
        raise _refuse("psf_fwhm_um", v["psf_fwhm_um"], "above 0", f" with a {v['psf']} PSF")
    return v


def source_options(v: Mapping) -> dict:
    """``braggsim.Beam`` keyword arguments for the divergence and bandwidth of a checked
    value dict: a grid only along a range above 0, with at least 2 points across it
    (nanoBragg's rule for a range with a step count); {} for a parallel, single-wavelength beam."""
    options: dict = {}
    ranges = (float(v["divergence_h_mrad"]), float(v["divergence_v_mrad"]))
    if any(r > 0 for r in ranges):
        steps = max(2, int(v["divergence_steps"]))
        options["divergence_mrad"] = ranges
        options["divergence_steps"] = tuple(steps if r > 0 else 1 for r in ranges)
    if float(v["dispersion_pct"]) > 0:
        options["dispersion_pct"] = float(v["dispersion_pct"])
        options["dispersion_steps"] = max(2, int(v["dispersion_steps"]))
    return options


def sensor_options(v: Mapping) -> dict:
    """``braggsim.Detector`` keyword arguments for the sensor ({} with it off)."""
    if not v["sensor_on"]:
        return {}
    return {
        "sensor_thickness_um": float(v["sensor_thickness_um"]),
        "sensor_attenuation_um": float(v["sensor_attenuation_um"]),
        "sensor_layers": int(v["sensor_layers"]),
    }


def build_model(values: Mapping):
    """(Crystal, Detector, Beam) from a value dict, the beam's divergence and bandwidth and
    the sensor included; ValueError names any bad value."""
    import braggsim

    v = check_scene(values)
    crystal = braggsim.Crystal(
        cell=tuple(float(v[k]) for k in CELL_KEYS),
        N_cells=(float(v["N_a"]), float(v["N_b"]), float(v["N_c"])),
        default_F=float(v["default_F"]),
        misset_deg=(float(v["misset_x_deg"]), float(v["misset_y_deg"]), float(v["misset_z_deg"])),
        mosaic_spread_deg=float(v["mosaic_spread_deg"]),
        mosaic_domains=v["mosaic_domains"],
        mosaic_seed=v["mosaic_seed"],
    )
    detector = braggsim.Detector(
        fpixels=v["fpixels"],
        spixels=v["spixels"],
        pixel_size_mm=float(v["pixel_size_mm"]),
        distance_mm=float(v["distance_mm"]),
        beam_center_mm=(float(v["beam_x_mm"]), float(v["beam_y_mm"])),
        **sensor_options(v),
    )
    beam = braggsim.Beam(wavelength_A=float(v["wavelength_A"]), fluence=float(v["fluence"]), **source_options(v))
    return crystal, detector, beam


def build_backgrounds(values: Mapping) -> list:
    """The amorphous materials in the beam, as ``braggsim.AmorphousBackground`` (empty
    with no water and no air):

    * water: a cube of ``water_um`` (``-water``), clipped to the beam size across the beam,
      1 g/cm^3, 18 g/mol (as ``braggsim simulate -water`` builds it);
    * air: ``air_mm`` along the beam, one beam size across, at nonBragg's air density and
      molecular weight (``braggsim nonbragg -stol air -thickness``).
    """
    from braggsim import AmorphousBackground

    v = check_scene(values)
    beam_size_mm = float(v["beam_size_mm"])
    materials = []
    if v["water_um"] > 0:
        edge_mm = float(v["water_um"]) / 1000.0
        across_mm = min(edge_mm, beam_size_mm)
        materials.append(AmorphousBackground("water", thickness_mm=edge_mm, width_mm=across_mm, height_mm=across_mm))
    if v["air_mm"] > 0:
        materials.append(
            AmorphousBackground(
                "air",
                thickness_mm=float(v["air_mm"]),
                width_mm=beam_size_mm,
                height_mm=beam_size_mm,
                density_g_cm3=AIR_DENSITY_G_CM3,
                molecular_weight=AIR_MOLECULAR_WEIGHT,
            )
        )
    return materials


def build_noise(values: Mapping):
    """noisify's ``braggsim.noise.DetectorModel`` for the noise values (noisify's defaults
    for gain, ADC offset and calibration error), or None with the noise off."""
    v = check_scene(values)
    if not v["noise_on"]:
        return None
    from braggsim.noise import DetectorModel

    return DetectorModel(
        readout_noise_adu=float(v["readout_noise_adu"]),
        psf=None if v["psf"] == "none" else v["psf"],
        psf_fwhm_um=float(v["psf_fwhm_um"]),
    )


def default_beam_center_mm(fpixels: int, spixels: int, pixel_size_mm: float) -> tuple:
    """nanoBragg's MOSFLM default (Xbeam, Ybeam), mm, as ``braggsim.Detector`` sets it."""
    from braggsim import Detector

    detector = Detector(fpixels=int(fpixels), spixels=int(spixels), pixel_size_mm=float(pixel_size_mm))
    return tuple(float(x) for x in detector.default_beam_center_mm())


def frame_metadata(values: Mapping) -> dict:
    """The ``braggsim_frame`` geometry entry for a value dict (as ``Frame.metadata`` has it)."""
    v = complete(values)
    return {
        "shape": [v["spixels"], v["fpixels"]],
        "distance_mm": float(v["distance_mm"]),
        "pixel_size_mm": float(v["pixel_size_mm"]),
        "wavelength_A": float(v["wavelength_A"]),
        "beam_center_mm": [float(v["beam_x_mm"]), float(v["beam_y_mm"])],
        "beam_center_convention": "mosflm",
    }


def follow_detector_centre(old: Mapping, new: Mapping) -> dict:
    """``new`` with the beam centre moved to the new detector's default when it sat at the
    old detector's default and the detector size or pixel changed (a user who resizes the
    detector expects the beam to stay in the middle); otherwise ``new`` unchanged."""
    out = dict(new)
    keys = ("fpixels", "spixels", "pixel_size_mm")
    if all(float(old[k]) == float(new[k]) for k in keys):
        return out
    if "beam_x_mm" in new and (new["beam_x_mm"], new["beam_y_mm"]) != (old["beam_x_mm"], old["beam_y_mm"]):
        return out  # the centre itself was changed too
    before = default_beam_center_mm(old["fpixels"], old["spixels"], old["pixel_size_mm"])
    if math.isclose(float(old["beam_x_mm"]), before[0], abs_tol=1e-9) and math.isclose(
        float(old["beam_y_mm"]), before[1], abs_tol=1e-9
    ):
        out["beam_x_mm"], out["beam_y_mm"] = default_beam_center_mm(
            new["fpixels"], new["spixels"], new["pixel_size_mm"]
        )
    return out


def clipped_to_fields(values: Mapping) -> tuple:
    """(values inside every field's range, ["what was changed and why", ...]); misset
    angles wrap into [-180, 180) (the same orientation), others are clipped."""
    from ._fields import format_value, model_fields

    fields = model_fields()
    out = dict(values)
    notes = []
    for key, value in values.items():
        field = fields.get(key)
        if field is None or value is None or field.kind != "number":
            continue
        inside = field.clip(float(value))
        if inside != float(value):
            how = "wrapped to" if field.unit == "deg" and field.low <= -180 else "clipped to"
            notes.append(
                f"{field.label} {format_value(key, float(value))} is outside "
                f"{field.low:g}..{field.high:g} {field.unit}: {how} {format_value(key, inside)}"
            )
            out[key] = inside
    return out, notes


def geometry_from_metadata(metadata: Mapping | None, shape=None) -> dict:
    """Value-dict entries from a layer's ``braggsim_frame`` metadata (and the image shape
    (slow, fast)); keys the header does not give are left out."""
    out: dict = {}
    frame = (metadata or {}).get("braggsim_frame") or {}
    for key in ("distance_mm", "pixel_size_mm", "wavelength_A"):
        if frame.get(key) is not None:
            out[key] = float(frame[key])
    if shape is not None:
        out["spixels"], out["fpixels"] = int(shape[-2]), int(shape[-1])
    center = frame.get("beam_center_mm")
    if center is not None and all(c is not None for c in center):
        out["beam_x_mm"], out["beam_y_mm"] = float(center[0]), float(center[1])
    elif "fpixels" in out and "pixel_size_mm" in out:
        out["beam_x_mm"], out["beam_y_mm"] = default_beam_center_mm(
            out["fpixels"], out["spixels"], out["pixel_size_mm"]
        )
    return out


def values_from_layer(metadata: Mapping | None, shape=None, base: Mapping | None = None) -> dict:
    """A full value dict for a layer: ``base`` (else DEFAULTS), then the layer's
    ``braggsim_model``, ``braggsim_start`` and header geometry, later ones winning."""
    metadata = metadata or {}
    out = complete(base or {})
    for key in ("braggsim_model", "braggsim_start"):
        out.update({k: v for k, v in (metadata.get(key) or {}).items() if k in VALUE_DEFAULTS})
    out.update(geometry_from_metadata(metadata, shape))
    return complete(out)


def apply_refined(values: Mapping, refined: Mapping) -> dict:
    """Refined parameters (engine names) merged into a value dict; the engine's overall
    ``scale`` multiplies the fluence, which scales the image the same way."""
    out = complete(values)
    for key, value in refined.items():
        if key == "scale":
            out["fluence"] = float(out["fluence"]) * float(value)
        elif key in out:
            out[key] = float(value)
    return complete(out)
