"""The virtual probe end to end: the unchanged firmware on MicroPython, emulated chips, decoded samples."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from needletrack import recording
from needletrack.cli import main
from needletrack.protocol import Flag
from needletrack.sim import runner, scenario

SHORT = {
    "name": "short_session",
    "duration_s": 6.0,
    "seed": 5,
    "guide_angle_deg": 30.0,
    "needle_length_mm": 60.0,
    "attitude": [[0, 0, 0, 0], [3, 0, 0, 0], [4.5, 0, 10, -5], [6, 0, 10, -5]],
    "depth": [[0, 5.0], [2, 5.0], [5, 45.0], [6, 45.0]],
    "imperfections": {"gyro_bias_dps": [0.5, -0.5, 0.3]},
}


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("vp")
    sc = scenario.parse(SHORT)
    summary = runner.run(sc, base / "work", record=base / "rec")
    return sc, summary, recording.load(base / "rec"), base


def test_the_firmware_boots_and_streams_every_sample(short_run):
    sc, summary, rec, _ = short_run
    assert summary.banner.startswith("NeedleTrack ")
    assert "imu=ok hall_a=ok hall_b=ok" in summary.banner
    assert summary.lost == 0
    t = rec.samples["device_time_s"]
    assert summary.samples == len(t)
    assert t[0] < 0.05 and t[-1] > sc.duration_s - 0.05  # boot to power-off
    assert abs(len(t) - 1 - 200 * (t[-1] - t[0])) <= 1.5  # 200 Hz in device time, nothing lost between
    seq = rec.samples["seq"].astype(int)
    assert np.all(np.diff(seq) % 65536 == 1)
    assert np.all(np.diff(t) > 0)
    assert np.mean(np.diff(t)) == pytest.approx(0.005, rel=0.01)


def test_recorded_values_reproduce_the_scenario_truth(short_run):
    _, summary, rec, _ = short_run
    assert rec.truth is not None
    settled = np.array([Flag.SETTLING not in f for f in rec.flags])
    err_angle = rec.samples["needle_angle_deg"][settled] - rec.truth["needle_angle_deg"][settled]
    err_depth = rec.samples["depth_mm"] - rec.truth["depth_mm"]
    assert np.sqrt(np.mean(err_angle**2)) < 0.8
    assert np.sqrt(np.mean(err_depth**2)) < 0.2
    assert summary.errors["depth_mm"] < 0.2


def test_the_same_seed_gives_byte_identical_samples(short_run, tmp_path):
    sc, _, _, base = short_run
    runner.run(sc, tmp_path / "work", record=tmp_path / "rec")
    for name in ("samples.csv", "events.csv", "truth.csv"):
        assert (tmp_path / "rec" / name).read_bytes() == (base / "rec" / name).read_bytes(), name


def test_an_unplugged_needle_sensor_is_flagged_and_recovers(tmp_path):
    doc = dict(SHORT, depth=[[0, 20.0], [6, 20.0]],
               faults=[{"kind": "unplug", "sensor": "hall_a", "t_s": 2.0, "until_s": 3.0}])
    runner.run(scenario.parse(doc), tmp_path / "work", record=tmp_path / "rec")
    rec = recording.load(tmp_path / "rec")
    t = rec.samples["device_time_s"]
    during = (t > 2.05) & (t < 3.0)
    after = t > 4.0
    assert all(Flag.HALL_FAULT in f and Flag.DEPTH_INVALID in f for f, d in zip(rec.flags, during, strict=True) if d)
    assert np.all(np.isnan(rec.samples["depth_mm"][during]))
    assert not any(Flag.HALL_FAULT in f for f, a in zip(rec.flags, after, strict=True) if a)
    assert np.nanmax(np.abs(rec.samples["depth_mm"][after] - 20.0)) < 0.5
    kinds = [(k, v) for _, k, v in rec.events]
    assert ("hall_fault", "1") in kinds and ("hall_fault", "0") in kinds


def test_cli_runs_a_scenario_file_and_refuses_a_bad_one(tmp_path):
    import json

    good = tmp_path / "s.json"
    good.write_text(json.dumps(dict(SHORT, duration_s=2.0, depth=[[0, 10.0]], attitude=[[0, 0, 0, 0]])))
    res = CliRunner().invoke(main, ["sim", "run", str(good), "--record", str(tmp_path / "rec")])
    assert res.exit_code == 0, res.output
    assert "RMS error, depth" in res.output and "recording:" in res.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(dict(SHORT, guide_angle_deg=95)))
    res = CliRunner().invoke(main, ["sim", "run", str(bad)])
    assert res.exit_code != 0
    assert "guide_angle_deg" in res.output
    res = CliRunner().invoke(main, ["sim", "run", str(good), "--record", str(tmp_path / "rec")])
    assert res.exit_code != 0 and "never overwritten" in res.output


@pytest.mark.slow
def test_twenty_minute_session_across_the_device_tick_wrap(tmp_path):
    sc = scenario.load("long_session_20min")
    summary = runner.run(sc, tmp_path / "work", record=tmp_path / "rec")
    rec = recording.load(tmp_path / "rec")
    t = rec.samples["device_time_s"]
    assert t[-1] > (1 << 30) / 1e6 + 60  # well past the wrap at 1073.74 s
    assert np.all(np.diff(t) > 0) and np.max(np.diff(t)) < 0.0075
    assert summary.lost == 0
    assert summary.errors["depth_mm"] < 0.2
    twitches = [w for w, k, _ in rec.events if k == "twitch"]
    assert len(twitches) == 1 and abs(twitches[0] - 1073.9) < 0.1  # right across the wrap
