"""Colours and type sizes: dark surroundings (the room is dimmed for ultrasound), light large type.

Sizes are pixels on a 1080-line screen and scale with the screen's height. The readout values are 80 px: a
cap height of about 58 px, 16 mm on a 24-inch 1080p monitor (0.277 mm a pixel), which subtends 37 arcminutes
at 1.5 m, well over the 20 arcminutes usually asked of text that must be read at a glance. Labels are 28 px
(about 13 arcminutes), enough to find which number is which.

Fonts are set on the widgets, never in the style sheet: a style sheet's font-size would override them.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtGui import QFont
from PySide6.QtWidgets import QHBoxLayout, QLabel, QLayout, QWidget

BACKGROUND = "#000000"
PANEL = "#151515"
PANEL_EDGE = "#3a3a3a"
TEXT = "#ffffff"
TEXT_DIM = "#c8c8c8"  # 12:1 on the panel colour: still high contrast
GREEN = "#3ddc5a"
AMBER = "#ffb000"
RED = "#d0021b"
RED_TEXT = "#ff4d4d"  # red as text on black needs to be lighter than red as a background
CYAN = "#4fc3ff"
MAGENTA = "#ff4dff"
FAMILY = "DejaVu Sans"


@dataclass(frozen=True)
class Theme:
    scale: float = 1.0

    @staticmethod
    def for_height(height_px: int) -> Theme:
        return Theme(min(max(height_px / 1080.0, 0.6), 2.0))

    def px(self, v: float) -> int:
        return max(1, round(v * self.scale))

    def font(self, px: float, bold: bool = False) -> QFont:
        f = QFont(FAMILY)
        f.setPixelSize(self.px(px))
        f.setBold(bold)
        return f

    # type sizes at scale 1
    value_px: int = 80
    unit_px: int = 32
    label_px: int = 28
    panel_px: int = 22
    banner_title_px: int = 46
    banner_detail_px: int = 24
    chart_px: int = 17

    @staticmethod
    def set_label(label: QLabel, text: str, colour: str = TEXT) -> None:
        """Text and colour, each set only when it changed (a style sheet set again re-polishes the widget)."""
        if label.text() != text:
            label.setText(text)
        style = f"color: {colour};"
        if label.styleSheet() != style:
            label.setStyleSheet(style)

    def with_side_column(self, main: QLayout, side: QLayout) -> QHBoxLayout:
        """The windows' body: ``main`` taking the width left by a fixed-width column on the right (the readouts'
        width, the same in the live and the review window)."""
        column = QWidget()
        column.setLayout(side)
        column.setFixedWidth(self.px(560))
        body = QHBoxLayout()
        body.setSpacing(self.px(8))
        body.addLayout(main, 1)
        body.addWidget(column)
        return body

    @staticmethod
    def button_row(*buttons: QWidget) -> QHBoxLayout:
        """A dialog's buttons, right-aligned, in the order given."""
        row = QHBoxLayout()
        row.addStretch(1)
        for b in buttons:
            row.addWidget(b)
        return row

    def style_dialog(self, dialog: QWidget) -> None:
        """The viewer's look on a dialog of its own: panel background, dark inputs, the panel font."""
        p = self.px
        dialog.setStyleSheet(self.stylesheet() + f"""
        QDialog {{ background: {PANEL}; }}
        QLineEdit, QDoubleSpinBox, QSpinBox, QTableWidget {{ background: #202020; border: 1px solid #5a5a5a;
                                                           padding: {p(4)}px; }}
        QHeaderView::section {{ background: #2a2a2a; color: {TEXT_DIM}; border: none; }}
        QPushButton:disabled {{ color: #777777; border-color: #3a3a3a; }}
        """)
        dialog.setFont(self.font(self.panel_px))

    def stylesheet(self) -> str:
        p = self.px
        return f"""
        QMainWindow, QWidget#central {{ background: {BACKGROUND}; }}
        QWidget {{ color: {TEXT}; }}
        QFrame#panel, QGroupBox {{ background: {PANEL}; border: 1px solid {PANEL_EDGE}; border-radius: {p(6)}px; }}
        QGroupBox {{ margin-top: {p(28)}px; padding: {p(4)}px; }}
        QGroupBox::title {{ subcontrol-origin: margin; left: {p(10)}px; padding: 0 {p(4)}px;
                            color: {TEXT_DIM}; font-weight: bold; }}
        QLabel {{ background: transparent; border: none; }}
        QToolButton, QPushButton {{ background: #2a2a2a; border: 2px solid #5a5a5a; border-radius: {p(6)}px;
                                   padding: {p(3)}px {p(8)}px; font-weight: bold; }}
        QToolButton:hover, QPushButton:hover {{ border-color: {CYAN}; }}
        QToolButton:disabled {{ color: #777777; border-color: #3a3a3a; }}
        QToolButton#record[recording="true"] {{ background: {RED}; border-color: #ffffff; }}
        QComboBox {{ background: #202020; border: 1px solid #5a5a5a; padding: {p(4)}px; }}
        QCheckBox::indicator {{ width: {p(20)}px; height: {p(20)}px; border: 2px solid #8a8a8a;
                               background: #202020; }}
        QCheckBox::indicator:checked {{ background: {CYAN}; border-color: #ffffff; }}
        QMenuBar {{ background: #101010; font-size: {p(18)}px; }}
        QMenuBar::item:selected {{ background: #303030; }}
        QMenu {{ background: #181818; font-size: {p(18)}px; }}
        QMenu::item:selected {{ background: #303030; }}
        QStatusBar {{ background: #101010; color: {TEXT_DIM}; font-size: {p(18)}px; }}
        """
