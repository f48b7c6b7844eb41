"""Ultrasound frames from an OpenIGTLink server (e.g. PLUS): IMAGE messages received by a pyigtl client.

pyigtl keeps only the newest message per device name, so a reader slower than the stream skips frames rather
than falling behind; ``index`` counts the frames delivered. The message timestamp is the sender's clock (PLUS
sends its system time, Unix seconds): on the same host it is the host's wall clock, converted here to the
monotonic clock the needle link stamps samples with; ``timestamps="arrival"`` stamps frames with the monotonic
clock at reception instead, for senders on other machines or with no timestamps.

Spacing: an IMAGE message carries one, but a sender with no calibration still sends some value (PLUS sends
1 mm), so it is used only when asked (``use_message_spacing``); otherwise it comes from an image calibration.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import pyigtl

from needletrack.frames.base import Frame, FrameSource, FrameSourceError, spacing_from
from needletrack.geometry import Calibration


def message_image(msg: pyigtl.ImageMessage) -> np.ndarray:
    """An IMAGE message's 2D slice as uint8 grey or BGR. Axes arrive as (k, j, i[, components])."""
    img = np.asarray(msg.image)
    if img.ndim == 4 or (img.ndim == 3 and img.shape[0] == 1):
        img = img[0]
    if img.ndim == 3 and img.shape[2] not in (1, 3, 4):
        raise FrameSourceError(f"IMAGE {msg.device_name}: a {img.shape[0]}-slice volume, not a 2D frame")
    if img.dtype != np.uint8:
        # Wider unsigned pixels keep their top byte; signed and float pixels are taken as 0 .. 255 already.
        if np.issubdtype(img.dtype, np.unsignedinteger):
            img = img >> (8 * img.dtype.itemsize - 8)
        img = img.clip(0, 255).astype(np.uint8)
    if img.ndim == 3:
        if img.shape[2] == 1:
            return np.ascontiguousarray(img[:, :, 0])
        return np.ascontiguousarray(img[:, :, 2::-1])  # RGB(A) components -> BGR
    return np.ascontiguousarray(img)


def message_spacing(msg: pyigtl.ImageMessage) -> tuple[float, float]:
    m = np.asarray(msg.ijk_to_world_matrix, dtype=float)
    return float(np.linalg.norm(m[:3, 0])), float(np.linalg.norm(m[:3, 1]))


class IgtlSource(FrameSource):
    frame_count = None

    def __init__(self, host: str = "127.0.0.1", port: int = 18944, *, device_name: str = "Image_Reference",
                 calibration: Calibration | None = None, use_message_spacing: bool = False,
                 timestamps: str = "message", timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if timestamps not in ("message", "arrival"):
            raise ValueError(f"timestamps must be 'message' or 'arrival', got {timestamps!r}")
        self.name = f"igtl:{host}:{port}/{device_name}"
        self.device_name = device_name
        self.calibration = calibration
        self.use_message_spacing = use_message_spacing
        self.timestamps = timestamps
        self.timeout_s = timeout_s
        self.clock = clock
        self._client = pyigtl.OpenIGTLinkClient(host=host, port=port)

    @property
    def connected(self) -> bool:
        return bool(self._client.is_connected())

    def next_frame(self, index: int, timeout_s: float | None = None) -> Frame | None:
        """The next IMAGE message as a frame, or None after ``timeout_s`` without one."""
        wait = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + wait
        while True:
            left = max(deadline - time.monotonic(), 0.0)
            msg = self._client.wait_for_message(self.device_name, timeout=left)
            if msg is None:
                return None
            if isinstance(msg, pyigtl.ImageMessage):
                break
        arrival = self.clock()
        image = message_image(msg)
        size = (image.shape[1], image.shape[0])
        if self.use_message_spacing:
            mm: tuple[float, float] | None = message_spacing(msg)
        else:
            mm = spacing_from(self.calibration, size, self.name)
        stamp = arrival
        if self.timestamps == "message" and msg.timestamp:
            # The sender's Unix time, on this host's monotonic clock (the offset read now: both clocks tick
            # together, so it only moves when the wall clock is set).
            stamp = float(msg.timestamp) - (time.time() - time.monotonic())
        return Frame(image, stamp, mm, None, self.name, index)

    def frames(self) -> Iterator[Frame]:
        """Frames until none arrives for ``timeout_s``."""
        index = 0
        while True:
            frame = self.next_frame(index)
            if frame is None:
                return
            yield frame
            index += 1

    def close(self) -> None:
        self._client.stop()
