"""Refinement of an indexed still against its pixels, near the spots only.

The target, as diffBragg sets it up for stills: a shoebox of (2r+1)^2 pixels around each
indexed spot, and in each shoebox the expected photons

    lambda_p = I_j * G_p(theta) + b0_j + b1_j * dslow_p + b2_j * dfast_p

- ``G_p``: the spot's profile where the Ewald sphere cuts the reflection's relp, summed over
  2 x 2 subpixels and normalised over the shoebox.  The relp is nanoBragg's Gaussian lattice
  transform (``-gauss_xtal``: ``exp(-2 sum_i (dh_i N_i)^2 / 0.63)``, isotropic in 1/A for an
  orthogonal cell, width set by the domain size D = N * edge) smeared across the reciprocal
  vector G by the mosaic spread (domains turned by a Gaussian of RMS angle eta move the relp
  by eta |G| across G and not along it).  That is the mean of nanoBragg's mosaic-domain sum in
  closed form: one term per pixel instead of one per domain, which makes a few hundred
  shoeboxes cheap enough for a whole still in seconds.  Polarization and solid angle vary by
  well under 1 % across a shoebox and are left in ``I_j``.
- ``I_j``: a free intensity per reflection; structure factors are never needed.
- ``b0 + b1 dslow + b2 dfast``: a background plane per shoebox.  Why a plane: around a spot
  the water ring, air scatter and the diffuse tails vary smoothly over 9 px, and a plane per
  shoebox fits all of them without a model of the solvent or the beam path; a global model
  (the water/air .stol profile) would need those and would still leave local slopes.  It costs
  three linear parameters per spot, eliminated in closed form with I_j.

The global parameters theta: crystal orientation, the cell's free parameters (lattice
constraints kept), detector distance and beam centre (panel shifts), mosaic spread and domain
size (N = size / edge on each axis).  The likelihood is Poisson in photons (counts / gain).
For every trial theta the per-shoebox linear parameters are solved by iteratively reweighted
least squares (the Poisson maximum), so the loss is the profile likelihood and its gradient
in theta is the plain gradient with them held (the envelope theorem); torch's L-BFGS does the
rest.  Standard errors come from the Fisher information with the per-shoebox parameters
eliminated (a Schur complement), not from ignoring them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import torch
from scipy.optimize import minimize

from .dials_geometry import StillGeometry, predict_still_px
from .spot_refine import SpotFit, orientation_of
from .unit_cell import CellParameters

__all__ = [
    "GAUSS_WIDTH",
    "PixelRefineOptions",
    "PixelRefineStep",
    "PixelRefinement",
    "Progress",
    "Shoeboxes",
    "THETA_NAMES",
    "refine_still_pixels",
]

GAUSS_WIDTH = 0.63  # nanoBragg's gauss_xtal width constant
THETA_NAMES = (
    "rot_x_mrad",
    "rot_y_mrad",
    "rot_z_mrad",
    "distance_mm",
    "shift_fast_px",
    "shift_slow_px",
    "log_mosaic",
    "log_domain",
)


@dataclasses.dataclass(frozen=True)
class PixelRefineOptions:
    """Knobs of the pixel refinement.

    half_width_px: shoebox half-width r ((2r+1)^2 pixels).
    max_reflections: strongest indexed spots used (time grows linearly with it).
    oversample: subpixels per pixel edge.
    gain: ADU per photon (1 for a photon-counting detector).
    start_mosaic_deg, start_domain_A: starting mosaic spread and domain size.
    iterations: L-BFGS iterations.
    refine_cell, refine_detector: whether the cell and the distance/beam centre move.
    max_rmsd_worsening: the refined model replaces the spot-fit model in the .expt only if the
        spots' position RMSD (DIALS' stills predictor) grows by less than this fraction.
    """

    half_width_px: int = 4
    max_reflections: int = 150
    oversample: int = 2
    gain: float = 1.0
    start_mosaic_deg: float = 0.1
    start_domain_A: float = 3000.0
    iterations: int = 20
    refine_cell: bool = True
    refine_detector: bool = True
    max_rmsd_worsening: float = 0.0

    def __post_init__(self):
        if int(self.half_width_px) < 1:
            raise ValueError(f"half_width_px must be >= 1, got {self.half_width_px!r}")
        if int(self.max_reflections) < 5:
            raise ValueError(f"max_reflections must be >= 5, got {self.max_reflections!r}")
        if not (self.gain > 0 and math.isfinite(self.gain)):
            raise ValueError(f"gain must be > 0 ADU/photon, got {self.gain!r}")
        if not (self.start_mosaic_deg > 0 and self.start_domain_A > 0):
            raise ValueError("start_mosaic_deg and start_domain_A must be > 0")


@dataclasses.dataclass
class PixelRefinement:
    """Outcome of :func:`refine_still_pixels`.

    accepted: whether the refined model is better for the spots than the spot-fit model (it
        then replaces it).  real_space, geometry, cell: the refined model.
    mosaic_deg, domain_size_A: refined mosaic spread (RMS angle of the domains' Gaussian) and
        domain size.
    parameters: name -> {"value", "sigma"}.
    initial_nll, final_nll: Poisson negative log-likelihood (profile) before and after.
    rmsd_before_px, rmsd_after_px: spot-position RMSD (DIALS stills predictor) of the spot fit's
        inliers under the spot-fit and the refined model.
    """

    accepted: bool
    real_space: np.ndarray
    geometry: StillGeometry
    cell: tuple
    mosaic_deg: float
    domain_size_A: float
    parameters: dict
    n_reflections: int
    n_pixels: int
    initial_nll: float
    final_nll: float
    rmsd_before_px: float
    rmsd_after_px: float
    iterations: int
    message: str = ""

    def summary(self) -> dict:
        return {
            "accepted": self.accepted,
            "n_reflections": self.n_reflections,
            "n_pixels": self.n_pixels,
            "initial_nll": self.initial_nll,
            "final_nll": self.final_nll,
            "rmsd_before_px": self.rmsd_before_px,
            "rmsd_after_px": self.rmsd_after_px,
            "mosaic_deg": self.mosaic_deg,
            "domain_size_A": self.domain_size_A,
            "cell": list(self.cell),
            "iterations": self.iterations,
            "message": self.message,
        }


@dataclasses.dataclass
class PixelRefineStep:
    """The model after one iteration of :func:`refine_still_pixels`, for a progress callback.

    iteration: L-BFGS iterations done (0 = the start); nll: the profile Poisson negative
    log-likelihood there.  real_space: (3, 3) rows a, b, c, Angstrom (DIALS frame);
    geometry: the panel moved by the distance and beam-centre shifts; cell: (6,);
    mosaic_deg, domain_size_A: as in :class:`PixelRefinement`.
    """

    iteration: int
    nll: float
    real_space: np.ndarray
    geometry: StillGeometry
    cell: tuple
    mosaic_deg: float
    domain_size_A: float


class Shoeboxes:
    """The pixels near each chosen reflection, as (R, P) arrays (P = (2r+1)^2).

    hkl: (R, 3); slow, fast: (R, P) pixel indices; counts: (R, P) photons; trusted: (R, P) bool;
    dslow, dfast: (R, P) offsets from the shoebox centre, px.
    """

    def __init__(self, data, mask, centres_px, hkl, half_width, gain, exclude_boxes=None):
        offsets = np.arange(-half_width, half_width + 1)
        ds, df = np.meshgrid(offsets, offsets, indexing="ij")
        centre = np.rint(centres_px).astype(int)
        self.slow = centre[:, 0:1] + ds.ravel()[None, :]
        self.fast = centre[:, 1:2] + df.ravel()[None, :]
        inside = (self.slow >= 0) & (self.slow < data.shape[0]) & (self.fast >= 0) & (self.fast < data.shape[1])
        slow_c, fast_c = np.clip(self.slow, 0, data.shape[0] - 1), np.clip(self.fast, 0, data.shape[1] - 1)
        self.counts = np.where(inside, data[slow_c, fast_c], 0.0) / gain
        self.trusted = inside & mask[slow_c, fast_c]
        if exclude_boxes is not None:
            self.trusted &= ~exclude_boxes(self.slow, self.fast)
        self.dslow = np.broadcast_to(ds.ravel()[None, :], self.slow.shape).astype(float)
        self.dfast = np.broadcast_to(df.ravel()[None, :], self.slow.shape).astype(float)
        self.hkl = np.asarray(hkl, dtype=float)


def _other_spot_pixels(spots, chosen_index):
    """A function (slow, fast) -> bool: inside the bounding box of a strong spot other than the
    shoebox's own (its pixels belong to another reflection whose intensity is not modelled)."""
    boxes = np.asarray(spots.bbox)
    owner_of = {}
    for row, (s0, s1, f0, f1) in enumerate(boxes):
        owner_of[row] = (s0, s1, f0, f1)

    def exclude(slow, fast):
        out = np.zeros(slow.shape, dtype=bool)
        for r in range(slow.shape[0]):
            s_lo, s_hi = slow[r].min(), slow[r].max() + 1
            f_lo, f_hi = fast[r].min(), fast[r].max() + 1
            near = np.flatnonzero(
                (boxes[:, 0] < s_hi) & (boxes[:, 1] > s_lo) & (boxes[:, 2] < f_hi) & (boxes[:, 3] > f_lo)
            )
            for other in near:
                if other == chosen_index[r]:
                    continue
                s0, s1, f0, f1 = owner_of[other]
                out[r] |= (slow[r] >= s0) & (slow[r] < s1) & (fast[r] >= f0) & (fast[r] < f1)
        return out

    return exclude


def _cell_map(parameters: CellParameters):
    """(selection (6, n_free), constant (6,)): cell = selection @ free + constant."""
    selection = np.zeros((6, len(parameters.names)))
    constant = np.asarray(parameters.cell(np.zeros(len(parameters.names))), dtype=np.float64)
    for row, index in enumerate(parameters.sources()):
        if index is not None:
            selection[row, index] = 1.0
            constant[row] = 0.0
    return selection, constant


def _orthogonalization_t(cell: torch.Tensor) -> torch.Tensor:
    """Real axes as columns (3, 3) from a (6,) cell tensor (lengths in A, angles in degrees)."""
    a, b, c = cell[0], cell[1], cell[2]
    al, be, ga = (torch.deg2rad(cell[i]) for i in (3, 4, 5))
    ca, cb, cg, sg = torch.cos(al), torch.cos(be), torch.cos(ga), torch.sin(ga)
    factor = torch.sqrt(torch.clamp(1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg, min=1e-12))
    zero = torch.zeros_like(a)
    return torch.stack(
        [
            torch.stack([a, b * cg, c * cb]),
            torch.stack([zero, b * sg, c * (ca - cb * cg) / sg]),
            torch.stack([zero, zero, c * factor / sg]),
        ]
    )


def _rotation_t(rotvec: torch.Tensor) -> torch.Tensor:
    angle = torch.sqrt((rotvec * rotvec).sum() + 1e-30)
    axis = rotvec / angle
    x, y, z = axis.unbind()
    zero = torch.zeros_like(x)
    cross = torch.stack([torch.stack([zero, -z, y]), torch.stack([z, zero, -x]), torch.stack([-y, x, zero])])
    eye = torch.eye(3, dtype=rotvec.dtype)
    return eye + torch.sin(angle) * cross + (1 - torch.cos(angle)) * (cross @ cross)


class _ProfileModel:
    """Profiles G (R, P) of the shoeboxes as a function of theta (torch, float64)."""

    def __init__(self, boxes: Shoeboxes, fit: SpotFit, group, options: PixelRefineOptions):
        self.options = options
        self.parameters = CellParameters(group)
        selection, constant = _cell_map(self.parameters)
        self.selection = torch.as_tensor(selection)
        self.constant = torch.as_tensor(constant)
        self.free0 = torch.as_tensor(self.parameters.free(self.parameters.symmetrize(fit.cell)))
        self.orientation = torch.as_tensor(orientation_of(fit.real_space, self.parameters.symmetrize(fit.cell)))
        g = fit.geometry
        self.geometry = g
        self.origin = torch.as_tensor(g.origin)
        self.fast = torch.as_tensor(g.fast)
        self.slow = torch.as_tensor(g.slow)
        self.beam = torch.as_tensor(g.beam_direction)
        self.s0 = torch.as_tensor(g.s0)
        self.wavelength = float(g.wavelength_A)
        pixel_f, pixel_s = g.pixel_size_mm
        self.pixel_f, self.pixel_s = pixel_f, pixel_s
        o = options.oversample
        sub = (np.arange(o) + 0.5) / o
        su, fu = np.meshgrid(sub, sub, indexing="ij")
        slow = boxes.slow[:, :, None] + su.ravel()[None, None, :]  # pixel i spans [i, i+1)
        fast = boxes.fast[:, :, None] + fu.ravel()[None, None, :]
        self.x_mm = torch.as_tensor(fast * pixel_f)  # (R, P, S)
        self.y_mm = torch.as_tensor(slow * pixel_s)
        self.hkl = torch.as_tensor(boxes.hkl)
        self.n_theta = len(THETA_NAMES) + len(self.parameters.names)

    def theta0(self) -> torch.Tensor:
        o = self.options
        values = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, math.log(o.start_mosaic_deg), math.log(o.start_domain_A)]
        return torch.tensor(values + [0.0] * len(self.parameters.names), dtype=torch.float64)

    def unpack(self, theta: torch.Tensor):
        """(rotation (3,3), cell (6,), origin (3,), mosaic_rad, domain_A) from theta."""
        rotation = _rotation_t(theta[0:3] * 1e-3) @ self.orientation
        distance, shift_f, shift_s = theta[3], theta[4], theta[5]
        origin = (
            self.origin - distance * self.beam + shift_f * self.pixel_f * self.fast + shift_s * self.pixel_s * self.slow
        )
        mosaic = torch.deg2rad(torch.exp(theta[6]))
        domain = torch.exp(theta[7])
        free = self.free0 * (1 + 1e-3 * theta[8:])  # cell moves in per-mille steps
        cell = self.selection @ free + self.constant
        return rotation, cell, origin, mosaic, domain

    def profiles(self, theta: torch.Tensor) -> torch.Tensor:
        rotation, cell, origin, mosaic, domain = self.unpack(theta)
        real = (rotation @ _orthogonalization_t(cell)).T  # rows a, b, c
        position = origin + self.x_mm[..., None] * self.fast + self.y_mm[..., None] * self.slow  # (R, P, S, 3)
        q = position / torch.linalg.vector_norm(position, dim=-1, keepdim=True) / self.wavelength - self.s0
        relp = self.hkl @ torch.linalg.inv(real).T  # (R, 3) = A h
        length = torch.linalg.vector_norm(relp, dim=-1, keepdim=True)
        along = relp / length
        delta = q - relp[:, None, None, :]  # (R, P, S, 3)
        radial = (delta * along[:, None, None, :]).sum(-1)
        tangential_sq = (delta * delta).sum(-1) - radial * radial
        # size: nanoBragg's gauss_xtal exp(-2 sum_i (dh_i N_i)^2 / 0.63) with N_i = D / |a_i|
        # is exp(-|dq|^2 / (2 s^2)) with s^2 = 0.63 / (4 D^2) for an orthogonal cell;
        # mosaic: domains turned by a Gaussian of RMS angle eta smear the relp by eta |G|
        # across G, and not along it
        size_var = GAUSS_WIDTH / (4.0 * domain * domain)
        mosaic_var = (mosaic * length[:, None, None, 0]) ** 2
        exponent = radial * radial / size_var + tangential_sq / (size_var + mosaic_var)
        g = torch.exp(-0.5 * exponent).sum(-1)  # (R, P)
        return g / (g.sum(dim=1, keepdim=True) + 1e-300)


