"""The device under test: the virtual probe, or a real board on a serial port.

Both give the same things to the tests:
- a boot banner and a stretch of decoded samples with device times (``from_virtual_probe``, ``from_serial_port``);
  only the virtual probe also gives the truth, and tests that need it are skipped on a board, with the reason;
- the device's BLE link with its control channel (``ble_timing``: output rates, STATUS records);
- scripts run on the device itself through the raw REPL of its serial console (``run_on_device``: the scripts
  are in hil_tests/device/).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from needletrack.clock import Unwrapper
from needletrack.link import Link, Notification
from needletrack.link.serial_lines import parse_line
from needletrack.protocol import (
    STATUS_UUID,
    Config,
    Opcode,
    Record,
    Result,
    ResultCode,
    Sample,
    Status,
    decode_notification,
    decode_record,
    encode_command,
)

BANNER_PREFIX = "NeedleTrack "


@dataclass
class Session:
    banner: str
    samples: list[Sample]
    device_s: np.ndarray
    truth: dict[str, np.ndarray] | None = None
    log: list[str] = field(default_factory=list)


# The virtual probe the suite runs against (conftest sets it from --board and --cpu): the board it is, and
# whether the board's compute, bus and flash time are charged ("board") or free ("ideal").
SIM = {"board": "xiao_esp32s3", "cpu": "board"}


def from_virtual_probe(scenario_doc: dict, work: Path) -> Session:
    from needletrack import recording
    from needletrack.sim import runner, scenario

    sc = scenario.parse(scenario_doc)
    got: list[Sample] = []
    times: list[float] = []

    def keep(samples: list[Sample], dev: np.ndarray) -> None:
        got.extend(samples)
        times.extend(dev.tolist())

    summary = runner.run(sc, work / "probe", record=work / "recording", on_samples=keep, board=SIM["board"],
                         cpu=SIM["cpu"])
    rec = recording.load(work / "recording")
    return Session(summary.banner, got, np.array(times), rec.truth, summary.log)


def from_serial_port(port: str, seconds: float = 5.0, boot_timeout_s: float = 10.0,
                     on_start: Callable[[], None] | None = None) -> Session:
    """Soft-reset the board on `port` (Ctrl-C, Ctrl-D at the REPL) and read its banner and sample lines for
    `seconds` after the banner (on_start is called then)."""
    import serial  # pyserial, installed with mpremote

    unwrap = Unwrapper()
    got: list[Sample] = []
    times: list[float] = []
    log: list[str] = []
    banner = ""
    with serial.Serial(port, 115200, timeout=0.2) as s:
        s.write(b"\r\x03\x03")  # interrupt the running firmware
        time.sleep(0.2)
        s.reset_input_buffer()
        s.write(b"\x04")  # soft reset: main.py starts again and prints its banner
        deadline = time.monotonic() + boot_timeout_s
        while not banner and time.monotonic() < deadline:
            line = s.readline().decode(errors="replace").strip()
            if line.startswith(BANNER_PREFIX):
                banner = line
            elif line:
                log.append(line)
        if banner and on_start is not None:
            on_start()
        end = time.monotonic() + seconds
        while banner and time.monotonic() < end:
            samples = parse_line(s.readline())
            if samples:
                got.extend(samples)
                times.extend(unwrap(x.device_time_us) / 1e6 for x in samples)
    return Session(banner, got, np.array(times), None, log)


# -- over BLE: the device's own link, with its control channel ---------------------------------------------


@dataclass
class RateRun:
    """A stretch of samples streamed over BLE at one output rate, with the STATUS records around it."""

    rate_hz: int
    samples: list[Sample]
    device_s: np.ndarray
    lost: int  # sequence numbers missing within the stretch
    status_before: Status
    status_after: Status
    set_result: ResultCode | None  # None: the device was at this rate already


@dataclass
class BleTiming:
    mtu: int
    config: Config  # as read before anything changed
    runs: list[RateRun]
    restored: ResultCode | None  # putting the original rate back (None: nothing to put back)


class _Records:
    """The status characteristic's notifications: RESULT, STATUS and CONFIG records, decoded."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.token = 0

    async def ask(self, link: Link, opcode: Opcode, *args: int, want: type | None = None,
                  timeout: float = 5.0) -> tuple[Result, Record | None]:
        """Send a command, return its RESULT and (with want) the record the device sends with it."""
        self.token = (self.token + 1) & 0xFF
        token = self.token
        while not self.queue.empty():  # a periodic STATUS from before the command is not its answer
            self.queue.get_nowait()
        await link.write_control(encode_command(opcode, token, *args))
        result: Result | None = None
        extra: Record | None = None
        async with asyncio.timeout(timeout):
            while result is None or (want is not None and result.code == ResultCode.OK and extra is None):
                rec = decode_record(await self.queue.get())
                if isinstance(rec, Result) and (rec.opcode, rec.token) == (opcode, token):
                    result = rec
                elif want is not None and isinstance(rec, want):
                    extra = rec
        return result, extra


