"""Indexing a still with a known cell and space group: no starting orientation needed.

A still samples one thin cap of reciprocal space, and a long axis (thaumatin's c = 150 A)
puts fractional indices near 100 at high resolution, so no coarse grid over the rotation
group can land close enough.  The search therefore goes by directions, as DIALS'
real-space grid search does for a known cell:

1. **Axis directions.**  For each cell edge of length L, directions u on a hemisphere grid are
   scored by how periodic the spots' scattering vectors are along u with period 1/L,
   ``|sum_i exp(2 pi i L u.q_i)| / n`` over low-resolution spots (where a grid step cannot
   smear the phases).  The best, well-separated peaks are sharpened by a local search that
   brings in higher-resolution spots step by step.
2. **Rotation about the axis.**  An axis fixes the orientation but for one angle psi.  For each
   candidate, psi runs over 360 deg and every orientation is scored on all three fractional
   indices at once (a Gaussian soft count, sigma 0.12).  One right axis suffices, so an axis
   the still cannot see (along the beam) does no harm.
3. **Local refinement** of the best orientations on the soft count with more and more spots,
   then on spot positions with DIALS' stills predictor (:mod:`braggsim.spot_refine`).
4. **Decision.**  Orientations related by the point group's rotations (gemmi) are one
   solution.  A solution is accepted when its indexed fraction beats chance by a wide margin
   (a binomial z-score against the chance rate ``(2 tol)^3``, ~22 %), enough spots index, and the
   positions fit; otherwise the frame is ``no-lattice``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.optimize import minimize
from scipy.spatial.transform import Rotation

from .dials_geometry import StillGeometry
from .spot_refine import SpotFit, SpotRefineOptions, real_space_from, refine_on_spots
from .unit_cell import CellParameters, check_cell, equivalent_rotations, orthogonalization, space_group

__all__ = [
    "IndexingOptions",
    "IndexingResult",
    "axis_candidates",
    "chance_fraction",
    "hemisphere",
    "index_still",
    "periodicity",
    "psi_scan",
    "same_solution",
    "search_orientations",
    "soft_count",
    "z_score",
]


@dataclasses.dataclass(frozen=True)
class IndexingOptions:
    """Knobs of the search and of the decision.

    grid_step_deg: hemisphere grid step for axis directions.
    n_axis_candidates: peaks kept per cell edge.
    max_index_coarse: spots with L/d above this are left out of the coarse direction scan.
    psi_step_deg: step of the rotation about a candidate axis.
    psi_max_index: spots with (longest edge)/d above this are left out of the psi scan.
    min_spots: fewer strong spots than this: no-lattice without searching.
    min_indexed: fewest indexed spots for a lattice.
    min_fraction: smallest indexed fraction for a lattice.
    min_z: smallest binomial z-score of the indexed count against chance.
    max_rmsd_px: largest inlier RMSD for a lattice.
    good_fraction: a solution that indexes less than this fraction makes the search try the
        other candidates and the unindexed spots on their own (see :func:`_try_leftovers`).
    good_cell_rel: so does a solution whose refined cell lengths stray further than this
        (relative) from the given cell: a compromise between two lattices pulls the cell off
        against its restraint (thau_3_2_0003's first solution: c 1.7 % short).
    """

    grid_step_deg: float = 1.7
    n_axis_candidates: int = 8
    max_index_coarse: float = 12.0
    psi_step_deg: float = 0.5
    psi_max_index: float = 25.0
    n_solutions_refined: int = 4
    min_spots: int = 20
    min_indexed: int = 20
    min_fraction: float = 0.35
    min_z: float = 8.0
    max_rmsd_px: float = 2.5
    good_fraction: float = 0.8
    good_cell_rel: float = 0.01
    spot_refine: SpotRefineOptions = dataclasses.field(default_factory=SpotRefineOptions)

    def __post_init__(self):
        for name in ("grid_step_deg", "max_index_coarse", "psi_step_deg", "psi_max_index", "max_rmsd_px"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be > 0, got {value!r}")
        for name in ("n_axis_candidates", "n_solutions_refined", "min_spots", "min_indexed"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not 0 <= self.min_fraction <= 1:
            raise ValueError(f"min_fraction must lie in [0, 1], got {self.min_fraction!r}")


@dataclasses.dataclass
class IndexingResult:
    """Outcome of :func:`index_still`.

    status: "indexed" or "no-lattice"; reason says why when no lattice was accepted.
    fit: the refined model (None when nothing was refined).
    n_spots, n_indexed, fraction, z_score: the decision's numbers.
    """

    status: str
    reason: str
    n_spots: int
    n_indexed: int
    fraction: float
    z_score: float
    fit: SpotFit | None


def chance_fraction(tolerance: float) -> float:
    """Fraction of random scattering vectors that index within ``tolerance`` on all three indices."""
    return (2.0 * tolerance) ** 3


def z_score(n_indexed: int, n_spots: int, tolerance: float) -> float:
    """How many binomial standard deviations ``n_indexed`` of ``n_spots`` lie above chance."""
    if n_spots == 0:
        return 0.0
    p = chance_fraction(tolerance)
    return (n_indexed - p * n_spots) / math.sqrt(n_spots * p * (1 - p))


def hemisphere(step_rad: float) -> np.ndarray:
    """Unit vectors (n, 3) spread evenly over the z >= 0 hemisphere, about ``step_rad`` apart."""
    n = max(8, int(2 * math.pi / step_rad**2))
    i = np.arange(n) + 0.5
    z = i / n
    phi = math.pi * (1 + 5**0.5) * i
    r = np.sqrt(1 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def periodicity(directions: np.ndarray, q: np.ndarray, length_A: float) -> np.ndarray:
    """|mean exp(2 pi i L u.q)| for each direction u (m, 3) over scattering vectors q (n, 3). (m,)."""
    phase = (2 * math.pi * length_A) * (q @ directions.T)
    return np.hypot(np.cos(phase).sum(0), np.sin(phase).sum(0)) / max(len(q), 1)


def _tangent_basis(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    helper = np.array([1.0, 0.0, 0.0]) if abs(u[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(u, helper)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(u, e1)


def _sharpen_direction(u: np.ndarray, q: np.ndarray, d_A: np.ndarray, length_A: float) -> tuple[np.ndarray, float]:
    """Local maximum of :func:`periodicity` near u, bringing in higher-resolution spots step by step."""
    score = 0.0
    for max_index in (12.0, 20.0, 30.0, 45.0):
        subset = q[length_A / d_A <= max_index]
        if len(subset) < 5:
            continue
        e1, e2 = _tangent_basis(u)

        def negative(t, subset=subset, e1=e1, e2=e2, u=u):
            v = u + t[0] * e1 + t[1] * e2
            return -periodicity((v / np.linalg.norm(v))[None, :], subset, length_A)[0]

        found = minimize(
            negative,
            np.zeros(2),
            method="Nelder-Mead",
            options={"xatol": 1e-5, "fatol": 1e-6, "initial_simplex": [[0, 0], [0.01, 0], [0, 0.01]]},
        )
        u = u + found.x[0] * e1 + found.x[1] * e2
        u /= np.linalg.norm(u)
        score = -float(found.fun)
    return u, score


def axis_candidates(q: np.ndarray, length_A: float, options: IndexingOptions) -> list[tuple[np.ndarray, float]]:
    """Directions (unit (3,), score) along which the spots repeat with period ``length_A``."""
    d_A = 1.0 / np.linalg.norm(q, axis=1)
    coarse = q[length_A / d_A <= options.max_index_coarse]
    if len(coarse) < 10:
        coarse = q[np.argsort(-d_A)[: min(len(q), 30)]]
    step = math.radians(options.grid_step_deg)
    directions = hemisphere(step)
    scores = periodicity(directions, coarse, length_A)
    picked: list[int] = []
    separation = math.cos(3 * step)
    for j in np.argsort(-scores):
        if all(abs(directions[j] @ directions[k]) < separation for k in picked):
            picked.append(int(j))
        if len(picked) >= options.n_axis_candidates:
            break
    sharpened = [_sharpen_direction(directions[j], q, d_A, length_A) for j in picked]
    unique: list[tuple[np.ndarray, float]] = []
    for u, s in sorted(sharpened, key=lambda item: -item[1]):
        if all(abs(u @ v) < math.cos(math.radians(0.5)) for v, _ in unique):
            unique.append((u, s))
    return unique


def soft_count(hkl_frac: np.ndarray, sigma: float = 0.12) -> np.ndarray:
    """Gaussian soft count of spots near integer indices: sum over the last-but-one axis.
    hkl_frac: (..., n, 3). Returns (...)."""
    delta = hkl_frac - np.rint(hkl_frac)
    return np.exp(-(delta * delta).sum(-1) / (2 * sigma * sigma)).sum(-1)


def _rotation_onto(e: np.ndarray, u: np.ndarray) -> np.ndarray:
    axis = np.cross(e, u)
    sine, cosine = np.linalg.norm(axis), float(e @ u)
    if sine < 1e-12:
        if cosine > 0:
            return np.eye(3)
        perpendicular, _ = _tangent_basis(e)
        return Rotation.from_rotvec(math.pi * perpendicular).as_matrix()
    return Rotation.from_rotvec(axis / sine * math.atan2(sine, cosine)).as_matrix()


def psi_scan(u: np.ndarray, axis: int, q: np.ndarray, cell: tuple, step_deg: float) -> list[tuple[float, np.ndarray]]:
    """Orientations with cell edge ``axis`` along u, every ``step_deg`` about it, scored by
    :func:`soft_count`; returns [(score, U (3, 3))] best first (local maxima only)."""
    frame = orthogonalization(cell)
    edge = frame[:, axis] / np.linalg.norm(frame[:, axis])
    start = _rotation_onto(edge, u)
    mapping = frame.T @ start.T  # h = mapping @ R(-psi) q
    along = np.outer(q @ u, u)
    across = q - along
    turned = np.cross(u, q)
    part_a, part_b, part_c = along @ mapping.T, across @ mapping.T, turned @ mapping.T
    psi = np.radians(np.arange(0.0, 360.0, step_deg))
    hkl = part_a[None] + np.cos(psi)[:, None, None] * part_b[None] - np.sin(psi)[:, None, None] * part_c[None]
    scores = soft_count(hkl)
    peaks = np.flatnonzero((scores >= np.roll(scores, 1)) & (scores >= np.roll(scores, -1)))
    peaks = peaks[np.argsort(-scores[peaks])][:3]
    return [(float(scores[j]), Rotation.from_rotvec(u * psi[j]).as_matrix() @ start) for j in peaks]


def _sharpen_orientation(orientation: np.ndarray, q: np.ndarray, cell: tuple) -> np.ndarray:
    """Local maximum of the soft count over small rotations, with more and more spots."""
    frame = orthogonalization(cell)
    d_A = 1.0 / np.linalg.norm(q, axis=1)
    longest = max(cell[:3])
    for max_index in (25.0, 40.0, 60.0, np.inf):
        subset = q[longest / d_A <= max_index]
        if len(subset) < 5:
            continue

        def negative(r, subset=subset, orientation=orientation):
            rotation = Rotation.from_rotvec(r).as_matrix() @ orientation
            return -soft_count(subset @ (rotation @ frame))

        found = minimize(
            negative,
            np.zeros(3),
            method="Nelder-Mead",
            options={"xatol": 1e-6, "fatol": 1e-4, "initial_simplex": np.vstack([np.zeros(3), 0.003 * np.eye(3)])},
        )
        orientation = Rotation.from_rotvec(found.x).as_matrix() @ orientation
    return orientation


def same_solution(real_a: np.ndarray, real_b: np.ndarray, rotations: list, tolerance_deg: float = 1.0) -> bool:
    """Whether two settings (rows a, b, c) differ by a point-group rotation and at most
    ``tolerance_deg`` of misorientation."""
    for matrix in rotations:
        turned = matrix @ real_a
        misfit = turned.T @ np.linalg.inv(real_b.T)  # rotation taking b's frame to a's
        u, _, vt = np.linalg.svd(misfit)
        angle = Rotation.from_matrix(u @ vt).magnitude() if np.linalg.det(u @ vt) > 0 else math.pi
        if math.degrees(angle) <= tolerance_deg:
            return True
    return False


def search_orientations(q: np.ndarray, cell: tuple, group, options: IndexingOptions) -> list[tuple[float, np.ndarray]]:
    """Candidate orientations U (3, 3), best soft count first, one per symmetry-equivalent set."""
    cell = tuple(cell)
    d_A = 1.0 / np.linalg.norm(q, axis=1)
    psi_spots = q[max(cell[:3]) / d_A <= options.psi_max_index]
    if len(psi_spots) < 10:
        psi_spots = q[np.argsort(-d_A)[: min(len(q), 60)]]
    lengths: dict[int, int] = {}
    for axis in range(3):
        # edges of equal length (a = b in a tetragonal cell) need one search
        if not any(abs(cell[axis] - cell[other]) < 1e-6 for other in lengths.values()):
            lengths[axis] = axis
    found: list[tuple[float, np.ndarray]] = []
    for axis in lengths:
        for u, _score in axis_candidates(q, cell[axis], options):
            for sign in (1.0, -1.0):
                found.extend(psi_scan(sign * u, axis, psi_spots, cell, options.psi_step_deg))
    found.sort(key=lambda item: -item[0])
    rotations = equivalent_rotations(group)
    frame = orthogonalization(cell)
    unique: list[tuple[float, np.ndarray]] = []
    for score, orientation in found:
        real = (orientation @ frame).T
        if not any(same_solution(real, (o @ frame).T, rotations) for _, o in unique):
            unique.append((score, orientation))
        if len(unique) >= options.n_solutions_refined:
            break
    return [(score, _sharpen_orientation(o, q, cell)) for score, o in unique]


def index_still(
    px: np.ndarray,
    geometry: StillGeometry,
    cell,
    group,
    options: IndexingOptions | None = None,
) -> IndexingResult:
    """Index strong spots at (slow, fast) ``px`` (n, 2) on a still with a known cell and space group.

    geometry: the header's beam and detector (DIALS frame).  Returns an :class:`IndexingResult`;
    never a false orientation: a frame whose best solution does not pass the decision is
    ``no-lattice``.
    """
    options = options or IndexingOptions()
    cell = check_cell(cell)
    group = space_group(group)
    parameters = CellParameters(group)
    cell = parameters.symmetrize(cell)
    px = np.asarray(px, dtype=float).reshape(-1, 2)
    n_spots = len(px)
    tolerance = options.spot_refine.hkl_tolerance
    if n_spots < options.min_spots:
        return IndexingResult(
            "no-lattice", f"{n_spots} strong spots (fewer than {options.min_spots})", n_spots, 0, 0.0, 0.0, None
        )
    q = geometry.q_vectors(px)
    candidates = search_orientations(q, cell, group, options)
    best: SpotFit | None = None
    for _score, orientation in candidates:
        fit = refine_on_spots(px, real_space_from(orientation, cell), geometry, group, cell, options.spot_refine)
        if best is None or _rank(fit) > _rank(best):
            best = fit
        if _clearly_good(best, n_spots, cell, options):
            break  # the best-scoring candidates come first: stop at the first that is clearly good
    if best is None:
        return IndexingResult("no-lattice", "no candidate orientation", n_spots, 0, 0.0, 0.0, None)
    if not _clearly_good(best, n_spots, cell, options):
        best = _try_leftovers(px, best, geometry, cell, group, options)
    reasons = _reasons(best, n_spots, options)
    status = "no-lattice" if reasons else "indexed"
    z = z_score(best.n_indexed, n_spots, tolerance)
    return IndexingResult(status, "; ".join(reasons), n_spots, best.n_indexed, best.n_indexed / n_spots, z, best)


def _clearly_good(fit: SpotFit, n_spots: int, cell: tuple, options: IndexingOptions) -> bool:
    """A lattice that indexes most spots with the cell where it was asked to be."""
    stray = max(abs(fit.cell[i] / cell[i] - 1) for i in range(3))
    return (
        not _reasons(fit, n_spots, options)
        and fit.n_indexed >= options.good_fraction * n_spots
        and stray <= options.good_cell_rel
    )


def _reasons(fit: SpotFit, n_spots: int, options: IndexingOptions) -> list[str]:
    """Why ``fit`` is not a lattice (empty when it is one)."""
    n_indexed = fit.n_indexed
    fraction = n_indexed / max(n_spots, 1)
    z = z_score(n_indexed, n_spots, options.spot_refine.hkl_tolerance)
    reasons = []
    if n_indexed < options.min_indexed:
        reasons.append(f"{n_indexed} indexed spots (need {options.min_indexed})")
    if fraction < options.min_fraction:
        reasons.append(f"{fraction:.0%} indexed (need {options.min_fraction:.0%})")
    if z < options.min_z:
        reasons.append(f"indexed count {z:.1f} sigma above chance (need {options.min_z:g})")
    if not fit.rmsd_px <= options.max_rmsd_px:
        reasons.append(f"RMSD {fit.rmsd_px:.2f} px (need <= {options.max_rmsd_px:g})")
    return reasons


def _try_leftovers(px, best: SpotFit, geometry, cell, group, options: IndexingOptions) -> SpotFit:
    """A refinement can settle on a compromise between two close lattices (two crystals, or
    domains of one) and index neither well.  Index the spots it left unindexed on their own;
    if they hold a lattice, refine that one on all spots and keep whichever indexes more."""
    rest = px[~best.indexed]
    if len(rest) < options.min_spots:
        return best
    q = geometry.q_vectors(rest)
    for _score, orientation in search_orientations(q, cell, group, options)[:1]:
        other = refine_on_spots(rest, real_space_from(orientation, cell), geometry, group, cell, options.spot_refine)
        if _reasons(other, len(rest), options):
            continue
        whole = refine_on_spots(px, other.real_space, geometry, group, cell, options.spot_refine)
        if _rank(whole) > _rank(best) or (
            _clearly_good(whole, len(px), cell, options) and not _clearly_good(best, len(px), cell, options)
        ):
            return whole
    return best


def _rank(fit: SpotFit) -> tuple:
    return (fit.n_indexed, -fit.rmsd_px if math.isfinite(fit.rmsd_px) else -1e9)
