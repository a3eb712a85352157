"""Frame: one detector image with its trust mask and the geometry its header carries."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

METADATA_KEY = "braggsim_frame"
FORMATS = ("smv", "cbf", "edf", "tiff", "nexus", "nanobragg_float")


@dataclasses.dataclass
class Frame:
    """A detector frame.

    data: (slow, fast) float32 pixel values.
    mask: (slow, fast) bool, True = trusted pixel.
    distance_mm, pixel_size_mm, wavelength_A: from the header; None when it has none.
    beam_center_mm: (Xbeam, Ybeam) in braggsim's MOSFLM convention (as
        ``braggsim.Detector(convention="mosflm", beam_center_mm=...)`` takes it): Xbeam runs
        along the slow axis, Ybeam along the fast axis, both measured from the centre of the
        first pixel. None when the header has no beam centre.
    header: the raw header, str -> str.
    format: one of FORMATS.
    saturation: the value at and above which a pixel is saturated; None if unknown.
    index: the image's 0-based index in a multi-image file; None when read without one.
    """

    data: np.ndarray
    mask: np.ndarray
    distance_mm: float | None
    pixel_size_mm: float | None
    wavelength_A: float | None
    beam_center_mm: tuple | None
    header: dict
    path: str
    format: str
    saturation: float | None = None
    index: int | None = None

    @property
    def shape(self) -> tuple:
        """(spixels, fpixels)."""
        return tuple(int(n) for n in self.data.shape)

    def detector_kwargs(self) -> dict:
        """Keyword arguments for ``braggsim.Detector`` (None fields left out)."""
        spixels, fpixels = self.shape
        kwargs = {"fpixels": fpixels, "spixels": spixels, "convention": "mosflm"}
        for name in ("pixel_size_mm", "distance_mm"):
            if getattr(self, name) is not None:
                kwargs[name] = float(getattr(self, name))
        if self.beam_center_mm is not None:
            kwargs["beam_center_mm"] = tuple(float(x) for x in self.beam_center_mm)
        return kwargs

    def beam_kwargs(self) -> dict:
        """Keyword arguments for ``braggsim.Beam`` (empty when the wavelength is unknown)."""
        return {} if self.wavelength_A is None else {"wavelength_A": float(self.wavelength_A)}

    def metadata(self) -> dict:
        """A JSON-able dict for a napari layer's ``metadata``."""
        geometry = {
            "shape": list(self.shape),
            "distance_mm": self.distance_mm,
            "pixel_size_mm": self.pixel_size_mm,
            "wavelength_A": self.wavelength_A,
            "beam_center_mm": None if self.beam_center_mm is None else [float(x) for x in self.beam_center_mm],
            "beam_center_convention": "mosflm",
            "saturation": self.saturation,
            "path": self.path,
            "format": self.format,
        }
        return {METADATA_KEY: {k: _plain(v) for k, v in geometry.items()}}


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def frame_from_metadata(metadata: dict) -> dict:
    """``{"detector": Detector kwargs, "beam": Beam kwargs}`` from a layer's metadata
    (as :meth:`Frame.metadata` made it); raises ValueError if it holds no frame."""
    if not isinstance(metadata, dict) or not isinstance(metadata.get(METADATA_KEY), dict):
        raise ValueError(f"metadata has no {METADATA_KEY!r} entry: {metadata!r:.200}")
    info = metadata[METADATA_KEY]
    shape = info.get("shape")
    if not (isinstance(shape, (list, tuple)) and len(shape) == 2):
        raise ValueError(f"{METADATA_KEY} shape must be [slow, fast], got {shape!r}")
    detector = {"spixels": int(shape[0]), "fpixels": int(shape[1]), "convention": "mosflm"}
    for name in ("pixel_size_mm", "distance_mm"):
        value = info.get(name)
        if value is not None:
            detector[name] = _finite(name, value)
    if info.get("beam_center_mm") is not None:
        x, y = info["beam_center_mm"]
        detector["beam_center_mm"] = (_finite("Xbeam", x), _finite("Ybeam", y))
    beam = {}
    if info.get("wavelength_A") is not None:
        beam["wavelength_A"] = _finite("wavelength_A", info["wavelength_A"])
    return {"detector": detector, "beam": beam}


def _finite(name, value) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{METADATA_KEY} {name} must be finite, got {value!r}")
    return number
