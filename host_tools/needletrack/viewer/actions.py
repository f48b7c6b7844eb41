"""The viewer's actions: one table gives each its menu, its keyboard shortcut and its line in the help dialog.

Shortcuts are single keys, quick to press mid-procedure without looking away from the image. Each action lives
on the window as well as in its menu, so it works in full screen too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QMainWindow, QVBoxLayout, QWidget

from needletrack.viewer import theme as th


@dataclass(frozen=True)
class ActionSpec:
    key: str
    text: str
    shortcuts: tuple[str, ...]
    menu: str
    checkable: bool = False


ACTIONS = (
    ActionSpec("scan", "Scan for probes", ("S",), "Probe"),
    ActionSpec("connect", "Connect / disconnect", ("C",), "Probe"),
    ActionSpec("pair", "Pair (bond and encrypt the link)", ("P",), "Probe"),
    ActionSpec("setup", "Set up the procedure (guide, needle, image, no-go)", ("U",), "Procedure"),
    ActionSpec("nogo_pick", "Set the no-go depth: click it on the image", ("N",), "Procedure"),
    ActionSpec("image_cal", "Calibrate the image (two needle tips)", ("I",), "Calibrate"),
    ActionSpec("latency_cal", "Measure the video latency", ("L",), "Calibrate"),
    ActionSpec("depth_cal", "Calibrate the needle depth on a jig", ("D",), "Calibrate"),
    ActionSpec("record", "Start / stop recording", ("R",), "Recording"),
    ActionSpec("review", "Open a recording for review", ("Ctrl+O",), "File"),
    ActionSpec("fullscreen", "Full screen", ("F11", "F"), "View", checkable=True),
    ActionSpec("leave_fullscreen", "Cancel a pick on the image, or leave full screen", ("Esc",), "View"),
    ActionSpec("mute", "Mute alert sound (alerts stay on screen)", ("M",), "View", checkable=True),
    ActionSpec("help", "Keyboard shortcuts", ("F1", "?"), "Help"),
    ActionSpec("quit", "Quit", ("Ctrl+Q",), "File"),
)
MENUS = ("File", "Probe", "Procedure", "Calibrate", "Recording", "View", "Help")


def build(window: QMainWindow, handlers: dict[str, Callable[[], object]]) -> dict[str, QAction]:
    """The actions, in the window's menus and on the window itself; ``handlers`` maps each key to its slot."""
    menus = {name: window.menuBar().addMenu(name) for name in MENUS}
    out: dict[str, QAction] = {}
    for spec in ACTIONS:
        action = QAction(spec.text, window)
        action.setShortcuts([QKeySequence(s) for s in spec.shortcuts])
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.setCheckable(spec.checkable)
        handler = handlers[spec.key]
        action.triggered.connect(lambda _checked=False, h=handler: h())
        menus[spec.menu].addAction(action)
        window.addAction(action)
        out[spec.key] = action
    return out


def shortcuts_html() -> str:
    rows = "".join(f"<tr><td style='padding:4px 24px 4px 0'><b>{' or '.join(s.shortcuts)}</b></td>"
                   f"<td style='padding:4px 0'>{s.text}</td></tr>" for s in ACTIONS)
    return f"<table>{rows}</table>"


class ShortcutsDialog(QDialog):
    def __init__(self, theme: th.Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        self.setStyleSheet(f"QDialog {{ background: {th.PANEL}; }} QLabel {{ color: {th.TEXT}; }}")
        label = QLabel(shortcuts_html())
        label.setFont(theme.font(theme.panel_px))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        box = QVBoxLayout(self)
        box.addWidget(label)
        box.addWidget(buttons)
