"""The depth-calibration wizard: the probe on a depth jig, a point at each stop, the probe's fit and its residuals.

Pages: what to do (the jig mounted, the needle carriage in the guide; the plan of depths) -> one point per depth
(the live field angle of both sensors, steady or not, Record with Enter, the points so far; "start again" is the
only redo, as the probe cannot drop a point) -> the residuals of the table the probe fitted and wrote, with a
verdict against the tolerances. The flow itself is :class:`needletrack.viewer.depth_calibration.DepthCalibration`;
this module only shows it and passes the clicks on. A timer polls it: nothing here waits on the probe.

The live window opens it (D) with :func:`open_depth_wizard`.
"""

from __future__ import annotations

import math
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QCloseEvent, QFont, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from needletrack.viewer import refcount_guard
from needletrack.viewer import theme as th
from needletrack.viewer.depth_calibration import (
    MIN_POINTS,
    STEADY_S,
    TOLERANCE_MAX_MM,
    TOLERANCE_RMS_MM,
    CalibrationPlanError,
    DepthCalibration,
    Engine,
    Stage,
    load_plan,
    parse_plan,
    verdict,
)

REFRESH_MS = 50  # each tick takes the probe's answers and sends the next command: one at a time
INTRO = (
    "<b>Before you begin</b><ol>"
    "<li>Mount the probe in the depth jig and put the needle carriage in the guide.</li>"
    "<li>Keep magnets and steel tools away from the probe.</li>"
    "<li>Check the plan below: the jig depths you will move the carriage to, in order (at least "
    f"{MIN_POINTS}, increasing). The default is the factory jig's stops.</li></ol>"
    "At each depth, move the carriage to the stop and hold it; when the field is steady, press "
    "<b>Record point</b> (Enter). The probe fits its depth table to the points and stores it; until then its "
    "old table stays in use, and Cancel keeps it."
)
REDO_NOTE = ("A point cannot be taken back on the probe: redoing one means starting again from the first depth "
             "(every point recorded so far is dropped).")


def _fmt_deg(mdeg: int | None) -> str:
    return "no field" if mdeg is None else f"{mdeg / 1000:+.2f}°"


