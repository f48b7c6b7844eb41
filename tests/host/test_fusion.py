"""The needle state at a frame's instant: interpolated between the samples around it, never invented."""

from __future__ import annotations

import pytest

from needletrack.fusion import NoGo, SampleHistory
from needletrack.protocol import Flag, Sample
from needletrack.receiver import Timed

NO_FLAGS = Flag(0)


def _timed(i: int, t: float, depth: float | None, flags: Flag = NO_FLAGS, tip: float | None = None) -> Timed:
    s = Sample(i, i * 5000, 40.0 + i * 0.01, 30.0, depth, tip if tip is not None else depth, 0.0, 0.0, flags)
    return Timed(s, t, t)


def _history(n: int = 100, period: float = 0.005, speed: float = 30.0) -> SampleHistory:
    h = SampleHistory()
    h.add([_timed(i, 10.0 + i * period, 5.0 + speed * i * period) for i in range(n)])
    return h


def test_the_state_between_two_samples_is_interpolated_at_the_instant():
    h = _history()
    s = h.state_at(10.1234)
    assert s is not None
    assert s.depth_mm == pytest.approx(5.0 + 30.0 * 0.1234)  # not the newest sample, not the nearest
    assert s.age_s == 0.0 and s.guide_angle_deg == 30.0
    assert s.needle_angle_deg == pytest.approx(40.0 + 0.1234 / 0.005 * 0.01)


def test_past_the_newest_sample_the_newest_is_held_with_its_age():
    h = _history()
    newest = h.newest_s
    assert newest is not None
    s = h.state_at(newest + 0.03)
    assert s is not None and s.depth_mm == pytest.approx(5.0 + 30.0 * 99 * 0.005)
    assert s.age_s == pytest.approx(0.03)
    assert not h.covers(newest + 0.001) and h.covers(newest)


def test_before_any_sample_there_is_no_state():
    assert SampleHistory().state_at(1.0) is None
    assert _history().state_at(9.0) is None


def test_an_unknown_value_on_either_side_stays_unknown():
    h = SampleHistory()
    h.add([_timed(0, 1.0, 10.0), _timed(1, 1.005, None, Flag.DEPTH_INVALID), _timed(2, 1.010, 11.0)])
    for t in (1.002, 1.007):
        s = h.state_at(t)
        assert s is not None and s.depth_mm is None and s.tip_depth_mm is None
    s = h.state_at(1.0)  # exactly on a valid sample: its value
    assert s is not None and s.depth_mm == 10.0


def test_a_gap_in_the_stream_is_not_bridged():
    h = SampleHistory()
    h.add([_timed(0, 1.0, 10.0), _timed(1, 1.5, 20.0)])  # the link was down for half a second
    s = h.state_at(1.25)
    assert s is not None and s.depth_mm == 10.0 and s.age_s == pytest.approx(0.25)


def test_a_twitch_between_frames_is_seen_by_the_next_frame_and_not_carried_as_a_flag():
    h = SampleHistory()
    h.add([_timed(i, 1.0 + i * 0.005, 10.0, Flag.TWITCH if i == 3 else Flag(0)) for i in range(20)])
    s = h.state_at(1.05)
    assert s is not None and s.twitch_age_s == pytest.approx(0.035)
    assert Flag.TWITCH not in s.flags
    before = h.state_at(1.01)
    assert before is not None and before.twitch_age_s is None


def test_no_go_and_flags_come_with_the_state():
    h = SampleHistory()
    h.add([_timed(0, 1.0, 10.0, Flag.NOGO_NEAR), _timed(1, 1.01, 10.2, Flag.NOGO_NEAR | Flag.MOVING)])
    s = h.state_at(1.008, NoGo(12.0, 3.0))
    assert s is not None and s.nogo_depth_mm == 12.0 and s.nogo_margin_mm == 3.0
    assert Flag.MOVING in s.flags and Flag.NOGO_NEAR in s.flags


def test_the_history_keeps_the_newest_samples_when_full():
    h = SampleHistory(capacity=50)
    h.add([_timed(i, i * 0.01, float(i)) for i in range(175)])
    assert 50 <= len(h) <= 100
    s = h.state_at(1.735)
    assert s is not None and s.depth_mm == pytest.approx(173.5)
    assert h.state_at(0.5) is None  # forgotten, not made up
