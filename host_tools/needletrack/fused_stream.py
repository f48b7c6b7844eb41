"""Frames and samples brought together: each frame with the needle of its instant drawn on it, handed to sinks.

::

    source frames ──► capture time = frame time - video latency ──► wait until the samples cover it
                                                                            │
    samples (Receiver) ──► SampleHistory ──────────────── state_at(capture) ┤
                                                                            ▼
                                     overlay.draw ──► sinks (fused video, sequence file, OpenIGTLink, ...)

:class:`Fuser` does one frame; :func:`fuse_live` runs a live source against a growing history on the asyncio
loop that also carries the link: the interpolation runs on the loop (it reads the history the link appends to),
the drawing and the sinks in a worker thread, so samples keep arriving while a frame is encoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from needletrack import overlay
from needletrack.frames.base import Frame
from needletrack.fusion import NoGo, SampleHistory
from needletrack.geometry import Calibration
from needletrack.needle_state import NeedleState

NO_NOGO = NoGo()
DEFAULT_STYLE = overlay.Style()
HOLD_S = 0.1  # the longest a frame waits for the samples of its instant before it is drawn with what there is


@dataclass(frozen=True)
class FusedFrame:
    frame: Frame
    capture_s: float  # host time the image was formed: frame time - video latency
    state: NeedleState | None
    image: np.ndarray  # BGR, the overlay drawn
    ready_s: float  # host time the fused image was ready


class Sink(Protocol):
    def write(self, fused: FusedFrame) -> None: ...

    def close(self) -> None: ...


class Fuser:
    """One frame at a time: the needle state at the frame's capture time, drawn on it."""

    def __init__(self, history: SampleHistory, calibration: Calibration | None, *, nogo: NoGo = NO_NOGO,
                 video_latency_s: float = 0.0, style: overlay.Style = DEFAULT_STYLE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.history = history
        self.calibration = calibration
        self.nogo = nogo
        self.video_latency_s = video_latency_s
        self.style = style
        self.clock = clock
        self.hidden: str | None = None  # why the needle must not be drawn now (overlay.draw's hidden)

    def capture_s(self, frame: Frame) -> float:
        return frame.time_s - self.video_latency_s

    def state(self, frame: Frame) -> NeedleState | None:
        return self.history.state_at(self.capture_s(frame), self.nogo)

    def draw(self, frame: Frame, state: NeedleState | None) -> FusedFrame:
        image = overlay.draw(frame.image, self.calibration, state, self.style, self.hidden)
        return FusedFrame(frame, self.capture_s(frame), state, image, self.clock())

    def fuse(self, frame: Frame) -> FusedFrame:
        return self.draw(frame, self.state(frame))


def fuse_all(frames: Iterable[Frame], fuser: Fuser, sinks: list[Sink]) -> Iterator[FusedFrame]:
    """Recorded frames against recorded samples: every frame, in order, to every sink."""
    for frame in frames:
        fused = fuser.fuse(frame)
        for sink in sinks:
            sink.write(fused)
        yield fused


async def fuse_live(frames: Iterable[Frame], fuser: Fuser, sinks: list[Sink], stop: asyncio.Event, *,
                    hold_s: float = HOLD_S, on_frame: Callable[[FusedFrame], object] | None = None) -> int:
    """A live source, frame by frame as it delivers them, until it ends or `stop` is set. Returns the number
    of frames fused. A frame whose instant the samples do not reach within `hold_s` is drawn with the state
    there is (held, or NO SIGNAL): a stopped stream must show as lost, not stall the image."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[Frame, float] | None] = asyncio.Queue(maxsize=4)
    quit_reading = threading.Event()

    def read() -> None:
        try:
            for frame in frames:
                if quit_reading.is_set():
                    return
                asyncio.run_coroutine_threadsafe(queue.put((frame, time.monotonic())), loop).result()
        finally:
            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(queue.put(None), loop)

    reader = threading.Thread(target=read, name="frame-source", daemon=True)
    reader.start()
    count = 0
    try:
        while not stop.is_set():
            getter = asyncio.ensure_future(queue.get())
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if getter not in done:
                getter.cancel()
                break
            item = getter.result()
            if item is None:
                break
            frame, arrived = item
            capture = fuser.capture_s(frame)
            # Hold from the frame's arrival, not from now, so waits never add up into a backlog; and not at
            # all once the stream has gone quiet.
            deadline = arrived + hold_s
            while not fuser.history.covers(capture) and not stop.is_set():
                now = time.monotonic()
                newest = fuser.history.newest_s
                if now >= deadline or newest is None or now - newest > hold_s:
                    break
                await asyncio.sleep(0.002)
            state = fuser.state(frame)
            fused = await asyncio.to_thread(_draw_and_sink, fuser, frame, state, sinks)
            count += 1
            if on_frame is not None:
                on_frame(fused)
    finally:
        quit_reading.set()
        while not queue.empty():  # unblock a reader waiting to put
            queue.get_nowait()
    return count


def _draw_and_sink(fuser: Fuser, frame: Frame, state: NeedleState | None, sinks: list[Sink]) -> FusedFrame:
    fused = fuser.draw(frame, state)
    for sink in sinks:
        sink.write(fused)
    return fused
