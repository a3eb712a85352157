"""Which frames a batch processes: files, glob patterns, folders and multi-image files,
expanded into :class:`FrameRef` (a path and, for a multi-image file, an image index).

Expansion reads metadata only (an HDF5 master's data-set shapes), never pixels, so it is
cheap on the client even for a million frames; the pixels are read where each frame is
processed.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re

from ..io import FrameReadError, guess_format, image_count, strip_compression

_GLOB_CHARS = re.compile(r"[*?\[]")
_EIGER_DATA_FILE = re.compile(r"^(?P<prefix>.*)_data_\d+\.(h5|hdf5|nxs)$")


@dataclasses.dataclass(frozen=True)
class FrameRef:
    """One frame of a batch.

    path: absolute path of the file.
    index: 0-based image index in a multi-image file; None for a single-image file.
    """

    path: str
    index: int | None = None

    @property
    def source(self):
        """What ``process_frame`` and ``read_frame`` take: the path, or (path, index)."""
        return self.path if self.index is None else (self.path, self.index)

    @property
    def frame(self) -> str:
        """The frame as results name it: the path, ``path#index`` for an image of a
        multi-image file (the summary's ``frame`` column)."""
        return self.path if self.index is None else f"{self.path}#{self.index}"

    @property
    def name(self) -> str:
        """The frame's stem in an output folder (DIR/<name>.json): the file's stem without
        compression and format suffixes, plus ``_NNNNN`` (the 0-based index) for an image
        of a multi-image file -- the pipeline's rule (:func:`braggsim.process.frame_stem`)."""
        stem = os.path.splitext(os.path.basename(strip_compression(self.path)))[0]
        return stem if self.index is None else f"{stem}_{self.index:05d}"

    def __str__(self) -> str:
        return self.frame

    @classmethod
    def from_frame(cls, frame: str) -> FrameRef:
        """The FrameRef a result's ``frame`` (a summary row's) names: ``path`` or ``path#index``."""
        path, hash_mark, index = str(frame).rpartition("#")
        if hash_mark and index.isdigit():
            return cls(path, int(index))
        return cls(str(frame))


def natural_key(text: str) -> list:
    """Sort key that orders ``frame_2`` before ``frame_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def expand_frames(specs) -> list[FrameRef]:
    """The frames that ``specs`` (paths, glob patterns or folders, in the given order) name.

    - a folder: its frame files (any format :func:`braggsim.io.guess_format` knows), not
      recursive, in natural order; Eiger data files are left out when their master is there;
    - a pattern with ``*``, ``?`` or ``[``: the matching files in natural order;
    - a multi-image HDF5/NeXus file: one frame per image.

    A file whose images cannot be counted becomes one frame: it is reported ``failed`` when
    processed, with the reader's reason, instead of stopping the batch here.  Duplicates
    are dropped.  Raises FileNotFoundError for a path or pattern that names nothing, and
    ValueError when two different frames would get the same output name."""
    if isinstance(specs, (str, os.PathLike)):
        specs = [specs]
    refs: list[FrameRef] = []
    seen: set = set()
    names: dict = {}
    for spec in specs:
        for path in _files_of(os.fspath(spec)):
            for ref in _frames_in_file(path):
                if ref in seen:
                    continue
                seen.add(ref)
                other = names.setdefault(ref.name, ref)
                if other != ref:
                    raise ValueError(
                        f"frames {other} and {ref} would both be written as {ref.name!r}; process them apart"
                    )
                refs.append(ref)
    return refs


def _files_of(spec: str) -> list[str]:
    if os.path.isdir(spec):
        return _folder_frames(spec)
    if os.path.exists(spec) or not _GLOB_CHARS.search(spec):
        if not os.path.exists(spec):
            raise FileNotFoundError(f"no such frame file or folder: {spec}")
        return [os.path.abspath(spec)]
    matches = sorted((m for m in glob.glob(spec) if os.path.isfile(m)), key=natural_key)
    if not matches:
        raise FileNotFoundError(f"no files match {spec!r}")
    return [os.path.abspath(m) for m in matches]


def _folder_frames(folder: str) -> list[str]:
    entries = [e for e in os.listdir(folder) if not e.startswith(".")]
    files = [e for e in entries if os.path.isfile(os.path.join(folder, e)) and guess_format(e) is not None]
    masters = {e[: -len("_master.h5")] for e in files if e.endswith("_master.h5")}
    kept = []
    for entry in files:
        data_file = _EIGER_DATA_FILE.match(entry)
        if data_file and data_file["prefix"] in masters:
            continue  # its images are addressed through the master
        kept.append(entry)
    if not kept:
        raise FileNotFoundError(f"folder {folder} holds no frame files")
    return [os.path.abspath(os.path.join(folder, e)) for e in sorted(kept, key=natural_key)]


def _frames_in_file(path: str) -> list[FrameRef]:
    try:
        count = image_count(path)
    except (FrameReadError, OSError):
        return [FrameRef(path)]
    if count <= 1:
        return [FrameRef(path)]
    return [FrameRef(path, index) for index in range(count)]
