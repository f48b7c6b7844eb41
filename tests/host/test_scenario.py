"""Scenario files: the shipped library loads, and every kind of bad field is named in the error."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from needletrack.sim import depth_jig, feed, scenario
from needletrack.sim.scenario import ScenarioError

GOOD = {
    "duration_s": 10.0,
    "seed": 1,
    "guide_angle_deg": 30.0,
    "needle_length_mm": 60.0,
    "attitude": [[0, 0, 0, 0], [4, 10, -20, 5], [10, 10, -20, 5]],
    "depth": [[0, 0.0], [5, 40.0]],
    "twitches": [[3.0, 0.4]],
}


def test_every_library_scenario_loads_and_covers_its_duration():
    names = scenario.library()
    for required in ("still_probe", "slow_fan", "fast_sweep", "dry_needling", "sensor_unplugged",
                     "stray_magnet", "long_session_20min", "depth_jig"):
        assert required in names
    for name in names:
        sc = scenario.load(name)
        assert sc.attitude[-1, 0] <= sc.duration_s and sc.depth[-1, 0] <= sc.duration_s


def test_depth_jig_holds_at_every_factory_stop_in_turn_and_repeats_seamlessly():
    sc = scenario.load("depth_jig")
    cycle = depth_jig.JigCycle()
    assert sc.to_json()["depth"] == depth_jig.scenario(cycle)["depth"]  # the file is the generator's output
    assert sc.duration_s == pytest.approx(cycle.period_s)
    assert not sc.attitude[:, 1:].any() and sc.imperfections.tremor_deg == 0  # the probe still
    for i, (start, end) in enumerate(cycle.holds()):
        assert end - start == pytest.approx(3.0)
        t = np.linspace(start, end, 7)
        np.testing.assert_allclose(sc.depth_at(t), feed.JIG_MM[i])
        assert cycle.stop_at((start + end) / 2) == i and cycle.stop_at(start - 0.1) is None
    assert [start for start, _ in cycle.holds()] == sorted(start for start, _ in cycle.holds())
    assert sc.depth_at(sc.duration_s) == sc.depth_at(0.0) == feed.JIG_MM[0]  # the next cycle starts there
    assert cycle.until_stop(0, sc.duration_s - 1.0) == pytest.approx(1.0)


def test_a_jig_cycle_with_a_saturated_stretch_has_no_field_then():
    cycle = depth_jig.JigCycle(hold_s=1.0, speed_mm_s=50.0, saturated_s=1.0)
    sc = scenario.parse(depth_jig.scenario(cycle, "fast_jig"))
    assert sc.duration_s == pytest.approx(cycle.period_s)
    assert [(f.kind, f.sensor) for f in sc.faults] == [("saturate", "hall_a"), ("saturate", "hall_b")]
    for f in sc.faults:
        assert (f.t_s, f.until_s) == (pytest.approx(cycle.saturated_at_s), pytest.approx(cycle.period_s))
    assert cycle.saturated(cycle.period_s - 0.5) and not cycle.saturated(0.5)
    assert cycle.stop_at(cycle.period_s - 0.5) is None


def test_long_session_crosses_the_device_tick_wrap():
    assert scenario.load("long_session_20min").duration_s > (1 << 30) / 1e6


def test_truth_is_linear_between_keyframes_and_held_outside():
    sc = scenario.parse(GOOD)
    np.testing.assert_allclose(sc.attitude_at(2.0), [5, -10, 2.5])
    np.testing.assert_allclose(sc.attitude_at(7.0), [10, -20, 5])
    assert sc.depth_at(2.5) == pytest.approx(20.0)
    assert sc.depth_at(9.0) == pytest.approx(40.0)


def test_roundtrip_through_json():
    sc = scenario.parse(GOOD)
    again = scenario.parse(json.loads(json.dumps(sc.to_json())))
    np.testing.assert_array_equal(again.attitude, sc.attitude)
    assert again.imperfections == sc.imperfections


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (("duration_s",), -1, "duration_s"),
        (("seed",), 1.5, "seed"),
        (("guide_angle_deg",), 95, "guide_angle_deg"),
        (("attitude", 1, 0), 0.0, "attitude[1][0]"),
        (("attitude", 2, 2), 120, "attitude[2][2]"),
        (("attitude", 1), [1, 2, 3], "attitude[1]"),
        (("depth", 1, 1), "deep", "depth[1][1]"),
        (("depth", 1, 0), 11.0, "depth[1][0]"),
        (("twitches", 0, 1), -0.1, "twitches[0][1]"),
        (("imperfections",), {"gyro_bias_dps": [1, 2]}, "imperfections.gyro_bias_dps"),
        (("imperfections",), {"no_such": 1}, "imperfections.no_such"),
        (("faults",), [{"kind": "melt", "sensor": "imu", "t_s": 1}], "faults[0].kind"),
        (("faults",), [{"kind": "unplug", "sensor": "gps", "t_s": 1}], "faults[0].sensor"),
        (("faults",), [{"kind": "unplug", "sensor": "imu", "t_s": 1, "when": 2}], "faults[0].when"),
        (("faults",), [{"kind": "stray_field", "sensor": "hall_a", "t_s": 1}], "faults[0].field_mt"),
        (("faults",), [{"kind": "stray_field", "sensor": "hall_a", "t_s": 1, "field_mt": [1, 2]}],
         "faults[0].field_mt"),
        (("faults",), [{"kind": "stray_field", "sensor": "hall_a", "t_s": 1, "field_mt": [0, 0, 300]}],
         "faults[0].field_mt"),
        (("faults",), [{"kind": "stray_field", "sensor": "imu", "t_s": 1, "field_mt": [1, 0, 0]}],
         "faults[0].sensor"),
        (("faults",), [{"kind": "brownout", "sensor": "imu", "t_s": 1, "field_mt": [1, 0, 0]}],
         "faults[0].field_mt"),
        (("clock_start_s",), -1.0, "clock_start_s"),
        (("clock_start_s",), 1073.741824, "clock_start_s"),
        (("bogus",), 1, "bogus"),
    ],
)
def test_bad_field_is_named(path, value, named):
    doc = copy.deepcopy(GOOD)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ScenarioError, match=named.replace("[", r"\[").replace("]", r"\]")):
        scenario.parse(doc)


def test_brownout_and_stray_field_faults_and_the_clock_start_roundtrip():
    doc = dict(GOOD, clock_start_s=1070.5, faults=[
        {"kind": "brownout", "sensor": "imu", "t_s": 2.0, "until_s": 2.0},
        {"kind": "stray_field", "sensor": "hall_b", "t_s": 3.0, "until_s": 4.0, "field_mt": [3, 0, -2]},
    ])
    sc = scenario.parse(doc)
    assert sc.clock_start_s == 1070.5
    assert sc.faults[0] == scenario.Fault("brownout", "imu", 2.0, 2.0)  # zero length: a reset glitch
    assert sc.faults[1].field_mt == (3.0, 0.0, -2.0)
    again = scenario.parse(json.loads(json.dumps(sc.to_json())))
    assert again.faults == sc.faults and again.clock_start_s == sc.clock_start_s
    assert "field_mt" not in sc.to_json()["faults"][0]
    assert "clock_start_s" not in scenario.parse(GOOD).to_json()


def test_missing_required_field_is_named():
    doc = dict(GOOD)
    del doc["depth"]
    with pytest.raises(ScenarioError, match="depth: missing"):
        scenario.parse(doc)


def test_unknown_name_lists_the_library(tmp_path):
    with pytest.raises(ScenarioError, match="still_probe"):
        scenario.load("no_such_scenario")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ScenarioError, match="not valid JSON"):
        scenario.load(bad)
