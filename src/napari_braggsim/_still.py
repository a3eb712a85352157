"""The real-still workflow without Qt: strong spots, indexing with a known cell, refinement
against the pixels, and the model in and out as a DIALS ``.expt``.

Each step is a plain function of what the widget took from its layers on the GUI thread
(array references, no copies) and runs in a worker thread (``_jobs.Job``); it returns plain
data, and the napari layers ready-made (layer objects hold no Qt), for the GUI thread to
add.  The science is the core's, through its public names only:

* ``braggsim.spotfind.find_spots`` (DIALS' dispersion threshold);
* ``braggsim.index.index_still`` (global search with the known cell, then the fit on spot
  positions);
* ``braggsim.spot_refine.refine_on_spots`` (a model read from an ``.expt`` is fitted to
  the spots before the pixels);
* ``braggsim.still_refine.refine_still_pixels`` (shoeboxes with a background plane and a
  free intensity per spot, Poisson likelihood); its ``progress`` hook gives the live view;
* ``braggsim.io.expt`` (``read_expt`` / ``write_expt``);
* ``braggsim.process.ProcessOptions`` checks the cell, the space group and the steps'
  options exactly as ``braggsim process`` does.

What the overlays show: the strong spots' centroids, and the *indexed* reflections'
positions predicted by the model with DIALS' stills predictor (the predictor the ``.expt``
and the reported RMSD use), each labelled with its hkl.  The offset between a predicted
circle and the cross inside it is the model's error on that spot.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from ._layers import MARKER_PX, MARKER_SCREEN_PX, STILL_SPOTS, OverlayData, spots_layer, typical_spacing

STRONG_SPOTS = "strong spots"
MAX_STRONG_SHOWN = 5000  # markers drawn for the strong spots (the brightest); the count is of all
CELL_NAMES = ("a", "b", "c", "alpha", "beta", "gamma")
STRONG_COLOR = "cyan"
UNINDEXED_COLOR = "orangered"


# ------------------------------------------------------------------ the frame
@dataclasses.dataclass
class FrameInput:
    """What the widget takes from its layers on the GUI thread (references, no copies).

    data: (S, F) pixel values; excluded: (S, F) labels (1 = excluded) or None;
    metadata: the image layer's metadata (``braggsim_frame`` holds the geometry); name: the layer's.
    """

    data: np.ndarray
    excluded: np.ndarray | None
    metadata: dict
    name: str


def frame_of(source: FrameInput):
    """A ``braggsim.io.Frame`` for the layers: trusted = mask label 0 and finite.
    ValueError when the layer is not 2-D or has no detector geometry."""
    from braggsim.io import Frame

    data = np.asarray(source.data)
    if data.ndim != 2:
        raise ValueError(f"layer {source.name!r} must be a 2-D image, got shape {data.shape}")
    geometry = (source.metadata or {}).get("braggsim_frame") or {}
    missing = [k for k in ("wavelength_A", "distance_mm", "pixel_size_mm", "beam_center_mm") if geometry.get(k) is None]
    if missing:
        raise ValueError(
            f"layer {source.name!r} has no {', '.join(missing)} in its metadata: open the frame with File > Open "
            "or the Load frame widget, so its header geometry comes with it"
        )
    trusted = np.isfinite(data)
    if source.excluded is not None:
        excluded = np.asarray(source.excluded)
        if excluded.shape != data.shape:
            raise ValueError(f"the mask layer is {excluded.shape} but the image {source.name!r} is {data.shape}")
        trusted &= excluded == 0
    return Frame(
        data=np.asarray(data, dtype=np.float32),
        mask=trusted,
        distance_mm=float(geometry["distance_mm"]),
        pixel_size_mm=float(geometry["pixel_size_mm"]),
        wavelength_A=float(geometry["wavelength_A"]),
        beam_center_mm=tuple(float(x) for x in geometry["beam_center_mm"]),
        header={},
        path=str(geometry.get("path") or source.name),
        format=str(geometry.get("format") or ""),
        saturation=geometry.get("saturation"),
    )


def header_geometry(frame):
    """The header's beam and panel in DIALS' frame (as ``braggsim process`` builds it)."""
    from braggsim.dials_geometry import still_geometry_from_header

    return still_geometry_from_header(
        wavelength_A=frame.wavelength_A,
        distance_mm=frame.distance_mm,
        pixel_size_mm=frame.pixel_size_mm,
        beam_center_mm=frame.beam_center_mm,
        shape=frame.shape,
    )


# ------------------------------------------------------------- the options
def process_options(cell_text: dict, space_group_text: str, spotfinder: dict | None = None, pixel: dict | None = None):
    """``braggsim.process.ProcessOptions`` from the fields' text: ValueError naming the field
    for an empty or unreadable one, or a cell the space group's lattice cannot have (the
    lattice constraints would change it by more than 1 %, e.g. a != b for a tetragonal group)."""
    from braggsim.process import ProcessOptions
    from braggsim.unit_cell import CellParameters, space_group

    cell = []
    for name in CELL_NAMES:
        text = str(cell_text.get(name, "")).strip()
        if not text:
            raise ValueError(f"cell {name} is empty: give the cell a b c (Å) alpha beta gamma (deg)")
        try:
            cell.append(float(text))
        except ValueError:
            raise ValueError(f"cell {name} must be a number, got {text!r}") from None
    if not str(space_group_text).strip():
        raise ValueError("the space group is empty: give a name (P 41 21 2), a number (92) or a Hall symbol")
    options = ProcessOptions(cell=tuple(cell), space_group=str(space_group_text).strip(), spotfinder=spotfinder or {})
    group = space_group(options.space_group)
    symmetric = CellParameters(group).symmetrize(options.cell)
    if any(abs(given - allowed) > 0.01 * abs(allowed) for given, allowed in zip(options.cell, symmetric, strict=True)):
        raise ValueError(
            f"cell {_cell_text(options.cell)} does not fit {options.space_group}: a {group.crystal_system_str()} "
            f"lattice would make it {_cell_text(symmetric)}"
        )
    if pixel:
        options.pixel_refine = dict(pixel)
    return options


def _cell_text(cell) -> str:
    return " ".join(f"{float(x):g}" for x in cell)


def spotfinder_options(values: dict):
    """``braggsim.spotfind.SpotFinderOptions`` (ValueError naming a bad value)."""
    from braggsim.spotfind import SpotFinderOptions

    return SpotFinderOptions(**values)


# ------------------------------------------------------------ strong spots
@dataclasses.dataclass
class FoundSpots:
    """Strong spots of a frame and their layer.  spots: ``braggsim.spotfind.StrongSpots``
    (brightest first); layer: the napari Points layer (the brightest MAX_STRONG_SHOWN)."""

    frame: object
    spots: object
    layer: object
    seconds: float

    @property
    def count(self) -> int:
        return len(self.spots)


def strong_diameters_px(sizes) -> np.ndarray:
    """A marker per spot as wide as a disc of the spot's area, plus a pixel each side."""
    sizes = np.asarray(sizes, dtype=float)
    return np.clip(2.0 * np.sqrt(sizes / math.pi) + 2.0, 3.0, MARKER_PX[1])


