"""The large readouts: needle angle, depth, tip depth and the distance left to the no-go depth.

They show the newest measurement, not the state at the displayed frame: the numbers are what the needle is
doing now. A value the device did not measure, or any value while the signal is lost, shows as a dash, never
as the last number seen. The distance to the no-go depth takes the no-go colours: green while clear, amber
within the margin, red once reached (with the background filled, so it is seen from the side of the eye).
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from needletrack import overlay
from needletrack.needle_state import NeedleState
from needletrack.viewer import theme as th

DASH = "–"


class ReadoutTile(QFrame):
    def __init__(self, title: str, unit: str, theme: th.Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("panel")
        self.title = QLabel(title)
        self.title.setFont(theme.font(theme.label_px, bold=True))
        self.value = QLabel(DASH)
        self.value.setFont(theme.font(theme.value_px, bold=True))
        self.value.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.unit = QLabel(unit)
        self.unit.setFont(theme.font(theme.unit_px))
        self.unit.setMinimumWidth(theme.px(70))
        self.unit.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self.title.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        row = QHBoxLayout(self)
        row.setContentsMargins(theme.px(14), 0, theme.px(10), 0)
        row.addWidget(self.title)
        row.addWidget(self.value, 1)
        row.addSpacing(theme.px(6))
        row.addWidget(self.unit)
        self._style: tuple[str, str, str] | None = None
        self.set_colours(th.PANEL, th.TEXT, th.TEXT_DIM)

    def set_colours(self, background: str, value: str, label: str) -> None:
        if self._style == (background, value, label):
            return
        self._style = (background, value, label)
        self.setStyleSheet(f"QFrame#panel {{ background: {background}; border: 1px solid {th.PANEL_EDGE}; }}")
        self.value.setStyleSheet(f"color: {value};")
        self.unit.setStyleSheet(f"color: {value};")
        self.title.setStyleSheet(f"color: {label};")

    def set_title(self, text: str) -> None:
        if self.title.text() != text:
            self.title.setText(text)

    def set_value(self, text: str) -> None:
        if self.value.text() != text:
            self.value.setText(text)


def _fmt(v: float | None) -> str:
    return DASH if v is None else f"{v:.1f}"


class ReadoutsPanel(QWidget):
    def __init__(self, theme: th.Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.angle_tile = ReadoutTile("NEEDLE\nANGLE", "°", theme)
        self.depth_tile = ReadoutTile("DEPTH", "mm", theme)
        self.tip_tile = ReadoutTile("TIP\nDEPTH", "mm", theme)
        self.nogo_tile = ReadoutTile("TO\nNO-GO", "mm", theme)
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(theme.px(8))
        for tile in (self.angle_tile, self.depth_tile, self.tip_tile, self.nogo_tile):
            box.addWidget(tile)

    def show_state(self, state: NeedleState | None, signal_lost: bool, nogo_depth_mm: float | None,
                   setup_hidden: bool = False) -> None:
        """``setup_hidden``: the probe is set up for another detent, so what depends on it (the angle, the tip
        depth, the distance to no-go) is not shown; the insertion depth does not depend on it."""
        live = None if state is None or signal_lost else state
        self.depth_tile.set_value(_fmt(None if live is None else live.depth_mm))
        if setup_hidden:
            live = None
        self.angle_tile.set_value(_fmt(None if live is None else live.needle_angle_deg))
        self.tip_tile.set_value(_fmt(None if live is None else live.tip_depth_mm))
        if nogo_depth_mm is None:
            self.nogo_tile.set_title("NO-GO\nnot set")
            self.nogo_tile.set_value(DASH)
            self.nogo_tile.set_colours(th.PANEL, th.TEXT_DIM, th.TEXT_DIM)
            return
        self.nogo_tile.set_title(f"TO NO-GO\nat {nogo_depth_mm:.1f}")
        to_go = None if live is None or live.tip_depth_mm is None else nogo_depth_mm - live.tip_depth_mm
        self.nogo_tile.set_value(_fmt(to_go))
        level = overlay.NogoLevel.UNKNOWN if live is None else overlay.nogo_level(live, max_age_s=float("inf"))
        if level is overlay.NogoLevel.REACHED:
            self.nogo_tile.set_colours(th.RED, th.TEXT, th.TEXT)
        elif level is overlay.NogoLevel.NEAR:
            self.nogo_tile.set_colours(th.AMBER, "#000000", "#000000")
        elif level is overlay.NogoLevel.CLEAR:
            self.nogo_tile.set_colours(th.PANEL, th.GREEN, th.TEXT_DIM)
        else:
            self.nogo_tile.set_colours(th.PANEL, th.TEXT, th.TEXT_DIM)
