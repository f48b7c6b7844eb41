"""Measuring the frame source's video latency from the viewer (``engine.measure_latency``).

The clinician moves the needle in and out in a water bath or phantom for the time asked; the engine reads the
echo on every frame and matches it with the probe's depth. The result is shown with its uncertainty and the
match plot, and used only when the clinician says so; a refusal says why (too little movement, echo not found,
ambiguous) so the next try can be better.
"""

from __future__ import annotations

import tempfile
from concurrent.futures import Future
from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QDialog,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from needletrack.latency import LatencyEstimate, plot_latency
from needletrack.viewer import theme as th
from needletrack.viewer.snapshot import ViewerEngine

DEFAULT_SECONDS = 20.0


class LatencyWizard(QDialog):
    def __init__(self, engine: ViewerEngine, theme: th.Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        self.estimate: LatencyEstimate | None = None
        self._future: Future[LatencyEstimate] | None = None
        self._plot_dir = Path(tempfile.mkdtemp(prefix="needletrack-latency-"))
        self.setWindowTitle("Measure the video latency")
        self.setModal(False)
        theme.style_dialog(self)
        steps = QLabel("With the needle in the guide and its echo visible (water bath or phantom), press Start, "
                       "then move the needle in and out by 10-30 mm, briskly and irregularly, until the bar is "
                       "full. The echo on each frame is matched with the probe's depth.")
        steps.setWordWrap(True)
        self.seconds = QDoubleSpinBox()
        self.seconds.setRange(5.0, 120.0)
        self.seconds.setValue(DEFAULT_SECONDS)
        self.seconds.setSuffix(" s")
        self.start_button = QPushButton("Start")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setFormat("")
        self.result_label = QLabel(" ")
        self.result_label.setWordWrap(True)
        self.plot = QLabel()
        self.plot.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.use_button = QPushButton("Use this latency")
        self.use_button.setEnabled(False)
        self.use_button.clicked.connect(self.use)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        top = QHBoxLayout()
        top.addWidget(QLabel("Duration"))
        top.addWidget(self.seconds)
        top.addStretch(1)
        top.addWidget(self.start_button)
        buttons = theme.button_row(self.use_button, close)
        box = QVBoxLayout(self)
        box.addWidget(steps)
        box.addLayout(top)
        box.addWidget(self.progress)
        box.addWidget(self.result_label)
        box.addWidget(self.plot, 1)
        box.addLayout(buttons)
        self._poll = QTimer(self)
        self._poll.setInterval(100)
        self._poll.timeout.connect(self._check)

    @property
    def running(self) -> bool:
        return self._future is not None

    def start(self) -> None:
        if self._future is not None:
            return
        self.estimate = None
        self.use_button.setEnabled(False)
        self.plot.clear()
        self.start_button.setEnabled(False)
        self._show("move the needle in and out…", th.TEXT)
        self._future = self.engine.measure_latency(self.seconds.value())
        self._poll.start()

    def _check(self) -> None:
        future = self._future
        if future is None:
            return
        progress = self.engine.snapshot().latency_capture
        if progress is not None:
            self.progress.setValue(round(1000 * progress.elapsed_s / progress.seconds))
            self.progress.setFormat(f"{progress.elapsed_s:.0f} of {progress.seconds:.0f} s: {progress.frames} "
                                    f"frames, echo found in {progress.echoes}")
        if not future.done():
            return
        self._poll.stop()
        self._future = None
        self.start_button.setEnabled(True)
        e = future.exception()
        if e is not None:
            self._show(f"Not measured: {e}", th.RED_TEXT)
            return
        est = future.result()
        self.estimate = est
        self.progress.setValue(1000)
        self._show(est.summary(), th.GREEN if est.ok else th.RED_TEXT)
        self.use_button.setEnabled(est.ok)
        if est.lags_s.size:
            path = plot_latency(est, self._plot_dir / "latency.png", "video latency")
            pixmap = QPixmap(str(path))
            self.plot.setPixmap(pixmap.scaledToWidth(min(pixmap.width(), 900),
                                                     Qt.TransformationMode.SmoothTransformation))

    def use(self) -> None:
        if self.estimate is not None and self.estimate.lag_s is not None:
            self.engine.set_video_latency(self.estimate.lag_s)
            self._show(f"In use: video latency {self.estimate.lag_s * 1000:.1f} ms (for `needletrack stream "
                       f"--latency {self.estimate.lag_s:.4f}` too).", th.GREEN)

    def _show(self, text: str, colour: str) -> None:
        self.result_label.setStyleSheet(f"color: {colour};")
        self.result_label.setText(text)
