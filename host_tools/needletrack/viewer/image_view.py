"""The fused ultrasound image, as large as the space allows, its aspect kept, framed in the alert colour.

A new frame is scaled once (OpenCV, outside Qt's painter: a 1080p frame fitted into the view costs about 2 ms)
into 32-bit pixels, the layout Qt paints without converting, and painted as is; repaints without a new frame
reuse it. The view counts the frames it has shown and how old each was when painted (from its arrival at the
host), for the display benchmark.

Picking: ``start_pick(prompt)`` turns the next click on the image into ``picked(column, row)`` in the frame's own
pixels (what a calibration maps), with a crosshair and the prompt over the image until then; Esc or
``cancel_pick()`` ends it without a point. A click outside the drawn frame picks nothing.
"""

from __future__ import annotations

import time
from collections import deque

import cv2
import numpy as np
from PySide6.QtCore import QPointF, QRect, Qt, Signal
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPaintEvent, QPen, QResizeEvent
from PySide6.QtWidgets import QSizePolicy, QWidget

from needletrack.viewer import theme as th


class ImageView(QWidget):
    picked = Signal(float, float)  # column, row in the frame's pixels
    pick_cancelled = Signal()

    def __init__(self, theme: th.Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.theme = theme
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(320, 240)
        self.placeholder = "No ultrasound image"
        self.border_px = theme.px(12)
        self.frames_shown = 0
        self.latencies_s: deque[float] = deque(maxlen=2000)  # frame arrival to painted, per new frame
        self._frame: np.ndarray | None = None
        self._frame_time_s: float | None = None
        self._index = -1
        self._scaled: np.ndarray | None = None
        self._qimage: QImage | None = None
        self._target = QRect()
        self._new = False
        self._border: QColor | None = None
        self._prompt: str | None = None  # picking while set

    # -- picking
    @property
    def picking(self) -> bool:
        return self._prompt is not None

    def start_pick(self, prompt: str) -> None:
        self._prompt = prompt
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.setFocus()
        self.update()

    def cancel_pick(self) -> None:
        if self._prompt is not None:
            self._end_pick()
            self.pick_cancelled.emit()

    def _end_pick(self) -> None:
        self._prompt = None
        self.unsetCursor()
        self.update()

    def to_frame(self, p: QPointF) -> tuple[float, float] | None:
        """A widget point as the frame's pixel (column, row); None outside the drawn frame."""
        size = self.frame_size
        if size is None or self._target.isEmpty() or not self._target.contains(p.toPoint()):
            return None
        k = self._target.width() / size[0]
        return ((p.x() - self._target.x() + 0.5) / k - 0.5, (p.y() - self._target.y() + 0.5) / k - 0.5)

    def to_widget(self, col: float, row: float) -> QPointF:
        """A frame pixel's place in the widget (the inverse of :meth:`to_frame`)."""
        size = self.frame_size
        if size is None or self._target.isEmpty():
            raise ValueError("no frame drawn")
        k = self._target.width() / size[0]
        return QPointF(self._target.x() + (col + 0.5) * k - 0.5, self._target.y() + (row + 0.5) * k - 0.5)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if self._prompt is None or event.button() != Qt.MouseButton.LeftButton:
            super().mousePressEvent(event)
            return
        at = self.to_frame(event.position())
        if at is not None:
            self._end_pick()
            self.picked.emit(*at)

    @property
    def frame_size(self) -> tuple[int, int] | None:
        return None if self._frame is None else (int(self._frame.shape[1]), int(self._frame.shape[0]))

    @property
    def image_rect(self) -> QRect:
        """Where the frame is drawn, in widget pixels."""
        return QRect(self._target)

    def set_frame(self, image: np.ndarray | None, index: int, frame_time_s: float | None = None) -> None:
        if index == self._index and image is self._frame:
            return
        self._frame, self._index, self._frame_time_s = image, index, frame_time_s
        self._scaled = None
        self._new = image is not None
        self.update()

    def set_border(self, colour: str | None) -> None:
        new = None if colour is None else QColor(colour)
        if new != self._border:
            self._border = new
            self.update()

    def resizeEvent(self, event: QResizeEvent) -> None:
        self._scaled = None
        super().resizeEvent(event)

    def _fit(self) -> None:
        assert self._frame is not None
        frame = self._frame
        inner = self.rect().adjusted(self.border_px, self.border_px, -self.border_px, -self.border_px)
        h, w = frame.shape[:2]
        k = min(inner.width() / w, inner.height() / h)
        sw, sh = max(1, round(w * k)), max(1, round(h * k))
        if (sw, sh) == (w, h):
            scaled = frame
        else:
            interpolation = cv2.INTER_AREA if k < 0.5 else cv2.INTER_LINEAR
            scaled = cv2.resize(frame, (sw, sh), interpolation=interpolation)
        # B, G, R, A bytes are a little-endian 0xAARRGGBB word: QImage's RGB32, which the painter blits as is.
        code = cv2.COLOR_GRAY2BGRA if scaled.ndim == 2 else cv2.COLOR_BGR2BGRA
        self._scaled = np.ascontiguousarray(cv2.cvtColor(scaled, code))
        self._qimage = QImage(self._scaled.data, sw, sh, self._scaled.strides[0], QImage.Format.Format_RGB32)
        self._target = QRect(inner.x() + (inner.width() - sw) // 2, inner.y() + (inner.height() - sh) // 2, sw, sh)

    def _paint_prompt(self, painter: QPainter) -> None:
        assert self._prompt is not None
        font = self.theme.font(self.theme.label_px)
        painter.setFont(font)
        band = QRect(0, self.border_px, self.width(), round(self.theme.label_px * 2.2))
        painter.fillRect(band, QColor(0, 0, 0, 200))
        painter.setPen(QColor(th.TEXT))
        painter.drawText(band, Qt.AlignmentFlag.AlignCenter, self._prompt + "   (Esc: cancel)")

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(th.BACKGROUND))
        if self._frame is not None:
            if self._scaled is None:
                self._fit()
            assert self._qimage is not None
            painter.drawImage(self._target.topLeft(), self._qimage)
        else:
            painter.setPen(QColor(th.TEXT_DIM))
            painter.setFont(self.theme.font(self.theme.label_px))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.placeholder)
        if self._prompt is not None:
            self._paint_prompt(painter)
        if self._border is not None:
            pen = QPen(self._border)
            pen.setWidth(self.border_px)
            pen.setJoinStyle(Qt.PenJoinStyle.MiterJoin)
            painter.setPen(pen)
            half = self.border_px // 2
            painter.drawRect(self.rect().adjusted(half, half, -half - 1, -half - 1))
        painter.end()
        if self._new:
            self._new = False
            self.frames_shown += 1
            if self._frame_time_s is not None:
                self.latencies_s.append(time.monotonic() - self._frame_time_s)
