"""Helpers for the viewer's tests: Qt offscreen, a window on a fixed snapshot, waiting without a qtbot.

Imported before anything that loads Qt's platform plugin, so the window never needs a display.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication, QWidget

from needletrack import overlay
from needletrack.viewer.snapshot import LinkInfo, Phase, Snapshot

TRAJECTORY_BGR = overlay.Style().trajectory


class StaticEngine:
    """Hands the window whatever snapshot the test sets, and notes the actions the window asks for."""

    def __init__(self, snap: Snapshot | None = None) -> None:
        self.snap = snap or Snapshot(t=time.monotonic(), link=LinkInfo("test"))
        self.calls: list[str] = []

    def snapshot(self) -> Snapshot:
        return self.snap

    def _call(self, name: str) -> Future[Any]:
        self.calls.append(name)
        f: Future[Any] = Future()
        f.set_result(None)
        return f

    def scan(self) -> Future[Any]:
        return self._call("scan")

    def connect(self, address: str | None = None) -> Future[Any]:
        return self._call("connect")

    def disconnect(self) -> Future[Any]:
        return self._call("disconnect")

    def pair(self) -> Future[Any]:
        return self._call("pair")

    def toggle_recording(self) -> Future[Any]:
        return self._call("record")


def streaming(**kw: Any) -> LinkInfo:
    return LinkInfo("test", phase=Phase.STREAMING, address="F4:12:FA:00:00:01/P", name="NeedleTrack-0001", **kw)


def pump_until(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Process Qt events until ``cond`` holds (for fixtures, which have no qtbot)."""
    app = QApplication.instance()
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout_s:g} s")
        if app is not None:
            app.processEvents()
        time.sleep(0.005)


def grabbed(widget: QWidget) -> np.ndarray:
    """What a widget shows, as a BGR image."""
    image = widget.grab().toImage()
    image = image.convertToFormat(QImage.Format.Format_BGR888)
    rows = np.array(image.constBits()).reshape(image.height(), image.bytesPerLine())[:, :image.width() * 3]
    return rows.reshape(image.height(), image.width(), 3)


def colour_pixels(image: np.ndarray, bgr: tuple[int, int, int], tolerance: int = 12) -> int:
    """How many pixels of a BGR image are within ``tolerance`` of a colour on every channel."""
    diff = np.abs(image.astype(np.int16) - np.array(bgr, np.int16))
    return int(np.count_nonzero((diff <= tolerance).all(axis=2)))
