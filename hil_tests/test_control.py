"""Control: every command of docs/protocol.md in its valid and its invalid forms, over a bonded BLE link.

Every command is answered by one RESULT with its opcode, its token and the right code; a command that is not
OK changes nothing (the CONFIG record read before and after is the same); a valid one does what the table says
(read back with READ_CONFIG, and seen in the samples where the samples show it). The session's probe is shared:
each test puts back what it changed. TARE and a committed calibration cannot be put back by a command, and need
the needle at known depths: on the virtual probe they run on a probe of their own on a depth jig
(hil_tests/jig_probe.py); on a board they are skipped. REBOOT is in test_persistence.
"""

from __future__ import annotations

import asyncio
import statistics
import struct
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from hil_tests import jig_probe
from hil_tests.central import Central, ConfigValues
from needletrack.protocol import NA, Config, Flag, Opcode, ResultCode, Status, decode_notification

# Every command here waits on the device's loop, which answers late when it cannot keep its rate
# (conftest: keeps_rate).
pytestmark = pytest.mark.keeps_rate

OK = ResultCode.OK
RANGE = ResultCode.OUT_OF_RANGE
LENGTH = ResultCode.BAD_LENGTH
STATE = ResultCode.BAD_STATE
UNKNOWN = ResultCode.UNKNOWN_OPCODE


class Checker:
    """Sends forms of commands on a bonded central, checking RESULTs and that refused forms change nothing."""

    def __init__(self, central: Central) -> None:
        self.central = central
        self.round_trips: list[float] = []
        self.forms = 0
        self._sink: list[Any] | None = None
        self._notifying = False

    async def samples(self, seconds: float) -> list[Any]:
        """The samples streamed over the next `seconds`."""
        if not self._notifying:
            await self.central.link.start_notify(self._on_note)
            self._notifying = True
        got: list[Any] = []
        self._sink = got
        await asyncio.sleep(seconds)
        self._sink = None
        return got

    def _on_note(self, note: Any) -> None:
        if self._sink is not None:
            self._sink.extend(decode_notification(note.data))

    async def send(self, data: bytes, code: ResultCode, *, opcode: int | None = None, token: int | None = None,
                   want: type | None = None) -> tuple[Any, Any]:
        """Write raw bytes; the RESULT must answer (opcode, token) (default: the bytes' own) with `code`."""
        opcode = data[0] if opcode is None else opcode
        token = data[1] if token is None else token
        t0 = time.monotonic()
        result, extra = await self.central.send(data, opcode, token, want=want)
        self.round_trips.append(time.monotonic() - t0)
        self.forms += 1
        assert (result.opcode, result.token) == (opcode, token)
        assert result.code == code, f"{data.hex()}: {result.code.name}, expected {code.name}"
        return result, extra

    async def refused(self, data: bytes, code: ResultCode, **kw: Any) -> None:
        """A form the device must refuse with `code`, changing nothing."""
        before = await self.central.read_config()
        await self.send(data, code, **kw)
        after = await self.central.read_config()
        assert after == before, f"{data.hex()} was refused ({code.name}) but changed {before} -> {after}"

    def command(self, opcode: Opcode, fmt: str, *args: int) -> bytes:
        return struct.pack("<BB" + fmt, opcode, self.central.next_token(), *args)

    async def ok(self, opcode: Opcode, fmt: str, *args: int, want: type | None = None) -> tuple[Any, Any]:
        return await self.send(self.command(opcode, fmt, *args), OK, want=want)

    async def out_of_range(self, opcode: Opcode, fmt: str, *args: int) -> None:
        await self.refused(self.command(opcode, fmt, *args), RANGE)

    async def bad_lengths(self, opcode: Opcode, payload: bytes) -> None:
        """The payload one byte short and one byte long (for an empty payload, one byte)."""
        forms = [payload + b"\x00"] if not payload else [payload[:-1], payload + b"\x00"]
        for p in forms:
            await self.refused(bytes((opcode, self.central.next_token())) + p, LENGTH)


