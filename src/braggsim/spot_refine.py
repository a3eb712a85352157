"""Refinement of a still's model on spot positions, with DIALS' stills predictor.

Parameters: the crystal orientation (a small rotation applied to U), the cell's free
parameters (its lattice constraints kept, see :class:`braggsim.unit_cell.CellParameters`), and
the detector: shifts along fast and slow, the distance, and tilts about fast and slow through
the beam's footprint.  Residuals, as DIALS' stills refinement has them: the (slow, fast)
position errors of each indexed spot, and DeltaPsi, the rotation that brings its relp onto
the Ewald sphere.  Positions alone leave the tilts of the crystal about axes normal to the
beam nearly free (a relp that moves along the beam barely moves its spot); DeltaPsi fixes
them, and with them which spots index.

A still cannot tell the cell's scale from the detector distance (the spot pattern scales with
distance / cell edge), so the distance and tilts are restrained to the header values and the
cell to the given cell, each with a stated width.  A least-squares fit with a soft-L1 loss
keeps stray spots (a second lattice, ice, a hot cluster) from pulling the model; spots further
than ``outlier_px`` from their prediction are left out of the next cycle.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .dials_geometry import StillGeometry, fractional_hkl, predict_still_px
from .unit_cell import CellParameters, cell_from_real_space, orthogonalization

__all__ = [
    "DETECTOR_NAMES",
    "SpotFit",
    "SpotRefineOptions",
    "apply_detector",
    "orientation_of",
    "real_space_from",
    "refine_on_spots",
    "rotation_matrix",
]

DETECTOR_NAMES = ("shift_fast_px", "shift_slow_px", "distance_mm", "tilt_fast_deg", "tilt_slow_deg")


@dataclasses.dataclass(frozen=True)
class SpotRefineOptions:
    """Knobs of the spot-position refinement.

    hkl_tolerance: a spot is indexed when every fractional index lies within this of an
        integer (DIALS' 0.3).
    sigma_px: assumed centroid error (weights positions against DeltaPsi and restraints).
    sigma_delpsi_deg: assumed DeltaPsi spread (mosaicity and bandwidth), degrees.
    refine_detector: which of DETECTOR_NAMES are refined.
    restraint_cell_rel: width of the restraint of each free cell length to the given cell,
        relative (angles: restraint_cell_rel * 90 deg); 0 = no restraint.
    restraint_distance_rel, restraint_tilt_deg, restraint_shift_px: widths of the detector
        restraints to the header geometry.
    cycles: assignment/fit cycles.
    outlier_px: spots further than this from their prediction leave the fit; the first cycle
        allows ``outlier_start_px`` and the limit shrinks geometrically to ``outlier_px``.
    """

    hkl_tolerance: float = 0.3
    sigma_px: float = 0.5
    sigma_delpsi_deg: float = 0.1
    refine_detector: tuple = DETECTOR_NAMES
    restraint_cell_rel: float = 0.002
    restraint_distance_rel: float = 0.05
    restraint_tilt_deg: float = 1.0
    restraint_shift_px: float = 20.0
    cycles: int = 6
    outlier_px: float = 3.0
    outlier_start_px: float = 12.0

    def __post_init__(self):
        unknown = set(self.refine_detector) - set(DETECTOR_NAMES)
        if unknown:
            raise ValueError(f"refine_detector: unknown names {sorted(unknown)}; choose from {DETECTOR_NAMES}")
        for name in ("hkl_tolerance", "sigma_px", "sigma_delpsi_deg", "outlier_px"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 0 < self.hkl_tolerance <= 0.5:
            raise ValueError(f"hkl_tolerance must lie in (0, 0.5], got {self.hkl_tolerance!r}")


@dataclasses.dataclass
class SpotFit:
    """A refined still model and how well it predicts the spots.

    real_space: (3, 3) rows a, b, c, Angstrom, DIALS frame.  geometry: refined detector and beam.
    cell, cell_sigma: (6,) refined cell and standard errors (0 where fixed by symmetry).
    detector: refined detector parameters (DETECTOR_NAMES, relative to the header geometry)
        and their standard errors in ``detector_sigma``.
    hkl: (n_spots, 3) int nearest integer indices of every spot; indexed: (n_spots,) bool
        within hkl_tolerance; inlier: (n_spots,) bool indexed and used in the final fit.
    rmsd_px: root-mean-square position error over the inliers; rmsd_indexed_px: over all indexed.
    predicted_px, observed_px: (n_spots, 2) (slow, fast) predictions of ``hkl`` and the centroids.
    """

    real_space: np.ndarray
    geometry: StillGeometry
    cell: tuple
    cell_sigma: tuple
    orientation_sigma_deg: tuple
    detector: dict
    detector_sigma: dict
    hkl: np.ndarray
    indexed: np.ndarray
    inlier: np.ndarray
    rmsd_px: float
    rmsd_indexed_px: float
    delpsi_rmsd_deg: float
    predicted_px: np.ndarray
    observed_px: np.ndarray

    @property
    def n_indexed(self) -> int:
        return int(self.indexed.sum())


def apply_detector(header: StillGeometry, values: dict) -> StillGeometry:
    """The header geometry moved by ``values`` (DETECTOR_NAMES; missing = 0).

    Tilts turn the panel about its fast and slow axes through the point where the beam meets
    it; the distance moves the panel along the beam; shifts slide it in its own plane.
    """
    footprint = _beam_footprint(header)
    tilt = (
        math.radians(values.get("tilt_fast_deg", 0.0)) * header.fast
        + math.radians(values.get("tilt_slow_deg", 0.0)) * header.slow
    )
    rotation = rotation_matrix(tilt)
    fast = rotation @ header.fast
    slow = rotation @ header.slow
    origin = footprint + rotation @ (header.origin - footprint)
    origin = origin - values.get("distance_mm", 0.0) * header.beam_direction
    pixel_f, pixel_s = header.pixel_size_mm
    origin = (
        origin + values.get("shift_fast_px", 0.0) * pixel_f * fast + values.get("shift_slow_px", 0.0) * pixel_s * slow
    )
    # the fields are valid by construction; skip the dataclass checks (this runs in the inner loop)
    geometry = object.__new__(StillGeometry)
    geometry.__dict__.update(header.__dict__)
    geometry.fast, geometry.slow, geometry.origin = fast, slow, origin
    return geometry


def rotation_matrix(rotvec) -> np.ndarray:
    """Rodrigues: the rotation by |rotvec| radians about rotvec's direction, (3, 3)."""
    rotvec = np.asarray(rotvec, dtype=float)
    angle = math.sqrt(float(rotvec @ rotvec))
    if angle < 1e-15:
        return np.eye(3)
    x, y, z = rotvec / angle
    cross = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * (cross @ cross)


def _beam_footprint(geometry: StillGeometry) -> np.ndarray:
    normal = geometry.normal
    direction = -geometry.beam_direction
    t = float(geometry.origin @ normal) / float(direction @ normal)
    return t * direction


def real_space_from(orientation: np.ndarray, cell: tuple) -> np.ndarray:
    """Rows a, b, c of the cell turned by the rotation ``orientation`` (3, 3)."""
    return (orientation @ orthogonalization(cell)).T


def orientation_of(real_space: np.ndarray, cell: tuple) -> np.ndarray:
    """The proper rotation U closest to mapping the cell's orthogonal frame onto ``real_space``."""
    matrix = np.asarray(real_space, dtype=float).T @ np.linalg.inv(orthogonalization(cell))
    u, _, vt = np.linalg.svd(matrix)
    rotation = u @ vt
    if np.linalg.det(rotation) < 0:
        u[:, -1] *= -1
        rotation = u @ vt
    return rotation


def refine_on_spots(
    px: np.ndarray,
    real_space: np.ndarray,
    header: StillGeometry,
    space_group,
    target_cell: tuple,
    options: SpotRefineOptions | None = None,
) -> SpotFit:
    """Refine orientation, cell and detector on spot centroids.

    px: (n, 2) (slow, fast) centroids; real_space: (3, 3) starting rows a, b, c (DIALS frame);
    header: the header geometry (restraint centre); target_cell: the given cell (restraint
    centre).
    """
    options = options or SpotRefineOptions()
    px = np.asarray(px, dtype=float).reshape(-1, 2)
    model = _Model(real_space, header, space_group, target_cell, options)
    x = model.start()
    cycles = max(1, options.cycles)
    limits = np.geomspace(max(options.outlier_start_px, options.outlier_px), options.outlier_px, cycles)
    for cycle, limit in enumerate(limits):
        hkl, indexed, error, delpsi, valid = model.assign(x, px)
        keep = indexed & valid & (error <= limit)
        if keep.sum() < max(8, len(x)):
            break
        # DeltaPsi's weight follows its measured spread (mosaicity, bandwidth), never below the floor
        sigma_delpsi = max(math.radians(options.sigma_delpsi_deg), _robust_rms(delpsi[keep]))
        x = _gauss_newton(
            lambda x, h=hkl[keep], o=px[keep], s=sigma_delpsi: model.residuals(x, h, o, s),
            x,
            model.steps,
            iterations=4 if cycle < cycles - 1 else 12,
            n_robust=3 * int(keep.sum()),
        )
    hkl, indexed, error, delpsi, valid = model.assign(x, px)
    inlier = indexed & valid & (error <= options.outlier_px)
    sigmas = model.standard_errors(x, hkl[inlier], px[inlier])
    rotation, cell, values = model.unpack(x)
    n_cell = len(model.free)
    return SpotFit(
        real_space=real_space_from(rotation, cell),
        geometry=apply_detector(header, values),
        cell=tuple(float(v) for v in cell),
        cell_sigma=model.parameters.full_sigma(sigmas[3 : 3 + n_cell]),
        orientation_sigma_deg=tuple(float(math.degrees(s)) for s in sigmas[:3]),
        detector={n: float(values[n]) for n in DETECTOR_NAMES},
        detector_sigma={n: float(s) for n, s in zip(model.detector_names, sigmas[3 + n_cell :], strict=True)},
        hkl=hkl.astype(int),
        indexed=indexed,
        inlier=inlier,
        rmsd_px=_rms(error[inlier]),
        rmsd_indexed_px=_rms(error[indexed & valid]),
        delpsi_rmsd_deg=float(math.degrees(_rms(delpsi[inlier]))),
        predicted_px=model.predict(x, hkl)[0],
        observed_px=px,
    )


class _Model:
    """The parameter vector of the spot refinement: [rotation (3), free cell, detector]."""

    def __init__(self, real_space, header: StillGeometry, space_group, target_cell, options: SpotRefineOptions):
        self.header, self.options = header, options
        self.parameters = CellParameters(space_group)
        start_cell = self.parameters.symmetrize(cell_from_real_space(real_space))
        self.orientation = orientation_of(real_space, start_cell)
        self.free = self.parameters.free(start_cell)
        self.target_free = self.parameters.free(self.parameters.symmetrize(target_cell))
        self.detector_names = tuple(n for n in DETECTOR_NAMES if n in options.refine_detector)
        distance = header.distance_mm()
        width = {
            "shift_fast_px": options.restraint_shift_px,
            "shift_slow_px": options.restraint_shift_px,
            "distance_mm": options.restraint_distance_rel * distance,
            "tilt_fast_deg": options.restraint_tilt_deg,
            "tilt_slow_deg": options.restraint_tilt_deg,
        }
        self.detector_width = np.array([width[n] for n in self.detector_names])
        self.cell_width = np.array(
            [
                options.restraint_cell_rel * (t if n in ("a", "b", "c") else 90.0)
                for n, t in zip(self.parameters.names, self.target_free, strict=True)
            ]
        )
        step = {
            "shift_fast_px": 1e-3,
            "shift_slow_px": 1e-3,
            "distance_mm": 1e-3,
            "tilt_fast_deg": 1e-4,
            "tilt_slow_deg": 1e-4,
        }
        self.steps = np.concatenate(
            [np.full(3, 1e-6), np.maximum(np.abs(self.free) * 1e-6, 1e-7), [step[n] for n in self.detector_names]]
        )

    def start(self) -> np.ndarray:
        return np.concatenate([np.zeros(3), self.free, np.zeros(len(self.detector_names))])

    def unpack(self, x):
        n_cell = len(self.free)
        rotation = rotation_matrix(x[:3]) @ self.orientation
        cell = self.parameters.cell(x[3 : 3 + n_cell])
        values = dict.fromkeys(DETECTOR_NAMES, 0.0)
        values.update(zip(self.detector_names, x[3 + n_cell :], strict=True))
        return rotation, cell, values

    def predict(self, x, hkl):
        rotation, cell, values = self.unpack(x)
        return predict_still_px(real_space_from(rotation, cell), hkl, apply_detector(self.header, values))

    def assign(self, x, px):
        """Nearest integer indices of every spot under the model x, and how well they fit."""
        rotation, cell, values = self.unpack(x)
        geometry = apply_detector(self.header, values)
        model = real_space_from(rotation, cell)
        hkl_frac = fractional_hkl(model, geometry.q_vectors(px))
        hkl = np.rint(hkl_frac)
        indexed = np.all(np.abs(hkl_frac - hkl) <= self.options.hkl_tolerance, axis=1) & np.any(hkl != 0, axis=1)
        predicted, delpsi, valid = predict_still_px(model, hkl, geometry)
        error = np.linalg.norm(predicted - px, axis=1)
        return hkl, indexed, error, delpsi, valid

    def residuals(self, x, hkl, observed, sigma_delpsi):
        """Weighted residuals: positions / sigma_px, DeltaPsi / its spread, restraints / widths."""
        predicted, delpsi, _ = self.predict(x, hkl)
        n_cell = len(self.free)
        parts = [((predicted - observed) / self.options.sigma_px).ravel(), delpsi / sigma_delpsi]
        if self.options.restraint_cell_rel > 0:
            parts.append((x[3 : 3 + n_cell] - self.target_free) / self.cell_width)
        parts.append(x[3 + n_cell :] / self.detector_width)
        return np.concatenate(parts)

    def standard_errors(self, x, hkl, observed) -> np.ndarray:
        """sigma^2 (J^T J)^-1 from the position and DeltaPsi residuals (in px) at the solution."""
        if len(hkl) * 2 <= len(x):
            return np.full(len(x), math.nan)
        sigma_delpsi = math.radians(self.options.sigma_delpsi_deg)

        def positions(x):
            predicted, delpsi, _ = self.predict(x, hkl)
            return np.concatenate([(predicted - observed).ravel(), delpsi / sigma_delpsi * self.options.sigma_px])

        base = positions(x)
        jacobian = _jacobian(positions, x, base, self.steps)
        variance = float(base @ base) / max(base.size - len(x), 1)
        try:
            covariance = np.linalg.inv(jacobian.T @ jacobian) * variance
        except np.linalg.LinAlgError:
            return np.full(len(x), math.nan)
        return np.sqrt(np.clip(np.diag(covariance), 0, None))


def _jacobian(fun, x, base, steps) -> np.ndarray:
    jacobian = np.empty((base.size, len(x)))
    for j, step in enumerate(steps):
        shifted = x.copy()
        shifted[j] += step
        jacobian[:, j] = (fun(shifted) - base) / step
    return jacobian


def _gauss_newton(
    fun, x, steps, *, iterations: int = 12, f_scale: float = 2.0, n_robust: int | None = None
) -> np.ndarray:
    """Levenberg-Marquardt on the soft-L1 cost sum 2 f^2 (sqrt(1 + (r/f)^2) - 1) of the first
    ``n_robust`` residuals (all when None) plus the plain sum of squares of the rest, by
    iteratively reweighted least squares; the normal equations are p x p, so each step is cheap.

    The restraints come last and stay quadratic: under the soft-L1 loss a restraint's pull
    stops growing past f_scale widths, and a cell could wander off its target for good."""
    robust = slice(0, n_robust)

    def cost(r):
        soft = r[robust]
        return float(np.sum(2 * f_scale**2 * (np.sqrt(1 + (soft / f_scale) ** 2) - 1)) + np.sum(r[soft.size :] ** 2))

    residual = fun(x)
    current = cost(residual)
    damping = 1e-3
    for _ in range(iterations):
        weight = np.ones_like(residual)
        weight[robust] = (1 + (residual[robust] / f_scale) ** 2) ** -0.5
        jacobian = _jacobian(fun, x, residual, steps)
        jw = jacobian * weight[:, None]
        normal = jw.T @ jacobian
        gradient = jw.T @ residual
        scale = np.sqrt(np.maximum(np.diag(normal), 1e-30))
        improved = False
        for _attempt in range(8):
            matrix = normal + damping * np.diag(scale * scale)
            try:
                delta = -np.linalg.solve(matrix, gradient)
            except np.linalg.LinAlgError:
                damping *= 10
                continue
            trial = x + delta
            trial_residual = fun(trial)
            trial_cost = cost(trial_residual)
            if np.isfinite(trial_cost) and trial_cost < current:
                relative = (current - trial_cost) / max(current, 1e-300)
                x, residual, current = trial, trial_residual, trial_cost
                damping = max(damping / 3, 1e-9)
                improved = True
                break
            damping *= 10
        if not improved or relative < 1e-7:
            break
    return x


def _robust_rms(values: np.ndarray) -> float:
    """1.4826 x the median absolute value: an RMS that a few wild values do not inflate."""
    return float(1.4826 * np.median(np.abs(values))) if values.size else math.nan


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(values * values))) if values.size else math.nan