def find_strong_spots(source: FrameInput, spotfinder: dict) -> FoundSpots:
    """Read the layers into a frame and find its strong spots (a worker thread)."""
    import time

    from braggsim.spotfind import find_spots

    options = spotfinder_options(spotfinder)
    frame = frame_of(source)
    started = time.perf_counter()
    spots = find_spots(frame.data, frame.mask, options)
    seconds = time.perf_counter() - started
    return FoundSpots(frame, spots, strong_layer(spots), seconds)


def strong_layer(spots, indexed: np.ndarray | None = None):
    """The ``strong spots`` Points layer: a cross at each centroid (the brightest
    MAX_STRONG_SHOWN), as wide as the spot; unindexed ones in UNINDEXED_COLOR once indexed."""
    from napari.layers import Points

    shown = min(len(spots), MAX_STRONG_SHOWN)
    px = np.asarray(spots.px, dtype=float)[:shown]
    kwargs = _strong_kwargs(spots, shown, indexed)
    return Points(px if shown else np.zeros((0, 2)), **kwargs)


def _strong_kwargs(spots, shown: int, indexed: np.ndarray | None) -> dict:
    colors = strong_colors(shown, indexed)
    return {
        "name": STRONG_SPOTS,
        "size": strong_diameters_px(np.asarray(spots.size)[:shown]) if shown else 6.0,
        "symbol": "cross",
        "face_color": colors if shown else STRONG_COLOR,
        "border_width": 0.0,
        "canvas_size_limits": (4.0, MARKER_SCREEN_PX[1]),
        "opacity": 0.9,
        "features": {
            "intensity": np.asarray(spots.intensity, dtype=float)[:shown],
            "pixels": np.asarray(spots.size, dtype=int)[:shown],
        },
        "metadata": {"braggsim_strong_spots": len(spots)},
    }


