"""The strip charts' data: depth, tip depth and angle over the last seconds, and where twitches and passes were.

Samples come at up to 1000 per second; a chart 20 s wide on a screen 1400 px wide has no use for more than
about 100 points per second, so one sample is kept per ``step_s`` of host time (the first in each step; the
rest are only looked at for events).
Twitch and pass are one-sample flags: their rising edges are kept as markers whatever the decimation.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

import numpy as np

from needletrack.protocol import Flag
from needletrack.receiver import Timed
from needletrack.viewer.snapshot import ChartData

STEP_S = 0.01


class ChartBuffer:
    def __init__(self, window_s: float = 20.0, step_s: float = STEP_S) -> None:
        self.window_s = window_s
        self.step_s = step_s
        self.capacity = math.ceil(window_s / step_s) * 2 + 16
        self._data = np.full((2 * self.capacity, 4), np.nan)  # t, depth, tip depth, angle
        self._n = 0
        self._last_bucket = -math.inf
        self._last_flags = Flag(0)
        self._twitches: deque[float] = deque(maxlen=256)
        self._passes: deque[float] = deque(maxlen=256)

    def add(self, batch: Iterable[Timed]) -> None:
        for timed in batch:
            s = timed.sample
            t = timed.host_s
            rising = s.flags & ~self._last_flags
            if Flag.TWITCH in rising:
                self._twitches.append(t)
            if Flag.PASS in rising:
                self._passes.append(t)
            self._last_flags = s.flags
            bucket = math.floor(t / self.step_s)
            if bucket <= self._last_bucket:
                continue
            self._last_bucket = bucket
            self._make_room()
            self._data[self._n] = (t, _nan(s.depth_mm), _nan(s.tip_depth_mm), _nan(s.needle_angle_deg))
            self._n += 1

    def gap(self) -> None:
        """The stream was interrupted: the chart's line breaks here rather than joining across the outage."""
        if self._n and not np.isnan(self._data[self._n - 1, 1:]).all():
            self._make_room()
            self._data[self._n] = (self._data[self._n - 1, 0], np.nan, np.nan, np.nan)
            self._n += 1

    def _make_room(self) -> None:
        # Twice the capacity is allocated, so the older half is dropped in one copy now and then.
        if self._n == len(self._data):
            keep = self.capacity
            self._data[:keep] = self._data[self._n - keep:self._n]
            self._n = keep

    def window(self, now: float) -> ChartData:
        """Copies of what falls in the chart window ending at ``now``."""
        data = self._data[:self._n]
        first = int(np.searchsorted(data[:, 0], now - self.window_s, side="left"))
        part = data[first:].copy()
        since = now - self.window_s
        return ChartData(part[:, 0], part[:, 1], part[:, 2], part[:, 3],
                         np.array([t for t in self._twitches if t >= since]),
                         np.array([t for t in self._passes if t >= since]))


def _nan(v: float | None) -> float:
    return math.nan if v is None else v
