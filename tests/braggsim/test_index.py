"""Known-cell indexing of stills: real thaumatin spot lists, synthetic lattices, blanks (no Qt)."""

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from braggsim.dials_geometry import still_geometry_from_header
from braggsim.index import IndexingOptions, index_still, same_solution, z_score
from braggsim.unit_cell import CellParameters, equivalent_rotations, orthogonalization
from tests.conftest import DATA

THAUMATIN = (57.8, 57.8, 150.0, 90.0, 90.0, 90.0)
GROUP = "P 41 21 2"


def pilatus_geometry():
    """The thaumatin grid scan's header: Pilatus3 6M, 351 mm, 0.96859 A, beam (1261.61, 1306.96) px."""
    pixel = 0.172
    return still_geometry_from_header(
        wavelength_A=0.96859,
        distance_mm=351.0,
        pixel_size_mm=pixel,
        beam_center_mm=((1306.96 - 0.5) * pixel, (1261.61 - 0.5) * pixel),
        shape=(2527, 2463),
    )


def spot_list(name):
    return np.loadtxt(DATA / f"thau_{name}_spots.csv", delimiter=",")[:, :2]


def test_real_thaumatin_still_indexes_with_the_known_cell():
    px = spot_list("0013")  # 614 strong spots of thau_3_2_0013 found by braggsim.spotfind
    result = index_still(px, pilatus_geometry(), THAUMATIN, GROUP)
    assert result.status == "indexed", result.reason
    assert result.fraction > 0.85
    assert result.z_score > 30
    fit = result.fit
    assert fit.rmsd_px < 1.6
    a, b, c = fit.cell[:3]
    assert a == b and fit.cell[3:] == (90.0, 90.0, 90.0)  # tetragonal constraints hold
    assert abs(a / 57.8 - 1) < 0.005 and abs(c / 150.0 - 1) < 0.005
    assert 0 < fit.cell_sigma[0] < 0.2 and 0 < fit.cell_sigma[2] < 0.5


def test_still_whose_first_refinement_is_a_compromise_is_rescued_by_its_leftover_spots():
    """thau_3_2_0003 (1386 spots): the best search candidate refines to a compromise (c drifts
    to 147 A, 59 % indexed); the spots it leaves hold the lattice, which indexes 93 %."""
    px = spot_list("0003")
    result = index_still(px, pilatus_geometry(), THAUMATIN, GROUP)
    assert result.status == "indexed", result.reason
    assert result.fraction > 0.9
    assert result.fit.rmsd_px < 1.6
    assert abs(result.fit.cell[0] / 57.8 - 1) < 0.005 and abs(result.fit.cell[2] / 150.0 - 1) < 0.005


def synthetic_spots(orientation, geometry, cell=THAUMATIN, excitation=6e-4, noise_px=0.15, junk=0, seed=0):
    """Spots of relps within ``excitation`` (1/A) of the Ewald sphere, projected along s0 + q
    (written here from scratch, in DIALS' frame), with Gaussian centroid noise and junk spots."""
    rng = np.random.default_rng(seed)
    real = (orientation @ orthogonalization(cell)).T
    reciprocal = np.linalg.inv(real)  # columns a*, b*, c*
    limits = [int(np.linalg.norm(real[i]) / 2.0) + 1 for i in range(3)]
    grid = np.stack(np.meshgrid(*(np.arange(-m, m + 1) for m in limits), indexing="ij"), -1).reshape(-1, 3)
    q = grid @ reciprocal.T
    s0 = geometry.s0
    near = np.abs(np.linalg.norm(s0 + q, axis=1) - np.linalg.norm(s0)) < excitation
    near &= (np.linalg.norm(q, axis=1) > 1 / 40) & (np.linalg.norm(q, axis=1) < 1 / 2.0)
    rays = s0 + q[near]
    normal = np.cross(geometry.fast, geometry.slow)
    t = (geometry.origin @ normal) / (rays @ normal)
    hit = rays * t[:, None] - geometry.origin
    slow = hit @ geometry.slow / geometry.pixel_size_mm[1] - 0.5
    fast = hit @ geometry.fast / geometry.pixel_size_mm[0] - 0.5
    on = (t > 0) & (slow > 0) & (slow < geometry.image_size[1] - 1) & (fast > 0) & (fast < geometry.image_size[0] - 1)
    px = np.stack([slow[on], fast[on]], axis=1) + rng.normal(0, noise_px, (on.sum(), 2))
    if junk:
        px = np.vstack([px, rng.uniform([0, 0], [geometry.image_size[1], geometry.image_size[0]], (junk, 2))])
    return px


