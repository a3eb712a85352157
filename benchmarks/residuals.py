"""Why the thaumatin stills' spots sit ~1.3 px from DIALS' stills predictor: the evidence.

    python benchmarks/residuals.py [--data DIR] [--frames 0013 0010 ...]

For each lattice frame it runs ``process_frame`` and prints, on the spots the written model
indexes within 3 px (its inliers):

- *centroid*: braggsim's centroids against DIALS' definition of a spot-finder centroid (the
  raw counts of the region's strong pixels, no background subtracted), RMS and largest
  difference: a biased centroid would show here;
- *written*: the RMSD of the .expt's model with DIALS' stills predictor, and its radial and
  tangential (azimuthal) parts;
- *DIALS floor*: the same predictor with the orientation, both free cell lengths, and the
  panel's shifts and tilts refined on the positions alone (``fit_anisotropic_spread`` with
  Sigma = I): the best one orientation can do on these spots;
- *anisotropic*: the mosaic blocks allowed to turn about an axis of their own
  (:mod:`braggsim.anisotropic_spread`): its RMSD, the axis (DIALS lab frame: x along the
  panel's fast axis, y up, z towards the source) and the anisotropy (0 = one axis, 1 = round);
- the anisotropic model's RMSD for the brighter half of the spots (weak spots' centroids
  carry more noise).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from braggsim.anisotropic_spread import fit_anisotropic_spread  # noqa: E402
from braggsim.dials_geometry import predict_still_px  # noqa: E402
from braggsim.index import index_still  # noqa: E402
from braggsim.process import ProcessOptions, read_still  # noqa: E402
from braggsim.spotfind import dispersion_threshold, find_spots  # noqa: E402
from braggsim.unit_cell import space_group  # noqa: E402

THAUMATIN = (57.8, 57.8, 150.0, 90.0, 90.0, 90.0)


def raw_centroids(data, mask):
    """DIALS' spot-finder centroids: raw counts over each region's strong pixels. (n, 2) (slow, fast)."""
    strong = dispersion_threshold(data, mask)
    labels, count = ndimage.label(strong)
    index = np.arange(1, count + 1)
    size = ndimage.sum_labels(np.ones(data.shape), labels, index)
    keep = index[size >= 3]
    return np.array(ndimage.center_of_mass(np.where(strong, data, 0.0), labels, keep)).reshape(-1, 2)


def main() -> int:
    from braggsim.dials_geometry import still_geometry_from_header

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(HERE.parent.parent.parent / "shared/data/thaumatin_grid"))
    parser.add_argument("--frames", nargs="*", default=["0003", "0006", "0010", "0013"])
    args = parser.parse_args()
    if not args.data.is_dir():
        args.data = Path("/work/shared/data/thaumatin_grid")
    options = ProcessOptions(cell=THAUMATIN, space_group="P 41 21 2")
    group = space_group(options.space_group)
    print(f"load average: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    print()
    print(
        "| frame | inliers | centroid vs DIALS' (RMS, max) px | written RMSD px (radial, tangential) "
        "| DIALS floor px | anisotropic px | axis (x, y, z) | anisotropy | anisotropic, brighter half px | fit s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.frames:
        path = args.data / f"thau_3_2_{name}.cbf.bz2"
        frame = read_still(str(path), None, options)
        spots = find_spots(frame.data, frame.mask, options.spotfinder)
        raw = raw_centroids(frame.data, frame.mask)
        gap, which = cKDTree(raw).query(spots.px)
        matched = gap < 2
        centroid = spots.px[matched] - raw[which[matched]]
        header = still_geometry_from_header(
            wavelength_A=frame.wavelength_A,
            distance_mm=frame.distance_mm,
            pixel_size_mm=frame.pixel_size_mm,
            beam_center_mm=frame.beam_center_mm,
            shape=frame.shape,
        )
        fit = index_still(spots.px, header, options.cell, group, options.indexing).fit
        chosen = fit.inlier
        px, hkl = spots.px[chosen], fit.hkl[chosen]
        predicted, _, _ = predict_still_px(fit.real_space, hkl, fit.geometry)
        error = predicted - px
        outward = px - fit.geometry.beam_centre_px()
        outward /= np.linalg.norm(outward, axis=1)[:, None]
        radial = np.sum(error * outward, axis=1)
        tangential = error[:, 0] * -outward[:, 1] + error[:, 1] * outward[:, 0]
        tick = time.perf_counter()
        found = fit_anisotropic_spread(px, hkl, fit.real_space, fit.geometry, group)
        seconds = time.perf_counter() - tick
        bright = spots.intensity[chosen] >= np.median(spots.intensity[chosen])
        print(
            f"| thau_3_2_{name} | {len(px)} "
            f"| {np.sqrt(np.mean(np.sum(centroid**2, axis=1))):.3f}, {np.abs(centroid).max():.3f} "
            f"| {np.sqrt(np.mean(np.sum(error**2, axis=1))):.2f} ({np.sqrt(np.mean(radial**2)):.2f}, "
            f"{np.sqrt(np.mean(tangential**2)):.2f}) "
            f"| {found.rmsd_dials_px:.2f} | {found.rmsd_px:.2f} "
            f"| {found.axis[0] * np.sign(found.axis[1]):+.2f}, {abs(found.axis[1]):.2f}, "
            f"{found.axis[2] * np.sign(found.axis[1]):+.2f} | {found.anisotropy:.2f} "
            f"| {np.sqrt(np.mean(np.sum(found.residual_px[bright] ** 2, axis=1))):.2f} | {seconds:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
