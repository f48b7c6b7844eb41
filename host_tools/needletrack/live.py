"""`needletrack scan`, `stream` and `record`: a probe over any link, shown live and optionally recorded."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from needletrack.fused_stream import fuse_live
from needletrack.fusion import SampleHistory
from needletrack.link import Found, Link, LinkError, open_link
from needletrack.live_fusion import FusionOptions, open_fusion
from needletrack.protocol import Flag, ProtocolError, Status, decode_record
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
        # The probe's own headroom: a loop near 100 % is about to fall behind its IMU; overruns say it has.
        load = "not reported" if status.loop_load_pct is None else f"{status.loop_load_pct} %"
        hot = (status.loop_load_pct or 0) >= 90 or status.fifo_overruns
        text = f"{load}, {status.fifo_overruns} IMU FIFO overruns since boot"
        t.add_row("device loop", f"[red]{text}[/]" if hot else text)
    if recording is not None:
        t.add_row("recording", str(recording))
    return t


STATUS_EVERY_S = 2.0  # the probe refreshes its STATUS record every 2 s (docs/protocol.md)


class _Session:
    """One `stream` or `record` run: the link, the receiver, the recording and the frames, and their display."""

    def __init__(self, transport: str, address: str | None, record: Path | None, console: Console,
                 fusion: FusionOptions | None) -> None:
        self.transport = transport
        self.address = address
        self.record = record
        self.console = console
        self.rx = Receiver()
        self.history = SampleHistory()
        self.status: Status | None = None
        self.writer: RecordingWriter | None = None
        self.recording_open = False
        self.stop = asyncio.Event()
        self.frames = 0
        # Opened first: a frame source that cannot be calibrated is refused before the probe is touched.
        self.fusion = open_fusion(fusion, self.history, record) if fusion is not None else None

    def on_samples(self, batch: list[Timed]) -> None:
        self.history.add(batch)
        # Notifications already on their way when the session ends are dropped, not written after the close.
        if self.writer is not None and self.recording_open:
            for t in batch:
                self.writer.add_sample(t.sample, t.device_s, t.host_s)

    async def on_connected(self, link: Link) -> None:
        await self._read_status(link)
        if self.writer is not None:  # made after the first connection: this is a reconnection
            last = self.rx.last
            self.writer.add_event(last.device_s if last else 0.0, "link", "reconnected")

    async def _read_status(self, link: Link) -> None:
        # A link down, or a record this host cannot read: the last STATUS stays (the view says what it knows).
        with contextlib.suppress(LinkError, ProtocolError):
            rec = decode_record(await link.read_status())
            if isinstance(rec, Status):
                self.status = rec

    async def _follow_status(self, link: Link) -> None:
        # The device's state, battery and loop load change while it streams: read again every STATUS period.
        while not self.stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), STATUS_EVERY_S)
            if not self.stop.is_set():
                await self._read_status(link)

    def _on_frame(self, _fused: object) -> None:
        self.frames += 1

    async def run(self, seconds: float | None) -> Receiver:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, self.stop.set)
            loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        try:
            async with open_link(self.transport) as link:
                await self._stream(link, seconds)
        finally:
            if self.fusion is not None:
                self.fusion.close()
        return self.rx

    async def _stream(self, link: Link, seconds: float | None) -> None:
        rx = self.rx
        session = StreamSession(link, rx, address=self.address, on_samples=self.on_samples,
                                on_connected=self.on_connected)
        await session.connect()
        where = session.address or self.transport
        if self.record is not None:
            self.writer = RecordingWriter(self.record, {"device": where, "transport": self.transport,
                                                        "host_clock": "time.monotonic", "status": repr(self.status)})
            self.recording_open = True
        tasks: list[asyncio.Task[Any]] = [asyncio.create_task(session.run(self.stop)),
                                          asyncio.create_task(self._follow_status(link))]
        if self.fusion is not None:
            f = self.fusion
            tasks.append(asyncio.create_task(fuse_live(f.source.frames(), f.fuser, f.sinks, self.stop,
                                                       on_frame=self._on_frame)))
        deadline = None if seconds is None else time.monotonic() + seconds

        def view() -> Table:
            t = _view(rx, where, self.status, self.record, session)
            if self.fusion is not None:
                t.add_row("frames", f"{self.frames} fused from {self.fusion.source.name}"
                          + (f", OpenIGTLink on port {self.fusion.igtl.port}" if self.fusion.igtl else ""))
            return t

        try:
            with Live(view(), console=self.console, refresh_per_second=5, transient=False) as live:
                while not self.stop.is_set() and not any(t.done() for t in tasks):
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), 0.2)
                    live.update(view())
        finally:
            self.stop.set()
            self.recording_open = False
            for t in tasks:
                with contextlib.suppress(Exception):
                    await t
            if self.writer is not None:
                self.writer.close(samples_lost=rx.lost, samples_missed_while_disconnected=rx.missed,
                                  duplicates_dropped=rx.duplicates, reordered_dropped=rx.reordered,
                                  reconnects=session.reconnects, device_restarts=rx.restarts,
                                  malformed_notifications=rx.malformed, frames_fused=self.frames)
        for t in tasks:
            error = t.exception() if t.done() and not t.cancelled() else None
            if error is not None:
                raise error


async def run(transport: str, address: str | None, seconds: float | None, record: Path | None,
              console: Console, fusion: FusionOptions | None = None) -> Receiver:
    """Connect, stream until `seconds` pass or Ctrl-C, show it live, and record it if asked. A dropped link is
    reconnected (same probe, with backoff) for as long as the session lasts. With `fusion`, frames from its
    source get the needle of their instant drawn on them, into the recording and to OpenIGTLink clients."""
    return await _Session(transport, address, record, console, fusion).run(seconds)
