"""The BLE link end to end, on the virtual probe's radio (docs/protocol.md, docs/virtual-probe.md).

1. Throughput: the unchanged firmware streams for 10 minutes of virtual time to a Bumble host over the virtual
   radio (two real BLE stacks, the firmware's stack modelled with NimBLE's transmit queue and connection
   events), at 200 samples/s with MTU 23 (one sample per notification) and 1000 samples/s with MTU 247
   (batched). Virtual time runs at up to --pace times real time; which notifications the stack refuses depends
   on virtual time only. Prints samples, lost / duplicated / reordered counts, notifications and their fill,
   and the device's own count of samples dropped under back-pressure (STATUS).
2. Clock mapping: the device timestamps and batching of run 1, as they came off the radio, given arrival times
   on a host clock with 100 ppm of drift against the device and 20 ms of arrival jitter (and 5 % of arrivals
   late by up to 100 ms more, as retransmissions are); prints the mapped time's error against the sample's
   true host time (RMS, 99th percentile, max) and the drift the mapping found.
3. Reconnection: a probe in real time; its link is dropped --drops times (as out of range); prints how long
   after the probe began advertising again the host had samples, and the counts across all reconnections.
   The same run compares the mapped time of every sample with the virtual device's true clock (its epoch on
   the host's monotonic clock): what remains is the link's minimum latency, which arrival times alone cannot
   reveal (the video latency calibration takes it in, docs/latency.md).

    .venv/bin/python bench/bench_link.py [--minutes 10] [--pace 5] [--drops 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from needletrack import paths
from needletrack.link.base import Notification
from needletrack.link.bumble_link import BumbleLink
from needletrack.protocol import Status, decode_record
from needletrack.receiver import Receiver, Timed
from needletrack.sim import runner, scenario, serve
from needletrack.sim.radio import RadioBridgeThread
from needletrack.stream_session import Backoff, StreamSession

# The host's pipeline is measured against a probe that holds its rate (compute, bus and flash free); what
# the firmware costs each board is bench_board_load.py's.
PROBE_CPU = "ideal"

console = Console()
LEAD_S = 20.0  # virtual time allowed for the host to find and connect to the probe
TARGET_CLOCK_RMS_MS = 1.0
TARGET_RESUME_S = 2.0


def _scenario(name: str, duration_s: float) -> scenario.Scenario:
    return scenario.parse({
        "name": name, "duration_s": duration_s, "seed": 11, "guide_angle_deg": 30.0, "needle_length_mm": 60.0,
        "attitude": [[0, 0, 0, 0], [duration_s / 2, 10, -5, 0], [duration_s, 0, 0, 0]],
        "depth": [[0, 5.0], [duration_s / 2, 40.0], [duration_s, 5.0]],
    })


@dataclass
class Throughput:
    rate_hz: int
    mtu: int
    device_s: float = 0.0
    wall_s: float = 0.0
    notes: list[Notification] = field(default_factory=list)
    rx: Receiver = field(default_factory=Receiver)
    status: Status | None = None
    negotiated_mtu: int = 0


def _drain(stream: object, log: list[str]) -> None:
    for raw in stream:  # type: ignore[attr-defined]
        if not raw.startswith(b"NT1 "):
            log.append(raw.decode(errors="replace").rstrip())


async def _stream(bridge: RadioBridgeThread, result: Throughput, seconds: float, progress: Progress,
                  proc: subprocess.Popen[bytes]) -> None:
    task = progress.add_task(f"{result.rate_hz} samples/s, MTU {result.mtu}", total=seconds)
    rx = result.rx
    async with BumbleLink(bridge.transport, mtu=result.mtu) as link:
        await link.connect(timeout=30.0)
        result.negotiated_mtu = link.mtu_size
        t0 = time.monotonic()

        def on_note(note: Notification) -> None:
            result.notes.append(note)
            rx.feed(note)

        await link.start_notify(on_note)
        while proc.poll() is None:
            await asyncio.sleep(0.2)
            done = 0.0 if rx.last is None or rx.first_device_s is None else rx.last.device_s - rx.first_device_s
            progress.update(task, completed=min(done, seconds))
            if done >= seconds:
                break
        result.device_s = 0.0 if rx.last is None or rx.first_device_s is None else (
            rx.last.device_s - rx.first_device_s)
        result.wall_s = time.monotonic() - t0
        with contextlib.suppress(Exception):
            rec = decode_record(await link.read_status())
            result.status = rec if isinstance(rec, Status) else None
        await link.disconnect()


def throughput(rate_hz: int, mtu: int, minutes: float, pace: float, work: Path, progress: Progress) -> Throughput:
    seconds = minutes * 60.0
    sc = _scenario(f"link_{rate_hz}", seconds + LEAD_S + 5.0)
    session, _ = serve.prepare(sc, work, rate_hz=rate_hz, cpu=PROBE_CPU)
    result = Throughput(rate_hz, mtu)
    with RadioBridgeThread() as bridge:
        doc = json.loads(session.read_text())
        doc["realtime"] = False
        doc["radio"] = {"port": bridge.shim_port, "pace": pace}
        session.write_text(json.dumps(doc))
        env = dict(os.environ, MICROPYPATH=str(paths.VIRTUAL_BOARD))
        cmd = [paths.micropython(), "-X", f"heapsize={runner.HEAPSIZE}", str(paths.VIRTUAL_BOARD / "vprobe.py"),
               str(session)]
        log: list[str] = []
        with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
            reader = threading.Thread(target=_drain, args=(proc.stdout, log), daemon=True)
            reader.start()
            try:
                asyncio.run(_stream(bridge, result, seconds, progress, proc))
            finally:
                proc.kill()
        if result.device_s < seconds * 0.99:
            raise RuntimeError(f"the probe stopped after {result.device_s:.0f} s:\n" + "\n".join(log[-20:]))
    return result


# -- clock mapping -------------------------------------------------------------------------------------------

@dataclass
class ClockResult:
    label: str
    rms_ms: float
    p99_ms: float
    max_ms: float
    drift_ppm: float
    uncertainty_ms: float


def clock_mapping(notes: list[Notification], drift_ppm: float, jitter_s: float, label: str,
                  seed: int = 1) -> ClockResult:
    """Re-time the notifications of a real stream: true host time = t0 + device time * (1 + drift), arrival =
    the true time of the notification's last sample plus jitter; then map and compare every sample."""
    rng = np.random.default_rng(seed)
    probe = Receiver()  # only to unwrap the device times as the firmware produced them
    per_note = []
    for note in notes:
        timed = probe.feed(note)
        if timed:
            per_note.append((note.data, np.array([t.device_s for t in timed])))
    t0 = 1000.0
    k = 1.0 + drift_ppm * 1e-6
    rx = Receiver()
    errors = []
    for data, dev in per_note:
        delay = rng.uniform(0.0, jitter_s)
        if rng.random() < 0.05:
            delay += rng.uniform(0.0, 0.1)
        arrival = t0 + dev[-1] * k + delay
        for t, d in zip(rx.feed(Notification(arrival, data)), dev, strict=True):
            errors.append(t.host_s - (t0 + d * k))
    e = np.abs(np.array(errors[len(errors) // 20:]))  # after the first 5 %: the estimate needs a few windows
    m = rx.clock.mapping()
    return ClockResult(label, float(np.sqrt(np.mean(e**2)) * 1e3), float(np.percentile(e, 99) * 1e3),
                       float(e.max() * 1e3), m.drift * 1e6, m.uncertainty_s * 1e3)


# -- reconnection --------------------------------------------------------------------------------------------

@dataclass
class Reconnects:
    resume_s: list[float] = field(default_factory=list)
    rx: Receiver = field(default_factory=Receiver)
    reconnects: int = 0
    gaps_within: int = 0
    clock_errors_ms: list[float] = field(default_factory=list)


async def _drops(served: serve.ServedProbe, drops: int, progress: Progress) -> Reconnects:
    out = Reconnects()
    parts: list[list[int]] = []  # per connection
    first_arrival: list[float] = []

    epoch = served.console.device_epoch()

    def on_samples(batch: list[Timed]) -> None:
        if len(parts) < out.rx.connections:  # the first samples of a new connection
            parts.append([])
            first_arrival.append(time.monotonic())
        parts[-1].extend(t.sample.seq for t in batch)
        if epoch is not None:
            out.clock_errors_ms.extend((t.host_s - (epoch + t.device_s)) * 1e3 for t in batch)

    async def until(cond: object, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not cond():  # type: ignore[operator]
                await asyncio.sleep(0.005)

    async def drop(bridge: object) -> int:
        return int(await bridge.drop_links())  # type: ignore[attr-defined]

    async def began(bridge: object) -> float:
        return float(bridge.advertising_began())  # type: ignore[attr-defined]

    task_id = progress.add_task("forced disconnects", total=drops)
    rng = random.Random(3)
    stop = asyncio.Event()
    async with BumbleLink(served.transport) as link:
        session = StreamSession(link, out.rx, on_samples=on_samples, backoff=Backoff(0.1, 1.0))
        await session.connect()
        task = asyncio.create_task(session.run(stop))
        await until(lambda: parts and len(parts[0]) > 100, 10.0)
        for n in range(2, drops + 2):
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            await asyncio.to_thread(served.radio.call, drop)
            await until(lambda n=n: len(parts) == n and len(parts[-1]) > 20, 10.0)
            out.resume_s.append(first_arrival[-1] - await asyncio.to_thread(served.radio.call, began))
            progress.advance(task_id)
        stop.set()
        await task
    out.reconnects = session.reconnects
    out.gaps_within = sum(1 for p in parts for a, b in itertools.pairwise(p) if (b - a) % 65536 != 1)
    return out


def reconnection(drops: int, work: Path, progress: Progress) -> Reconnects:
    sc = _scenario("link_reconnect", 60.0)
    with serve.served(sc, work, cpu=PROBE_CPU) as probe:
        return asyncio.run(_drops(probe, drops, progress))


# -- report --------------------------------------------------------------------------------------------------

def _throughput_table(results: list[Throughput], minutes: float) -> Table:
    t = Table(title=f"Streaming over the virtual radio, {minutes:g} min of device time each")
    t.add_column("")
    for r in results:
        t.add_column(f"{r.rate_hz} samples/s, MTU {r.negotiated_mtu}", justify="right")
    rows: list[tuple[str, list[str]]] = [
        ("device time", [f"{r.device_s:.1f} s" for r in results]),
        ("samples received", [str(r.rx.samples) for r in results]),
        ("samples per second of device time", [f"{r.rx.rate_hz:.2f}" for r in results]),
        ("lost (sequence gaps)", [str(r.rx.lost) for r in results]),
        ("duplicated", [str(r.rx.duplicates) for r in results]),
        ("reordered", [str(r.rx.reordered) for r in results]),
        ("malformed notifications", [str(r.rx.malformed) for r in results]),
        ("notifications", [str(r.rx.notifications) for r in results]),
        ("samples per notification", [f"{r.rx.samples / max(r.rx.notifications, 1):.2f}" for r in results]),
        ("dropped on the device (STATUS)", ["?" if r.status is None else str(r.status.dropped) for r in results]),
        ("wall time", [f"{r.wall_s:.0f} s" for r in results]),
    ]
    for name, values in rows:
        t.add_row(name, *values)
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="device time per throughput run")
    ap.add_argument("--pace", type=float, default=5.0, help="virtual time at most this many times real time")
    ap.add_argument("--drops", type=int, default=10, help="forced disconnects in the reconnection run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f}"),
            TimeRemainingColumn(), console=console) as progress:
        results = [throughput(rate, mtu, args.minutes, args.pace, Path(tmp) / f"tp{rate}", progress)
                   for rate, mtu in ((200, 23), (1000, 247))]
        rec = reconnection(args.drops, Path(tmp) / "reconnect", progress)
    console.print(_throughput_table(results, args.minutes))
    for r in results:
        gapless = r.rx.lost == 0 and r.rx.duplicates == 0 and r.rx.reordered == 0
        console.print(f"  {r.rate_hz}/s at MTU {r.negotiated_mtu}: "
                      + ("[green]no gaps[/]" if gapless else "[red]gaps[/]"))

    t = Table(title="Clock mapping: mapped device time vs the sample's true host time")
    for col in ("stream", "host clock", "RMS", "99 %", "max", "drift found", "uncertainty"):
        t.add_column(col, justify="right")
    worst = 0.0
    for r in results:
        for drift in (+100.0, -100.0):
            c = clock_mapping(r.notes, drift, 0.020, f"{r.rate_hz}/s MTU {r.negotiated_mtu}")
            worst = max(worst, c.rms_ms)
            t.add_row(c.label, f"{drift:+.0f} ppm, 20 ms jitter", f"{c.rms_ms:.3f} ms", f"{c.p99_ms:.3f} ms",
                      f"{c.max_ms:.3f} ms", f"{c.drift_ppm:+.1f} ppm", f"{c.uncertainty_ms:.3f} ms")
    console.print(t)
    console.print(f"  worst RMS {worst:.3f} ms (target < {TARGET_CLOCK_RMS_MS} ms): "
                  + ("[green]met[/]" if worst < TARGET_CLOCK_RMS_MS else "[red]missed[/]"))

    rs = rec.resume_s
    console.print(f"Reconnection after {len(rs)} forced disconnects (probe in real time, 200 samples/s): "
                  f"samples again {statistics.median(rs) * 1e3:.0f} ms median, {max(rs) * 1e3:.0f} ms max "
                  f"after the probe advertised (target < {TARGET_RESUME_S:g} s: "
                  + ("[green]met[/]" if max(rs) < TARGET_RESUME_S else "[red]missed[/]") + ")")
    e = np.array(rec.clock_errors_ms[len(rec.clock_errors_ms) // 4:])
    if len(e):
        console.print(f"  mapped time vs the virtual device's true clock over the radio: mean {e.mean():+.2f} ms, "
                      f"spread {e.std():.2f} ms RMS (the mean is the link's minimum latency)")
    rx = rec.rx
    console.print(f"  {rec.reconnects} reconnections; lost {rx.lost}, duplicated {rx.duplicates}, reordered "
                  f"{rx.reordered}, gaps within a connection {rec.gaps_within}, made while disconnected "
                  f"{rx.missed}, device restarts {rx.restarts}")
    if not math.isfinite(worst):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
