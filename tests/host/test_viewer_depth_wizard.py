"""The depth-calibration wizard: its flow against a scripted probe (fast, every branch), then the real wizard driven
with qtbot against a served virtual probe on a depth jig (a fast cycle: 1 s at each stop), as an operator would."""

from __future__ import annotations

import json
import time
from concurrent.futures import Future
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QPushButton

from needletrack.link.base import LinkError
from needletrack.protocol import NA32, Opcode, Result, ResultCode, Status
from needletrack.sim import depth_jig, scenario, serve
from needletrack.viewer import theme as th
from needletrack.viewer.depth_calibration import (
    MOVED_MDEG,
    STEADY_MDEG,
    CalibrationPlanError,
    DepthCalibration,
    FieldWatch,
    Reading,
    Residual,
    Stage,
    load_plan,
    parse_plan,
    verdict,
)
from needletrack.viewer.depth_wizard import DepthWizard, open_depth_wizard
from needletrack.viewer.engine import LiveEngine
from needletrack.viewer.snapshot import LinkInfo, Phase, Snapshot
from tests.host import HOST_TEST_CPU
from tests.host.viewer_support import pump_until  # first: offscreen Qt

JIG = (0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 75.0)

# -- against a scripted probe -------------------------------------------------------------------------------


class ScriptedProbe:
    """Answers commands at once as firmware/control.py would, from a field the test sets; the link can drop."""

    def __init__(self) -> None:
        self.field: list[int | None] = [-90_000, None]
        self.phase = Phase.STREAMING
        self.signal_lost = False
        self.calibrating = False
        self.points: list[int] = []
        self.sent: list[tuple[Opcode, tuple[int, ...]]] = []
        self.commit_answer: Result | None = None
        self.residuals: list[int] | None = None

    def snapshot(self) -> Snapshot:
        link = LinkInfo("scripted", phase=self.phase, device_state="CALIBRATING" if self.calibrating else "RUNNING")
        return Snapshot(t=time.monotonic(), link=link, signal_lost=self.signal_lost)

    def command(self, opcode: Opcode, *args: int, quiet: bool = False) -> Future[Any]:
        self.sent.append((opcode, args))
        f: Future[Any] = Future()
        if self.phase is not Phase.STREAMING:
            f.set_exception(LinkError("not connected"))
            return f
        code, value = self._answer(opcode, *args)
        f.set_result(Result(int(opcode), 1, code, value))
        return f

    def _answer(self, opcode: Opcode, *args: int) -> tuple[ResultCode, int]:
        if opcode == Opcode.CAL_BEGIN:
            self.calibrating, self.points = True, []
        elif opcode == Opcode.CAL_ABORT:
            self.calibrating = False
        elif opcode == Opcode.READ_FIELD:
            v = self.field[args[0]]
            return (ResultCode.BAD_STATE, 0) if v is None else (ResultCode.OK, v)
        elif opcode == Opcode.CAL_POINT:
            if not self.calibrating or self.field == [None, None]:
                return ResultCode.BAD_STATE, 0
            self.points.append(args[0])
            return ResultCode.OK, next(v for v in self.field if v is not None)
        elif opcode == Opcode.CAL_COMMIT:
            if self.commit_answer is not None:
                return self.commit_answer.code, self.commit_answer.value
            if len(self.points) < 8:
                return ResultCode.BAD_STATE, len(self.points)
            self.calibrating = False
            self.residuals = [40 * (i - 3) for i in range(len(self.points))]
            self.residuals[-1] = NA32
            return ResultCode.OK, 0xBEEF
        elif opcode == Opcode.CAL_RESIDUAL:
            if self.residuals is None:
                return ResultCode.BAD_STATE, 0
            if args[0] >= len(self.residuals):
                return ResultCode.OUT_OF_RANGE, 0
            return ResultCode.OK, self.residuals[args[0]]
        return ResultCode.OK, 0


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _hold(flow: DepthCalibration, clock: Clock, seconds: float) -> None:
    end = clock.t + seconds
    while clock.t < end:
        clock.t += 0.1
        flow.poll()


