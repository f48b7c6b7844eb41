"""A recording's frames for review: their times from the PLUS sequence file, their pixels by index.

Frame ``i`` of ``fused.mp4`` and frame ``i`` of ``ultrasound.seq.mha`` are the same frame: both files are
written by the same call for each fused frame (viewer/recorder.py, live_fusion.py). The video has no times of
its own (it plays at a fixed rate); the sequence file has each frame's capture time on the host clock, the
clock of ``samples.csv``'s ``host_time_s``. So the times always come from the sequence file, and the pixels from
the video (the overlay as the clinician saw it) or, where the video cannot be read (a recorder killed before
the MP4's index was written), from the sequence file itself (the images as acquired, without the overlay).

An interrupted recording has no sequence file but its pieces (``ultrasound.partial.seq.nhdr`` and ``.raw``):
they are read where they are, every frame whose fields and pixels reached the disk whole, and never changed
(``needletrack.sequence_file.recover`` makes the file from them, on request).

Everything here only reads: pixels through a read-only memory map, the video through OpenCV.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

_FIELD = re.compile(r"^Seq_Frame(\d+)_([A-Za-z0-9]+)\s*(?::=|=)\s*(.*)$")
_HEADER_LIMIT = 1 << 30  # a header larger than this is not one the recorder wrote
_SEEK_AHEAD = 24  # frames to decode forward rather than seek (a seek decodes from the keyframe anyway)


class FramesError(ValueError):
    """Frames that cannot be read; the message says which file and why."""


@dataclass(frozen=True)
class SequenceInfo:
    path: Path  # the file read (the header, for the pieces of an interrupted recording)
    times_s: np.ndarray  # per frame, host seconds, increasing
    width: int
    height: int
    channels: int  # 1 grey, 3 RGB as stored
    data_path: Path
    data_offset: int
    partial: bool  # the pieces of an interrupted recording

    @property
    def frame_bytes(self) -> int:
        return self.width * self.height * self.channels


def _read_header(path: Path, end: bytes) -> tuple[str, int]:
    """The text of ``path`` up to and including ``end`` (or all of it when ``end`` is empty), and its length."""
    chunks: list[bytes] = []
    size = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 20)
            if not block:
                if end:
                    raise FramesError(f"{path}: the header never ends (no {end.decode().strip()!r})")
                break
            chunks.append(block)
            size += len(block)
            if end:
                data = b"".join(chunks)
                at = data.find(end)
                if at >= 0:
                    stop = at + len(end)
                    return data[:stop].decode("latin-1"), stop
                chunks = [data]
            if size > _HEADER_LIMIT:
                raise FramesError(f"{path}: no header end in the first {_HEADER_LIMIT >> 20} MB")
    data = b"".join(chunks)
    return data.decode("latin-1"), len(data)


def _frame_times(lines: list[str], source: Path, complete_only: bool) -> np.ndarray:
    """The Timestamp of each frame from 0 on; with ``complete_only``, of the frames whose fields are all there
    (ImageStatus is each frame's last field)."""
    times: dict[int, float] = {}
    complete: set[int] = set()
    for line in lines:
        m = _FIELD.match(line.strip())
        if m is None:
            continue
        i, field, value = int(m.group(1)), m.group(2), m.group(3).strip()
        if field == "Timestamp":
            try:
                times[i] = float(value)
            except ValueError:
                raise FramesError(f"{source}: frame {i}'s timestamp {value!r} is not a number") from None
        elif field == "ImageStatus":
            complete.add(i)
    out: list[float] = []
    while len(out) in times and (not complete_only or len(out) in complete):
        out.append(times[len(out)])
    t = np.array(out, dtype=float)
    if len(t) > 1 and not np.all(np.diff(t) > 0):
        raise FramesError(f"{source}: the frame timestamps do not increase")
    return t


def _mha(path: Path) -> SequenceInfo:
    text, offset = _read_header(path, b"ElementDataFile = LOCAL\n")
    fields = {k: v for k, sep, v in (line.partition(" = ") for line in text.splitlines()) if sep}
    try:
        w, h, n = (int(v) for v in fields["DimSize"].split())
        channels = int(fields.get("ElementNumberOfChannels", "1"))
    except (KeyError, ValueError):
        raise FramesError(f"{path}: not a sequence of 2D frames (DimSize W H N)") from None
    times = _frame_times(text.splitlines(), path, complete_only=False)[:n]
    return SequenceInfo(path, times, w, h, channels, path, offset, partial=False)


def _nrrd_layout(fields: dict[str, str], source: Path) -> tuple[int, int, int, int]:
    try:
        sizes = [int(v) for v in fields["sizes"].split()]
        vector = fields.get("kinds", "").split()[:1] == ["vector"]
    except (KeyError, ValueError):
        raise FramesError(f"{source}: no frame sizes in the header") from None
    if len(sizes) != 4:
        raise FramesError(f"{source}: sizes {sizes}: not a sequence of 2D frames")
    if vector:
        channels, w, h, n = sizes
    else:
        w, h, _, n = sizes
        channels = 1
    return w, h, channels, n


def _nrrd(path: Path, detached: bool) -> SequenceInfo:
    if detached:
        text, _ = _read_header(path, b"")
        offset = 0
    else:
        text, offset = _read_header(path, b"\n\n")
    fields = {k: v for k, sep, v in (line.partition(": ") for line in text.splitlines()) if sep}
    w, h, channels, n = _nrrd_layout(fields, path)
    data_path = path
    if detached:
        name = fields.get("data file")
        if not name:
            raise FramesError(f"{path}: a detached header without a data file")
        data_path = path.with_name(name)
    lines = text.splitlines()
    if detached:
        # The recorder's own pieces: the frame count is only brought up to date every 0.5 s, and a crash may
        # cut the last frame's fields or pixels: keep the frames that are whole in both.
        times = _frame_times(lines, path, complete_only=True)
    else:
        times = _frame_times(lines, path, complete_only=False)[:n]
    return SequenceInfo(path, times, w, h, channels, data_path, offset, partial=detached)


def read_sequence(path: Path) -> SequenceInfo:
    """The frame times and pixel layout of a sequence file (.seq.mha, .seq.nrrd, .seq.nhdr), or of the pieces
    an interrupted recording into ``path`` left. Frames whose pixels are not all in the file are left out."""
    name = path.name.lower()
    if path.exists():
        if name.endswith(".seq.mha"):
            info = _mha(path)
        elif name.endswith(".seq.nrrd"):
            info = _nrrd(path, detached=False)
        elif name.endswith(".seq.nhdr"):
            info = _nrrd(path, detached=True)
        else:
            raise FramesError(f"{path}: not a sequence file (.seq.mha, .seq.nrrd, .seq.nhdr)")
    else:
        stem = path.name[: path.name.lower().rfind(".seq.")] if ".seq." in name else path.stem
        pieces = path.with_name(stem + ".partial.seq.nhdr")
        if not pieces.exists():
            raise FileNotFoundError(f"{path}: no such file")
        info = _nrrd(pieces, detached=True)
    if info.frame_bytes <= 0:
        raise FramesError(f"{info.path}: frames of {info.width}x{info.height} px")
    try:
        stored = (info.data_path.stat().st_size - info.data_offset) // info.frame_bytes
    except OSError as e:
        raise FramesError(f"{info.data_path}: {e.strerror or e}") from None
    n = max(0, min(len(info.times_s), stored))
    return SequenceInfo(info.path, info.times_s[:n], info.width, info.height, info.channels, info.data_path,
                        info.data_offset, info.partial)


class FramePixels(Protocol):
    """Frame ``i``'s image, BGR uint8 (or grey), for ``0 <= i < count``."""

    count: int
    description: str

    def frame(self, i: int) -> np.ndarray: ...

    def close(self) -> None: ...


class SequencePixels:
    """The sequence file's own pixels: the images as acquired, no overlay."""

    description = "ultrasound frames as acquired (no overlay)"

    def __init__(self, info: SequenceInfo) -> None:
        self.info = info
        self.count = len(info.times_s)
        shape = (self.count, info.height, info.width) + ((info.channels,) if info.channels > 1 else ())
        self._pixels = np.memmap(info.data_path, dtype=np.uint8, mode="r", offset=info.data_offset, shape=shape)

    def frame(self, i: int) -> np.ndarray:
        if not 0 <= i < self.count:
            raise IndexError(f"frame {i} of {self.count}")
        image = np.asarray(self._pixels[i])
        # Colour is stored as RGB (PLUS's order); the views draw BGR.
        return np.ascontiguousarray(image[:, :, ::-1]) if image.ndim == 3 else np.array(image)

    def close(self) -> None:
        mm = getattr(self._pixels, "_mmap", None)
        if mm is not None:
            mm.close()


class VideoPixels:
    """The fused video's frames by index: read on when the next one is asked for (playing), decoded forward
    over a short jump, sought otherwise; the last few kept for stepping back and forth."""

    description = "fused video (the overlay as shown)"

    def __init__(self, path: Path, size: tuple[int, int], count: int, cache: int = 8) -> None:
        self.path = path
        self.size = size
        self._capture = cv2.VideoCapture(str(path))
        if not self._capture.isOpened():
            self._capture.release()
            raise FramesError(f"{path.name} cannot be opened (a recorder stopped before closing it leaves a video "
                              "without its index)")
        in_file = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.count = min(count, in_file) if in_file > 0 else count
        self._next = 0
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = cache
        self.decoded = 0
        try:
            self.frame(0)
        except FramesError:
            self.close()
            raise

    def frame(self, i: int) -> np.ndarray:
        if not 0 <= i < self.count:
            raise IndexError(f"frame {i} of {self.count}")
        cached = self._cache.get(i)
        if cached is not None:
            self._cache.move_to_end(i)
            return cached
        ahead = i - self._next
        if not 0 <= ahead <= _SEEK_AHEAD:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, i)
        else:
            for _ in range(ahead):
                self._capture.grab()
        ok, image = self._capture.read()
        if not ok or image is None:
            self._next = -1  # position unknown: seek next time
            raise FramesError(f"{self.path.name}: frame {i} cannot be decoded")
        self._next = i + 1
        self.decoded += 1
        w, h = self.size
        image = image[:h, :w]  # the writer pads odd sizes by one row or column
        self._cache[i] = image
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return image

    def close(self) -> None:
        self._capture.release()
        self._cache.clear()
