"""read_frame: any supported detector file -> Frame (data, mask, geometry, header)."""

from __future__ import annotations

import json
import math
import os
import zlib
from typing import Union

import numpy as np

from . import edf, masks, pilatus, smv, tiff
from ._bytes import check_frame_memory, read_bytes, strip_compression
from .errors import FrameReadError, check_readable_file
from .frame import Frame

_SUFFIX_FORMAT = {
    ".img": "smv",
    ".smv": "smv",
    ".cbf": "cbf",
    ".edf": "edf",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".h5": "nexus",
    ".hdf5": "nexus",
    ".nxs": "nexus",
    ".bin": "nanobragg_float",
    ".raw": "nanobragg_float",
}
_CBF_BINARY_STARTER = b"\x0c\x1a\x04\xd5"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def guess_format(path: str) -> str | None:
    """The format a file name implies (compression suffixes ignored); None if unknown."""
    stem = strip_compression(os.fspath(path)).lower()
    return _SUFFIX_FORMAT.get(os.path.splitext(stem)[1])


def read_frame(
    path,
    index: int | None = None,
    *,
    shape: tuple | None = None,
    beamstop: Union[bool, str, float, None] = False,
    zeros_are_dead: bool | None = None,
) -> Frame:
    """Read a detector frame.

    index: which image of a multi-image file (an HDF5/NeXus master or data file), 0-based;
        None = the first.  Single-image formats accept only None or 0.
    shape: (slow, fast), needed for nanoBragg raw float files without a JSON sidecar.
    beamstop: False = leave the beamstop to the caller; "auto" = mask the dark blob around
        the beam centre (:func:`masks.beamstop_mask`); a number = a disk of that radius in
        pixels around the beam centre.
    zeros_are_dead: mask zero-valued pixels (None = yes, except for simulated frames:
        nanoBragg float files and SMV written by nanoBragg/braggsim, where 0 is a value).

    Raises FileNotFoundError / IsADirectoryError for a missing path or a directory and
    FrameReadError (a ValueError) naming the file and the problem for anything unreadable.
    """
    path = check_readable_file(path)
    kind = guess_format(path)
    if kind == "nexus" or (kind is None and _starts_with(path, _HDF5_MAGIC)):
        from .nexus import read_nexus

        raw_data, header, geometry, bad = read_nexus(path, index)
        kind = "nexus"
    elif index not in (None, 0):
        raise FrameReadError(path, f"image index {index!r}: a {kind or 'single-image'} file holds one image")
    elif kind == "nanobragg_float":
        raw_data, header, geometry = _read_raw_float(path, shape)
        bad = None
    else:
        raw_data, header, geometry, kind = _read_with_fabio(path, kind)
        bad = None
    if raw_data.dtype.kind not in "biuf":
        raise FrameReadError(path, f"pixels of type {raw_data.dtype} are not numbers")
    data = np.ascontiguousarray(raw_data, dtype=np.float32)
    if data.ndim != 2 or data.size == 0:
        raise FrameReadError(path, f"expected a 2-D image, got shape {data.shape}")
    saturation = geometry.get("saturation")
    if saturation is None and raw_data.dtype.kind == "u":
        saturation = float(np.iinfo(raw_data.dtype).max)
    if zeros_are_dead is None:
        zeros_are_dead = not (kind == "nanobragg_float" or is_simulated(header))
    mask = masks.default_mask(raw_data, saturation, zeros_are_dead=zeros_are_dead)
    if bad is not None:
        mask &= ~bad
    frame = Frame(
        data=data,
        mask=mask,
        distance_mm=geometry.get("distance_mm"),
        pixel_size_mm=geometry.get("pixel_size_mm"),
        wavelength_A=geometry.get("wavelength_A"),
        beam_center_mm=geometry.get("beam_center_mm"),
        header={str(k): str(v) for k, v in header.items()},
        path=path,
        format=kind,
        saturation=saturation,
        index=index,
    )
    if beamstop is not False and beamstop is not None:
        _apply_beamstop(frame, beamstop)
    return frame


