"""When an alert sounds, and what it sounds like; no Qt here.

The patterns follow the spirit of IEC 60601-1-8's alarm signals: a high-priority alert is a fast burst of five
pulses, repeated every few seconds for as long as it holds; a medium one is three slower, lower pulses,
repeated less often. A new alert sounds at once; a continuing one repeats at its pace; the most urgent active
priority speaks for all. The tones are made here as WAV files, so no sound assets ship with the package.
"""

from __future__ import annotations

import io
import math
import wave
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from needletrack.viewer.alerts import Alert, AlertKind, Priority

SAMPLE_RATE = 22050
RAMP_S = 0.01  # raised-cosine edges: a square-edged tone clicks


@dataclass(frozen=True)
class Cue:
    freq_hz: float
    pulses: int
    on_s: float
    gap_s: float
    repeat_s: float  # from the start of one burst to the start of the next while the alert holds
    volume: float = 0.6  # of full scale

    @property
    def duration_s(self) -> float:
        return self.pulses * self.on_s + (self.pulses - 1) * self.gap_s


CUES = {
    Priority.HIGH: Cue(freq_hz=880.0, pulses=5, on_s=0.12, gap_s=0.08, repeat_s=3.0),
    Priority.MEDIUM: Cue(freq_hz=587.0, pulses=3, on_s=0.18, gap_s=0.14, repeat_s=10.0),
}


def pcm(cue: Cue, rate: int = SAMPLE_RATE) -> np.ndarray:
    """The burst as 16-bit mono samples."""
    on = round(cue.on_s * rate)
    gap = round(cue.gap_s * rate)
    t = np.arange(on) / rate
    pulse = np.sin(2 * math.pi * cue.freq_hz * t)
    # Odd harmonics make the tone carry over room noise and are heard on small laptop speakers.
    pulse += 0.3 * np.sin(2 * math.pi * 3 * cue.freq_hz * t) + 0.15 * np.sin(2 * math.pi * 5 * cue.freq_hz * t)
    ramp = min(round(RAMP_S * rate), on // 2)
    envelope = np.ones(on)
    edge = 0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, ramp))
    envelope[:ramp] = edge
    envelope[on - ramp:] = edge[::-1]
    pulse *= envelope / np.abs(pulse).max()
    parts: list[np.ndarray] = []
    for i in range(cue.pulses):
        if i:
            parts.append(np.zeros(gap))
        parts.append(pulse)
    return np.round(np.concatenate(parts) * cue.volume * 32767).astype("<i2")


def wav_bytes(cue: Cue, rate: int = SAMPLE_RATE) -> bytes:
    """The burst as a WAV file (PCM, 16-bit, mono)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm(cue, rate).tobytes())
    return buf.getvalue()


class CueSchedule:
    """Decides, at each refresh, whether a cue is due and of which priority."""

    def __init__(self, cues: dict[Priority, Cue] = CUES) -> None:
        self.cues = cues
        self._active: set[AlertKind] = set()
        self._last: dict[Priority, float] = {}

    def due(self, alerts: Iterable[Alert], now: float) -> Priority | None:
        """The priority to sound now (None: nothing). Call it with every refresh's alerts, muted or not, so the
        pace carries on through a mute."""
        alerts = list(alerts)
        kinds = {a.kind for a in alerts}
        new = [a for a in alerts if a.kind not in self._active]
        self._active = kinds
        for p in set(self._last) - {a.priority for a in alerts}:
            del self._last[p]  # that priority is over: when it comes back, it is new
        if not alerts:
            return None
        top = max(a.priority for a in alerts)
        if new and max(a.priority for a in new) == top:
            self._last[top] = now
            return top
        last = self._last.get(top)
        if last is None or now - last >= self.cues[top].repeat_s:
            self._last[top] = now
            return top
        return None