async def ble_timing(transport: str, rates: tuple[int, ...], seconds: float = 2.0,
                     settle_s: float = 0.3) -> BleTiming:
    """Connect and bond over `transport`, then for each output rate: set it (SET_OUTPUT_RATE, bonded), let it
    settle, stream `seconds` of samples and read a fresh STATUS before and after. The original rate is put back
    at the end, whatever happened."""
    from needletrack.link import open_link

    records = _Records()
    async with open_link(transport) as link:
        await link.connect(timeout=10.0)
        await link.pair()
        await link.subscribe(STATUS_UUID, records.queue.put_nowait)
        _, cfg = await records.ask(link, Opcode.READ_CONFIG, want=Config)
        assert isinstance(cfg, Config)
        notes: asyncio.Queue[Notification] = asyncio.Queue()
        await link.start_notify(notes.put_nowait)
        runs: list[RateRun] = []
        restored: ResultCode | None = None
        try:
            current = cfg.rate_hz
            for rate in rates:
                code = None
                if rate != current:
                    res, _ = await records.ask(link, Opcode.SET_OUTPUT_RATE, rate)
                    code = res.code
                    if code != ResultCode.OK:
                        raise AssertionError(f"SET_OUTPUT_RATE {rate}: {code.name}")
                    current = rate
                await asyncio.sleep(settle_s)
                _, before = await records.ask(link, Opcode.READ_STATUS, want=Status)
                while not notes.empty():
                    notes.get_nowait()
                got: list[Sample] = []
                end = asyncio.get_running_loop().time() + seconds
                while (left := end - asyncio.get_running_loop().time()) > 0:
                    try:
                        note = await asyncio.wait_for(notes.get(), left)
                    except TimeoutError:
                        break
                    got.extend(decode_notification(note.data))
                _, after = await records.ask(link, Opcode.READ_STATUS, want=Status)
                assert isinstance(before, Status) and isinstance(after, Status)
                unwrap = Unwrapper()
                dev = np.array([unwrap(s.device_time_us) / 1e6 for s in got])
                seq = np.array([s.seq for s in got])
                lost = int(np.sum((np.diff(seq) - 1) % 65536)) if len(seq) > 1 else 0
                runs.append(RateRun(rate, got, dev, lost, before, after, code))
        finally:
            if current != cfg.rate_hz:
                res, _ = await records.ask(link, Opcode.SET_OUTPUT_RATE, cfg.rate_hz)
                restored = res.code
        mtu = int(getattr(link, "mtu_size", 0))
        await link.disconnect()
    return BleTiming(mtu, cfg, runs, restored)


# -- on the device: a script through the raw REPL of its serial console -------------------------------------

DEVICE_SCRIPTS = Path(__file__).resolve().parent / "device"


def run_on_device(port: str, script: str, settings: dict[str, object] | None = None,
                  timeout_s: float = 60.0) -> tuple[dict, str]:
    """Run hil_tests/device/<script> on the device at `port` and restart its firmware afterwards.

    As `mpremote exec` does: Ctrl-C, a soft reset into the raw REPL (boot.py only: the watchdog keeper runs, the
    firmware does not), the script, whose last printed line is a JSON document; then a soft reset into main.py,
    whose boot banner is awaited. `settings` become the script's globals (NAME = repr(value)) ahead of it.
    Returns (the document, the banner of the restart)."""
    import json

    from needletrack.board_repl import Repl

    code = "".join(f"{k} = {v!r}\n" for k, v in (settings or {}).items())
    code += (DEVICE_SCRIPTS / script).read_text()
    with Repl(port, timeout_s=10.0) as repl:
        try:
            out = repl.exec(code, timeout_s)
        except BaseException:
            with contextlib.suppress(Exception):
                repl.restart()  # the firmware back up for the tests that follow; the script's error is the news
            raise
        boot = repl.restart()
    lines = [x for x in out.strip().splitlines() if x.strip()]
    return json.loads(lines[-1]), boot.banner