def image_count(path) -> int:
    """How many images ``read_frame(path, index)`` can address: the images of an HDF5/NeXus
    file, 1 for every other format.  Reads metadata only, never pixels."""
    path = check_readable_file(path)
    kind = guess_format(path)
    if kind == "nexus" or (kind is None and _starts_with(path, _HDF5_MAGIC)):
        from .nexus import image_count as nexus_image_count

        return nexus_image_count(path)
    return 1


def _apply_beamstop(frame: Frame, beamstop) -> None:
    from ..spots import beam_center_px

    if frame.beam_center_mm is None or frame.pixel_size_mm is None:
        return
    center = beam_center_px(frame)
    if beamstop == "auto" or beamstop is True:
        frame.mask &= masks.beamstop_mask(frame.data, center, trusted=frame.mask)
    else:
        frame.mask &= masks.beamstop_mask(frame.data, center, radius_px=float(beamstop))


def is_simulated(header: dict) -> bool:
    """True for SMV headers nanoBragg or braggsim wrote (no real detector behind them)."""
    return "MOSFLM_CENTER_X" in header and header.get("BEAMLINE", "").strip() in ("fake", "braggsim")


def _starts_with(path: str, magic: bytes) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(magic)) == magic
    except OSError:
        return False


def _read_with_fabio(path: str, kind: str | None):
    raw = read_bytes(path)
    if not raw:
        raise FrameReadError(path, "empty file")
    if smv.looks_like_smv(raw) or kind == "smv":
        layout = smv.check_layout(path, raw)
        data, header = smv.decode(path, raw, layout)
        return data, header, smv.geometry(path, header, data.shape), "smv"
    if kind == "tiff" or (kind is None and tiff.looks_like_tiff(raw)):
        data, header = tiff.read_tiff(path, raw)
        return data, header, {}, "tiff"
    if kind == "cbf" or raw.startswith(b"###CBF"):
        _check_cbf_size(path, raw)
        # decode the bytes already in hand: fabio would decompress a .bz2 frame a second time
        data, header = _fabio_decode(path, raw=raw)
    else:
        if kind == "edf" or (kind is None and raw.lstrip()[:1] == b"{"):
            edf.check_layout(path, raw)
            kind = "edf"
        data, header = _fabio_decode(path)
    detected = kind or "tiff"
    if detected == "cbf":
        geometry = pilatus.cbf_geometry(path, header)
    elif detected == "edf":
        geometry = pilatus.edf_geometry(path, header)
    else:
        geometry = {}
    return data, header, geometry, detected


def _fabio_decode(path: str, raw: bytes | None = None):
    import fabio

    try:
        if raw is not None:
            import io

            from fabio.cbfimage import CbfImage

            image = CbfImage()
            image.read(io.BytesIO(raw))
        else:
            image = fabio.open(path)
        data = np.asarray(image.data)
        header = {str(k): str(v) for k, v in image.header.items()}
    except Exception as exc:  # fabio raises many kinds; all mean "this file is bad"  # noqa: BLE001  any failure becomes a message, never a traceback
        reason = f"fabio cannot decode it ({type(exc).__name__}: {exc})"
        if guess_format(path) == "cbf":
            fallback = _pycbf_decode(path, reason)
            if fallback is not None:
                return fallback
        raise FrameReadError(path, reason) from None
    if data.ndim != 2:
        raise FrameReadError(path, f"expected a 2-D image, fabio gave shape {data.shape}")
    return data, header


_PYCBF_ONLY = (b"x-CBF_PACKED", b"x-CBF_CANONICAL")  # CBF compressions fabio cannot decode
_PYCBF_CHILD = """
import sys
import numpy as np
import pycbf

cbf = pycbf.cbf_handle_struct()
cbf.read_file(sys.argv[1].encode(), pycbf.MSG_DIGEST)
cbf.rewind_datablock()
cbf.find_category(b"array_data")
cbf.find_column(b"data")
_, _, size, signed, _, elements, _, _, _, fast, slow, third, _ = cbf.get_integerarrayparameters_wdims_fs()
if third > 1 or fast * slow != elements:
    sys.exit(f"a {fast}x{slow}x{third} array, not one 2-D image")
values = cbf.get_integerarray_as_string()
kind = "i" if signed else "u"
np.save(sys.argv[2], np.frombuffer(values, dtype=np.dtype(f"={kind}{size}")).reshape(slow, fast))
"""


