"""A stand-in for issue 12's judge: an independent spot finder and DIALS' stills predictor
reading only the ``.expt`` JSON, on the public thaumatin stills.

    python benchmarks/judge.py [--data DIR] [--expt-dir DIR] [--keep DIR]

For each frame it runs ``braggsim process``'s ``process_frame`` (or, with ``--expt-dir``, reads
the ``<stem>.expt`` already written there), then judges the model the way issue 12 says the
held-out frames will be judged, with nothing of braggsim's in the loop:

- **Spots** from a finder that shares no code or method with ``braggsim.spotfind``: a
  background from medians of 32 x 32 pixel tiles, seeds more than 5 Poisson sigmas above it,
  grown into every 8-connected pixel more than 2 sigmas above it (hysteresis), regions of at
  least 3 pixels holding at least 2 seeds, centroids of the background-subtracted counts.
- **Indexing** as DIALS' ``assign_indices`` does it: each spot's scattering vector from the
  .expt's beam and panel, fractional Miller indices ``h = a . q`` from the crystal's real
  axes, indexed when all three lie within 0.3 of integers; with several crystals in the file
  a spot goes to the one whose indices lie closest (L2).
- **Prediction** with DIALS' stills predictor, written here from its definition: the relp
  ``q = A h`` turned onto the Ewald sphere about ``q x s0`` (resolution and azimuth kept),
  the ray ``s0 + q'`` met with the panel plane.
- **RMSD** over every indexed spot, and after a Tukey rejection (a residual component beyond
  1.5 interquartile ranges of its quartiles, per axis, as ``dials.refine``'s ``tukey``).
- **DIALS' band**: how many spots index to a reflection that DIALS' stills predictor would
  predict at all for this crystal (``|DeltaPsi|`` under ``d / ML_domain_size_ang +
  radians(ML_half_mosaicity_deg) / 2``, or 0.0015 rad without those fields), and their RMSD:
  what a judge that matches spots to DIALS' list of predictions would count.
- **Cell**: |a|, |c| of the (first) crystal against the known 57.8, 150.0 A.
- **Pass** (issue 12): >= 50 % of the finder's spots indexed, RMSD <= 0.5 px, a and c within
  0.5 %; a blank frame passes when no ``.expt`` was written.

The issue does not say whether the judge rejects outliers, so both RMSDs are printed; the
pass column uses the stricter one (all indexed spots).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

KNOWN_A, KNOWN_C = 57.8, 150.0
HKL_TOLERANCE = 0.3
BLANK_FRAMES = {"thau_3_2_0016", "thau_3_2_0019"}  # ../shared/data/README.md


# ------------------------------------------------------------------ independent spot finder
def tile_background(data: np.ndarray, trusted: np.ndarray, tile: int = 32) -> np.ndarray:
    """Per-pixel background: the median of the trusted pixels of each tile x tile block,
    spread back over the block. (S, F) float."""
    rows, cols = data.shape
    padded_rows, padded_cols = -(-rows // tile) * tile, -(-cols // tile) * tile
    values = np.full((padded_rows, padded_cols), np.nan)
    values[:rows, :cols] = np.where(trusted, data, np.nan)
    blocks = values.reshape(padded_rows // tile, tile, padded_cols // tile, tile).transpose(0, 2, 1, 3)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            medians = np.nanmedian(blocks.reshape(blocks.shape[0], blocks.shape[1], -1), axis=2)
    medians = np.where(np.isfinite(medians), medians, 0.0)
    return np.kron(medians, np.ones((tile, tile)))[:rows, :cols]


def independent_spots(data: np.ndarray, trusted: np.ndarray, *, seed_sigma=5.0, grow_sigma=2.0, min_pixels=3):
    """(n, 2) DIALS pixel coordinates (x = fast, y = slow; first pixel's centre at 0.5) of the
    spots, brightest first, and their background-subtracted sums (n,)."""
    background = tile_background(data, trusted)
    sigma = np.sqrt(np.maximum(background, 1.0))
    excess = np.where(trusted, data - background, 0.0)
    seeds = excess > seed_sigma * sigma
    region = excess > grow_sigma * sigma
    labels, count = ndimage.label(region, structure=np.ones((3, 3)))
    if count == 0:
        return np.zeros((0, 2)), np.zeros(0)
    index = np.arange(1, count + 1)
    n_pixels = ndimage.sum_labels(np.ones_like(data), labels, index)
    n_seeds = ndimage.sum_labels(seeds, labels, index)
    keep = index[(n_pixels >= min_pixels) & (n_seeds >= 2)]
    if keep.size == 0:
        return np.zeros((0, 2)), np.zeros(0)
    weight = np.clip(excess, 0.0, None)
    centre = np.array(ndimage.center_of_mass(weight, labels, keep)).reshape(-1, 2)  # (slow, fast) centres at 0
    total = ndimage.sum_labels(weight, labels, keep)
    order = np.argsort(-total)
    return centre[order][:, ::-1] + 0.5, total[order]


# ------------------------------------------------------- DIALS-convention stills predictor
def _panel(document):
    panel = document["detector"][0]["panels"][0]
    fast, slow, origin = (np.array(panel[k], float) for k in ("fast_axis", "slow_axis", "origin"))
    return fast, slow, origin, np.array(panel["pixel_size"], float)


def _s0(document, experiment):
    beam = document["beam"][experiment.get("beam", 0)]
    direction = np.array(beam["direction"], float)
    return -direction / np.linalg.norm(direction) / float(beam["wavelength"])


def _real_axes(document, experiment):
    crystal = document["crystal"][experiment["crystal"]]
    return np.array([crystal[f"real_space_{k}"] for k in "abc"], float)


def scattering_vectors(document, experiment, xy):
    """q (n, 3) of spots at DIALS pixel coordinates xy (n, 2)."""
    fast, slow, origin, pixel = _panel(document)
    lab = origin + np.outer(xy[:, 0] * pixel[0], fast) + np.outer(xy[:, 1] * pixel[1], slow)
    s0 = _s0(document, experiment)
    return lab / np.linalg.norm(lab, axis=1, keepdims=True) * np.linalg.norm(s0) - s0


def delta_psi_band(document, experiment, hkl):
    """(|DeltaPsi| (n,), DIALS' prediction bound (n,)) in radians for reflections hkl (n, 3).

    DeltaPsi is the angle between the relp and its image on the Ewald sphere.  DIALS' stills
    predictor (``for_ub``) predicts a reflection only when |DeltaPsi| is below
    d / ML_domain_size_ang + radians(ML_half_mosaicity_deg) / 2, or below 0.0015 rad for a
    crystal without those fields."""
    crystal = document["crystal"][experiment["crystal"]]
    q = np.asarray(hkl, float) @ np.linalg.inv(_real_axes(document, experiment)).T
    s0 = _s0(document, experiment)
    k = np.linalg.norm(s0)
    q_len = np.linalg.norm(q, axis=1)
    cos_polar = np.clip((q @ s0) / (q_len * k), -1, 1)  # the relp's angle to the beam ...
    on_sphere = np.clip(-q_len / (2 * k), -1, 1)  # ... and the one it needs on the sphere
    delta_psi = np.abs(np.arccos(cos_polar) - np.arccos(on_sphere))
    if "ML_domain_size_ang" in crystal and "ML_half_mosaicity_deg" in crystal:
        bound = (
            1.0 / q_len / float(crystal["ML_domain_size_ang"]) + np.radians(float(crystal["ML_half_mosaicity_deg"])) / 2
        )
    else:
        bound = np.full(len(q), 0.0015)
    return delta_psi, bound


def stills_predict(document, experiment, hkl):
    """DIALS pixel coordinates (n, 2) of reflections hkl (n, 3) under DIALS' stills predictor."""
    s0 = _s0(document, experiment)
    q = np.asarray(hkl, float) @ np.linalg.inv(_real_axes(document, experiment)).T
    k = np.linalg.norm(s0)
    unit = s0 / k
    q_len = np.linalg.norm(q, axis=1)
    along = -(q_len**2) / (2 * k)  # on the sphere |s0 + q'| = k with |q'| = |q|
    across = q - np.outer(q @ unit, unit)
    across /= np.linalg.norm(across, axis=1)[:, None]
    rotated = np.outer(along, unit) + np.sqrt(np.maximum(q_len**2 - along**2, 0.0))[:, None] * across
    fast, slow, origin, pixel = _panel(document)
    normal = np.cross(fast, slow)
    ray = s0 + rotated
    point = ray * ((origin @ normal) / (ray @ normal))[:, None] - origin
    return np.stack([point @ fast / pixel[0], point @ slow / pixel[1]], axis=1)


def judge_frame(document, xy):
    """Index the spots xy (n, 2) with every crystal of the ExperimentList ``document`` and
    measure the stills predictor's residuals. Returns a dict of numbers."""
    experiments = [e for e in document["experiment"] if e.get("crystal") is not None]
    n = len(xy)
    best_dev = np.full(n, np.inf)
    best_hkl = np.zeros((n, 3))
    best_exp = np.full(n, -1)
    for number, experiment in enumerate(experiments):
        fractional = scattering_vectors(document, experiment, xy) @ _real_axes(document, experiment).T
        hkl = np.rint(fractional)
        offset = np.abs(fractional - hkl)
        ok = np.all(offset <= HKL_TOLERANCE, axis=1) & np.any(hkl != 0, axis=1)
        deviation = np.where(ok, np.linalg.norm(fractional - hkl, axis=1), np.inf)
        better = deviation < best_dev
        best_dev[better], best_hkl[better], best_exp[better] = deviation[better], hkl[better], number
    indexed = best_exp >= 0
    residual = np.zeros((n, 2))
    in_band = np.zeros(n, bool)
    for number, experiment in enumerate(experiments):
        chosen = best_exp == number
        if chosen.any():
            residual[chosen] = stills_predict(document, experiment, best_hkl[chosen]) - xy[chosen]
            delta_psi, bound = delta_psi_band(document, experiment, best_hkl[chosen])
            in_band[chosen] = delta_psi < bound
    res = residual[indexed]
    keep = np.ones(len(res), bool)
    for axis in range(2):
        if len(res) >= 4:
            q1, q3 = np.percentile(res[:, axis], [25, 75])
            spread = 1.5 * (q3 - q1)
            keep &= (res[:, axis] >= q1 - spread) & (res[:, axis] <= q3 + spread)
    real = _real_axes(document, experiments[0]) if experiments else np.full((3, 3), np.nan)
    lengths = np.linalg.norm(real, axis=1)
    return {
        "n_spots": n,
        "n_indexed": int(indexed.sum()),
        "n_crystals": len(experiments),
        "n_predicted": int(in_band.sum()),
        "rmsd_predicted_px": _rms2(residual[in_band]),
        "rmsd_px": _rms2(res),
        "rmsd_xy_px": tuple(np.sqrt(np.mean(res**2, axis=0))) if len(res) else (np.nan, np.nan),
        "rmsd_tukey_px": _rms2(res[keep]),
        "n_tukey": int(keep.sum()),
        "median_px": float(np.median(np.linalg.norm(res, axis=1))) if len(res) else np.nan,
        "a": float(lengths[0]),
        "c": float(lengths[2]),
    }


def _rms2(residual):
    return float(np.sqrt(np.mean(np.sum(residual**2, axis=1)))) if len(residual) else float("nan")


def verdict(numbers) -> str:
    fraction = numbers["n_indexed"] / max(numbers["n_spots"], 1)
    fails = []
    if fraction < 0.5:
        fails.append("indexed")
    if not numbers["rmsd_px"] <= 0.5:
        fails.append("rmsd")
    if abs(numbers["a"] / KNOWN_A - 1) > 0.005:
        fails.append("a")
    if abs(numbers["c"] / KNOWN_C - 1) > 0.005:
        fails.append("c")
    return "pass" if not fails else "FAIL (" + ", ".join(fails) + ")"


def main() -> int:
    from braggsim.process import ProcessOptions, frame_stem, process_frame, read_still, write_frame_outputs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(HERE.parent.parent.parent / "shared/data/thaumatin_grid"))
    parser.add_argument("--expt-dir", type=Path, help="judge the .expt files already in this folder")
    parser.add_argument("--keep", type=Path, help="write braggsim's outputs here")
    args = parser.parse_args()
    if not args.data.is_dir():
        args.data = Path("/work/shared/data/thaumatin_grid")
    frames = sorted(args.data.glob("*.cbf*"))
    if not frames:
        print(f"no frames in {args.data}", file=sys.stderr)
        return 2
    options = ProcessOptions(cell=(KNOWN_A, KNOWN_A, KNOWN_C, 90, 90, 90), space_group="P 41 21 2")
    print(f"load average: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    print()
    print(
        "| frame | judge spots | indexed | RMSD px (x, y) | median px | RMSD Tukey px (n) | a (err) | c (err) "
        "| in DIALS' band (RMSD) | crystals | braggsim s | verdict |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for path in frames:
        stem = frame_stem(str(path))
        seconds = ""
        if args.expt_dir is not None:
            expt = args.expt_dir / f"{stem}.expt"
            document = json.loads(expt.read_text()) if expt.exists() else None
        else:
            result = process_frame(path, options)
            seconds = f"{result.time_s:.1f}"
            document = result.expt
            if args.keep is not None:
                write_frame_outputs(result, args.keep)
        frame = read_still(str(path), None, options)
        xy, _ = independent_spots(frame.data.astype(np.float64), frame.mask)
        if document is None:
            status = "pass (blank, no .expt)" if stem in BLANK_FRAMES else "FAIL (no .expt)"
            print(f"| {stem} | {len(xy)} | no-lattice | | | | | | | 0 | {seconds} | {status} |")
            continue
        numbers = judge_frame(document, xy)
        fraction = numbers["n_indexed"] / max(numbers["n_spots"], 1)
        print(
            f"| {stem} | {numbers['n_spots']} | {numbers['n_indexed']} ({fraction:.0%}) "
            f"| {numbers['rmsd_px']:.2f} ({numbers['rmsd_xy_px'][0]:.2f}, {numbers['rmsd_xy_px'][1]:.2f}) "
            f"| {numbers['median_px']:.2f} | {numbers['rmsd_tukey_px']:.2f} ({numbers['n_tukey']}) "
            f"| {numbers['a']:.2f} ({100 * (numbers['a'] / KNOWN_A - 1):+.2f} %) "
            f"| {numbers['c']:.2f} ({100 * (numbers['c'] / KNOWN_C - 1):+.2f} %) "
            f"| {numbers['n_predicted']} ({numbers['n_predicted'] / max(numbers['n_spots'], 1):.0%}; "
            f"{numbers['rmsd_predicted_px']:.2f}) | {numbers['n_crystals']} | {seconds} | "
            + ("FAIL (blank frame indexed)" if stem in BLANK_FRAMES else verdict(numbers))
            + " |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
