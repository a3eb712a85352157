"""A still's spots under an anisotropic orientation spread: the diagnosis of why DIALS' stills
predictor leaves about 1.3 px of scatter on the thaumatin grid-scan frames.

DIALS' stills predictor brings each relp onto the Ewald sphere by the smallest turn, about
``e1 = q x s0``: the relp keeps its resolution and its azimuth about the beam.  That is where a
crystal with an *isotropic* mosaic spread puts the spot: of the mosaic blocks, those turned by
DeltaPsi about e1 light the reflection, and their turns about the other axes average out.  If
the blocks are turned mostly about one axis (a crystal bent or split about it, or one that
turns during the exposure), the blocks that light a reflection are turned about that axis, and
the spot lands off DIALS' prediction along the azimuth by an amount that grows with DeltaPsi
and with the distance from the beam, with a sign that depends on the azimuth.

Here the blocks' turns have a covariance ``Sigma`` (3, 3); the most probable turn that
satisfies the Bragg condition for a relp is about ``Sigma e1``, not e1.  ``Sigma = I`` is
DIALS' predictor exactly.  :func:`fit_anisotropic_spread` refines the orientation, the cell, the
panel's shifts and tilts and the shape of Sigma on indexed spots; the RMSD it reaches, against
the RMSD of DIALS' predictor with every parameter free, measures how much of the scatter the
spread explains.  This is a diagnostic: a DIALS ``.expt`` has no field for Sigma, so what is
written stays the single-orientation model.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.linalg import expm
from scipy.optimize import least_squares

from .dials_geometry import StillGeometry, _cross, reciprocal_matrix
from .spot_refine import apply_detector, orientation_of, real_space_from, rotation_matrix
from .unit_cell import CellParameters, cell_from_real_space

_PANEL_NAMES = ("shift_fast_px", "shift_slow_px", "tilt_fast_deg", "tilt_slow_deg")


def turn_onto_sphere(q: np.ndarray, axis: np.ndarray, s0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn each relp q (n, 3) about its own unit axis (n, 3) by the smallest angle that puts
    it on the Ewald sphere |s0 + q'| = |s0|.

    Returns (q' (n, 3), angle (n,) radians, valid (n,) bool: a turn about that axis reaches
    the sphere)."""
    along = np.einsum("ij,ij->i", q, axis)[:, None] * axis
    across = q - along
    normal = _cross(axis, across)
    # s0 . q'(t) = s0 . along + cos t s0 . across + sin t s0 . normal, and on the sphere
    # 2 s0 . q' + |q|^2 = 0: solve  c cos t + s sin t = r
    c = 2.0 * (across @ s0)
    s = 2.0 * (normal @ s0)
    r = -(2.0 * (along @ s0) + np.einsum("ij,ij->i", q, q))
    amplitude = np.hypot(c, s)
    ratio = r / np.where(amplitude > 0, amplitude, 1.0)
    valid = (amplitude > 0) & (np.abs(ratio) <= 1.0)
    phase = np.arctan2(s, c)
    spread = np.arccos(np.clip(ratio, -1.0, 1.0))
    first = np.angle(np.exp(1j * (phase + spread)))
    second = np.angle(np.exp(1j * (phase - spread)))
    angle = np.where(np.abs(first) <= np.abs(second), first, second)
    turned = along + np.cos(angle)[:, None] * across + np.sin(angle)[:, None] * normal
    return turned, angle, valid