def strong_colors(shown: int, indexed: np.ndarray | None) -> np.ndarray:
    """(shown, 4) RGBA: STRONG_COLOR, or UNINDEXED_COLOR for spots the model does not index."""
    from napari.utils.colormaps.standardize_color import transform_color

    colors = np.tile(transform_color(STRONG_COLOR)[0], (shown, 1))
    if indexed is not None and shown:
        colors[~np.asarray(indexed, bool)[:shown]] = transform_color(UNINDEXED_COLOR)[0]
    return colors


# ----------------------------------------------------------------- the model
@dataclasses.dataclass
class StillModel:
    """A crystal model of the frame and how it indexes the strong spots.

    experiment: ``braggsim.io.expt.StillExperiment`` (beam, panel, crystal, space group,
    mosaicity when refined); fit: the ``braggsim.spot_refine.SpotFit`` it came from (None
    for a model read from an .expt, until Refine fits it); hkl: (n_spots, 3) nearest
    indices of every strong spot; indexed: (n_spots,) bool within 0.3 of them; cell: (6,).
    """

    experiment: object
    fit: object
    hkl: np.ndarray
    indexed: np.ndarray
    cell: tuple
    space_group: str

    @property
    def n_indexed(self) -> int:
        return int(np.count_nonzero(self.indexed))


def assign(real_space: np.ndarray, geometry, px: np.ndarray, tolerance: float = 0.3) -> tuple:
    """(hkl (n, 3) int, indexed (n,) bool): the nearest indices of spots at (slow, fast)
    ``px`` under a model, indexed when all three lie within ``tolerance`` (DIALS' 0.3)."""
    from braggsim.dials_geometry import fractional_hkl

    px = np.asarray(px, dtype=float).reshape(-1, 2)
    if not len(px):
        return np.zeros((0, 3), int), np.zeros(0, bool)
    fractional = fractional_hkl(real_space, geometry.q_vectors(px))
    hkl = np.rint(fractional)
    indexed = np.all(np.abs(fractional - hkl) <= tolerance, axis=1) & np.any(hkl != 0, axis=1)
    return hkl.astype(int), indexed


FIT_PX = 3.0  # spots further than this from their prediction are outliers (spot_refine's outlier_px)


def rmsd_px(real_space, geometry, hkl, observed_px, within_px: float = FIT_PX) -> tuple:
    """(2-D position RMSD in px, spots counted) of spots at ``observed_px`` with indices
    ``hkl`` under a model, with DIALS' stills predictor, over those within ``within_px`` of
    their prediction (as ``braggsim process`` reports it); NaN for none."""
    from braggsim.dials_geometry import predict_still_px

    if not len(hkl):
        return math.nan, 0
    predicted, _, valid = predict_still_px(real_space, hkl, geometry)
    error_sq = np.sum((predicted - np.asarray(observed_px, dtype=float)) ** 2, axis=1)
    used = valid & (error_sq <= within_px * within_px)
    if not used.any():
        return math.nan, 0
    return float(np.sqrt(np.mean(error_sq[used]))), int(used.sum())


def prediction_data(real_space, geometry, hkl, diameter_px: float) -> OverlayData:
    """The still predictions layer's data: the reflections ``hkl`` (n, 3) placed by DIALS'
    stills predictor under the model, labelled "h k l"."""
    from braggsim.dials_geometry import predict_still_px, reciprocal_matrix

    hkl = np.asarray(hkl, dtype=int).reshape(-1, 3)
    px, _, valid = predict_still_px(real_space, hkl, geometry)
    px, hkl = px[valid], hkl[valid]
    q = hkl @ reciprocal_matrix(real_space).T
    d_A = 1.0 / np.maximum(np.linalg.norm(q, axis=1), 1e-12) if len(hkl) else np.zeros(0)
    return OverlayData(
        spots_px=px,
        diameters_px=np.full(len(px), float(diameter_px)),
        hkl=np.array([f"{h} {k} {l}" for h, k, l in hkl], dtype=object),
        d_A=d_A,
        spacing_px=typical_spacing(px),
        predicted=len(px),
        rings=[],
        ring_labels=[],
        ring_width_px=1.0,
        beam_px=np.asarray(geometry.beam_centre_px(), dtype=float),
    )