def _scripted(plan: tuple[float, ...] = JIG) -> tuple[ScriptedProbe, DepthCalibration, Clock]:
    probe, clock = ScriptedProbe(), Clock()
    flow = DepthCalibration(probe, plan, clock=clock)
    flow.begin()
    flow.poll()
    assert flow.stage is Stage.RECORDING and probe.calibrating
    return probe, flow, clock


def _record_all(probe: ScriptedProbe, flow: DepthCalibration, clock: Clock) -> None:
    for i, mm in enumerate(flow.plan):
        probe.field = [-120_000 + 10_000 * i, None]
        _hold(flow, clock, 1.0)
        assert flow.can_record, flow.record_blocker()
        flow.record()
        flow.poll()
        assert len(flow.points) == i + 1 and flow.points[-1].depth_mm == mm


def test_plans_are_checked_typed_or_loaded(tmp_path):
    assert parse_plan("0, 10 20,30 40 50 60 75") == JIG
    for bad, why in (("0 10 20", "at least 8"), ("0 10 20 30 40 50 60 60", "does not increase"),
                     ("0 10 20 30 40 50 60 61.5", "less than 2 mm"),
                     ("0 10 20 30 40 50 60 250", "outside"), ("0 10 twenty", "not a list")):
        with pytest.raises(CalibrationPlanError, match=why):
            parse_plan(bad)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps([2.5, 7.5, 12.5, 17.5, 22.5, 27.5, 32.5, 37.5, 42.5]))
    assert load_plan(path)[0] == 2.5 and len(load_plan(path)) == 9
    path.write_text(json.dumps({"depths": [1, 2]}))
    with pytest.raises(CalibrationPlanError, match="JSON list"):
        load_plan(path)


def test_steadiness_needs_half_a_second_within_the_noise_and_a_point_needs_a_moved_field():
    watch = FieldWatch()
    for k in range(4):  # 0.6 s of readings, but the last one jumps
        watch.add(Reading(k * 0.2, 10_000 + (STEADY_MDEG + 1 if k == 3 else 0), None))
    assert not watch.steady()
    for k in range(4, 7):
        watch.add(Reading(k * 0.2, 11_500 + 300 * (k % 2), None))
    assert watch.steady() and watch.steady_for() == pytest.approx(0.6)
    watch.add(Reading(1.4, None, None))
    assert not watch.steady() and watch.steady_for() == 0.0
    # Every sensor that reads the field must be steady: a far sensor's angle that hardly moves does not hide
    # the near one's; a weak field dropping out now and then at one sensor does not break the other's hold.
    watch.clear()
    for k in range(4):
        watch.add(Reading(k * 0.2, 5_000 + 1_500 * k, -40_000 + 100 * k))
    assert not watch.steady()
    watch.clear()
    for k in range(4):
        watch.add(Reading(k * 0.2, None if k == 1 else 5_000 + 500 * k, -40_000 + 100 * k))
    assert watch.steady()

    probe, flow, clock = _scripted()
    probe.field = [-60_000, None]
    _hold(flow, clock, 1.0)
    flow.record()
    flow.poll()
    _hold(flow, clock, 1.0)  # Enter pressed again without moving: refused
    assert not flow.can_record and "has not changed" in (flow.record_blocker() or "")
    probe.field = [-60_000, 30_000]  # a weak field that comes and goes at the other sensor is no move
    _hold(flow, clock, 1.0)
    assert not flow.can_record
    probe.field = [-60_000 + MOVED_MDEG, None]
    _hold(flow, clock, 1.0)
    assert flow.can_record


