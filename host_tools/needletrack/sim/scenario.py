"""Scenario files for the virtual probe: what the probe and needle do, and how imperfect the sensors are.

A scenario is JSON (docs/scenarios.md). Loading validates every field and names the first bad one, e.g.
``ScenarioError: attitude[2][0]: keyframe times must increase (1.0 after 2.0)``. Truth between keyframes is
linear in time, per angle and for depth; before the first keyframe it holds the first value, after the last
it holds the last.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

SENSORS = ("imu", "hall_a", "hall_b")
FAULT_KINDS = ("unplug", "i2c_errors", "stuck", "saturate", "brownout", "stray_field")
HALL_SENSORS = ("hall_a", "hall_b")
TICK_PERIOD_S = (1 << 30) / 1e6  # the device tick wraps after this (docs/protocol.md, tick30)


class ScenarioError(ValueError):
    """A scenario file that does not follow the format; the message names the field."""


@dataclass(frozen=True)
class Imperfections:
    accel_noise_ug_rthz: float = 70.0  # LSM6DSOX typical, +-4 g (datasheet: 70 ug/sqrt(Hz) high-performance)
    gyro_noise_mdps_rthz: float = 3.8  # LSM6DSOX typical rate noise density
    gyro_bias_dps: tuple[float, float, float] = (0.0, 0.0, 0.0)
    accel_bias_mg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    temperature_c: float = 25.0
    temperature_drift_c_per_min: float = 0.0
    hall_noise_ut: float = 0.0  # added to the TMAG5273's own noise model, per axis, RMS
    stray_field_mt: tuple[float, float, float] = (0.0, 0.0, 0.0)
    stray_field_from_s: float = 0.0
    tremor_deg: float = 0.0  # hand tremor amplitude (each angle), sinusoid sum around tremor_hz
    tremor_hz: float = 8.0


@dataclass(frozen=True)
class Fault:
    kind: str
    sensor: str
    t_s: float
    until_s: float
    field_mt: tuple[float, float, float] | None = None  # stray_field only: the extra field, in the chip's axes

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "sensor": self.sensor, "t_s": self.t_s, "until_s": self.until_s}
        if self.field_mt is not None:
            out["field_mt"] = list(self.field_mt)
        return out


@dataclass(frozen=True)
class Scenario:
    name: str
    duration_s: float
    seed: int
    guide_angle_deg: float
    needle_length_mm: float
    attitude: np.ndarray  # (n, 4): t_s, yaw_deg, pitch_deg, roll_deg
    depth: np.ndarray  # (m, 2): t_s, depth_mm
    twitches: np.ndarray  # (k, 2): t_s, amplitude_g
    imperfections: Imperfections = field(default_factory=Imperfections)
    faults: tuple[Fault, ...] = ()
    description: str = ""
    nogo_depth_mm: float | None = None
    clock_start_s: float = 0.0  # the device clock at scenario start (power-on): near TICK_PERIOD_S to meet the wrap

    def attitude_at(self, t_s: np.ndarray | float) -> np.ndarray:
        """True (yaw, pitch, roll) in degrees at t_s, linear between keyframes; shape (..., 3)."""
        t = np.asarray(t_s, dtype=float)
        k = self.attitude
        return np.stack([np.interp(t, k[:, 0], k[:, i]) for i in (1, 2, 3)], axis=-1)

    def depth_at(self, t_s: np.ndarray | float) -> np.ndarray:
        """True needle depth beyond the guide exit in mm at t_s, linear between keyframes."""
        return np.interp(np.asarray(t_s, dtype=float), self.depth[:, 0], self.depth[:, 1])

    def to_json(self) -> dict[str, Any]:
        imp = self.imperfections
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "duration_s": self.duration_s,
            "seed": self.seed,
            "guide_angle_deg": self.guide_angle_deg,
            "needle_length_mm": self.needle_length_mm,
            "attitude": self.attitude.tolist(),
            "depth": self.depth.tolist(),
            "twitches": self.twitches.tolist(),
            "imperfections": {k: (list(v) if isinstance(v, tuple) else v) for k, v in imp.__dict__.items()},
            "faults": [f.to_json() for f in self.faults],
        }
        if self.nogo_depth_mm is not None:
            out["nogo_depth_mm"] = self.nogo_depth_mm
        if self.clock_start_s:
            out["clock_start_s"] = self.clock_start_s
        return out


def _number(obj: Any, where: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    if isinstance(obj, bool) or not isinstance(obj, int | float) or not math.isfinite(obj):
        raise ScenarioError(f"{where}: expected a number, got {obj!r}")
    if not lo <= obj <= hi:
        raise ScenarioError(f"{where}: {obj} is outside {lo} .. {hi}")
    return float(obj)


def _keyframes(obj: Any, where: str, width: int, limits: list[tuple[float, float]], duration: float,
               required: bool) -> np.ndarray:
    if obj is None:
        if required:
            raise ScenarioError(f"{where}: missing")
        return np.zeros((0, width))
    if not isinstance(obj, list) or (required and not obj):
        raise ScenarioError(f"{where}: expected a non-empty list of [t_s, ...] keyframes")
    rows: list[list[float]] = []
    for i, row in enumerate(obj):
        if not isinstance(row, list) or len(row) != width:
            raise ScenarioError(f"{where}[{i}]: expected {width} numbers, got {row!r}")
        vals = [_number(v, f"{where}[{i}][{j}]", *limits[j]) for j, v in enumerate(row)]
        if vals[0] > duration:
            raise ScenarioError(f"{where}[{i}][0]: time {vals[0]} is after duration_s {duration}")
        if rows and vals[0] <= rows[-1][0]:
            raise ScenarioError(f"{where}[{i}][0]: keyframe times must increase ({vals[0]} after {rows[-1][0]})")
        rows.append(vals)
    return np.array(rows, dtype=float).reshape(-1, width)


def _triple(obj: Any, where: str) -> tuple[float, float, float]:
    if not isinstance(obj, list) or len(obj) != 3:
        raise ScenarioError(f"{where}: expected [x, y, z], got {obj!r}")
    return (_number(obj[0], f"{where}[0]"), _number(obj[1], f"{where}[1]"), _number(obj[2], f"{where}[2]"))


def _imperfections(obj: Any) -> Imperfections:
    if obj is None:
        return Imperfections()
    if not isinstance(obj, dict):
        raise ScenarioError("imperfections: expected an object")
    known = Imperfections.__dataclass_fields__
    values: dict[str, Any] = {}
    for key, v in obj.items():
        where = f"imperfections.{key}"
        if key not in known:
            raise ScenarioError(f"{where}: unknown field (known: {', '.join(known)})")
        if isinstance(getattr(Imperfections, key), tuple):
            values[key] = _triple(v, where)
        else:
            values[key] = _number(v, where, -100.0 if "temperature" in key else 0.0, 1e4)
    return Imperfections(**values)


def _faults(obj: Any, duration: float) -> tuple[Fault, ...]:
    if obj is None:
        return ()
    if not isinstance(obj, list):
        raise ScenarioError("faults: expected a list")
    out = []
    for i, f in enumerate(obj):
        where = f"faults[{i}]"
        if not isinstance(f, dict):
            raise ScenarioError(f"{where}: expected an object")
        kind, sensor = f.get("kind"), f.get("sensor")
        if kind not in FAULT_KINDS:
            raise ScenarioError(f"{where}.kind: {kind!r} is not one of {', '.join(FAULT_KINDS)}")
        if sensor not in SENSORS:
            raise ScenarioError(f"{where}.sensor: {sensor!r} is not one of {', '.join(SENSORS)}")
        for key in f:
            if key not in ("kind", "sensor", "t_s", "until_s", "field_mt"):
                raise ScenarioError(f"{where}.{key}: unknown field")
        t = _number(f.get("t_s"), f"{where}.t_s", 0.0, duration)
        until = _number(f.get("until_s", duration), f"{where}.until_s", t, math.inf)
        field_mt = None
        if kind == "stray_field":
            if sensor not in HALL_SENSORS:
                raise ScenarioError(f"{where}.sensor: a stray field acts on {' or '.join(HALL_SENSORS)}, not {sensor}")
            if "field_mt" not in f:
                raise ScenarioError(f"{where}.field_mt: missing (the stray field [x, y, z] in mT)")
            field_mt = _triple(f["field_mt"], f"{where}.field_mt")
            if max(abs(v) for v in field_mt) > 200.0:
                raise ScenarioError(f"{where}.field_mt: {list(field_mt)} is beyond +-200 mT")
        elif "field_mt" in f:
            raise ScenarioError(f"{where}.field_mt: only a stray_field fault has a field")
        out.append(Fault(kind, sensor, t, until, field_mt))
    return tuple(out)


def parse(doc: Any, name: str = "scenario") -> Scenario:
    if not isinstance(doc, dict):
        raise ScenarioError("a scenario is a JSON object")
    known = {"name", "description", "duration_s", "seed", "guide_angle_deg", "needle_length_mm", "attitude",
             "depth", "twitches", "imperfections", "faults", "nogo_depth_mm", "clock_start_s"}
    for key in doc:
        if key not in known:
            raise ScenarioError(f"{key}: unknown field")
    for key in ("duration_s", "seed", "guide_angle_deg", "needle_length_mm", "attitude", "depth"):
        if key not in doc:
            raise ScenarioError(f"{key}: missing")
    duration = _number(doc["duration_s"], "duration_s", 0.001, 24 * 3600)
    seed = doc["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ScenarioError(f"seed: expected a non-negative integer, got {seed!r}")
    guide = _number(doc["guide_angle_deg"], "guide_angle_deg", 10.0, 80.0)
    needle = _number(doc["needle_length_mm"], "needle_length_mm", 10.0, 200.0)
    attitude = _keyframes(doc["attitude"], "attitude", 4,
                          [(0, duration), (-180, 180), (-89, 89), (-180, 180)], duration, True)
    depth = _keyframes(doc["depth"], "depth", 2, [(0, duration), (-5, needle)], duration, True)
    twitches = _keyframes(doc.get("twitches"), "twitches", 2, [(0, duration), (0, 16)], duration, False)
    nogo = doc.get("nogo_depth_mm")
    return Scenario(
        name=str(doc.get("name", name)),
        description=str(doc.get("description", "")),
        duration_s=duration,
        seed=seed,
        guide_angle_deg=guide,
        needle_length_mm=needle,
        attitude=attitude,
        depth=depth,
        twitches=twitches,
        imperfections=_imperfections(doc.get("imperfections")),
        faults=_faults(doc.get("faults"), duration),
        nogo_depth_mm=None if nogo is None else _number(nogo, "nogo_depth_mm", 1.0, 200.0),
        clock_start_s=_clock_start(doc.get("clock_start_s", 0.0)),
    )


def _clock_start(obj: Any) -> float:
    v = _number(obj, "clock_start_s", 0.0, TICK_PERIOD_S)
    if v >= TICK_PERIOD_S:
        raise ScenarioError(f"clock_start_s: {v} is not below the tick period {TICK_PERIOD_S} s")
    return v


def library() -> list[str]:
    """Names of the scenarios shipped with the package."""
    return sorted(p.name.removesuffix(".json") for p in resources.files("needletrack.scenarios").iterdir()
                  if p.name.endswith(".json"))


def load(name_or_path: str | Path) -> Scenario:
    """A scenario by library name (e.g. ``dry_needling``) or by path to a JSON file."""
    path = Path(name_or_path)
    if path.suffix == ".json" or path.exists():
        try:
            text = path.read_text()
        except OSError as e:
            raise ScenarioError(f"{path}: {e.strerror}") from None
        label = path.stem
    else:
        res = resources.files("needletrack.scenarios") / f"{name_or_path}.json"
        if not res.is_file():
            raise ScenarioError(f"no scenario named {name_or_path!r}; the library has: {', '.join(library())}")
        text, label = res.read_text(), str(name_or_path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ScenarioError(f"{label}: not valid JSON: {e}") from None
    return parse(doc, label)