def prediction_diameter_px(spots) -> float:
    """One marker size for the predictions: twice the median strong spot's marker, so the
    observed cross sits inside the predicted circle."""
    sizes = np.asarray(spots.size, dtype=float)
    typical = float(np.median(strong_diameters_px(sizes))) if sizes.size else 5.0
    return float(np.clip(2.0 * typical, MARKER_PX[0] * 2, MARKER_PX[1]))


@dataclasses.dataclass
class Shown:
    """A model ready for the screen: the model, its prediction layer data (and the layer
    ready-made) and the strong spots' indexed flags."""

    model: StillModel | None
    predictions: OverlayData | None
    layer: object = None
    rmsd_px: float = math.nan
    n_fitted: int = 0  # the indexed spots within FIT_PX of their prediction (the RMSD's)


def show_model(model: StillModel, spots) -> Shown:
    """Predictions of the model's indexed spots, with the layer made (a worker thread)."""
    e = model.experiment
    data = prediction_data(e.real_space, e.geometry, model.hkl[model.indexed], prediction_diameter_px(spots))
    rmsd, n_fitted = rmsd_px(e.real_space, e.geometry, model.hkl[model.indexed], np.asarray(spots.px)[model.indexed])
    return Shown(model, data, spots_layer(data, STILL_SPOTS), rmsd, n_fitted)


# ------------------------------------------------------------------ indexing
@dataclasses.dataclass
class Indexed:
    """What Index gives: status "indexed" or "no-lattice" (reason says why), the counts and
    the spot fit's RMSD, and the model (None when no lattice)."""

    status: str
    reason: str
    n_spots: int
    n_indexed: int
    rmsd_px: float
    shown: Shown | None
    found: FoundSpots
    seconds: float


def index_frame(found: FoundSpots, options) -> Indexed:
    """Index the strong spots with the options' cell and space group (a worker thread)."""
    import time

    from braggsim.index import index_still
    from braggsim.io.expt import StillExperiment
    from braggsim.unit_cell import space_group

    started = time.perf_counter()
    group = space_group(options.space_group)
    frame = found.frame
    result = index_still(found.spots.px, header_geometry(frame), options.cell, group, options.indexing)
    seconds = time.perf_counter() - started
    fit = result.fit
    if result.status != "indexed" or fit is None:
        return Indexed(result.status, result.reason, result.n_spots, 0, math.nan, None, found, seconds)
    experiment = StillExperiment(
        geometry=fit.geometry,
        real_space=fit.real_space,
        space_group_hall=group.hall,
        image=frame.path,
        trusted_range=(-1.0, float(frame.saturation) if frame.saturation is not None else 1e9),
    )
    model = StillModel(experiment, fit, fit.hkl, fit.indexed, tuple(fit.cell), options.space_group)
    return Indexed(
        "indexed", "", result.n_spots, fit.n_indexed, fit.rmsd_px, show_model(model, found.spots), found, seconds
    )


# ------------------------------------------------------------------ .expt
def read_model(path, found: FoundSpots) -> tuple:
    """(Shown, notes): the first crystal of the .expt at ``path`` as the model, indexing
    the strong spots; notes say what was left out.  ValueError when it does not fit the frame."""
    from braggsim.io.expt import read_expt
    from braggsim.unit_cell import cell_from_real_space, space_group

    experiments = read_expt(path)
    with_crystal = [e for e in experiments if e.real_space is not None]
    if not with_crystal:
        raise ValueError(f"{path}: no crystal model in the file (nothing to predict spots from)")
    notes = []
    if len(with_crystal) > 1:
        notes.append(f"{len(with_crystal)} crystals in the file: the first is used")
    experiment = with_crystal[0]
    frame = found.frame
    size = tuple(experiment.geometry.image_size)
    if size != (frame.shape[1], frame.shape[0]):
        raise ValueError(
            f"{path}: its detector is {size[0]} x {size[1]} pixels (fast x slow) but the frame is "
            f"{frame.shape[1]} x {frame.shape[0]}"
        )
    group = space_group(experiment.space_group_hall)
    cell = tuple(float(x) for x in cell_from_real_space(experiment.real_space))
    hkl, indexed = assign(experiment.real_space, experiment.geometry, found.spots.px)
    model = StillModel(experiment, None, hkl, indexed, cell, group.xhm())
    return show_model(model, found.spots), notes


def experiment_to_save(model: StillModel):
    """The model's ``StillExperiment`` as Save writes it."""
    return model.experiment


