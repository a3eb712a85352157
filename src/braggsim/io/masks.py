"""Which pixels to trust.  Every function returns a (slow, fast) bool array, True = trusted.

Rules (see docs/formats.md):
- saturated: value >= the header's saturation (or the integer dtype's maximum);
- dead pixels and module gaps: values <= 0 (the zero-valued seams of a tiled CCD, Pilatus
  -1/-2 gap markers) and non-finite values;
- beamstop: a disk of given radius, or the low-valued blob around the beam centre;
- user mask: any array or image file, nonzero = trusted (or inverted).
"""

from __future__ import annotations

import math
import os

import numpy as np
from scipy import ndimage


def saturation_mask(data: np.ndarray, saturation: float | None) -> np.ndarray:
    """False where data >= saturation; all True when saturation is None."""
    data = np.asarray(data)
    if saturation is None:
        return np.ones(data.shape, dtype=bool)
    return ~(data >= saturation)


def dead_pixel_mask(data: np.ndarray, *, zeros_are_dead: bool = True) -> np.ndarray:
    """False for non-finite pixels, negative pixels (gap markers) and, when
    ``zeros_are_dead``, zero-valued pixels (dead pixels and module seams; a real detector
    with a pedestal never reads exactly 0)."""
    data = np.asarray(data)
    trusted = np.isfinite(data) if data.dtype.kind == "f" else np.ones(data.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        trusted &= ~(data < 0)
        if zeros_are_dead:
            trusted &= data != 0
    return trusted


def disk_mask(shape: tuple, center_px: tuple | np.ndarray, radius_px: float) -> np.ndarray:
    """False inside the disk of ``radius_px`` around (slow, fast) ``center_px``.

    ``radius_px`` must be a finite number >= 0 (ValueError otherwise); radii beyond the
    frame's diagonal mask it all (squared in float64: 1e300 does not overflow Python's
    float power)."""
    radius = float(radius_px)
    if not (math.isfinite(radius) and radius >= 0):
        raise ValueError(f"beamstop radius must be a finite number of pixels >= 0, got {radius_px!r}")
    # no pixel is farther from the centre than this: a larger radius masks the same pixels
    radius = min(radius, math.hypot(*shape) + math.hypot(*center_px))
    slow, fast = np.ogrid[: shape[0], : shape[1]]
    inside = (slow - center_px[0]) ** 2 + (fast - center_px[1]) ** 2 <= radius * radius
    return ~inside


def beamstop_mask(
    data: np.ndarray,
    center_px: tuple | np.ndarray,
    *,
    radius_px: float | None = None,
    trusted: np.ndarray | None = None,
    search_radius_px: float = 50.0,
    threshold: float = 0.5,
    grow_px: int = 3,
) -> np.ndarray:
    """The beamstop shadow as False.

    With ``radius_px``: a disk of that radius around (slow, fast) ``center_px``.
    Without: the connected regions darker than ``threshold`` x the median of the trusted
    pixels that come within ``search_radius_px`` of the centre (dead seams through the
    shadow are excluded first, so a shadow cut into pieces by seams is found whole), with
    holes filled and grown by ``grow_px``.  No such region -> all True.
    """
    data = np.asarray(data, dtype=np.float32)
    if radius_px is not None:
        if not radius_px >= 0:
            raise ValueError(f"radius_px must be >= 0, got {radius_px!r}")
        return disk_mask(data.shape, center_px, radius_px)
    if trusted is None:
        trusted = dead_pixel_mask(data)
    if not trusted.any() or not np.all(np.isfinite(center_px)):
        return np.ones(data.shape, dtype=bool)
    level = threshold * float(np.median(data[trusted]))
    dark = trusted & (data < level)
    labels, count = ndimage.label(dark)
    if count == 0:
        return np.ones(data.shape, dtype=bool)
    near = ~disk_mask(data.shape, center_px, search_radius_px)
    hit = np.unique(labels[near & dark])
    hit = hit[hit > 0]
    if hit.size == 0:
        return np.ones(data.shape, dtype=bool)
    core = np.isin(labels, hit)
    # work in the shadow's bounding box (plus margin): morphology on a whole frame is slow
    rows, cols = np.nonzero(core)
    margin = 2 * (grow_px + 4)
    box = (
        slice(max(rows.min() - margin, 0), rows.max() + margin + 1),
        slice(max(cols.min() - margin, 0), cols.max() + margin + 1),
    )
    # untrusted seam pixels touching the shadow belong to it, so the pieces join up
    local = core[box] | (~trusted[box] & ndimage.binary_dilation(core[box], iterations=grow_px + 3))
    # the seams cut the shadow: close over them so the shadow is one region
    local = ndimage.binary_closing(local, iterations=grow_px + 3)
    local = ndimage.binary_fill_holes(local)
    if grow_px:
        local = ndimage.binary_dilation(local, iterations=grow_px)
    shadow = np.zeros(data.shape, dtype=bool)
    shadow[box] = local
    return ~shadow


def user_mask(mask, shape: tuple, *, invert: bool = False) -> np.ndarray:
    """A user's mask (array, or a path to any image braggsim reads) as bool, True = trusted.

    Nonzero = trusted; ``invert=True`` for masks that mark bad pixels with nonzero."""
    if isinstance(mask, (str, os.PathLike)):
        from .read import read_frame

        mask = read_frame(mask).data
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise ValueError(f"user mask shape {mask.shape} does not match the frame's {tuple(shape)}")
    trusted = mask != 0
    return ~trusted if invert else trusted


def default_mask(data: np.ndarray, saturation: float | None, *, zeros_are_dead: bool = True) -> np.ndarray:
    """Saturated, dead and gap pixels removed."""
    return saturation_mask(data, saturation) & dead_pixel_mask(data, zeros_are_dead=zeros_are_dead)