def _pycbf_decode(path: str, fabio_reason: str):
    """(data, header) read by CBFlib's pycbf, for the CBF compressions fabio lacks (the
    CCP4 "packed" and "packed_v2" of Rayonix and CSPAD frames); None when the file uses
    none of them or pycbf is not installed.  The header is the text before the binary
    section, so the Pilatus geometry lines are found as with fabio.

    CBFlib runs in a child process: on a damaged file it can crash the interpreter, and a
    corrupt frame must give an error, not take napari down with it."""
    import importlib.util
    import subprocess
    import sys
    import tempfile

    raw = read_bytes(path)
    head = raw[: raw.find(_CBF_BINARY_STARTER)] if _CBF_BINARY_STARTER in raw else raw[:65536]
    if not any(name in head for name in _PYCBF_ONLY) or importlib.util.find_spec("pycbf") is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        plain = os.path.join(folder, "frame.cbf")  # CBFlib reads a plain file; the frame may be .gz/.bz2
        out = os.path.join(folder, "frame.npy")
        with open(plain, "wb") as handle:
            handle.write(raw)
        try:
            child = subprocess.run(
                [sys.executable, "-c", _PYCBF_CHILD, plain, out], capture_output=True, text=True, timeout=120
            )
        except subprocess.TimeoutExpired:
            raise FrameReadError(path, f"{fabio_reason}; pycbf did not finish within 120 s") from None
        if child.returncode != 0 or not os.path.isfile(out):
            last = (child.stderr.strip().splitlines() or [f"exit status {child.returncode}"])[-1]
            if child.returncode < 0:
                last = f"CBFlib crashed (signal {-child.returncode})"
            raise FrameReadError(path, f"{fabio_reason}; pycbf cannot decode it either ({last})")
        data = np.load(out)
    return data, {"cbf_header": head.decode("latin-1"), "reader": "pycbf"}


def _check_cbf_size(path: str, raw: bytes) -> None:
    """Refuse CBF headers that claim more pixels than the file could hold (any CBF
    compression needs at least one byte per 8 pixels), before fabio allocates them."""
    import re

    # fabio loops forever looking for a binary section's start marker that is not there
    section = raw.find(b"--CIF-BINARY-FORMAT-SECTION--")
    if section < 0 or raw.find(_CBF_BINARY_STARTER, section) < 0:
        raise FrameReadError(path, "CBF has no binary data section (or its start marker is damaged)")
    dims = []
    for key in (rb"X-Binary-Size-Fastest-Dimension:\s*(\d+)", rb"X-Binary-Size-Second-Dimension:\s*(\d+)"):
        match = re.search(key, raw[:65536])
        if match is None:
            raise FrameReadError(path, f"CBF header has no {key.split(b':')[0].decode()}")
        dims.append(int(match.group(1)))
    if dims[0] < 1 or dims[1] < 1 or dims[0] * dims[1] > 8 * len(raw):
        raise FrameReadError(path, f"CBF header claims {dims[0]}x{dims[1]} pixels, more than {len(raw)} bytes can hold")
    check_frame_memory(path, f"a {dims[0]}x{dims[1]} CBF frame", dims[0] * dims[1] * 13)
    declared = re.search(rb"X-Binary-Size:\s*(\d+)", raw[section : section + 4096])
    present = len(raw) - (raw.find(_CBF_BINARY_STARTER, section) + len(_CBF_BINARY_STARTER))
    if declared is not None and present < int(declared.group(1)):
        raise FrameReadError(
            path, f"truncated: CBF binary section declares {int(declared.group(1))} bytes, the file has {present}"
        )


def sidecar_path(path: str) -> str:
    """NAME.json next to NAME.bin."""
    return os.path.splitext(strip_compression(path))[0] + ".json"


