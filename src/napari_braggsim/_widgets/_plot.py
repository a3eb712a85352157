"""The loss-against-iteration plot: a small QWidget painting one polyline.

A refinement redraws it several times a second; a matplotlib figure took 50-250 ms per
redraw here (a full Agg render, and another on every resize of the dock), so this paints
the line with QPainter instead (well under a millisecond).  The y axis turns logarithmic
when the loss spans more than 100x.
"""

from __future__ import annotations

import math

import numpy as np
from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

LOG_SPAN = 100.0


class LossPlot(QWidget):
    """``set_points(iterations, losses)``; ``log_scale`` says how the y axis is drawn."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.iterations = np.zeros(0)
        self.losses = np.zeros(0)
        self.log_scale = False
        self.setMinimumHeight(140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("Loss at every iteration of the run (log scale when it spans more than 100x).")

    def sizeHint(self):  # noqa: N802  Qt's name
        from qtpy.QtCore import QSize

        return QSize(300, 150)

    def set_points(self, iterations, losses) -> None:
        self.iterations = np.asarray(iterations, dtype=float)
        self.losses = np.asarray(losses, dtype=float)
        finite = self.losses[np.isfinite(self.losses)]
        self.log_scale = bool(finite.size and finite.min() > 0 and finite.max() / finite.min() > LOG_SPAN)
        self.update()

    def _y(self, losses: np.ndarray) -> np.ndarray:
        return np.log10(losses) if self.log_scale else losses

    def paintEvent(self, event):  # noqa: N802  Qt's name
        painter = QPainter(self)
        try:
            self._paint(painter)
        finally:
            painter.end()

    def _paint(self, painter: QPainter) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        text = self.palette().color(self.foregroundRole())
        metrics = painter.fontMetrics()
        left, bottom = metrics.horizontalAdvance("0.000e+00") + 8, metrics.height() + 6
        box = QRectF(left, 6, max(10, self.width() - left - 8), max(10, self.height() - bottom - 10))
        painter.setPen(QPen(text, 1))
        painter.drawRect(box)
        keep = np.isfinite(self.losses)
        if self.log_scale:
            keep &= self.losses > 0
        x, y = self.iterations[keep], self._y(self.losses[keep])
        scale = "log " if self.log_scale else ""
        if not x.size:
            painter.drawText(box, Qt.AlignmentFlag.AlignCenter, "loss per iteration")
            return
        x0, x1 = float(x.min()), float(max(x.max(), x.min() + 1))
        y0, y1 = float(y.min()), float(y.max())
        if not y1 > y0:
            y0, y1 = y0 - 0.5 * (abs(y0) or 1.0), y1 + 0.5 * (abs(y1) or 1.0)
        sx = box.width() / (x1 - x0)
        sy = box.height() / (y1 - y0)
        path = QPainterPath()
        for i, (xi, yi) in enumerate(zip(x, y, strict=True)):
            point = QPointF(box.left() + (xi - x0) * sx, box.bottom() - (yi - y0) * sy)
            if i == 0:
                path.moveTo(point)
            else:
                path.lineTo(point)
        painter.setPen(QPen(QColor(31, 119, 180), 2))
        painter.drawPath(path)
        painter.setPen(QPen(text, 1))

        def label(value: float) -> str:
            number = 10**value if self.log_scale else value
            return f"{number:.3g}" if math.isfinite(number) else str(number)

        painter.drawText(QPointF(2, box.top() + metrics.ascent()), label(y1))
        painter.drawText(QPointF(2, box.bottom()), label(y0))
        painter.drawText(QPointF(box.left(), self.height() - 4), f"{x0:g}")
        right = f"{x1:g}"
        painter.drawText(QPointF(box.right() - metrics.horizontalAdvance(right), self.height() - 4), right)
        title = f"{scale}loss / iteration"
        painter.drawText(QPointF(box.center().x() - metrics.horizontalAdvance(title) / 2, self.height() - 4), title)