def write_model(path, model: StillModel) -> None:
    """Write the model as a DIALS .expt, atomically."""
    from braggsim.io.expt import write_expt

    write_expt(path, experiment_to_save(model))


# --------------------------------------------------------------- refinement
@dataclasses.dataclass
class RefineStep:
    """One iteration for the screen: the core's ``PixelRefineStep``, the predictions moved
    with it ((n, 2) px of the shown reflections), the spots' RMSD under it, and
    (iteration, negative log-likelihood) of every iteration so far (the job keeps only the
    newest step, so the loss plot reads them from here and misses none)."""

    step: object
    predicted_px: np.ndarray
    rmsd_px: float
    history: tuple = ()


@dataclasses.dataclass
class Refined:
    """What Refine gives: the core's ``PixelRefinement``, the model now (the refined one if
    it predicts the spots at least as well, else the spot fit with the refined mosaicity),
    and the final predictions."""

    refinement: object
    shown: Shown
    spot_stage: bool  # the model came from an .expt and was fitted to the spots first
    stopped: bool = False  # Stop ended the run early (the best parameters so far are kept)


def refine_model(
    found: FoundSpots,
    model: StillModel,
    options,
    publish: Callable[[RefineStep], None],
    cancelled: Callable[[], bool],
) -> Refined:
    """Refine ``model`` against the pixels around its indexed spots (a worker thread);
    ``publish`` gets every iteration, ``cancelled()`` ends the run at the next one."""
    from braggsim.dials_geometry import predict_still_px
    from braggsim.spot_refine import refine_on_spots
    from braggsim.still_refine import PixelRefineOptions, refine_still_pixels
    from braggsim.unit_cell import space_group

    group = space_group(model.space_group)
    spots = found.spots
    experiment = model.experiment
    fit = model.fit
    spot_stage = fit is None
    if spot_stage:  # a model read from an .expt: fitted to the spots first, as indexing does
        fit = refine_on_spots(
            spots.px, experiment.real_space, experiment.geometry, group, model.cell, options.indexing.spot_refine
        )
    # the reflections the predictions layer shows now (``show_model``): they move with each step
    shown_hkl = model.hkl[model.indexed]
    shown_hkl = shown_hkl[predict_still_px(experiment.real_space, shown_hkl, experiment.geometry)[2]]
    observed = np.asarray(spots.px, dtype=float)
    indexed_hkl, indexed_px = fit.hkl[fit.indexed], observed[fit.indexed]
    start = dict(options.pixel_refine)
    if experiment.half_mosaicity_deg and experiment.domain_size_A:  # carry on from the last run
        start.setdefault("start_mosaic_deg", 2.0 * float(experiment.half_mosaicity_deg))
        start.setdefault("start_domain_A", float(experiment.domain_size_A))
    pixel_options = PixelRefineOptions(**start)
    history: list = []
    stopped = [False]

    def progress(step) -> bool:
        px, _, _ = predict_still_px(step.real_space, shown_hkl, step.geometry)
        history.append((int(step.iteration), float(step.nll)))
        rmsd = rmsd_px(step.real_space, step.geometry, indexed_hkl, indexed_px)[0]
        publish(RefineStep(step, px, rmsd, tuple(history)))
        stopped[0] = stopped[0] or bool(cancelled())
        return stopped[0]

    refined = refine_still_pixels(found.frame, spots, fit, group, model.cell, pixel_options, progress=progress)
    new_experiment = dataclasses.replace(
        experiment,
        half_mosaicity_deg=refined.mosaic_deg / 2.0,
        domain_size_A=refined.domain_size_A,
    )
    cell = tuple(fit.cell)
    if refined.accepted:
        new_experiment.geometry, new_experiment.real_space = refined.geometry, refined.real_space
        cell = tuple(refined.cell)
        fit = dataclasses.replace(
            fit,
            real_space=refined.real_space,
            geometry=refined.geometry,
            cell=cell,
            predicted_px=predict_still_px(refined.real_space, fit.hkl, refined.geometry)[0],
        )
    elif spot_stage:
        new_experiment.geometry, new_experiment.real_space = fit.geometry, fit.real_space
    hkl, indexed = assign(new_experiment.real_space, new_experiment.geometry, spots.px)
    new_model = StillModel(new_experiment, fit, hkl, indexed, cell, model.space_group)
    return Refined(refined, show_model(new_model, spots), spot_stage, stopped[0])
