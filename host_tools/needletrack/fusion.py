"""The needle at the moment each ultrasound frame was taken.

A frame's capture time is its timestamp minus the video latency of its source (a frame grabber delivers a frame
some tens of ms after the scanner formed it; docs/latency.md). The needle state at that instant comes from
the device's samples on the same host clock (their device times mapped by the Receiver), interpolated between
the two samples around it, never "the latest sample": at 30 mm/s a needle moves 1.5 mm in 50 ms.

Nothing is invented:

- a value the device sent as NA on either side of the instant stays unknown;
- two samples further apart than MAX_GAP_S (the link was down) are not bridged: the state is then as old as
  the sample before the gap, and the overlay shows NO SIGNAL;
- past the newest sample the newest is held, with its age; beyond STALE_AFTER_S it is stale. A live view
  asks :meth:`SampleHistory.covers` first and holds a frame back briefly until the samples of its instant have
  arrived (they travel over the radio too).

Events between frames are not lost: the last TWITCH at or before the instant gives ``twitch_age_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from needletrack.needle_state import DEFAULT_NOGO_MARGIN_MM, NeedleState
from needletrack.protocol import Flag
from needletrack.receiver import STALE_AFTER_S, Timed

MAX_GAP_S = STALE_AFTER_S  # samples further apart than this are not interpolated between
_EVENT_FLAGS = Flag.TWITCH | Flag.PASS  # one-sample events: not carried by interpolation


@dataclass(frozen=True)
class NoGo:
    """The no-go depth the clinician marked (tip depth below the transducer face) and its warning margin."""

    depth_mm: float | None = None
    margin_mm: float = DEFAULT_NOGO_MARGIN_MM


class SampleHistory:
    """The newest ``capacity`` samples as arrays on the host clock, for interpolation at frame times.

    Samples must come in host-time order, as the Receiver delivers them."""

    _FIELDS = ("depth_mm", "tip_depth_mm", "needle_angle_deg", "guide_angle_deg")

    def __init__(self, capacity: int = 20000) -> None:
        self.capacity = capacity
        self._t = np.empty(2 * capacity)
        self._v = np.empty((2 * capacity, len(self._FIELDS)))
        self._flags = np.empty(2 * capacity, np.int64)
        self._n = 0
        self._twitch: list[float] = []  # host times of TWITCH samples, newest last (a few per minute)

    def __len__(self) -> int:
        return self._n

    @property
    def newest_s(self) -> float | None:
        return float(self._t[self._n - 1]) if self._n else None

    def add(self, batch: list[Timed]) -> None:
        for t in batch:
            if self._n == len(self._t):
                keep = self.capacity
                self._t[:keep] = self._t[self._n - keep:self._n]
                self._v[:keep] = self._v[self._n - keep:self._n]
                self._flags[:keep] = self._flags[self._n - keep:self._n]
                self._n = keep
            i = self._n
            s = t.sample
            self._t[i] = t.host_s
            for j, name in enumerate(self._FIELDS):
                v = getattr(s, name)
                self._v[i, j] = np.nan if v is None else v
            self._flags[i] = int(s.flags)
            self._n = i + 1
            if Flag.TWITCH in s.flags:
                self._twitch.append(t.host_s)
                del self._twitch[:-16]

    def covers(self, t: float) -> bool:
        """Whether samples at or after host time t have arrived (interpolation at t needs no more)."""
        return self._n > 0 and self._t[self._n - 1] >= t

    def state_at(self, t: float, nogo: NoGo = NoGo()) -> NeedleState | None:
        """The needle at host time t; None before the first sample."""
        n = self._n
        if n == 0 or t < self._t[0]:
            return None
        times = self._t[:n]
        i = int(np.searchsorted(times, t, side="right"))  # times[i-1] <= t < times[i]
        before = i - 1
        if i == n or times[i] - times[before] > MAX_GAP_S:
            values = self._v[before]
            flags = int(self._flags[before])
            age = t - float(times[before])
        else:
            t0, t1 = float(times[before]), float(times[i])
            w = (t - t0) / (t1 - t0) if t1 > t0 else 0.0
            # NaN on either side stays NaN, except exactly on a sample, whose own value is the state.
            values = self._v[before] if w == 0.0 else self._v[before] * (1.0 - w) + self._v[i] * w
            flags = int(self._flags[before] if w < 0.5 else self._flags[i])
            age = 0.0
        twitch_age = None
        for tt in reversed(self._twitch):
            if tt <= t:
                twitch_age = t - tt
                break
        depth, tip, angle, guide = (None if np.isnan(v) else float(v) for v in values)
        return NeedleState(depth, tip, angle, guide, Flag(flags) & ~_EVENT_FLAGS, age, nogo.depth_mm,
                           nogo.margin_mm, twitch_age)