Body = Callable[[Checker, Config], Awaitable[None]]


def _on_device(dut: Any, body: Body, report: Any) -> Checker:
    """Run `body` on a bonded central to the device under test; put the configuration back afterwards."""

    async def run() -> Checker:
        async with Central.of(dut) as central:
            await central.connect()
            await central.pair()
            before = await central.read_config()
            checker = Checker(central)
            try:
                await body(checker, before)
            finally:
                await central.command(Opcode.CAL_ABORT)  # whatever the body left, no calibration stays open
                codes = await ConfigValues.of(before).apply(central)
                assert all(code == 0 for _, code in codes), f"restoring the configuration: {codes}"
                assert await central.read_config() == before, "the configuration was not put back"
            await central.disconnect()
            return checker

    checker = asyncio.run(run())
    report.figure("forms sent", checker.forms)
    report.figure("command round trip, median", round(statistics.median(checker.round_trips) * 1000, 1), "ms")
    return checker


def test_set_guide_angle(dut, report):
    async def body(c: Checker, before: Config) -> None:
        for cdeg in (1000, 8000, 4550):
            await c.ok(Opcode.SET_GUIDE_ANGLE, "h", cdeg)
            assert (await c.central.read_config()).guide_angle_deg == pytest.approx(cdeg / 100)
        # The samples carry the detent in use.
        guides = {s.guide_angle_deg for s in (await c.samples(0.4))[10:]}
        assert guides == {45.5}, guides
        for cdeg in (999, 8001, 0, -4500, NA):
            await c.out_of_range(Opcode.SET_GUIDE_ANGLE, "h", cdeg)
        await c.bad_lengths(Opcode.SET_GUIDE_ANGLE, struct.pack("<h", 4500))

    _on_device(dut, body, report)


def test_set_needle_length(dut, report):
    async def body(c: Checker, before: Config) -> None:
        for dmm in (100, 2000, 755):
            await c.ok(Opcode.SET_NEEDLE_LENGTH, "H", dmm)
            assert (await c.central.read_config()).needle_length_mm == pytest.approx(dmm / 10)
        for dmm in (99, 2001, 0, 65535):
            await c.out_of_range(Opcode.SET_NEEDLE_LENGTH, "H", dmm)
        await c.bad_lengths(Opcode.SET_NEEDLE_LENGTH, struct.pack("<H", 600))

    _on_device(dut, body, report)


def test_set_nogo(dut, report):
    async def body(c: Checker, before: Config) -> None:
        for depth, margin in ((100, 0), (20000, 2000), (1500, 300)):
            await c.ok(Opcode.SET_NOGO, "hH", depth, margin)
            cfg = await c.central.read_config()
            assert (cfg.nogo_depth_mm, cfg.nogo_margin_mm) == (pytest.approx(depth / 100), pytest.approx(margin / 100))
        await c.ok(Opcode.SET_NOGO, "hH", NA, 500)  # NA clears it
        cfg = await c.central.read_config()
        assert cfg.nogo_depth_mm is None and cfg.nogo_margin_mm == pytest.approx(5.0)
        for depth, margin in ((99, 0), (20001, 0), (-100, 0), (0, 0), (1500, 2001)):
            await c.out_of_range(Opcode.SET_NOGO, "hH", depth, margin)
        await c.bad_lengths(Opcode.SET_NOGO, struct.pack("<hH", 1500, 300))
        if dut.kind == "sim":
            # The served needle's tip is 5 - 20 mm deep: a no-go at 1 mm is reached, one at 200 mm is not.
            await c.ok(Opcode.SET_NOGO, "hH", 100, 0)
            reached = await c.samples(0.4)
            await c.ok(Opcode.SET_NOGO, "hH", 20000, 0)
            clear = (await c.samples(0.4))[10:]
            assert all(Flag.NOGO_REACHED in s.flags for s in reached[10:])
            assert not any(s.flags & (Flag.NOGO_REACHED | Flag.NOGO_NEAR) for s in clear)

    _on_device(dut, body, report)


