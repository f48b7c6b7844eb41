"""One line under the image: the procedure in use and whether the probe confirmed it.

    ┌ PROCEDURE ✓ guide 30°, needle 60 mm · image L12-5 (two-point) · latency 80 ms · no-go 17.0 mm  [Set up (U)] ┐

Green edge when the probe confirmed the setup, amber while it is unconfirmed, red on a mismatch (the alert banner
says why and the needle is hidden).
"""

from __future__ import annotations

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QSizePolicy

from needletrack.viewer import theme as th
from needletrack.viewer.procedure import SetupInfo, SetupState
from needletrack.viewer.snapshot import Snapshot

_EDGE = {SetupState.CONFIRMED: th.GREEN, SetupState.NOT_SET: th.AMBER, SetupState.CONFIRMING: th.AMBER,
         SetupState.MISMATCH: th.RED}
_MARK = {SetupState.CONFIRMED: "✓ confirmed", SetupState.NOT_SET: "not confirmed",
         SetupState.CONFIRMING: "confirming…", SetupState.MISMATCH: "MISMATCH"}


def summary(snap: Snapshot) -> str:
    setup = snap.setup or SetupInfo()
    shown = setup.wanted or setup.device
    parts = [shown.describe() if shown is not None else "guide and needle not known yet"]
    cal = snap.calibration
    if snap.frame_source is not None:
        method = "" if cal is None or cal.method == cal.probe_model else f" ({cal.method})"
        parts.append("image not calibrated" if cal is None else f"image {cal.probe_model}{method}")
        parts.append(f"latency {snap.video_latency_s * 1000:.0f} ms")
    parts.append("no-go not set" if snap.nogo_depth_mm is None
                 else f"no-go {snap.nogo_depth_mm:.1f} mm")
    return " · ".join(parts)


class ProcedurePanel(QFrame):
    def __init__(self, theme: th.Theme, setup_action: QAction) -> None:
        super().__init__()
        self.setObjectName("procedure")
        self.state_label = QLabel()
        self.state_label.setFont(theme.font(theme.panel_px, bold=True))
        self.text = QLabel()
        self.text.setFont(theme.font(theme.panel_px - 1))
        self.text.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.button = QPushButton("Set up (U)")
        self.button.clicked.connect(setup_action.trigger)
        row = QHBoxLayout(self)
        row.setContentsMargins(theme.px(10), theme.px(4), theme.px(6), theme.px(4))
        row.setSpacing(theme.px(8))
        title = QLabel("PROCEDURE")
        title.setFont(theme.font(theme.panel_px, bold=True))
        title.setStyleSheet(f"color: {th.TEXT_DIM};")
        row.addWidget(title)
        row.addWidget(self.state_label)
        row.addWidget(self.text, 1)
        row.addWidget(self.button)
        self._shown: tuple[SetupState, str] | None = None
        self.theme = theme

    def show_setup(self, snap: Snapshot) -> None:
        state = (snap.setup or SetupInfo()).state
        text = summary(snap)
        if self._shown == (state, text):
            return
        self._shown = (state, text)
        edge = _EDGE[state]
        self.setStyleSheet(f"QFrame#procedure {{ background: {th.PANEL}; border: {self.theme.px(3)}px solid {edge};"
                           f" border-radius: {self.theme.px(4)}px; }}")
        self.state_label.setText(_MARK[state])
        self.state_label.setStyleSheet(f"color: {th.RED_TEXT if state is SetupState.MISMATCH else edge};")
        self.text.setText(text)
        self.text.setToolTip(text)
