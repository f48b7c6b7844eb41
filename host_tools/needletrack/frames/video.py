"""Ultrasound frames from video files and live capture devices (UVC frame grabbers, webcams) through OpenCV.

Video carries no pixel spacing: it comes from an image calibration made on the same output (same size, same
depth setting). Without one, frames come with ``mm_per_px`` None and the overlay says the image is
uncalibrated.

Times: a file's frames are stamped with the container's presentation time (``CAP_PROP_POS_MSEC`` after the
read) plus ``start_s``; a live device's with the host clock read right after the grab, minus ``latency_s``
(the grabber's capture-to-delivery delay, measured separately). The clock must be the one the needle link
stamps its arrivals with (``time.monotonic`` for the links here).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from needletrack.frames.base import Frame, FrameSource, FrameSourceError, spacing_from
from needletrack.geometry import Calibration


def _size(cap: cv2.VideoCapture) -> tuple[int, int]:
    return int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))


def _as_image(raw: np.ndarray, grey: bool) -> np.ndarray:
    if grey and raw.ndim == 3:
        return np.ascontiguousarray(cv2.cvtColor(raw, cv2.COLOR_BGR2GRAY))
    return raw


class VideoFileSource(FrameSource):
    def __init__(self, path: str | Path, *, calibration: Calibration | None = None, start_s: float = 0.0,
                 grey: bool = False) -> None:
        self.path = Path(path)
        self.name = f"video:{self.path.name}"
        if not self.path.is_file():
            raise FrameSourceError(f"{self.path}: no such video file")
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise FrameSourceError(f"{self.path}: OpenCV cannot open this video")
        self.size = _size(self._cap)
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 else None
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS))
        self.mm_per_px = spacing_from(calibration, self.size, self.name)
        self.start_s = start_s
        self.grey = grey

    def frames(self) -> Iterator[Frame]:
        self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        last_s: float | None = None
        index = 0
        while True:
            ok, raw = self._cap.read()
            if not ok:
                return
            t = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            # Containers without timestamps report 0 or repeat themselves: fall back on the nominal rate.
            if last_s is not None and t <= last_s:
                t = last_s + (1.0 / self.fps if self.fps > 0 else 0.04)
            last_s = t
            yield Frame(_as_image(raw, self.grey), self.start_s + t, self.mm_per_px, None, self.name, index)
            index += 1

    def close(self) -> None:
        self._cap.release()


class CaptureDeviceSource(FrameSource):
    """A live capture device: a UVC index (0, 1, ...) or a device path / stream URL OpenCV can open."""

    frame_count = None

    def __init__(self, device: int | str, *, calibration: Calibration | None = None,
                 size: tuple[int, int] | None = None, fps: float | None = None, latency_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic, grey: bool = False) -> None:
        self.name = f"capture:{device}"
        self._cap = cv2.VideoCapture(device)
        if not self._cap.isOpened():
            raise FrameSourceError(f"{self.name}: OpenCV cannot open this capture device")
        if size is not None:
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])
        if fps is not None:
            self._cap.set(cv2.CAP_PROP_FPS, fps)
        self.size = _size(self._cap)
        self.mm_per_px = spacing_from(calibration, self.size, self.name)
        self.latency_s = latency_s
        self.clock = clock
        self.grey = grey

    def frames(self) -> Iterator[Frame]:
        index = 0
        while True:
            # grab() returns as the frame arrives; decoding in retrieve() must not delay the timestamp.
            if not self._cap.grab():
                return
            t = self.clock() - self.latency_s
            ok, raw = self._cap.retrieve()
            if not ok:
                return
            yield Frame(_as_image(raw, self.grey), t, self.mm_per_px, None, self.name, index)
            index += 1

    def close(self) -> None:
        self._cap.release()
