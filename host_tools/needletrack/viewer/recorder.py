"""A recording started and stopped from the viewer: the samples (docs/recording.md) and, with frames, the fused
video and the PLUS sequence file, in one new directory per recording.

Samples are added on the engine's loop; frames come from the fusion's worker thread through
:class:`RecorderSink`, which the fuser keeps for the whole session and which forwards to whichever recording is
open. Closing takes the frame lock, so a frame being written is finished before its file is.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from needletrack.fused_stream import FusedFrame, Sink
from needletrack.geometry import Calibration
from needletrack.live_fusion import FUSED_VIDEO, SEQUENCE
from needletrack.receiver import Timed
from needletrack.recording import RecordingWriter
from needletrack.sinks import SequenceSink, VideoSink
from needletrack.viewer.snapshot import RecordingInfo


def default_record_root() -> Path:
    return Path.home() / "NeedleTrack" / "recordings"


def new_directory(root: Path, now: float | None = None) -> Path:
    """root/YYYYmmdd-HHMMSS, with -2, -3 ... if that exists: a recording never goes into an existing one."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    path = root / stamp
    n = 2
    while path.exists():
        path = root / f"{stamp}-{n}"
        n += 1
    return path


def free_bytes(path: Path) -> int | None:
    """Free space on the disk that holds ``path`` (or would, once made)."""
    p = path
    while not p.exists():
        if p.parent == p:
            return None
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


class Recorder:
    def __init__(self, directory: Path, session: dict[str, Any], calibration: Calibration | None, fps: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = directory
        self.clock = clock
        self.writer = RecordingWriter(directory, session)
        self.sinks: list[Sink] = []
        try:
            if calibration is not None:
                self.sinks.append(VideoSink(directory / FUSED_VIDEO, calibration.image_size, fps))
                self.sinks.append(SequenceSink(directory / SEQUENCE, calibration))
        except BaseException:
            for sink in self.sinks:
                sink.close()
            self.writer.close()
            raise
        self.started_s = clock()
        self.stopped_s: float | None = None
        self.frames = 0
        self._lock = threading.Lock()
        self._open = True

    def add_samples(self, batch: Iterable[Timed]) -> None:
        for t in batch:
            self.writer.add_sample(t.sample, t.device_s, t.host_s)

    def add_event(self, device_s: float, kind: str, value: float | int | str) -> None:
        self.writer.add_event(device_s, kind, value)

    def write(self, fused: FusedFrame) -> None:
        with self._lock:
            if not self._open:
                return
            for sink in self.sinks:
                sink.write(fused)
            self.frames += 1

    def info(self, now: float) -> RecordingInfo:
        elapsed = (self.stopped_s if self.stopped_s is not None else now) - self.started_s
        return RecordingInfo(self.directory, elapsed, self.writer.samples_written, self.frames,
                             saving=self.stopped_s is not None)

    def close(self, **extra: Any) -> None:
        with self._lock:
            if not self._open:
                return
            self._open = False
            self.stopped_s = self.clock()
            for sink in self.sinks:
                sink.close()
        self.writer.close(frames_fused=self.frames, **extra)


class RecorderSink:
    """The fuser's one sink: hands each fused frame to the open recording, if any."""

    def __init__(self) -> None:
        self.recorder: Recorder | None = None

    def write(self, fused: FusedFrame) -> None:
        recorder = self.recorder
        if recorder is not None:
            recorder.write(fused)

    def close(self) -> None:
        """Recordings are closed by whoever started them."""