def test_a_full_calibration_reads_every_residual_and_judges_them():
    probe, flow, clock = _scripted()
    assert not flow.can_commit
    _record_all(probe, flow, clock)
    assert flow.can_commit and not flow.can_record
    flow.commit()
    for _ in range(12):
        flow.poll()
    assert flow.stage is Stage.DONE and flow.calibration_id == 0xBEEF
    assert [r.residual_mm for r in flow.residuals] == [-0.12, -0.08, -0.04, 0.0, 0.04, 0.08, 0.12, None]
    assert "within tolerance" in flow.message and "beef" in flow.message and not flow.error
    assert [op for op, _ in probe.sent].count(Opcode.CAL_RESIDUAL) == 8
    bad = verdict([Residual(0.0, 0.2), Residual(10.0, -1.2)])
    assert not bad.ok and "repeat" in bad.text and bad.max_mm == pytest.approx(1.2)


@pytest.mark.parametrize(("answer", "words"), [
    (Result(8, 1, ResultCode.BAD_STATE, 5), "CAL_COMMIT refused: fewer than 8 points; the probe holds 5"),
    (Result(8, 1, ResultCode.OUT_OF_RANGE, 0), "the points do not fit the factory shape: check the jig"),
    (Result(8, 1, ResultCode.STORE_FAILED, 0), "could not store"),
])
def test_a_refused_commit_says_why_and_keeps_the_points_and_the_old_table(answer, words):
    probe, flow, clock = _scripted()
    _record_all(probe, flow, clock)
    probe.commit_answer = answer
    flow.commit()
    flow.poll()
    assert flow.stage is Stage.RECORDING and flow.error and words in flow.message
    assert "old table is kept" in flow.message and len(flow.points) == 8
    flow.cancel()
    flow.poll()
    assert probe.sent[-1][0] == Opcode.CAL_ABORT and not probe.calibrating
    assert flow.stage is Stage.CANCELLED and "keeps its old table" in flow.message


def test_a_lost_link_stops_the_flow_and_the_abort_goes_out_when_it_is_back():
    probe, flow, clock = _scripted()
    probe.field = [-60_000, None]
    _hold(flow, clock, 1.0)
    flow.record()
    probe.phase = Phase.RECONNECTING
    _hold(flow, clock, 0.5)
    assert flow.stage is Stage.STOPPED and flow.error
    assert "link to the probe was lost" in flow.message and "stays in calibration" in flow.message
    assert probe.calibrating  # nothing reached it
    probe.phase = Phase.STREAMING
    _hold(flow, clock, 0.3)
    assert not probe.calibrating and probe.sent[-1][0] == Opcode.CAL_ABORT
    assert "CAL_ABORT sent; the probe keeps its old table" in flow.message
    # NO SIGNAL with the link up stops it too; the abort goes out at once.
    probe, flow, clock = _scripted()
    probe.signal_lost = True
    _hold(flow, clock, 0.2)
    assert flow.stage is Stage.STOPPED and "NO SIGNAL" in flow.message
    probe.signal_lost = False
    _hold(flow, clock, 0.2)
    assert not probe.calibrating


def test_the_wizard_disables_record_without_a_field_and_records_with_enter(qtbot):
    probe = ScriptedProbe()
    probe.field = [None, None]
    wizard = DepthWizard(probe, th.Theme(0.7))
    qtbot.addWidget(wizard)
    wizard.show()
    qtbot.waitExposed(wizard)
    wizard.begin_button.click()
    qtbot.waitUntil(lambda: wizard.pages.currentWidget() is wizard.record_page, timeout=1000)
    qtbot.wait(900)
    assert not wizard.record_button.isEnabled()
    assert wizard.field_a.text() == "no field" and wizard.steady.text() == "NO FIELD"
    qtbot.keyClick(wizard, Qt.Key.Key_Return)
    assert not any(op == Opcode.CAL_POINT for op, _ in probe.sent)
    probe.field = [None, 52_346]
    qtbot.waitUntil(wizard.record_button.isEnabled, timeout=2000)
    assert wizard.field_b.text() == "+52.35°" and wizard.steady.text() == "STEADY"
    qtbot.keyClick(wizard, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: wizard.table.rowCount() == 1, timeout=1000)
    assert [wizard.table.item(0, j).text() for j in range(3)] == ["0", "+52.35°", "B"]
    assert "10 mm" in wizard.target.text()
    wizard.reject()  # Escape / Cancel
    qtbot.waitUntil(lambda: "keeps its old table" in wizard.end_text.text(), timeout=1000)
    assert wizard.pages.currentWidget() is wizard.end_page and not probe.calibrating


