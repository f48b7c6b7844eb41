"""The viewer's decisions, without Qt: which alerts show, when they sound, what their tones are, when NO SIGNAL
shows and goes, the strip charts' data, link quality, and commands answered by token."""

from __future__ import annotations

import asyncio
import io
import struct
import wave
from dataclasses import replace

import numpy as np
import pytest

from needletrack.link.base import LinkError
from needletrack.needle_state import NO_FLAGS, NeedleState
from needletrack.protocol import Config, Flag, Opcode, ResultCode, Sample
from needletrack.receiver import Timed
from needletrack.viewer.alerts import AlertKind, Priority, active_alerts
from needletrack.viewer.chart_buffer import ChartBuffer
from needletrack.viewer.commands import CommandChannel
from needletrack.viewer.cues import CUES, SAMPLE_RATE, CueSchedule, wav_bytes
from needletrack.viewer.link_quality import LinkQuality
from needletrack.viewer.procedure import Procedure, SetupState, check_config, check_sample_detent
from needletrack.viewer.signal_watch import SignalWatch

NOGO = 17.0


def state(tip: float | None = 8.0, flags: Flag = NO_FLAGS, nogo: float | None = NOGO) -> NeedleState:
    depth = None if tip is None else tip * 2
    return NeedleState(depth, tip, 30.5, 30.0, flags, 0.01, nogo, 5.0)


def kinds(alerts) -> list[AlertKind]:
    return [a.kind for a in alerts]


def test_a_clear_needle_raises_no_alert():
    assert active_alerts(state(8.0), False, Flag(0), 80) == []


def test_no_go_near_is_amber_and_reached_is_red_with_the_distance():
    near = active_alerts(state(14.5), False, Flag(0), 80)
    assert kinds(near) == [AlertKind.NOGO_NEAR] and near[0].priority is Priority.MEDIUM
    assert "2.5 mm" in near[0].detail and near[0].background == "#ffb000"
    reached = active_alerts(state(17.8), False, Flag(0), 80)
    assert kinds(reached) == [AlertKind.NOGO_REACHED] and reached[0].priority is Priority.HIGH
    assert "0.8 mm past" in reached[0].detail and reached[0].background == "#d0021b"


def test_the_devices_own_no_go_flags_count_without_a_depth_marked_on_the_host():
    assert kinds(active_alerts(state(10.0, Flag.NOGO_REACHED, nogo=None), False, Flag(0), None)) == [
        AlertKind.NOGO_REACHED]
    assert kinds(active_alerts(state(10.0, nogo=None), False, Flag.NOGO_NEAR, None)) == [AlertKind.NOGO_NEAR]


def test_lost_signal_hides_what_the_old_samples_said_but_keeps_the_battery():
    s = state(17.8, Flag.HALL_FAULT | Flag.UNCALIBRATED)
    alerts = active_alerts(s, True, Flag.HALL_FAULT, 10, no_signal_detail="link lost")
    assert kinds(alerts) == [AlertKind.NO_SIGNAL, AlertKind.LOW_BATTERY]
    assert alerts[0].detail == "link lost" and alerts[1].title == "LOW BATTERY 10 %"


def test_silence_before_connecting_is_not_an_alarm():
    assert active_alerts(None, True, Flag(0), None, watching=False) == []
    assert kinds(active_alerts(None, True, Flag(0), None)) == [AlertKind.NO_SIGNAL]


def test_faults_and_calibration_each_have_their_alert_most_urgent_first():
    flags = Flag.UNCALIBRATED | Flag.IMU_FAULT | Flag.HALL_FAULT | Flag.DEPTH_INVALID | Flag.LOW_BATTERY
    alerts = active_alerts(state(14.5), False, flags, None)
    assert kinds(alerts) == [AlertKind.IMU_FAULT, AlertKind.HALL_FAULT, AlertKind.NOGO_NEAR,
                             AlertKind.UNCALIBRATED, AlertKind.LOW_BATTERY]  # depth invalid: the fault says it
    assert [a.priority for a in alerts] == sorted((a.priority for a in alerts), reverse=True)
    assert kinds(active_alerts(state(None), False, Flag.DEPTH_INVALID, None)) == [AlertKind.DEPTH_INVALID]