class DepthWizard(QDialog):
    def __init__(self, engine: Engine, theme: th.Theme, parent: QWidget | None = None) -> None:
        refcount_guard.protect()
        super().__init__(parent)
        self.theme = theme
        self.flow = DepthCalibration(engine)
        self.setWindowTitle("Depth calibration with the jig")
        self.setModal(False)
        theme.style_dialog(self)
        self.pages = QStackedWidget()
        self.intro_page = self._intro_page()
        self.record_page = self._record_page()
        self.result_page = self._result_page()
        self.end_page = self._end_page()
        for page in (self.intro_page, self.record_page, self.result_page, self.end_page):
            self.pages.addWidget(page)
        self.message = QLabel(" ")
        self.message.setWordWrap(True)
        self.message.setObjectName("message")
        box = QVBoxLayout(self)
        box.addWidget(self.pages, 1)
        box.addWidget(self.message)
        # Enter records (when Record may): a shortcut, so a focused button never takes the key instead.
        self._shortcuts = [QShortcut(QKeySequence(key), self) for key in (Qt.Key.Key_Return, Qt.Key.Key_Enter)]
        for sc in self._shortcuts:
            sc.activated.connect(self._enter)
        for button in self.findChildren(QPushButton):
            button.setAutoDefault(False)
        # The style sheet stops the dialog's font reaching its children: each gets it unless it has its own.
        for widget in self.findChildren(QWidget):
            if not widget.testAttribute(Qt.WidgetAttribute.WA_SetFont) and widget is not self.plot \
                    and not self.plot.isAncestorOf(widget):  # the plot sizes its own text
                widget.setFont(theme.font(theme.panel_px))
        self._plan_valid = True
        self._shown_points = -1
        self._shown_residuals = -1
        self.timer = QTimer(self)
        self.timer.setInterval(REFRESH_MS)
        self.timer.timeout.connect(self._tick)
        self.timer.start()
        self.resize(theme.px(1100), theme.px(860))
        self._refresh()

    # -- pages --------------------------------------------------------------------------------------------

    def _intro_page(self) -> QWidget:
        page = QWidget()
        text = QLabel(INTRO)
        text.setWordWrap(True)
        text.setTextFormat(Qt.TextFormat.RichText)
        self.plan_edit = QLineEdit(", ".join(f"{d:g}" for d in self.flow.plan))
        self.plan_edit.textEdited.connect(self._plan_typed)
        load = QPushButton("Load plan…")
        load.clicked.connect(self._load_plan_dialog)
        self.plan_status = QLabel(" ")
        self.plan_status.setWordWrap(True)
        self.begin_button = QPushButton("Begin calibration")
        self.begin_button.clicked.connect(self.flow.begin)
        cancel = QPushButton("Cancel")
        cancel.clicked.connect(self.reject)
        row = QHBoxLayout()
        row.addWidget(QLabel("Depths (mm)"))
        row.addWidget(self.plan_edit, 1)
        row.addWidget(load)
        buttons = self.theme.button_row(cancel, self.begin_button)
        box = QVBoxLayout(page)
        box.addWidget(text)
        box.addLayout(row)
        box.addWidget(self.plan_status)
        box.addStretch(1)
        box.addLayout(buttons)
        return page

    def _tile(self, name: str) -> tuple[QFrame, QLabel]:
        frame = QFrame()
        frame.setObjectName("panel")
        title = QLabel(name)
        title.setFont(self.theme.font(self.theme.panel_px))
        title.setStyleSheet(f"color: {th.TEXT_DIM};")
        value = QLabel("–")
        value.setFont(self.theme.font(48, bold=True))
        box = QVBoxLayout(frame)
        box.addWidget(title)
        box.addWidget(value)
        return frame, value

    def _record_page(self) -> QWidget:
        page = QWidget()
        self.target = QLabel(" ")
        self.target.setFont(self.theme.font(self.theme.banner_title_px, bold=True))
        self.progress = QLabel(" ")
        self.progress.setStyleSheet(f"color: {th.TEXT_DIM};")
        tile_a, self.field_a = self._tile("Sensor A field angle")
        tile_b, self.field_b = self._tile("Sensor B field angle")
        self.steady = QLabel(" ")
        self.steady.setFont(self.theme.font(self.theme.label_px, bold=True))
        self.steady.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.steady.setMinimumWidth(self.theme.px(260))
        self.blocker = QLabel(" ")
        self.blocker.setWordWrap(True)
        self.record_button = QPushButton("Record point (Enter)")
        self.record_button.setFont(self.theme.font(self.theme.label_px, bold=True))
        self.record_button.clicked.connect(self.flow.record)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["depth (mm)", "field angle", "sensor"])
        self._table_style(self.table)
        self.restart_button = QPushButton("Start again")
        self.restart_button.setToolTip(REDO_NOTE)
        self.restart_button.clicked.connect(self.flow.restart)
        redo = QLabel(REDO_NOTE)
        redo.setWordWrap(True)
        redo.setStyleSheet(f"color: {th.TEXT_DIM};")
        self.commit_button = QPushButton("Fit and write")
        self.commit_button.clicked.connect(self.flow.commit)
        cancel = QPushButton("Cancel")
        cancel.clicked.connect(self.reject)
        fields = QHBoxLayout()
        fields.addWidget(tile_a, 1)
        fields.addWidget(tile_b, 1)
        fields.addWidget(self.steady)
        act = QHBoxLayout()
        act.addWidget(self.blocker, 1)
        act.addWidget(self.record_button)
        buttons = QHBoxLayout()
        buttons.addWidget(self.restart_button)
        buttons.addStretch(1)
        buttons.addWidget(cancel)
        buttons.addWidget(self.commit_button)
        box = QVBoxLayout(page)
        box.addWidget(self.target)
        box.addWidget(self.progress)
        box.addLayout(fields)
        box.addLayout(act)
        box.addWidget(self.table, 1)
        box.addWidget(redo)
        box.addLayout(buttons)
        return page

    def _table_style(self, table: QTableWidget) -> None:
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        table.verticalHeader().setVisible(False)
        table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)

    def _result_page(self) -> QWidget:
        page = QWidget()
        self.verdict = QLabel(" ")
        self.verdict.setWordWrap(True)
        self.verdict.setFont(self.theme.font(self.theme.label_px, bold=True))
        self.figures = QLabel(" ")
        self.figures.setWordWrap(True)
        self.residual_table = QTableWidget(0, 2)
        self.residual_table.setHorizontalHeaderLabels(["depth (mm)", "residual (mm)"])
        self._table_style(self.residual_table)
        self.plot = self._plot()
        close = QPushButton("Close")
        close.clicked.connect(self.accept)
        grid = QGridLayout()
        grid.addWidget(self.residual_table, 0, 0)
        grid.addWidget(self.plot, 0, 1)
        grid.setColumnStretch(0, 2)
        grid.setColumnStretch(1, 3)
        buttons = self.theme.button_row(close)
        box = QVBoxLayout(page)
        box.addWidget(self.verdict)
        box.addWidget(self.figures)
        box.addLayout(grid, 1)
        box.addLayout(buttons)
        return page

    def _plot(self) -> pg.PlotWidget:
        plot = pg.PlotWidget(background=th.PANEL)
        item = plot.getPlotItem()
        px = self.theme.px
        item.setTitle(f"<span style='font-size:{px(20)}px; font-weight:bold; color:{th.TEXT}'>"
                      "Residual at each jig depth</span>")
        font = QFont(th.FAMILY)
        font.setPixelSize(px(self.theme.chart_px))
        for name in ("left", "bottom"):
            axis = item.getAxis(name)
            axis.setTextPen(th.TEXT)
            axis.setPen(pg.mkPen(th.TEXT_DIM))
            axis.setStyle(tickFont=font)
        style = {"font-size": f"{px(self.theme.chart_px)}px", "color": th.TEXT_DIM}
        item.setLabel("left", "residual (mm)", **style)
        item.setLabel("bottom", "jig depth (mm)", **style)
        item.setMouseEnabled(x=False, y=False)
        item.hideButtons()
        item.setMenuEnabled(False)
        dash = pg.QtCore.Qt.PenStyle.DashLine
        plot.addItem(pg.InfiniteLine(pos=0.0, angle=0, movable=False, pen=pg.mkPen(th.TEXT_DIM, width=px(1))))
        for y in (-TOLERANCE_MAX_MM, TOLERANCE_MAX_MM):
            plot.addItem(pg.InfiniteLine(pos=y, angle=0, movable=False,
                                         pen=pg.mkPen(th.RED_TEXT, width=px(2), style=dash)))
        self.residual_curve = plot.plot([], [], pen=pg.mkPen(th.CYAN, width=px(2)), symbol="o",
                                        symbolSize=px(12), symbolBrush=th.CYAN, symbolPen=None)
        return plot

    def _end_page(self) -> QWidget:
        page = QWidget()
        self.end_text = QLabel(" ")
        self.end_text.setWordWrap(True)
        self.end_text.setFont(self.theme.font(self.theme.label_px))
        close = QPushButton("Close")
        close.clicked.connect(self.accept)
        buttons = self.theme.button_row(close)
        box = QVBoxLayout(page)
        box.addWidget(self.end_text)
        box.addStretch(1)
        box.addLayout(buttons)
        return page

    # -- actions ------------------------------------------------------------------------------------------

    def _plan_typed(self, text: str) -> None:
        try:
            self.flow.set_plan(parse_plan(text))
        except CalibrationPlanError as e:
            self.plan_status.setText(f"Plan not usable: {e}")
            self.plan_status.setStyleSheet(f"color: {th.RED_TEXT};")
            self._plan_valid = False
            self.begin_button.setEnabled(False)
            return
        self._plan_ok()

    def load_plan(self, path: Path) -> None:
        try:
            self.flow.set_plan(load_plan(path))
        except CalibrationPlanError as e:
            self.plan_status.setText(f"Plan not loaded: {e}")
            self.plan_status.setStyleSheet(f"color: {th.RED_TEXT};")
            return
        self.plan_edit.setText(", ".join(f"{d:g}" for d in self.flow.plan))
        self._plan_ok()

    def _load_plan_dialog(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "A plan of jig depths", "", "JSON list of depths (*.json)")
        if name:
            self.load_plan(Path(name))

    def _plan_ok(self) -> None:
        self.plan_status.setText(f"{len(self.flow.plan)} depths, {self.flow.plan[0]:g} to {self.flow.plan[-1]:g} mm")
        self.plan_status.setStyleSheet(f"color: {th.TEXT_DIM};")
        self._plan_valid = True

    def _enter(self) -> None:
        if self.pages.currentWidget() is self.record_page and self.flow.can_record:
            self.flow.record()
            self._refresh()

    def reject(self) -> None:
        """Cancel (Escape, the Cancel buttons): before the commit, the probe is told to keep its old table."""
        if self.flow.stage in (Stage.BEGINNING, Stage.RECORDING):
            self.flow.cancel()
            self._refresh()
            return
        if self.flow.stage is Stage.COMMITTING:
            return  # its answer decides what happened
        super().reject()

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.flow.stage in (Stage.BEGINNING, Stage.RECORDING, Stage.COMMITTING):
            event.ignore()
            self.reject()
            return
        self.timer.stop()
        super().closeEvent(event)

    # -- showing the flow ---------------------------------------------------------------------------------

    def _tick(self) -> None:
        self.flow.poll()
        self._refresh()

    def _refresh(self) -> None:
        flow = self.flow
        stage = flow.stage
        page = {Stage.INTRO: self.intro_page, Stage.BEGINNING: self.record_page, Stage.RECORDING: self.record_page,
                Stage.COMMITTING: self.record_page, Stage.RESIDUALS: self.result_page, Stage.DONE: self.result_page,
                Stage.CANCELLED: self.end_page, Stage.STOPPED: self.end_page}[stage]
        if self.pages.currentWidget() is not page:
            self.pages.setCurrentWidget(page)
        colour = th.RED_TEXT if flow.error else th.TEXT
        self.message.setStyleSheet(f"color: {colour};")
        self.message.setText(flow.message or " ")
        if page is self.intro_page:
            link = flow.link_ok()
            self.begin_button.setEnabled(link and self._plan_valid)
            self.begin_button.setToolTip("" if link else "connect to the probe first: it must be streaming")
        elif page is self.record_page:
            self._refresh_record()
        elif page is self.result_page:
            self._refresh_result()
        else:
            self.end_text.setText(flow.message)
            self.end_text.setStyleSheet(f"color: {colour};")

    def _refresh_record(self) -> None:
        flow = self.flow
        depth = flow.next_depth_mm
        n = len(flow.plan)
        if flow.stage is Stage.BEGINNING:
            self.target.setText("Beginning…")
        elif depth is None:
            self.target.setText("Every depth recorded: fit and write")
        else:
            self.target.setText(f"Move the carriage to {depth:g} mm")
        self.progress.setText(f"point {min(len(flow.points) + 1, n)} of {n}")
        latest = flow.reading
        for label, value in ((self.field_a, None if latest is None else latest.a_mdeg),
                             (self.field_b, None if latest is None else latest.b_mdeg)):
            label.setText("–" if latest is None else _fmt_deg(value))
            label.setStyleSheet(f"color: {th.TEXT if value is not None else th.TEXT_DIM};")
        if latest is None:
            self._badge("NO READOUT", th.RED)
        elif not latest.present:
            self._badge("NO FIELD", th.RED)
        elif flow.field.steady():
            self._badge("STEADY", "#1f7a33")
        else:
            held = flow.field.steady_for()
            self._badge(f"HOLD STILL {held:.1f}/{STEADY_S:g} s", "#8a5f00")
        blocker = flow.record_blocker()
        self.blocker.setText(" " if blocker is None else blocker)
        self.record_button.setEnabled(blocker is None)
        self.commit_button.setEnabled(flow.can_commit)
        self.restart_button.setEnabled(flow.stage is Stage.RECORDING and bool(flow.points))
        if len(flow.points) != self._shown_points:
            self._shown_points = len(flow.points)
            self.table.setRowCount(len(flow.points))
            for i, p in enumerate(flow.points):
                for j, text in enumerate((f"{p.depth_mm:g}", _fmt_deg(p.angle_mdeg), p.sensor)):
                    item = QTableWidgetItem(text)
                    item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                    self.table.setItem(i, j, item)
            self.table.scrollToBottom()

    def _badge(self, text: str, background: str) -> None:
        self.steady.setText(text)
        self.steady.setStyleSheet(f"background: {background}; color: {th.TEXT}; border-radius: {self.theme.px(6)}px;"
                                  f" padding: {self.theme.px(8)}px;")

    def _refresh_result(self) -> None:
        flow = self.flow
        if len(flow.residuals) == self._shown_residuals:
            return
        self._shown_residuals = len(flow.residuals)
        self.residual_table.setRowCount(len(flow.residuals))
        for i, r in enumerate(flow.residuals):
            text = "not used by the fit" if r.residual_mm is None else f"{r.residual_mm:+.3f}"
            for j, t in enumerate((f"{r.depth_mm:g}", text)):
                item = QTableWidgetItem(t)
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                self.residual_table.setItem(i, j, item)
        used = [(r.depth_mm, r.residual_mm) for r in flow.residuals if r.residual_mm is not None]
        self.residual_curve.setData([d for d, _ in used], [v for _, v in used])
        top = max([TOLERANCE_MAX_MM * 1.25] + [abs(v) * 1.15 for _, v in used])
        self.plot.setYRange(-top, top, padding=0)
        if flow.stage is not Stage.DONE:
            self.verdict.setText(f"Written: calibration {flow.calibration_id or 0:04x}; reading the residuals…")
            self.verdict.setStyleSheet(f"color: {th.TEXT};")
            return
        v = verdict(flow.residuals)
        complete = len(flow.residuals) == len(flow.points)
        self.verdict.setText(v.text if complete else flow.message)
        self.verdict.setStyleSheet(f"color: {th.GREEN if v.ok and complete else th.AMBER};")
        rms = "–" if math.isnan(v.rms_mm) else f"{v.rms_mm:.3f} mm"
        worst = "–" if math.isnan(v.max_mm) else f"{v.max_mm:.3f} mm"
        self.figures.setText(f"New calibration id <b>{flow.calibration_id or 0:04x}</b> &nbsp; RMS {rms} (limit "
                             f"{TOLERANCE_RMS_MM:g} mm) &nbsp; largest {worst} (limit {TOLERANCE_MAX_MM:g} mm) "
                             f"&nbsp; {len(flow.points)} points")


def open_depth_wizard(engine: Engine, theme: th.Theme, parent: QWidget | None = None) -> DepthWizard:
    """The wizard, shown (not modal); the caller keeps the reference."""
    wizard = DepthWizard(engine, theme, parent)
    wizard.show()
    return wizard
