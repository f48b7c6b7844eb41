"""Run a scenario through the virtual probe: the unchanged firmware on the MicroPython unix port.

The host side of ``needletrack sim run``. It writes the sensor data for the scenario (``sim.feed``), flashes the
firmware tree into the virtual probe's flash directory, boots ``sim/mpy/vprobe.py`` in ``micropython`` and reads
the samples the firmware streams on its serial console, decoding and recording them as any link would.

Virtual time (default) runs as fast as the CPU allows; real time paces the virtual probe by the host clock, for
live use. The board (``--board``) decides what the firmware is charged: with ``cpu="board"`` (the default) its
compute at the board's speed, I2C transfers at the bus's rate and flash writes at the flash chip's
(``sim/boards.py``); with ``cpu="ideal"`` nothing, and a run repeats to the byte.
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
from needletrack.sim import boards, feed
from needletrack.sim.scenario import Fault, Scenario

HEAPSIZE = "512K"  # a probe without a board profile's heap (ideal compute on the default board)
DEFAULT_RATE_HZ = 200
# What the emulation itself holds beside the firmware's heap (about 124 KB at power-on), with room to spare: the
# probe sets the rest aside in one buffer, which the garbage collector scans at every collection, so it is kept
# small (a collection's cost is charged to the firmware that triggered it).
_HEAP_MARGIN = 192 * 1024


def heapsize(board: str) -> str:
    """The unix port's heap for a probe of this board: the board's free heap in 64-bit objects, plus the
    emulation's own (the probe sets aside what the firmware would not have on the board)."""
    prof = boards.profile(board)
    free = int(prof.heap_free_bytes * boards.HEAP_64BIT_FACTOR)
    return str(free + free // 32 + _HEAP_MARGIN)  # + the heap's own tables (allocation and finaliser bits)


def install_firmware(flash: Path, firmware: Path | None = None) -> list[Path]:
    """Copy a firmware tree (default: the project's) into a flash directory, as a plain copy-based flash
    would; returns the files."""
    src = firmware or paths.firmware_dir()
    copied = []
    for f in sorted(src.rglob("*.py")):
        dst = flash / f.relative_to(src)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dst)
        copied.append(dst)
    return copied


def deploy_firmware(flash: Path, firmware: Path | None = None) -> None:
    """Put a firmware tree on the probe's flash as `needletrack flash` puts it on a board: boot.py and main.py
    at the root, every other module compiled to .mpy in slot app-a with its manifest, /nt_app naming the slot.
    The .mpy is for this machine's MicroPython (x64) with the boards' 31-bit small ints, so constants fold as
    they do on the board."""
    from needletrack import firmware_image as fwi
    from needletrack.flashing import POINTER, SLOTS

    src = firmware or paths.firmware_dir()
    spec = fwi.BoardSpec("sim", "x64", 31, "linux", "the virtual probe, deployed as a board's image")
    try:
        image = fwi.build(src, spec, fwi.find_mpy_cross())
    except fwi.BuildError as e:
        raise VirtualProbeError(str(e)) from e
    slot = flash / SLOTS[0]
    for rel, data in image.slot_files.items():
        dst = slot / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
    (slot / fwi.MANIFEST).write_bytes(image.manifest_bytes())
    for rel, data in image.root_files.items():
        (flash / rel).write_bytes(data)
    (flash / POINTER.lstrip("/")).write_text(SLOTS[0])


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
    device_load: dict[str, object] = field(default_factory=dict)  # what the probe measured of the firmware's load


class VirtualProbeError(RuntimeError):
    """The virtual probe did not boot or stopped with an error; the message carries its output."""


def session_file(sc: Scenario, fd: feed.Feed, work: Path, flash: Path, realtime: bool, rate_hz: int,
                 board: str = boards.DEFAULT, cpu: str = "board") -> Path:
    if cpu not in boards.CPU_MODES:
        raise ValueError(f"cpu must be one of {', '.join(boards.CPU_MODES)}, not {cpu!r}")
    jig_um, angles = feed.jig_angles()
    session = {
        "imu": str(fd.imu),
        "hall_a": str(fd.hall_a),
        "hall_b": str(fd.hall_b),
        "flash": str(flash),
        "board": board,
        "board_profile": boards.profile(board).session(),
        "cpu": cpu,
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
        on_samples: Callable[[list[Sample], np.ndarray], None] | None = None, board: str = boards.DEFAULT,
        cpu: str = "board", firmware: Path | None = None) -> RunSummary:
    """Run sc to its end. on_progress gets the device time reached (s); on_samples each decoded batch with its
    unwrapped device times (s). The device clock starts at sc.clock_start_s; truth is taken at scenario time,
    device time less that start. board and cpu: what the firmware is charged (module doc); firmware: another
    firmware tree to run, deployed as the flasher deploys it (default: the project's, as source with
    cpu="ideal", as the flasher deploys it with cpu="board")."""
    work = work.resolve()  # the virtual probe changes its directory to its own "/": give it absolute paths
    work.mkdir(parents=True, exist_ok=True)
    flash = work / "flash"
    if flash.exists():
        shutil.rmtree(flash)  # a fresh device for every run: runs are repeatable
    flash.mkdir()
    if cpu == "board" or firmware is not None:
        deploy_firmware(flash, firmware)
    else:
        install_firmware(flash)
    fd = feed.write(sc, work / "feed", imu_odr_hz=feed.imu_odr_for(rate_hz))
    session = session_file(sc, fd, work, flash, realtime, rate_hz, board, cpu)
    env = dict(os.environ, MICROPYPATH=str(paths.VIRTUAL_BOARD))
    heap = heapsize(board) if cpu == "board" else HEAPSIZE
    cmd = [paths.micropython(), "-X", f"heapsize={heap}", str(paths.VIRTUAL_BOARD / "vprobe.py"), str(session)]
    summary = RunSummary(sc.name)
    writer = None
    if record is not None:
        writer = RecordingWriter(record, {"device": "virtual probe", "board": board, "cpu": cpu,
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
                    elif text.startswith(DEVICE_LOAD_MARK):
                        summary.device_load = json.loads(text[len(DEVICE_LOAD_MARK):])
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
            writer.close(banner=summary.banner, samples_rms_error=summary.errors, device_load=summary.device_load)
    if summary.returncode != 0 or not summary.banner:
        tail = "\n".join(summary.log[-20:])
        last = next((line for line in reversed(summary.log) if line.strip()), "")
        where = "at boot" if not summary.samples else f"after {summary.last_device_s:.1f} s"
        raise VirtualProbeError(f"the firmware stopped {where} on {board}: {last}\n"
                                f"(the virtual probe exited with code {summary.returncode}; its output:)\n{tail}")
    return summary


DEVICE_LOAD_MARK = "# device_load "

TRUTH_ORDER = ("needle_angle_deg", "guide_angle_deg", "depth_mm", "tip_depth_mm", "pitch_deg", "roll_deg")
_COMPARED = ("needle_angle_deg", "depth_mm", "tip_depth_mm", "pitch_deg", "roll_deg")


def _accumulate(sq: dict[str, float], counts: dict[str, int], s: Sample, tr: dict[str, np.ndarray], i: int) -> None:
    for key in _COMPARED:
        v = getattr(s, key)
        if v is None:
            continue
        sq[key] = sq.get(key, 0.0) + (v - float(tr[key][i])) ** 2
        counts[key] = counts.get(key, 0) + 1