def test_set_output_rate(dut, report):
    measured: dict[int, float] = {}

    async def body(c: Checker, before: Config) -> None:
        for hz in (10, 1000, 100):
            await c.ok(Opcode.SET_OUTPUT_RATE, "H", hz)
            assert (await c.central.read_config()).rate_hz == hz
        # 100 samples/s, by the device's own timestamps.
        await asyncio.sleep(0.1)
        got = await c.samples(1.0)
        ticks = [s.device_time_us for s in got]
        measured[100] = (len(ticks) - 1) / (((ticks[-1] - ticks[0]) % (1 << 30)) / 1e6)
        status = await c.central.read_status()
        assert status.rate_hz == 100
        for hz in (9, 1001, 0, 65535):
            await c.out_of_range(Opcode.SET_OUTPUT_RATE, "H", hz)
        await c.bad_lengths(Opcode.SET_OUTPUT_RATE, struct.pack("<H", 200))

    _on_device(dut, body, report)
    report.figure("output rate after SET_OUTPUT_RATE 100", round(measured[100], 2), "Hz", "100 +- 2 %")
    assert measured[100] == pytest.approx(100, rel=0.02)


def test_identify_read_config_read_status(dut, report):
    async def body(c: Checker, before: Config) -> None:
        for seconds in (1, 10):
            await c.ok(Opcode.IDENTIFY, "B", seconds)
        for seconds in (0, 11, 255):
            await c.out_of_range(Opcode.IDENTIFY, "B", seconds)
        await c.bad_lengths(Opcode.IDENTIFY, b"\x01")
        _, cfg = await c.ok(Opcode.READ_CONFIG, "", want=Config)
        assert cfg == before
        _, status = await c.ok(Opcode.READ_STATUS, "", want=Status)
        assert isinstance(status, Status) and status.rate_hz == before.rate_hz
        assert status.calibration_id == before.calibration_id
        for op in (Opcode.READ_CONFIG, Opcode.READ_STATUS):
            await c.bad_lengths(op, b"")

    _on_device(dut, body, report)


def test_unknown_opcodes_and_malformed_writes_change_nothing(dut, report):
    async def body(c: Checker, before: Config) -> None:
        for opcode in (0x00, 0x10, 0x7F, 0xFF):
            await c.refused(bytes((opcode, c.central.next_token())) + b"\x10\x27", UNKNOWN)
        # Too short to carry a token: answered for opcode and token as far as they came, token 0 otherwise.
        await c.refused(bytes((Opcode.SET_GUIDE_ANGLE,)), LENGTH, token=0)
        # Longer than any command (the control value holds 32 bytes).
        await c.refused(bytes((Opcode.SET_NEEDLE_LENGTH, c.central.next_token())) + bytes(30), LENGTH)

    _on_device(dut, body, report)


def test_calibration_commands_outside_and_inside_a_calibration(dut, report):
    async def body(c: Checker, before: Config) -> None:
        # Outside a calibration there is nothing to add a point to, or to commit.
        await c.refused(c.command(Opcode.CAL_POINT, "h", 1000), STATE)
        await c.refused(c.command(Opcode.CAL_COMMIT, ""), STATE)
        for op in (Opcode.CAL_BEGIN, Opcode.CAL_COMMIT, Opcode.CAL_ABORT):
            await c.bad_lengths(op, b"")
        await c.bad_lengths(Opcode.CAL_POINT, struct.pack("<h", 1000))
        await c.ok(Opcode.CAL_BEGIN, "")
        for d10um in (-1, 20001, NA):
            await c.refused(c.command(Opcode.CAL_POINT, "h", d10um), RANGE)
        # Too few points: BAD_STATE, its value how many there are; the old table stays.
        result, _ = await c.send(c.command(Opcode.CAL_COMMIT, ""), STATE)
        assert result.value == 0
        await c.ok(Opcode.CAL_ABORT, "")
        await c.refused(c.command(Opcode.CAL_COMMIT, ""), STATE)  # the abort ended it
        assert (await c.central.read_config()).calibration_id == before.calibration_id

    _on_device(dut, body, report)


