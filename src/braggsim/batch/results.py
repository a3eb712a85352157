"""Reading a batch's output folder back: its summary rows as numbers, and each indexed
frame's predicted spots from its .expt.  What a viewer of the results needs, without Qt.

    rows = read_summary("out")                    # [{"frame": ..., "status": ..., "rmsd_px": 0.9, ...}]
    spots = frame_predictions("out", "thau_3_2_0003")   # None when the frame has no .expt
    spots.px                                      # (n, 2) (slow, fast) pixel centres
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os

import numpy as np

from .sources import natural_key

#: the summary columns that hold numbers (the rest are text)
NUMBER_COLUMNS = ("n_spots", "n_indexed", "rmsd_px", "a", "b", "c", "alpha", "beta", "gamma", "mosaic_deg", "time_s")
_INTEGER_COLUMNS = ("n_spots", "n_indexed")
#: DeltaPsi band (degrees) for an .expt without DIALS' mosaicity fields
DEFAULT_BAND_DEG = 0.1


def typed_row(row: dict) -> dict:
    """A summary row (text, as summary.csv holds it, or ``FrameResult.summary_row()``)
    with its numbers as int / float, and None where the cell is empty or not a number."""
    typed = dict(row)
    for column in NUMBER_COLUMNS:
        if column not in row:
            continue
        typed[column] = _number(row[column], integer=column in _INTEGER_COLUMNS)
    return typed


def _number(text, integer: bool):
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value):
        return None
    return int(value) if integer else value


def read_summary(out_dir) -> list[dict]:
    """The rows of ``out_dir``/summary.csv as :func:`typed_row` gives them, in natural
    frame order; [] when there is no summary yet.  ValueError for a file that is not a
    braggsim summary."""
    from ..process import frame_stem

    path = os.path.join(os.fspath(out_dir), "summary.csv")
    if not os.path.exists(path):
        return []
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or "frame" not in reader.fieldnames:
                raise ValueError("no 'frame' column")
            rows = [typed_row(row) for row in reader]
    except (OSError, csv.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path} is not a braggsim summary ({exc})") from None
    return sorted(rows, key=lambda row: natural_key(frame_stem(row["frame"])))


@dataclasses.dataclass
class PredictedSpots:
    """Where a still's model puts its reflections, by DIALS' stills predictor (the predictor
    the .expt and the reported RMSD use).

    px: (n, 2) (slow, fast) pixel centres on the panel; hkl: (n, 3) int; d_A: (n,) spacings;
    delta_psi_deg: (n,) each reflection's rotation off the Ewald sphere.
    """

    px: np.ndarray
    hkl: np.ndarray
    d_A: np.ndarray
    delta_psi_deg: np.ndarray

    def __len__(self) -> int:
        return len(self.px)


def predicted_spots(experiment, *, d_min_A: float | None = None, band_deg: float | None = None) -> PredictedSpots:
    """The reflections a still's model (``braggsim.io.expt.StillExperiment``) predicts on its
    panel: every hkl out to ``d_min_A`` (default: the panel's corner resolution) placed by
    DIALS' stills predictor, kept when on the panel and inside the DeltaPsi band.

    band_deg: half-width of that band, degrees, at every d; default: the band DIALS' stills
    predictor uses for the .expt's ``ML_half_mosaicity_deg`` / ``ML_domain_size_ang``
    (``d / D + half / 2``), or DEFAULT_BAND_DEG when the .expt has neither.
    Raises ValueError for an experiment without a crystal or a bad ``d_min_A``.
    """
    from ..dials_geometry import predict_still_px, reciprocal_matrix
    from ..stills_mosaicity import prediction_band_rad

    if experiment.real_space is None:
        raise ValueError("the experiment has no crystal: nothing to predict")
    geometry = experiment.geometry
    real = np.asarray(experiment.real_space, dtype=float)
    if d_min_A is None:
        d_min_A = corner_d_min_A(geometry)
    if not (math.isfinite(d_min_A) and d_min_A > 0):
        raise ValueError(f"d_min_A must be > 0, got {d_min_A!r}")
    limits = [int(math.ceil(float(np.linalg.norm(axis)) / d_min_A)) for axis in real]
    grids = np.meshgrid(*(np.arange(-m, m + 1) for m in limits), indexing="ij")
    hkl = np.stack([g.ravel() for g in grids], axis=-1)
    q_len = np.linalg.norm(hkl @ reciprocal_matrix(real).T, axis=1)
    keep = (q_len > 0) & (q_len <= 1.0 / d_min_A)
    hkl, d_A = hkl[keep], 1.0 / q_len[keep]
    px, delta_psi, valid = predict_still_px(real, hkl, geometry)
    fast_size, slow_size = geometry.image_size
    on_panel = (
        valid & (px[:, 0] >= -0.5) & (px[:, 0] < slow_size - 0.5) & (px[:, 1] >= -0.5) & (px[:, 1] < fast_size - 0.5)
    )
    if band_deg is not None:
        band = np.full(len(d_A), math.radians(float(band_deg)))
    elif experiment.half_mosaicity_deg and experiment.domain_size_A:
        band = prediction_band_rad(d_A, experiment.half_mosaicity_deg, experiment.domain_size_A)
    else:
        band = np.full(len(d_A), math.radians(DEFAULT_BAND_DEG))
    chosen = on_panel & (np.abs(delta_psi) <= band)
    return PredictedSpots(
        px=px[chosen], hkl=hkl[chosen].astype(int), d_A=d_A[chosen], delta_psi_deg=np.degrees(delta_psi[chosen])
    )


def corner_d_min_A(geometry) -> float:
    """The best resolution on a panel (``StillGeometry``): at its corners and edge midpoints."""
    fast_size, slow_size = geometry.image_size
    s, f = slow_size - 1.0, fast_size - 1.0
    points = np.array([[0, 0], [0, f], [s, 0], [s, f], [s / 2, 0], [s / 2, f], [0, f / 2], [s, f / 2]], float)
    return float(1.0 / np.linalg.norm(geometry.q_vectors(points), axis=1).max())


def frame_predictions(out_dir, name: str, **kwargs) -> PredictedSpots | None:
    """:func:`predicted_spots` of the frame written as ``out_dir``/<name>.expt (``name`` is
    the frame's stem, ``FrameRef.name``); None when the frame has no .expt (not indexed).
    ValueError for an unreadable .expt."""
    from ..io.expt import read_expt

    path = os.path.join(os.fspath(out_dir), name + ".expt")
    if not os.path.exists(path):
        return None
    return predicted_spots(read_expt(path)[0], **kwargs)
