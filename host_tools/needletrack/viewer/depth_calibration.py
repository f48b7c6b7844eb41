"""The depth-calibration flow with a depth jig, without the GUI: what the wizard shows and sends, step by step.

The probe fits the table itself (docs/protocol.md, CAL_BEGIN .. CAL_COMMIT); this class drives it through any
engine with ``command(opcode, *args, quiet=False) -> Future[Result]`` and ``snapshot()``, never waiting on a
future: :meth:`DepthCalibration.poll`, called on a timer, takes the answers that have come and sends what is due
next (READ_FIELD for the live field readout, about 5 times a second, while points are recorded).

The probe keeps a calibration open, with its points, until CAL_COMMIT, CAL_ABORT or a restart, whatever the
link does (firmware/control.py; nothing happens on a disconnection). So a lost link stops the flow and, once the
link is back, CAL_ABORT is sent; a point cannot be taken back either, only the whole calibration begun again.
"""

from __future__ import annotations

import enum
import json
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from needletrack.protocol import NA32, Opcode, Result, ResultCode
from needletrack.sim.feed import JIG_MM
from needletrack.viewer.snapshot import Phase, Snapshot

MIN_POINTS = 8  # what CAL_COMMIT needs (firmware/control.py MIN_CAL_POINTS)
MAX_POINTS = 255  # CAL_RESIDUAL's u8 index
DEPTH_RANGE_MM = (0.0, 200.0)  # what CAL_POINT takes
FIELD_POLL_S = 0.2  # READ_FIELD of both sensors, 5 times a second
STEADY_S = 0.5  # a field steady this long can be recorded
# Spread of each sensor's angle over STEADY_S that still counts as steady: a weak field at the far sensor
# wanders by up to 3 deg with the carriage still (the near one by under 1.2 deg: measured on the virtual probe).
STEADY_MDEG = 3000
MOVED_MDEG = 4000  # a new point's field must differ this much from the last point's: Enter pressed twice
MIN_SPACING_MM = 2.0  # plan depths this far apart move the field by MOVED_MDEG at least (<= 0.5 um/mdeg)
TOLERANCE_RMS_MM = 0.5
TOLERANCE_MAX_MM = 1.0
ABORT_RETRY_S = 2.0
READING_MAX_AGE_S = 1.0  # an older field readout is not shown (the probe may not have answered the last ones)


class CalibrationPlanError(ValueError):
    """A plan of jig depths the probe cannot calibrate with."""


def check_plan(depths_mm: Sequence[float]) -> tuple[float, ...]:
    """The plan as CAL_POINT will send it (to 0.01 mm); raises CalibrationPlanError naming what is wrong."""
    plan = tuple(round(float(d), 2) for d in depths_mm)
    if len(plan) < MIN_POINTS:
        raise CalibrationPlanError(f"{len(plan)} depths: the probe needs at least {MIN_POINTS}")
    if len(plan) > MAX_POINTS:
        raise CalibrationPlanError(f"{len(plan)} depths: at most {MAX_POINTS}")
    for i, d in enumerate(plan):
        if not math.isfinite(d) or not DEPTH_RANGE_MM[0] <= d <= DEPTH_RANGE_MM[1]:
            raise CalibrationPlanError(f"depth {i + 1} ({d:g} mm) is outside {DEPTH_RANGE_MM[0]:g} .. "
                                       f"{DEPTH_RANGE_MM[1]:g} mm")
        if i and d <= plan[i - 1]:
            raise CalibrationPlanError(f"depth {i + 1} ({d:g} mm) does not increase on {plan[i - 1]:g} mm")
        if i and d - plan[i - 1] < MIN_SPACING_MM:
            raise CalibrationPlanError(f"depth {i + 1} ({d:g} mm) is less than {MIN_SPACING_MM:g} mm from "
                                       f"{plan[i - 1]:g} mm")
    return plan


