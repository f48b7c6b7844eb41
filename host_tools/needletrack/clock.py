"""Device time to host time.

The device stamps every sample with its microsecond tick counter (30 bits: it wraps every 1073.74 s). The
host never uses a sample's arrival time as its sample time: it unwraps the device ticks, then maps device time
to host time with an offset and a drift estimated continuously from the arrival times.

Radio arrival times are the true time plus a delay that is never negative and often large (connection
intervals, retransmissions, batching). So the estimator follows the *lower envelope* of
``arrival - device_time``: per window of device time it keeps only the least-delayed sample, and fits a line
(offset + drift) through those minima. The fit's residual spread is the mapping's uncertainty.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

TICK_PERIOD_US = 1 << 30
# Crystals are specified to tens of ppm; the device's and the host's together stay well within this.
MAX_DRIFT = 300e-6
MIN_DRIFT_BASELINE_S = 10.0  # device time the windows must span before a drift is estimated


class Unwrapper:
    """Turns wrapping counters into monotonic ones. Jumps back by less than half a period stay backwards."""

    def __init__(self, period: int = TICK_PERIOD_US) -> None:
        self.period = period
        self._last_raw: int | None = None
        self._last: int = 0

    def __call__(self, raw: int) -> int:
        if self._last_raw is None:
            self._last_raw, self._last = raw, raw
            return raw
        delta = (raw - self._last_raw) % self.period
        if delta >= self.period // 2:
            delta -= self.period
        self._last_raw = raw
        self._last += delta
        return self._last

    def advance(self, delta: int, raw: int) -> None:
        """Account for a span the counter crossed unseen (a link outage, maybe longer than a period): it moved
        on by `delta` and now reads `raw`."""
        if self._last_raw is None:
            self._last = raw
        else:
            self._last += delta
        self._last_raw = raw


@dataclass(frozen=True)
class Mapping:
    offset_s: float  # host time - device time at ref_device_s
    drift: float  # d(host - device)/d(device), dimensionless (1e-6 = 1 ppm)
    ref_device_s: float
    uncertainty_s: float
    windows: int  # how many lower-envelope points the fit used

    def to_host(self, device_s: float | np.ndarray) -> float | np.ndarray:
        return device_s + self.offset_s + self.drift * (np.asarray(device_s) - self.ref_device_s)


class ClockMapper:
    """Continuous device-to-host clock estimate from (device time, arrival time) pairs.

    ``window_s``: device-time span of one lower-envelope point; ``history``: how many windows the line fits
    (the estimate follows drift changes over ``window_s * history``); ``min_latency_s``: the link's known
    minimum delay, subtracted so that mapped times are measurement times rather than earliest arrivals.
    """

    def __init__(self, window_s: float = 1.0, history: int = 60, min_latency_s: float = 0.0) -> None:
        self.window_s = window_s
        self.min_latency_s = min_latency_s
        self._unwrap = Unwrapper()
        self._points: deque[tuple[float, float]] = deque(maxlen=history)  # (device_s, min offset) per window
        self._current: tuple[int, float, float] | None = None  # (window index, device_s, min offset)
        self._mapping: Mapping | None = None

    def device_seconds(self, tick30: int) -> float:
        """Unwrapped device time in seconds for a raw 30-bit tick value, in arrival order."""
        return self._unwrap(tick30) / 1e6

    def observe(self, device_s: float, arrival_host_s: float) -> None:
        offset = arrival_host_s - device_s - self.min_latency_s
        index = int(device_s // self.window_s)
        cur = self._current
        if cur is None or index != cur[0]:
            if cur is not None:
                self._points.append((cur[1], cur[2]))
                self._mapping = None
            self._current = (index, device_s, offset)
        elif offset < cur[2]:
            self._current = (index, device_s, offset)
            if not self._points:
                self._mapping = None

    @property
    def ready(self) -> bool:
        return self._current is not None

    def mapping(self) -> Mapping:
        if self._mapping is None:
            self._mapping = self._fit()
        return self._mapping

    def to_host(self, device_s: float) -> float:
        return float(self.mapping().to_host(device_s))

    def _fit(self) -> Mapping:
        points = list(self._points)
        if self._current is not None:
            points.append((self._current[1], self._current[2]))
        if not points:
            raise RuntimeError("no samples observed yet: the clock mapping is unknown")
        t = np.array([p[0] for p in points])
        off = np.array([p[1] for p in points])
        ref = float(t[-1])
        if len(points) < 3 or t[-1] - t[0] < MIN_DRIFT_BASELINE_S:
            # Too short a baseline for a drift (window minima scatter by a ms or so, which over a few seconds
            # would read as hundreds of ppm): hold the least-delayed offset seen, and say how unsure it is.
            best = float(off.min())
            spread = float(off.max() - best) if len(points) > 1 else 0.01
            return Mapping(best, 0.0, ref, max(spread, 1e-3), len(points))
        drift, offset_at_ref = np.polyfit(t - ref, off, 1)
        # Windows whose minimum still carried a delay sit above the line; refit on those at or below it.
        resid = off - (offset_at_ref + drift * (t - ref))
        keep = resid <= np.median(resid)
        if keep.sum() >= 3:
            drift, offset_at_ref = np.polyfit(t[keep] - ref, off[keep], 1)
        if abs(drift) > MAX_DRIFT:
            # No pair of clocks drifts this much: the minima are still scattered; hold the drift at the bound.
            drift = float(np.clip(drift, -MAX_DRIFT, MAX_DRIFT))
            offset_at_ref = float(np.median(off[keep] - drift * (t[keep] - ref)))
        resid = off[keep] - (offset_at_ref + drift * (t[keep] - ref))
        uncertainty = float(np.sqrt(np.mean(resid**2)) + 1e-6)
        return Mapping(float(offset_at_ref), float(drift), ref, uncertainty, int(keep.sum()))
