"""A recorded cine played as a live source: frames at their own pace, stamped with the host clock on delivery.

What a frame grabber on a scanner's video output does, from a file: each frame's ``time_s`` is when it was
delivered (``time.monotonic()``), not when the file says it was taken; the cine loops until ``seconds`` have
passed. A short cine (up to CACHE_FRAMES) is decoded once, up front, so the pace never depends on the decoder;
a longer file is decoded again on each loop.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from needletrack.frames.base import Frame, FrameSource

CACHE_FRAMES = 600


class Playback(FrameSource):
    def __init__(self, source: FrameSource, *, seconds: float = math.inf, fps: float | None = None,
                 start_s: float | None = None) -> None:
        self.source = source
        cache = source.frame_count is not None and source.frame_count <= CACHE_FRAMES
        head = list(source.frames()) if cache else list(itertools.islice(source.frames(), 16))
        if not head:
            raise ValueError(f"{source.name}: no frames to play")
        self.cached = head if cache else None
        if fps is None:
            steps = np.diff([f.time_s for f in head])
            fps = 1.0 / float(np.median(steps)) if len(steps) and np.median(steps) > 0 else 25.0
        self.fps = fps
        self.seconds = seconds
        self.start_s = start_s
        self.name = f"playback:{source.name}"
        self.frame_count = None

    def _looped(self) -> Iterator[Frame]:
        while True:
            if self.cached is not None:
                yield from self.cached
            else:
                yield from self.source.frames()

    def frames(self) -> Iterator[Frame]:
        start = time.monotonic() if self.start_s is None else self.start_s
        k = max(0, int((time.monotonic() - start) * self.fps))
        for frame in self._looped():
            if k / self.fps >= self.seconds:
                return
            wait = start + k / self.fps - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            yield replace(frame, time_s=time.monotonic(), index=k)
            k += 1

    def close(self) -> None:
        self.source.close()
