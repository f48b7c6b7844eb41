"""The recording panel: one button to start and stop, the time recorded, where it goes and the disk left."""

from __future__ import annotations

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QToolButton, QVBoxLayout, QWidget

from needletrack.viewer import theme as th
from needletrack.viewer.snapshot import RecordingInfo

# Below this the free space shows amber: the sequence file's raw frames alone take 7.7 MB/s at 640x480 grey and
# 25 frames/s, so 5 GB is about ten minutes of recording.
LOW_DISK_BYTES = 5 * 1024**3


def clock_text(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}"


def size_text(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit, k in (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{n} B"


class RecordPanel(QGroupBox):
    def __init__(self, theme: th.Theme, record: QAction, parent: QWidget | None = None) -> None:
        super().__init__("RECORDING", parent)
        self.button = QToolButton()
        self.button.setObjectName("record")
        self.button.setDefaultAction(record)
        self.button.setText("● Record (R)")
        self.button.setFont(theme.font(theme.label_px, bold=True))
        self.elapsed = QLabel("not recording")
        self.elapsed.setFont(theme.font(theme.label_px, bold=True))
        self.detail = QLabel("")
        row = QHBoxLayout()
        row.addWidget(self.button)
        row.addSpacing(theme.px(10))
        row.addWidget(self.elapsed, 1)
        box = QVBoxLayout(self)
        box.setSpacing(theme.px(4))
        box.addLayout(row)
        box.addWidget(self.detail)
        self._recording: bool | None = None

    def show_recording(self, info: RecordingInfo | None, free_bytes: int | None) -> None:
        recording = info is not None and not info.saving
        if recording != self._recording:
            self._recording = recording
            self.button.setText("■ Stop (R)" if recording else "● Record (R)")
            self.button.setProperty("recording", "true" if recording else "false")
            self.button.style().unpolish(self.button)
            self.button.style().polish(self.button)
            self.elapsed.setStyleSheet(f"color: {th.RED_TEXT if recording else th.TEXT_DIM};")
        if info is None:
            text = f"Free disk {size_text(free_bytes)}"
            self.elapsed.setText("not recording")
        else:
            text = f"{info.samples} samples, {info.frames} frames, {size_text(free_bytes)} free"
            self.elapsed.setText(f"saving {clock_text(info.elapsed_s)}" if info.saving
                                 else f"REC {clock_text(info.elapsed_s)}")
        self.detail.setToolTip("" if info is None else str(info.directory))
        if self.detail.text() != text:
            self.detail.setText(text)
        low = free_bytes is not None and free_bytes < LOW_DISK_BYTES
        style = f"color: {th.AMBER if low else th.TEXT_DIM};"
        if self.detail.styleSheet() != style:
            self.detail.setStyleSheet(style)
