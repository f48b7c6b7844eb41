"""The ultrasound frames the viewer fuses: a live source and the calibration that places the needle on it.

:func:`open_feed` opens a source as `needletrack stream --frames` does (needletrack.live_fusion): the probe
model's stored calibration, or the DICOM's own regions, or the synthetic probe's exact one; a source with none
is refused with a message before anything starts. A synthetic source plays its scenario over and over, as the
virtual probe does, instead of ending after one pass; opened by name it follows the probe's device clock (the
virtual probe's scenario time is its device time), so its images show the needle where the probe measures it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from needletrack.clock import TICK_PERIOD_US
from needletrack.frames.base import Frame, FrameSource
from needletrack.frames.synthetic import SyntheticSource
from needletrack.fusion import SampleHistory
from needletrack.geometry import Calibration
from needletrack.live_fusion import FusionOptions, open_fusion

DEFAULT_FPS = 30.0  # the recorded video's rate where the source does not say


@dataclass
class FrameFeed:
    """``frames()`` is read by one thread (fuse_live's reader); ``stop()`` ends it from any other, at once for a
    synthetic source, after the frame under way for others; ``ended`` is set once the reader let go of it."""

    source: FrameSource
    calibration: Calibration | None  # None: not calibrated yet (the needle is not drawn; calibrate with I)
    video_latency_s: float = 0.0
    fps: float = DEFAULT_FPS
    # A synthetic source only: the host time its scenario starts at (default: when reading starts; the virtual
    # probe's clock epoch puts the images in step with its needle), and how late each frame arrives after it
    # was formed (a scanner's video latency, to measure).
    start_s: float | None = None
    delay_s: float = 0.0
    follows_probe_clock: bool = False  # start_s is set from the samples' clock mapping as they come
    stopping: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)

    @property
    def name(self) -> str:
        return self.source.name

    def frames(self) -> Iterator[Frame]:
        inner = looped(self.source, self.start_s, self.stopping, self.delay_s, lambda: self.start_s) \
            if isinstance(self.source, SyntheticSource) else self.source.frames()
        try:
            for frame in inner:
                if self.stopping.is_set():
                    return
                yield frame
        finally:
            self.ended.set()

    def stop(self) -> None:
        self.stopping.set()

    def close(self) -> None:
        self.stopping.set()
        self.source.close()


def since_boot_s(device_s: float, uptime_s: int | None) -> float:
    """A sample's device time since the probe's boot: the receiver unwraps the 30-bit tick from the first sample
    it saw, so a probe up longer than one wrap (17.9 min) when the link began is some whole wraps further on;
    the STATUS record's uptime (whole seconds, read every 2 s) says how many."""
    if uptime_s is None:
        return device_s
    period_s = TICK_PERIOD_US / 1e6
    return device_s + max(round((uptime_s - device_s) / period_s), 0) * period_s


def looped(source: SyntheticSource, start_s: float | None = None, stop: threading.Event | None = None,
           delay_s: float = 0.0, moved_start: Callable[[], float | None] | None = None) -> Iterator[Frame]:
    """The synthetic scenario's frames, repeating, each delivered ``delay_s`` after the host clock reaches its
    time, and stamped then. ``moved_start``: asked before each frame for a new start (None: keep it)."""
    start = time.monotonic() if start_s is None else start_s
    stop = stop or threading.Event()
    k = 0
    while not stop.is_set():
        moved = None if moved_start is None else moved_start()
        if moved is not None and moved != start:
            jump = abs(moved - start) > 0.5 / source.fps
            start = moved  # small moves too: the clock mapping settles by a few ms after its first estimate
            if jump:
                k = max(math.ceil((time.monotonic() - start - delay_s) * source.fps), 0)
        due = start + k / source.fps + delay_s
        wait = due - time.monotonic()
        if wait > 0:
            if stop.wait(wait):
                return
        elif wait < -1.0 / source.fps:  # fell behind: a live source skips what it could not show
            k = int((time.monotonic() - start - delay_s) * source.fps)
            continue
        # The last frame is the first one's instant again (t = duration): a loop of the scenario is one frame
        # shorter than the frames it has, as the virtual probe's loop is its duration.
        yield replace(source.frame(k % max(source.frame_count - 1, 1)), time_s=due, index=k)
        k += 1


def open_feed(spec: str, *, probe_model: str | None = None, video_latency_s: float = 0.0,
              store: Path | None = None) -> FrameFeed:
    """Raises CalibrationError (a stored calibration that cannot be read) or FrameSourceError, with the reason,
    when the source cannot be used. A source with no calibration opens uncalibrated."""
    opened = open_fusion(FusionOptions(spec, probe_model, store, video_latency_s, uncalibrated_ok=True),
                         SampleHistory(capacity=1), None)
    calibration = opened.fuser.calibration
    fps = float(getattr(opened.source, "fps", DEFAULT_FPS))  # synthetic and played-back files know theirs
    return FrameFeed(opened.source, calibration, video_latency_s, fps,
                     follows_probe_clock=isinstance(opened.source, SyntheticSource))