def test_low_battery_from_the_reported_charge_or_the_flag():
    assert kinds(active_alerts(state(), False, Flag(0), 15)) == [AlertKind.LOW_BATTERY]
    assert active_alerts(state(), False, Flag(0), 16) == []
    low = active_alerts(state(), False, Flag.LOW_BATTERY, None)
    assert kinds(low) == [AlertKind.LOW_BATTERY] and low[0].title == "LOW BATTERY"


def test_a_new_alert_sounds_at_once_then_repeats_at_its_pace():
    cues = CueSchedule()
    high = active_alerts(None, True, Flag(0), None)
    assert cues.due(high, 0.0) is Priority.HIGH
    assert cues.due(high, 1.0) is None
    assert cues.due(high, CUES[Priority.HIGH].repeat_s) is Priority.HIGH
    # A medium alert joining a high one does not interrupt it: the high one speaks for both.
    both = high + active_alerts(state(), False, Flag(0), 5)
    assert cues.due(both, 3.5) is None
    assert cues.due([], 4.0) is None
    assert cues.due(high, 4.1) is Priority.HIGH  # over, then back: new again


def test_a_medium_alert_alone_sounds_medium():
    cues = CueSchedule()
    near = active_alerts(state(14.5), False, Flag(0), None)
    assert cues.due(near, 0.0) is Priority.MEDIUM
    assert cues.due(near, CUES[Priority.MEDIUM].repeat_s - 0.1) is None
    assert cues.due(near, CUES[Priority.MEDIUM].repeat_s) is Priority.MEDIUM


@pytest.mark.parametrize("priority", list(Priority))
def test_the_cue_is_a_valid_wav_of_its_pulses(priority):
    cue = CUES[priority]
    with wave.open(io.BytesIO(wav_bytes(cue))) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SAMPLE_RATE)
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(float)
    assert len(pcm) / SAMPLE_RATE == pytest.approx(cue.duration_s, abs=0.002)
    assert 0.5 * 32767 < np.abs(pcm).max() <= 32767
    window = round(0.005 * SAMPLE_RATE)
    envelope = np.convolve(np.abs(pcm), np.ones(window) / window, "same")
    loud = envelope > 0.25 * envelope.max()
    assert int(np.count_nonzero(np.diff(loud.astype(int)) == 1)) + int(loud[0]) == cue.pulses
    spectrum = np.abs(np.fft.rfft(pcm))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / len(pcm)
    assert peak_hz == pytest.approx(cue.freq_hz, rel=0.02)


def test_a_short_link_drop_shows_for_a_moment_then_goes_once_data_is_back():
    w = SignalWatch(min_show_s=1.0)
    assert not w.arrived(10.0) and not w.lost(10.01, stale=False)
    w.link_lost(10.05)
    w.link_lost(10.05)  # reported again: the same outage
    assert w.lost(10.06, stale=False) and w.outages == 1
    assert w.arrived(10.15)  # back after 0.1 s
    assert w.lost(10.9, stale=False)  # still within the moment it is shown for
    assert not w.lost(11.06, stale=False)
    assert w.lost(12.0, stale=True)  # stale is lost, whatever the record says


def test_a_pause_in_the_data_longer_than_stale_is_an_outage_too():
    w = SignalWatch(stale_after_s=0.1, min_show_s=1.0)
    w.arrived(1.0)
    assert not w.arrived(1.09)
    assert w.arrived(1.5)
    assert w.outage is not None and w.outage.cause == "gap" and w.outage.start_s == pytest.approx(1.19)
    assert w.lost(2.0, stale=False) and not w.lost(2.2, stale=False)


def test_a_link_still_down_stays_lost():
    w = SignalWatch()
    w.arrived(0.0)
    w.link_lost(0.5)
    assert w.lost(100.0, stale=False)


