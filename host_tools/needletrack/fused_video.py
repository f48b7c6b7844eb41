"""The fused view as an MP4 video: each frame with its overlay, as the clinician saw it.

Written through OpenCV's VideoWriter (its bundled FFmpeg). Frames are BGR uint8 of the size fixed at opening,
played back at a fixed ``fps``: the video is for watching; the frames' true times are in the session's
sequence file (:mod:`needletrack.sequence_file`). An odd width or height is padded with one black column or
row (the codecs code even sizes only, and FFmpeg would otherwise crop the frame silently).

Codecs are tried in the order given; the default is MPEG-4 Part 2 (``mp4v``), FFmpeg's own encoder, which
opencv-python's wheels carry. H.264 (``avc1``) needs an OpenCV built with an H.264 encoder (the wheel installed
here has none, and asking for it fails with a clear error). An MP4's index is written when the file is closed:
a recorder killed before closing leaves a file most players refuse, so the writer closes on any exit from its
``with`` block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

MP4_CODECS = ("avc1", "mp4v")  # fourccs FFmpeg stores in an MP4 as they are (others it re-tags, or refuses)
DEFAULT_CODECS = ("mp4v",)


class VideoWriterError(RuntimeError):
    """A video that cannot be opened or written; the message says why."""


class FusedVideoWriter:
    """An MP4 file of BGR frames of one size. A context manager; :meth:`close` finishes the file."""

    def __init__(self, path: str | Path, size: tuple[int, int], fps: float, *,
                 codecs: Sequence[str] = DEFAULT_CODECS) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() != ".mp4":
            raise VideoWriterError(f"{self.path}: the fused video is an .mp4 file")
        if self.path.exists():
            raise FileExistsError(f"{self.path} exists: a recording is never overwritten")
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"{self.path.parent}: no such directory")
        if len(size) != 2 or not all(isinstance(v, int | np.integer) and v > 0 for v in size):
            raise VideoWriterError(f"frame size {size}: (width, height) in pixels, positive integers")
        w, h = int(size[0]), int(size[1])
        if not (math.isfinite(fps) and fps > 0):
            raise VideoWriterError(f"fps {fps}: a positive frame rate")
        unknown = [c for c in codecs if c not in MP4_CODECS]
        if unknown or not codecs:
            raise VideoWriterError(f"codecs {list(codecs)}: choose from {list(MP4_CODECS)}")
        self.size = (w, h)
        # MPEG-4 and H.264 code even sizes only, and FFmpeg would crop an odd one silently: pad instead.
        self.video_size = (w + w % 2, h + h % 2)
        self.fps = float(fps)
        self.frames_written = 0
        self.codec = ""
        self._writer: cv2.VideoWriter | None = None
        for fourcc in codecs:
            writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*fourcc), self.fps, self.video_size)
            if writer.isOpened():
                self._writer, self.codec = writer, fourcc
                break
            writer.release()
        if self._writer is None:
            self.path.unlink(missing_ok=True)  # FFmpeg may leave an empty file behind
            raise VideoWriterError(f"{self.path}: no MP4 encoder for {', '.join(codecs)} in this OpenCV build "
                                   f"({cv2.__version__}); try mp4v")

    def write(self, image: np.ndarray) -> None:
        """Appends one frame: a BGR uint8 image of the video's size."""
        if self._writer is None:
            raise VideoWriterError(f"{self.path}: the video is closed")
        w, h = self.size
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.shape != (h, w, 3):
            raise VideoWriterError(
                f"frame {self.frames_written}: expected a {w}x{h} BGR uint8 image ({h}, {w}, 3), got "
                f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}")
        if self.video_size != self.size:
            image = cv2.copyMakeBorder(image, 0, self.video_size[1] - h, 0, self.video_size[0] - w,
                                       cv2.BORDER_CONSTANT, value=(0, 0, 0))
        self._writer.write(np.ascontiguousarray(image))
        self.frames_written += 1

    def close(self) -> None:
        """Finishes the file (writes its index). Closing again does nothing."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> FusedVideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
