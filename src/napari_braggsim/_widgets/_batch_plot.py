"""The batch's plot: histograms of the cell's a and c and of the mosaic spread, and the
RMSD of every frame, painted with QPainter like the loss plot (``_plot``): a redraw is a
fraction of a millisecond, so it can follow every finished frame.  The numbers are
computed once per change (``set_rows``), never in ``paintEvent``.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QPointF, QRectF, QSize, Qt
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

from .._batch import histogram

BAR = QColor(31, 119, 180)
MARK = QColor(255, 127, 14)
HISTOGRAMS = (("a", "a (Å)"), ("c", "c (Å)"), ("mosaic_deg", "mosaic (°)"))


class BatchPlot(QWidget):
    """``set_rows({index: row})`` with typed summary rows; draws what they hold."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.histograms: dict = {key: (np.zeros(0), np.zeros(0, int)) for key, _ in HISTOGRAMS}
        self.rmsd_frames = np.zeros(0)
        self.rmsd_px = np.zeros(0)
        self.n_frames = 0
        self.selected: int | None = None
        self.setMinimumHeight(200)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip(
            "Histograms of the refined cell edges a and c and of the mosaic spread over the indexed frames; "
            "below, the RMSD (px) of every indexed frame (the selected one in orange)."
        )

    def sizeHint(self):  # noqa: N802  Qt's name
        return QSize(300, 220)

    def set_rows(self, rows: dict, n_frames: int) -> None:
        indexed = {i: r for i, r in rows.items() if r.get("status") == "indexed"}
        for key, _ in HISTOGRAMS:
            self.histograms[key] = histogram([r.get(key) for r in indexed.values()], bins=10)
        pairs = sorted((i, r["rmsd_px"]) for i, r in indexed.items() if r.get("rmsd_px") is not None)
        self.rmsd_frames = np.array([p[0] for p in pairs], dtype=float)
        self.rmsd_px = np.array([p[1] for p in pairs], dtype=float)
        self.n_frames = int(n_frames)
        self.update()

    def set_selected(self, index: int | None) -> None:
        self.selected = index
        self.update()

    def paintEvent(self, event):  # noqa: N802  Qt's name
        painter = QPainter(self)
        try:
            self._paint(painter)
        finally:
            painter.end()

    def _paint(self, painter: QPainter) -> None:
        text = self.palette().color(self.foregroundRole())
        metrics = painter.fontMetrics()
        line = metrics.height()
        width, height = self.width(), self.height()
        top_h = (height - 8) * 0.5
        cell_w = (width - 8) / len(HISTOGRAMS)
        for n, (key, title) in enumerate(HISTOGRAMS):
            box = QRectF(4 + n * cell_w + 4, 4 + line, cell_w - 8, top_h - 2 * line - 8)
            self._histogram(painter, box, *self.histograms[key], title, text)
        box = QRectF(40, top_h + 8 + line, width - 48, height - top_h - 2 * line - 16)
        self._rmsd(painter, box, text)

    def _histogram(self, painter, box: QRectF, edges, counts, title: str, text) -> None:
        metrics = painter.fontMetrics()
        painter.setPen(QPen(text, 1))
        painter.drawText(QPointF(box.left(), box.top() - 3), title)
        painter.drawLine(box.bottomLeft(), box.bottomRight())
        if not len(counts):
            painter.drawText(box, Qt.AlignmentFlag.AlignCenter, "-")
            return
        peak = max(int(counts.max()), 1)
        painter.save()
        step = box.width() / len(counts)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(BAR)
        for i, count in enumerate(counts):
            h = box.height() * count / peak
            painter.drawRect(QRectF(box.left() + i * step + 0.5, box.bottom() - h, max(step - 1, 1), h))
        painter.restore()
        painter.setPen(QPen(text, 1))
        low, high = f"{edges[0]:.4g}", f"{edges[-1]:.4g}"
        y = box.bottom() + metrics.ascent() + 1
        painter.drawText(QPointF(box.left(), y), low)
        painter.drawText(QPointF(box.right() - metrics.horizontalAdvance(high), y), high)

    def _rmsd(self, painter, box: QRectF, text) -> None:
        metrics = painter.fontMetrics()
        painter.setPen(QPen(text, 1))
        painter.setBrush(Qt.BrushStyle.NoBrush)  # the histograms left their bars' brush
        painter.drawText(QPointF(box.left(), box.top() - 3), "RMSD (px) per frame")
        painter.drawRect(box)
        if not self.rmsd_px.size:
            painter.drawText(box, Qt.AlignmentFlag.AlignCenter, "no indexed frame yet")
            return
        y1 = float(self.rmsd_px.max()) * 1.1 or 1.0
        x1 = max(self.n_frames - 1, 1)
        painter.drawText(
            QPointF(box.left() - metrics.horizontalAdvance(f"{y1:.2g}") - 3, box.top() + metrics.ascent()), f"{y1:.2g}"
        )
        painter.drawText(QPointF(box.left() - metrics.horizontalAdvance("0") - 3, box.bottom()), "0")
        painter.drawText(
            QPointF(box.right() - metrics.horizontalAdvance(str(x1)), box.bottom() + metrics.ascent() + 1), str(x1)
        )
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        for frame, rmsd in zip(self.rmsd_frames, self.rmsd_px, strict=True):
            x = box.left() + 4 + (box.width() - 8) * frame / x1
            y = box.bottom() - box.height() * rmsd / y1
            selected = self.selected is not None and int(frame) == self.selected
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(MARK if selected else BAR)
            radius = 4.0 if selected else 2.5
            painter.drawEllipse(QPointF(x, y), radius, radius)
