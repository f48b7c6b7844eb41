"""The review window: a recorded session played back, image, readouts, charts and events at one instant.

::

    ┌──────────────── recording: name, device, length, samples, frames; what is missing (amber) ───────────────┐
    ├──────────────────────────────────────────────────────────────┬──────────────────────────────────────────┤
    │                                                              │ NEEDLE ANGLE / DEPTH / TIP DEPTH / NO-GO │
    │          the recorded frame nearest the cursor               │ sample, flags, pitch / roll, frame       │
    │                                                              ├──────────────────────────────────────────┤
    ├──────────────────────────────────────────────────────────────┤ events: time, kind, detail               │
    │ angle, whole session, cursor line                            │ (those near the cursor highlighted)      │
    │ depth and tip depth, whole session, cursor line              │                                          │
    │ ▶  ◀◀ ◀ ▶ ▶▶  1x   0:12.34 / 0:20.60  ───────●──────────────  │                                          │
    └──────────────────────────────────────────────────────────────┴──────────────────────────────────────────┘

One method, :meth:`ReviewWindow.seek`, sets every view from one time: the slider, a click or drag on a chart,
a click on an event, the keys and playback all go through it, so the image, the readouts, the charts' cursor,
the slider and the events list never show different instants. Playback reads the time from the monotonic clock
at each tick of a timer (time at start + elapsed x speed): when decoding falls behind, frames are skipped and
the session still plays at its pace.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QColor, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QComboBox,
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from needletrack.protocol import Flag
from needletrack.viewer import refcount_guard
from needletrack.viewer import theme as th
from needletrack.viewer.image_view import ImageView
from needletrack.viewer.readouts import ReadoutsPanel
from needletrack.viewer.review_charts import ReviewCharts
from needletrack.viewer.review_data import Review, ReviewError, SampleAt, load_review
from needletrack.viewer.review_frames import FramesError

TICK_MS = 15  # playback timer; each tick shows the instant the clock says, whatever the previous one cost
SPEEDS = (0.25, 0.5, 1.0, 2.0)
STEP_NO_FRAMES_S = 0.1  # Left / Right without frames
SECOND_STEP_S = 1.0
SLIDER_STEPS_PER_S = 1000
WARN_FLAGS = Flag.NOGO_REACHED | Flag.IMU_FAULT | Flag.HALL_FAULT
CAUTION_FLAGS = Flag.NOGO_NEAR | Flag.DEPTH_INVALID | Flag.STALE | Flag.LOW_BATTERY | Flag.UNCALIBRATED
NEAR_BG = "#4a3c00"  # an event near the cursor: dark amber behind white text
KIND_COLOURS = {"twitch": th.MAGENTA, "pass": "#c8c8c8", "nogo_reached": th.RED_TEXT, "nogo_near": th.AMBER,
                "imu_fault": th.RED_TEXT, "hall_fault": th.RED_TEXT, "gap": th.RED_TEXT, "link": th.AMBER,
                "stale": th.AMBER, "depth_invalid": th.AMBER, "low_battery": th.AMBER, "nogo": th.CYAN}


def clock_text(t: float) -> str:
    """Session time as m:ss.ss."""
    t = max(t, 0.0)
    m, s = divmod(t, 60.0)
    return f"{int(m)}:{s:05.2f}"


def _extra_style(theme: th.Theme) -> str:
    p = theme.px
    return f"""
    QTableWidget {{ background: {th.PANEL}; color: {th.TEXT}; gridline-color: {th.PANEL_EDGE};
                    border: 1px solid {th.PANEL_EDGE}; }}
    QHeaderView::section {{ background: #202020; color: {th.TEXT_DIM}; border: none;
                            border-bottom: 1px solid {th.PANEL_EDGE}; padding: {p(4)}px; font-weight: bold; }}
    QTableWidget::item:selected {{ background: #2d4f66; color: {th.TEXT}; }}
    QSlider::groove:horizontal {{ height: {p(10)}px; background: #2a2a2a; border: 1px solid #5a5a5a;
                                  border-radius: {p(5)}px; }}
    QSlider::sub-page:horizontal {{ background: {th.CYAN}; border-radius: {p(5)}px; }}
    QSlider::handle:horizontal {{ width: {p(26)}px; margin: -{p(9)}px 0; background: {th.TEXT};
                                  border: 2px solid {th.CYAN}; border-radius: {p(13)}px; }}
    """


class SampleDetails(QFrame):
    """What the readouts leave out: which sample it is, its flags, pitch and roll, and the frame shown."""

    ROWS = ("Time", "Sample", "Flags", "Pitch / roll", "Frame")

    def __init__(self, theme: th.Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("panel")
        grid = QGridLayout(self)
        grid.setContentsMargins(theme.px(12), theme.px(8), theme.px(12), theme.px(8))
        grid.setHorizontalSpacing(theme.px(14))
        grid.setVerticalSpacing(theme.px(2))
        self.values: dict[str, QLabel] = {}
        for row, name in enumerate(self.ROWS):
            label = QLabel(name)
            label.setStyleSheet(f"color: {th.TEXT_DIM};")
            value = QLabel("–")
            value.setWordWrap(True)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            value.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            grid.addWidget(label, row, 0, Qt.AlignmentFlag.AlignTop)
            grid.addWidget(value, row, 1)
            self.values[name] = value
        grid.setColumnStretch(1, 1)

    def set(self, name: str, text: str, colour: str = th.TEXT) -> None:
        th.Theme.set_label(self.values[name], text, colour)


class ReviewWindow(QMainWindow):
    position_changed = Signal(float)

    def __init__(self, review: Review | None = None, *, theme: th.Theme | None = None,
                 parent: QWidget | None = None) -> None:
        refcount_guard.protect()  # before the thousands of Qt calls a window makes
        super().__init__(parent)
        if theme is None:
            screen = QGuiApplication.primaryScreen()
            theme = th.Theme.for_height(screen.availableGeometry().height() if screen is not None else 1080)
        self.theme = theme
        QApplication.setFont(theme.font(theme.panel_px))
        self.setStyleSheet(theme.stylesheet() + _extra_style(theme))
        self.setWindowTitle("NeedleTrack review")
        self.review: Review | None = None
        self.t = 0.0
        self.speed = 1.0
        self.frame_index: int | None = None
        self.frames_shown = 0
        self._anchor: tuple[float, float] | None = None  # (session time, monotonic time) while playing
        self._near: range = range(0)
        self._ticking = False  # inside a playback tick: its seek does not move the playback's anchor
        self._build(theme)
        self.actions_by_key = self._actions()
        self.play_timer = QTimer(self)
        self.play_timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.play_timer.setInterval(TICK_MS)
        self.play_timer.timeout.connect(self._tick)
        if review is not None:
            self.set_review(review)
        else:
            self._show_empty()

    # -- layout
    def _build(self, theme: th.Theme) -> None:
        self.heading = QLabel("No recording open.  File > Open recording (Ctrl+O)")
        self.heading.setFont(theme.font(theme.label_px, bold=True))
        self.problems = QLabel("")
        self.problems.setFont(theme.font(theme.panel_px))
        self.problems.setStyleSheet(f"color: {th.AMBER};")
        self.problems.setWordWrap(True)
        self.problems.hide()
        self.image = ImageView(theme)
        self.charts = ReviewCharts(theme)
        self.charts.setFixedHeight(theme.px(330))
        self.charts.seek_requested.connect(self.seek)
        self.readouts = ReadoutsPanel(theme)
        self.details = SampleDetails(theme)
        self.events = QTableWidget(0, 3)
        self.events.setHorizontalHeaderLabels(["Time", "Event", "Detail"])
        self.events.setFont(theme.font(theme.panel_px))
        self.events.horizontalHeader().setFont(theme.font(theme.panel_px, bold=True))
        self.events.verticalHeader().hide()
        self.events.verticalHeader().setDefaultSectionSize(theme.px(34))
        header = self.events.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.events.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.events.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.events.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.events.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.events.setShowGrid(False)
        self.events.cellClicked.connect(self._event_clicked)
        self.play_button = self._button("▶  Play", "Play / pause (Space)", self.toggle_play, theme, 150)
        self.back_button = self._button("◀", "One frame back (Left)", lambda: self.step_frames(-1), theme, 56)
        self.forward_button = self._button("▶", "One frame on (Right)", lambda: self.step_frames(1), theme, 56)
        self.speed_box = QComboBox()
        self.speed_box.addItems([f"{s:g}x" for s in SPEEDS])
        self.speed_box.setCurrentIndex(SPEEDS.index(1.0))
        self.speed_box.setFont(theme.font(theme.panel_px, bold=True))
        self.speed_box.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.speed_box.setToolTip("Playback speed")
        self.speed_box.currentIndexChanged.connect(lambda i: self.set_speed(SPEEDS[i]))
        self.clock = QLabel(clock_text(0.0))
        self.clock.setFont(theme.font(theme.label_px, bold=True))
        self.clock.setMinimumWidth(theme.px(300))
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.slider.setMinimumHeight(theme.px(36))
        self.slider.valueChanged.connect(lambda v: self.seek(v / SLIDER_STEPS_PER_S))

        transport = QHBoxLayout()
        transport.setSpacing(theme.px(8))
        for w in (self.play_button, self.back_button, self.forward_button, self.speed_box, self.clock):
            transport.addWidget(w)
        transport.addWidget(self.slider, 1)
        left = QVBoxLayout()
        left.setSpacing(theme.px(8))
        left.addWidget(self.image, 1)
        left.addWidget(self.charts)
        left.addLayout(transport)
        events_title = QLabel("EVENTS  (click one to go to it)")
        events_title.setFont(theme.font(theme.panel_px, bold=True))
        events_title.setStyleSheet(f"color: {th.TEXT_DIM};")
        right = QVBoxLayout()
        right.setSpacing(theme.px(8))
        right.addWidget(self.readouts)
        right.addWidget(self.details)
        right.addWidget(events_title)
        right.addWidget(self.events, 1)
        body = theme.with_side_column(left, right)
        central = QWidget()
        central.setObjectName("central")
        outer = QVBoxLayout(central)
        outer.setContentsMargins(theme.px(8), theme.px(8), theme.px(8), theme.px(4))
        outer.setSpacing(theme.px(6))
        outer.addWidget(self.heading)
        outer.addWidget(self.problems)
        outer.addLayout(body, 1)
        self.setCentralWidget(central)

    @staticmethod
    def _button(text: str, tip: str, slot: object, theme: th.Theme, width: int) -> QToolButton:
        b = QToolButton()
        b.setText(text)
        b.setToolTip(tip)
        b.setFont(theme.font(theme.panel_px, bold=True))
        b.setMinimumWidth(theme.px(width))
        b.setMinimumHeight(theme.px(44))
        b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        b.clicked.connect(lambda _checked=False: slot())  # type: ignore[operator]
        return b

    def _actions(self) -> dict[str, QAction]:
        specs = (
            ("open", "Open recording…", ("Ctrl+O",), "File", self.open_dialog),
            ("close", "Close window", ("Ctrl+W",), "File", self.close),
            ("play", "Play / pause", ("Space",), "Playback", self.toggle_play),
            ("frame_back", "One frame back", ("Left",), "Playback", lambda: self.step_frames(-1)),
            ("frame_on", "One frame on", ("Right",), "Playback", lambda: self.step_frames(1)),
            ("second_back", "One second back", ("Shift+Left",), "Playback", lambda: self.step_seconds(-1.0)),
            ("second_on", "One second on", ("Shift+Right",), "Playback", lambda: self.step_seconds(1.0)),
            ("start", "Go to the start", ("Home",), "Playback", lambda: self.seek(0.0)),
            ("end", "Go to the end", ("End",), "Playback", self.seek_end),
        )
        menus = {name: self.menuBar().addMenu(name) for name in ("File", "Playback")}
        speed_menu = menus["Playback"].addMenu("Speed")
        out: dict[str, QAction] = {}
        for key, text, keys, menu, slot in specs:
            action = QAction(text, self)
            action.setShortcuts([QKeySequence(k) for k in keys])
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            action.triggered.connect(lambda _checked=False, s=slot: s())
            menus[menu].addAction(action)
            self.addAction(action)
            out[key] = action
        for i, speed in enumerate(SPEEDS):
            action = QAction(f"{speed:g}x", self)
            action.triggered.connect(lambda _checked=False, i=i: self.speed_box.setCurrentIndex(i))
            speed_menu.addAction(action)
        return out

    # -- the recording
    def open_dialog(self) -> bool:
        start = str(self.review.directory.parent) if self.review is not None else str(Path.home())
        chosen = QFileDialog.getExistingDirectory(self, "Open a recording", start)
        return bool(chosen) and self.open_path(Path(chosen))

    def open_path(self, path: Path) -> bool:
        """Opens another recording in this window; one that cannot be reviewed is refused with its reason and
        the one shown stays."""
        try:
            review = load_review(path)
        except ReviewError as e:
            self.refuse(str(e))
            return False
        self.set_review(review)
        return True

    def refuse(self, message: str) -> None:
        self.statusBar().setStyleSheet(f"color: {th.RED_TEXT};")
        self.statusBar().showMessage("Cannot open: " + message, 30000)
        QMessageBox.warning(self, "Not a recording", message)

    def set_review(self, review: Review) -> None:
        self.pause()
        if self.review is not None:
            self.review.close()
        self.review = review
        self.frame_index = None
        d = review.directory
        s = review.session
        who = s.get("recorded_by") or ""
        device = s.get("device") or ""
        parts = [d.name, clock_text(review.duration_s), f"{review.sample_count} samples",
                 f"{review.frame_count} frames" if review.frame_count else "no frames"]
        if device:
            parts.insert(1, str(device))
        if who:
            parts.append(f"recorded by {who}")
        self.heading.setText("  ·  ".join(parts))
        self.heading.setToolTip(str(d))
        self.setWindowTitle(f"NeedleTrack review – {d.name}")
        self.problems.setText("  ·  ".join(review.problems))
        self.problems.setVisible(bool(review.problems))
        self.image.placeholder = "No frames in this recording" if review.pixels is None else "No frame here"
        if review.pixels is None and review.image_note != "no frames in this recording":
            self.image.placeholder = f"No image: {review.image_note}"
        c = review.columns
        self.charts.show_session(review.t, c["depth_mm"], c["tip_depth_mm"], c["needle_angle_deg"],
                                 review.nogo_changes, review.duration_s, review.event_times("twitch"),
                                 review.event_times("pass"))
        self._fill_events(review)
        self.slider.blockSignals(True)
        self.slider.setRange(0, round(review.duration_s * SLIDER_STEPS_PER_S))
        self.slider.blockSignals(False)
        for w in (self.play_button, self.back_button, self.forward_button, self.slider, self.speed_box):
            w.setEnabled(True)
        self.statusBar().setStyleSheet(f"color: {th.TEXT_DIM};")
        self.statusBar().showMessage(f"{d}  ·  image: {review.image_note}")
        self.seek(0.0)

    def _show_empty(self) -> None:
        self.image.placeholder = "No recording open: File > Open recording (Ctrl+O)"
        for w in (self.play_button, self.back_button, self.forward_button, self.slider, self.speed_box):
            w.setEnabled(False)
        self.readouts.show_state(None, True, None)

    def _fill_events(self, review: Review) -> None:
        table = self.events
        table.clearContents()
        table.setRowCount(len(review.events))
        for row, e in enumerate(review.events):
            cells = (clock_text(e.t), e.label, e.detail)
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col == 1:
                    item.setForeground(QColor(KIND_COLOURS.get(e.kind, th.TEXT)))
                table.setItem(row, col, item)
        self._near = range(0)

    # -- the one place an instant is shown
    def seek(self, t: float) -> None:
        """Shows the instant ``t`` (session seconds, clamped to the session) in every view."""
        review = self.review
        if review is None:
            return
        t = min(max(float(t), 0.0), review.duration_s)
        self.t = t
        if self._anchor is not None and not self._ticking:
            self._anchor = (t, time.monotonic())  # a seek while playing: play on from there
        self._show_frame(review, t)
        state = review.state_at(t)
        self._show_state(state)
        self.charts.set_cursor(t)
        value = round(t * SLIDER_STEPS_PER_S)
        if self.slider.value() != value:
            self.slider.blockSignals(True)
            self.slider.setValue(value)
            self.slider.blockSignals(False)
        self.clock.setText(f"{clock_text(t)} / {clock_text(review.duration_s)}")
        self._highlight_events(review, t)
        self.position_changed.emit(t)

    def _show_frame(self, review: Review, t: float) -> None:
        i = review.frame_near(t)
        if i == self.frame_index:
            return
        self.frame_index = i
        if i is None:
            if review.pixels is not None:
                self.image.placeholder = f"No frame within {review.frame_reach_s:.2f} s of this instant"
            self.image.set_frame(None, -1)
            self.details.set("Frame", "none" if review.pixels is None else "none near this instant", th.TEXT_DIM)
            return
        try:
            image = review.frame(i)
        except FramesError as e:
            self.image.placeholder = f"Frame {i + 1} cannot be decoded"
            self.image.set_frame(None, -1)
            self.details.set("Frame", str(e), th.RED_TEXT)
            return
        self.image.set_frame(image, i)
        self.frames_shown += 1
        offset = float(review.frame_times[i]) - t
        self.details.set("Frame", f"{i + 1} of {review.frame_count}, captured at "
                                  f"{clock_text(float(review.frame_times[i]))} ({offset * 1e3:+.0f} ms)")

    def _show_state(self, state: SampleAt | None) -> None:
        review = self.review
        assert review is not None
        nogo = review.nogo_at(self.t)
        if state is None:
            self.readouts.show_state(None, True, nogo)
            self.details.set("Time", clock_text(self.t))
            self.details.set("Sample", "none yet", th.TEXT_DIM)
            self.details.set("Flags", "–", th.TEXT_DIM)
            self.details.set("Pitch / roll", "–", th.TEXT_DIM)
            return
        self.readouts.show_state(state.needle_state(), state.signal_lost, nogo)
        self.details.set("Time", clock_text(self.t))
        if state.signal_lost:
            self.details.set("Sample", f"NO SIGNAL: the last sample is {state.age_s:.2f} s old "
                                       f"(#{state.seq} at {clock_text(state.t)})", th.RED_TEXT)
        else:
            self.details.set("Sample", f"#{state.seq} at {clock_text(state.t)}, device time {state.device_s:.3f} s")
        colour = th.RED_TEXT if state.flags & WARN_FLAGS else th.AMBER if state.flags & CAUTION_FLAGS else th.TEXT
        self.details.set("Flags", state.flags_text.replace("|", " | ") or "none", colour)
        pr = [("–" if v is None else f"{v:.1f}°") for v in (state.pitch_deg, state.roll_deg)]
        self.details.set("Pitch / roll", " / ".join(pr))

    def _highlight_events(self, review: Review, t: float) -> None:
        near = review.events_near(t)
        if near == self._near:
            return
        plain, lit = QColor(th.PANEL), QColor(NEAR_BG)
        for row in self._near:
            if row not in near:
                for col in range(3):
                    item = self.events.item(row, col)
                    if item is not None:
                        item.setBackground(plain)
        for row in near:
            for col in range(3):
                item = self.events.item(row, col)
                if item is not None:
                    item.setBackground(lit)
        if len(near):
            first, last = self.events.item(near.start, 0), self.events.item(near.stop - 1, 0)
            view = self.events.viewport().rect()
            if first is not None and last is not None and not (
                    view.contains(self.events.visualItemRect(first))
                    and view.contains(self.events.visualItemRect(last))):
                self.events.scrollToItem(first, QAbstractItemView.ScrollHint.PositionAtCenter)
        self._near = near

    @property
    def highlighted_events(self) -> list[int]:
        return list(self._near)

    def _event_clicked(self, row: int, _col: int) -> None:
        if self.review is not None and 0 <= row < len(self.review.events):
            self.seek(self.review.events[row].t)

    # -- moving
    def step_frames(self, n: int) -> None:
        review = self.review
        if review is None:
            return
        self.pause()
        if review.frame_count == 0:
            self.seek(self.t + n * STEP_NO_FRAMES_S)
            return
        ft = review.frame_times
        if n > 0:
            i = int(np.searchsorted(ft, self.t + 1e-6, side="right")) + n - 1
        else:
            i = int(np.searchsorted(ft, self.t - 1e-6, side="left")) + n
        if i < 0:
            self.seek(0.0)  # before the first frame: the session's start
        elif i >= review.frame_count:
            self.seek(review.duration_s)
        else:
            self.seek(float(ft[i]))

    def step_seconds(self, s: float) -> None:
        self.pause()
        self.seek(self.t + s * SECOND_STEP_S)

    def seek_end(self) -> None:
        if self.review is not None:
            self.pause()
            self.seek(self.review.duration_s)

    # -- playback
    @property
    def playing(self) -> bool:
        return self._anchor is not None

    def play(self) -> None:
        review = self.review
        if review is None or self.playing:
            return
        if self.t >= review.duration_s:
            self.seek(0.0)
        self._anchor = (self.t, time.monotonic())
        self.play_button.setText("❚❚  Pause")
        self.play_timer.start()

    def pause(self) -> None:
        if self._anchor is None:
            return
        self._anchor = None
        self.play_timer.stop()
        self.play_button.setText("▶  Play")

    def toggle_play(self) -> None:
        if self.playing:
            self.pause()
        else:
            self.play()

    def set_speed(self, speed: float) -> None:
        if self._anchor is not None:
            self._anchor = (self.t, time.monotonic())
        self.speed = speed
        i = SPEEDS.index(speed) if speed in SPEEDS else -1
        if i >= 0 and self.speed_box.currentIndex() != i:
            self.speed_box.setCurrentIndex(i)

    def _tick(self) -> None:
        review, anchor = self.review, self._anchor
        if review is None or anchor is None:
            return
        t = anchor[0] + (time.monotonic() - anchor[1]) * self.speed
        self._ticking = True
        try:
            self.seek(min(t, review.duration_s))
        finally:
            self._ticking = False
        if t >= review.duration_s:
            self.pause()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.pause()
        if self.review is not None:
            self.review.close()
            self.review = None
        super().closeEvent(event)


def choose_recording(parent: QWidget | None, start: Path | None = None) -> Path | None:
    chosen = QFileDialog.getExistingDirectory(parent, "Open a recording", str(start or Path.home()))
    return Path(chosen) if chosen else None


def open_review(path: Path | None, parent: QWidget | None = None, *,
                theme: th.Theme | None = None) -> ReviewWindow | None:
    """Opens the recording at ``path`` (None: asks for a directory) in a new review window, shown; the window
    belongs to ``parent`` when one is given (it closes with it). A directory that is not a recording is refused
    with a message box saying why, and None is returned, as it is when the dialog is cancelled."""
    refcount_guard.protect()
    if path is None:
        path = choose_recording(parent)
        if path is None:
            return None
    try:
        review = load_review(path)
    except ReviewError as e:
        QMessageBox.warning(parent, "Not a recording", str(e))
        return None
    window = ReviewWindow(review, theme=theme, parent=parent)
    window.resize(1600, 900)
    window.show()
    return window