def misorientation_deg(real_a, real_b, group=GROUP):
    """Smallest rotation angle between two settings, over the point group's rotations."""
    best = math.inf
    for matrix in equivalent_rotations(group):
        turned = (matrix @ real_a).T @ np.linalg.inv(real_b.T)
        u, _, vt = np.linalg.svd(turned)
        best = min(best, math.degrees(Rotation.from_matrix(u @ vt).magnitude()))
    return best


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_orientations_are_found_with_junk_spots(seed):
    geometry = pilatus_geometry()
    orientation = Rotation.random(random_state=seed).as_matrix()
    px = synthetic_spots(orientation, geometry, junk=150, seed=seed)
    result = index_still(px, geometry, THAUMATIN, GROUP)
    assert result.status == "indexed", result.reason
    truth = (orientation @ orthogonalization(THAUMATIN)).T
    assert misorientation_deg(result.fit.real_space, truth) < 0.05
    assert result.n_indexed >= len(px) - 150 - 5  # every lattice spot, and junk only by chance
    assert abs(result.fit.cell[2] / 150.0 - 1) < 0.002


def test_long_axis_along_the_beam_is_found():
    """c (150 A) along the X-rays: the still cannot see the c periodicity, the a/b search must do."""
    geometry = pilatus_geometry()
    orientation = Rotation.from_rotvec([0.02, -0.03, 0.4]).as_matrix()  # c ~ along z
    px = synthetic_spots(orientation, geometry, excitation=4e-4, seed=5)
    result = index_still(px, geometry, THAUMATIN, GROUP)
    assert result.status == "indexed", result.reason
    truth = (orientation @ orthogonalization(THAUMATIN)).T
    assert misorientation_deg(result.fit.real_space, truth) < 0.05


@pytest.mark.parametrize("seed", range(4))
def test_random_spots_are_no_lattice(seed):
    rng = np.random.default_rng(seed)
    px = rng.uniform([0, 0], [2527, 2463], size=(60 + 40 * seed, 2))
    result = index_still(px, pilatus_geometry(), THAUMATIN, GROUP)
    assert result.status == "no-lattice"
    assert result.reason


def test_blank_frame_with_few_spots_is_no_lattice_without_a_search():
    result = index_still(np.array([[1306.7, 1244.8]]), pilatus_geometry(), THAUMATIN, GROUP)
    assert result.status == "no-lattice" and result.fit is None and "1 strong spots" in result.reason


def test_symmetry_equivalent_settings_are_one_solution():
    rotations = equivalent_rotations(GROUP)
    assert len(rotations) == 8  # 422
    assert all(round(np.linalg.det(m)) == 1 for m in rotations)
    real = (Rotation.random(random_state=7).as_matrix() @ orthogonalization(THAUMATIN)).T
    for matrix in rotations:
        assert same_solution(matrix @ real, real, rotations)
    other = (Rotation.from_rotvec([0, 0, 0.1]).as_matrix() @ real.T).T  # 5.7 deg away
    assert not same_solution(other, real, rotations)


def test_cell_constraints_by_crystal_system():
    assert CellParameters(GROUP).names == ("a", "c")
    assert CellParameters(GROUP).cell((58.0, 151.0)) == (58.0, 58.0, 151.0, 90.0, 90.0, 90.0)
    assert CellParameters("P 21 21 21").names == ("a", "b", "c")
    assert CellParameters("C 1 2 1").names == ("a", "b", "c", "beta")
    assert CellParameters("P 61 2 2").cell((93.0, 130.0))[5] == 120.0
    assert CellParameters("P 1").sources() == (0, 1, 2, 3, 4, 5)


def test_chance_rate_and_z_score():
    assert math.isclose(z_score(216, 1000, 0.3), 0.0, abs_tol=0.05)
    assert z_score(600, 1000, 0.3) > 25


def test_bad_cell_and_space_group_are_value_errors():
    with pytest.raises(ValueError, match="cell"):
        index_still(np.zeros((30, 2)), pilatus_geometry(), (57.8, 57.8, -150, 90, 90, 90), GROUP)
    with pytest.raises(ValueError, match="unknown space group"):
        index_still(np.zeros((30, 2)), pilatus_geometry(), THAUMATIN, "P 43 2 7")
    with pytest.raises(ValueError, match="grid_step_deg"):
        IndexingOptions(grid_step_deg=0)
