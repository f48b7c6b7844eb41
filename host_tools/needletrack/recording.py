"""The session recording format, shared by every recorder (docs/recording.md).

A recording is a directory:

- ``samples.csv``: one row per sample as decoded, device time unwrapped, host time from the clock mapping;
- ``events.csv``: twitches, passes, no-go and fault transitions, link gaps;
- ``session.json``: device, firmware, calibration, scenario; ``"complete": false`` until closed cleanly;
- ``truth.csv``: for a simulated session, the scenario's truth at each sample's device time.

Rows are written as they arrive and flushed at least every ``flush_s``, so a crash or Ctrl-C loses at most that
much; closing marks the session complete. Nothing is ever rewritten in place except ``session.json``, which is
replaced atomically.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from needletrack.protocol import Flag, Sample

SAMPLE_COLUMNS = ("seq", "device_time_s", "host_time_s", "needle_angle_deg", "guide_angle_deg", "depth_mm",
                  "tip_depth_mm", "pitch_deg", "roll_deg", "flags")
EVENT_COLUMNS = ("device_time_s", "kind", "value")
TRUTH_COLUMNS = ("device_time_s", "needle_angle_deg", "guide_angle_deg", "depth_mm", "tip_depth_mm", "pitch_deg",
                 "roll_deg")

# Flags whose rising edge is an event of its own (a twitch, a pass) and flags whose on/off state is.
_EDGE_EVENTS = {Flag.TWITCH: "twitch", Flag.PASS: "pass"}
_STATE_EVENTS = {Flag.NOGO_NEAR: "nogo_near", Flag.NOGO_REACHED: "nogo_reached", Flag.IMU_FAULT: "imu_fault",
                 Flag.HALL_FAULT: "hall_fault", Flag.DEPTH_INVALID: "depth_invalid", Flag.STALE: "stale",
                 Flag.LOW_BATTERY: "low_battery"}


def flags_text(flags: Flag) -> str:
    return "|".join(f.name for f in Flag if f in flags and f.name)


def parse_flags(text: str) -> Flag:
    out = Flag(0)
    for name in filter(None, text.split("|")):
        out |= Flag[name]
    return out


def _num(v: float | None, digits: int = 4) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def _atomic_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RecordingWriter:
    """Writes one session directory incrementally. Use as a context manager."""

    def __init__(self, directory: str | Path, session: dict[str, Any], *, with_truth: bool = False,
                 flush_s: float = 0.5) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        for name in ("samples.csv", "events.csv", "truth.csv"):
            if (self.dir / name).exists():
                raise FileExistsError(f"{self.dir / name} exists: a recording is never overwritten")
        self.session = {**session, "complete": False, "started_unix_s": time.time()}
        _atomic_json(self.dir / "session.json", self.session)
        self._files: list[IO[str]] = []
        self._samples = self._open("samples.csv", SAMPLE_COLUMNS)
        self._events = self._open("events.csv", EVENT_COLUMNS)
        self._truth = self._open("truth.csv", TRUTH_COLUMNS) if with_truth else None
        self._flush_s = flush_s
        self._last_flush = time.monotonic()
        self._last_flags = Flag(0)
        self._last_seq: int | None = None
        self.samples_written = 0
        self.gaps = 0

    def _open(self, name: str, columns: tuple[str, ...]) -> Any:
        f = open(self.dir / name, "w", newline="")  # noqa: SIM115 - stays open for the session, closed in close()
        self._files.append(f)
        w = csv.writer(f)
        w.writerow(columns)
        return w

    def add_sample(self, s: Sample, device_s: float, host_s: float | None) -> None:
        self._samples.writerow((s.seq, f"{device_s:.6f}", "" if host_s is None else f"{host_s:.6f}",
                                _num(s.needle_angle_deg, 2), _num(s.guide_angle_deg, 2), _num(s.depth_mm, 2),
                                _num(s.tip_depth_mm, 2), _num(s.pitch_deg, 2), _num(s.roll_deg, 2),
                                flags_text(s.flags)))
        self.samples_written += 1
        if self._last_seq is not None and (s.seq - self._last_seq) % 65536 != 1:
            self.gaps += 1
            self.add_event(device_s, "gap", (s.seq - self._last_seq - 1) % 65536)
        self._last_seq = s.seq
        for flag, kind in _EDGE_EVENTS.items():
            if flag in s.flags and flag not in self._last_flags:
                self.add_event(device_s, kind, 1)
        for flag, kind in _STATE_EVENTS.items():
            if (flag in s.flags) != (flag in self._last_flags):
                self.add_event(device_s, kind, int(flag in s.flags))
        self._last_flags = s.flags
        self._maybe_flush()

    def add_event(self, device_s: float, kind: str, value: float | int | str) -> None:
        self._events.writerow((f"{device_s:.6f}", kind, value))

    def add_truth(self, device_s: float, needle: float, guide: float, depth: float, tip: float, pitch: float,
                  roll: float) -> None:
        if self._truth is None:
            raise RuntimeError("this recording was opened without truth")
        self._truth.writerow((f"{device_s:.6f}", *(f"{v:.4f}" for v in (needle, guide, depth, tip, pitch, roll))))

    def _maybe_flush(self) -> None:
        now = time.monotonic()
        if now - self._last_flush >= self._flush_s:
            self.flush()
            self._last_flush = now

    def flush(self) -> None:
        for f in self._files:
            f.flush()

    def close(self, **extra: Any) -> None:
        if not self._files:
            return
        for f in self._files:
            f.flush()
            os.fsync(f.fileno())
            f.close()
        self._files = []
        self.session.update(extra, complete=True, samples=self.samples_written, gaps=self.gaps)
        _atomic_json(self.dir / "session.json", self.session)

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            # Keep every row that arrived; the session stays marked incomplete.
            self.flush()
            for f in self._files:
                f.close()
            self._files = []


@dataclass
class Recording:
    session: dict[str, Any]
    samples: dict[str, np.ndarray]  # column -> values; NaN where the device sent NA
    flags: list[Flag]
    events: list[tuple[float, str, str]]
    truth: dict[str, np.ndarray] | None


def _columns(path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    cols: dict[str, np.ndarray] = {}
    raw_flags: list[str] = []
    for i, name in enumerate(header):
        if name == "flags":
            raw_flags = [r[i] for r in body]
        else:
            cols[name] = np.array([float(r[i]) if r[i] != "" else np.nan for r in body])
    return cols, raw_flags


def load(directory: str | Path) -> Recording:
    d = Path(directory)
    session = json.loads((d / "session.json").read_text())
    samples, raw_flags = _columns(d / "samples.csv")
    with open(d / "events.csv", newline="") as f:
        events = [(float(r[0]), r[1], r[2]) for r in list(csv.reader(f))[1:]]
    truth = _columns(d / "truth.csv")[0] if (d / "truth.csv").exists() else None
    return Recording(session, samples, [parse_flags(t) for t in raw_flags], events, truth)