# -- against the virtual probe on a depth jig ---------------------------------------------------------------

# Record needs 0.5 s of steady readings at 5 a second: it comes 0.6 - 0.8 s into a hold (a stop missed is
# recorded a cycle later).
CYCLE = depth_jig.JigCycle(hold_s=1.5, speed_mm_s=50.0, return_mm_s=75.0, saturated_s=1.0)


async def _advertising_began(bridge: Any) -> float | None:
    return bridge.advertising_began()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def jig(tmp_path_factory, qapp):
    """A served probe on the fast jig cycle, and a live engine streaming from it."""
    doc = depth_jig.scenario(CYCLE, "wizard_jig")
    with serve.served(scenario.parse(doc), tmp_path_factory.mktemp("wizard-jig"), cpu=HOST_TEST_CPU) as probe:
        deadline = time.monotonic() + 15
        while probe.radio.call(_advertising_began) is None:
            assert time.monotonic() < deadline, probe.console.output_tail(1500)
            time.sleep(0.05)
        engine = LiveEngine(probe.transport).start()
        try:
            engine.connect().result(20)
            pump_until(lambda: engine.snapshot().link.phase is Phase.STREAMING and not engine.snapshot().signal_lost,
                       10, "streaming from the jig probe")
            engine.pair().result(10)
            yield probe, engine
        finally:
            engine.close()


def _now(probe: Any) -> float:
    return depth_jig.scenario_time(probe.console, CYCLE.period_s)


def _status(engine: LiveEngine, qtbot, ask: bool = True) -> Status:
    """A fresh STATUS record: asked for, or (while a wizard sends commands: the probe takes one at a time) the
    next one the probe sends by itself, every 2 s."""
    before = engine.status
    if ask:
        assert engine.command(Opcode.READ_STATUS, quiet=True).result(5).code == ResultCode.OK
    qtbot.waitUntil(lambda: engine.status is not before, timeout=3000)
    assert engine.status is not None
    return engine.status


def _open(engine: LiveEngine, qtbot) -> DepthWizard:
    wizard = open_depth_wizard(engine, th.Theme(0.7))
    qtbot.addWidget(wizard)
    qtbot.waitExposed(wizard)
    return wizard


def _begin(wizard: DepthWizard, qtbot) -> None:
    qtbot.waitUntil(wizard.begin_button.isEnabled, timeout=3000)
    qtbot.mouseClick(wizard.begin_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: wizard.flow.stage is Stage.RECORDING, timeout=3000)


def _reading_at(probe: Any, wizard: DepthWizard) -> float:
    """The scenario time of the wizard's latest field readout (what the operator sees lags the needle)."""
    reading = wizard.flow.reading
    return -1.0 if reading is None else _now(probe) - (time.monotonic() - reading.t)


def _record_at_stops(probe: Any, wizard: DepthWizard, qtbot, stops: list[int]) -> None:
    """For each stop in turn: when the needle holds there and the wizard lets Record, press Enter."""
    for k, i in enumerate(stops):
        start, end = CYCLE.holds()[i]
        # Enter with time left in the hold for the CAL_POINT to reach the probe (behind a field reading that may
        # be in flight, and seen here at the window's next poll): else at the next cycle.
        qtbot.waitUntil(lambda start=start, end=end: start <= _now(probe) <= end - 0.35
                        and wizard.record_button.isEnabled() and _reading_at(probe, wizard) >= start,
                        timeout=round((CYCLE.period_s + 2) * 1000))
        pressed = _now(probe) - start
        qtbot.keyClick(wizard, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda k=k: len(wizard.flow.points) == k + 1, timeout=2000)
        answered = _now(probe) - start
        print(f"stop {i}: Enter {pressed:.2f} s into the hold, answered at {answered:.2f} s")
        assert answered <= CYCLE.hold_s, "the point was taken after the needle left the stop"


