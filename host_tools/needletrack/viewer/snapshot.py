"""What the GUI sees of the live engine at one instant: plain immutable values, safe to read from any thread.

The window takes a :class:`Snapshot` every refresh and draws from it alone, so anything that can produce one
(the live engine, a fixed picture for screenshots, a test) can drive the window: :class:`ViewerEngine`.
"""

from __future__ import annotations

import enum
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from needletrack.geometry import Calibration
from needletrack.link.base import Found
from needletrack.needle_state import NO_FLAGS, NeedleState
from needletrack.protocol import Flag, Opcode
from needletrack.viewer.latency_capture import CaptureProgress
from needletrack.viewer.procedure import Procedure, SetupInfo


class Phase(enum.Enum):
    """Where the link is, as the connection panel shows it."""

    IDLE = "not connected"
    SCANNING = "scanning"
    CONNECTING = "connecting"
    STREAMING = "streaming"
    RECONNECTING = "link lost, reconnecting"
    CLOSED = "closed"


class Level(enum.Enum):
    INFO = "info"
    ERROR = "error"


@dataclass(frozen=True)
class Message:
    t: float  # host time
    level: Level
    text: str


@dataclass(frozen=True)
class Outage:
    """A time the needle data stopped: the link dropped, or the samples paused longer than STALE_AFTER_S."""

    start_s: float
    end_s: float | None  # None: still going on
    cause: str  # "link" or "gap"


@dataclass(frozen=True)
class LinkInfo:
    transport: str
    phase: Phase = Phase.IDLE
    address: str | None = None
    name: str | None = None
    paired: bool = False
    reconnect_attempt: int = 0  # the attempt under way while reconnecting
    reconnects: int = 0
    rate_hz: float = 0.0  # samples per second of device time
    samples: int = 0
    lost: int = 0  # missing within a connection
    missed: int = 0  # made while no link was up
    loss: float = 0.0  # lost / (samples + lost)
    quality: float | None = None  # share of the expected samples that arrived over the last seconds
    rssi_dbm: int | None = None  # as heard when scanning
    age_s: float | None = None  # since the last notification
    battery_pct: int | None = None
    battery_mv: int | None = None
    device_state: str | None = None  # RUNNING, CALIBRATING, FAULT ...


@dataclass(frozen=True)
class RecordingInfo:
    directory: Path
    elapsed_s: float
    samples: int
    frames: int
    saving: bool = False  # stopped, its files being finished


@dataclass(frozen=True)
class ChartData:
    """The strip charts: host times and values over the chart window, NaN where unknown."""

    t: np.ndarray
    depth_mm: np.ndarray
    tip_depth_mm: np.ndarray
    angle_deg: np.ndarray
    twitches: np.ndarray  # host times of twitches in the window
    passes: np.ndarray  # host times of needle passes in the window

    @staticmethod
    def empty() -> ChartData:
        e = np.empty(0)
        return ChartData(e, e, e, e, e, e)


@dataclass(frozen=True)
class Snapshot:
    t: float  # host time the snapshot was taken
    link: LinkInfo
    state: NeedleState | None = None  # the newest sample, aged; None before the first
    stale: bool = True  # the needle data is older than STALE_AFTER_S
    signal_lost: bool = True  # stale, the link down, or an outage that ended less than a moment ago
    watching: bool = False  # a probe is connected or being reconnected: losing it is an alarm
    outage: Outage | None = None  # the latest one
    flags: Flag = NO_FLAGS  # the newest sample's
    image: np.ndarray | None = None  # the latest fused frame, BGR; never modified once published
    frame_index: int = -1  # counts fused frames: a new value is a new image
    frame_time_s: float | None = None  # host time the frame arrived from its source
    frame_ready_s: float | None = None  # host time its overlay was drawn
    frame_source: str | None = None
    frames_per_s: float = 0.0  # fused frames per second, recently
    nogo_depth_mm: float | None = None
    nogo_margin_mm: float = 5.0
    setup: SetupInfo | None = None  # None: no probe setup to check (a fixed picture)
    calibration: Calibration | None = None  # the image calibration the needle is placed with
    frame_state: NeedleState | None = None  # the needle at the instant of the shown frame
    video_latency_s: float = 0.0
    raw_image: np.ndarray | None = None  # the shown frame before the overlay
    latency_capture: CaptureProgress | None = None  # a latency measurement under way
    recording: RecordingInfo | None = None
    free_disk_bytes: int | None = None  # where recordings go
    record_root: Path | None = None
    charts: ChartData = field(default_factory=ChartData.empty)
    chart_window_s: float = 20.0
    found: tuple[Found, ...] = ()
    messages: tuple[Message, ...] = ()


class ViewerEngine(Protocol):
    """What the window asks of the model. Actions return at once; their outcome shows in later snapshots (and
    in the returned future, for a caller that wants to wait)."""

    def snapshot(self) -> Snapshot: ...

    def scan(self) -> Future[Any]: ...

    def connect(self, address: str | None = None) -> Future[Any]: ...

    def disconnect(self) -> Future[Any]: ...

    def pair(self) -> Future[Any]: ...

    def toggle_recording(self) -> Future[Any]: ...

    def confirm_procedure(self, procedure: Procedure) -> Future[Any]: ...

    def set_nogo(self, depth_mm: float | None, margin_mm: float | None = None) -> Future[Any]: ...

    def set_image_calibration(self, calibration: Calibration | None) -> bool: ...

    def set_video_latency(self, seconds: float) -> None: ...

    def measure_latency(self, seconds: float = 20.0) -> Future[Any]: ...

    def command(self, opcode: Opcode, *args: int, quiet: bool = False) -> Future[Any]: ...
