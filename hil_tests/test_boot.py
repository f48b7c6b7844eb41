"""Deploy and boot: this checkout's firmware goes onto the device with `needletrack flash` and boots; the banner
names the firmware, the board and every sensor; the self-test passes; the sensors answer on the bus with their
own identities; samples stream from the first moment.

On a board the deploy step flashes it (skipped with --no-flash). The virtual probe starts from a freshly
installed flash and is flashed the same way, so the flasher is exercised on both."""

from __future__ import annotations

import re

import numpy as np
import pytest

from hil_tests import probes

BANNER = re.compile(r"^NeedleTrack (\S+) board=(\S+) micropython=(\d+\.\d+\.\d+) imu=(\w+) hall_a=(\w+) "
                    r"hall_b=(\w+) cal=(\w+) config=(\w+)$")
LSM6DSOX_WHO_AM_I = 0x6C
TMAG5273_MANUFACTURER = 0x5449


def test_deploy_flashes_this_firmware_and_it_boots(dut, report):
    """`needletrack flash` writes the firmware of this checkout into a spare slot, verifies it, switches to it
    and soft-resets; the new firmware prints its banner and every sensor is ok."""
    from needletrack import firmware_image, paths

    if dut.deploy is None:
        pytest.skip("--no-flash: the firmware the device already held is tested, not deployed")
    rep = dut.deploy
    want = firmware_image.read_version(paths.firmware_dir())
    report.figure("deploy time", round(rep.seconds, 2), "s")
    report.figure("bytes sent", rep.bytes_sent, "B")
    report.figure("firmware files sent / copied on the device / kept",
                  f"{len(rep.plan.sent)} / {len(rep.plan.copied)} / {len(rep.plan.kept)}")
    report.figure("slot booted", rep.slot)
    report.figure("firmware before", rep.previous)
    assert rep.version == want, f"flashed {rep.version}, the checkout holds {want}"
    assert rep.boot is not None, "no boot banner after flashing"
    assert rep.boot.version == want, f"the device booted {rep.boot.version}, not the flashed {want}"
    assert rep.boot.self_test_ok, f"self-test: {rep.boot.sensors}"


def test_boot_banner_names_the_firmware_and_every_sensor(session, report):
    m = BANNER.match(session.banner)
    assert m, f"no boot banner; console said: {session.log[-5:]}"
    version, board, mpy, imu, hall_a, hall_b, cal, config = m.groups()
    report.figure("banner", session.banner)
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert board in ("xiao_esp32s3", "pico_w")
    assert (imu, hall_a, hall_b) == ("ok", "ok", "ok"), "self-test: a sensor did not answer at boot"
    assert tuple(int(x) for x in mpy.split(".")) >= (1, 23, 0), "the firmware needs MicroPython 1.23 or newer"
    assert cal == "factory" or re.fullmatch("[0-9a-f]{4}", cal)
    assert config == "ok", f"configuration store: {config}"


def test_the_served_device_boots_with_the_same_banner(dut, session):
    """The device the BLE, control, memory and persistence tests talk to boots the same firmware as the streamed
    session, and passes its self-test."""
    assert dut.boot is not None and dut.boot.self_test_ok, f"self-test: {dut.boot and dut.boot.sensors}"
    got = BANNER.match(dut.boot.banner)
    ref = BANNER.match(session.banner)
    assert got and ref
    assert got.group(1, 2, 3) == ref.group(1, 2, 3), f"{dut.boot.banner!r} vs {session.banner!r}"


def test_sensors_answer_with_their_identities(dut, report):
    """Read on the device from the board's own bus, not through the firmware's drivers: every sensor is on the
    bus at its pin map's address, the IMU is an LSM6DSOX and both needle sensors are TMAG5273 x1 parts."""
    ids, banner = probes.run_on_device(dut.serial, "sensor_ids.py")
    addr = ids["addresses"]
    report.figure("I2C bus scan", " ".join(f"0x{a:02x}" for a in sorted(ids["scan"])))
    report.figure("LSM6DSOX WHO_AM_I", _hex(ids["imu_who_am_i"]), target="0x6c")
    report.figure("TMAG5273 A DEVICE_ID, MANUFACTURER_ID", _hex(ids["hall_a_id"]), target="0x01 0x49 0x54")
    report.figure("TMAG5273 B DEVICE_ID, MANUFACTURER_ID", _hex(ids["hall_b_id"]), target="0x01 0x49 0x54")
    report.identity("unique id", ids["unique_id"])
    missing = [name for name, a in addr.items() if a not in ids["scan"]]
    assert not missing, f"not on the bus: {missing} (scan found {[hex(a) for a in ids['scan']]})"
    assert ids["imu_who_am_i"] == [LSM6DSOX_WHO_AM_I], f"IMU WHO_AM_I {ids['imu_who_am_i']}"
    for name in ("hall_a_id", "hall_b_id"):
        raw = ids[name]
        assert isinstance(raw, list), f"{name}: {raw}"
        ver, lsb, msb = raw
        assert (msb << 8 | lsb) == TMAG5273_MANUFACTURER, f"{name}: manufacturer 0x{msb:02x}{lsb:02x}"
        assert ver & 3 == 1, f"{name}: range version {ver & 3}, the clip uses x1 (+-40/80 mT) parts"
    assert "imu=ok hall_a=ok hall_b=ok" in banner, f"after the check the firmware restarted with: {banner}"


def test_samples_stream_from_boot_without_sensor_faults(session, report):
    assert len(session.samples) > 500, f"{len(session.samples)} samples"
    seq = np.array([s.seq for s in session.samples])
    assert np.all(np.diff(seq) % 65536 == 1), "sequence gaps"
    report.figure("samples", len(session.samples))
    faults = [s for s in session.samples if {"IMU_FAULT", "HALL_FAULT"} & set(s.flag_names)]
    assert not faults, f"{len(faults)} samples flag a sensor fault, first: {faults[0].flag_names}"
    cal = BANNER.match(session.banner)
    uncal = [s for s in session.samples if "UNCALIBRATED" in s.flag_names]
    if cal and cal.group(7) != "factory":
        assert not uncal, "a calibrated device flags its samples UNCALIBRATED"


def _hex(raw: object) -> str:
    return " ".join(f"0x{x:02x}" for x in raw) if isinstance(raw, list) else str(raw)
