"""Rotations in nanoBragg's conventions.

All functions are differentiable in their angles.  The matrices are (..., 3, 3) and act on
column vectors: ``v_new = R @ v``; :func:`rotate_vectors` turns vectors without one.
"""

from __future__ import annotations

import torch


def _axis_matrix(angle_rad: torch.Tensor, axis: int) -> torch.Tensor:
    c, s = torch.cos(angle_rad), torch.sin(angle_rad)
    one, zero = torch.ones_like(c), torch.zeros_like(c)
    if axis == 0:
        rows = [[one, zero, zero], [zero, c, -s], [zero, s, c]]
    elif axis == 1:
        rows = [[c, zero, s], [zero, one, zero], [-s, zero, c]]
    else:
        rows = [[c, -s, zero], [s, c, zero], [zero, zero, one]]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def rotation_xyz(angles_rad: torch.Tensor) -> torch.Tensor:
    """nanoBragg's ``rotate(v, x, y, z)``: about lab x, then y, then z, so R = Rz Ry Rx.

    angles_rad: (..., 3). Returns (..., 3, 3).
    """
    rx = _axis_matrix(angles_rad[..., 0], 0)
    ry = _axis_matrix(angles_rad[..., 1], 1)
    rz = _axis_matrix(angles_rad[..., 2], 2)
    return rz @ ry @ rx


def rotation_about_axis(axis: torch.Tensor, angle_rad: torch.Tensor) -> torch.Tensor:
    """Right-handed rotation by ``angle_rad`` about the unit vector ``axis`` (Rodrigues).

    axis: (3,); angle_rad: (...). Returns (..., 3, 3).
    """
    axis = axis / torch.linalg.vector_norm(axis)
    c = torch.cos(angle_rad)[..., None, None]
    s = torch.sin(angle_rad)[..., None, None]
    x, y, z = axis.unbind()
    zero = torch.zeros_like(x)
    cross = torch.stack([torch.stack([zero, -z, y]), torch.stack([z, zero, -x]), torch.stack([-y, x, zero])])
    outer = axis[:, None] * axis[None, :]
    eye = torch.eye(3, dtype=axis.dtype, device=axis.device)
    return c * eye + s * cross + (1 - c) * outer


def rotate_vectors(vectors: torch.Tensor, axis: torch.Tensor, angle_rad: torch.Tensor) -> torch.Tensor:
    """nanoBragg's rotate_axis for a batch: vectors (..., 3) turned by angle_rad (...) about the
    unit vector axis (3,), right-handed; (..., 3)."""
    cos, sin = torch.cos(angle_rad)[..., None], torch.sin(angle_rad)[..., None]
    along = (vectors @ axis)[..., None] * axis
    return along * (1 - cos) + vectors * cos + torch.linalg.cross(axis.expand_as(vectors), vectors) * sin
