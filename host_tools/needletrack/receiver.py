"""From notifications to timed samples: decode, unwrap device time, map it to host time, count what was lost.

Every link backend hands notifications with their arrival times to one Receiver; what comes out is the same
whatever the transport. A sample's time is its device time mapped to the host clock, never its arrival.

What comes out is in order and never twice: a sample whose sequence number is not ahead of the last one
delivered is counted (``duplicates`` if it was delivered before, ``reordered`` if it had been counted lost)
and dropped. A reconnection (:meth:`Receiver.reconnected`) is a boundary: the samples the device made while
no link carried them are counted as ``missed``, not ``lost``, and a device that restarted meanwhile (its
clock and sequence numbers began again) starts a new clock mapping instead of corrupting the old one.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from needletrack.clock import TICK_PERIOD_US, ClockMapper, Unwrapper
from needletrack.link.base import Notification
from needletrack.protocol import ProtocolError, Sample, decode_notification

# A link silent for longer than this has lost the signal: every consumer shows the needle as lost from then on.
STALE_AFTER_S = 0.1
SEQ_MOD = 65536
_RECENT = 4096  # sequence numbers remembered to tell a duplicate from a late arrival
# Across a reconnection the device clock must have advanced by the host time that passed, within this much
# (plus 2 %, for drift and the arrival delays of the two samples): otherwise the device restarted.
_RESUME_TOLERANCE_S = 0.5


@dataclass(frozen=True)
class Timed:
    sample: Sample
    device_s: float  # unwrapped device time
    host_s: float  # device time mapped to the host clock the link stamps arrivals with


class Receiver:
    def __init__(self, min_latency_s: float = 0.0) -> None:
        self.min_latency_s = min_latency_s
        self.unwrap = Unwrapper()
        self.clock = ClockMapper(min_latency_s=min_latency_s)
        self.samples = 0
        self.notifications = 0
        self.malformed = 0  # notifications rejected whole by the decoder
        self.lost = 0  # sequence numbers missing between consecutive samples of one connection
        self.duplicates = 0  # samples received again after being delivered
        self.reordered = 0  # samples that arrived after a later one (counted lost, then dropped)
        self.missed = 0  # samples the device made while no link was up (between connections)
        self.restarts = 0  # reconnections that found the device restarted
        self.connections = 1
        self.first_device_s: float | None = None
        self.last: Timed | None = None
        self.last_seq: int | None = None
        self.last_tick: int | None = None
        self.last_arrival: float | None = None
        self._recent: deque[int] = deque(maxlen=_RECENT)
        self._recent_set: set[int] = set()
        self._resuming = False
        self._span = 0  # sequence steps from the first sample of this device run to the last

    # -- connection boundaries
    def reconnected(self) -> None:
        """The link came back after a drop: the next sample is checked against the device clock."""
        self.connections += 1
        self._resuming = self.last_seq is not None

    def _resume(self, s: Sample, arrival: float) -> None:
        # The first sample after a reconnection: a continuation of the same device run, or a new run.
        assert self.last_tick is not None and self.last_arrival is not None and self.last_seq is not None
        self._resuming = False
        elapsed_us = (arrival - self.last_arrival) * 1e6
        step_us = (s.device_time_us - self.last_tick) % TICK_PERIOD_US
        wraps = round((elapsed_us - step_us) / TICK_PERIOD_US)
        advance_us = step_us + max(wraps, 0) * TICK_PERIOD_US
        if abs(advance_us - elapsed_us) <= _RESUME_TOLERANCE_S * 1e6 + 0.02 * elapsed_us:
            self.unwrap.advance(advance_us, s.device_time_us)
            rate = self.rate_hz
            expected = round(advance_us * 1e-6 * rate) if rate > 0 else 0
            step = (s.seq - self.last_seq) % SEQ_MOD
            # Sequence numbers wrap every 65536 samples: the device clock says how many times they did.
            step += max(round((expected - step) / SEQ_MOD), 0) * SEQ_MOD
            self.missed += max(step - 1, 0)
            self._span += max(step - 1, 0)
            self.last_seq = (s.seq - 1) % SEQ_MOD  # no gap left for feed() to count as lost
            return
        self.restarts += 1
        self.unwrap = Unwrapper()
        self.clock = ClockMapper(min_latency_s=self.min_latency_s)
        self.last_seq = None
        self.last = None
        self.first_device_s = None
        self._span = 0
        self._recent.clear()
        self._recent_set.clear()

    # -- samples
    def _accept(self, seq: int) -> bool:
        if self.last_seq is not None:
            step = (seq - self.last_seq) % SEQ_MOD
            if step == 0 or step > SEQ_MOD // 2:
                if seq in self._recent_set:
                    self.duplicates += 1
                else:
                    self.reordered += 1
                return False
            self.lost += step - 1
            self._span += step
        if len(self._recent) == _RECENT:
            self._recent_set.discard(self._recent[0])
        self._recent.append(seq)
        self._recent_set.add(seq)
        self.last_seq = seq
        return True

    def feed(self, note: Notification) -> list[Timed]:
        try:
            samples = decode_notification(note.data)
        except ProtocolError:
            self.malformed += 1
            return []
        self.notifications += 1
        if self._resuming and samples:
            self._resume(samples[0], note.t_host)
        self.last_arrival = note.t_host
        kept: list[tuple[Sample, float]] = []
        for s in samples:
            if not self._accept(s.seq):
                continue
            d = self.unwrap(s.device_time_us) / 1e6
            self.last_tick = s.device_time_us
            self.clock.observe(d, note.t_host)
            kept.append((s, d))
        if not kept:
            return []
        mapping = self.clock.mapping()
        out = []
        prev = self.last
        for s, d in kept:
            host = float(mapping.to_host(d))
            if prev is not None and host <= prev.host_s:
                # The estimate moved back (a less delayed arrival lowered the envelope): keep host time moving
                # forward, at half the device pace, until the new estimate catches up.
                host = prev.host_s + 0.5 * max(d - prev.device_s, 0.0)
            prev = Timed(s, d, host)
            out.append(prev)
        self.last = out[-1]
        if self.first_device_s is None:
            self.first_device_s = out[0].device_s
        self.samples += len(out)
        return out

    @property
    def rate_hz(self) -> float:
        """The device's output rate: samples per second of device time since this run's first sample."""
        if self.last is None or self.first_device_s is None or self.last.device_s <= self.first_device_s:
            return 0.0
        return self._span / (self.last.device_s - self.first_device_s)

    @property
    def loss(self) -> float:
        total = self.samples + self.lost
        return self.lost / total if total else 0.0

    def age_s(self, now: float) -> float | None:
        """How long since the last notification arrived: what decides that the signal is lost."""
        return None if self.last_arrival is None else now - self.last_arrival

    def stale(self, now: float) -> bool:
        age = self.age_s(now)
        return age is None or age > STALE_AFTER_S
