"""Load frame dock widget: a detector frame -> image layer (geometry in metadata) plus a
hidden mask layer, and the geometry passed on to the other braggsim widgets."""

from __future__ import annotations

import contextlib
from pathlib import Path

from qtpy.QtWidgets import QVBoxLayout, QWidget

from .. import _common

MASK_SUFFIX = " mask"


class LoadFrameWidget(QWidget):
    def __init__(self, napari_viewer=None, parent=None):
        super().__init__(parent)
        from magicgui.widgets import Container, FileEdit, Label, PushButton

        self.viewer = napari_viewer
        self.file = FileEdit(name="file", label="frame file", mode="r")
        self.load_button = PushButton(name="load", text="Load")
        self.status = Label(name="status", value="")
        self.container = Container(widgets=[self.file, self.load_button, self.status])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.container.native)
        self._workers: set = set()  # keeps running readers alive until they finish
        self.load_button.changed.connect(lambda *_: self.load_in_background())
        _common.register(self)

    def load(self, path=None):
        """Read ``path`` (default: the file field) here, then add its layers.

        Returns the image layer, or None after notifying the user of a failure.  The Load
        button uses ``load_in_background`` instead, so a big frame never freezes the window.
        """
        path = Path(path if path is not None else self.file.value)
        try:
            frame = _read(path)
        except Exception as exc:  # noqa: BLE001  any failure becomes a message, never a traceback
            self._failed(path, exc)
            return None
        return self._show(path, frame)

    def load_in_background(self, path=None):
        """Read ``path`` in a napari worker thread and add its layers when it is read.

        The Load button is disabled until the read ends.  Returns the worker, or None
        when nothing was started.
        """
        path = Path(path if path is not None else self.file.value)
        if not path.is_file():
            self._failed(path, ValueError(f"no such file: {path}"))
            return None
        from napari.qt.threading import create_worker

        # errored given through _connect, so the worker does not also re-raise the
        # exception into the Qt event loop (a console traceback)
        worker = create_worker(
            _read, path, _start_thread=False, _connect={"errored": lambda exc: self._failed(path, exc)}
        )
        self._workers.add(worker)
        worker.returned.connect(lambda frame: self._show_if_alive(path, frame))
        worker.finished.connect(lambda: self._done(worker))
        self.load_button.enabled = False
        self.status.value = f"reading {path.name}..."
        worker.start()
        return worker

    def _done(self, worker) -> None:
        self._workers.discard(worker)
        with contextlib.suppress(RuntimeError):  # the dock was closed while the file was read
            self.load_button.enabled = True

    def _show_if_alive(self, path: Path, frame) -> None:
        with contextlib.suppress(RuntimeError):  # the dock (or the viewer) was closed while the file was read
            self._show(path, frame)

    def _failed(self, path: Path, exc: BaseException) -> None:
        _common.notify_error(f"Load frame: cannot read {path.name}: {_common.describe(exc)}")
        self.status.value = f"failed: {path.name}"

    def _show(self, path: Path, frame):
        if self.viewer is None:
            return None
        name = _layer_name(path)
        metadata = frame.metadata()
        image = self.viewer.add_image(frame.data, name=name, metadata=metadata, colormap="gray")
        # 1 = trusted pixel, matching Frame.mask and the refiner's mask
        self.viewer.add_labels(frame.mask.astype("uint8"), name=name + MASK_SUFFIX, visible=False, metadata=metadata)
        self.viewer.layers.selection.active = image
        filled = self.fill_siblings(image)
        geometry = metadata.get("braggsim_frame", {})
        self.status.value = (
            f"{frame.format} {frame.data.shape[0]}x{frame.data.shape[1]}, distance {geometry.get('distance_mm')} mm, "
            f"pixel {geometry.get('pixel_size_mm')} mm, λ {geometry.get('wavelength_A')} Å; filled {filled} widget(s)"
        )
        return image

    def fill_siblings(self, layer) -> int:
        """Pass the layer's geometry to every docked widget that takes it; returns how many."""
        count = 0
        for widget in _common.siblings(self.viewer):
            if widget is not self and hasattr(widget, "set_geometry_from_layer"):
                widget.set_geometry_from_layer(layer)
                count += 1
        return count


def _layer_name(path: Path) -> str:
    name = path.name
    for suffix in (".bz2", ".gz"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def _read(path: Path):
    """``braggsim.io.read_frame`` with a plain message for a path that is not a file."""
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    from braggsim.io import read_frame

    return read_frame(path)
