"""The alerts' sound: the cues of ``cues`` played through QtMultimedia, or the system beep where it is missing.

QtMultimedia ships in PySide6-Addons, not in PySide6-Essentials; without it (or without an audio device) each
cue is one QApplication.beep(). Nothing here may fail: a viewer that cannot make a sound still shows every
alert, so errors from the audio stack are logged and the cue is counted as asked for.

Muting silences the sound only; the banners are not touched by it.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QUrl
from PySide6.QtWidgets import QApplication

from needletrack.viewer import refcount_guard
from needletrack.viewer.alerts import Priority
from needletrack.viewer.cues import CUES, wav_bytes

logger = logging.getLogger(__name__)


class AlertSound(QObject):
    def __init__(self, parent: QObject | None = None, *, use_multimedia: bool = True) -> None:
        refcount_guard.protect()
        super().__init__(parent)
        self.muted = False
        self.played = 0  # cues that were sounded (not muted)
        self.silenced = 0  # cues that were due while muted
        self.backend = "beep"
        self._effects: dict[Priority, Any] = {}
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        if use_multimedia:
            self._load_effects()

    def _load_effects(self) -> None:
        try:
            from PySide6.QtMultimedia import QSoundEffect
        except ImportError:
            return
        try:
            self._dir = tempfile.TemporaryDirectory(prefix="needletrack-cues-")
            for priority, cue in CUES.items():
                path = Path(self._dir.name) / f"{priority.name.lower()}.wav"
                path.write_bytes(wav_bytes(cue))
                effect = QSoundEffect(self)
                effect.setSource(QUrl.fromLocalFile(str(path)))
                effect.setVolume(1.0)
                self._effects[priority] = effect
            self.backend = "qtmultimedia"
        except Exception as e:  # no audio device, a broken backend: the beep will do
            logger.warning("alert sound falls back to the system beep: %s", e)
            self._effects = {}

    def play(self, priority: Priority) -> None:
        if self.muted:
            self.silenced += 1
            return
        self.played += 1
        try:
            effect = self._effects.get(priority)
            if effect is not None:
                effect.play()
            else:
                QApplication.beep()
        except Exception as e:
            logger.warning("alert sound failed: %s", e)

    def close(self) -> None:
        for effect in self._effects.values():
            effect.stop()
        self._effects = {}
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
