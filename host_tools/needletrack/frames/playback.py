"""A recorded cine played as a live source: frames at their own pace, stamped with the host clock on delivery.

What a frame grabber on a scanner's video output does, from a file: each frame's ``time_s`` is when it was
delivered (``time.monotonic()``), not when the file says it was taken; the cine loops until ``seconds`` have
passed. The frames are decoded once, up front (a cine of a few hundred frames), so the pace never depends on
the decoder.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from needletrack.frames.base import Frame, FrameSource


class Playback(FrameSource):
    def __init__(self, source: FrameSource, *, seconds: float, fps: float | None = None,
                 start_s: float | None = None) -> None:
        self.frames_once = list(source.frames())
        if not self.frames_once:
            raise ValueError(f"{source.name}: no frames to play")
        if fps is None:
            times = np.array([f.time_s for f in self.frames_once])
            steps = np.diff(times)
            fps = 1.0 / float(np.median(steps)) if len(steps) and np.median(steps) > 0 else 25.0
        self.fps = fps
        self.seconds = seconds
        self.start_s = start_s
        self.name = f"playback:{source.name}"
        self.frame_count = None

    def frames(self) -> Iterator[Frame]:
        start = time.monotonic() if self.start_s is None else self.start_s
        n = len(self.frames_once)
        k = max(0, int((time.monotonic() - start) * self.fps))
        while k / self.fps < self.seconds:
            due = start + k / self.fps
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            yield replace(self.frames_once[k % n], time_s=time.monotonic(), index=k)
            k += 1
