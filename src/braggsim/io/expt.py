"""DIALS ExperimentList (``.expt`` JSON): read, write, and convert to and from braggsim's model.

What is kept: one beam (wavelength, direction, polarization), one single-panel detector
(origin, fast, slow, pixel size, image size, trusted range), one crystal (real_space_a/b/c,
space_group_hall_symbol, and the stills mosaicity ``ML_half_mosaicity_deg`` /
``ML_domain_size_ang`` when known) and the image path.  Goniometers and scans are neither
read nor written: these are stills.

Frames.  A .expt lives in DIALS' laboratory frame (X-rays along -z, the beam's ``direction``
points back to the source), :class:`braggsim.dials_geometry.StillGeometry`.  braggsim's
:class:`~braggsim.Crystal`/:class:`~braggsim.Detector`/:class:`~braggsim.Beam` live in
nanoBragg's MOSFLM frame (X-rays along +x).  :func:`to_braggsim` first turns the whole
experiment so the beam runs along -z (a proper rotation changes no prediction), then maps
DIALS to MOSFLM with :data:`braggsim.dials_geometry.MOSFLM_TO_DIALS` transposed.  The
detector becomes a MOSFLM-convention Detector with pivot "beam", its rotations
(``rotation_deg``, applied about x then y then z) and beam centre solved so that braggsim's
``detector_frame`` gives back the panel's origin, fast and slow exactly; the crystal becomes
a cell plus ``misset_deg``, or a MOSFLM A matrix when the cell is one nanoBragg would not
rebuild exactly.  :func:`from_braggsim` is the inverse.

Mosaicity: DIALS' half-mosaicity (deg) maps to nanoBragg's spread as ``spread = 2 * half``
and its domain size to ``N = size / edge`` on each axis; both are approximate (the models
differ), and the only ones.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from ..dials_geometry import MOSFLM_TO_DIALS, StillGeometry
from ._atomic import atomic_output

__all__ = [
    "StillExperiment",
    "crystal_from_real_space",
    "experiment_to_dict",
    "experiments_from_dict",
    "from_braggsim",
    "read_expt",
    "to_braggsim",
    "write_expt",
]


@dataclasses.dataclass
class StillExperiment:
    """One still as a .expt holds it.

    geometry: beam and panel (DIALS frame).  real_space: (3, 3) rows a, b, c in Angstrom, or
    None (an experiment without a crystal).  space_group_hall: Hall symbol ("P 4abw 2nw").
    image: the image path, and image_index for a multi-image file (None = the only image).
    half_mosaicity_deg, domain_size_A: stills mosaicity (None when unknown).
    trusted_range: (low, high) pixel values; thickness_mm, material, mu: sensor (written as
    given; braggsim's predictions use a plain flat panel).
    polarization_fraction, polarization_normal: the beam's polarization as dxtbx has it.
    """

    geometry: StillGeometry
    real_space: np.ndarray | None = None
    space_group_hall: str = "P 1"
    image: str | None = None
    image_index: int | None = None
    half_mosaicity_deg: float | None = None
    domain_size_A: float | None = None
    trusted_range: tuple = (-1.0, 1e9)
    thickness_mm: float = 0.0
    material: str = ""
    mu: float = 0.0
    polarization_fraction: float = 0.999
    polarization_normal: tuple = (0.0, 1.0, 0.0)
    identifier: str = ""


# --------------------------------------------------------------------------- JSON
def experiment_to_dict(experiment: StillExperiment) -> dict:
    """The ExperimentList dict (JSON-able) of one still."""
    g = experiment.geometry
    beam: dict[str, Any] = {
        "__id__": "monochromatic",
        "direction": _list(g.beam_direction),
        "wavelength": float(g.wavelength_A),
        "divergence": 0.0,
        "sigma_divergence": 0.0,
        "polarization_normal": _list(experiment.polarization_normal),
        "polarization_fraction": float(experiment.polarization_fraction),
        "flux": 0.0,
        "transmission": 1.0,
        "probe": "x-ray",
        "sample_to_source_distance": 0.0,
    }
    panel: dict[str, Any] = {
        "name": "Panel",
        "type": "SENSOR_PAD",
        "fast_axis": _list(g.fast),
        "slow_axis": _list(g.slow),
        "origin": _list(g.origin),
        "raw_image_offset": [0, 0],
        "image_size": [int(g.image_size[0]), int(g.image_size[1])],
        "pixel_size": [float(g.pixel_size_mm[0]), float(g.pixel_size_mm[1])],
        "trusted_range": [float(x) for x in experiment.trusted_range],
        "thickness": float(experiment.thickness_mm),
        "material": str(experiment.material),
        "mu": float(experiment.mu),
        "identifier": "",
        "mask": [],
        "gain": 1.0,
        "pedestal": 0.0,
        "px_mm_strategy": {"type": "SimplePxMmStrategy"},
    }
    hierarchy: dict[str, Any] = {
        "name": "",
        "type": "",
        "fast_axis": [1.0, 0.0, 0.0],
        "slow_axis": [0.0, 1.0, 0.0],
        "origin": [0.0, 0.0, 0.0],
        "raw_image_offset": [0, 0],
        "image_size": [0, 0],
        "pixel_size": [0.0, 0.0],
        "trusted_range": [0.0, 0.0],
        "thickness": 0.0,
        "material": "",
        "mu": 0.0,
        "identifier": "",
        "mask": [],
        "gain": 1.0,
        "pedestal": 0.0,
        "px_mm_strategy": {"type": "SimplePxMmStrategy"},
        "children": [{"panel": 0}],
    }
    entry: dict[str, Any] = {"__id__": "Experiment", "identifier": experiment.identifier, "beam": 0, "detector": 0}
    document: dict[str, Any] = {
        "__id__": "ExperimentList",
        "experiment": [entry],
        "imageset": [],
        "beam": [beam],
        "detector": [{"panels": [panel], "hierarchy": hierarchy}],
        "goniometer": [],
        "scan": [],
        "crystal": [],
        "profile": [],
        "scaling_model": [],
    }
    if experiment.image is not None:
        imageset: dict[str, Any] = {
            "__id__": "ImageSet",
            "images": [str(experiment.image)],
            "mask": "",
            "gain": "",
            "pedestal": "",
            "dx": "",
            "dy": "",
            "params": {"dynamic_shadowing": "Auto", "multi_panel": False},
        }
        if experiment.image_index is not None:
            imageset["single_file_indices"] = [int(experiment.image_index)]
        document["imageset"].append(imageset)
        entry["imageset"] = 0
    if experiment.real_space is not None:
        real = np.asarray(experiment.real_space, dtype=float)
        crystal: dict[str, Any] = {
            "__id__": "crystal",
            "real_space_a": _list(real[0]),
            "real_space_b": _list(real[1]),
            "real_space_c": _list(real[2]),
            "space_group_hall_symbol": " " + experiment.space_group_hall.strip(),
        }
        if experiment.half_mosaicity_deg is not None and experiment.domain_size_A is not None:
            crystal["ML_half_mosaicity_deg"] = float(experiment.half_mosaicity_deg)
            crystal["ML_domain_size_ang"] = float(experiment.domain_size_A)
        document["crystal"].append(crystal)
        entry["crystal"] = 0
    return document


def write_expt(path, experiment: StillExperiment) -> None:
    """Write one still as a DIALS .expt, atomically (a reader never sees half a file)."""
    text = json.dumps(experiment_to_dict(experiment), indent=2)
    with atomic_output(path) as handle:
        handle.write(text.encode("utf-8"))


def read_expt(path) -> list[StillExperiment]:
    """Every experiment of a .expt with a single-panel detector and no scan or goniometer
    that matters (a rotation experiment's goniometer is ignored: it is read as a still).

    Raises ValueError naming the file and what is missing or unsupported."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file (bytes that are not UTF-8)") from None
    return experiments_from_dict(document, source=path)


def experiments_from_dict(document: dict, source: str = "<dict>") -> list[StillExperiment]:
    """:func:`read_expt` on an already-parsed document."""
    if not isinstance(document, dict) or document.get("__id__") != "ExperimentList":
        raise ValueError(f"{source}: not a DIALS ExperimentList (no '__id__': 'ExperimentList')")
    experiments = []
    for number, entry in enumerate(document.get("experiment", [])):
        try:
            experiments.append(_experiment(document, entry))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ValueError(f"{source}: experiment {number}: {exc}") from None
    if not experiments:
        raise ValueError(f"{source}: the ExperimentList holds no experiment")
    return experiments


def _experiment(document: dict, entry: dict) -> StillExperiment:
    beam = _model(document, "beam", entry.get("beam"))
    if beam is None:
        raise ValueError("no beam")
    detector = _model(document, "detector", entry.get("detector"))
    if detector is None:
        raise ValueError("no detector")
    panels = detector.get("panels", [])
    if len(panels) != 1:
        raise ValueError(f"{len(panels)} detector panels; only single-panel detectors are supported")
    panel = panels[0]
    origin, fast, slow = (np.asarray(panel[k], dtype=float) for k in ("origin", "fast_axis", "slow_axis"))
    # a hierarchy above the panel moves it; compose the frames as dxtbx does
    hierarchy = detector.get("hierarchy")
    if isinstance(hierarchy, dict) and any(hierarchy.get(k) for k in ("origin",)):
        h_origin = np.asarray(hierarchy.get("origin", [0, 0, 0]), dtype=float)
        h_fast = np.asarray(hierarchy.get("fast_axis", [1, 0, 0]), dtype=float)
        h_slow = np.asarray(hierarchy.get("slow_axis", [0, 1, 0]), dtype=float)
        frame = np.stack([h_fast, h_slow, np.cross(h_fast, h_slow)], axis=1)
        if not (np.allclose(frame, np.eye(3)) and np.allclose(h_origin, 0)):
            origin = h_origin + frame @ origin
            fast, slow = frame @ fast, frame @ slow
    geometry = StillGeometry(
        wavelength_A=float(beam["wavelength"]),
        beam_direction=np.asarray(beam["direction"], dtype=float),
        origin=origin,
        fast=fast,
        slow=slow,
        pixel_size_mm=tuple(panel["pixel_size"]),
        image_size=tuple(panel["image_size"]),
    )
    experiment = StillExperiment(
        geometry=geometry,
        trusted_range=tuple(float(x) for x in panel.get("trusted_range", (-1.0, 1e9))),
        thickness_mm=float(panel.get("thickness", 0.0)),
        material=str(panel.get("material", "")),
        mu=float(panel.get("mu", 0.0)),
        polarization_fraction=float(beam.get("polarization_fraction", 0.999)),
        polarization_normal=tuple(float(x) for x in beam.get("polarization_normal", (0.0, 1.0, 0.0))),
        identifier=str(entry.get("identifier", "")),
    )
    crystal = _model(document, "crystal", entry.get("crystal"))
    if crystal is not None:
        experiment.real_space = np.array([crystal[k] for k in ("real_space_a", "real_space_b", "real_space_c")], float)
        if abs(np.linalg.det(experiment.real_space)) < 1e-9:
            raise ValueError("crystal axes are degenerate")
        experiment.space_group_hall = str(crystal.get("space_group_hall_symbol", "P 1")).strip()
        if "ML_half_mosaicity_deg" in crystal and "ML_domain_size_ang" in crystal:
            experiment.half_mosaicity_deg = float(crystal["ML_half_mosaicity_deg"])
            experiment.domain_size_A = float(crystal["ML_domain_size_ang"])
    imageset = _model(document, "imageset", entry.get("imageset"))
    if imageset is not None:
        images = imageset.get("images") or []
        template = imageset.get("template")
        if images:
            experiment.image = str(images[0])
        elif template:
            experiment.image = str(template)
        indices = imageset.get("single_file_indices")
        if indices:
            experiment.image_index = int(indices[0])
    return experiment


def _model(document: dict, kind: str, index):
    if index is None:
        return None
    models = document.get(kind) or []
    if not isinstance(index, int) or not 0 <= index < len(models):
        raise ValueError(f"{kind} index {index!r} is out of range ({len(models)} {kind} models)")
    return models[index]


def _list(vector) -> list:
    return [float(x) for x in np.asarray(vector, dtype=float).reshape(-1)]


# ----------------------------------------------------------------- conversions
def _beam_alignment(beam_direction: np.ndarray) -> np.ndarray:
    """The proper rotation taking ``beam_direction`` to (0, 0, 1) (identity when it is already)."""
    target = np.array([0.0, 0.0, 1.0])
    axis = np.cross(beam_direction, target)
    sine, cosine = float(np.linalg.norm(axis)), float(beam_direction @ target)
    if sine < 1e-15:
        return np.eye(3) if cosine > 0 else Rotation.from_rotvec([math.pi, 0.0, 0.0]).as_matrix()
    return Rotation.from_rotvec(axis / sine * math.atan2(sine, cosine)).as_matrix()


def to_braggsim(experiment: StillExperiment, *, N_cells=None, default_F: float = 1.0, **crystal_fields):
    """(Crystal or None, Detector, Beam) in braggsim's MOSFLM frame, predicting what the
    experiment predicts.  N_cells: overrides the domain-size estimate; crystal_fields go to
    :class:`braggsim.Crystal` (e.g. mosaic_domains)."""
    from ..beam import Beam
    from ..detector import Detector

    g = experiment.geometry
    to_mosflm = MOSFLM_TO_DIALS.T @ _beam_alignment(g.beam_direction)
    fast, slow, origin = to_mosflm @ g.fast, to_mosflm @ g.slow, to_mosflm @ g.origin
    if abs(g.pixel_size_mm[0] - g.pixel_size_mm[1]) > 1e-9 * g.pixel_size_mm[0]:
        raise ValueError(f"braggsim's Detector has square pixels; the panel has {g.pixel_size_mm!r} mm")
    pixel = g.pixel_size_mm[0]
    # braggsim: fast = R (0,0,1), slow = R (0,-1,0), normal = R (1,0,0) with R = Rz Ry Rx
    # columns are R e_x, R e_y, R e_z: normal0 = x, slow0 = -y, fast0 = z
    rotation = np.stack([np.cross(fast, slow), -slow, fast], axis=1)
    angles = Rotation.from_matrix(rotation).as_euler("xyz", degrees=True)
    # pivot "beam": pix0 = -Fbeam fast - Sbeam slow + distance * x
    solve = np.linalg.solve(np.stack([fast, slow, np.array([1.0, 0.0, 0.0])], axis=1), origin)
    f_beam, s_beam, distance = -solve[0], -solve[1], solve[2]
    if distance <= 0:
        raise ValueError(f"the panel is not in front of the sample along the beam (distance {distance:g} mm)")
    detector = Detector(
        fpixels=int(g.image_size[0]),
        spixels=int(g.image_size[1]),
        pixel_size_mm=pixel,
        distance_mm=float(distance),
        beam_center_mm=(float(s_beam - 0.5 * pixel), float(f_beam - 0.5 * pixel)),
        convention="mosflm",
        pivot="beam",
        rotation_deg=tuple(float(a) for a in angles),
    )
    kahn = 2.0 * float(experiment.polarization_fraction) - 1.0
    beam = Beam(wavelength_A=float(g.wavelength_A), polarization=min(max(kahn, -1.0), 1.0))
    if experiment.real_space is None:
        return None, detector, beam
    real_mosflm = np.asarray(experiment.real_space, dtype=float) @ to_mosflm.T
    crystal = crystal_from_real_space(
        real_mosflm,
        wavelength_A=float(g.wavelength_A),
        N_cells=N_cells if N_cells is not None else _n_cells(real_mosflm, experiment.domain_size_A),
        mosaic_spread_deg=2.0 * experiment.half_mosaicity_deg if experiment.half_mosaicity_deg else 0.0,
        default_F=default_F,
        **crystal_fields,
    )
    return crystal, detector, beam


def _n_cells(real: np.ndarray, domain_size_A: float | None) -> tuple:
    if not domain_size_A:
        return (10, 10, 10)
    return tuple(max(1.0, float(domain_size_A) / float(np.linalg.norm(row))) for row in real)


def crystal_from_real_space(real_mosflm: np.ndarray, *, wavelength_A: float, **fields):
    """A braggsim Crystal whose oriented real axes are ``real_mosflm`` (rows a, b, c, MOSFLM frame):
    cell + misset when nanoBragg rebuilds that cell exactly, else a MOSFLM A matrix."""
    import torch

    from ..crystal import Crystal, unrotated_real_axes
    from ..unit_cell import cell_from_real_space

    cell = cell_from_real_space(real_mosflm)
    probe = Crystal(cell=cell, default_F=1.0)
    with torch.no_grad():
        unrotated = unrotated_real_axes(probe, torch.float64, "cpu").numpy()
    rotation = np.asarray(real_mosflm, dtype=float).T @ np.linalg.inv(unrotated.T)
    u, _, vt = np.linalg.svd(rotation)
    proper = u @ vt
    if np.linalg.det(proper) > 0 and np.allclose(
        unrotated @ proper.T, real_mosflm, atol=1e-9 * np.abs(real_mosflm).max()
    ):
        misset = Rotation.from_matrix(proper).as_euler("xyz", degrees=True)
        return Crystal(cell=cell, misset_deg=tuple(float(a) for a in misset), **fields)
    reciprocal = np.linalg.inv(np.asarray(real_mosflm, dtype=float))  # columns a*, b*, c*
    return Crystal(mosflm_matrix=reciprocal * wavelength_A, matrix_wavelength_A=wavelength_A, **fields)


def from_braggsim(crystal, detector, beam, *, space_group_hall: str = "P 1", **fields) -> StillExperiment:
    """A StillExperiment (DIALS frame) from braggsim's Crystal (or None), Detector and Beam
    (crystal at its phi start, mean orientation, no mosaic rotation)."""
    import torch

    from ..crystal import oriented_real_axes, phi_angles_rad
    from ..detector import detector_frame
    from ..rotation import rotation_about_axis

    with torch.no_grad():
        frame = detector_frame(detector, torch.float64, "cpu")
    vectors = {k: getattr(frame, k).numpy() for k in ("fast", "slow", "pix0_mm", "beam", "spindle_axis")}
    pixel = float(detector.pixel_size_mm)
    geometry = StillGeometry(
        wavelength_A=float(beam.wavelength_A),
        beam_direction=-(MOSFLM_TO_DIALS @ vectors["beam"]),
        origin=MOSFLM_TO_DIALS @ vectors["pix0_mm"],
        fast=MOSFLM_TO_DIALS @ vectors["fast"],
        slow=MOSFLM_TO_DIALS @ vectors["slow"],
        pixel_size_mm=(pixel, pixel),
        image_size=(detector.fpixels, detector.spixels),
    )
    kahn = float(beam.polarization)
    experiment = StillExperiment(
        geometry=geometry, space_group_hall=space_group_hall, polarization_fraction=(kahn + 1) / 2, **fields
    )
    if crystal is not None:
        with torch.no_grad():
            axes = oriented_real_axes(crystal, torch.float64, "cpu")
            axis = torch.as_tensor(
                np.asarray(crystal.spindle_axis, float)
                if crystal.spindle_axis is not None
                else vectors["spindle_axis"],
                dtype=torch.float64,
            )
            phi0 = phi_angles_rad(crystal, torch.float64, "cpu")[:1]
            real = (axes @ rotation_about_axis(axis, phi0)[0].T).numpy()
        experiment.real_space = real @ MOSFLM_TO_DIALS.T
    return experiment
