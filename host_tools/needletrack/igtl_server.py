"""OpenIGTLink out: the needle and the fused image for 3D Slicer (OpenIGTLinkIF, SlicerIGT) and other clients.

Published, under these default device names (header version 1, which every OpenIGTLink reader accepts):

- TRANSFORM ``NeedleTipToProbe``: the needle pose in the probe frame. Translation: the tip, mm. Rotation: the
  needle frame's +x is the needle's direction of advance, +y the probe's elevational axis (made orthogonal to
  the needle), +z = x cross y; a needle at guide angle 0 gives the identity rotation.
- POSITION ``NeedleTip``: the same pose as position (mm) and quaternion (ox, oy, oz, w), in the protocol's
  28-byte body (pyigtl's own PositionMessage packs another layout, which OpenIGTLink libraries do not read).
- STRING ``NeedleStatus``: ``OK`` while the needle is live; ``NO SIGNAL`` when there is no fresh needle data;
  ``NO DEPTH`` when fresh data carries no usable tip (depth or guide angle not available, depth invalid, Hall
  sensor fault).
- IMAGE ``Image``: the fused frame, uint8 grey or RGB, placed in the probe frame (see below).

The probe frame (DESIGN.md): x lateral, in the image plane, from the guide side across the image; y
elevational, y = z cross x; z axial, into tissue; mm. Its origin is on the transducer face (z = 0) at the guide
exit's lateral position, the frame :func:`needletrack.geometry.px_to_mm` measures in: the guide exit is at
(0, 0, exit depth) and the tip at exit + depth * (cos g, 0, sin g) for guide angle g. An image placed with a
:class:`~needletrack.geometry.Calibration` lies in the y = 0 plane: column i runs along x (mirrored when the
calibration's ``lateral`` is -1), row j along z. The IMAGE message flags its matrix as RAS, so readers that
honour the coordinate field take it as it is; Slicer takes the probe frame's x, y, z as R, A, S
(docs/openigtlink.md).

No signal. A TRANSFORM or POSITION message carries no validity in OpenIGTLink 1 and 2, and a reader that
ignores version 3 metadata would show a pose flagged invalid as live. So a pose is sent only while the needle
is live: when it stops being live, NeedleStatus says why at once, no TRANSFORM or POSITION follows, and poses
still queued for a client are withdrawn. A client holds the last live pose meanwhile, and must take it as live
only while NeedleStatus is ``OK``. The needle stops being live when the
caller pushes an invalid, stale or incomplete state, and also when the caller pushes nothing valid for
``stale_after_s``: a pipeline that stopped is a lost signal.

Rates. The caller pushes needle states at the sample rate (or per frame); poses go out at most ``max_rate_hz``
(the newest pose, once the interval has passed; pushes it replaced count as ``coalesced``). NeedleStatus goes
out on every change, to each client on connection and every ``status_period_s``. An image goes out on each
:meth:`IgtlServer.push_image`. A client connecting gets the current status, the current pose if live and the
latest image at once. GET_IMAGE, GET_TRANS, GET_POSITION and GET_STRING (device name empty or ours) are answered
with the latest message (for a pose that is not live: NeedleStatus); other messages are read and ignored.

Clients. Each connected client (up to ``max_clients``) has its own queue of at most one message per device: a
newer message replaces one not yet sent (counted as ``dropped``), so a slow client sees the newest data, never a
backlog; a client that takes no bytes for ``send_timeout_s`` while data waits is disconnected. push_* calls
never touch a socket: they copy their data, hand it to the server thread and return; a misbehaving client only
ever closes its own connection.

pyigtl 0.3.4 packs the messages, but its OpenIGTLinkServer is not used: it serves one client at
a time (a second connection waits until the first one ends), keeps spinning on a client that vanished without
serving the next, queues messages while nobody is connected and hands that backlog to the next client,
installs SIGINT and SIGTERM handlers (and cannot be created outside the main thread), and drops GET_ requests.
"""

from __future__ import annotations

