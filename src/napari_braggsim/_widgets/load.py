"""Load frame dock widget: a detector frame -> the same two layers the reader makes (a
hidden mask, then the image with its geometry and percentile contrast; see ``_frames``),
read in a background thread; the image becomes the viewer's observed layer, so its
geometry reaches the model every widget shows."""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import Container, FileEdit, Label, PushButton

from .. import _common, _warmup
from .._frames import MASK_SUFFIX, add_layers, frame_layer_data, layer_name
from .._jobs import Job
from .._state import BraggsimState, state_for
from . import _qt

__all__ = ["MASK_SUFFIX", "LoadFrameWidget"]

FORMATS = "SMV .img (and .gz/.bz2), CBF, EDF, TIFF, NeXus/HDF5 (.h5, .nxs), nanoBragg float .bin"


class LoadFrameWidget(Container):
    def __init__(self, napari_viewer=None):
        super().__init__(labels=False)
        self.viewer = napari_viewer
        self.state: BraggsimState = state_for(napari_viewer) if napari_viewer is not None else BraggsimState()
        _warmup.start()
        self.file = FileEdit(name="file", label="frame file", mode="r", tooltip=f"A detector frame: {FORMATS}.")
        self.load_button = PushButton(
            name="load_button", text="Load", tooltip="Read the frame in the background and add its layers."
        )
        self.status = Label(name="status", value="")
        self.status.native.setWordWrap(True)
        self.extend([self.file, self.load_button, self.status])
        _qt.fit_width(self)
        self._jobs: dict = {}  # Job -> path
        self._poller = _qt.Poller(self._poll)
        self.load_button.changed.connect(lambda *_: self.load_in_background())
        _qt.stop_when_closed(self, self._poller.stop)

    def load(self, path=None):
        """Read ``path`` (default: the file field) now and add its layers; returns the
        image layer, or None after notifying the user of a failure.  The Load button uses
        ``load_in_background`` instead, so a big frame never freezes the window."""
        path = Path(path if path is not None else self.file.value)
        try:
            layers = _read(path)
        except Exception as exc:  # noqa: BLE001  any failure becomes a message, never a traceback
            self._failed(path, exc)
            return None
        return self._show(path, layers)

    def load_in_background(self, path=None):
        """Read ``path`` in a background thread; its layers are added when it is read.
        The Load button is disabled until then.  Returns the Job, or None."""
        path = Path(path if path is not None else self.file.value)
        if not path.is_file():
            self._failed(path, ValueError(f"no such file: {path}"))
            return None
        job = Job(lambda job: _read(path), name="braggsim read frame").start()
        self._jobs[job] = path
        self.load_button.enabled = False
        self.status.value = f"reading {path.name}..."
        self._poller.start()
        return job

    @property
    def busy(self) -> bool:
        return bool(self._jobs) or self._poller.active

    def _poll(self) -> bool:
        """The timer's look at the running reads; True while any is left."""
        for job, path in list(self._jobs.items()):
            taken = job.take()
            if taken is None or not taken.done:
                continue
            del self._jobs[job]
            if taken.error is not None:
                self._failed(path, taken.error)
            else:
                self._show(path, taken.result)
        if not self._jobs:
            self.load_button.enabled = True
        return bool(self._jobs)

    def _failed(self, path: Path, exc: BaseException) -> None:
        _common.notify_error(f"Load frame: cannot read {path.name}: {_common.describe(exc)}")
        self.status.value = f"failed: {path.name}"

    def _show(self, path: Path, layers: list):
        if self.viewer is None:
            return None
        added = add_layers(self.viewer, layers)
        image = added[-1]
        self.state.observe(image)
        geometry = image.metadata.get("braggsim_frame", {})
        shape = image.data.shape

        def number(key, unit):
            value = geometry.get(key)
            return "?" if value is None else f"{float(value):g} {unit}"

        self.status.value = (
            f"{geometry.get('format', '')} {shape[0]}x{shape[1]}, distance {number('distance_mm', 'mm')}, "
            f"pixel {number('pixel_size_mm', 'mm')}, λ {number('wavelength_A', 'Å')}; "
            f"{int(added[0].data.sum())} pixels masked"
        )
        return image


def _read(path: Path) -> list:
    """The frame's layer data (``_frames.frame_layer_data``); runs in a worker thread."""
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    from .._frames import read_frame

    return frame_layer_data(read_frame(path), layer_name(path))
