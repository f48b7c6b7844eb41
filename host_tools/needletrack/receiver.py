"""From notifications to timed samples: decode, unwrap device time, map it to host time, count what was lost.

Every link backend hands notifications with their arrival times to one Receiver; what comes out is the same
whatever the transport. A sample's time is its device time mapped to the host clock, never its arrival.
"""

from __future__ import annotations

from dataclasses import dataclass

from needletrack.clock import ClockMapper, Unwrapper
from needletrack.link.base import Notification
from needletrack.protocol import ProtocolError, Sample, decode_notification

# A link silent for longer than this has lost the signal: every consumer shows the needle as lost from then on.
STALE_AFTER_S = 0.1


@dataclass(frozen=True)
class Timed:
    sample: Sample
    device_s: float  # unwrapped device time
    host_s: float  # device time mapped to the host clock the link stamps arrivals with


class Receiver:
    def __init__(self, min_latency_s: float = 0.0) -> None:
        self.unwrap = Unwrapper()
        self.clock = ClockMapper(min_latency_s=min_latency_s)
        self.samples = 0
        self.notifications = 0
        self.malformed = 0  # notifications rejected whole by the decoder
        self.lost = 0  # sequence numbers missing between consecutive samples
        self.first_device_s: float | None = None
        self.last: Timed | None = None
        self.last_seq: int | None = None
        self.last_arrival: float | None = None

    def feed(self, note: Notification) -> list[Timed]:
        try:
            samples = decode_notification(note.data)
        except ProtocolError:
            self.malformed += 1
            return []
        self.notifications += 1
        self.last_arrival = note.t_host
        devs = []
        for s in samples:
            d = self.unwrap(s.device_time_us) / 1e6
            self.clock.observe(d, note.t_host)
            devs.append(d)
            if self.last_seq is not None:
                self.lost += (s.seq - self.last_seq - 1) % 65536
            self.last_seq = s.seq
        mapping = self.clock.mapping()
        out = []
        prev = self.last
        for s, d in zip(samples, devs, strict=True):
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
        """Samples per second of device time since the first sample."""
        if self.last is None or self.first_device_s is None or self.last.device_s <= self.first_device_s:
            return 0.0
        return (self.samples - 1) / (self.last.device_s - self.first_device_s)

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