import contextlib
import logging
import math
import selectors
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

import numpy as np
import pyigtl

from needletrack.geometry import Calibration, px_to_mm
from needletrack.needle_state import NeedleState
from needletrack.overlay import is_stale
from needletrack.protocol import Flag

log = logging.getLogger(__name__)

DEFAULT_PORT = 18944  # the port IANA assigned to OpenIGTLink, and Slicer's default
OK = "OK"
NO_SIGNAL = "NO SIGNAL"
NO_DEPTH = "NO DEPTH"

HEADER_SIZE = pyigtl.MessageBase.IGTL_HEADER_SIZE  # 58 bytes
_HEADER = struct.Struct(">H12s20sIIQQ")
_RECV_SIZE = 1 << 16
_MAX_WAIT_S = 1.0  # the server thread wakes at least this often to look for stop and deadlines
# Queries, by the protocol's type names (at most 12 characters: TRANSFORM's is GET_TRANS; GET_TRANSFOR is what
# a client that cuts GET_TRANSFORM to fit sends).
_REQUESTS = {"GET_IMAGE": "IMAGE", "GET_TRANS": "TRANSFORM", "GET_TRANSFOR": "TRANSFORM",
             "GET_POSITION": "POSITION", "GET_STRING": "STRING"}
# Unix times before 2001 are not clock readings for a header: most likely a monotonic clock passed by mistake.
_MIN_UNIX_S = 1e9


class IgtlServerError(RuntimeError):
    """The server cannot start (the port is taken, the address is wrong); the message says which."""


@dataclass(frozen=True)
class DeviceNames:
    transform: str = "NeedleTipToProbe"
    position: str = "NeedleTip"
    status: str = "NeedleStatus"
    image: str = "Image"

    def __post_init__(self) -> None:
        for field, name in (("transform", self.transform), ("position", self.position),
                            ("status", self.status), ("image", self.image)):
            if not name or not name.isascii() or len(name) > 20:
                raise ValueError(f"device name {field}={name!r}: 1 to 20 ASCII characters (OpenIGTLink header)")
        if len({self.transform, self.position, self.status, self.image}) != 4:
            raise ValueError("device names must differ from each other")


@dataclass(frozen=True)
class ServerStats:
    clients: int = 0  # connected now
    connections: int = 0  # accepted since start
    refused: int = 0  # connections closed at once: max_clients reached
    needle_pushes: int = 0
    poses_published: int = 0  # poses taken up (each one TRANSFORM and one POSITION to each client)
    coalesced: int = 0  # pushed poses replaced by a newer push before being published (max_rate_hz)
    images_published: int = 0  # images taken up (each one IMAGE to each client)
    dropped: int = 0  # messages replaced or withdrawn in a client's queue before that client took them
    requests: int = 0  # GET_ requests answered
    slow_disconnects: int = 0  # clients closed for taking no bytes for send_timeout_s
    errors: int = 0  # connections closed on a socket or protocol error


@dataclass(frozen=True)
class _Pose:
    matrix: np.ndarray  # 4x4, NeedleTipToProbe
    quaternion: tuple[float, float, float, float]  # (ox, oy, oz, w)
    timestamp: float  # Unix s


@dataclass(frozen=True)
class _Image:
    pixels: np.ndarray  # (1, H, W) grey or (1, H, W, 3) RGB, uint8, the server's own copy
    ijk_to_probe: np.ndarray  # 4x4
    timestamp: float