def test_a_calibration_on_the_jig_is_written_and_the_probe_then_reads_the_stops(jig, qtbot):
    probe, engine = jig
    old = _status(engine, qtbot).calibration_id
    wizard = _open(engine, qtbot)
    _begin(wizard, qtbot)
    # The needle comes to the first stop through a stretch where both sensors are saturated: no field, no Record.
    qtbot.waitUntil(lambda: CYCLE.saturated(_now(probe), 0.45), timeout=round((CYCLE.period_s + 2) * 1000))
    assert not wizard.record_button.isEnabled() and wizard.steady.text() == "NO FIELD"
    assert wizard.field_a.text() == wizard.field_b.text() == "no field"
    _record_at_stops(probe, wizard, qtbot, list(range(len(JIG))))
    assert [p.depth_mm for p in wizard.flow.points] == list(JIG)
    assert wizard.commit_button.isEnabled()
    qtbot.mouseClick(wizard.commit_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: wizard.flow.stage is Stage.DONE, timeout=5000)
    flow = wizard.flow
    assert wizard.pages.currentWidget() is wizard.result_page and not flow.error, flow.message
    assert len(flow.residuals) == 8 and all(r.residual_mm is not None for r in flow.residuals)
    v = verdict(flow.residuals)
    print(f"residuals (mm): {[r.residual_mm for r in flow.residuals]}, RMS {v.rms_mm:.3f}, max {v.max_mm:.3f}")
    assert v.rms_mm < 0.3 and v.ok
    assert "within tolerance" in wizard.verdict.text() and f"{flow.calibration_id:04x}" in wizard.figures.text()
    assert wizard.residual_table.rowCount() == 8 and len(wizard.residual_curve.getData()[0]) == 8
    status = _status(engine, qtbot)
    assert status.calibration_id == flow.calibration_id != old and status.state.name == "RUNNING"
    # The probe now reads the jig's stops with the new table: the next one, after the last, is the first.
    qtbot.waitUntil(lambda: CYCLE.stop_at(_now(probe), 0.4) == 0, timeout=round(CYCLE.period_s * 1000))
    state = engine.snapshot().state
    assert state is not None and state.depth_mm is not None and state.age_s < 0.2
    assert state.depth_mm == pytest.approx(JIG[0], abs=0.5)
    wizard.close()


def test_wrong_depths_are_refused_at_commit_and_a_cancelled_wizard_keeps_the_old_table(jig, qtbot):
    probe, engine = jig
    old = _status(engine, qtbot).calibration_id
    wizard = _open(engine, qtbot)
    wizard.plan_edit.clear()
    qtbot.keyClicks(wizard.plan_edit, "0 5 10 15 20 25 30 35")  # half the jig's spacing
    assert wizard.flow.plan == (0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0)
    _begin(wizard, qtbot)
    now = _now(probe)
    first = min(range(len(JIG)), key=lambda i: CYCLE.until_stop(i, now, 0.1))
    _record_at_stops(probe, wizard, qtbot, [(first + k) % len(JIG) for k in range(len(JIG))])
    qtbot.mouseClick(wizard.commit_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: wizard.flow.error, timeout=5000)
    assert "CAL_COMMIT refused: the points do not fit the factory shape: check the jig" in wizard.message.text()
    assert wizard.flow.stage is Stage.RECORDING and wizard.pages.currentWidget() is wizard.record_page
    status = _status(engine, qtbot, ask=False)
    assert status.calibration_id == old and status.state.name == "CALIBRATING"  # the probe still holds the points
    # Cancelled: CAL_ABORT, and the probe keeps its table.
    cancel = next(b for b in wizard.record_page.findChildren(QPushButton) if b.text() == "Cancel")
    qtbot.mouseClick(cancel, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "keeps its old table" in wizard.end_text.text(), timeout=3000)
    assert wizard.pages.currentWidget() is wizard.end_page and not wizard.flow.open_on_probe
    status = _status(engine, qtbot)
    assert status.calibration_id == old and status.state.name == "RUNNING"
    wizard.close()


