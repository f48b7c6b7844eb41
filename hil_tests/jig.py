"""A depth jig's known positions, and the device's depth compared with them.

The jig file (JSON) lists the carriage positions and when, in seconds after the stream starts, the carriage sits
at each; the operator (or a motorised jig) follows that schedule from the moment the test announces the start:

    {"tolerance_mm": 0.5,
     "positions": [{"depth_mm": 0.0,  "measured_at": [3.0, 5.0]},
                   {"depth_mm": 20.0, "measured_at": [8.0, 10.0]},
                   {"depth_mm": 40.0}]}

A bare list of positions is read the same way. A position without "measured_at" is listed but not compared.
The device's reading for a position is the median depth over the last second of its window.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_TOLERANCE_MM = 0.5  # per position; a calibrated clip measures 0.07-0.14 mm RMS on the bench (docs/depth.md)
MEDIAN_OVER_S = 1.0


class JigError(ValueError):
    """A jig file that cannot be used, with what is wrong in it."""


@dataclass(frozen=True)
class Position:
    depth_mm: float
    window_s: tuple[float, float] | None  # seconds after the stream starts; None: not compared


@dataclass(frozen=True)
class Jig:
    positions: list[Position]
    tolerance_mm: float

    @property
    def timed(self) -> list[Position]:
        return [p for p in self.positions if p.window_s is not None]

    @property
    def stream_s(self) -> float:
        """How long to stream: up to the end of the last window, and a little more."""
        return max((p.window_s[1] for p in self.timed if p.window_s), default=0.0) + 0.5


def load(path: str | Path) -> Jig:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise JigError(f"{path}: {e}") from None
    entries = doc.get("positions") if isinstance(doc, dict) else doc
    tolerance = doc.get("tolerance_mm", DEFAULT_TOLERANCE_MM) if isinstance(doc, dict) else DEFAULT_TOLERANCE_MM
    if not isinstance(entries, list) or not entries:
        raise JigError(f"{path}: expected a list of positions (or {{\"positions\": [...]}})")
    if not isinstance(tolerance, int | float) or tolerance <= 0:
        raise JigError(f"{path}: tolerance_mm must be a positive number, got {tolerance!r}")
    positions = []
    for i, entry in enumerate(entries):
        where = f"{path}: positions[{i}]"
        if isinstance(entry, int | float):
            entry = {"depth_mm": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("depth_mm"), int | float):
            raise JigError(f"{where}: needs a number depth_mm")
        window = entry.get("measured_at")
        if window is not None:
            ok = (isinstance(window, list) and len(window) == 2 and all(isinstance(x, int | float) for x in window)
                  and 0 <= window[0] < window[1])
            if not ok:
                raise JigError(f"{where}: measured_at must be [start_s, end_s] with 0 <= start < end, "
                               f"got {window!r}")
            window = (float(window[0]), float(window[1]))
        positions.append(Position(float(entry["depth_mm"]), window))
    return Jig(positions, float(tolerance))


@dataclass(frozen=True)
class Reading:
    position: Position
    device_mm: float | None  # median over the window's last second; None: no valid depth in it
    samples: int

    @property
    def error_mm(self) -> float | None:
        return None if self.device_mm is None else self.device_mm - self.position.depth_mm


def compare(jig: Jig, t_s: np.ndarray, depth_mm: np.ndarray) -> list[Reading]:
    """t_s: seconds since the stream started; depth_mm: the device's depth (NaN where it sent none)."""
    out = []
    for p in jig.timed:
        assert p.window_s is not None
        start, end = p.window_s
        start = max(start, end - MEDIAN_OVER_S)
        inside = (t_s >= start) & (t_s <= end) & ~np.isnan(depth_mm)
        n = int(np.count_nonzero(inside))
        out.append(Reading(p, float(np.median(depth_mm[inside])) if n else None, n))
    return out
