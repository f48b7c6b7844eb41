"""`needletrack scan`, `stream` and `record`: a probe over any link, shown live and optionally recorded."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from needletrack.link import Found, Link, LinkError, open_link
from needletrack.protocol import Flag, Status, decode_record
from needletrack.receiver import Receiver, Timed
from needletrack.recording import RecordingWriter, flags_text
from needletrack.stream_session import State, StreamSession


async def scan(transport: str, timeout: float) -> list[Found]:
    async with open_link(transport) as link:
        return await link.scan(timeout)


def _fmt(v: float | None, unit: str) -> str:
    return "—" if v is None else f"{v:7.2f} {unit}"


def _view(rx: Receiver, where: str, status: Status | None, recording: Path | None,
          session: StreamSession | None = None) -> Table:
    t = Table(show_header=False, title=f"NeedleTrack — {where}", min_width=60)
    now = time.monotonic()
    age = rx.age_s(now)
    last = rx.last
    if last is None or rx.stale(now):
        why = ""
        if session is not None and session.state is State.RECONNECTING:
            why = f", link lost: reconnecting (attempt {session.failures + 1})"
        t.add_row("signal", "[bold white on red] NO SIGNAL [/]" + (f" for {age:.1f} s" if age is not None else "")
                  + why)
    else:
        s = last.sample
        t.add_row("needle angle", _fmt(s.needle_angle_deg, "deg"))
        t.add_row("depth", _fmt(s.depth_mm, "mm"))
        t.add_row("tip depth", _fmt(s.tip_depth_mm, "mm"))
        t.add_row("pitch / roll", f"{_fmt(s.pitch_deg, 'deg')} / {_fmt(s.roll_deg, 'deg')}")
        warn = Flag.NOGO_REACHED | Flag.NOGO_NEAR | Flag.IMU_FAULT | Flag.HALL_FAULT | Flag.DEPTH_INVALID
        style = "bold red" if s.flags & warn else ""
        t.add_row("flags", f"[{style}]{flags_text(s.flags) or '-'}[/]" if style else (flags_text(s.flags) or "-"))
    t.add_row("samples", f"{rx.samples}  ({rx.rate_hz:.1f}/s of device time)")
    t.add_row("lost", f"{rx.lost} ({100 * rx.loss:.2f} %), {rx.malformed} malformed notifications")
    if session is not None and session.reconnects:
        t.add_row("link", f"{session.reconnects} reconnections, {rx.missed} samples made while disconnected"
                  + (f", device restarted {rx.restarts}x" if rx.restarts else ""))
    if rx.duplicates or rx.reordered:
        t.add_row("dropped", f"{rx.duplicates} duplicates, {rx.reordered} out of order")
    if rx.clock.ready:
        m = rx.clock.mapping()
        t.add_row("clock", f"drift {m.drift * 1e6:+.1f} ppm, uncertainty {m.uncertainty_s * 1e3:.2f} ms")
    if status is not None:
        batt = "unknown" if status.battery_pct is None else f"{status.battery_pct} %"
        cal = f"{status.calibration_id:04x}" if status.calibration_id else "factory"
        t.add_row("device", f"{status.state.name}, battery {batt}, {status.rate_hz} Hz, calibration {cal}")
    if recording is not None:
        t.add_row("recording", str(recording))
    return t


async def run(transport: str, address: str | None, seconds: float | None, record: Path | None,
              console: Console) -> Receiver:
    """Connect, stream until `seconds` pass or Ctrl-C, show it live, and record it if asked. A dropped link is
    reconnected (same probe, with backoff) for as long as the session lasts."""
    rx = Receiver()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    writer: RecordingWriter | None = None
    status: list[Status | None] = [None]
    recording_open = [False]

    def on_samples(batch: list[Timed]) -> None:
        # Notifications already on their way when the session ends are dropped, not written after the close.
        if writer is not None and recording_open[0]:
            for t in batch:
                writer.add_sample(t.sample, t.device_s, t.host_s)

    async def on_connected(link: Link) -> None:
        with contextlib.suppress(LinkError):
            rec = decode_record(await link.read_status())
            status[0] = rec if isinstance(rec, Status) else None
        if writer is not None:  # made after the first connection: this is a reconnection
            writer.add_event(rx.last.device_s if rx.last else 0.0, "link", "reconnected")

    link: Link = open_link(transport)
    async with link:
        session = StreamSession(link, rx, address=address, on_samples=on_samples, on_connected=on_connected)
        await session.connect()
        where = session.address or transport
        if record is not None:
            writer = RecordingWriter(record, {"device": where, "transport": transport,
                                              "host_clock": "time.monotonic", "status": repr(status[0])})
            recording_open[0] = True
        task = asyncio.create_task(session.run(stop))
        deadline = None if seconds is None else time.monotonic() + seconds
        try:
            with Live(_view(rx, where, status[0], record, session), console=console, refresh_per_second=5,
                      transient=False) as live:
                while not stop.is_set() and not task.done():
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.2)
                    live.update(_view(rx, where, status[0], record, session))
        finally:
            stop.set()
            recording_open[0] = False
            with contextlib.suppress(Exception):
                await task
            if writer is not None:
                writer.close(samples_lost=rx.lost, samples_missed_while_disconnected=rx.missed,
                             duplicates_dropped=rx.duplicates, reordered_dropped=rx.reordered,
                             reconnects=session.reconnects, device_restarts=rx.restarts,
                             malformed_notifications=rx.malformed)
        error = task.exception() if task.done() and not task.cancelled() else None
        if error is not None:
            raise error
    return rx
