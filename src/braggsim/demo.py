"""The refinement demo's problem: one public source for its truth, start and frame.

A 64x64 still of a 100 A cubic cell (N = 5, 5 mosaic domains, mosaic_seed 42, fluence
1e28, 1 A, 100 mm, 0.1 mm pixels), the setting of nanoBragg's golden case
p02_seed_truth.  ``braggsim demo``, the tests, the benchmarks and the napari sample
all take it from here.

DEMO_VALUES: the truth as a flat {name: value} dict (refinable parameters under their
registry names, plus the fixed settings); DEMO_TRUTH / DEMO_START: the refined
parameters' true and starting values.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "DATA_DIR",
    "DEMO_START",
    "DEMO_TRUTH",
    "DEMO_VALUES",
    "demo_flags",
    "demo_model",
    "demo_observed",
    "demo_values",
]

DATA_DIR = Path(__file__).with_name("data")

# duplicates: napari_braggsim._model.DEFAULTS repeats these values on purpose (a widget must
# not import torch, which braggsim does, on the GUI thread); a test keeps the two equal
DEMO_VALUES: dict = {
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
    "beam_x_mm": 3.25,  # nanoBragg's MOSFLM default for this detector
    "beam_y_mm": 3.25,
    "wavelength_A": 1.0,
    "fluence": 1e28,
}
CELL_NAMES = ("cell_a_A", "cell_b_A", "cell_c_A", "cell_alpha_deg", "cell_beta_deg", "cell_gamma_deg")
DEMO_TRUTH: dict = {
    name: DEMO_VALUES[name] for name in ("mosaic_spread_deg", "misset_x_deg", "misset_y_deg", "misset_z_deg")
}
# the start: the truth with a wrong mosaic spread and no misset
DEMO_START: dict = {"mosaic_spread_deg": 0.2, "misset_x_deg": 0.0, "misset_y_deg": 0.0, "misset_z_deg": 0.0}


def demo_values(start: bool = False) -> dict:
    """A copy of the demo's flat value dict: the truth, or with ``start`` the starting model."""
    return {**DEMO_VALUES, **(DEMO_START if start else {})}


def demo_flags(start: bool = True) -> list[str]:
    """nanoBragg's flags for the demo's starting model (or, ``start=False``, its truth),
    as ``braggsim simulate`` and ``braggsim refine`` take them."""
    v = demo_values(start)
    flags = ["-cell", *(f"{v[n]:g}" for n in CELL_NAMES), "-default_F", f"{v['default_F']:g}"]
    flags += ["-N", f"{v['N_a']:g}", "-lambda", f"{v['wavelength_A']:g}", "-distance", f"{v['distance_mm']:g}"]
    flags += ["-pixel", f"{v['pixel_size_mm']:g}", "-detpixels", f"{v['fpixels']}"]
    flags += ["-mosaic", f"{v['mosaic_spread_deg']:g}", "-mosaic_dom", f"{v['mosaic_domains']}"]
    flags += ["-mosaic_seed", f"{v['mosaic_seed']}", "-fluence", f"{v['fluence']:g}"]
    misset = [f"{v[f'misset_{a}_deg']:g}" for a in "xyz"]
    return flags + (["-misset", *misset] if any(m != "0" for m in misset) else [])


def demo_model(misset_deg=(0.0, 0.0, 0.0), mosaic_spread_deg=0.2):
    """The demo problem's (Crystal, Detector, Beam) with the given misset and spread."""
    from .beam import Beam
    from .crystal import Crystal
    from .detector import Detector

    values = DEMO_VALUES
    crystal = Crystal(
        cell=(100, 100, 100, 90, 90, 90),
        N_cells=(5, 5, 5),
        default_F=100,
        misset_deg=tuple(misset_deg),
        mosaic_spread_deg=mosaic_spread_deg,
        mosaic_domains=values["mosaic_domains"],
        mosaic_seed=values["mosaic_seed"],
    )
    detector = Detector(
        fpixels=values["fpixels"],
        spixels=values["spixels"],
        pixel_size_mm=values["pixel_size_mm"],
        distance_mm=100,
    )
    beam = Beam(wavelength_A=values["wavelength_A"], fluence=values["fluence"])
    return crystal, detector, beam


def demo_observed(source: str = "braggsim", dtype=None):
    """The demo's observed frame, (64, 64) float64: simulated by braggsim from the truth,
    or nanoBragg's own image of it (``source="nanobragg"``, golden case p02)."""
    import numpy as np
    import torch

    from .simulate import simulate

    if source == "nanobragg":
        return np.fromfile(DATA_DIR / "p02_seed_truth.bin", "<f4").reshape(64, 64).astype(np.float64)
    if source != "braggsim":
        raise ValueError(f"source must be 'braggsim' or 'nanobragg', got {source!r}")
    crystal, detector, beam = demo_model(
        tuple(DEMO_TRUTH[f"misset_{a}_deg"] for a in "xyz"), DEMO_TRUTH["mosaic_spread_deg"]
    )
    with torch.no_grad():
        return simulate(crystal, detector, beam, dtype=dtype or torch.float64).numpy()
