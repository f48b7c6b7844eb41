"""Strip charts of depth and angle over the last seconds, with twitches and needle passes marked.

Time runs to the right and ends at now (0 s). Depth shows the insertion (cyan) and the tip depth (yellow), with
the no-go depth as a red dashed line on the tip's scale; angle shows the needle angle. A twitch is a magenta
line, a pass a grey dashed line. The y ranges move in steps, not with every sample: a scale that breathes is
hard to read.

Drawing is kept cheap, as it shares the GUI thread with the image: 2 px lines (Qt strokes wider ones several
times slower), and faint opaque lines every 5 s instead of pyqtgraph's translucent grid, which costs more to
paint than the curves (together 11 ms a repaint for both charts with the grid and 3 px lines, 5 ms like this).
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QHBoxLayout, QWidget

from needletrack.viewer import theme as th
from needletrack.viewer.snapshot import ChartData

MAX_MARKERS = 24
GRID = "#333333"


def y_range(lo: float, hi: float, min_span: float, step: float) -> tuple[float, float]:
    """A y range covering lo..hi, at least min_span tall, its ends on multiples of step."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, min_span
    lo, hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
    if hi - lo < min_span:
        mid = (hi + lo) / 2
        lo, hi = math.floor((mid - min_span / 2) / step) * step, math.ceil((mid + min_span / 2) / step) * step
    return lo, hi


def style_plot(item: pg.PlotItem, title: str, unit: str, theme: th.Theme) -> None:
    """The viewer's look on a plot: bold title, white ticks inside the axes, fixed left axis width (so charts side
    by side line up), no mouse zoom or menu (a seek or nothing: never a chart lost off screen)."""
    item.setTitle(f"<span style='font-size:{theme.px(20)}px; font-weight:bold; color:{th.TEXT}'>{title}</span>")
    font = QFont(th.FAMILY)
    font.setPixelSize(theme.px(theme.chart_px))
    for name in ("left", "bottom"):
        axis = item.getAxis(name)
        axis.setTextPen(th.TEXT)
        axis.setPen(pg.mkPen(th.TEXT_DIM))
        axis.setStyle(tickFont=font, tickLength=-theme.px(6))
    item.getAxis("left").setWidth(theme.px(56))
    item.setLabel("left", unit, **{"font-size": f"{theme.px(theme.chart_px)}px", "color": th.TEXT_DIM})
    item.setMouseEnabled(x=False, y=False)
    item.hideButtons()
    item.setMenuEnabled(False)


class StripChart(pg.PlotWidget):  # pyqtgraph has no type information: its classes are Any to mypy
    def __init__(self, title: str, unit: str, theme: th.Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent=parent, background=th.PANEL)
        self.theme = theme
        item = self.getPlotItem()
        style_plot(item, title, unit, theme)
        item.setLabel("bottom", "s", **{"font-size": f"{theme.px(theme.chart_px)}px", "color": th.TEXT_DIM})
        self.curves: list[pg.PlotDataItem] = []
        self._markers: list[pg.InfiniteLine] = []
        self._range: tuple[float, float] | None = None
        for t in (-5.0, -10.0, -15.0):
            self.addItem(pg.InfiniteLine(pos=t, angle=90, movable=False, pen=pg.mkPen(GRID, width=1)))

    def add_curve(self, colour: str, width: float) -> pg.PlotDataItem:
        curve = self.plot([], [], pen=pg.mkPen(colour, width=self.theme.px(width)), connect="finite")
        self.curves.append(curve)
        return curve

    def set_markers(self, twitches: np.ndarray, passes: np.ndarray) -> None:
        wanted = [(float(t), "twitch") for t in twitches[-MAX_MARKERS // 2:]]
        wanted += [(float(t), "pass") for t in passes[-MAX_MARKERS // 2:]]
        while len(self._markers) < len(wanted):
            line = pg.InfiniteLine(angle=90, movable=False)
            self.addItem(line)
            self._markers.append(line)
        for i, line in enumerate(self._markers):
            if i >= len(wanted):
                line.hide()
                continue
            x, kind = wanted[i]
            if kind == "twitch":
                line.setPen(pg.mkPen(th.MAGENTA, width=self.theme.px(2)))
            else:
                line.setPen(pg.mkPen("#9a9a9a", width=self.theme.px(1.5), style=pg.QtCore.Qt.PenStyle.DashLine))
            line.setPos(x)
            line.show()

    def set_y(self, lo: float, hi: float) -> None:
        if self._range != (lo, hi):
            self._range = (lo, hi)
            self.setYRange(lo, hi, padding=0.02)

    @property
    def marker_count(self) -> int:
        return sum(1 for m in self._markers if m.isVisible())


class StripCharts(QWidget):
    def __init__(self, theme: th.Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.depth_chart = StripChart("Depth (insertion: cyan, tip: yellow)", "mm", theme)
        self.insertion = self.depth_chart.add_curve(th.CYAN, 2)
        self.tip = self.depth_chart.add_curve("#ffe14d", 2)
        self.nogo_line = pg.InfiniteLine(angle=0, movable=False,
                                         pen=pg.mkPen(th.RED_TEXT, width=theme.px(2),
                                                      style=pg.QtCore.Qt.PenStyle.DashLine))
        self.nogo_line.hide()
        self.depth_chart.addItem(self.nogo_line)
        self.angle_chart = StripChart("Needle angle", "deg", theme)
        self.angle_curve = self.angle_chart.add_curve(th.GREEN, 2)
        box = QHBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(theme.px(8))
        box.addWidget(self.depth_chart)
        box.addWidget(self.angle_chart)
        self._window_s = -1.0

    def show_data(self, data: ChartData, now: float, window_s: float, nogo_depth_mm: float | None) -> None:
        if window_s != self._window_s:
            self._window_s = window_s
            for chart in (self.depth_chart, self.angle_chart):
                chart.setXRange(-window_s, 0.0, padding=0.0)
        x = data.t - now
        self.insertion.setData(x, data.depth_mm, connect="finite")
        self.tip.setData(x, data.tip_depth_mm, connect="finite")
        self.angle_curve.setData(x, data.angle_deg, connect="finite")
        for chart in (self.depth_chart, self.angle_chart):
            chart.set_markers(data.twitches - now, data.passes - now)
        if nogo_depth_mm is None:
            self.nogo_line.hide()
        else:
            self.nogo_line.setPos(nogo_depth_mm)
            self.nogo_line.show()
        with np.errstate(all="ignore"):
            top = np.nanmax(np.concatenate([data.depth_mm, data.tip_depth_mm])) if len(data.t) else math.nan
            lo_a = np.nanmin(data.angle_deg) if len(data.t) else math.nan
            hi_a = np.nanmax(data.angle_deg) if len(data.t) else math.nan
        top = max(float(top) if math.isfinite(top) else 0.0, nogo_depth_mm or 0.0)
        self.depth_chart.set_y(*y_range(0.0, top + 4.0, 30.0, 10.0))
        self.angle_chart.set_y(*y_range(float(lo_a) - 3.0, float(hi_a) + 3.0, 20.0, 10.0))
