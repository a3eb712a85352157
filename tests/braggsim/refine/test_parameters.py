"""The parameter registry: declarations, reading and applying values, cell constraints,
the new parameters (wavelength, background), and a part and target plugged in from outside."""

import math

import numpy as np
import pytest
import torch

from braggsim import Detector
from braggsim.demo import DEMO_TRUTH, demo_model, demo_observed
from braggsim.refine import (
    PARAMETER_GROUPS,
    PARAMETERS,
    PART_TYPES,
    Model,
    ModelPart,
    Parameter,
    ParameterSet,
    PixelTarget,
    Range,
    Refiner,
    default_parts,
)
from braggsim.refine.parameters import UnitCell
from braggsim.refine_cli import REFINE_HELP
from braggsim.simulate import simulate
from tests.conftest import ROOT

TRUTH_MISSET = tuple(DEMO_TRUTH[f"misset_{a}_deg"] for a in "xyz")


def _truth_model(**crystal_changes):
    crystal, detector, beam = demo_model(TRUTH_MISSET, DEMO_TRUTH["mosaic_spread_deg"])
    return Model(crystal.replace(**crystal_changes) if crystal_changes else crystal, detector, beam)


@pytest.fixture(scope="module")
def truth_frame():
    return demo_observed("braggsim")


# --------------------------------------------------------------- declarations
def test_every_parameter_declares_what_the_cli_and_the_gui_need():
    assert len(PARAMETERS) == sum(len(part.parameters) for part in PART_TYPES)  # names are unique
    for name, parameter in PARAMETERS.items():
        assert parameter.name == name and parameter.label and parameter.description
        assert parameter.kind in ("linear", "log") and parameter.step > 0
        low, high = parameter.gui_range
        assert low < high and parameter.gui_step > 0 and parameter.decimals >= 0
        assert isinstance(parameter.physical, Range)
        assert name in REFINE_HELP, f"{name} missing from the generated --help"
    members = [n for names in PARAMETER_GROUPS.values() for n in names]
    assert sorted(members) == sorted(PARAMETERS)  # every parameter in exactly one group
    assert {"wavelength", "background", "cell", "beam_center"} <= set(PARAMETER_GROUPS)


def test_the_docs_list_every_parameter():
    docs = (ROOT / "docs" / "refinement.md").read_text()
    missing = [name for name in [*PARAMETERS, *PARAMETER_GROUPS] if f"`{name}`" not in docs]
    assert not missing, f"docs/refinement.md does not list {missing}"


def test_physical_ranges_are_the_issues():
    mosaic, n_a, edge, angle = (
        PARAMETERS[n].physical for n in ("mosaic_spread_deg", "N_a", "cell_a_A", "cell_beta_deg")
    )
    assert 0.5 in mosaic and 0.0 not in mosaic and 90.0 not in mosaic and 623475114.0 not in mosaic
    assert 1.0 in n_a and 0.99 not in n_a
    assert 0.1 in edge and -1.0 not in edge and 0.0 not in edge
    assert 179.0 in angle and 180.0 not in angle
    assert math.nan not in Range() and math.inf not in Range()
    assert str(mosaic) == "(0, 90)" and str(n_a) == "[1, inf)"


def test_a_bad_declaration_is_refused():
    with pytest.raises(ValueError, match="kind"):
        Parameter("x", "x", "", "x", kind="cubic", step=1.0, physical=Range(), gui_range=(0, 1), gui_step=1, decimals=0)
    with pytest.raises(ValueError, match="two parts declare the parameter 'scale'"):
        ParameterSet(default_parts() + [PART_TYPES[-2]()])


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_apply_sets_exactly_one_parameter(name):
    parts = ParameterSet(default_parts())
    model = Model(*demo_model(), background=0.5)
    before = {n: parts.read(n, model) for n in PARAMETERS}
    value = before[name] * 1.05 + 0.01
    changed = parts.apply({name: value}, model)
    after = {n: parts.read(n, changed) for n in PARAMETERS}
    assert after[name] == pytest.approx(value, rel=1e-12)
    assert {n: x for n, x in after.items() if n != name} == {n: x for n, x in before.items() if n != name}


