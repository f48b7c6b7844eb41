"""Where fused frames go: the fused video, the PLUS sequence file, screenshots, OpenIGTLink.

Each sink takes :class:`needletrack.fused_stream.FusedFrame` objects one at a time (``write``) and finishes its
output on ``close``. They are what the demo, ``needletrack fuse`` and the viewer hand frames to.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2

from needletrack.fused_stream import FusedFrame
from needletrack.fused_video import FusedVideoWriter
from needletrack.geometry import Calibration
from needletrack.igtl_server import IgtlServer
from needletrack.sequence_file import NEEDLE_TIP, SequenceWriter, needle_tip_transform


class VideoSink:
    """The frames as the clinician saw them (overlay drawn), as an MP4."""

    def __init__(self, path: Path, size: tuple[int, int], fps: float) -> None:
        self.writer = FusedVideoWriter(path, size, fps)
        self.path = path

    def write(self, fused: FusedFrame) -> None:
        self.writer.write(fused.image)

    def close(self) -> None:
        self.writer.close()


class SequenceSink:
    """The ultrasound images as acquired (no overlay) with the needle tip per frame and the capture times: a
    PLUS sequence file 3D Slicer loads (docs/recording.md)."""

    def __init__(self, path: Path, calibration: Calibration) -> None:
        self.calibration = calibration
        self.writer = SequenceWriter(path, calibration.mm_per_px, transforms=(NEEDLE_TIP,))
        self.path = path

    def write(self, fused: FusedFrame) -> None:
        tip = needle_tip_transform(self.calibration, fused.state)
        self.writer.append(fused.frame.image, fused.capture_s, {NEEDLE_TIP: tip})

    def close(self) -> None:
        self.writer.close()


class SnapshotSink:
    """Keeps the fused frame that scores highest (by ``score``; None: not a candidate) and writes it as a PNG
    on close: the screenshot of a session."""

    def __init__(self, path: Path, score: Callable[[FusedFrame], float | None]) -> None:
        self.path = path
        self.score = score
        self.best: FusedFrame | None = None
        self.best_score = float("-inf")

    def write(self, fused: FusedFrame) -> None:
        s = self.score(fused)
        if s is not None and s > self.best_score:
            self.best, self.best_score = fused, s

    def close(self) -> None:
        if self.best is not None:
            cv2.imwrite(str(self.path), self.best.image, [cv2.IMWRITE_PNG_COMPRESSION, 9])


class IgtlSink:
    """The needle and the fused image to OpenIGTLink clients (3D Slicer), frame by frame."""

    def __init__(self, server: IgtlServer, calibration: Calibration | None) -> None:
        self.server = server
        self.calibration = calibration

    def write(self, fused: FusedFrame) -> None:
        self.server.push_state(fused.state, calibration=self.calibration)
        self.server.push_image(fused.image, calibration=self.calibration)

    def close(self) -> None:
        """The server belongs to the caller, who stops it."""
