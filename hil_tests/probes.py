"""The device under test: the virtual probe, or a real board on a serial port.

Both give the same thing to the tests: the boot banner and a stretch of decoded samples with device times. Only
the virtual probe also gives the truth; tests that need it are skipped on a real board, with the reason shown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from needletrack.clock import Unwrapper
from needletrack.link.serial_lines import parse_line
from needletrack.protocol import Sample

BANNER_PREFIX = "NeedleTrack "


@dataclass
class Session:
    banner: str
    samples: list[Sample]
    device_s: np.ndarray
    truth: dict[str, np.ndarray] | None = None
    log: list[str] = field(default_factory=list)


def from_virtual_probe(scenario_doc: dict, work: Path) -> Session:
    from needletrack import recording
    from needletrack.sim import runner, scenario

    sc = scenario.parse(scenario_doc)
    got: list[Sample] = []
    times: list[float] = []

    def keep(samples: list[Sample], dev: np.ndarray) -> None:
        got.extend(samples)
        times.extend(dev.tolist())

    summary = runner.run(sc, work / "probe", record=work / "recording", on_samples=keep)
    rec = recording.load(work / "recording")
    return Session(summary.banner, got, np.array(times), rec.truth, summary.log)


def from_serial_port(port: str, seconds: float = 5.0, boot_timeout_s: float = 10.0) -> Session:
    """Soft-reset the board on `port` (Ctrl-C, Ctrl-D at the REPL) and read its banner and sample lines."""
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
        end = time.monotonic() + seconds
        while banner and time.monotonic() < end:
            samples = parse_line(s.readline())
            if samples:
                got.extend(samples)
                times.extend(unwrap(x.device_time_us) / 1e6 for x in samples)
    return Session(banner, got, np.array(times), None, log)