def predict_still_px_anisotropic(
    real_space: np.ndarray, hkl: np.ndarray, geometry: StillGeometry, spread: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spot positions when the mosaic blocks' turns have covariance ``spread`` (3, 3, positive
    definite; its scale does not matter): each relp turns onto the sphere about spread @ e1.

    real_space: (3, 3) rows a, b, c (DIALS frame); hkl: (n, 3).  Returns ((n, 2) (slow, fast)
    px, (n,) turn in radians, (n,) bool valid).  ``spread = I`` is DIALS' stills predictor.
    """
    hkl = np.asarray(hkl, dtype=float).reshape(-1, 3)
    q = hkl @ reciprocal_matrix(real_space).T
    s0 = geometry.s0
    e1 = _cross(q, (s0 / np.linalg.norm(s0))[None, :])
    axis = e1 @ np.asarray(spread, dtype=float).T
    length = np.linalg.norm(axis, axis=1)
    valid = length > 1e-12
    axis = axis / np.where(valid, length, 1.0)[:, None]
    turned, angle, reachable = turn_onto_sphere(q, axis, s0)
    px, hit = geometry.px_from_rays(s0 + turned)
    return px, angle, valid & reachable & hit


@dataclasses.dataclass
class AnisotropicSpreadFit:
    """What :func:`fit_anisotropic_spread` found.

    rmsd_px: position RMSD of the spots under the anisotropic model; rmsd_dials_px: under DIALS'
        predictor with every parameter of the same fit free but Sigma = I (the single-orientation
        floor on these spots).
    spread: (3, 3) Sigma, trace 3.  Only its action on turns across the beam shows in a still
        (e1 is always normal to s0), so what the spots determine is ``Sigma P`` with P the
        projection across the beam: axis (3,) is its leading left singular vector, the lab
        direction (DIALS frame, sign arbitrary) the blocks mostly turn about, and anisotropy
        its second singular value over the first (1 = isotropic, 0 = turns about one axis).
    real_space, geometry: the refined crystal and panel.  residual_px: (n, 2) (slow, fast).
    """

    rmsd_px: float
    rmsd_dials_px: float
    spread: np.ndarray
    axis: np.ndarray
    anisotropy: float
    real_space: np.ndarray
    geometry: StillGeometry
    residual_px: np.ndarray
    n_spots: int


def _spread_matrix(shape: np.ndarray) -> np.ndarray:
    """A positive-definite Sigma of trace 3 from 5 numbers (a traceless symmetric log)."""
    a, b, c, d, e = shape
    log = np.array([[a, c, d], [c, b, e], [d, e, -a - b]])
    matrix = expm(log)
    return 3.0 * matrix / np.trace(matrix)


def fit_anisotropic_spread(
    px: np.ndarray,
    hkl: np.ndarray,
    real_space: np.ndarray,
    geometry: StillGeometry,
    space_group,
    *,
    turn_weight_per_deg: float = 0.2,
    shape_starts: tuple = ((0.0, 0.0, 0.0, 0.0, 0.0),),
) -> AnisotropicSpreadFit:
    """Refine orientation, cell (its lattice constraints kept), panel shifts and tilts, and the
    shape of Sigma on indexed spots at (slow, fast) ``px`` (n, 2) with indices ``hkl`` (n, 3),
    starting from ``real_space`` and ``geometry``; then the same with Sigma = I.

    The panel distance stays (a still cannot tell it from the cell's scale).  A weak term
    ``turn_weight_per_deg`` x the turn (deg, in px units) keeps the crystal's tilts across the
    beam determined, as DeltaPsi does in :mod:`braggsim.spot_refine`.  Soft-L1 loss, 1 px scale.
    """
    px = np.asarray(px, dtype=float).reshape(-1, 2)
    hkl = np.asarray(hkl, dtype=float).reshape(-1, 3)
    if len(px) != len(hkl) or len(px) < 20:
        raise ValueError(f"need at least 20 indexed spots with their hkl, got {len(px)} and {len(hkl)}")
    parameters = CellParameters(space_group)
    start_cell = parameters.symmetrize(cell_from_real_space(real_space))
    orientation = orientation_of(real_space, start_cell)
    free_cell = parameters.free(start_cell)
    n_cell = len(free_cell)

    def model(x):
        rotation = rotation_matrix(x[:3]) @ orientation
        cell = parameters.cell(free_cell * (1.0 + x[3 : 3 + n_cell]))
        panel = apply_detector(geometry, dict(zip(_PANEL_NAMES, x[3 + n_cell : 7 + n_cell], strict=True)))
        return real_space_from(rotation, cell), panel

    def residuals(x, anisotropic):
        real, panel = model(x)
        spread = _spread_matrix(x[7 + n_cell :]) if anisotropic else np.eye(3)
        predicted, turn, valid = predict_still_px_anisotropic(real, hkl, panel, spread)
        error = np.where(valid[:, None], predicted - px, 0.0)
        return np.concatenate([error.ravel(), turn_weight_per_deg * np.degrees(np.where(valid, turn, 0.0))])

    n_rigid = 7 + n_cell
    scale = np.concatenate([np.full(3, 1e-3), np.full(n_cell, 1e-3), [1.0, 1.0, 0.1, 0.1]])
    isotropic = least_squares(
        residuals, np.zeros(n_rigid), args=(False,), loss="soft_l1", f_scale=1.0, x_scale=scale, diff_step=1e-6
    )
    best = None
    # Sigma's shape from each start in shape_starts (the log of Sigma, 5 numbers; zeros = round),
    # keeping the best
    for start in shape_starts:
        x0 = np.concatenate([isotropic.x, np.asarray(start, dtype=float)])
        found = least_squares(
            residuals,
            x0,
            args=(True,),
            loss="soft_l1",
            f_scale=1.0,
            x_scale=np.concatenate([scale, np.ones(5)]),
            diff_step=1e-6,
        )
        if best is None or found.cost < best.cost:
            best = found
    real, panel = model(best.x)
    spread = _spread_matrix(best.x[n_rigid:])
    predicted, _, valid = predict_still_px_anisotropic(real, hkl, panel, spread)
    residual = predicted - px
    dials_real, dials_panel = model(isotropic.x)
    dials_predicted, _, dials_valid = predict_still_px_anisotropic(dials_real, hkl, dials_panel, np.eye(3))
    beam = geometry.beam_direction
    across = np.eye(3) - np.outer(beam, beam)
    left, singular, _ = np.linalg.svd(spread @ across)
    return AnisotropicSpreadFit(
        rmsd_px=_rms(residual[valid]),
        rmsd_dials_px=_rms((dials_predicted - px)[dials_valid]),
        spread=spread,
        axis=left[:, 0],
        anisotropy=float(singular[1] / singular[0]),
        real_space=real,
        geometry=panel,
        residual_px=residual,
        n_spots=len(px),
    )


def _rms(residual: np.ndarray) -> float:
    return float(math.sqrt(np.mean(np.sum(residual * residual, axis=1)))) if len(residual) else math.nan
