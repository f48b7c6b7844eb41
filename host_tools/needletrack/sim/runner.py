"""Run a scenario through the virtual probe: the unchanged firmware on the MicroPython unix port.

The host side of ``needletrack sim run``. It writes the sensor data for the scenario (``sim.feed``), flashes the
firmware tree into the virtual probe's flash directory, boots ``sim/mpy/vprobe.py`` in ``micropython`` and reads
the samples the firmware streams on its serial console, decoding and recording them as any link would.

Virtual time (default) runs as fast as the CPU allows and is repeatable to the byte; real time paces the virtual
probe by the host clock, for live use.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from needletrack import paths
from needletrack.link.base import Notification
from needletrack.link.serial_lines import payload
from needletrack.protocol import Sample
from needletrack.receiver import Receiver
from needletrack.recording import RecordingWriter
from needletrack.sim import feed
from needletrack.sim.scenario import Fault, Scenario

HEAPSIZE = "512K"
DEFAULT_RATE_HZ = 200


def install_firmware(flash: Path) -> list[Path]:
    """Copy the firmware tree into a flash directory, as a plain copy-based flash would; returns the files."""
    src = paths.firmware_dir()
    copied = []
    for f in sorted(src.rglob("*.py")):
        dst = flash / f.relative_to(src)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dst)
        copied.append(dst)
    return copied


def device_config(sc: Scenario, rate_hz: int) -> dict[str, int]:
    """The configuration a clinician would set for this scenario (store.CONFIG_FIELDS names and units)."""
    return {
        "guide_angle_mdeg": round(sc.guide_angle_deg * 1000),
        "needle_length_um": round(sc.needle_length_mm * 1000),
        "nogo_depth_um": 0 if sc.nogo_depth_mm is None else round(sc.nogo_depth_mm * 1000),
        "nogo_margin_um": 3000,
        "rate_hz": rate_hz,
        "tare_um": 0,
    }


@dataclass
class RunSummary:
    scenario: str
    samples: int = 0
    lost: int = 0  # sequence numbers missing between received samples
    banner: str = ""
    log: list[str] = field(default_factory=list)
    returncode: int = 0
    wall_s: float = 0.0
    last_device_s: float = 0.0
    errors: dict[str, float] = field(default_factory=dict)  # RMS vs truth, where truth was recorded


class VirtualProbeError(RuntimeError):
    """The virtual probe did not boot or stopped with an error; the message carries its output."""


def session_file(sc: Scenario, fd: feed.Feed, work: Path, flash: Path, realtime: bool, rate_hz: int) -> Path:
    jig_um, angles = feed.jig_angles()
    session = {
        "imu": str(fd.imu),
        "hall_a": str(fd.hall_a),
        "hall_b": str(fd.hall_b),
        "flash": str(flash),
        "board": "xiao_esp32s3",
        "duration_us": round(sc.duration_s * 1e6),
        "realtime": realtime,
        "config": device_config(sc, rate_hz),
        "imu_odr_mhz": round(fd.imu_odr_hz * 1000),  # the rate imu.bin was written at
        "calibration": {"jig_um": jig_um, "angles": angles},
        "faults": [_fault_entry(f) for f in sc.faults],
        "clock_start_us": round(sc.clock_start_s * 1e6),
    }
    path = work / "session.json"
    path.write_text(json.dumps(session, indent=1))
    return path


def _fault_entry(f: Fault) -> list[object]:
    # [start us, end us, kind, sensor] in scenario time, then a stray field's [x, y, z] in nT
    entry: list[object] = [round(f.t_s * 1e6), round(f.until_s * 1e6), f.kind, f.sensor]
    if f.field_mt is not None:
        entry.append([round(v * 1e6) for v in f.field_mt])
    return entry


def run(sc: Scenario, work: Path, *, realtime: bool = False, record: Path | None = None,
        rate_hz: int = DEFAULT_RATE_HZ, on_progress: Callable[[float], None] | None = None,
        on_samples: Callable[[list[Sample], np.ndarray], None] | None = None) -> RunSummary:
    """Run sc to its end. on_progress gets the device time reached (s); on_samples each decoded batch with its
    unwrapped device times (s). The device clock starts at sc.clock_start_s; truth is taken at scenario time,
    device time less that start."""
    work = work.resolve()  # the virtual probe changes its directory to its own "/": give it absolute paths
    work.mkdir(parents=True, exist_ok=True)
    flash = work / "flash"
    if flash.exists():
        shutil.rmtree(flash)  # a fresh device for every run: runs are repeatable
    flash.mkdir()
    install_firmware(flash)
    fd = feed.write(sc, work / "feed", imu_odr_hz=feed.imu_odr_for(rate_hz))
    session = session_file(sc, fd, work, flash, realtime, rate_hz)
    env = dict(os.environ, MICROPYPATH=str(paths.VIRTUAL_BOARD))
    cmd = [paths.micropython(), "-X", f"heapsize={HEAPSIZE}", str(paths.VIRTUAL_BOARD / "vprobe.py"), str(session)]
    summary = RunSummary(sc.name)
    writer = None
    if record is not None:
        writer = RecordingWriter(record, {"device": "virtual probe", "board": "xiao_esp32s3",
                                          "scenario": sc.to_json(), "rate_hz": rate_hz,
                                          "clock": "real time" if realtime else "virtual time"},
                                 with_truth=True)
    rx = Receiver()
    t0 = time.monotonic()
    sq: dict[str, float] = {}
    counts: dict[str, int] = {}
    try:
        with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
            assert proc.stdout is not None
            for raw in proc.stdout:
                data = payload(raw)
                if data is None:
                    text = raw.decode(errors="replace").rstrip()
                    if text.startswith("NeedleTrack "):
                        summary.banner = text
                    elif text:
                        summary.log.append(text)
                    continue
                timed = rx.feed(Notification(time.time(), data))
                if not timed:
                    continue
                samples = [t.sample for t in timed]
                dev = np.array([t.device_s for t in timed])
                summary.samples = rx.samples
                summary.lost = rx.lost
                summary.last_device_s = float(dev[-1])
                tr = feed.truth(sc, fd.attitude_keyframes, dev - sc.clock_start_s)  # at scenario time
                for i, t in enumerate(timed):
                    _accumulate(sq, counts, t.sample, tr, i)
                    if writer is not None:
                        # In virtual time the host clock is the device clock; in real time, the mapping's.
                        writer.add_sample(t.sample, t.device_s, t.host_s if realtime else t.device_s)
                        writer.add_truth(t.device_s, *(float(tr[k][i]) for k in TRUTH_ORDER))
                if on_samples is not None:
                    on_samples(samples, dev)
                if on_progress is not None:
                    on_progress(summary.last_device_s)
            summary.returncode = proc.wait()
    finally:
        summary.wall_s = time.monotonic() - t0
        summary.errors = {k: math.sqrt(sq[k] / counts[k]) for k in sq if counts[k]}
        if writer is not None:
            writer.close(banner=summary.banner, samples_rms_error=summary.errors)
    if summary.returncode != 0 or not summary.banner:
        tail = "\n".join(summary.log[-20:])
        raise VirtualProbeError(f"the virtual probe exited with code {summary.returncode}:\n{tail}")
    return summary


TRUTH_ORDER = ("needle_angle_deg", "guide_angle_deg", "depth_mm", "tip_depth_mm", "pitch_deg", "roll_deg")
_COMPARED = ("needle_angle_deg", "depth_mm", "tip_depth_mm", "pitch_deg", "roll_deg")


def _accumulate(sq: dict[str, float], counts: dict[str, int], s: Sample, tr: dict[str, np.ndarray], i: int) -> None:
    for key in _COMPARED:
        v = getattr(s, key)
        if v is None:
            continue
        sq[key] = sq.get(key, 0.0) + (v - float(tr[key][i])) ** 2
        counts[key] = counts.get(key, 0) + 1