def parse_plan(text: str) -> tuple[float, ...]:
    """Depths typed as "0, 10, 20 ..." (commas or spaces), checked."""
    words = text.replace(",", " ").split()
    try:
        return check_plan([float(w) for w in words])
    except ValueError as e:
        if isinstance(e, CalibrationPlanError):
            raise
        raise CalibrationPlanError(f"not a list of depths in mm: {text!r}") from None


def load_plan(path: Path) -> tuple[float, ...]:
    """A plan from a JSON file holding a list of depths in mm, checked."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise CalibrationPlanError(f"{path}: {e}") from None
    if not isinstance(doc, list) or not all(isinstance(d, int | float) and not isinstance(d, bool) for d in doc):
        raise CalibrationPlanError(f"{path}: expected a JSON list of depths in mm")
    return check_plan(doc)


class Engine(Protocol):
    def command(self, opcode: Opcode, *args: int, quiet: bool = False) -> Future[Any]: ...

    def snapshot(self) -> Snapshot: ...


@dataclass(frozen=True)
class _Command:
    key: str
    opcode: Opcode
    args: tuple[int, ...]
    quiet: bool
    on: Callable[[Future[Any]], None]


class Stage(enum.Enum):
    INTRO = "explain"
    BEGINNING = "beginning"
    RECORDING = "recording points"
    COMMITTING = "fitting"
    RESIDUALS = "reading residuals"
    DONE = "written"
    CANCELLED = "cancelled"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Reading:
    t: float
    a_mdeg: int | None  # None: no valid field at that sensor
    b_mdeg: int | None

    @property
    def present(self) -> bool:
        return self.a_mdeg is not None or self.b_mdeg is not None


@dataclass(frozen=True)
class Point:
    depth_mm: float
    angle_mdeg: int  # what CAL_POINT answered: sensor A's angle, else B's
    sensor: str  # "A" or "B", whose angle that is
    field: Reading  # both sensors as last read before it


@dataclass(frozen=True)
class Residual:
    depth_mm: float
    residual_mm: float | None  # None: no sensor's fit used this point


@dataclass(frozen=True)
class Verdict:
    rms_mm: float
    max_mm: float
    ok: bool
    text: str


def verdict(residuals: Sequence[Residual]) -> Verdict:
    used = [r.residual_mm for r in residuals if r.residual_mm is not None]
    if not used:
        return Verdict(math.nan, math.nan, False, "no residuals: no point was used by the fit")
    rms = math.sqrt(sum(r * r for r in used) / len(used))
    worst = max(abs(r) for r in used)
    ok = rms <= TOLERANCE_RMS_MM and worst <= TOLERANCE_MAX_MM
    if ok:
        text = "Calibration written; within tolerance."
    else:
        text = (f"Calibration written, but outside tolerance (RMS {rms:.2f} mm, limit {TOLERANCE_RMS_MM:g}; "
                f"largest {worst:.2f} mm, limit {TOLERANCE_MAX_MM:g}): check the jig and the carriage, and "
                "repeat the calibration.")
    return Verdict(rms, worst, ok, text)


def refusal(opcode: Opcode, result: Result, plan_mm: float | None = None, calibrating: bool | None = None) -> str:
    """A refused command in words, its result code named."""
    code, value = result.code, result.value
    head = f"{opcode.name} refused ({code.name})"
    if code == ResultCode.NOT_PERMITTED:
        return f"{head}: the link is not bonded; pair with the probe and begin again"
    if opcode == Opcode.CAL_POINT and code == ResultCode.BAD_STATE:
        if calibrating is False:
            return f"{head}: the probe is no longer calibrating (restarted, or aborted elsewhere); begin again"
        return f"{head}: no field at either sensor; is the needle carriage in the guide?"
    if opcode == Opcode.CAL_POINT and code == ResultCode.OUT_OF_RANGE:
        return f"{head}: {plan_mm:g} mm is outside what the probe takes ({DEPTH_RANGE_MM[0]:g} .. " \
               f"{DEPTH_RANGE_MM[1]:g} mm)"
    if opcode == Opcode.CAL_COMMIT and code == ResultCode.BAD_STATE:
        extra = "" if value else " (or it is no longer calibrating: restarted, or aborted elsewhere)"
        return f"CAL_COMMIT refused: fewer than {MIN_POINTS} points; the probe holds {value}{extra}. " \
               "The old table is kept."
    if opcode == Opcode.CAL_COMMIT and code == ResultCode.OUT_OF_RANGE:
        return "CAL_COMMIT refused: the points do not fit the factory shape: check the jig (the depths typed, " \
               "and the carriage at each stop). The old table is kept."
    if opcode == Opcode.CAL_COMMIT and code == ResultCode.STORE_FAILED:
        return "CAL_COMMIT refused: the probe could not store the new table; the old table is kept."
    if opcode == Opcode.CAL_RESIDUAL and code == ResultCode.BAD_STATE:
        return f"{head}: no calibration committed since the probe started"
    return head


class FieldWatch:
    """The live field of both sensors: the latest reading, and whether it is present and steady."""

    def __init__(self) -> None:
        self.readings: deque[Reading] = deque(maxlen=64)

    def add(self, reading: Reading) -> None:
        self.readings.append(reading)

    def clear(self) -> None:
        self.readings.clear()

    @property
    def latest(self) -> Reading | None:
        return self.readings[-1] if self.readings else None

    def steady_for(self) -> float:
        """How long, up to the latest reading, every sensor that reads the field there has stayed within
        STEADY_MDEG (readings where a weak field dropped out at a sensor are skipped for that sensor)."""
        if not self.readings or not self.readings[-1].present:
            return 0.0
        newest = self.readings[-1]
        held = math.inf
        for pick in (lambda r: r.a_mdeg, lambda r: r.b_mdeg):
            first = pick(newest)
            if first is None:
                continue
            lo = hi = first
            since = newest.t
            for r in reversed(self.readings):
                v = pick(r)
                if v is None:
                    continue
                lo, hi = min(lo, v), max(hi, v)
                if hi - lo > STEADY_MDEG:
                    break
                since = r.t
            held = min(held, newest.t - since)
        return held

    def steady(self) -> bool:
        return self.steady_for() >= STEADY_S - 1e-3


def moved(a: Reading, b: Reading) -> bool:
    """Whether the field changed between two readings: the angle of a sensor that reads it in both by MOVED_MDEG
    (or, where no sensor reads it in both, the field has gone from one sensor to the other). A weak field that
    comes and goes at one sensor is not a move."""
    both = [(x, y) for x, y in ((a.a_mdeg, b.a_mdeg), (a.b_mdeg, b.b_mdeg)) if x is not None and y is not None]
    if not both:
        return a.present and b.present
    return any(abs(x - y) >= MOVED_MDEG for x, y in both)


class DepthCalibration:
    """The flow: begin, a point at each depth of the plan, fit and write, the residuals; cancel at any time.

    Read ``stage``, ``message`` (and ``error``: whether it reports a problem), ``field``, ``points``,
    ``residuals``, ``calibration_id`` and ``can_record`` after each :meth:`poll` to show the state.
    """

    def __init__(self, engine: Engine, plan: Sequence[float] = JIG_MM,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.clock = clock
        self.plan = check_plan(plan)
        self.stage = Stage.INTRO
        self.message = ""
        self.error = False
        self.field = FieldWatch()
        self.points: list[Point] = []
        self.residuals: list[Residual] = []
        self.calibration_id: int | None = None
        self.open_on_probe = False  # a CAL_BEGIN was answered OK and no COMMIT or ABORT since
        # One command at a time: the probe holds one command until it has answered it, and a second written
        # before that replaces the first (firmware/ble_link.py), which then goes unanswered.
        self._queue: deque[_Command] = deque()
        self._inflight: tuple[_Command, Future[Any]] | None = None
        self._last_poll = -1e9
        self._last_abort = -1e9
        self._poll_reading: dict[int, int | None] = {}
        self._poll_t = 0.0

    # -- what the GUI asks ------------------------------------------------------------------------------

    def set_plan(self, depths_mm: Sequence[float]) -> None:
        if self.stage is not Stage.INTRO:
            raise CalibrationPlanError("the plan is fixed once the calibration has begun")
        self.plan = check_plan(depths_mm)

    def link_ok(self, snap: Snapshot | None = None) -> bool:
        snap = snap or self.engine.snapshot()
        return snap.link.phase is Phase.STREAMING and not snap.signal_lost

    @property
    def next_depth_mm(self) -> float | None:
        return self.plan[len(self.points)] if len(self.points) < len(self.plan) else None

    def record_blocker(self) -> str | None:
        """Why Record is not available now, or None when it is."""
        if self.stage is not Stage.RECORDING:
            return "not recording points"
        if self.next_depth_mm is None:
            return "every depth of the plan is recorded: fit and write"
        if self._busy("point"):
            return "recording…"
        latest = self.reading
        if latest is None:
            return "waiting for the field readout from the probe"
        if not latest.present:
            return "no field: put the needle carriage in the guide"
        if not self.field.steady():
            return "hold the carriage still"
        if self.points and not moved(self.points[-1].field, latest):
            return f"the field has not changed since the last point: move the carriage to {self.next_depth_mm:g} mm"
        return None

    @property
    def can_record(self) -> bool:
        return self.record_blocker() is None

    @property
    def can_commit(self) -> bool:
        return self.stage is Stage.RECORDING and len(self.points) == len(self.plan) and not self._busy("point")

    def begin(self) -> None:
        """CAL_BEGIN: the probe forgets any points it held and starts recording (from the intro, or again)."""
        if self.stage not in (Stage.INTRO, Stage.RECORDING):
            return
        if not self.link_ok():
            self._say("connect to the probe first: it must be streaming", error=True)
            return
        self.points.clear()
        self.field.clear()
        self._drop("point")  # a point not sent yet: the CAL_BEGIN would clear it anyway
        self.stage = Stage.BEGINNING
        self._say("beginning the calibration…")
        self._send("begin", Opcode.CAL_BEGIN, on=self._on_begin)

    def restart(self) -> None:
        """Redo: the probe cannot drop one point, so every point goes and the calibration begins again."""
        self.begin()

    def record(self) -> None:
        if not self.can_record:
            return
        depth = self.next_depth_mm
        assert depth is not None
        reading = self.field.latest
        assert reading is not None
        self._send("point", Opcode.CAL_POINT, round(depth * 100),
                   on=lambda f: self._on_point(f, depth, reading))

    def commit(self) -> None:
        if not self.can_commit:
            return
        self.stage = Stage.COMMITTING
        self._say("fitting the table on the probe and writing it…")
        self._send("commit", Opcode.CAL_COMMIT, on=self._on_commit)

    def cancel(self) -> None:
        """Leave the flow; if the probe holds an open calibration, CAL_ABORT (the old table stays)."""
        if self.stage in (Stage.DONE, Stage.RESIDUALS, Stage.CANCELLED):
            return
        if self.stage is Stage.COMMITTING:
            return  # the commit is under way: its answer decides
        was_open = self.open_on_probe or self.stage is Stage.BEGINNING
        self.stage = Stage.CANCELLED
        self._drop("point")
        if was_open:
            self._say("cancelling: CAL_ABORT sent…")
            self._send("abort", Opcode.CAL_ABORT, on=self._on_abort)
        else:
            self._say("cancelled: nothing was sent to the probe; its table is unchanged")

    # -- the timer --------------------------------------------------------------------------------------

    def poll(self) -> None:
        """Take the answers that came, watch the link, and send the field readout when it is due."""
        now = self.clock()
        while self._inflight is not None and self._inflight[1].done():
            command, future = self._inflight
            self._inflight = None
            command.on(future)
            self._pump()
        active = self.stage in (Stage.BEGINNING, Stage.RECORDING, Stage.COMMITTING)
        if active and not self.link_ok():
            self._stop()
        if self.stage is Stage.RECORDING and not self._busy("field0") and not self._busy("field1") \
                and now - self._last_poll >= FIELD_POLL_S - 0.03:  # on a 100 ms timer: every other tick
            self._last_poll = now
            self._poll_t = now
            self._poll_reading = {}
            self._send("field0", Opcode.READ_FIELD, 0, quiet=True, on=lambda f: self._on_field(f, 0))
            self._send("field1", Opcode.READ_FIELD, 1, quiet=True, on=lambda f: self._on_field(f, 1))
        if self.stage in (Stage.STOPPED, Stage.CANCELLED) and self.open_on_probe and not self._busy("abort") \
                and now - self._last_abort >= ABORT_RETRY_S and self.link_ok():
            self._last_abort = now
            self._send("abort", Opcode.CAL_ABORT, on=self._on_abort)
        self._pump()

    @property
    def reading(self) -> Reading | None:
        """The latest field readout, None if there is none from the last READING_MAX_AGE_S."""
        latest = self.field.latest
        if latest is None or self.clock() - latest.t > READING_MAX_AGE_S:
            return None
        return latest

    # -- answers ----------------------------------------------------------------------------------------

    def _send(self, key: str, opcode: Opcode, *args: int, on: Callable[[Future[Any]], None],
              quiet: bool = False) -> None:
        self._queue.append(_Command(key, opcode, args, quiet, on))
        self._pump()

    def _pump(self) -> None:
        if self._inflight is None and self._queue:
            command = self._queue.popleft()
            self._inflight = (command, self.engine.command(command.opcode, *command.args, quiet=command.quiet))

    def _busy(self, key: str) -> bool:
        return (self._inflight is not None and self._inflight[0].key == key) or any(c.key == key for c in self._queue)

    def _drop(self, key: str) -> None:
        self._queue = deque(c for c in self._queue if c.key != key)

    def _say(self, text: str, error: bool = False) -> None:
        self.message = text
        self.error = error

    @staticmethod
    def _answer(future: Future[Any]) -> Result | str:
        e = future.exception()
        if e is not None:
            return f"no answer from the probe ({e})"
        result: Result = future.result()
        return result

    def _calibrating_on_probe(self) -> bool | None:
        state = self.engine.snapshot().link.device_state
        return None if state is None else state == "CALIBRATING"

    def _on_begin(self, future: Future[Any]) -> None:
        if self.stage is not Stage.BEGINNING:
            return
        answer = self._answer(future)
        if isinstance(answer, str):
            self.stage = Stage.INTRO
            self._say(f"CAL_BEGIN: {answer}", error=True)
            return
        if answer.code != ResultCode.OK:
            self.stage = Stage.INTRO
            self._say(refusal(Opcode.CAL_BEGIN, answer), error=True)
            return
        self.open_on_probe = True
        self.stage = Stage.RECORDING
        self._say(f"calibrating: move the carriage to {self.plan[0]:g} mm")

    def _on_field(self, future: Future[Any], sensor: int) -> None:
        answer = self._answer(future)
        value = answer.value if isinstance(answer, Result) and answer.code == ResultCode.OK else None
        self._poll_reading[sensor] = value
        if len(self._poll_reading) == 2 and self.stage is Stage.RECORDING:
            self.field.add(Reading(self._poll_t, self._poll_reading[0], self._poll_reading[1]))

    def _on_point(self, future: Future[Any], depth: float, reading: Reading) -> None:
        if self.stage is not Stage.RECORDING:
            return
        answer = self._answer(future)
        if isinstance(answer, str):
            self._say(f"CAL_POINT at {depth:g} mm: {answer}", error=True)
            return
        if answer.code != ResultCode.OK:
            self._say(refusal(Opcode.CAL_POINT, answer, depth, self._calibrating_on_probe()), error=True)
            return
        sensor = "A" if reading.a_mdeg is not None and (
            reading.b_mdeg is None or abs(answer.value - reading.a_mdeg) <= abs(answer.value - reading.b_mdeg)) \
            else "B"
        self.points.append(Point(depth, answer.value, sensor, reading))
        following = self.next_depth_mm
        if following is None:
            self._say(f"{len(self.points)} points recorded: fit and write the table")
        else:
            self._say(f"recorded {depth:g} mm; move the carriage to {following:g} mm")

    def _on_commit(self, future: Future[Any]) -> None:
        answer = self._answer(future)
        if isinstance(answer, str):
            # The probe may or may not have written the table: the next STATUS tells.
            self.stage = Stage.STOPPED
            self._say(f"CAL_COMMIT: {answer}. Whether the probe wrote the new table shows in its calibration "
                      "id (needletrack device config).", error=True)
            return
        if answer.code != ResultCode.OK:
            self.stage = Stage.RECORDING
            self._say(refusal(Opcode.CAL_COMMIT, answer), error=True)
            return
        self.open_on_probe = False
        self.calibration_id = answer.value
        self.stage = Stage.RESIDUALS
        self.residuals = []
        self._say(f"written: calibration {answer.value:04x}; reading the residuals…")
        self._next_residual()

    def _next_residual(self) -> None:
        i = len(self.residuals)
        if i >= len(self.points):
            self.stage = Stage.DONE
            v = verdict(self.residuals)
            self._say(f"{v.text} New calibration id {self.calibration_id:04x}.", error=not v.ok)
            return
        self._send("residual", Opcode.CAL_RESIDUAL, i, quiet=True, on=lambda f: self._on_residual(f, i))

    def _on_residual(self, future: Future[Any], i: int) -> None:
        answer = self._answer(future)
        if isinstance(answer, str) or answer.code != ResultCode.OK:
            self.stage = Stage.DONE
            why = answer if isinstance(answer, str) else refusal(Opcode.CAL_RESIDUAL, answer)
            self._say(f"Calibration written (id {self.calibration_id:04x}), but its residuals could not be read: "
                      f"{why}", error=True)
            return
        value = None if answer.value == NA32 else answer.value / 1000.0
        self.residuals.append(Residual(self.points[i].depth_mm, value))
        self._next_residual()

    def _on_abort(self, future: Future[Any]) -> None:
        answer = self._answer(future)
        if isinstance(answer, Result) and answer.code == ResultCode.OK:
            self.open_on_probe = False
            if self.stage is Stage.CANCELLED:
                self._say("Calibration cancelled: CAL_ABORT sent; the probe keeps its old table.")
            else:
                self._say(f"{self.message} Link back: CAL_ABORT sent; the probe keeps its old table.", error=True)
            return
        if self.stage is Stage.CANCELLED:
            self.stage = Stage.STOPPED
        why = answer if isinstance(answer, str) else answer.code.name
        self._say(f"CAL_ABORT not done ({why}): the probe stays in calibration, with its old table in use, until "
                  "the abort goes through (retried while this window is open) or it restarts.", error=True)

    def _stop(self) -> None:
        was = self.stage
        self.stage = Stage.STOPPED
        self._queue = deque(c for c in self._queue if c.key == "abort")
        snap = self.engine.snapshot()
        why = "the link to the probe was lost" if snap.link.phase is not Phase.STREAMING else \
            "NO SIGNAL: the needle data stopped"
        # CAL_ABORT is harmless on a probe that is not calibrating: sent whenever the probe may hold one open.
        self.open_on_probe = True
        if was is Stage.COMMITTING:
            self._say(f"Calibration stopped: {why} before the probe answered CAL_COMMIT. Whether it wrote the new "
                      "table shows in its calibration id (needletrack device config); if it did not, it stays in "
                      "calibration until CAL_ABORT, which this window sends once the link is back, or until it "
                      "restarts.", error=True)
        else:
            self._say(f"Calibration stopped: {why}. The probe does not end a calibration by itself: it stays in "
                      "calibration (its old table in use, nothing written) until CAL_ABORT, which this window "
                      "sends once the link is back, or until it restarts.", error=True)