def _timed(t: float, seq: int, depth: float | None, flags: Flag = NO_FLAGS) -> Timed:
    s = Sample(seq, 0, 30.0, 30.0, depth, None if depth is None else depth / 2, 0.0, 0.0, flags)
    return Timed(s, t, t)


def test_the_chart_keeps_one_point_a_step_the_window_and_each_event_once():
    buf = ChartBuffer(window_s=2.0, step_s=0.01)
    batch = [_timed(i * 0.001, i, 10.0 + i * 0.001) for i in range(5000)]  # 5 s at 1000/s
    batch[3000] = _timed(3.0, 3000, 13.0, Flag.TWITCH)
    batch[3001] = _timed(3.001, 3001, 13.001, Flag.TWITCH)  # the same twitch, still flagged
    batch[4000] = _timed(4.0, 4000, 14.0, Flag.PASS)
    buf.add(batch)
    data = buf.window(5.0)
    assert data.t[0] >= 3.0 and data.t[-1] == pytest.approx(4.999, abs=0.011)
    assert np.all(np.diff(data.t) > 0.005) and 199 <= len(data.t) <= 201
    assert list(data.twitches) == [3.0] and list(data.passes) == [4.0]
    assert np.allclose(data.tip_depth_mm, data.depth_mm / 2)
    assert len(buf.window(100.0).t) == 0


def test_the_chart_breaks_its_line_at_an_outage_and_keeps_unknown_values_unknown():
    buf = ChartBuffer(window_s=10.0)
    buf.add([_timed(0.0, 0, 10.0), _timed(0.1, 1, 11.0)])
    buf.gap()
    buf.add([_timed(2.0, 2, None)])
    data = buf.window(2.0)
    assert np.isnan(data.depth_mm[2]) and np.isnan(data.depth_mm[3]) and data.depth_mm[1] == 11.0


def test_the_chart_buffer_runs_for_long_without_growing():
    buf = ChartBuffer(window_s=1.0, step_s=0.01)
    for k in range(50):
        buf.add([_timed(k + i * 0.01, i, 1.0) for i in range(100)])
    assert buf._data.shape[0] == 2 * buf.capacity
    assert len(buf.window(50.0).t) in (100, 101)


def test_link_quality_is_the_share_of_samples_that_arrived_recently():
    q = LinkQuality(span_s=5.0, every_s=0.25)
    assert q.quality() is None
    for i in range(41):  # 10 s: 200/s, the first 5 s losing 10 %
        t = i * 0.25
        lost = min(t, 5.0) * 20
        q.update(t, int(t * 200 - lost), int(lost))
    assert q.quality() == pytest.approx(1.0)
    q.update(10.5, 2000 + 40, 100 + 10)
    assert 0.95 < q.quality() < 1.0


class _Link:
    """Answers each command with the RESULT it is told to, through the subscription, as a probe does."""

    def __init__(self, answer: ResultCode | None) -> None:
        self.answer = answer
        self.callback = None
        self.sent: list[bytes] = []

    async def subscribe(self, uuid, callback):
        self.callback = callback

    async def write_control(self, command: bytes, *, response: bool = True) -> None:
        self.sent.append(command)
        if self.answer is None:
            return
        op, token = command[0], command[1]
        loop = asyncio.get_running_loop()
        # A status record first, then an answer to another token, then the right one.
        loop.call_soon(self.callback, struct.pack("<BBBBHHHHHHI", 1, 1, 1, 55, 3900, 0, 0, 200, 0, 0, 9))
        loop.call_soon(self.callback, struct.pack("<BBBBi", 2, op, (token + 1) & 0xFF, 0, 0))
        loop.call_soon(self.callback, struct.pack("<BBBBi", 2, op, token, int(self.answer), 7))


async def _send(link: _Link, timeout: float = 1.0):
    statuses = []
    ch = CommandChannel(on_status=statuses.append)
    await ch.attach(link)
    result = await ch.send(link, Opcode.SET_GUIDE_ANGLE, 4500, timeout=timeout)
    return result, statuses


