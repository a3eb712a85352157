"""Eiger / NeXus master files through h5py (+ hdf5plugin for bitshuffle/LZ4 data).

Pixels: image ``index`` of the images in ``entry/data/data`` or ``entry/data/data_NNNNNN``
(external links to data files), counted across the data sets in name order; without an
index, the first readable image.  Geometry, when present, from
``entry/instrument/detector/{distance|detector_distance, x_pixel_size, beam_center_x,
beam_center_y}`` (lengths in the dataset's ``units``, metres if none, beam centre in
pixels from the first pixel's outer edge) and ``entry/instrument/beam/incident_wavelength``
(Angstrom unless ``units`` says otherwise).  ``detectorSpecific/pixel_mask`` (nonzero =
bad) and ``saturation_value`` / ``countrate_correction_count_cutoff`` feed the mask.
"""

from __future__ import annotations

import contextlib
import math
import os

import numpy as np

from ._bytes import check_frame_memory
from .errors import FrameReadError
from .pilatus import center_px_to_mosflm_mm

_LENGTH_TO_MM = {
    "m": 1000.0,
    "meter": 1000.0,
    "metre": 1000.0,
    "mm": 1.0,
    "millimeter": 1.0,
    "um": 1e-3,
    "micron": 1e-3,
    "microns": 1e-3,
    "cm": 10.0,
}
_LENGTH_TO_A = {"angstrom": 1.0, "a": 1.0, "å": 1.0, "nm": 10.0, "m": 1e10, "meter": 1e10}


def read_nexus(path: str, index: int | None = None):
    """(data (slow, fast), header dict, geometry dict, extra bad-pixel mask or None).

    index: which image of a multi-image file (0-based); None = the first readable one."""
    with contextlib.suppress(ImportError):
        import hdf5plugin  # noqa: F401  registers the compression filters Eiger files use
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            data = _first_image(path, h5) if index is None else _image(path, h5, index)
            detector = h5.get("entry/instrument/detector")
            beam = h5.get("entry/instrument/beam")
            header = {}
            geometry: dict = {
                "distance_mm": None,
                "pixel_size_mm": None,
                "wavelength_A": None,
                "beam_center_mm": None,
                "saturation": None,
            }
            bad = None
            if isinstance(detector, h5py.Group):
                for key in (
                    "distance",
                    "detector_distance",
                    "x_pixel_size",
                    "y_pixel_size",
                    "beam_center_x",
                    "beam_center_y",
                ):
                    if isinstance(detector.get(key), h5py.Dataset):
                        header[key] = str(_scalar(path, detector[key]))
                distance_key = "distance" if "distance" in header else "detector_distance"
                geometry["distance_mm"] = _length_mm(path, detector, distance_key)
                geometry["pixel_size_mm"] = _length_mm(path, detector, "x_pixel_size")
                if "beam_center_x" in header and "beam_center_y" in header and geometry["pixel_size_mm"]:
                    geometry["beam_center_mm"] = center_px_to_mosflm_mm(
                        _finite(path, "beam_center_x", header["beam_center_x"]),
                        _finite(path, "beam_center_y", header["beam_center_y"]),
                        geometry["pixel_size_mm"],
                    )
                specific = detector.get("detectorSpecific")
                if isinstance(specific, h5py.Group):
                    for key in ("saturation_value", "countrate_correction_count_cutoff"):
                        if isinstance(specific.get(key), h5py.Dataset):
                            geometry["saturation"] = float(_scalar(path, specific[key]))
                            header[key] = str(geometry["saturation"])
                            break
                    pixel_mask = specific.get("pixel_mask")
                    if isinstance(pixel_mask, h5py.Dataset) and pixel_mask.shape == data.shape:
                        bad = np.asarray(pixel_mask[()]) != 0
            if isinstance(beam, h5py.Group) and isinstance(beam.get("incident_wavelength"), h5py.Dataset):
                item = beam["incident_wavelength"]
                units = _units(item) or "angstrom"
                if units not in _LENGTH_TO_A:
                    raise FrameReadError(path, f"incident_wavelength has unknown units {units!r}")
                geometry["wavelength_A"] = _positive(
                    path, "incident_wavelength", float(_scalar(path, item)) * _LENGTH_TO_A[units]
                )
                header["incident_wavelength"] = str(_scalar(path, item))
    except FrameReadError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise FrameReadError(path, f"cannot read it as HDF5/NeXus ({type(exc).__name__}: {exc})") from None
    except MemoryError:
        raise FrameReadError(path, "ran out of memory reading the image") from None
    return data, header, geometry, bad


def _first_image(path, h5) -> np.ndarray:
    import h5py

    group = h5.get("entry/data")
    if group is None:
        raise FrameReadError(path, "no entry/data group (not a NeXus/Eiger master file)")
    names = sorted(k for k in group if k == "data" or k.startswith("data_"))
    for name in names:
        try:
            item = group[name]
        except KeyError:  # a dangling external link: the data file is missing
            continue
        if not isinstance(item, h5py.Dataset):  # a group or a named datatype under a data name
            continue
        if item.ndim == 3 and item.shape[0] > 0:
            _check_image_dataset(path, item, item.shape[1:])
            return np.asarray(item[0])
        if item.ndim == 2:
            _check_image_dataset(path, item, item.shape)
            return np.asarray(item[()])
    raise FrameReadError(path, "entry/data holds no readable 2-D image (missing data files?)")


