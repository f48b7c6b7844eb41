"""The depth jig on the virtual probe: the needle carriage steps through the jig's stops, holding at each.

The library scenario ``depth_jig`` (``needletrack sim serve depth_jig``) is :func:`scenario` with its defaults:
a still probe, the needle at each stop of :data:`needletrack.sim.feed.JIG_MM` in turn for 3 s, then back to the
first stop, again and again. With ``saturated_s``, both needle sensors are saturated for that long at the first
stop before each cycle: a stretch with no usable field. A host that knows where the served probe is in its
scenario (:func:`scenario_time`) knows the true depth whenever the needle holds (:meth:`JigCycle.stop_at`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from needletrack.sim import feed

HOLD_S = 3.0
SPEED_MM_S = 10.0  # the carriage between stops
RETURN_MM_S = 25.0  # back to the first stop after the last


@dataclass(frozen=True)
class JigCycle:
    """One cycle of the jig, in scenario time: the holds at the stops, the moves between them, the return."""

    stops_mm: tuple[float, ...] = feed.JIG_MM
    hold_s: float = HOLD_S
    speed_mm_s: float = SPEED_MM_S
    return_mm_s: float = RETURN_MM_S
    saturated_s: float = 0.0  # no usable field for this long at the first stop, ending as the cycle begins

    def holds(self) -> list[tuple[float, float]]:
        """(start, end) of each stop's hold, in scenario time from the cycle's start."""
        out = []
        t = 0.0
        for i, mm in enumerate(self.stops_mm):
            if i:
                t += abs(mm - self.stops_mm[i - 1]) / self.speed_mm_s
            out.append((t, t + self.hold_s))
            t += self.hold_s
        return out

    @property
    def saturated_at_s(self) -> float:
        """When the saturated stretch begins (it ends with the cycle)."""
        back = abs(self.stops_mm[-1] - self.stops_mm[0]) / self.return_mm_s
        return self.holds()[-1][1] + back

    @property
    def period_s(self) -> float:
        return self.saturated_at_s + self.saturated_s

    def keyframes(self) -> list[list[float]]:
        """The depth keyframes [t_s, depth_mm] of one cycle, ending where it began."""
        out: list[list[float]] = []
        for (start, end), mm in zip(self.holds(), self.stops_mm, strict=True):
            out += [[round(start, 4), mm], [round(end, 4), mm]]
        out.append([round(self.saturated_at_s, 4), self.stops_mm[0]])
        if self.saturated_s > 0:
            out.append([round(self.period_s, 4), self.stops_mm[0]])
        return out

    def stop_at(self, t_s: float, margin_s: float = 0.0) -> int | None:
        """The stop the needle holds at, at scenario time t_s (any cycle), at least margin_s from either end of
        the hold; None while it moves or the field is saturated."""
        t = t_s % self.period_s
        for i, (start, end) in enumerate(self.holds()):
            if start + margin_s <= t <= end - margin_s:
                return i
        return None

    def until_stop(self, i: int, t_s: float, into_s: float = 0.0) -> float:
        """Seconds from scenario time t_s until the needle has held at stop i for into_s."""
        return (self.holds()[i][0] + into_s - t_s) % self.period_s

    def saturated(self, t_s: float, margin_s: float = 0.0) -> bool:
        t = t_s % self.period_s
        return self.saturated_s > 0 and self.saturated_at_s + margin_s <= t <= self.period_s - margin_s


def scenario(cycle: JigCycle = JigCycle(), name: str = "depth_jig") -> dict[str, Any]:
    """A scenario document for sim.scenario.parse: the probe still, the needle on the jig's cycle."""
    doc: dict[str, Any] = {
        "name": name,
        "description": f"A depth jig: the needle holds {cycle.hold_s:g} s at each stop of "
                       f"{', '.join(f'{mm:g}' for mm in cycle.stops_mm)} mm in turn, then goes back to the first; "
                       "the probe is still. For trying the depth-calibration wizard.",
        "duration_s": round(cycle.period_s, 4),
        "seed": 41,
        "guide_angle_deg": 30.0,
        "needle_length_mm": 100.0,
        "attitude": [[0, 0, 0, 0]],
        "depth": cycle.keyframes(),
    }
    if cycle.saturated_s > 0:
        doc["faults"] = [{"kind": "saturate", "sensor": s, "t_s": round(cycle.saturated_at_s, 4),
                          "until_s": round(cycle.period_s, 4)} for s in ("hall_a", "hall_b")]
    return doc


def scenario_time(console: Any, period_s: float) -> float:
    """Where a served probe (its sim.console.Console) is in its repeating scenario now, in seconds."""
    boot = json.loads((console.work / "boot.json").read_text())
    epoch = console.device_epoch()
    if epoch is None:
        raise RuntimeError("the virtual probe has not started its clock yet")
    return (time.monotonic() - epoch + (boot["world_us"] - boot["uptime_us"]) / 1e6) % period_s