def test_a_command_gets_the_result_with_its_own_token():
    link = _Link(ResultCode.OUT_OF_RANGE)
    result, statuses = asyncio.run(_send(link))
    assert result.code is ResultCode.OUT_OF_RANGE and result.token == link.sent[0][1] and result.value == 7
    assert statuses and statuses[0].battery_pct == 55


def test_a_command_without_an_answer_fails_with_a_link_error():
    with pytest.raises(LinkError, match="no answer to SET_GUIDE_ANGLE"):
        asyncio.run(_send(_Link(None), timeout=0.05))


def test_a_lost_link_fails_the_waiting_command_at_once():
    async def go():
        link = _Link(None)
        ch = CommandChannel()
        await ch.attach(link)
        task = asyncio.create_task(ch.send(link, Opcode.TARE, timeout=10.0))
        await asyncio.sleep(0.01)
        ch.detach()
        return await task

    with pytest.raises(LinkError, match="lost"):
        asyncio.run(go())


def test_stale_needle_state_from_the_device_flag_alone_is_handled_by_the_caller():
    # The device's STALE flag makes the engine call the signal lost; alerts trust the caller's judgement.
    s = replace(state(14.5), flags=Flag.STALE)
    assert kinds(active_alerts(s, True, Flag.STALE, None)) == [AlertKind.NO_SIGNAL]


def test_setup_read_back_different_from_the_procedure_is_a_mismatch_in_words():
    wanted = Procedure(30.0, 50.0)
    same = Config(30.0, 50.0, None, 5.0, 200, 0, 0, 0.0)
    assert check_config(wanted, same).state is SetupState.CONFIRMED
    other = check_config(wanted, Config(45.0, 60.0, None, 5.0, 200, 0, 0, 0.0))
    assert other.state is SetupState.MISMATCH and other.hides_needle
    assert "guide detent is 45°" in other.problem and "needle length is 60 mm" in other.problem
    assert check_config(None, same).state is SetupState.NOT_SET  # nothing chosen yet: nothing to compare


def test_a_confirmed_setup_turns_into_a_mismatch_when_samples_come_with_another_detent():
    confirmed = check_config(Procedure(30.0, 50.0), Config(30.0, 50.0, None, 5.0, 200, 0, 0, 0.0))
    assert check_sample_detent(confirmed, 30.0) is confirmed
    moved = check_sample_detent(confirmed, 20.0)
    assert moved.state is SetupState.MISMATCH and "20°" in moved.problem
    alerts = active_alerts(None, True, Flag(0), None, setup=moved)  # a configuration fact: shown while lost too
    assert [a.kind for a in alerts] == [AlertKind.NO_SIGNAL, AlertKind.SETUP_MISMATCH]
    assert alerts[1].priority is Priority.HIGH
    assert [a.kind for a in active_alerts(None, True, Flag(0), None, watching=False, setup=moved)] == []


class _SlowProbe(_Link):
    """Holds one command at a time, as the probe's control characteristic does: a write before the answer
    overwrites the command under way, which is then never answered."""

    def __init__(self) -> None:
        super().__init__(ResultCode.OK)
        self.holding: bytes | None = None

    async def write_control(self, command: bytes, *, response: bool = True) -> None:
        self.sent.append(command)
        self.holding = command
        asyncio.get_running_loop().call_later(0.02, self._answer)

    def _answer(self) -> None:
        if self.holding is not None:
            op, token = self.holding[0], self.holding[1]
            self.holding = None
            self.callback(struct.pack("<BBBBi", 2, op, token, 0, 0))


def test_commands_sent_together_go_one_at_a_time_and_all_are_answered():
    async def go():
        link = _SlowProbe()
        ch = CommandChannel()
        await ch.attach(link)
        results = await asyncio.gather(*(ch.send(link, Opcode.READ_STATUS, timeout=1.0) for _ in range(3)))
        return link, results

    link, results = asyncio.run(go())
    assert [r.token for r in results] == [c[1] for c in link.sent] and len(set(r.token for r in results)) == 3
