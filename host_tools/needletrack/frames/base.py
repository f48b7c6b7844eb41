"""What every frame source yields, and the interface they share.

A :class:`Frame` is one ultrasound image with its capture time on the host clock (the clock the device-to-host
mapping targets, so needle samples can be interpolated at it), its pixel spacing and calibrated region when
known, and where it came from. Images are ``uint8``: ``(H, W)`` grey or ``(H, W, 3)`` BGR (OpenCV's order).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from needletrack.geometry import Calibration, Region


class FrameSourceError(RuntimeError):
    """A frame source that cannot be opened or read; the message names the source."""


class CalibrationMissingError(FrameSourceError):
    """An image with no pixel calibration where one is required. Never guessed: the user calibrates."""

    def __init__(self, source: str | Path, missing: str) -> None:
        self.source = str(source)
        self.missing = missing
        super().__init__(f"{source}: {missing}. The pixel spacing is unknown and is not guessed: "
                         "calibrate the image (two needle tips at two known depths) and pass that "
                         "calibration to the source")


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # (H, W) grey or (H, W, 3) BGR, uint8
    time_s: float  # capture time, host seconds
    mm_per_px: tuple[float, float] | None  # (sx lateral, sy axial); None where the image is not calibrated
    region: Region | None  # the calibrated image area; None: no region known (the whole image, if calibrated)
    source: str
    index: int  # 0-based position in the source's sequence

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.image.shape[1]), int(self.image.shape[0])

    def bgr(self) -> np.ndarray:
        """A 3-channel BGR copy, ready to draw on."""
        if self.image.ndim == 2:
            return cv2.cvtColor(self.image, cv2.COLOR_GRAY2BGR)
        return self.image.copy()


def spacing_from(calibration: Calibration | None, size: tuple[int, int],
                 source: str) -> tuple[float, float] | None:
    """The spacing a calibration gives an image of ``size``; a calibration made at another size is refused."""
    if calibration is None:
        return None
    if calibration.image_size != size:
        raise FrameSourceError(f"{source}: frames are {size[0]}x{size[1]} px but the calibration for "
                               f"{calibration.probe_model!r} was made on {calibration.image_size[0]}x"
                               f"{calibration.image_size[1]} px images")
    return calibration.mm_per_px


class FrameSource(ABC):
    """An iterable of frames. Files know their length (``frame_count``); live sources do not (None)."""

    name: str = ""
    frame_count: int | None = None

    @abstractmethod
    def frames(self) -> Iterator[Frame]:
        """Frames in capture order. Live sources block for the next one and end when the stream does."""

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def close(self) -> None:  # noqa: B027 - sources without resources need no closing
        """Release the file, device or connection."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
