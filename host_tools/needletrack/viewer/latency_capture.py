"""Measuring the frame source's video latency in the viewer, from the live frames and samples.

For a few seconds, while the clinician moves the needle in and out, every raw frame (before the overlay, which
would draw a needle of its own) has its needle echo read along the calibrated needle line
(``latency.echo_depth``), and every sample's depth is kept with its host time; then ``latency.estimate_lag``
finds the lag at which the two agree, or says why it cannot. The echo is read in the overlay's worker thread,
where the frame is anyway, at a few ms a frame.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from needletrack.fused_stream import FusedFrame
from needletrack.geometry import Calibration
from needletrack.latency import LatencyEstimate, echo_depth, estimate_lag
from needletrack.receiver import Timed


@dataclass(frozen=True)
class CaptureProgress:
    elapsed_s: float
    seconds: float
    frames: int
    echoes: int  # frames whose needle echo was found


class LatencyCapture:
    """Frames (through :meth:`write`, a fusion sink) and samples (:meth:`add_samples`) over ``seconds`` of
    frame time from the first frame."""

    def __init__(self, calibration: Calibration, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError(f"seconds must be positive, got {seconds}")
        self.calibration = calibration
        self.seconds = seconds
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._frame_t: list[float] = []
        self._echo_mm: list[float] = []
        self._sample_t: list[float] = []
        self._sample_mm: list[float] = []
        self._guide_deg: float | None = None
        self._start: float | None = None
        self._echoes = 0  # frames whose echo was found (progress is asked for at the window's refresh rate)

    def add_samples(self, batch: list[Timed]) -> None:
        with self._lock:
            if self.done.is_set():
                return
            for t in batch:
                s = t.sample
                if s.guide_angle_deg is not None:
                    self._guide_deg = s.guide_angle_deg
                if s.depth_mm is not None:
                    self._sample_t.append(t.host_s)
                    self._sample_mm.append(s.depth_mm)

    def write(self, fused: FusedFrame) -> None:
        frame = fused.frame
        with self._lock:
            guide = self._guide_deg
            if self.done.is_set():
                return
            if self._start is None:
                self._start = frame.time_s
            if frame.time_s - self._start > self.seconds:
                self.done.set()
                return
        image = frame.image
        d = None
        if guide is not None and (image.shape[1], image.shape[0]) == self.calibration.image_size:
            d = echo_depth(image, self.calibration, guide)
        with self._lock:
            self._frame_t.append(frame.time_s)
            self._echo_mm.append(math.nan if d is None else d)
            self._echoes += d is not None

    def progress(self) -> CaptureProgress:
        with self._lock:
            elapsed = 0.0 if self._start is None or not self._frame_t else self._frame_t[-1] - self._start
            return CaptureProgress(min(elapsed, self.seconds), self.seconds, len(self._frame_t), self._echoes)

    def estimate(self) -> LatencyEstimate:
        with self._lock:
            ft, fd = np.array(self._frame_t), np.array(self._echo_mm)
            st, sd = np.array(self._sample_t), np.array(self._sample_mm)
        return estimate_lag(ft, fd, st, sd)


class CaptureSink:
    """A fusion sink that hands frames to the capture under way, if any."""

    def __init__(self) -> None:
        self.capture: LatencyCapture | None = None

    def write(self, fused: FusedFrame) -> None:
        capture = self.capture
        if capture is not None:
            capture.write(fused)

    def close(self) -> None:
        self.capture = None