def test_read_field_and_cal_residual(dut, report):
    async def body(c: Checker, before: Config) -> None:
        # The live field angle of each sensor: on any link state, read only. Where the needle is, at least one
        # sensor has a field; one without answers BAD_STATE.
        codes = []
        for sensor in (0, 1):
            result, _ = await c.central.command(Opcode.READ_FIELD, sensor)
            assert result.code in (OK, STATE), result
            if result.code == OK:
                assert -180_000 < result.value <= 180_000, result
            else:
                assert result.value == 0, result
            codes.append(result.code)
        assert OK in codes, codes
        for sensor in (2, 255):
            await c.out_of_range(Opcode.READ_FIELD, "B", sensor)
        await c.bad_lengths(Opcode.READ_FIELD, b"\x00")
        # Residuals exist only for a calibration committed since boot; past the last point, none.
        result, _ = await c.central.command(Opcode.CAL_RESIDUAL, 255)
        assert result.code in (STATE, RANGE), result
        await c.refused(c.command(Opcode.CAL_RESIDUAL, "B", 255), result.code)
        await c.bad_lengths(Opcode.CAL_RESIDUAL, b"\x00")

    _on_device(dut, body, report)


# -- on the jig probe: TARE and calibrating (virtual probe only) -------------------------------------------


@pytest.fixture(scope="module")
def jig(dut, tmp_path_factory) -> Iterator[Any]:
    dut.require_sim("TARE and a new calibration cannot be undone by a command, and need the needle held at "
                    "known depths (a motorised depth jig)")
    with jig_probe.served(tmp_path_factory.mktemp("jig")) as probe:
        yield probe


def _on_jig(jig: Any, body: Callable[[Checker, Any], Awaitable[None]], report: Any) -> Checker:
    async def run() -> Checker:
        async with Central(jig.transport, jig) as central:
            await central.connect()
            await central.pair()
            checker = Checker(central)
            await body(checker, jig.console)
            await central.disconnect()
            return checker

    checker = asyncio.run(run())
    report.figure("forms sent", checker.forms)
    return checker


def test_tare_makes_the_current_position_depth_zero(jig, report):
    got: dict[str, Any] = {}

    async def body(c: Checker, console: Any) -> None:
        await c.bad_lengths(Opcode.TARE, b"")
        await jig_probe.at_stop(console, 2)  # 20 mm
        result, _ = await c.ok(Opcode.TARE, "")
        got["tare_um"] = result.value
        got["config"] = await c.central.read_config()
        await jig_probe.at_stop(console, 4)  # 40 mm: reads 20 mm now
        got["at_40"] = [s.depth_mm for s in (await c.samples(0.15))[5:]]
        # With no usable field (both sensors saturated) there is no position to take: refused, nothing changes.
        await jig_probe.at_saturation(console)
        await c.refused(c.command(Opcode.TARE, ""), STATE)
        await jig_probe.at_stop(console, 0)
        result, _ = await c.ok(Opcode.TARE, "")  # back to zero at the first stop
        got["back"] = result.value

    _on_jig(jig, body, report)
    report.figure("TARE at the 20 mm stop", got["tare_um"] / 1000, "mm", "20 +- 0.5")
    assert got["tare_um"] == pytest.approx(20_000, abs=500)
    assert got["config"].tare_mm == pytest.approx(got["tare_um"] / 1000, abs=0.01)
    assert got["at_40"] and all(d is not None and abs(d - 20.0) < 0.5 for d in got["at_40"]), got["at_40"]
    assert abs(got["back"]) < 500