def _solve_linear(profile, counts, trusted, dslow, dfast, iterations: int = 4):
    """Per-shoebox Poisson fit of [I, b0, b1, b2] by IRLS; returns (R, 4) (no graph)."""
    with torch.no_grad():
        design = torch.stack([profile, torch.ones_like(profile), dslow, dfast], dim=-1)  # (R, P, 4)
        weight = trusted.to(profile.dtype)
        beta = None
        for _ in range(iterations + 1):
            wd = design * weight[..., None]
            normal = wd.transpose(1, 2) @ design + 1e-9 * torch.eye(4, dtype=profile.dtype)
            rhs = (wd * counts[..., None]).sum(1)
            beta = torch.linalg.solve(normal, rhs[..., None])[..., 0]
            expected = (design @ beta[..., None])[..., 0]
            weight = trusted.to(profile.dtype) / torch.clamp(expected, min=0.5)
        return beta


def _expected(profile, beta, dslow, dfast):
    return beta[:, 0:1] * profile + beta[:, 1:2] + beta[:, 2:3] * dslow + beta[:, 3:4] * dfast


def _nll(expected, counts, trusted):
    lam = torch.clamp(expected, min=1e-3)
    return ((lam - counts * torch.log(lam)) * trusted).sum()


Progress = Callable[[PixelRefineStep], object]


