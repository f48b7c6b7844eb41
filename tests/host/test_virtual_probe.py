"""The virtual probe end to end: the unchanged firmware on MicroPython, emulated chips, decoded samples.

These check what the firmware computes and streams, so they run with ``cpu="ideal"`` (compute, bus and flash
free, and runs repeatable to the byte); tests/host/test_board_model.py checks what a board charges."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from needletrack import paths, recording
from needletrack.cli import main
from needletrack.protocol import Flag, Sample
from needletrack.sim import feed, runner, scenario

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
    summary = runner.run(sc, base / "work", record=base / "rec", cpu="ideal")
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
    runner.run(sc, tmp_path / "work", record=tmp_path / "rec", cpu="ideal")
    for name in ("samples.csv", "events.csv", "truth.csv"):
        assert (tmp_path / "rec" / name).read_bytes() == (base / "rec" / name).read_bytes(), name


def test_an_unplugged_needle_sensor_is_flagged_and_recovers(tmp_path):
    doc = dict(SHORT, depth=[[0, 20.0], [6, 20.0]],
               faults=[{"kind": "unplug", "sensor": "hall_a", "t_s": 2.0, "until_s": 3.0}])
    runner.run(scenario.parse(doc), tmp_path / "work", record=tmp_path / "rec", cpu="ideal")
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


def _run_kept(doc: dict, work) -> tuple[runner.RunSummary, list[Sample], np.ndarray]:
    samples: list[Sample] = []
    times: list[np.ndarray] = []

    def keep(batch: list[Sample], device_s: np.ndarray) -> None:
        samples.extend(batch)
        times.append(device_s)

    summary = runner.run(scenario.parse(doc), work, on_samples=keep, cpu="ideal")
    return summary, samples, np.concatenate(times)


def test_brownouts_reset_the_chips_and_a_stray_field_adds_to_the_hall_readings(tmp_path):
    doc = dict(SHORT, duration_s=4.0, attitude=[[0, 0, 0, 0]], depth=[[0, 20.0], [4, 20.0]], faults=[
        {"kind": "brownout", "sensor": "hall_a", "t_s": 0.5, "until_s": 0.5},  # a reset glitch
        {"kind": "brownout", "sensor": "imu", "t_s": 1.0, "until_s": 1.2},  # a dip: silent, then reset
        {"kind": "stray_field", "sensor": "hall_a", "t_s": 2.5, "until_s": 3.0, "field_mt": [8.0, 0.0, -8.0]},
    ])
    summary, samples, t = _run_kept(doc, tmp_path / "work")
    faults = [line for line in summary.log if line.startswith("# fault")]
    assert faults == ["# fault brownout hall_a pulse", "# fault brownout imu on", "# fault brownout imu off",
                      "# fault stray_field hall_a on", "# fault stray_field hall_a off"]
    imu_fault = np.array([Flag.IMU_FAULT in x.flags for x in samples])
    depth = np.array([np.nan if x.depth_mm is None else x.depth_mm for x in samples])
    # The IMU is silent through the dip, then found unconfigured and set up again at the next re-probe.
    assert imu_fault[(t > 1.06) & (t < 1.2)].all()
    assert not imu_fault[t > 1.8].any()
    # After its glitch the needle sensor reports POR; reconfigured, it goes on converting: depth stays live.
    assert np.nanmax(np.abs(depth[(t > 0.52) & (t < 1.0)] - 20.0)) < 0.3
    # The stray field moves what sensor A measures, so the depth (or its validity) with it; then it is gone.
    during = (t > 2.52) & (t < 3.0)
    assert np.all(np.isnan(depth[during]) | (np.abs(depth[during] - 20.0) > 1.0))
    assert np.nanmax(np.abs(depth[t > 3.05] - 20.0)) < 0.3


def test_the_device_clock_starts_where_the_scenario_says_and_wraps(tmp_path):
    start = (1 << 30) / 1e6 - 1.0
    doc = dict(SHORT, duration_s=2.0, clock_start_s=start, attitude=[[0, 0, 0, 0]], depth=[[0, 10.0], [2, 30.0]])
    summary, samples, t = _run_kept(doc, tmp_path / "work")
    raw = np.array([x.device_time_us for x in samples])
    assert raw[0] == pytest.approx(start * 1e6, abs=50_000)  # the first sample, once the firmware is up
    assert np.sum(np.diff(raw) < 0) == 1  # the tick wrapped once, a second in
    assert np.all(np.diff(t) > 0) and t[-1] - t[0] > 1.9
    # The feeds and the truth follow scenario time, device time less the start.
    depth = np.array([x.depth_mm for x in samples], dtype=float)
    assert np.max(np.abs(depth - (10.0 + 10.0 * (t - start)))) < 0.3
    assert summary.errors["depth_mm"] < 0.2


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


def test_1000_samples_per_second_from_an_imu_at_1666_hz(tmp_path):
    sc = scenario.load("still_probe")
    seqs: list[int] = []
    times: list[np.ndarray] = []
    flags: set[Flag] = set()

    def keep(samples: list[Sample], device_s: np.ndarray) -> None:
        seqs.extend(x.seq for x in samples)
        times.append(device_s)
        flags.update(f for x in samples for f in x.flags)

    summary = runner.run(sc, tmp_path / "work", rate_hz=1000, on_samples=keep, cpu="ideal")
    session = json.loads((tmp_path / "work" / "session.json").read_text())
    assert session["imu_odr_mhz"] == 1666750 and session["config"]["rate_hz"] == 1000
    # The feed written at the chip's rate: one record every 1 / 1666.75 s.
    assert os.path.getsize(session["imu"]) == 12 * (int(sc.duration_s * 1666.75) + 1)
    t = np.concatenate(times)
    assert summary.lost == 0 and summary.samples == len(t)
    assert t[-1] > sc.duration_s - 0.05
    assert (len(t) - 1) / (t[-1] - t[0]) == pytest.approx(1000, abs=1)  # per second of device time
    assert np.all(np.diff(seqs) % 65536 == 1)
    assert np.all(np.diff(t) > 0) and np.max(np.diff(t)) < 0.0013  # one or two IMU periods of 0.6 ms
    assert summary.errors["needle_angle_deg"] < 0.05
    assert summary.errors["depth_mm"] < 0.1
    assert Flag.STALE not in flags and Flag.IMU_FAULT not in flags


def test_the_feed_rate_is_the_firmware_imu_rate():
    # The host writes imu.bin at the rate the firmware will run the chip at for the configured output rate.
    rates = (10, 200, 416, 417, 1000)
    code = f"import loop; print([loop.nominal_odr_mhz(loop.imu_odr_for(r)) for r in {rates!r}])"
    env = dict(os.environ, MICROPYPATH=str(paths.firmware_dir()))
    out = subprocess.run([paths.micropython(), "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [round(feed.imu_odr_for(r) * 1000) for r in rates]


@pytest.mark.slow
def test_twenty_minute_session_across_the_device_tick_wrap(tmp_path):
    sc = scenario.load("long_session_20min")
    summary = runner.run(sc, tmp_path / "work", record=tmp_path / "rec", cpu="ideal")
    rec = recording.load(tmp_path / "rec")
    t = rec.samples["device_time_s"]
    assert t[-1] > (1 << 30) / 1e6 + 60  # well past the wrap at 1073.74 s
    assert np.all(np.diff(t) > 0) and np.max(np.diff(t)) < 0.0075
    assert summary.lost == 0
    assert summary.errors["depth_mm"] < 0.2
    twitches = [w for w, k, _ in rec.events if k == "twitch"]
    assert len(twitches) == 1 and abs(twitches[0] - 1073.9) < 0.1  # right across the wrap
