"""Persistence: the configuration and the calibration survive a reboot, and a power cut in the middle of writing
the configuration leaves the old configuration or the new one, never a broken one.

The reboot is the REBOOT command over a bonded link; the device comes back, the host reconnects and reads
CONFIG and STATUS, and the boot banner on the serial console says what the store found (``config=ok``,
``cal=<id>``). The power cuts (virtual probe only) kill the probe's process at random moments after a
configuration write was sent, as pulling the battery would, and power it on again with its flash as the cut
left it (needletrack.sim.console.Console.power_cycle).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

from hil_tests import jig_probe
from hil_tests.central import Central, ConfigValues, SerialLine, banner_fields
from needletrack.protocol import Config, Flag, Opcode, ResultCode, Status, encode_command

# Every command here waits on the device's loop, which answers late when it cannot keep its rate
# (conftest: keeps_rate).
pytestmark = pytest.mark.keeps_rate

POWER_CUTS = 10
CUT_SEED = 9
# Delays from sending the write to the cut, spread over the write's way: over the radio (a connection event or
# two), into the firmware's loop (between two IMU batches), through the store (temp file, sync, rename), and
# back as a RESULT. On the virtual probe the new value is stored about 10 ms after the write is sent.
MAX_CUT_S = 0.04
GUIDES_CDEG = (3000, 5500)  # the old and the new value, alternately


async def _reconnect(central: Central, address: str, timeout_s: float = 20.0) -> float:
    """Connect again to the probe at `address` once it is back; returns how long that took."""
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    while True:
        try:
            await central.connect(address, timeout=5.0)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            with contextlib.suppress(Exception):
                await central.disconnect()
            await asyncio.sleep(0.1)
    await central.pair()
    return time.monotonic() - t0


async def _reboot(central: Central, line: SerialLine, address: str, *, banner_required: bool = True) -> dict[str, Any]:
    """REBOOT, wait for the link to drop and the banner, reconnect; what came back. A board's USB port goes
    away while the chip resets and may come back after the banner: there it may be missed (None)."""
    t0 = time.monotonic()
    result, _ = await central.command(Opcode.REBOOT)
    assert result.code == ResultCode.OK, result
    await central.wait_disconnected(10.0)
    banner = None
    try:
        banner = await asyncio.to_thread(line.banner, t0, 15.0)
    except AssertionError:
        if banner_required:
            raise
    await _reconnect(central, address)
    back_s = time.monotonic() - t0
    return {"banner": banner, "config": await central.read_config(), "status": await central.read_status(),
            "back_s": back_s}


def _check_banner(banner: str | None, cfg: Config) -> None:
    if banner is None:
        return
    fields = banner_fields(banner)
    assert fields.get("config") == "ok", banner
    cal = "factory" if cfg.calibration_id == 0 else f"{cfg.calibration_id:04x}"
    assert fields.get("cal") == cal, banner


def test_configuration_and_calibration_survive_a_reboot(dut, report):
    async def run(line: SerialLine) -> dict[str, Any]:
        async with Central.of(dut) as central:
            found = await central.connect()
            assert found is not None
            await central.pair()
            before = await central.read_config()
            status_before = await central.read_status()
            old = ConfigValues.of(before)
            new = ConfigValues(4200 if old.guide_cdeg != 4200 else 3300, 1234, 2500, 400,
                               100 if old.rate_hz != 100 else 150)
            try:
                assert all(code == 0 for _, code in await new.apply(central))
                set_cfg = await central.read_config()
                back = await _reboot(central, line, found.address, banner_required=dut.kind == "sim")
            finally:
                if central.link.is_connected:
                    codes = await old.apply(central)
                    assert all(code == 0 for _, code in codes), codes
            restored = await central.read_config()
            await central.disconnect()
        return {"before": before, "status_before": status_before, "set": set_cfg, "restored": restored, **back}

    with SerialLine(dut.serial) as line:
        out = asyncio.run(run(line))
    cfg, status = out["config"], out["status"]
    report.figure("REBOOT to bonded again", round(out["back_s"], 2), "s")
    report.figure("boot banner after REBOOT", out["banner"] or "not seen (the board's USB port re-enumerated)")
    assert cfg == out["set"], f"before the reboot {out['set']}, after {cfg}"
    assert cfg.calibration_id == out["before"].calibration_id
    assert isinstance(status, Status) and status.rate_hz == out["set"].rate_hz
    assert status.calibration_id == out["status_before"].calibration_id
    assert status.uptime_s <= out["back_s"] + 1, "the device did not restart"
    _check_banner(out["banner"], cfg)
    assert out["restored"] == out["before"], "the configuration was not put back"


# -- on a probe of its own (virtual probe only) ------------------------------------------------------------


@pytest.fixture(scope="module")
def jig(dut, tmp_path_factory) -> Iterator[Any]:
    dut.require_sim("a new calibration needs the needle at known depths; power cuts kill the probe's process")
    with jig_probe.served(tmp_path_factory.mktemp("persist")) as probe:
        yield probe


def test_a_new_calibration_survives_a_reboot(jig, report):
    async def run(line: SerialLine) -> dict[str, Any]:
        async with Central(jig.transport, jig) as central:
            found = await central.connect()
            assert found is not None
            await central.pair()
            _, commit = await jig_probe.calibrate(central, jig.console)
            back = await _reboot(central, line, found.address)
            await central.disconnect()
        return {"commit": commit, **back}

    with SerialLine(jig.serial) as line:
        out = asyncio.run(run(line))
    commit, cfg, status = out["commit"], out["config"], out["status"]
    assert commit.code == ResultCode.OK, commit
    report.figure("calibration id before and after REBOOT", f"{commit.value:04x} / {cfg.calibration_id:04x}")
    assert cfg.calibration_id == commit.value and status.calibration_id == commit.value
    assert Flag.UNCALIBRATED not in status.flags
    _check_banner(out["banner"], cfg)


def test_a_power_cut_during_a_configuration_write_leaves_the_old_or_the_new(jig, report):
    rng = random.Random(CUT_SEED)
    console = jig.console
    trials: list[dict[str, Any]] = []

    async def cut_during_write(central: Central, target: int, delay: float) -> tuple[bool, float]:
        """Send the write and cut the power `delay` s later: (whether an OK came back first, when the cut was)."""
        token = central.next_token()
        t0 = time.monotonic()
        cut = asyncio.ensure_future(asyncio.to_thread(console.power_cycle, delay))
        acknowledged = False
        with contextlib.suppress(Exception):
            await central.link.write_control(encode_command(Opcode.SET_GUIDE_ANGLE, token, target))
            waiting = asyncio.ensure_future(central.wait_result(Opcode.SET_GUIDE_ANGLE, token, 2.0))
            await asyncio.wait({waiting, cut}, return_when=asyncio.FIRST_COMPLETED)
            if waiting.done() and not waiting.cancelled() and waiting.exception() is None:
                acknowledged = waiting.result().code == ResultCode.OK and not cut.done()
            waiting.cancel()
        await cut
        return acknowledged, t0

    async def run(line: SerialLine) -> tuple[Config, Config]:
        async with Central(jig.transport, jig) as central:
            found = await central.connect()
            assert found is not None
            await central.pair()
            first = await central.read_config()
            result, _ = await central.command(Opcode.SET_GUIDE_ANGLE, GUIDES_CDEG[0])
            assert result.code == ResultCode.OK
            current = GUIDES_CDEG[0]
            for _ in range(POWER_CUTS):
                target = GUIDES_CDEG[1] if current == GUIDES_CDEG[0] else GUIDES_CDEG[0]
                delay = rng.uniform(0.0, MAX_CUT_S)
                acknowledged, t0 = await cut_during_write(central, target, delay)
                banner = await asyncio.to_thread(line.banner, t0, 15.0)
                await central.wait_disconnected(5.0)
                await _reconnect(central, found.address)
                cfg = await central.read_config()
                got = round(cfg.guide_angle_deg * 100)
                trials.append({"delay": delay, "acknowledged": acknowledged, "banner": banner, "old": current,
                               "new": target, "got": got, "config": cfg})
                current = got
            result, _ = await central.command(Opcode.SET_GUIDE_ANGLE, round(first.guide_angle_deg * 100))
            assert result.code == ResultCode.OK
            last = await central.read_config()
            await central.disconnect()
        return first, last

    with SerialLine(jig.serial) as line:
        first, last = asyncio.run(run(line))
    kept_old = sum(t["got"] == t["old"] for t in trials)
    took_new = sum(t["got"] == t["new"] for t in trials)
    report.figure("power cuts during a configuration write", len(trials), "", str(POWER_CUTS))
    report.figure("cuts that kept the old value / took the new", f"{kept_old} / {took_new}", "",
                  "all one or the other")
    report.figure("cut delays after sending the write", ", ".join(f"{t['delay'] * 1000:.0f}" for t in trials), "ms")
    report.figure("writes acknowledged before the cut", sum(t["acknowledged"] for t in trials))
    assert len(trials) == POWER_CUTS
    for t in trials:
        fields = banner_fields(t["banner"])
        assert fields.get("config") == "ok", f"after a cut {t['delay'] * 1000:.0f} ms in: {t['banner']}"
        assert t["got"] in (t["old"], t["new"]), f"guide angle {t['got']} is neither {t['old']} nor {t['new']}"
        if t["acknowledged"]:
            assert t["got"] == t["new"], "a write the device had confirmed was lost"
        others = (t["config"].needle_length_mm, t["config"].rate_hz, t["config"].calibration_id, t["config"].tare_mm)
        assert others == (first.needle_length_mm, first.rate_hz, first.calibration_id, first.tare_mm)
    assert last == first
