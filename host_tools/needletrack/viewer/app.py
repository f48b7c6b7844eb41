"""Starting the viewer: the Qt application, the engine's thread, the window; and stopping them in order.

Ctrl-C and SIGTERM close the window as its own Quit does, so a recording under way is finished, not cut: Python
runs signal handlers only between its own bytecodes, so a timer gives it that chance a few times a second
while Qt's loop runs.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from needletrack.viewer import refcount_guard
from needletrack.viewer.engine import LiveEngine
from needletrack.viewer.main_window import MainWindow


def application() -> QApplication:
    refcount_guard.protect()
    app = QApplication.instance()
    if isinstance(app, QApplication):
        return app
    app = QApplication(sys.argv[:1])
    app.setApplicationName("NeedleTrack")
    return app


@contextmanager
def _quit_on_signals(app: QApplication) -> Iterator[None]:
    previous = {sig: signal.signal(sig, lambda *_: app.quit()) for sig in (signal.SIGINT, signal.SIGTERM)}
    tick = QTimer()
    tick.timeout.connect(lambda: None)
    tick.start(200)
    try:
        yield
    finally:
        tick.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(engine: LiveEngine, *, fullscreen: bool = False, connect: bool = False) -> int:
    """Show the window until it is closed; the engine is closed after it (recordings finished, link down)."""
    app = application()
    engine.start()
    try:
        window = MainWindow(engine)
        if fullscreen:
            window.showFullScreen()
            window.actions_by_key["fullscreen"].setChecked(True)
        else:
            window.showMaximized()
        if connect:
            engine.connect()
        with _quit_on_signals(app):
            return app.exec()
    finally:
        engine.close()
