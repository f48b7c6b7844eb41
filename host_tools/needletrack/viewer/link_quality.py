"""Link quality as the clinician can act on it: the share of the device's samples that arrived, recently.

The Receiver's counters cover the whole session; a link that was bad ten minutes ago and is good now should read
good. The counters are sampled every ``every_s`` and the quality taken over the last ``span_s``: samples that
arrived against those that arrived, were lost within the connection, or were made while it was down.
"""

from __future__ import annotations

from collections import deque


class LinkQuality:
    def __init__(self, span_s: float = 5.0, every_s: float = 0.25) -> None:
        self.span_s = span_s
        self.every_s = every_s
        self._marks: deque[tuple[float, int, int]] = deque()  # (host time, samples, lost + missed)

    def update(self, now: float, samples: int, missing: int) -> None:
        if self._marks and now - self._marks[-1][0] < self.every_s:
            return
        self._marks.append((now, samples, missing))
        while len(self._marks) > 2 and now - self._marks[1][0] >= self.span_s:
            self._marks.popleft()

    def reset(self) -> None:
        self._marks.clear()

    def quality(self) -> float | None:
        """0..1, or None until there is a span to judge."""
        if len(self._marks) < 2:
            return None
        (_, s0, m0), (_, s1, m1) = self._marks[0], self._marks[-1]
        got, missing = s1 - s0, m1 - m0
        total = got + missing
        return None if total <= 0 else got / total
