"""The viewer's window: the fused image, the alert banner, the readouts, the charts, the probe and recording panels.

::

    ┌─────────────────────────── alert banner (always there; idle: a grey status line) ───────────────────────┐
    ├──────────────────────────────────────────────────────────────┬──────────────────────────────────────────┤
    │                                                              │ NEEDLE ANGLE                     30.0 °  │
    │          fused ultrasound image (aspect kept,                │ DEPTH                            22.4 mm │
    │          framed in the alert colour)                         │ TIP DEPTH                        11.2 mm │
    │                                                              │ TO NO-GO                          5.8 mm │
    ├──────────────────────────────────────────────────────────────┤ PROBE: scan, connect, pair, battery ...  │
    │ PROCEDURE ✓ guide 30°, needle 60 mm · image … · no-go …      │                                          │
    ├──────────────────────────────┬───────────────────────────────┤ RECORDING: start/stop, elapsed, disk     │
    │ depth, last 20 s             │ angle, last 20 s              │                                          │
    └──────────────────────────────┴───────────────────────────────┴──────────────────────────────────────────┘

A timer takes the engine's snapshot every 16 ms and every widget is set from that snapshot alone; the window never
calls into the link. Only what changed is redrawn: the image when a new frame has been fused (so at the source's
rate, 30 frames/s for a scanner's video), the banner when its alerts do, the readouts and the charts ten times a
second (the readouts at once when the signal is lost). Polling at twice the frame rate is what lets every frame
through: at 30 Hz, a frame fused a little early or late shares a tick with its neighbour and one of the two is
never shown (25 of 30 frames/s were, in bench/bench_viewer.py); an engine that can say so also asks for a refresh
as each frame is fused (a queued signal), so two frames fused within one tick are both shown. The window decides
nothing about alerts beyond asking ``alerts.active_alerts`` and ``cues``.

Picks on the image (the no-go depth, the needle tips of the image calibration) freeze the image on the frame
clicked, so the click and the needle state paired with it belong to the same instant.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QGuiApplication
from PySide6.QtWidgets import QApplication, QDialog, QMainWindow, QVBoxLayout, QWidget

from needletrack import geometry
from needletrack.needle_state import NeedleState
from needletrack.viewer import actions, refcount_guard
from needletrack.viewer import theme as th
from needletrack.viewer.alert_banner import AlertBanner
from needletrack.viewer.alerts import Alert, Priority, active_alerts
from needletrack.viewer.charts import StripCharts
from needletrack.viewer.connection_panel import ConnectionPanel
from needletrack.viewer.cues import CueSchedule
from needletrack.viewer.image_cal_wizard import ImageCalibrationWizard
from needletrack.viewer.image_view import ImageView
from needletrack.viewer.latency_wizard import LatencyWizard
from needletrack.viewer.procedure_panel import ProcedurePanel
from needletrack.viewer.readouts import ReadoutsPanel
from needletrack.viewer.record_panel import RecordPanel
from needletrack.viewer.setup_dialog import SetupDialog
from needletrack.viewer.snapshot import Level, Phase, Snapshot, ViewerEngine
from needletrack.viewer.sound import AlertSound

logger = logging.getLogger(__name__)
PickCallback = Callable[[float, float, NeedleState | None, tuple[int, int]], None]

REFRESH_MS = 16
CHART_EVERY = 6  # readouts and charts every sixth refresh: 10 times a second (a 20 s strip moves 3 px a step)
FLASH_HZ = 2.0  # a high-priority alert's frame around the image flashes at this rate


def no_signal_detail(snap: Snapshot) -> str:
    link = snap.link
    if link.phase is Phase.RECONNECTING:
        return f"link lost, reconnecting (attempt {link.reconnect_attempt}): needle hidden"
    if snap.stale:
        age = link.age_s
        return "no needle data: needle hidden" if age is None else f"no needle data for {age:.1f} s: needle hidden"
    o = snap.outage
    if o is not None and o.end_s is not None:
        what = "link dropped" if o.cause == "link" else "needle data stopped"
        return f"{what} for {o.end_s - o.start_s:.2f} s; back now"
    return ""


def idle_text(snap: Snapshot) -> str:
    link = snap.link
    image = "" if snap.frame_source is not None else "   (no ultrasound source: readouts only)"
    if link.phase is Phase.IDLE:
        return "Not connected.  C: connect,  S: scan for probes" + image
    if link.phase in (Phase.SCANNING, Phase.CONNECTING):
        return link.phase.value.capitalize() + "…" + image
    if link.phase is Phase.STREAMING:
        return f"Streaming from {link.name or link.address or 'the probe'}: no alerts" + image
    return link.phase.value + image


class MainWindow(QMainWindow):
    frame_fused = Signal()  # emitted from the engine's thread: queued to this one

    def __init__(self, engine: ViewerEngine, *, theme: th.Theme | None = None, sound: AlertSound | None = None,
                 refresh_ms: int = REFRESH_MS, start_timer: bool = True) -> None:
        refcount_guard.protect()  # before the thousands of Qt calls a window makes
        super().__init__()
        self.engine = engine
        if theme is None:
            screen = QGuiApplication.primaryScreen()
            theme = th.Theme.for_height(screen.availableGeometry().height() if screen is not None else 1080)
        self.theme = theme
        self.sound = sound or AlertSound(self)
        self.cues = CueSchedule()
        self.alerts: list[Alert] = []
        self.last_snapshot: Snapshot | None = None
        self._refreshes = 0
        self._shown_lost: bool | None = None
        self._last_message: tuple[float, str] | None = None
        self.setWindowTitle("NeedleTrack")
        # The application's font, not the window's: widgets styled by a style sheet do not inherit a parent's.
        QApplication.setFont(theme.font(theme.panel_px))
        self.setStyleSheet(theme.stylesheet())
        self.actions_by_key = actions.build(self, {
            "scan": self.scan, "connect": self.connect_or_disconnect, "pair": self.pair,
            "record": self.toggle_recording, "fullscreen": self.toggle_fullscreen,
            "leave_fullscreen": self.escape, "mute": self.apply_mute, "help": self.show_help,
            "quit": self.close, "setup": self.show_setup, "nogo_pick": self.pick_nogo,
            "image_cal": self.show_image_calibration, "latency_cal": self.show_latency_calibration,
            "depth_cal": self.show_depth_calibration, "review": self.open_review,
        })
        a = self.actions_by_key
        self.banner = AlertBanner(theme)
        self.image = ImageView(theme)
        self.charts = StripCharts(theme)
        self.readouts = ReadoutsPanel(theme)
        self.connection = ConnectionPanel(theme, a["scan"], a["connect"], a["pair"])
        self.record = RecordPanel(theme, a["record"])
        self.procedure = ProcedurePanel(theme, a["setup"])
        self.setup_dialog: SetupDialog | None = None
        self.image_wizard: ImageCalibrationWizard | None = None
        self.latency_wizard: LatencyWizard | None = None
        self.depth_wizard: QDialog | None = None
        self.review_windows: list[QWidget] = []
        self._pick: tuple[PickCallback, NeedleState | None] | None = None
        self.image.picked.connect(self._picked)
        self.image.pick_cancelled.connect(self._pick_ended)
        self.help_dialog = actions.ShortcutsDialog(theme, self)
        self._layout(theme)
        self.timer = QTimer(self)
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(refresh_ms)
        self.timer.timeout.connect(self.refresh)
        add_listener = getattr(engine, "add_frame_listener", None)
        if add_listener is not None:
            self.frame_fused.connect(self.refresh, Qt.ConnectionType.QueuedConnection)
            add_listener(self.frame_fused.emit)
        if start_timer:
            self.timer.start()

    def _layout(self, theme: th.Theme) -> None:
        central = QWidget()
        central.setObjectName("central")
        left = QVBoxLayout()
        left.setSpacing(theme.px(8))
        left.addWidget(self.image, 1)
        left.addWidget(self.procedure)
        self.charts.setFixedHeight(theme.px(230))
        left.addWidget(self.charts)
        right = QVBoxLayout()
        right.setSpacing(theme.px(8))
        right.addWidget(self.readouts)
        right.addWidget(self.connection)
        right.addWidget(self.record)
        right.addStretch(1)
        body = theme.with_side_column(left, right)
        outer = QVBoxLayout(central)
        outer.setContentsMargins(theme.px(8), theme.px(8), theme.px(8), theme.px(4))
        outer.setSpacing(theme.px(8))
        outer.addWidget(self.banner)
        outer.addLayout(body, 1)
        self.setCentralWidget(central)

    # -- refresh
    def refresh(self) -> None:
        try:
            snap = self.engine.snapshot()
        except Exception as e:  # the engine's own failures are messages; this is a bug, but never a crash
            logger.exception("snapshot failed")
            self.statusBar().showMessage(f"internal error: {e}")
            return
        self.show_snapshot(snap)

    def show_snapshot(self, snap: Snapshot) -> None:
        self.last_snapshot = snap
        self._refreshes += 1
        if self._pick is None:  # a pick holds the frame it is made on
            self.image.set_frame(snap.image, snap.frame_index, snap.frame_time_s)
        slow_tick = (self._refreshes - 1) % CHART_EVERY == 0
        # Numbers that change 60 times a second cannot be read; ten is readable and still follows the needle.
        # A lost signal shows at once, though.
        if slow_tick or snap.signal_lost != self._shown_lost:
            self._shown_lost = snap.signal_lost
            hidden = snap.setup is not None and snap.setup.hides_needle
            self.readouts.show_state(snap.state, snap.signal_lost, snap.nogo_depth_mm, setup_hidden=hidden)
        if slow_tick:
            self.charts.show_data(snap.charts, snap.t, snap.chart_window_s, snap.nogo_depth_mm)
        self.connection.show_link(snap.link, snap.found)
        self.record.show_recording(snap.recording, snap.free_disk_bytes)
        self.procedure.show_setup(snap)
        alerts = active_alerts(snap.state, snap.signal_lost, snap.flags, snap.link.battery_pct,
                               watching=snap.watching, no_signal_detail=no_signal_detail(snap), setup=snap.setup)
        self.alerts = alerts
        self.banner.show_alerts(alerts, self.sound.muted, idle_text(snap))
        self.image.set_border(self._border(alerts, snap.t))
        due = self.cues.due(alerts, snap.t)
        if due is not None:
            self.sound.play(due)
        self._show_message(snap)
        title = "NeedleTrack"
        if snap.link.address:
            title += f" – {snap.link.name or snap.link.address}"
        if snap.recording is not None:
            title += " – REC"
        if self.windowTitle() != title:
            self.setWindowTitle(title)

    @staticmethod
    def _border(alerts: list[Alert], t: float) -> str | None:
        if not alerts:
            return None
        top = alerts[0]
        if top.priority is Priority.HIGH and (t * FLASH_HZ) % 1.0 >= 0.7:
            return None  # the off part of the flash
        return top.background

    def _show_message(self, snap: Snapshot) -> None:
        if not snap.messages:
            return
        m = snap.messages[-1]
        if self._last_message == (m.t, m.text):
            return
        self._last_message = (m.t, m.text)
        prefix = "Error: " if m.level is Level.ERROR else ""
        self.statusBar().setStyleSheet(f"color: {th.RED_TEXT if m.level is Level.ERROR else th.TEXT_DIM};")
        self.statusBar().showMessage(prefix + m.text, 15000)

    # -- actions
    def _phase(self) -> Phase:
        return Phase.IDLE if self.last_snapshot is None else self.last_snapshot.link.phase

    def scan(self) -> None:
        self.engine.scan()

    def connect_or_disconnect(self) -> None:
        if self._phase() in (Phase.STREAMING, Phase.RECONNECTING, Phase.CONNECTING):
            self.engine.disconnect()
        else:
            self.engine.connect(self.connection.selected_address())

    def pair(self) -> None:
        self.engine.pair()

    def toggle_recording(self) -> None:
        self.engine.toggle_recording()

    def toggle_fullscreen(self) -> None:
        if self.isFullScreen():
            self.showNormal()
        else:
            self.showFullScreen()
        self.actions_by_key["fullscreen"].setChecked(self.isFullScreen())

    def escape(self) -> None:
        """Esc ends a pick on the image first; otherwise it leaves full screen."""
        if self.image.picking:
            self.image.cancel_pick()
        else:
            self.leave_fullscreen()

    # -- picks on the image
    def start_pick(self, prompt: str, on_pick: PickCallback, raw: bool = False) -> bool:
        """Freeze the shown frame (``raw``: without the overlay) and hand the next click on it to ``on_pick``
        with the needle state of that frame. False when there is no frame to click on."""
        snap = self.last_snapshot
        image = None if snap is None else (snap.raw_image if raw else snap.image)
        if snap is None or image is None:
            self._status_error("no ultrasound image to click on")
            return False
        self._pick = (on_pick, snap.frame_state)
        self.image.set_frame(image, -2 if raw else snap.frame_index, snap.frame_time_s)
        self.image.start_pick(prompt)
        return True

    def _picked(self, col: float, row: float) -> None:
        pick = self._pick
        size = self.image.frame_size
        self._pick_ended()
        if pick is not None and size is not None:
            pick[0](col, row, pick[1], size)

    def _pick_ended(self) -> None:
        self._pick = None
        snap = self.last_snapshot
        if snap is not None:
            self.image.set_frame(snap.image, snap.frame_index, snap.frame_time_s)

    def pick_nogo(self) -> None:
        snap = self.last_snapshot
        if snap is None or snap.calibration is None:
            self._status_error("the image is not calibrated: no depth to read from a click (calibrate it: I)")
            return
        cal = snap.calibration
        self.start_pick("Click the no-go depth on the image",
                        lambda col, row, state, size: self._nogo_picked(cal, row))

    def _nogo_picked(self, cal: geometry.Calibration, row: float) -> None:
        depth = round(geometry.px_to_mm(cal, (cal.exit_px[0], row))[1], 1)
        if self.setup_dialog is not None and self.setup_dialog.isVisible():
            self.setup_dialog.set_nogo_depth(depth)  # confirmed with the rest of the setup
        else:
            self.engine.set_nogo(depth)

    def _status_error(self, text: str) -> None:
        self.statusBar().setStyleSheet(f"color: {th.RED_TEXT};")
        self.statusBar().showMessage("Error: " + text, 15000)

    # -- dialogs
    def show_setup(self) -> None:
        if self.setup_dialog is None:
            self.setup_dialog = SetupDialog(self.engine, self.theme, parent=self, pick_nogo=self.pick_nogo,
                                            source_calibration=getattr(self.engine, "source_calibration", None),
                                            measure_latency=self.show_latency_calibration)
        if self.last_snapshot is not None and not self.setup_dialog.isVisible():
            self.setup_dialog.load(self.last_snapshot)
        self._present(self.setup_dialog)

    def show_image_calibration(self) -> None:
        if self.image_wizard is None:
            snap = self.last_snapshot
            model = "" if snap is None or snap.calibration is None else snap.calibration.probe_model
            self.image_wizard = ImageCalibrationWizard(
                self.engine, self.theme, lambda prompt, cb: self.start_pick(prompt, cb, raw=True),
                probe_model=model, parent=self)
        self._present(self.image_wizard)

    def show_latency_calibration(self) -> None:
        if self.latency_wizard is None:
            self.latency_wizard = LatencyWizard(self.engine, self.theme, parent=self)
        self._present(self.latency_wizard)

    def show_depth_calibration(self) -> None:
        from needletrack.viewer.depth_wizard import open_depth_wizard

        if self.depth_wizard is None or not self.depth_wizard.isVisible():
            self.depth_wizard = open_depth_wizard(self.engine, self.theme, self)
        self._present(self.depth_wizard)

    def open_review(self, path: Path | None = None) -> None:
        from needletrack.viewer.review_window import open_review

        window = open_review(path, self)
        if window is not None:
            self.review_windows.append(window)

    @staticmethod
    def _present(dialog: QWidget) -> None:
        dialog.show()
        dialog.raise_()
        dialog.activateWindow()

    def leave_fullscreen(self) -> None:
        if self.isFullScreen():
            self.toggle_fullscreen()

    def apply_mute(self) -> None:
        """The mute action's state is the sound's: the banner keeps every alert either way."""
        self.sound.muted = self.actions_by_key["mute"].isChecked()
        self.banner.show_alerts(self.alerts, self.sound.muted, self.banner.idle.text())

    def set_muted(self, muted: bool) -> None:
        self.actions_by_key["mute"].setChecked(muted)
        self.apply_mute()

    def show_help(self) -> None:
        self.help_dialog.show()
        self.help_dialog.raise_()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.timer.stop()
        self.sound.close()
        super().closeEvent(event)