def image_count(path: str) -> int:
    """How many images ``read_nexus(path, index=...)`` can address (0-based, in order).

    A data file missing at the end (an aborted series) shortens the count; one missing
    before others that exist would shift every later index, so it is an error."""
    with contextlib.suppress(ImportError):
        import hdf5plugin  # noqa: F401
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            counts = _dataset_counts(path, h5)
    except FrameReadError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise FrameReadError(path, f"cannot read it as HDF5/NeXus ({type(exc).__name__}: {exc})") from None
    return sum(n for _, n in counts)


def _dataset_counts(path, h5) -> list:
    """[(name, images)] of the addressable data sets of entry/data, in index order."""
    group = h5.get("entry/data")
    if group is None:
        raise FrameReadError(path, "no entry/data group (not a NeXus/Eiger master file)")
    counts, missing = [], None
    for name in sorted(k for k in group if k == "data" or k.startswith("data_")):
        try:
            item = group[name]
        except KeyError:  # a dangling external link: the data file is missing
            missing = missing or name
            continue
        if missing is not None:
            raise FrameReadError(path, f"the data file of {missing} is missing but later ones exist")
        if item.ndim == 3:
            counts.append((name, int(item.shape[0])))
        elif item.ndim == 2:
            counts.append((name, 1))
    return counts


def _image(path, h5, index: int) -> np.ndarray:
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise FrameReadError(path, f"image index {index!r} must be a non-negative integer")
    start = 0
    for name, count in _dataset_counts(path, h5):
        if index < start + count:
            item = h5["entry/data"][name]
            _check_image_dataset(path, item, item.shape[-2:])
            return np.asarray(item[index - start] if item.ndim == 3 else item[()])
        start += count
    raise FrameReadError(path, f"image index {index} is out of range (the file holds {start} images)")


def _check_image_dataset(path, item, image_shape) -> None:
    """Before reading: pixel numbers, within the memory budget, and data actually written
    (HDF5 hands back the fill value for storage that was never written, so a few-KB file
    can declare a 40000 x 40000 image of zeros)."""
    if item.dtype.kind not in "biuf":
        raise FrameReadError(path, f"{item.name} holds values of type {item.dtype}, not pixel numbers")
    pixels = math.prod(int(n) for n in image_shape)
    itemsize = item.dtype.itemsize
    shape = "x".join(str(int(n)) for n in image_shape)
    # whether the data is there first: a file that holds nothing is broken, whatever the
    # machine's memory (and the answer must not depend on how much of it is free)
    _check_written(path, item, image_shape, shape, itemsize)
    check_frame_memory(path, f"a {shape} {item.dtype} image in {item.name}", pixels * (2 * itemsize + 5))


def _check_written(path, item, image_shape, shape: str, itemsize: int) -> None:
    """The dataset's pixels are stored (or mapped from files that exist)."""
    if item.is_virtual:
        folder = os.path.dirname(os.path.abspath(item.file.filename))
        for source in item.virtual_sources():
            if source.file_name != "." and not os.path.exists(os.path.join(folder, source.file_name)):
                raise FrameReadError(path, f"{item.name} maps data from {source.file_name!r}, which is missing")
        return
    stored = item.id.get_storage_size()
    if stored == 0:
        raise FrameReadError(path, f"{item.name} declares {shape} pixels but holds no data (nothing was written)")
    if item.chunks is None:
        if stored < item.size * itemsize:
            raise FrameReadError(
                path, f"truncated: {item.name} needs {item.size * itemsize} bytes, the file stores {stored}"
            )
        return
    chunk_shape = item.chunks[-len(image_shape) :]
    needed = math.prod(math.ceil(int(n) / int(c)) for n, c in zip(image_shape, chunk_shape, strict=True))
    try:
        written = item.id.get_num_chunks()
    except (AttributeError, RuntimeError, OSError, ValueError):  # HDF5 older than 1.10.5 cannot count them
        return
    if written < needed:
        raise FrameReadError(
            path, f"truncated: the first image of {item.name} needs {needed} chunks, only {written} are written"
        )


def _finite(path, key, text) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise FrameReadError(path, f"{key}={text!r} must be a finite number")
    return value


def _scalar(path, item):
    value = np.asarray(item[()])
    if value.size != 1:
        raise FrameReadError(path, f"{item.name} should be a single number, has shape {value.shape}")
    return value.reshape(()).item()


def _units(item) -> str:
    units = item.attrs.get("units")
    if isinstance(units, bytes):
        units = units.decode("utf-8", "replace")
    return str(units).strip().lower() if units is not None else ""


def _length_mm(path, group, key):
    item = group.get(key)
    if item is None:
        return None
    units = _units(item) or "m"
    if units not in _LENGTH_TO_MM:
        raise FrameReadError(path, f"{item.name} has unknown units {units!r}")
    return _positive(path, key, float(_scalar(path, item)) * _LENGTH_TO_MM[units])


def _positive(path, key, value):
    if not (math.isfinite(value) and value > 0):
        raise FrameReadError(path, f"{key}={value!r} must be a positive number")
    return value