def test_a_calibration_on_the_jig_is_committed_and_used(jig, report):
    got: dict[str, Any] = {}

    async def body(c: Checker, console: Any) -> None:
        before = await c.central.read_config()
        got["before"] = before
        # Nothing committed on this probe since it booted: no residuals.
        await c.refused(c.command(Opcode.CAL_RESIDUAL, "B", 0), STATE)
        # No usable field: no point is taken, and neither sensor has a field angle to read.
        await c.ok(Opcode.CAL_BEGIN, "")
        await jig_probe.at_saturation(console, lead_s=0.1)  # three commands within the hold
        for sensor in (0, 1):
            await c.send(c.command(Opcode.READ_FIELD, "B", sensor), STATE)
        await c.send(c.command(Opcode.CAL_POINT, "h", 3000), STATE)
        # Eight points that cannot be a calibration (taken within half a second, claimed 0 to 75 mm): the
        # commit refuses them and the old table stays.
        await jig_probe.at_stop(console, 0)
        for mm in jig_probe.STOPS_MM:
            await c.ok(Opcode.CAL_POINT, "h", round(mm * 100))
        await c.refused(c.command(Opcode.CAL_COMMIT, ""), RANGE)
        await c.ok(Opcode.CAL_ABORT, "")
        assert (await c.central.read_config()).calibration_id == before.calibration_id
        await c.refused(c.command(Opcode.CAL_RESIDUAL, "B", 0), STATE)  # a refused commit leaves none
        # At a stop, the live field angle is the one a CAL_POINT then records (to within the sensor's noise).
        await jig_probe.at_stop(console, 2)
        field, _ = await c.ok(Opcode.READ_FIELD, "B", 0)
        await c.ok(Opcode.CAL_BEGIN, "")
        point, _ = await c.ok(Opcode.CAL_POINT, "h", 2000)
        got["field_vs_point_mdeg"] = abs(point.value - field.value)
        await c.ok(Opcode.CAL_ABORT, "")
        # The real thing: a point at every stop as the needle holds there.
        points, commit = await jig_probe.calibrate(c.central, console)
        got["points"], got["commit"] = points, commit
        residuals = []
        for i in range(len(points)):
            result, _ = await c.ok(Opcode.CAL_RESIDUAL, "B", i)
            residuals.append(result.value)
        await c.refused(c.command(Opcode.CAL_RESIDUAL, "B", len(points)), RANGE)
        got["residuals"] = residuals
        got["config"] = await c.central.read_config()
        got["status"] = await c.central.read_status()
        errors = []
        for i in jig_probe.stops_in_passing_order(console)[:4]:
            await jig_probe.at_stop(console, i)
            depths = [s.depth_mm for s in (await c.samples(0.1))[3:]]
            errors += [abs(d - jig_probe.STOPS_MM[i]) if d is not None else float("inf") for d in depths]
        got["errors"] = errors

    _on_jig(jig, body, report)
    points, commit, cfg = got["points"], got["commit"], got["config"]
    assert [p.code for p in points] == [OK] * len(jig_probe.STOPS_MM)
    assert commit.code == OK, commit
    assert commit.value not in (0, got["before"].calibration_id)
    assert cfg.calibration_id == commit.value and got["status"].calibration_id == commit.value
    assert Flag.UNCALIBRATED not in got["status"].flags
    report.figure("calibration id committed", f"{commit.value:04x}")
    report.figure("READ_FIELD against the CAL_POINT after it", got["field_vs_point_mdeg"], "mdeg", "< 1000")
    assert got["field_vs_point_mdeg"] < 1000
    residuals = got["residuals"]
    rms = (sum(r * r for r in residuals) / len(residuals)) ** 0.5
    report.figure("fit residuals at the stops, RMS", round(rms / 1000, 3), "mm", "< 0.3")
    report.figure("fit residuals at the stops, worst", round(max(map(abs, residuals)) / 1000, 3), "mm", "< 0.5")
    assert rms < 300 and max(map(abs, residuals)) < 500, residuals
    # Single readings, sensor noise included: docs/depth.md measures 0.32 mm at worst on the bench.
    report.figure("depth error at the stops after calibrating, worst", round(max(got["errors"]), 3), "mm", "< 0.5")
    assert max(got["errors"]) < 0.5