def _read_raw_float(path: str, shape):
    sidecar = {}
    side = sidecar_path(path)
    if os.path.isfile(side):
        try:
            with open(side, encoding="utf-8") as handle:
                sidecar = json.load(handle)
        except (OSError, ValueError) as exc:
            raise FrameReadError(side, f"unreadable JSON sidecar ({exc})") from None
        if not isinstance(sidecar, dict):
            raise FrameReadError(side, "JSON sidecar is not an object")
    if shape is None:
        shape = sidecar.get("shape_slow_fast")
        if shape is None:
            raise FrameReadError(path, f"raw float file needs its shape: pass shape=(slow, fast) or write {side}")
    try:
        shape = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        raise FrameReadError(path, f"shape must be (slow, fast) integers, got {shape!r}") from None
    if len(shape) != 2 or min(shape) < 1:
        raise FrameReadError(path, f"shape must be two positive integers (slow, fast), got {shape!r}")
    raw = read_bytes(path)
    if not raw:
        raise FrameReadError(path, "empty file")
    expected = shape[0] * shape[1] * 4
    if len(raw) != expected:
        raise FrameReadError(
            path, f"{len(raw)} bytes do not make a {shape[0]}x{shape[1]} float32 image ({expected} bytes)"
        )
    _check_sidecar_matches(path, side, sidecar, raw)
    data = np.frombuffer(raw, dtype="<f4").reshape(shape)
    header = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in sidecar.items()}
    return data, header, _sidecar_geometry(path, sidecar)


def _check_sidecar_matches(path: str, side: str, sidecar: dict, raw: bytes) -> None:
    """A sidecar that records its .bin's size and CRC-32 (write_float does) must match the
    .bin: a pair caught between two renames, or mixed from two runs, is refused."""
    crc = sidecar.get("data_crc32")
    if crc is None:
        return
    if sidecar.get("data_bytes") not in (None, len(raw)) or crc != zlib.crc32(raw):
        raise FrameReadError(
            path, f"pixels do not match the sidecar {side} (CRC-32 differs: written by another run, or being rewritten)"
        )


def _sidecar_geometry(path: str, sidecar: dict) -> dict:
    """Geometry from a sidecar: braggsim's own keys, else nanoBragg flags under "args"."""
    geometry: dict = {}
    for key in ("distance_mm", "pixel_size_mm", "wavelength_A"):
        if sidecar.get(key) is not None:
            geometry[key] = _positive_number(path, key, sidecar[key])
    if sidecar.get("beam_center_mm") is not None:
        try:
            x, y = (float(v) for v in sidecar["beam_center_mm"])
        except (TypeError, ValueError):
            raise FrameReadError(
                path, f"sidecar beam_center_mm={sidecar['beam_center_mm']!r} is not (Xbeam, Ybeam)"
            ) from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise FrameReadError(path, f"sidecar beam_center_mm={sidecar['beam_center_mm']!r} is not finite")
        geometry["beam_center_mm"] = (x, y)
    if not geometry and isinstance(sidecar.get("args"), str):
        geometry = _geometry_from_flags(path, sidecar["args"])
    return geometry


def _geometry_from_flags(path: str, args: str) -> dict:
    from ..nanobragg_flags import parse_flags
    from ..resolution import mosflm_beam_center_mm

    try:
        flags = parse_flags(args.split())
    except ValueError as exc:
        raise FrameReadError(path, f"sidecar args are not nanoBragg flags ({exc})") from None
    detector = flags.detector
    return {
        "distance_mm": float(detector.distance_mm),
        "pixel_size_mm": float(detector.pixel_size_mm),
        "wavelength_A": float(flags.beam.wavelength_A),
        "beam_center_mm": mosflm_beam_center_mm(detector),
    }


def _positive_number(path, key, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FrameReadError(path, f"sidecar {key}={value!r} is not a number") from None
    if not (math.isfinite(number) and number > 0):
        raise FrameReadError(path, f"sidecar {key}={value!r} must be positive")
    return number
