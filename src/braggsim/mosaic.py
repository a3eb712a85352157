"""Mosaic domains drawn exactly as nanoBragg draws them.

nanoBragg seeds Numerical Recipes' ``ran1`` with ``-mosaic_seed`` and, for every
domain, takes three uniform deviates r1, r2, r3 on [-1, 1].  The domain rotates by
``spread * (1 - r3^2)^(1/3)`` about the axis ``(sqrt(1-r2^2) sin(pi r1),
sqrt(1-r2^2) cos(pi r1), r2)``.  Domain 0 also consumes its three draws and is then
forced to the identity.

The deviates depend only on the seed, so they are drawn once (in plain Python, no
torch RNG anywhere) and frozen.  The angle is linear in the spread, so the spread is
differentiable through the frozen draws (the reparameterization trick).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ._memo import BoundedMemo

DEFAULT_MOSAIC_SEED = 12345678  # nanoBragg seeds ran1 with -12345678 by default

RAN1_IA, RAN1_IM, RAN1_IQ, RAN1_IR = 16807, 2147483647, 127773, 2836
RAN1_NTAB = 32
RAN1_NDIV = 1 + (RAN1_IM - 1) // RAN1_NTAB
RAN1_AM = 1.0 / RAN1_IM
RAN1_RNMX = float(np.float32(1.0 - 1.2e-7))
# public: the noise module's copies of ran1 (noisify draws from the same generator) use them


class Ran1:
    """Numerical Recipes ``ran1`` (Park-Miller with a Bays-Durham shuffle), bit-exact.

    Values are returned as the C program returns them: rounded to a C float.
    """

    def __init__(self, seed: int):
        idum = -abs(int(seed))
        idum = 1 if -idum < 1 else -idum
        table = [0] * RAN1_NTAB
        for j in range(RAN1_NTAB + 7, -1, -1):
            idum = self.step(idum)
            if j < RAN1_NTAB:
                table[j] = idum
        self._idum = idum
        self._table = table
        self._iy = table[0]

    @staticmethod
    def step(idum: int) -> int:
        """One Park-Miller step of the seed (the noise module's ran1 copies use it too)."""
        k = idum // RAN1_IQ
        idum = RAN1_IA * (idum - k * RAN1_IQ) - RAN1_IR * k
        return idum + RAN1_IM if idum < 0 else idum

    def __call__(self) -> float:
        self._idum = self.step(self._idum)
        j = self._iy // RAN1_NDIV
        self._iy = self._table[j]
        self._table[j] = self._idum
        value = float(np.float32(RAN1_AM * self._iy))
        return RAN1_RNMX if value > RAN1_RNMX else value


@functools.lru_cache(maxsize=64)
def _frozen_draws(seed: int, n_domains: int) -> tuple:
    rng = Ran1(seed)
    axes = np.zeros((n_domains, 3))
    angle_factor = np.zeros(n_domains)
    for domain in range(n_domains):
        r1 = 2.0 * rng() - 1.0
        r2 = 2.0 * rng() - 1.0
        r3 = 2.0 * rng() - 1.0
        if domain == 0:
            continue  # drawn, then replaced by the identity, as in nanoBragg
        xyrad = math.sqrt(1.0 - r2 * r2)
        axes[domain] = (xyrad * math.sin(math.pi * r1), xyrad * math.cos(math.pi * r1), r2)
        # nanoBragg evaluates this factor with powf, i.e. in single precision
        angle_factor[domain] = float(np.power(np.float32(1.0 - r3 * r3), np.float32(1.0 / 3.0)))
    return axes, angle_factor


def mosaic_draws(seed: int, n_domains: int) -> tuple[np.ndarray, np.ndarray]:
    """The frozen draws: unit axes (n_domains, 3) and angle factors (n_domains,).

    Row 0 is the identity domain (zero axis, zero factor).
    """
    axes, factor = _frozen_draws(int(abs(seed)), int(n_domains))
    return axes.copy(), factor.copy()


_CONSTANTS = BoundedMemo(32)


def _rotation_constants(seed: int, n_domains: int, dtype, device) -> tuple:
    """(factor (n,), cross (n,3,3), outer (n,3,3), eye - outer (n,3,3)) of the frozen draws.

    They depend only on the seed, so a refinement that re-simulates every step builds
    them once; they never require grad.
    """

    def build() -> tuple:
        axes_np, factor_np = mosaic_draws(seed, n_domains)
        axes = torch.as_tensor(axes_np, dtype=dtype, device=device)
        factor = torch.as_tensor(factor_np, dtype=dtype, device=device)
        x, y, z = axes.unbind(-1)
        zero = torch.zeros_like(x)
        cross = torch.stack(
            [torch.stack([zero, -z, y], -1), torch.stack([z, zero, -x], -1), torch.stack([-y, x, zero], -1)],
            dim=-2,
        )
        outer = axes[:, :, None] * axes[:, None, :]
        return factor, cross, outer, torch.eye(3, dtype=dtype, device=device) - outer

    return _CONSTANTS.get_or_build((int(abs(seed)), int(n_domains), dtype, str(device)), build)


def mosaic_rotations(spread_rad: torch.Tensor, seed: int, n_domains: int) -> torch.Tensor:
    """Rotation matrices of every mosaic domain, (n_domains, 3, 3).

    ``spread_rad`` is a 0-d tensor; gradients flow through it.  Rodrigues' formula
    R = u u^T + cos(angle) (I - u u^T) + sin(angle) [u]x, with angle = spread * factor.
    """
    factor, cross, outer, eye_minus_outer = _rotation_constants(seed, n_domains, spread_rad.dtype, spread_rad.device)
    angle = (spread_rad * factor)[:, None, None]  # (n, 1, 1)
    # domain 0 has a zero axis and angle, which the formula maps to I
    return outer + torch.cos(angle) * eye_minus_outer + torch.sin(angle) * cross
