"""The alert banner across the top of the window: every active alert, side by side, most urgent first.

It is always there, at the same height, so the layout never jumps: with no alert it shows a quiet line of
status in grey. There is no close button: an alert goes when its condition does. While sound is muted, a
"SOUND OFF" tag stays at the right end, so nobody forgets it.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from needletrack.viewer import theme as th
from needletrack.viewer.alerts import Alert


class AlertTile(QFrame):
    def __init__(self, theme: th.Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.theme = theme
        self.title = QLabel()
        self.detail = QLabel()
        self.detail.setWordWrap(True)
        for label in (self.title, self.detail):
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        box = QVBoxLayout(self)
        box.setContentsMargins(theme.px(10), theme.px(4), theme.px(10), theme.px(4))
        box.setSpacing(0)
        box.addWidget(self.title)
        box.addWidget(self.detail)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.alert: Alert | None = None
        self._colours: tuple[str, str] | None = None
        self._crowded: bool | None = None

    def show_alert(self, alert: Alert, crowded: bool) -> None:
        if alert != self.alert:
            self.alert = alert
            self.title.setText(alert.title)
            self.detail.setText(alert.detail)
            if self._colours != (alert.background, alert.foreground):  # restyling costs: only on a change
                self._colours = (alert.background, alert.foreground)
                self.setStyleSheet(f"AlertTile {{ background: {alert.background}; border: 3px solid #ffffff; "
                                   f"border-radius: {self.theme.px(6)}px; }} "
                                   f"QLabel {{ color: {alert.foreground}; }}")
        if crowded != self._crowded:
            self._crowded = crowded
            t = self.theme
            self.title.setFont(t.font(t.banner_title_px * (0.72 if crowded else 1.0), bold=True))
            self.detail.setFont(t.font(t.banner_detail_px * (0.85 if crowded else 1.0)))


class AlertBanner(QWidget):
    def __init__(self, theme: th.Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.theme = theme
        self.setFixedHeight(theme.px(100))
        self.idle = QLabel()
        self.idle.setFont(theme.font(theme.label_px))
        self.idle.setStyleSheet(f"color: {th.TEXT_DIM}; background: {th.PANEL}; border-radius: {theme.px(6)}px;")
        self.idle.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.idle.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.muted = QLabel("SOUND OFF\n(M)")
        self.muted.setFont(theme.font(theme.panel_px, bold=True))
        self.muted.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.muted.setStyleSheet(f"color: {th.AMBER}; background: {th.PANEL}; border: 2px solid {th.AMBER}; "
                                 f"border-radius: {theme.px(6)}px; padding: {theme.px(4)}px;")
        self.muted.hide()
        self._row = QHBoxLayout(self)
        self._row.setContentsMargins(0, 0, 0, 0)
        self._row.setSpacing(theme.px(8))
        self._row.addWidget(self.idle)
        self._tiles: list[AlertTile] = []
        self._row.addWidget(self.muted)
        self.alerts: list[Alert] = []

    def show_alerts(self, alerts: list[Alert], muted: bool, idle_text: str) -> None:
        self.alerts = list(alerts)
        while len(self._tiles) < len(alerts):
            tile = AlertTile(self.theme)
            self._row.insertWidget(self._row.count() - 1, tile)
            self._tiles.append(tile)
        crowded = len(alerts) > 3
        for i, tile in enumerate(self._tiles):
            if i < len(alerts):
                tile.show_alert(alerts[i], crowded)
                tile.show()
            else:
                tile.hide()
        self.idle.setVisible(not alerts)
        if self.idle.text() != idle_text:
            self.idle.setText(idle_text)
        self.muted.setVisible(muted)

    def texts(self) -> list[str]:
        """The titles shown (for tests and logs)."""
        return [t.title.text() for t in self._tiles if not t.isHidden()]