def test_groups_expand_in_the_order_asked():
    parts = ParameterSet(default_parts())
    assert parts.expand("scale,misset,misset_x_deg") == ["scale", "misset_x_deg", "misset_y_deg", "misset_z_deg"]
    with pytest.raises(ValueError, match="unknown refinement parameter 'wobble'"):
        parts.expand(["mosaic", "wobble"])


# ------------------------------------------------------------- cell constraints
@pytest.mark.parametrize(
    "space_group, cell, free",
    [
        (None, (100, 100, 100, 90, 90, 90), ("a", "b", "c", "alpha", "beta", "gamma")),
        ("P 1 21 1", (50, 60, 70, 90, 100, 90), ("a", "b", "c", "beta")),
        ("P 21 21 21", (50, 60, 70, 90, 90, 90), ("a", "b", "c")),
        ("P 43 21 2", (57.8, 57.8, 150, 90, 90, 90), ("a", "c")),
        ("P 61 2 2", (93, 93, 130, 90, 90, 120), ("a", "c")),
        ("R 3:R", (60, 60, 60, 80, 80, 80), ("a", "alpha")),
        ("I 2 3", (80, 80, 80, 90, 90, 90), ("a",)),
    ],
)
def test_the_space_group_leaves_the_lattice_free_parameters(space_group, cell, free):
    part = UnitCell(space_group)
    names = {"a": "cell_a_A", "b": "cell_b_A", "c": "cell_c_A"}
    expected = tuple(names.get(x, f"cell_{x}_deg") for x in free)
    assert part.groups["cell"] == expected
    model = _truth_model(cell=cell)
    part.check(list(expected), model)
    # moving the free parameters keeps the lattice: tied ones follow, fixed ones stay
    values = {n: part.read(n, model) * 1.01 for n in expected}
    moved = part.changes(values, model)["crystal"]["cell"]
    if space_group in ("P 43 21 2", "P 61 2 2"):
        assert moved[1] == moved[0] and moved[3:] == cell[3:]
    if space_group == "R 3:R":
        assert moved[0] == moved[1] == moved[2] and moved[3] == moved[4] == moved[5]
    if space_group == "I 2 3":
        assert moved[:3] == (cell[0] * 1.01,) * 3


def test_cell_constraints_are_enforced():
    part = UnitCell("P 4")
    with pytest.raises(ValueError, match="cell_b_A is tied to cell_a_A by the tetragonal lattice of P 4"):
        part.check(["cell_b_A"], _truth_model())
    with pytest.raises(ValueError, match="cell_gamma_deg is fixed"):
        part.check(["cell_gamma_deg"], _truth_model())
    with pytest.raises(ValueError, match="does not obey the tetragonal lattice"):
        part.check(["cell_a_A"], _truth_model(cell=(100, 101, 100, 90, 90, 90)))
    with pytest.raises(ValueError, match="unknown space group 'P 5'"):
        UnitCell("P 5")
    crystal, detector, beam = demo_model()
    with pytest.raises(ValueError, match="tied"):
        Refiner(crystal, detector, beam, np.zeros((64, 64)), refine="cell_b_A", space_group="P 4")


def _small_still(**crystal_changes):
    """The demo crystal, one domain, on 32x32 pixels of 0.2 mm without oversampling: the
    same spots for a fraction of the cost (cell and wavelength gradients are the slow ones)."""
    crystal, _, beam = demo_model(TRUTH_MISSET, 0.0)
    detector = Detector(fpixels=32, pixel_size_mm=0.2, distance_mm=100.0, oversample=1)
    truth = crystal.replace(**crystal_changes) if crystal_changes else crystal
    with torch.no_grad():
        observed = simulate(truth, detector, beam, dtype=torch.float64).numpy()
    return crystal, detector, beam, observed


