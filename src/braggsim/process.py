"""One still from its pixels to a refined crystal model: read -> spots -> index -> refine.

    options = ProcessOptions(cell=(57.8, 57.8, 150.0, 90, 90, 90), space_group="P 41 21 2")
    result = process_frame("thau_3_2_0003.cbf.bz2", options)      # never raises for a bad frame
    write_frame_outputs(result, "out/")                           # out/<stem>.expt, out/<stem>.json
    write_summary("out/", [result.summary_row()])                 # out/summary.csv

:func:`process_frame` is pure: it reads one frame and returns a :class:`FrameResult` (plain
numbers, JSON-able), so a scheduler can run it anywhere and write the results elsewhere.
:class:`ProcessOptions` round-trips through :meth:`~ProcessOptions.to_dict` /
:meth:`~ProcessOptions.from_dict` to travel to a worker.  Writing is separate and atomic
(:func:`braggsim.io.atomic_output`): no half-written file is ever visible.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import time
import traceback
from typing import Union

import numpy as np

from .index import IndexingOptions, index_still
from .spot_refine import SpotRefineOptions
from .spotfind import SpotFinderOptions, find_spots

__all__ = [
    "FrameResult",
    "ProcessOptions",
    "SUMMARY_COLUMNS",
    "Source",
    "frame_stem",
    "process_frame",
    "process_frames",
    "read_still",
    "write_frame_outputs",
    "write_summary",
]

Source = Union[str, os.PathLike, tuple]

SUMMARY_COLUMNS = (
    "frame",
    "status",
    "n_spots",
    "n_indexed",
    "rmsd_px",
    "a",
    "b",
    "c",
    "alpha",
    "beta",
    "gamma",
    "mosaic_deg",
    "time_s",
)


@dataclasses.dataclass
class ProcessOptions:
    """What :func:`process_frame` needs besides the frame.  JSON-able (to_dict / from_dict).

    cell: (a, b, c, alpha, beta, gamma), Angstrom and degrees; space_group: a name, number or
        Hall symbol (gemmi reads it).
    spotfinder, indexing, spot_refine: the steps' knobs (see their classes).
    beamstop: None (no beamstop mask), "auto" (the dark blob around the beam) or a radius in px.
    mask: path of a user mask (nonzero = trusted), or None.
    refine_pixels: run the refinement against the pixels after indexing.
    pixel_refine: the pixel refinement's knobs (see :class:`braggsim.still_refine.PixelRefineOptions`).
    """

    cell: tuple
    space_group: str
    spotfinder: SpotFinderOptions = dataclasses.field(default_factory=SpotFinderOptions)
    indexing: IndexingOptions = dataclasses.field(default_factory=IndexingOptions)
    beamstop: Union[None, str, float] = None
    mask: str | None = None
    refine_pixels: bool = True
    pixel_refine: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        from .unit_cell import check_cell, space_group

        self.cell = check_cell(self.cell)
        group = space_group(self.space_group)
        self.space_group = group.xhm()
        if isinstance(self.spotfinder, dict):
            self.spotfinder = SpotFinderOptions(**self.spotfinder)
        if isinstance(self.indexing, dict):
            fields = dict(self.indexing)
            if isinstance(fields.get("spot_refine"), dict):
                refine = dict(fields["spot_refine"])
                if "refine_detector" in refine:
                    refine["refine_detector"] = tuple(refine["refine_detector"])
                fields["spot_refine"] = SpotRefineOptions(**refine)
            self.indexing = IndexingOptions(**fields)
        if self.beamstop is not None and self.beamstop != "auto":
            radius = float(self.beamstop)
            if not (math.isfinite(radius) and radius >= 0):
                raise ValueError(f"beamstop must be None, 'auto' or a radius >= 0 px, got {self.beamstop!r}")
            self.beamstop = radius
        self.pixel_refine = dict(self.pixel_refine or {})

    def to_dict(self) -> dict:
        """Plain JSON-able values (nested dicts for the steps' options)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: dict) -> ProcessOptions:
        return cls(**values)


@dataclasses.dataclass
class FrameResult:
    """What processing one frame gave.  Plain numbers only, so it crosses processes.

    frame: the frame's path (with ``#index`` for an image of a multi-image file).
    status: "indexed", "no-lattice" or "failed"; reason: why, when not indexed.
    n_spots, n_indexed, rmsd_px: strong spots, spots within 0.3 of integer indices, and the
        2-D position RMSD (DIALS' stills predictor, the .expt's model) of the indexed spots
        used in the fit (those within 3 px); details has it per axis (rmsd_x_px, rmsd_y_px).
    cell, cell_sigma: refined cell and standard errors (None unless indexed).
    mosaic_deg: refined mosaic spread (None when the pixel refinement did not run).  The
        .expt's ML_half_mosaicity_deg / ML_domain_size_ang are DIALS' estimates from the spots'
        DeltaPsi instead (details["stills_mosaicity"]; :mod:`braggsim.stills_mosaicity`).
    parameters: refined parameter -> {"value", "sigma"} (orientation, cell, detector, and the
        pixel refinement's when it ran).
    times_s: wall seconds per step (read, spots, index, refine); time_s: the whole frame;
        details["cpu_times_s"], details["cpu_time_s"]: the same in this process's CPU time.
    expt: the DIALS ExperimentList dict of the model (None unless indexed).
    """

    frame: str
    status: str
    reason: str = ""
    n_spots: int = 0
    n_indexed: int = 0
    rmsd_px: float | None = None
    cell: tuple | None = None
    cell_sigma: tuple | None = None
    mosaic_deg: float | None = None
    parameters: dict = dataclasses.field(default_factory=dict)
    times_s: dict = dataclasses.field(default_factory=dict)
    time_s: float = 0.0
    expt: dict | None = None
    details: dict = dataclasses.field(default_factory=dict)

    @property
    def stem(self) -> str:
        return frame_stem(self.frame)

    def to_json_dict(self) -> dict:
        """Everything, JSON-able (NaN becomes null)."""
        return _json_safe(dataclasses.asdict(self))

    def summary_row(self) -> dict:
        """One row of summary.csv (SUMMARY_COLUMNS)."""
        cell = self.cell if self.cell is not None else (None,) * 6
        row = {
            "frame": self.frame,
            "status": self.status,
            "n_spots": self.n_spots,
            "n_indexed": self.n_indexed,
            "rmsd_px": _fmt(self.rmsd_px, 3),
            "mosaic_deg": _fmt(self.mosaic_deg, 4),
            "time_s": _fmt(self.time_s, 2),
        }
        for name, value in zip(("a", "b", "c", "alpha", "beta", "gamma"), cell, strict=True):
            row[name] = _fmt(value, 3)
        return {key: row[key] for key in SUMMARY_COLUMNS}


def _fmt(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{float(value):.{digits}f}"


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def frame_stem(frame: str) -> str:
    """thau_3_2_0003.cbf.bz2 -> thau_3_2_0003; data.h5#7 -> data_00007."""
    from .io import strip_compression

    path, _, index = str(frame).partition("#")
    stem = os.path.splitext(os.path.basename(strip_compression(path)))[0]
    return f"{stem}_{int(index):05d}" if index else stem


def _source_path(source: Source) -> tuple[str, int | None]:
    if isinstance(source, tuple):
        if len(source) != 2:
            raise ValueError(f"a source is a path or (path, image index), got {source!r}")
        return os.fspath(source[0]), int(source[1])
    return os.fspath(source), None


class _Clock:
    """Wall and CPU (this process) seconds per step.  On a busy machine the CPU time is the
    better guide to what a step costs: the wall time also counts waiting for a core."""

    def __init__(self) -> None:
        self.wall: dict = {}
        self.cpu: dict = {}
        self._started = (time.perf_counter(), time.process_time())

    def start(self) -> None:
        self._tick = (time.perf_counter(), time.process_time())

    def stop(self, step: str) -> None:
        self.wall[step] = time.perf_counter() - self._tick[0]
        self.cpu[step] = time.process_time() - self._tick[1]

    def total(self) -> tuple:
        return time.perf_counter() - self._started[0], time.process_time() - self._started[1]


def process_frame(source: Source, options: ProcessOptions) -> FrameResult:
    """Read, find spots, index and refine one still.  Never raises for a problem with the
    frame: an unreadable or broken frame comes back with status "failed" and its reason."""
    clock = _Clock()
    try:
        path, index = _source_path(source)
    except (TypeError, ValueError) as exc:
        return FrameResult(frame=str(source), status="failed", reason=str(exc))
    name = path if index is None else f"{path}#{index}"
    try:
        result = _process(path, index, name, options, clock)
    except Exception as exc:  # noqa: BLE001  any failure of one frame is that frame's result, never a crash
        result = FrameResult(frame=name, status="failed", reason=f"{type(exc).__name__}: {exc}")
        result.details["traceback"] = traceback.format_exc(limit=6)
    result.times_s = {k: round(v, 4) for k, v in clock.wall.items()}
    result.time_s, cpu_total = clock.total()
    result.details["cpu_times_s"] = {k: round(v, 4) for k, v in clock.cpu.items()}
    result.details["cpu_time_s"] = round(cpu_total, 4)
    return result


def _process(path: str, index: int | None, name: str, options: ProcessOptions, clock: _Clock) -> FrameResult:
    from .dials_geometry import still_geometry_from_header
    from .io.expt import StillExperiment, experiment_to_dict
    from .unit_cell import space_group

    clock.start()
    frame = read_still(path, index, options)
    clock.stop("read")
    missing = [
        k for k in ("wavelength_A", "distance_mm", "pixel_size_mm", "beam_center_mm") if getattr(frame, k) is None
    ]
    if missing:
        raise ValueError(f"the header gives no {', '.join(missing)}; cannot place the spots in reciprocal space")

    clock.start()
    spots = find_spots(frame.data, frame.mask, options.spotfinder)
    clock.stop("spots")

    clock.start()
    header = still_geometry_from_header(
        wavelength_A=frame.wavelength_A,
        distance_mm=frame.distance_mm,
        pixel_size_mm=frame.pixel_size_mm,
        beam_center_mm=frame.beam_center_mm,
        shape=frame.shape,
    )
    group = space_group(options.space_group)
    indexing = index_still(spots.px, header, options.cell, group, options.indexing)
    clock.stop("index")
    result = FrameResult(
        frame=name,
        status=indexing.status,
        reason=indexing.reason,
        n_spots=indexing.n_spots,
        n_indexed=indexing.n_indexed if indexing.status == "indexed" else 0,
    )
    result.details.update(
        {"indexed_fraction": indexing.fraction, "z_score": indexing.z_score, "header_geometry": _geometry_dict(header)}
    )
    fit = indexing.fit
    if indexing.status != "indexed" or fit is None:
        return result
    result.rmsd_px = fit.rmsd_px
    result.cell, result.cell_sigma = fit.cell, fit.cell_sigma
    result.parameters = _spot_parameters(fit)
    result.details.update(
        {
            "rmsd_indexed_px": fit.rmsd_indexed_px,
            "n_inliers": int(fit.inlier.sum()),
            "delpsi_rmsd_deg": fit.delpsi_rmsd_deg,
        }
    )
    experiment = StillExperiment(
        geometry=fit.geometry,
        real_space=fit.real_space,
        space_group_hall=group.hall,
        image=os.path.abspath(path),
        image_index=index,
        trusted_range=(-1.0, float(frame.saturation) if frame.saturation is not None else 1e9),
    )
    if options.refine_pixels:
        from .still_refine import PixelRefineOptions, refine_still_pixels

        clock.start()
        pixel_options = PixelRefineOptions(**options.pixel_refine)
        refined = refine_still_pixels(frame, spots, fit, group, options.cell, pixel_options)
        clock.stop("refine")
        result.details["pixel_refinement"] = refined.summary()
        result.mosaic_deg = refined.mosaic_deg
        result.parameters.update(refined.parameters)
        if refined.accepted:
            # the pixel model predicts the spots at least as well: it becomes the model
            experiment.geometry, experiment.real_space = refined.geometry, refined.real_space
            result.cell = refined.cell
            result.cell_sigma = _pixel_cell_sigma(refined, group)
    total, along_x, along_y = _position_rmsd(experiment, fit)
    mosaicity = _stills_mosaicity(experiment, fit)
    if mosaicity is not None:
        # the .expt's ML fields as DIALS estimates and writes them: its stills predictor
        # predicts only reflections inside the band they define
        experiment.half_mosaicity_deg = mosaicity.half_mosaicity_deg
        experiment.domain_size_A = mosaicity.written_domain_size_A
        result.details["stills_mosaicity"] = mosaicity.summary()
    result.rmsd_px = total
    result.details.update({"rmsd_x_px": along_x, "rmsd_y_px": along_y})
    result.expt = experiment_to_dict(experiment)
    return result


def _stills_mosaicity(experiment, fit):
    """DIALS' ML domain size and mosaic angle from the DeltaPsi of the fit's inlier spots under
    the model written to the .expt (None when too few spots)."""
    from .dials_geometry import predict_still_px, reciprocal_matrix
    from .stills_mosaicity import ml_mosaicity

    hkl = fit.hkl[fit.inlier]
    _, delta_psi, valid = predict_still_px(experiment.real_space, hkl, experiment.geometry)
    d_A = 1.0 / np.linalg.norm(hkl @ reciprocal_matrix(experiment.real_space).T, axis=1)
    try:
        return ml_mosaicity(d_A[valid], delta_psi[valid])
    except ValueError:
        return None


def _position_rmsd(experiment, fit) -> tuple:
    """(2-D, fast (DIALS x), slow (DIALS y)) RMSD in px of the fit's inlier spots under the
    model written to the .expt, with DIALS' stills predictor."""
    from .dials_geometry import predict_still_px

    chosen = fit.inlier
    predicted = predict_still_px(experiment.real_space, fit.hkl[chosen], experiment.geometry)[0]
    error = predicted - fit.observed_px[chosen]
    if not len(error):
        return math.nan, math.nan, math.nan
    mean_sq = np.mean(error * error, axis=0)
    return float(np.sqrt(mean_sq.sum())), float(np.sqrt(mean_sq[1])), float(np.sqrt(mean_sq[0]))


def read_still(path: str, index: int | None, options: ProcessOptions):
    """The frame with its trust mask: gaps, bad and saturated pixels, beamstop and user mask.

    Zero-valued pixels stay trusted on counting detectors (CBF, NeXus): there 0 is a count."""
    from .io import read_frame, user_mask
    from .io.read import guess_format

    kind = guess_format(path)
    beamstop = False if options.beamstop is None else options.beamstop
    frame = read_frame(path, index, beamstop=beamstop, zeros_are_dead=False if kind in ("cbf", "nexus") else None)
    if options.mask is not None:
        frame.mask &= user_mask(options.mask, frame.shape)
    return frame


def _pixel_cell_sigma(refined, group) -> tuple:
    from .unit_cell import CellParameters

    parameters = CellParameters(group)
    return parameters.full_sigma([refined.parameters[f"pixel_cell_{n}"]["sigma"] for n in parameters.names])


def _geometry_dict(geometry) -> dict:
    return {
        "wavelength_A": geometry.wavelength_A,
        "origin_mm": geometry.origin.tolist(),
        "fast": geometry.fast.tolist(),
        "slow": geometry.slow.tolist(),
        "distance_mm": geometry.distance_mm(),
        "beam_centre_px_slow_fast": geometry.beam_centre_px().tolist(),
    }


def _spot_parameters(fit) -> dict:
    names = ("a", "b", "c", "alpha", "beta", "gamma")
    parameters = {
        f"cell_{n}": {"value": v, "sigma": s} for n, v, s in zip(names, fit.cell, fit.cell_sigma, strict=True)
    }
    # the orientation's errors as small turns about the lab axes (the value is the model itself)
    for axis, sigma in zip("xyz", fit.orientation_sigma_deg, strict=True):
        parameters[f"orientation_turn_{axis}_deg"] = {"value": 0.0, "sigma": sigma}
    for key, value in fit.detector.items():
        parameters[f"detector_{key}"] = {"value": value, "sigma": fit.detector_sigma.get(key)}
    return parameters


# --------------------------------------------------------------------- writing
def write_frame_outputs(result: FrameResult, out_dir) -> list[str]:
    """DIR/<stem>.json always, DIR/<stem>.expt when indexed; atomic.  Returns the paths written."""
    from .io import atomic_output

    os.makedirs(out_dir, exist_ok=True)
    written = []
    if result.expt is not None:
        path = os.path.join(out_dir, result.stem + ".expt")
        with atomic_output(path) as handle:
            handle.write(json.dumps(result.expt, indent=2).encode("utf-8"))
        written.append(path)
    path = os.path.join(out_dir, result.stem + ".json")
    payload = result.to_json_dict()
    payload.pop("expt", None)  # the model lives in the .expt
    with atomic_output(path) as handle:
        handle.write(json.dumps(payload, indent=1).encode("utf-8"))
    written.append(path)
    return written


def write_summary(out_dir, rows: list[dict]) -> str:
    """DIR/summary.csv with one row per frame (SUMMARY_COLUMNS), replaced atomically."""
    from .io import atomic_output

    os.makedirs(out_dir, exist_ok=True)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: row.get(key, "") for key in SUMMARY_COLUMNS})
    path = os.path.join(out_dir, "summary.csv")
    with atomic_output(path) as handle:
        handle.write(text.getvalue().encode("utf-8"))
    return path


def process_frames(sources: list, options: ProcessOptions, out_dir, *, progress=None) -> list[FrameResult]:
    """Process frames one after another, writing each frame's files and the summary as it goes.

    progress: called with each FrameResult (e.g. to print a line)."""
    results = []
    for source in sources:
        result = process_frame(source, options)
        write_frame_outputs(result, out_dir)
        results.append(result)
        write_summary(out_dir, [r.summary_row() for r in results])
        if progress is not None:
            progress(result)
    return results