class PositionMessage(pyigtl.MessageBase):
    """OpenIGTLink POSITION: position in mm and orientation quaternion (ox, oy, oz, w), float32 big-endian."""

    def __init__(self, position: Sequence[float] = (0.0, 0.0, 0.0),
                 quaternion: Sequence[float] = (0.0, 0.0, 0.0, 1.0), timestamp: float | None = None,
                 device_name: str | None = None) -> None:
        super().__init__(timestamp=timestamp, device_name=device_name)
        self._message_type = "POSITION"
        self.position = tuple(float(v) for v in position)
        self.quaternion = tuple(float(v) for v in quaternion)
        self._valid_message = True

    def _pack_content(self) -> bytes:
        return struct.pack(">7f", *self.position, *self.quaternion)

    def _unpack_content(self, content: bytes) -> None:
        # The protocol allows 12 (position only), 24 (ox, oy, oz; w implied) and 28 bytes.
        n = len(content) // 4
        if n not in (3, 6, 7) or len(content) % 4:
            raise ValueError(f"POSITION body of {len(content)} bytes: 12, 24 or 28 expected")
        values = struct.unpack(f">{n}f", content)
        self.position = values[:3]
        if n == 3:
            self.quaternion = (0.0, 0.0, 0.0, 1.0)
        elif n == 6:
            ox, oy, oz = values[3:]
            self.quaternion = (ox, oy, oz, math.sqrt(max(0.0, 1.0 - ox * ox - oy * oy - oz * oz)))
        else:
            self.quaternion = values[3:]


def needle_matrix(tip_mm: Sequence[float], direction: Sequence[float]) -> np.ndarray:
    """NeedleTipToProbe: translation the tip, rotation taking +x to the needle direction and +y to the probe's
    y made orthogonal to it (the probe's z when the needle runs along y)."""
    tip = np.asarray(tip_mm, dtype=float)
    d = np.asarray(direction, dtype=float)
    if tip.shape != (3,) or d.shape != (3,) or not (np.all(np.isfinite(tip)) and np.all(np.isfinite(d))):
        raise ValueError(f"tip {tip_mm!r} and direction {direction!r} must be finite (x, y, z) triples")
    norm = float(np.linalg.norm(d))
    if norm < 1e-9:
        raise ValueError("the needle direction is the zero vector")
    x = d / norm
    ref = np.array([0.0, 1.0, 0.0]) if abs(x[1]) < 0.99 else np.array([0.0, 0.0, 1.0])
    y = ref - np.dot(ref, x) * x
    y /= np.linalg.norm(y)
    z = np.cross(x, y)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, z, tip
    return m