def test_tetragonal_cell_refines_a_and_c_with_b_following():
    crystal, detector, beam, observed = _small_still(cell=(101.0, 101.0, 99.0, 90, 90, 90))
    refiner = Refiner(crystal, detector, beam, observed, refine="cell", space_group="P 4 2 2")
    list(refiner.run(40))
    result = refiner.result
    assert refiner.names == ["cell_a_A", "cell_c_A"]
    assert result.parameters["cell_a_A"] == pytest.approx(101.0, abs=1e-4)
    assert result.parameters["cell_c_A"] == pytest.approx(99.0, abs=1e-4)
    assert result.crystal.cell[1] == result.crystal.cell[0] and result.crystal.cell[3:] == (90, 90, 90)
    assert result.status == "converged", result.message


# -------------------------------------------------------------- new parameters
def test_wavelength_is_recovered():
    crystal, detector, beam, observed = _small_still()
    refiner = Refiner(crystal, detector, beam.replace(wavelength_A=1.003), observed, refine="wavelength")
    list(refiner.run(30))
    assert refiner.result.status == "converged", refiner.result.message
    assert refiner.result.parameters["wavelength_A"] == pytest.approx(1.0, abs=1e-6)
    assert refiner.result.beam.wavelength_A == pytest.approx(1.0, abs=1e-6)


def test_background_and_scale_are_recovered(truth_frame):
    crystal, detector, beam = demo_model(TRUTH_MISSET, DEMO_TRUTH["mosaic_spread_deg"])
    observed = 0.5 * truth_frame + 2.0
    refiner = Refiner(crystal, detector, beam, observed, refine="scale,background")
    list(refiner.run(30))
    result = refiner.result
    assert result.parameters["scale"] == pytest.approx(0.5, rel=1e-6)
    assert result.parameters["background"] == pytest.approx(2.0, abs=1e-6)
    assert result.background == pytest.approx(2.0, abs=1e-6)
    # a noise-free frame: the residual variance, and so the errors, are ~0
    assert all(0 <= e < 1e-6 for e in result.standard_errors.values()), result.standard_errors


# ------------------------------------------------------- plugged in from outside
class _Offset(ModelPart):
    """A nuisance parameter the registry does not know: an offset on part of the frame."""

    parameters = (
        Parameter(
            "roi_offset",
            "ROI offset",
            "counts/px",
            "offset of the pixels in the region of interest",
            kind="linear",
            step=1.0,
            physical=Range(),
            gui_range=(-1e3, 1e3),
            gui_step=1.0,
            decimals=2,
        ),
    )
    groups = {"roi_offset": ("roi_offset",)}

    def read(self, name, model):
        return float(model.extra.get("roi_offset", 0.0))

    def changes(self, values, model):
        return {"extra": {"roi_offset": values["roi_offset"]}}


class _RoiTarget(PixelTarget):
    """Only the pixels of a region of interest, with the offset added there."""

    def render(self, model, dtype, device=None):
        return super().render(model, dtype, device) + model.extra.get("roi_offset", 0.0)


def test_a_part_and_a_target_plug_in(truth_frame):
    roi = np.zeros((64, 64), bool)
    roi[8:40, 16:56] = True
    observed = truth_frame + 3.0  # outside the ROI the offset is wrong, but those pixels do not count
    crystal, detector, beam = demo_model(TRUTH_MISSET, DEMO_TRUTH["mosaic_spread_deg"])
    target = _RoiTarget(observed, roi)
    refiner = Refiner(crystal, detector, beam, target, refine="roi_offset", parts=[*default_parts(), _Offset()])
    assert target.n_values == roi.sum()
    list(refiner.run(20))
    assert refiner.result.parameters["roi_offset"] == pytest.approx(3.0, abs=1e-8)
    assert refiner.result.status == "converged", refiner.result.message
    with pytest.raises(ValueError, match="belong to the Target"):
        Refiner(crystal, detector, beam, target, loss="poisson", refine="scale")
