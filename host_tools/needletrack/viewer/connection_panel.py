"""The probe panel: scan, choose, connect, pair; and how the link is doing (battery, quality, rate, loss)."""

from __future__ import annotations

from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QToolButton,
    QWidget,
)

from needletrack.link.base import Found
from needletrack.viewer import theme as th
from needletrack.viewer.alerts import LOW_BATTERY_PCT
from needletrack.viewer.snapshot import LinkInfo, Phase


def _button(action: QAction, label: str) -> QToolButton:
    b = QToolButton()
    b.setDefaultAction(action)
    b.setText(label)
    b.setToolTip(f"{action.text()} ({action.shortcut().toString()})")
    return b


class ConnectionPanel(QGroupBox):
    def __init__(self, theme: th.Theme, scan: QAction, connect: QAction, pair: QAction,
                 parent: QWidget | None = None) -> None:
        super().__init__("PROBE", parent)
        self.connect_button = _button(connect, "Connect (C)")
        self.pair_button = _button(pair, "Pair (P)")
        self.scan_button = _button(scan, "Scan (S)")
        self.probes = QComboBox()
        self.probes.setPlaceholderText("the first probe found")
        self._found: tuple[Found, ...] = ()
        for b in (self.connect_button, self.pair_button, self.scan_button):
            b.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        top = QHBoxLayout()
        top.addWidget(self.connect_button, 3)
        top.addWidget(self.pair_button, 2)
        second = QHBoxLayout()
        second.addWidget(self.scan_button, 2)
        second.addWidget(self.probes, 3)
        grid = QGridLayout(self)
        grid.setVerticalSpacing(theme.px(2))
        grid.setColumnStretch(1, 1)
        grid.addLayout(top, 0, 0, 1, 2)
        grid.addLayout(second, 1, 0, 1, 2)
        self.values: dict[str, QLabel] = {}
        for row, name in enumerate(("Status", "Probe", "Battery", "Link quality", "Sample rate", "Loss"), start=2):
            label = QLabel(name)
            label.setStyleSheet(f"color: {th.TEXT_DIM};")
            value = QLabel("–")
            value.setFont(theme.font(theme.panel_px, bold=True))
            value.setWordWrap(True)
            grid.addWidget(label, row, 0)
            grid.addWidget(value, row, 1)
            self.values[name] = value

    def selected_address(self) -> str | None:
        i = self.probes.currentIndex()
        return self._found[i].address if 0 <= i < len(self._found) else None

    def _set(self, name: str, text: str, colour: str = th.TEXT) -> None:
        th.Theme.set_label(self.values[name], text, colour)

    def show_link(self, link: LinkInfo, found: tuple[Found, ...]) -> None:
        if found != self._found:
            self._found = found
            self.probes.clear()
            for f in found:
                self.probes.addItem(f"{f.name or '?'}  {f.address}  {f.rssi} dBm")
        connected = link.phase in (Phase.STREAMING, Phase.RECONNECTING, Phase.CONNECTING)
        self.connect_button.setText("Disconnect (C)" if connected else "Connect (C)")
        self.pair_button.setText("Paired" if link.paired else "Pair (P)")
        phase_colour = {Phase.STREAMING: th.GREEN, Phase.RECONNECTING: th.RED_TEXT}.get(link.phase, th.TEXT)
        status = link.phase.value
        if link.phase is Phase.RECONNECTING:
            status = f"reconnecting (attempt {link.reconnect_attempt})"
        elif link.phase is Phase.STREAMING and link.reconnects:
            status += f", {link.reconnects} reconnection{'s' if link.reconnects > 1 else ''}"
        self._set("Status", status, phase_colour)
        self._set("Probe", link.name or link.address or "–")
        if self.values["Probe"].toolTip() != (link.address or ""):
            self.values["Probe"].setToolTip(link.address or "")
        if link.battery_pct is None:
            self._set("Battery", "unknown" if link.address else "–", th.TEXT_DIM)
        else:
            low = link.battery_pct <= LOW_BATTERY_PCT
            self._set("Battery", f"{link.battery_pct} %", th.AMBER if low else th.TEXT)
        if link.quality is None:
            self._set("Link quality", "–" if link.rssi_dbm is None else f"RSSI {link.rssi_dbm} dBm")
        else:
            q = 100 * link.quality
            rssi = "" if link.rssi_dbm is None else f"  ({link.rssi_dbm} dBm)"
            colour = th.GREEN if q >= 99 else th.AMBER if q >= 90 else th.RED_TEXT
            self._set("Link quality", f"{q:.0f} %{rssi}", colour)
        self._set("Sample rate", "–" if link.rate_hz <= 0 else f"{link.rate_hz:.0f} /s")
        missing = link.lost + link.missed
        loss = f"{link.lost} lost ({100 * link.loss:.2f} %)"
        if link.missed:
            loss += f", {link.missed} while disconnected"
        self._set("Loss", loss if link.samples else "–", th.TEXT if missing == 0 else th.AMBER)
