"""Deploy and boot: the banner, the sensors' identities, and a continuous stream at the configured rate."""

from __future__ import annotations

import re

import numpy as np

BANNER = re.compile(r"^NeedleTrack (\S+) board=(\S+) micropython=(\d+\.\d+\.\d+) imu=(\w+) hall_a=(\w+) "
                    r"hall_b=(\w+) cal=(\w+) config=(\w+)$")


def test_boot_banner_names_the_firmware_and_every_sensor(session):
    m = BANNER.match(session.banner)
    assert m, f"no boot banner; console said: {session.log[-5:]}"
    version, board, mpy, imu, hall_a, hall_b, cal, config = m.groups()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert board in ("xiao_esp32s3", "pico_w")
    assert (imu, hall_a, hall_b) == ("ok", "ok", "ok")
    assert tuple(int(x) for x in mpy.split(".")) >= (1, 22, 0)
    assert cal == "factory" or re.fullmatch("[0-9a-f]{4}", cal)
    assert config in ("ok", "missing")


def test_samples_stream_continuously_at_the_configured_rate(session):
    assert len(session.samples) > 500
    seq = np.array([s.seq for s in session.samples])
    assert np.all(np.diff(seq) % 65536 == 1), "sequence gaps"
    dt = np.diff(session.device_s)
    assert np.all(dt > 0)
    assert abs(np.mean(dt) - 0.005) < 0.00005  # 200 Hz in device time
    assert np.percentile(dt, 99) < 0.0075  # no sample comes a whole IMU batch late


def test_needle_angle_and_depth_match_the_truth(session, truth):
    settled = np.array(["SETTLING" not in s.flag_names for s in session.samples])
    angle = np.array([np.nan if s.needle_angle_deg is None else s.needle_angle_deg for s in session.samples])
    depth = np.array([np.nan if s.depth_mm is None else s.depth_mm for s in session.samples])
    ea = angle[settled] - truth["needle_angle_deg"][settled]
    ed = depth - truth["depth_mm"]
    assert np.sqrt(np.nanmean(ea**2)) < 0.3
    assert np.sqrt(np.nanmean(ed**2)) < 0.2
    assert not np.isnan(ed).any()
