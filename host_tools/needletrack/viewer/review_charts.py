"""Whole-session strip charts for review: depth and tip depth, needle angle, with twitches, passes, the no-go
depth and a cursor line at the reviewed instant. A click or a drag on a chart asks to seek there.

The colours are the live charts' (viewer/charts.py): insertion cyan, tip depth yellow, no-go red dashed, angle
green, twitches magenta, passes grey dashed. A whole session is up to an hour of samples at 1000 a second:
the curves are drawn decimated to the pixels (pyqtgraph's peak downsampling, which keeps every excursion) and
the markers as one item each kind, not a line item per event.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPoint, QPointF, Qt, Signal
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QVBoxLayout, QWidget

from needletrack.viewer import theme as th
from needletrack.viewer.charts import style_plot, y_range

TIP_YELLOW = "#ffe14d"
PASS_GREY = "#9a9a9a"
CURSOR = "#ffffff"


def _span(values: list[np.ndarray]) -> tuple[float, float]:
    finite = [v[np.isfinite(v)] for v in values]
    finite = [v for v in finite if len(v)]
    if not finite:
        return math.nan, math.nan
    return float(min(v.min() for v in finite)), float(max(v.max() for v in finite))


class SessionChart(pg.PlotWidget):  # pyqtgraph has no type information: its classes are Any to mypy
    seek_requested = Signal(float)

    def __init__(self, title: str, unit: str, theme: th.Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent=parent, background=th.PANEL)
        self.theme = theme
        item = self.getPlotItem()
        style_plot(item, title, unit, theme)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.duration_s = 0.0
        self.y = (0.0, 1.0)
        self.curves: list[pg.PlotDataItem] = []
        self.twitches = self.plot([], [], pen=pg.mkPen(th.MAGENTA, width=theme.px(2)), connect="pairs")
        self.passes = self.plot([], [], pen=pg.mkPen(PASS_GREY, width=theme.px(1.5),
                                                     style=Qt.PenStyle.DashLine), connect="pairs")
        self.twitches.setZValue(5)  # over a pass at the same instant
        self.cursor_line = pg.InfiniteLine(pos=0.0, angle=90, movable=False, pen=pg.mkPen(CURSOR, width=theme.px(2)))
        self.cursor_line.setZValue(10)
        self.addItem(self.cursor_line)

    def add_curve(self, colour: str, t: np.ndarray, values: np.ndarray, style: Qt.PenStyle = Qt.PenStyle.SolidLine,
                  width: float = 2) -> pg.PlotDataItem:
        curve = self.plot(t, values, pen=pg.mkPen(colour, width=self.theme.px(width), style=style), connect="finite")
        curve.setDownsampling(auto=True, method="peak")
        curve.setClipToView(True)
        self.curves.append(curve)
        return curve

    def set_session(self, duration_s: float, lo: float, hi: float, twitches: np.ndarray, passes: np.ndarray) -> None:
        self.duration_s = duration_s
        self.y = (lo, hi)
        self.setXRange(0.0, max(duration_s, 1e-3), padding=0.0)
        self.setYRange(lo, hi, padding=0.0)
        for item, times in ((self.twitches, twitches), (self.passes, passes)):
            x = np.repeat(np.asarray(times, dtype=float), 2)
            y = np.tile(np.array([lo, hi]), len(times))
            item.setData(x, y, connect="pairs")

    def set_cursor(self, t: float) -> None:
        self.cursor_line.setValue(t)

    @property
    def cursor_s(self) -> float:
        return float(self.cursor_line.value())

    # -- seeking with the mouse
    def time_at(self, p: QPointF) -> float:
        """The session time under a point of the chart's viewport, within the session."""
        scene = self.mapToScene(p.toPoint())
        x = float(self.getPlotItem().getViewBox().mapSceneToView(scene).x())
        return min(max(x, 0.0), self.duration_s)

    def point_for(self, t: float) -> QPoint:
        """Where time ``t`` is in the chart's viewport, half-way up the plot (for tests and tools)."""
        vb = self.getPlotItem().getViewBox()
        scene = vb.mapViewToScene(QPointF(t, (self.y[0] + self.y[1]) / 2))
        return self.mapFromScene(scene)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self.seek_requested.emit(self.time_at(event.position()))
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if event.buttons() & Qt.MouseButton.LeftButton:
            self.seek_requested.emit(self.time_at(event.position()))
            event.accept()
            return
        super().mouseMoveEvent(event)


class ReviewCharts(QWidget):
    """Depth above angle, on one time axis: the whole session."""

    seek_requested = Signal(float)

    def __init__(self, theme: th.Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.theme = theme
        self.depth_chart = SessionChart("Depth (insertion: cyan, tip: yellow, no-go: red)", "mm", theme)
        self.angle_chart = SessionChart("Needle angle", "deg", theme)
        self.depth_chart.getPlotItem().setLabel("bottom", "s", **{"font-size": f"{theme.px(theme.chart_px)}px",
                                                                 "color": th.TEXT_DIM})
        self.angle_chart.setXLink(self.depth_chart)
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(theme.px(6))
        box.addWidget(self.angle_chart)
        box.addWidget(self.depth_chart)
        for chart in self.charts:
            chart.seek_requested.connect(self.seek_requested.emit)
        self.insertion: pg.PlotDataItem | None = None
        self.tip: pg.PlotDataItem | None = None
        self.nogo: pg.PlotDataItem | None = None
        self.angle: pg.PlotDataItem | None = None

    @property
    def charts(self) -> tuple[SessionChart, SessionChart]:
        return self.depth_chart, self.angle_chart

    def show_session(self, t: np.ndarray, depth: np.ndarray, tip: np.ndarray, angle: np.ndarray,
                     nogo: list[tuple[float, float | None]], duration_s: float, twitches: np.ndarray,
                     passes: np.ndarray) -> None:
        for chart in self.charts:
            for curve in chart.curves:
                chart.removeItem(curve)
            chart.curves.clear()
        self.insertion = self.depth_chart.add_curve(th.CYAN, t, depth)
        self.tip = self.depth_chart.add_curve(TIP_YELLOW, t, tip)
        nx, ny = _nogo_steps(nogo, duration_s)
        self.nogo = self.depth_chart.add_curve(th.RED_TEXT, nx, ny, style=Qt.PenStyle.DashLine)
        self.angle = self.angle_chart.add_curve(th.GREEN, t, angle)
        _, top = _span([depth, tip, ny])
        top = max(top if math.isfinite(top) else 0.0, 0.0)
        self.depth_chart.set_session(duration_s, *y_range(0.0, top + 4.0, 30.0, 10.0), twitches, passes)
        lo, hi = _span([angle])
        self.angle_chart.set_session(duration_s, *y_range(lo - 3.0, hi + 3.0, 20.0, 10.0), twitches, passes)

    def set_cursor(self, t: float) -> None:
        for chart in self.charts:
            chart.set_cursor(t)


def _nogo_steps(nogo: list[tuple[float, float | None]], duration_s: float) -> tuple[np.ndarray, np.ndarray]:
    """The no-go depth over the session as line segments, broken where none was set."""
    xs: list[float] = []
    ys: list[float] = []
    for i, (start, depth) in enumerate(nogo):
        end = nogo[i + 1][0] if i + 1 < len(nogo) else duration_s
        a, b = max(start, 0.0), min(end, duration_s)
        if depth is None or b < a:
            continue
        xs += [a, b, b]
        ys += [depth, depth, math.nan]
    return np.array(xs, dtype=float), np.array(ys, dtype=float)