def refine_still_pixels(
    frame, spots, fit: SpotFit, group, cell, options: PixelRefineOptions, *, progress: Progress | None = None
) -> PixelRefinement:
    """Refine an indexed still against the pixels around its strongest indexed spots.

    frame: anything with ``data`` (S, F) and ``mask`` (S, F) bool, True = trusted (a
    :class:`braggsim.io.Frame`).  progress: called with a :class:`PixelRefineStep` at the
    start and after every iteration (a GUI follows the run with it); a true return value
    ends the refinement there, which then finishes as usual from the best parameters so far.

    Runs torch on one thread: the tensors are small (shoeboxes, not frames), and on a busy
    machine a second thread's synchronisation costs more than it gives (5x in one measurement).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _refine_still_pixels(frame, spots, fit, group, cell, options, progress)
    finally:
        torch.set_num_threads(threads)


def _step(model, fit: SpotFit, theta: torch.Tensor, iteration: int, nll: float) -> PixelRefineStep:
    with torch.no_grad():
        rotation, cell_t, origin, mosaic, domain = model.unpack(theta)
        real = (rotation @ _orthogonalization_t(cell_t)).T.numpy()
    geometry = fit.geometry.copy()
    geometry.origin = origin.numpy()
    return PixelRefineStep(
        iteration=iteration,
        nll=nll,
        real_space=real,
        geometry=geometry,
        cell=tuple(float(x) for x in cell_t),
        mosaic_deg=float(math.degrees(float(mosaic))),
        domain_size_A=float(domain),
    )


def _refine_still_pixels(
    frame, spots, fit: SpotFit, group, cell, options: PixelRefineOptions, progress: Progress | None
) -> PixelRefinement:
    chosen = np.flatnonzero(fit.inlier)
    if chosen.size < 5:
        raise ValueError(f"only {chosen.size} indexed spots: too few for a pixel refinement")
    chosen = chosen[np.argsort(-np.asarray(spots.intensity)[chosen])][: options.max_reflections]
    centres = fit.predicted_px[chosen]
    boxes = Shoeboxes(
        frame.data,
        frame.mask,
        centres,
        fit.hkl[chosen],
        options.half_width_px,
        options.gain,
        exclude_boxes=_other_spot_pixels(spots, chosen),
    )
    model = _ProfileModel(boxes, fit, group, options)
    counts = torch.as_tensor(boxes.counts, dtype=torch.float64)
    trusted = torch.as_tensor(boxes.trusted)
    dslow = torch.as_tensor(boxes.dslow)
    dfast = torch.as_tensor(boxes.dfast)
    fixed = torch.zeros(model.n_theta, dtype=torch.bool)
    if not options.refine_detector:
        fixed[3:6] = True
    if not options.refine_cell:
        fixed[8:] = True

    def loss_at(theta):
        profile = model.profiles(theta)
        beta = _solve_linear(profile.detach(), counts, trusted, dslow, dfast)
        return _nll(_expected(profile, beta, dslow, dfast), counts, trusted)

    start = model.theta0()
    with torch.no_grad():
        initial = float(loss_at(start))
    evaluations = [0]
    free_index = np.flatnonzero(~fixed.numpy())

    def value_and_gradient(x_free):
        theta = start.clone()
        theta[free_index] = torch.as_tensor(x_free)
        theta.requires_grad_(True)
        loss = loss_at(theta)
        loss.backward()
        evaluations[0] += 1
        gradient = theta.grad.numpy()[free_index]
        if not (torch.isfinite(loss) and np.all(np.isfinite(gradient))):
            return math.inf, np.zeros_like(x_free)
        return float(loss.detach()), gradient

    message = ""
    stopped = progress is not None and bool(progress(_step(model, fit, start, 0, initial)))
    iterations_done = [0]

    def after_iteration(intermediate_result):  # scipy passes the result by this name
        iterations_done[0] += 1
        theta = start.clone()
        theta[free_index] = torch.as_tensor(intermediate_result.x)
        if progress(_step(model, fit, theta, iterations_done[0], float(intermediate_result.fun))):
            raise StopIteration  # scipy ends the run and returns these parameters

    # scipy's L-BFGS-B (torch.optim would import torch's compiler stack, seconds per process)
    x_best = start.numpy()[free_index]
    if not stopped:
        x_best = minimize(
            value_and_gradient,
            x_best,
            jac=True,
            method="L-BFGS-B",
            callback=after_iteration if progress is not None else None,
            options={"maxiter": options.iterations, "maxcor": 10},
        ).x
    best = start.clone()
    best[free_index] = torch.as_tensor(x_best)
    if not torch.all(torch.isfinite(best)):
        best = model.theta0()
        message = "non-finite parameters; kept the start"
    with torch.no_grad():
        final = float(loss_at(best))
    if not final <= initial:
        best, final = model.theta0(), initial
        message = message or "no improvement; kept the start"
    sigmas = _theta_sigmas(model, best, counts, trusted, dslow, dfast, fixed)
    return _result(model, fit, best, sigmas, boxes, initial, final, evaluations[0], message, options)


def _theta_sigmas(model, theta, counts, trusted, dslow, dfast, fixed) -> np.ndarray:
    """Standard errors of theta from the Poisson Fisher information with each shoebox's
    [I, b0, b1, b2] eliminated (Schur complement)."""
    with torch.no_grad():
        profile = model.profiles(theta)
        beta = _solve_linear(profile, counts, trusted, dslow, dfast)
        expected = torch.clamp(_expected(profile, beta, dslow, dfast), min=1e-3)
        weight = trusted / expected  # (R, P)
        free = torch.nonzero(~fixed).flatten()
        columns = []
        for index in free:
            step = 1e-4
            shifted = theta.clone()
            shifted[index] += step
            columns.append((_expected(model.profiles(shifted), beta, dslow, dfast) - expected) / step)
        j_theta = torch.stack(columns, dim=-1)  # (R, P, p)
        j_local = torch.stack([profile, torch.ones_like(profile), dslow, dfast], dim=-1)  # (R, P, 4)
        f_tt = torch.einsum("rpa,rp,rpb->ab", j_theta, weight, j_theta)
        f_tl = torch.einsum("rpa,rp,rpb->rab", j_theta, weight, j_local)  # (R, p, 4)
        f_ll = torch.einsum("rpa,rp,rpb->rab", j_local, weight, j_local) + 1e-9 * torch.eye(4, dtype=weight.dtype)
        schur = f_tt - (f_tl @ torch.linalg.solve(f_ll, f_tl.transpose(1, 2))).sum(0)
        sigmas = np.full(len(theta), math.nan)
        try:
            covariance = torch.linalg.inv(schur)
            sigmas[free.numpy()] = torch.sqrt(torch.clamp(torch.diagonal(covariance), min=0)).numpy()
        except RuntimeError:
            pass
    return sigmas


def _result(model, fit, theta, sigmas, boxes, initial, final, iterations, message, options) -> PixelRefinement:
    step = _step(model, fit, theta, iterations, final)
    real, geometry, cell = step.real_space, step.geometry, step.cell
    # compare the two models on the spot fit's inliers with DIALS' stills predictor
    inlier = fit.inlier
    hkl = fit.hkl[inlier]
    observed = _observed_px(fit)
    before = predict_still_px(fit.real_space, hkl, fit.geometry)[0]
    after = predict_still_px(real, hkl, geometry)[0]
    rmsd_before = float(np.sqrt(np.mean(np.sum((before - observed) ** 2, axis=1))))
    rmsd_after = float(np.sqrt(np.mean(np.sum((after - observed) ** 2, axis=1))))
    accepted = bool(rmsd_after <= rmsd_before * (1 + options.max_rmsd_worsening))
    mosaic_deg, domain_A = step.mosaic_deg, step.domain_size_A
    parameters = {
        "mosaic_spread_deg": {"value": mosaic_deg, "sigma": mosaic_deg * sigmas[6]},
        "domain_size_A": {"value": domain_A, "sigma": domain_A * sigmas[7]},
        "pixel_distance_shift_mm": {"value": float(theta[3]), "sigma": sigmas[3]},
        "pixel_shift_fast_px": {"value": float(theta[4]), "sigma": sigmas[4]},
        "pixel_shift_slow_px": {"value": float(theta[5]), "sigma": sigmas[5]},
    }
    for axis, i in zip("xyz", range(3), strict=True):
        parameters[f"pixel_rotation_{axis}_mrad"] = {"value": float(theta[i]), "sigma": sigmas[i]}
    for k, name in enumerate(model.parameters.names):
        value = float(model.free0[k]) * (1 + 1e-3 * float(theta[8 + k]))
        parameters[f"pixel_cell_{name}"] = {"value": value, "sigma": float(model.free0[k]) * 1e-3 * sigmas[8 + k]}
    # duplicates pairs this keyword list with noisify_cli's noise.noisify call: alike in shape only
    return PixelRefinement(
        accepted=accepted,
        real_space=real,
        geometry=geometry,
        cell=cell,
        mosaic_deg=mosaic_deg,
        domain_size_A=domain_A,
        parameters=parameters,
        n_reflections=int(boxes.hkl.shape[0]),
        n_pixels=int(boxes.trusted.sum()),
        initial_nll=initial,
        final_nll=final,
        rmsd_before_px=rmsd_before,
        rmsd_after_px=rmsd_after,
        iterations=iterations,
        message=message if accepted else (message or "kept the spot-fit model (it predicts the spots better)"),
    )


def _observed_px(fit: SpotFit) -> np.ndarray:
    return fit.observed_px[fit.inlier]
