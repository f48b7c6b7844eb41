"""The viewer's model: one probe and one frame source, live, on an asyncio loop in a thread of its own.

::

    GUI thread                         engine thread (asyncio)
    ──────────                         ───────────────────────
    scan() connect() pair() ... ──►    link (bleak | Bumble | console) ─► StreamSession ─► Receiver
       (return a Future at once)           │ on_samples: SampleHistory, chart, recording, signal watch
                                           │ status records ─► CommandChannel (answers by token, battery)
    snapshot() at the GUI's pace ◄──   frame source ─► fuse_live (overlay in a worker thread) ─► latest frame,
       (a lock held for a copy)                                                                 recording sinks

The GUI never waits on the link: every action is a coroutine submitted to the loop, whose outcome shows in later
snapshots; a failure becomes a message there (and the returned future's exception, for a caller that waits),
never an exception in the GUI. The snapshot holds the newest needle state (for the readouts and alerts: the
freshest measurement), the newest fused frame (the needle at the instant that image was formed), the link's
figures, the charts' data and the recording's progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from needletrack.fused_stream import NO_NOGO, FusedFrame, Fuser, fuse_live
from needletrack.fusion import NoGo, SampleHistory
from needletrack.geometry import Calibration
from needletrack.latency import LatencyEstimate
from needletrack.link import Found, Link, LinkError, open_link
from needletrack.needle_state import NeedleState
from needletrack.protocol import NA, Config, Flag, Opcode, ProtocolError, Result, ResultCode, Status, decode_record
from needletrack.receiver import Receiver, Timed
from needletrack.stream_session import Backoff, State, StreamSession
from needletrack.viewer.chart_buffer import ChartBuffer
from needletrack.viewer.commands import CommandChannel
from needletrack.viewer.frame_feed import FrameFeed, since_boot_s
from needletrack.viewer.latency_capture import CaptureSink, LatencyCapture
from needletrack.viewer.link_quality import LinkQuality
from needletrack.viewer.procedure import Procedure, SetupInfo, SetupState, check_config, check_sample_detent
from needletrack.viewer.recorder import Recorder, RecorderSink, default_record_root, free_bytes, new_directory
from needletrack.viewer.signal_watch import SignalWatch
from needletrack.viewer.snapshot import Level, LinkInfo, Message, Phase, Snapshot

logger = logging.getLogger(__name__)
T = TypeVar("T")

SCAN_S = 3.0
CONNECT_TIMEOUT_S = 10.0
SETTLE_S = 1.0  # a new connection with no samples yet is not an alarm until this long has passed
DISK_EVERY_S = 2.0
DEFAULT_BACKOFF = Backoff()
CONFIG_TIMEOUT_S = 3.0
NOGO_RANGE_MM = (1.0, 200.0)  # what SET_NOGO takes (docs/protocol.md)
MARGIN_RANGE_MM = (0.0, 20.0)
SETUP_HIDDEN = "NEEDLE HIDDEN: SETUP MISMATCH"


class SetupError(RuntimeError):
    """The probe refused or did not take a setting; nothing was changed on the host."""


class LiveEngine:
    """``transport``: as ``needletrack stream -t`` takes it; ``address``: the probe to connect to when none is
    chosen (default: the first found); ``feed``: the frames to fuse (None: samples only); ``nogo``: the no-go
    depth drawn and warned about; ``record_root``: where recordings go, one new directory each."""

    def __init__(self, transport: str, *, address: str | None = None, feed: FrameFeed | None = None,
                 nogo: NoGo = NO_NOGO, record_root: Path | None = None, chart_window_s: float = 20.0,
                 backoff: Backoff = DEFAULT_BACKOFF, link_factory: Callable[[str], Link] = open_link) -> None:
        self.transport = transport
        self.address = address
        self.feed = feed
        self.nogo = nogo
        self.record_root = record_root or default_record_root()
        self.chart_window_s = chart_window_s
        self.backoff = backoff
        self.link_factory = link_factory
        self.history = SampleHistory()
        self.fuser = None if feed is None else Fuser(self.history, feed.calibration, nogo=nogo,
                                                     video_latency_s=feed.video_latency_s)
        self.setup = SetupInfo()
        self.source_calibration = None if feed is None else feed.calibration  # the source's own, if any
        self._capture_sink = CaptureSink()
        self._config_waiters: list[asyncio.Future[Config]] = []
        self._pairing = asyncio.Lock()
        self._frame_listeners: list[Callable[[], object]] = []
        self._lock = threading.Lock()  # guards what on_samples / on_frame change and snapshot() reads
        self.rx = Receiver()
        self.session: StreamSession | None = None
        self.link: Link | None = None
        self.found: tuple[Found, ...] = ()
        self.status: Status | None = None
        self.config: Config | None = None
        self.paired = False
        self.recorder: Recorder | None = None  # the open recording: samples and frames go to it
        self._saving: Recorder | None = None  # a stopped one whose files are being finished
        self.messages: deque[Message] = deque(maxlen=40)
        self._chart = ChartBuffer(chart_window_s)
        self._signal = SignalWatch()
        self._quality = LinkQuality()
        self._scanning = False
        self._closed = False
        self._want_paired = False
        self._connected_at: float | None = None
        self._last: Timed | None = None
        self._last_twitch_s: float | None = None
        self._frame: FusedFrame | None = None
        self._frame_index = -1
        self._frame_times: deque[float] = deque(maxlen=31)
        self._sink = RecorderSink()
        self._commands = CommandChannel(on_status=self._on_status, on_config=self._on_config)
        self._disk: tuple[float, int | None] = (-1e9, None)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._session_stop: asyncio.Event | None = None
        self._session_task: asyncio.Task[None] | None = None
        self._frames_stop: asyncio.Event | None = None
        self._frames_task: asyncio.Task[None] | None = None

    # -- lifetime (GUI thread)
    def start(self) -> LiveEngine:
        """Start the loop thread and the frame source; the link is opened on the first scan or connect."""
        if self._loop is not None:
            return self
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="viewer-engine", daemon=True)
        self._thread.start()
        ready.wait(5.0)
        self._loop = loop
        if self.feed is not None:
            self._submit(self._start_frames(), "frames")
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop recording (the files are finished), disconnect, stop the frames and the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)

    def __enter__(self) -> LiveEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- actions (GUI thread): each returns at once
    def scan(self, timeout_s: float = SCAN_S) -> Future[list[Found]]:
        return self._submit(self._scan(timeout_s), "scan")

    def connect(self, address: str | None = None) -> Future[None]:
        return self._submit(self._connect(address), "connect")

    def disconnect(self) -> Future[None]:
        return self._submit(self._disconnect(), "disconnect")

    def pair(self) -> Future[bool]:
        return self._submit(self._pair(), "pair")

    def command(self, opcode: Opcode, *args: int, quiet: bool = False) -> Future[Result]:
        """One control command; ``quiet``: no message for its answer (for polling, as a wizard's live readout)."""
        return self._submit(self._command(opcode, *args, quiet=quiet), opcode.name)

    def start_recording(self, directory: Path | None = None) -> Future[Path]:
        return self._submit(self._start_recording(directory), "record")

    def stop_recording(self) -> Future[Path | None]:
        return self._submit(self._stop_recording(), "stop recording")

    def toggle_recording(self) -> Future[Any]:
        return self._submit(self._toggle_recording(), "record")

    def confirm_procedure(self, procedure: Procedure) -> Future[SetupInfo]:
        """Send the guide detent and needle length, read the probe's configuration back and compare."""
        return self._submit(self._confirm_procedure(procedure), "setup")

    def set_nogo(self, depth_mm: float | None, margin_mm: float | None = None) -> Future[NoGo]:
        """The no-go tip depth (None: clear) and its margin (None: keep), on the probe and in the viewer."""
        return self._submit(self._set_nogo(depth_mm, margin_mm), "no-go depth")

    def set_image_calibration(self, calibration: Calibration | None) -> bool:
        """Place the needle with another image calibration from the next frame on (None: draw no needle).
        Refused (False, with a message) while recording: the recording's needle poses use one calibration."""
        if self.recorder is not None or self._saving is not None:
            self._message(Level.ERROR, "stop the recording before changing the image calibration")
            return False
        if self.feed is not None:
            self.feed.calibration = calibration
        if self.fuser is not None:
            self.fuser.calibration = calibration
        what = "none" if calibration is None else f"{calibration.probe_model} ({calibration.method})"
        self._message(Level.INFO, f"image calibration: {what}")
        return True

    def measure_latency(self, seconds: float = 20.0) -> Future[LatencyEstimate]:
        """Read the needle echo from the frames for ``seconds`` while the needle moves; the lag that matches
        them to the samples. Not applied: ``set_video_latency`` does that."""
        return self._submit(self._measure_latency(seconds), "latency")

    def set_video_latency(self, seconds: float) -> None:
        if self.feed is not None:
            self.feed.video_latency_s = seconds
        if self.fuser is not None:
            self.fuser.video_latency_s = seconds
        self._record_event("video_latency", f"{seconds * 1000:.1f} ms")  # frames from here on are placed with it
        self._message(Level.INFO, f"video latency: {seconds * 1000:.1f} ms")

    # -- the snapshot (any thread)
    def snapshot(self) -> Snapshot:
        now = time.monotonic()
        with self._lock:
            rx, session, last = self.rx, self.session, self._last
            if session is not None:
                lost = [e.t_host for e in session.events[-8:] if e.what == "lost"]
                if lost:
                    self._signal.link_lost(lost[-1])
            age = rx.age_s(now)
            stale = rx.stale(now) or (last is not None and Flag.STALE in last.sample.flags)
            watching = session is not None and session.state in (State.STREAMING, State.RECONNECTING) and (
                last is not None or (self._connected_at is not None and now - self._connected_at > SETTLE_S))
            state = None
            if last is not None:
                twitch = None if self._last_twitch_s is None else max(now - self._last_twitch_s, 0.0)
                state = NeedleState.from_sample(last.sample, age_s=age if age is not None else float("inf"),
                                                nogo_depth_mm=self.nogo.depth_mm, nogo_margin_mm=self.nogo.margin_mm,
                                                twitch_age_s=twitch)
            outage = self._signal.outage
            signal_lost = self._signal.lost(now, stale)
            charts = self._chart.window(now)
            frame, index = self._frame, self._frame_index
            times = list(self._frame_times)
            quality = self._quality.quality()
            messages = tuple(self.messages)
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 and times[-1] > times[0] else 0.0
        if now - self._disk[0] > DISK_EVERY_S:
            self._disk = (now, free_bytes(self.record_root))
        recorder = self.recorder or self._saving
        capture = self._capture_sink.capture  # once: the engine thread may end it meanwhile
        return Snapshot(
            t=now,
            link=self._link_info(session, rx, age, quality),
            state=state,
            stale=stale,
            signal_lost=signal_lost,
            watching=watching,
            outage=outage,
            flags=Flag(0) if last is None else last.sample.flags,
            image=None if frame is None else frame.image,
            frame_index=index,
            frame_time_s=None if frame is None else frame.frame.time_s,
            frame_ready_s=None if frame is None else frame.ready_s,
            frame_source=None if self.feed is None else self.feed.name,
            frames_per_s=fps,
            nogo_depth_mm=self.nogo.depth_mm,
            nogo_margin_mm=self.nogo.margin_mm,
            setup=self.setup,
            calibration=None if self.fuser is None else self.fuser.calibration,
            frame_state=None if frame is None else frame.state,
            video_latency_s=0.0 if self.fuser is None else self.fuser.video_latency_s,
            raw_image=None if frame is None else frame.frame.image,
            latency_capture=None if capture is None else capture.progress(),
            recording=None if recorder is None else recorder.info(now),
            free_disk_bytes=self._disk[1],
            record_root=self.record_root,
            charts=charts,
            chart_window_s=self.chart_window_s,
            found=self.found,
            messages=messages,
        )

    def _link_info(self, session: StreamSession | None, rx: Receiver, age: float | None,
                   quality: float | None) -> LinkInfo:
        if self._closed:
            phase = Phase.CLOSED
        elif session is None:
            phase = Phase.SCANNING if self._scanning else Phase.IDLE
        else:
            phase = {State.CONNECTING: Phase.CONNECTING, State.STREAMING: Phase.STREAMING,
                     State.RECONNECTING: Phase.RECONNECTING}.get(session.state, Phase.IDLE)
        address = None if session is None else session.address
        found = next((f for f in self.found if f.address == address), None)
        status = self.status
        return LinkInfo(
            transport=self.transport, phase=phase, address=address, name=None if found is None else found.name,
            paired=self.paired, reconnect_attempt=0 if session is None else session.failures + 1,
            reconnects=0 if session is None else session.reconnects, rate_hz=rx.rate_hz, samples=rx.samples,
            lost=rx.lost, missed=rx.missed, loss=rx.loss, quality=quality,
            rssi_dbm=None if found is None else found.rssi, age_s=age,
            battery_pct=None if status is None else status.battery_pct,
            battery_mv=None if status is None else status.battery_mv,
            device_state=None if status is None else status.state.name)

    # -- plumbing
    def _message(self, level: Level, text: str) -> None:
        with self._lock:  # snapshot() copies the deque: appending meanwhile would break its iteration
            self.messages.append(Message(time.monotonic(), level, text))
        (logger.warning if level is Level.ERROR else logger.info)("%s", text)

    def _submit(self, coro: Coroutine[Any, Any, T], what: str) -> Future[T]:
        if self._loop is None or self._closed:
            coro.close()
            future: Future[T] = Future()
            future.set_exception(RuntimeError("the engine is not running"))
            return future
        return asyncio.run_coroutine_threadsafe(self._reported(coro, what), self._loop)

    async def _reported(self, coro: Coroutine[Any, Any, T], what: str) -> T:
        try:
            return await coro
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._message(Level.ERROR, f"{what}: {e}")
            raise

    async def _quietly(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        """For work nobody waits on: a failure is a message only."""
        try:
            await coro
        except Exception as e:
            self._message(Level.ERROR, f"{what}: {e}")

    async def _open_link(self) -> Link:
        if self.link is None:
            link = self.link_factory(self.transport)
            await link.__aenter__()
            self.link = link
        return self.link

    # -- the link (engine thread)
    async def _scan(self, timeout_s: float) -> list[Found]:
        if self.session is not None:
            raise LinkError("already connected: disconnect before scanning")
        link = await self._open_link()
        self._scanning = True
        try:
            found = await link.scan(timeout_s)
        finally:
            self._scanning = False
        self.found = tuple(found)
        self._message(Level.INFO, f"{len(found)} probe(s) found" if found else "no probe found")
        return found

    async def _connect(self, address: str | None) -> None:
        if self.session is not None:
            raise LinkError(f"already connected to {self.session.address}")
        link = await self._open_link()
        address = address or self.address or (self.found[0].address if self.found else None)
        rx = Receiver()
        session = StreamSession(link, rx, address=address, on_samples=self._on_samples,
                                on_connected=self._on_connected, backoff=self.backoff)
        with self._lock:
            self.rx, self.session, self._last, self._last_twitch_s = rx, session, None, None
            self._signal.reset()
            self._quality.reset()
            self._connected_at = None
        self.paired = False
        self.status = None
        try:
            await session.connect(CONNECT_TIMEOUT_S)
        except BaseException:
            with self._lock:
                self.session = None
            with contextlib.suppress(Exception):
                await link.disconnect()
            raise
        self._session_stop = stop = asyncio.Event()
        self._session_task = asyncio.create_task(self._run_session(session, stop))
        self._message(Level.INFO, f"connected to {session.address or self.transport}")

    async def _run_session(self, session: StreamSession, stop: asyncio.Event) -> None:
        try:
            await session.run(stop)
        except Exception as e:
            self._message(Level.ERROR, f"stream stopped: {e}")
        finally:
            self._commands.detach()
            with self._lock:
                if self.session is session:
                    self.session = None
            self.paired = False

    async def _on_connected(self, link: Link) -> None:
        """Every (re)connection: the status records, the battery, and the bond again if there was one."""
        reconnection = self._connected_at is not None
        self._connected_at = time.monotonic()
        self.paired = False
        try:
            await self._commands.attach(link)
        except LinkError as e:
            logger.info("no status records on this link: %s", e)
        with contextlib.suppress(LinkError, ProtocolError):
            record = decode_record(await link.read_status())
            if isinstance(record, Status):
                self.status = record
        if reconnection:
            self._message(Level.INFO, "link back: reconnected")
            self._record_event("link", "reconnected")
        # Not awaited: encryption takes a round trip or two, and samples are flowing already. The control
        # characteristic takes encrypted writes only, so reading the configuration pairs (with the stored bond).
        asyncio.get_running_loop().create_task(self._quietly(self._sync_config(), "reading the probe's setup"))

    async def _sync_config(self) -> None:
        """Every (re)connection: the probe's configuration against the setup, and the viewer's no-go on it."""
        config = await self._read_config()
        if self.nogo.depth_mm is None:
            if config.nogo_depth_mm is not None:  # set on the probe earlier: the viewer shows and warns it too
                self._apply_nogo(NoGo(config.nogo_depth_mm, config.nogo_margin_mm))
        elif not _same_nogo(self.nogo, config):
            await self._set_nogo(self.nogo.depth_mm, self.nogo.margin_mm)

    def _on_status(self, status: Status) -> None:
        self.status = status

    def _on_config(self, config: Config) -> None:
        self.config = config
        self._set_setup(check_config(self.setup.wanted, config))
        waiters, self._config_waiters = self._config_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(config)

    def _set_setup(self, info: SetupInfo) -> None:
        before = self.setup
        self.setup = info
        if self.fuser is not None:
            self.fuser.hidden = SETUP_HIDDEN if info.hides_needle else None
        if info.state is SetupState.MISMATCH and (before.state, before.problem) != (info.state, info.problem):
            self._message(Level.ERROR, f"setup mismatch: {info.problem}")

    def _on_samples(self, batch: list[Timed]) -> None:
        now = time.monotonic()
        self.history.add(batch)
        if self.recorder is not None:
            self.recorder.add_samples(batch)
        capture = self._capture_sink.capture
        if capture is not None:
            capture.add_samples(batch)
        if self.feed is not None and self.feed.follows_probe_clock:  # the probe's boot on the host clock
            status = self.status
            last = batch[-1]
            self.feed.start_s = last.host_s - since_boot_s(last.device_s, None if status is None else status.uptime_s)
        rx = self.rx
        if self.setup.state is SetupState.CONFIRMED:
            checked = check_sample_detent(self.setup, batch[-1].sample.guide_angle_deg)
            if checked is not self.setup:
                self._set_setup(checked)
        with self._lock:
            if self._signal.arrived(now):
                self._chart.gap()
            self._chart.add(batch)
            self._last = batch[-1]
            for t in batch:
                if Flag.TWITCH in t.sample.flags:
                    self._last_twitch_s = t.host_s
            self._quality.update(now, rx.samples, rx.lost + rx.missed)

    async def _disconnect(self) -> None:
        session, stop, task = self.session, self._session_stop, self._session_task
        self._want_paired = False
        if session is None or stop is None or task is None:
            return
        stop.set()
        await task
        if self.link is not None:
            await self.link.disconnect()
        self._message(Level.INFO, "disconnected")

    async def _pair(self) -> bool:
        link, session = self.link, self.session
        if link is None or session is None or not link.is_connected:
            raise LinkError("connect to a probe before pairing")
        async with self._pairing:  # one at a time: encrypting a link twice at once confuses both ends
            if self.paired:
                return False
            return await self._pair_now(link)

    async def _pair_now(self, link: Link) -> bool:
        bonded = await link.pair()
        self.paired = True
        self._want_paired = True
        self._message(Level.INFO, "paired: new bond made" if bonded else "link encrypted with the stored bond")
        return bonded

    async def _command(self, opcode: Opcode, *args: int, quiet: bool = False) -> Result:
        if not self.paired:
            await self._pair()
        assert self.link is not None
        result = await self._commands.send(self.link, opcode, *args)
        if not quiet:
            ok = result.code == ResultCode.OK
            self._message(Level.INFO if ok else Level.ERROR, f"{opcode.name}: {result.code.name}")
        return result

    async def _read_config(self) -> Config:
        waiter: asyncio.Future[Config] = asyncio.get_running_loop().create_future()
        self._config_waiters.append(waiter)
        try:
            result = await self._command(Opcode.READ_CONFIG, quiet=True)
            if result.code != ResultCode.OK:
                raise SetupError(f"the probe did not send its configuration: {result.code.name}")
            return await asyncio.wait_for(waiter, CONFIG_TIMEOUT_S)
        except TimeoutError:
            raise SetupError(f"no configuration from the probe within {CONFIG_TIMEOUT_S:g} s") from None
        finally:
            if waiter in self._config_waiters:
                self._config_waiters.remove(waiter)

    def _require_link(self, what: str) -> None:
        if self.session is None or self.link is None or not self.link.is_connected:
            raise SetupError(f"connect to a probe before {what}")

    async def _send_setting(self, opcode: Opcode, *args: int) -> None:
        result = await self._command(opcode, *args)
        if result.code != ResultCode.OK:
            raise SetupError(f"the probe refused {opcode.name}: {result.code.name}")

    async def _confirm_procedure(self, procedure: Procedure) -> SetupInfo:
        self._require_link("confirming the setup")
        device = self.setup.device
        self._set_setup(SetupInfo(SetupState.CONFIRMING, procedure, device))
        try:
            await self._send_setting(Opcode.SET_GUIDE_ANGLE, round(procedure.guide_angle_deg * 100))
            await self._send_setting(Opcode.SET_NEEDLE_LENGTH, round(procedure.needle_length_mm * 10))
            await self._read_config()  # _on_config compares it with the procedure
        except Exception as e:
            self._set_setup(SetupInfo(SetupState.MISMATCH, procedure, device, f"the probe did not take the setup: {e}"))
            raise
        if self.setup.state is SetupState.CONFIRMED:
            self._message(Level.INFO, f"setup confirmed by the probe: {procedure.describe()}")
        return self.setup

    async def _set_nogo(self, depth_mm: float | None, margin_mm: float | None) -> NoGo:
        margin = self.nogo.margin_mm if margin_mm is None else margin_mm
        if depth_mm is not None and not NOGO_RANGE_MM[0] <= depth_mm <= NOGO_RANGE_MM[1]:
            raise SetupError(f"a no-go depth of {depth_mm:.1f} mm is outside {NOGO_RANGE_MM[0]:g} .. "
                             f"{NOGO_RANGE_MM[1]:g} mm below the transducer face")
        if not MARGIN_RANGE_MM[0] <= margin <= MARGIN_RANGE_MM[1]:
            raise SetupError(f"a warning margin of {margin:.1f} mm is outside {MARGIN_RANGE_MM[0]:g} .. "
                             f"{MARGIN_RANGE_MM[1]:g} mm")
        nogo = NoGo(depth_mm, margin)
        if self.session is not None and self.link is not None and self.link.is_connected:
            await self._send_setting(Opcode.SET_NOGO, NA if depth_mm is None else round(depth_mm * 100),
                                     round(margin * 100))
            config = await self._read_config()
            if not _same_nogo(nogo, config):
                raise SetupError(f"the probe read back a no-go depth of {config.nogo_depth_mm} mm, "
                                 f"not {depth_mm} mm")
        self._apply_nogo(nogo)
        self._message(Level.INFO, "no-go depth cleared" if depth_mm is None
                      else f"no-go depth {depth_mm:.1f} mm (warning {margin:.1f} mm before)")
        return nogo

    async def _measure_latency(self, seconds: float) -> LatencyEstimate:
        if self.fuser is None:
            raise SetupError("no frame source: the latency measured is a video source's")
        if self.fuser.calibration is None:
            raise SetupError("calibrate the image first: the echo is read along the calibrated needle line")
        self._require_link("measuring the latency")
        if self._capture_sink.capture is not None:
            raise SetupError("a latency measurement is under way")
        capture = LatencyCapture(self.fuser.calibration, seconds)
        self._capture_sink.capture = capture
        deadline = time.monotonic() + seconds + 5.0
        try:
            while not capture.done.is_set():
                if time.monotonic() > deadline:
                    raise SetupError(f"the frame source gave {capture.progress().frames} frames in "
                                     f"{seconds + 5.0:g} s")
                await asyncio.sleep(0.1)
        finally:
            self._capture_sink.capture = None
        estimate = await asyncio.to_thread(capture.estimate)
        self._message(Level.INFO if estimate.ok else Level.ERROR, estimate.summary())
        return estimate

    def _apply_nogo(self, nogo: NoGo) -> None:
        self.nogo = nogo
        if self.fuser is not None:
            self.fuser.nogo = nogo
        self._record_event("nogo", "cleared" if nogo.depth_mm is None else f"{nogo.depth_mm:.2f} mm")

    def _record_event(self, kind: str, value: str) -> None:
        """An event in the recording under way, if any, at the device time of the newest sample."""
        recorder, last = self.recorder, self.rx.last
        if recorder is not None:
            recorder.add_event(last.device_s if last else 0.0, kind, value)

    # -- frames
    async def _start_frames(self) -> None:
        assert self.feed is not None and self.fuser is not None
        self._frames_stop = asyncio.Event()
        self._frames_task = asyncio.create_task(self._run_frames(self.feed, self.fuser, self._frames_stop))

    async def _run_frames(self, feed: FrameFeed, fuser: Fuser, stop: asyncio.Event) -> None:
        try:
            n = await fuse_live(feed.frames(), fuser, [self._sink, self._capture_sink], stop,
                                on_frame=self._on_frame)
        except Exception as e:
            self._message(Level.ERROR, f"frames from {feed.name} stopped: {e}")
            return
        if not stop.is_set():
            self._message(Level.ERROR, f"the frame source {feed.name} ended after {n} frames")

    def _on_frame(self, fused: FusedFrame) -> None:
        with self._lock:
            self._frame = fused
            self._frame_index += 1
            self._frame_times.append(fused.ready_s)
        for listener in self._frame_listeners:
            try:
                listener()
            except RuntimeError:  # a window already deleted: it no longer listens
                self._frame_listeners.remove(listener)
                break

    def add_frame_listener(self, listener: Callable[[], object]) -> None:
        """``listener()`` is called in the engine's thread after each new fused frame (a Qt signal's emit, so the
        window shows every frame instead of waiting for its next poll)."""
        self._frame_listeners.append(listener)

    # -- recording
    async def _start_recording(self, directory: Path | None) -> Path:
        if self.recorder is not None:
            return self.recorder.directory
        path = directory or new_directory(self.record_root)
        status = self.status
        session = {"device": None if self.session is None else self.session.address, "transport": self.transport,
                   "host_clock": "time.monotonic", "recorded_by": "needletrack view",
                   "status": None if status is None else repr(status),
                   "frames": None if self.feed is None else self.feed.name,
                   "video_latency_s": None if self.feed is None else self.feed.video_latency_s,
                   "nogo_depth_mm": self.nogo.depth_mm,
                   "setup": {"state": self.setup.state.name,
                             "procedure": None if self.setup.wanted is None else asdict(self.setup.wanted),
                             "probe": None if self.setup.device is None else asdict(self.setup.device)}}
        feed = self.feed
        recorder = await asyncio.to_thread(Recorder, path, session, None if feed is None else feed.calibration,
                                           feed.fps if feed is not None else 30.0)
        self.recorder = recorder
        self._sink.recorder = recorder
        uncalibrated = feed is not None and feed.calibration is None
        self._message(Level.INFO, f"recording to {path}" + (
            ": samples only, the image is not calibrated (I)" if uncalibrated else ""))
        return path

    async def _stop_recording(self) -> Path | None:
        recorder = self.recorder
        if recorder is None:
            return None
        self._sink.recorder = None
        self._saving, self.recorder = recorder, None
        rx = self.rx
        session = self.session
        try:
            await asyncio.to_thread(recorder.close, samples_lost=rx.lost,
                                    samples_missed_while_disconnected=rx.missed,
                                    reconnects=0 if session is None else session.reconnects)
        finally:
            self._saving = None
        self._message(Level.INFO, f"recording saved: {recorder.directory} ({recorder.writer.samples_written} "
                                  f"samples, {recorder.frames} frames)")
        return recorder.directory

    async def _toggle_recording(self) -> Path | None:
        if self._saving is not None:
            return None  # the last one is still being finished: a second press is not a new recording
        if self.recorder is None:
            return await self._start_recording(None)
        return await self._stop_recording()

    async def _shutdown(self) -> None:
        with contextlib.suppress(Exception):
            await self._stop_recording()
        with contextlib.suppress(Exception):
            await self._disconnect()
        if self._frames_stop is not None and self._frames_task is not None and self.feed is not None:
            # The source first, so its reader thread lets go of this loop while the loop still runs.
            self.feed.stop()
            self._frames_stop.set()
            with contextlib.suppress(Exception):
                await self._frames_task
            await asyncio.to_thread(self.feed.ended.wait, 1.0)
        if self.link is not None:
            with contextlib.suppress(Exception):
                await self.link.__aexit__(None, None, None)
            self.link = None
        if self.feed is not None:
            with contextlib.suppress(Exception):
                self.feed.close()


def _same_nogo(nogo: NoGo, config: Config) -> bool:
    if (nogo.depth_mm is None) != (config.nogo_depth_mm is None):
        return False
    depth_ok = nogo.depth_mm is None or abs(nogo.depth_mm - (config.nogo_depth_mm or 0.0)) < 0.006
    return depth_ok and abs(nogo.margin_mm - config.nogo_margin_mm) < 0.006