def quaternion_of(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """The unit quaternion (ox, oy, oz, w), w >= 0, of a 3x3 rotation matrix."""
    r = np.asarray(rotation, dtype=float)
    trace = r[0, 0] + r[1, 1] + r[2, 2]
    # Shepperd: divide by the largest of the four candidate components, for precision near 180 degrees.
    if trace > 0:
        s = 2.0 * math.sqrt(1.0 + trace)
        q = ((r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, s / 4)
    elif r[0, 0] >= r[1, 1] and r[0, 0] >= r[2, 2]:
        s = 2.0 * math.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        q = (s / 4, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s, (r[2, 1] - r[1, 2]) / s)
    elif r[1, 1] >= r[2, 2]:
        s = 2.0 * math.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        q = ((r[0, 1] + r[1, 0]) / s, s / 4, (r[1, 2] + r[2, 1]) / s, (r[0, 2] - r[2, 0]) / s)
    else:
        s = 2.0 * math.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        q = ((r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, s / 4, (r[1, 0] - r[0, 1]) / s)
    sign = -1.0 if q[3] < 0 else 1.0
    n = math.sqrt(sum(v * v for v in q))
    ox, oy, oz, w = (sign * v / n for v in q)
    return ox, oy, oz, w


def state_pose(state: NeedleState | None, calibration: Calibration | None = None,
               ) -> tuple[tuple[float, float, float], tuple[float, float, float]] | str:
    """(tip, direction) in the probe frame for a live state, else the status that says why it is not live.
    The guide exit is at (0, 0, calibration.exit_depth_mm), or at the origin without a calibration."""
    if state is None or is_stale(state):
        return NO_SIGNAL
    if (state.depth_mm is None or state.guide_angle_deg is None
            or state.flags & (Flag.DEPTH_INVALID | Flag.HALL_FAULT)):
        return NO_DEPTH
    g = math.radians(state.guide_angle_deg)
    d = (math.cos(g), 0.0, math.sin(g))
    exit_z = 0.0 if calibration is None else calibration.exit_depth_mm
    tip = (state.depth_mm * d[0], 0.0, exit_z + state.depth_mm * d[2])
    return tip, d


def image_matrix(spacing_mm: Sequence[float], origin_mm: Sequence[float] = (0.0, 0.0),
                 lateral: int = 1) -> np.ndarray:
    """IJK (column, row, slice) to probe mm for an image in the y = 0 plane: pixel (0, 0)'s centre at
    ``origin_mm`` = (x, z); columns along ``lateral`` * x, rows along z; the slice axis makes it right-handed."""
    sx, sy = (float(v) for v in spacing_mm)
    x0, z0 = (float(v) for v in origin_mm)
    if not all(math.isfinite(v) and v > 0 for v in (sx, sy)):
        raise ValueError(f"pixel spacing {tuple(spacing_mm)} mm must be positive and finite")
    if not (math.isfinite(x0) and math.isfinite(z0)):
        raise ValueError(f"image origin {tuple(origin_mm)} mm must be finite")
    if lateral not in (1, -1):
        raise ValueError(f"lateral must be +1 or -1, got {lateral}")
    m = np.zeros((4, 4))
    m[0, 0] = lateral * sx
    m[2, 1] = sy
    m[1, 2] = -lateral  # i x j, 1 mm: the slice normal
    m[:, 3] = (x0, 0.0, z0, 1.0)
    return m


def _message_pixels(image: np.ndarray) -> np.ndarray:
    """The server's own copy of a uint8 grey or BGR image, as IMAGE axes (k, j, i[, RGB])."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"images are uint8, got {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        out = np.array(a[None], copy=True, order="C")
    elif a.ndim == 3 and a.shape[2] == 3:
        out = np.ascontiguousarray(a[None, :, :, ::-1])  # BGR -> RGB, a copy
    else:
        raise ValueError(f"an image is (H, W) grey or (H, W, 3) BGR, got shape {a.shape}")
    h, w = out.shape[1:3]
    if not (0 < h <= 0xFFFF and 0 < w <= 0xFFFF):
        raise ValueError(f"image size {w}x{h} px is outside 1 .. 65535")
    return out


def _unix_time(timestamp: float | None) -> float:
    if timestamp is None:
        return time.time()
    t = float(timestamp)
    if not (math.isfinite(t) and _MIN_UNIX_S <= t < 2.0**32):
        raise ValueError(f"timestamp {timestamp!r} is not Unix time (seconds since 1970); pass None to stamp "
                         "messages with time.time()")
    return t


class _Client:
    """One connection; touched only by the server thread."""

    def __init__(self, sock: socket.socket, address: Any, now: float) -> None:
        self.sock = sock
        self.name = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
        self.queue: dict[str, bytes] = {}  # key: "TYPE:device"; one message per device, oldest first
        self.out = memoryview(b"")
        self.idle_since = now  # last time it had nothing waiting or took bytes
        self.rx = bytearray()
        self.skip = 0  # body bytes still to discard
        self.events = selectors.EVENT_READ

    @property
    def waiting(self) -> bool:
        return bool(self.out) or bool(self.queue)


class IgtlServer:
    """The OpenIGTLink server: start(), push_state() or push_needle(), push_image(), stop(); also a context
    manager. Push methods are thread-safe and raise only on bad arguments."""

    def __init__(self, port: int = DEFAULT_PORT, *, host: str = "127.0.0.1", max_rate_hz: float | None = 100.0,
                 stale_after_s: float = 0.25, status_period_s: float = 1.0, send_timeout_s: float = 2.0,
                 max_clients: int = 8, names: DeviceNames | None = None) -> None:
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"port {port}: 0 (any free port) or 1 .. 65535")
        if max_rate_hz is not None and not max_rate_hz > 0:
            raise ValueError(f"max_rate_hz must be positive or None, got {max_rate_hz}")
        for label, v in (("stale_after_s", stale_after_s), ("status_period_s", status_period_s),
                         ("send_timeout_s", send_timeout_s)):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{label} must be positive, got {v}")
        if max_clients < 1:
            raise ValueError(f"max_clients must be at least 1, got {max_clients}")
        self.host = host
        self.requested_port = port
        self.min_interval_s = 0.0 if max_rate_hz is None else 1.0 / max_rate_hz
        self.stale_after_s = stale_after_s
        self.status_period_s = status_period_s
        self.send_timeout_s = send_timeout_s
        self.max_clients = max_clients
        self.names = names or DeviceNames()
        self._keys = {"TRANSFORM": f"TRANSFORM:{self.names.transform}",
                      "POSITION": f"POSITION:{self.names.position}",
                      "STRING": f"STRING:{self.names.status}", "IMAGE": f"IMAGE:{self.names.image}"}

        self._lock = threading.Lock()
        # Shared with the callers, under _lock.
        self._pose: _Pose | None = None
        self._pose_dirty = False
        self._reason = NO_SIGNAL  # what the latest push said: OK or why not
        self._last_valid = -math.inf  # monotonic time of the latest valid push
        self._image: _Image | None = None
        self._stats = ServerStats()
        self._published_status = NO_SIGNAL
        # The server thread's own.
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._sel: selectors.BaseSelector | None = None
        self._clients: list[_Client] = []
        self._status_msg = b""
        self._pose_msgs: tuple[bytes, bytes] | None = None
        self._latest_image: _Image | None = None
        self._image_msg: bytes | None = None  # _latest_image packed, once a client wants it
        self._last_pose_sent = -math.inf
        self._next_heartbeat = 0.0
        self.port = port

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> IgtlServer:
        """Listen and serve in a background thread; ``port`` then holds the port in use."""
        if self._thread is not None:
            return self
        try:
            listener = socket.create_server((self.host, self.requested_port))
        except OSError as e:
            raise IgtlServerError(f"OpenIGTLink server cannot listen on {self.host}:{self.requested_port}: {e}"
                                  ) from e
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(listener, selectors.EVENT_READ, "listen")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._listener = listener
        self._stop.clear()
        self._status_msg = self._pack_status(self._published_status)
        self._next_heartbeat = time.monotonic() + self.status_period_s
        self._thread = threading.Thread(target=self._run, name=f"igtl-server:{self.port}", daemon=True)
        self._thread.start()
        log.info("OpenIGTLink server listening on %s:%d", self.host, self.port)
        return self

    def stop(self) -> None:
        """Close every connection and the listening socket; the server can be started again."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        self._wake()
        thread.join(timeout=5.0)
        if thread.is_alive():
            log.error("OpenIGTLink server thread did not stop within 5 s")
        self._thread = None
        self._close_all()

    def __enter__(self) -> IgtlServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def status(self) -> str:
        """The NeedleStatus last published."""
        with self._lock:
            return self._published_status

    def stats(self) -> ServerStats:
        with self._lock:
            return self._stats

    # -- what the caller pushes ----------------------------------------------------------------------------

    def push_state(self, state: NeedleState | None, timestamp: float | None = None, *,
                   calibration: Calibration | None = None) -> None:
        """The needle at one sample or frame; None, stale or incomplete states publish why (``state_pose``).
        ``timestamp``: Unix seconds for the message header; None stamps it now."""
        pose = state_pose(state, calibration)
        if isinstance(pose, str):
            self._push(None, pose, _unix_time(timestamp))
        else:
            self.push_needle(pose[0], pose[1], True, timestamp)

    def push_needle(self, tip_mm: Sequence[float], direction: Sequence[float], valid: bool = True,
                    timestamp: float | None = None) -> None:
        """The tip (x, y, z) and needle direction in the probe frame, mm; ``valid`` False publishes NO SIGNAL
        (tip and direction are then not used)."""
        t = _unix_time(timestamp)
        if not valid:
            self._push(None, NO_SIGNAL, t)
            return
        m = needle_matrix(tip_mm, direction)
        self._push(_Pose(m, quaternion_of(m[:3, :3]), t), OK, t)

    def push_image(self, image: np.ndarray, spacing_mm: Sequence[float] | None = None,
                   timestamp: float | None = None, *, calibration: Calibration | None = None) -> None:
        """A fused frame: uint8 (H, W) grey or (H, W, 3) BGR. Placed by ``calibration`` (made at this image
        size: spacing, guide exit, face row, mirroring) or, without one, by ``spacing_mm`` (sx, sy) with pixel
        (0, 0) at the probe origin."""
        pixels = _message_pixels(image)
        t = _unix_time(timestamp)
        if calibration is not None:
            if spacing_mm is not None:
                raise ValueError("give spacing_mm or a calibration, not both")
            size = (pixels.shape[2], pixels.shape[1])
            if tuple(calibration.image_size) != size:
                raise ValueError(f"the calibration is for {calibration.image_size[0]}x{calibration.image_size[1]}"
                                 f" px images, this one is {size[0]}x{size[1]} px")
            matrix = image_matrix(calibration.mm_per_px, px_to_mm(calibration, (0.0, 0.0)), calibration.lateral)
        elif spacing_mm is None:
            raise ValueError("an image needs its pixel spacing: spacing_mm or a calibration")
        else:
            matrix = image_matrix(spacing_mm)
        with self._lock:
            self._image = _Image(pixels, matrix, t)
        self._wake()

    def _push(self, pose: _Pose | None, reason: str, timestamp: float) -> None:
        with self._lock:
            s = self._stats
            coalesced = s.coalesced + (1 if self._pose_dirty else 0)
            self._stats = replace(s, needle_pushes=s.needle_pushes + 1, coalesced=coalesced)
            self._reason = reason
            self._pose = pose
            self._pose_dirty = pose is not None
            if pose is not None:
                self._last_valid = time.monotonic()
        self._wake()

    def _wake(self) -> None:
        w = self._wake_w
        if w is None:
            return
        # A full pipe already holds a pending wake-up; a closed one means the server is stopping.
        with contextlib.suppress(OSError):
            w.send(b"\0")

    def _count(self, **deltas: int) -> None:
        with self._lock:
            s = self._stats
            self._stats = replace(s, **{k: getattr(s, k) + v for k, v in deltas.items()})

    # -- the server thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        assert self._sel is not None
        timeout = 0.0
        while not self._stop.is_set():
            try:
                for key, mask in self._sel.select(timeout):
                    self._on_event(key.data, mask)
                if self._stop.is_set():
                    break
                timeout = self._tick(time.monotonic())
            except Exception:
                # A fault of the server's own must not end publishing silently: log it and go on.
                log.exception("OpenIGTLink server loop")
                self._count(errors=1)
                timeout = 0.05
        self._close_all()

    def _on_event(self, tag: Any, mask: int) -> None:
        if tag == "listen":
            self._accept()
        elif tag == "wake":
            assert self._wake_r is not None
            with contextlib.suppress(BlockingIOError):
                while self._wake_r.recv(4096):
                    pass
        else:
            client: _Client = tag
            try:
                if mask & selectors.EVENT_READ:
                    self._read(client)
                if client in self._clients and mask & selectors.EVENT_WRITE:
                    self._flush(client, time.monotonic())
            except OSError as e:
                self._drop(client, f"connection error: {e}", errors=1)
            except ValueError as e:  # not OpenIGTLink: a bad header version, a type or name not ASCII
                self._drop(client, f"protocol error: {e}", errors=1)
            except Exception as e:
                log.exception("OpenIGTLink client %s", client.name)
                self._drop(client, f"internal error: {e!r}", errors=1)

    def _accept(self) -> None:
        assert self._listener is not None and self._sel is not None
        while True:
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # out of descriptors and the like: keep the ones we have
                log.warning("OpenIGTLink accept failed: %s", e)
                return
            if len(self._clients) >= self.max_clients:
                log.warning("OpenIGTLink client %s refused: %d clients connected", address, len(self._clients))
                sock.close()
                self._count(refused=1)
                continue
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = _Client(sock, address, time.monotonic())
            self._clients.append(client)
            self._sel.register(sock, client.events, client)
            self._count(connections=1, clients=1)
            log.info("OpenIGTLink client %s connected", client.name)
            # A late client starts from the current state, not from nothing.
            client.queue[self._keys["STRING"]] = self._status_msg
            if self._pose_msgs is not None:
                client.queue[self._keys["TRANSFORM"]], client.queue[self._keys["POSITION"]] = self._pose_msgs
            image = self._image_bytes()
            if image is not None:
                client.queue[self._keys["IMAGE"]] = image

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            self._drop(client, "disconnected")
            return
        client.rx += data
        while True:
            if client.skip:
                n = min(client.skip, len(client.rx))
                del client.rx[:n]
                client.skip -= n
                if client.skip:
                    return
            if len(client.rx) < HEADER_SIZE:
                return
            version, mtype, name, _, _, body_size, _ = _HEADER.unpack_from(client.rx)
            del client.rx[:HEADER_SIZE]
            if version not in (1, 2):
                raise ValueError(f"OpenIGTLink header version {version}")
            # Bodies are never needed: requests are answered from the header; other messages are ignored.
            client.skip = body_size
            self._request(client, mtype.rstrip(b"\0").decode("ascii"), name.rstrip(b"\0").decode("ascii"))

    def _request(self, client: _Client, mtype: str, name: str) -> None:
        kind = _REQUESTS.get(mtype)
        if kind is None:
            return
        ours = {"TRANSFORM": self.names.transform, "POSITION": self.names.position,
                "STRING": self.names.status, "IMAGE": self.names.image}[kind]
        if name not in ("", ours):
            return
        if kind == "IMAGE":
            image = self._image_bytes()
            if image is None:
                return
            self._enqueue(client, self._keys["IMAGE"], image)
        elif kind in ("TRANSFORM", "POSITION") and self._pose_msgs is not None:
            self._enqueue(client, self._keys[kind], self._pose_msgs[0 if kind == "TRANSFORM" else 1])
        else:
            self._enqueue(client, self._keys["STRING"], self._status_msg)
        self._count(requests=1)
        self._flush(client, time.monotonic())

    def _tick(self, now: float) -> float:
        """Publish what is due; the time until something next falls due."""
        due = self._last_pose_sent + self.min_interval_s
        with self._lock:
            reason, last_valid = self._reason, self._last_valid
            live = reason == OK and now - last_valid <= self.stale_after_s
            # Coming back, the new pose goes out before OK, whatever the rate: OK must never stand for an old pose.
            pose = None
            if live and self._pose_dirty and (now >= due or self._published_status != OK):
                pose, self._pose_dirty = self._pose, False
            dirty = self._pose_dirty
            image, self._image = self._image, None
        status = OK if live else (NO_SIGNAL if reason == OK else reason)
        if pose is not None:
            self._publish_pose(pose)
            self._last_pose_sent = now
        if status != self._published_status:
            if status != OK:
                self._pose_msgs = None
                self._withdraw_poses()
            self._status_msg = self._pack_status(status)
            with self._lock:
                self._published_status = status
            log.info("OpenIGTLink NeedleStatus: %s", status)
            self._broadcast(self._keys["STRING"], self._status_msg)
            self._next_heartbeat = now + self.status_period_s
        elif now >= self._next_heartbeat:
            self._status_msg = self._pack_status(status)
            self._broadcast(self._keys["STRING"], self._status_msg)
            self._next_heartbeat = now + self.status_period_s
        if image is not None:
            self._publish_image(image)
        for client in list(self._clients):
            try:
                self._flush(client, now)
            except OSError as e:
                self._drop(client, f"connection error: {e}", errors=1)
                continue
            if client.waiting and now - client.idle_since > self.send_timeout_s:
                self._drop(client, f"took no data for {self.send_timeout_s:g} s", slow_disconnects=1)
        deadlines = [self._next_heartbeat]
        if live:
            deadlines.append(last_valid + self.stale_after_s + 1e-3)
            if dirty:
                deadlines.append(due)
        deadlines += [c.idle_since + self.send_timeout_s + 1e-3 for c in self._clients if c.waiting]
        return min(max(min(deadlines) - now, 0.0), _MAX_WAIT_S)

    def _publish_pose(self, pose: _Pose) -> None:
        transform = pyigtl.TransformMessage(pose.matrix, timestamp=pose.timestamp,
                                            device_name=self.names.transform).pack()
        position = PositionMessage(pose.matrix[:3, 3].tolist(), pose.quaternion, timestamp=pose.timestamp,
                                   device_name=self.names.position).pack()
        self._pose_msgs = (transform, position)
        self._broadcast(self._keys["TRANSFORM"], transform)
        self._broadcast(self._keys["POSITION"], position)
        self._count(poses_published=1)

    def _publish_image(self, image: _Image) -> None:
        self._latest_image, self._image_msg = image, None
        self._count(images_published=1)
        if self._clients:  # packing costs milliseconds a frame: only for someone
            msg = self._image_bytes()
            assert msg is not None
            self._broadcast(self._keys["IMAGE"], msg)

    def _image_bytes(self) -> bytes | None:
        if self._image_msg is None and self._latest_image is not None:
            image = self._latest_image
            self._image_msg = pyigtl.ImageMessage(image.pixels, ijk_to_world_matrix=image.ijk_to_probe,
                                                  world_coordinate_system="ras", timestamp=image.timestamp,
                                                  device_name=self.names.image).pack()
        return self._image_msg

    def _pack_status(self, status: str) -> bytes:
        packed: bytes = pyigtl.StringMessage(status, device_name=self.names.status).pack()
        return packed

    def _broadcast(self, key: str, msg: bytes) -> None:
        for client in self._clients:
            self._enqueue(client, key, msg)

    def _enqueue(self, client: _Client, key: str, msg: bytes) -> None:
        if not client.waiting:
            client.idle_since = time.monotonic()
        if client.queue.pop(key, None) is not None:
            self._count(dropped=1)
        client.queue[key] = msg  # the newest goes last: messages leave in the order they were made

    def _withdraw_poses(self) -> None:
        for client in self._clients:
            for kind in ("TRANSFORM", "POSITION"):
                if client.queue.pop(self._keys[kind], None) is not None:
                    self._count(dropped=1)

    def _flush(self, client: _Client, now: float) -> None:
        """Send what the socket takes without blocking; raises OSError on a broken connection."""
        while True:
            if not client.out:
                if not client.queue:
                    client.idle_since = now
                    break
                key = next(iter(client.queue))
                client.out = memoryview(client.queue.pop(key))
            try:
                n = client.sock.send(client.out)
            except (BlockingIOError, InterruptedError):
                break
            client.out = client.out[n:]
            client.idle_since = now
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.waiting else 0)
        if events != client.events and self._sel is not None:
            self._sel.modify(client.sock, events, client)
            client.events = events

    def _drop(self, client: _Client, why: str, **counts: int) -> None:
        if client not in self._clients:
            return
        self._clients.remove(client)
        if self._sel is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._sel.unregister(client.sock)
        with contextlib.suppress(OSError):
            client.sock.close()
        self._count(clients=-1, **counts)
        log.info("OpenIGTLink client %s closed: %s", client.name, why)

    def _close_all(self) -> None:
        for client in list(self._clients):
            self._drop(client, "server stopping")
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        if self._sel is not None:
            with contextlib.suppress(OSError):
                self._sel.close()
        self._listener = self._wake_r = self._wake_w = None
        self._sel = None
