"""Keep a virtual probe up for live use: ``needletrack sim serve``.

The probe boots the firmware from a freshly flashed device (or the flash it already has, with ``keep_flash``)
and stays up until Ctrl-C or SIGTERM, in real time, its scenario repeating. What it offers is printed one line
each, ``name: where``, for the user or a launching program to read:

    serial: /dev/pts/N                  the USB serial console, for mpremote (docs/virtual-probe.md)
    radio: tcp-client:127.0.0.1:PORT    the HCI transport a Bumble host (needletrack, bumble apps) connects to
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from needletrack.sim import boards, feed, runner
from needletrack.sim.console import Console, ConsoleError
from needletrack.sim.radio import RadioBridgeThread, RadioConfig, stack_for_board
from needletrack.sim.scenario import Scenario


def prepare(sc: Scenario, work_dir: Path, *, rate_hz: int = runner.DEFAULT_RATE_HZ,
            keep_flash: bool = False, board: str = boards.DEFAULT, cpu: str = "board",
            firmware: Path | None = None) -> tuple[Path, bool]:
    """Sensor feeds, flash and session.json for a served probe: (session path, whether the flash is new).
    board, cpu and firmware as for runner.run."""
    work_dir = work_dir.resolve()  # the probe mounts its flash by absolute host path
    work_dir.mkdir(parents=True, exist_ok=True)
    flash = work_dir / "flash"
    fresh = not (keep_flash and (flash / "main.py").is_file())
    if fresh:
        if flash.exists():
            shutil.rmtree(flash)
        flash.mkdir()
        if cpu == "board" or firmware is not None:
            runner.deploy_firmware(flash, firmware)
        else:
            runner.install_firmware(flash)
    fd = feed.write(sc, work_dir / "feed", imu_odr_hz=feed.imu_odr_for(rate_hz))
    return runner.session_file(sc, fd, work_dir, flash, True, rate_hz, board, cpu), fresh


def _radio(board: str) -> RadioBridgeThread:
    # The radio of the board's own BLE stack (BTstack on the Pico W, NimBLE on the ESP32-S3).
    return RadioBridgeThread(RadioConfig(stack=stack_for_board(board)))


def _print_line(line: str) -> None:
    print(line, flush=True)  # read at once by whoever launched the probe, through a pipe as well


def serve(sc: Scenario, work_dir: Path, realtime: bool = True, *, rate_hz: int = runner.DEFAULT_RATE_HZ,
          keep_flash: bool = False, out: Callable[[str], object] = _print_line,
          stop: threading.Event | None = None, board: str = boards.DEFAULT, cpu: str = "board",
          firmware: Path | None = None) -> None:
    """Run the probe until Ctrl-C, SIGTERM or ``stop`` is set; raises ConsoleError if the probe fails."""
    if not realtime:
        raise ValueError("a served virtual probe runs in real time: its console is interactive")
    session, fresh = prepare(sc, work_dir, rate_hz=rate_hz, keep_flash=keep_flash, board=board, cpu=cpu,
                             firmware=firmware)
    stop = stop or threading.Event()
    with contextlib.ExitStack() as stack:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous = signal.signal(sig, lambda *_: stop.set())
                stack.callback(signal.signal, sig, previous)
        radio = stack.enter_context(_radio(board))
        doc = json.loads(session.read_text())
        doc["radio"] = {"port": radio.shim_port, "pace": 1}  # real time: a host's pace
        session.write_text(json.dumps(doc, indent=1))
        console = stack.enter_context(Console(work_dir, session, provision=fresh))
        out(f"serial: {console.path}")
        out(f"radio: {radio.transport}")
        while not stop.wait(0.2):
            if not console.alive:
                raise console.error or ConsoleError("the serial console stopped")


@dataclass(frozen=True)
class ServedProbe:
    transport: str  # the radio, for a Bumble host
    serial: str  # the console's pseudo-terminal, for mpremote and the console link
    radio: RadioBridgeThread  # the radio itself: drop its links, see when the probe advertises
    console: Console  # the serial console, and the true device epoch (Console.device_epoch)


@contextlib.contextmanager
def served(sc: Scenario, work_dir: Path, *, rate_hz: int = runner.DEFAULT_RATE_HZ, board: str = boards.DEFAULT,
           cpu: str = "board") -> Iterator[ServedProbe]:
    """A probe up in real time with its radio and serial console, for as long as the block runs (what
    `needletrack sim serve` keeps up, for a program: tests, benchmarks, the demo)."""
    session, fresh = prepare(sc, work_dir, rate_hz=rate_hz, board=board, cpu=cpu)
    with _radio(board) as radio:
        doc = json.loads(session.read_text())
        doc["radio"] = {"port": radio.shim_port, "pace": 1}
        session.write_text(json.dumps(doc, indent=1))
        with Console(work_dir, session, provision=fresh) as console:
            yield ServedProbe(radio.transport, str(console.path), radio, console)
