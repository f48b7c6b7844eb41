"""When the needle data stopped and came back, and whether the clinician should be seeing NO SIGNAL now.

The data is lost while it is stale (no notification for STALE_AFTER_S) or the link is down. Both can be short:
the virtual radio reconnects in about a tenth of a second, a real one in well under a second, and a red banner
that flickers for 50 ms is not seen. So an outage shows for at least ``min_show_s`` from its start, then goes
as soon as the data is back: the clinician learns that the needle went unwatched for a moment, and the banner
does not linger once it is over.
"""

from __future__ import annotations

from needletrack.receiver import STALE_AFTER_S
from needletrack.viewer.snapshot import Outage

NO_SIGNAL_MIN_S = 1.0


class SignalWatch:
    def __init__(self, stale_after_s: float = STALE_AFTER_S, min_show_s: float = NO_SIGNAL_MIN_S) -> None:
        self.stale_after_s = stale_after_s
        self.min_show_s = min_show_s
        self.outage: Outage | None = None
        self.outages = 0
        self._last_arrival: float | None = None

    def arrived(self, t: float) -> bool:
        """Samples arrived at host time t. Returns True when they end an outage (a chart breaks its line)."""
        ended = False
        if self.outage is not None and self.outage.end_s is None:
            self.outage = Outage(self.outage.start_s, t, self.outage.cause)
            ended = True
        elif self._last_arrival is not None and t - self._last_arrival > self.stale_after_s:
            self.outage = Outage(self._last_arrival + self.stale_after_s, t, "gap")
            self.outages += 1
            ended = True
        self._last_arrival = t
        return ended

    def link_lost(self, t: float) -> None:
        """The link dropped at t (the same drop reported again changes nothing)."""
        if self.outage is not None and (self.outage.end_s is None or self.outage.end_s >= t):
            return
        self.outage = Outage(t, None, "link")
        self.outages += 1

    def reset(self) -> None:
        """A new session: what happened to the previous probe is not this one's."""
        self.outage = None
        self._last_arrival = None

    def lost(self, now: float, stale: bool) -> bool:
        """Whether NO SIGNAL shows at ``now``, given whether the data is stale now."""
        if stale:
            return True
        o = self.outage
        if o is None:
            return False
        return o.end_s is None or now < o.start_s + self.min_show_s
