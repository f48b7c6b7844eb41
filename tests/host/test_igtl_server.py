"""The OpenIGTLink server, seen by real pyigtl clients in other processes (tests/host/igtl_client.py)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.host.line_process import LineProcess

pytest.importorskip("pyigtl")

from needletrack.geometry import Calibration, px_to_mm, tip_px
from needletrack.igtl_server import (
    NO_DEPTH,
    NO_SIGNAL,
    OK,
    IgtlServer,
    IgtlServerError,
    PositionMessage,
    image_matrix,
    needle_matrix,
    quaternion_of,
)
from needletrack.needle_state import NeedleState
from needletrack.protocol import Flag

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "tests" / "host" / "igtl_client.py"
WAIT_S = 5.0
GUIDE_DEG = 30.0
# A 64x48 image at 0.25 mm/px, the guide exit 5 px left of the image and 0.5 mm below the face (row 2).
CAL = Calibration("test", (64, 48), exit_px=(-5.0, 4.0), face_row=2.0, mm_per_px=(0.25, 0.25), lateral=1)


class Client(LineProcess):
    """tests/host/igtl_client.py in its own process; its JSON lines collected as they come."""

    def __init__(self, port: int, seconds: float = 30.0) -> None:
        super().__init__([sys.executable, str(CLIENT), "127.0.0.1", str(port), str(seconds)],
                         {**os.environ, "PYTHONPATH": str(ROOT / "host_tools")}, parse=json.loads, stdin=True)

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], since: int = 0,
                 timeout: float = WAIT_S) -> tuple[int, dict[str, Any]]:
        """The first line at or after index ``since`` that satisfies ``pred``, and its index."""
        def found(lines: list[dict[str, Any]]) -> tuple[int, dict[str, Any]] | None:
            return next(((i, lines[i]) for i in range(since, len(lines)) if pred(lines[i])), None)

        return tuple(self.wait_until(found, timeout, "client: no such message"))  # type: ignore[return-value]

    def connected(self) -> int:
        return self.wait_for(lambda d: d.get("event") == "connected")[0]

    def of(self, mtype: str, since: int = 0) -> list[dict[str, Any]]:
        return [d for d in self.snapshot()[since:] if d.get("type") == mtype]

    @property
    def count(self) -> int:
        return len(self.snapshot())

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


def wait_until(cond: Callable[[], bool], timeout: float = WAIT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s")
        time.sleep(0.005)


def live(depth: float, **kw: Any) -> NeedleState:
    return NeedleState(depth, None, GUIDE_DEG, GUIDE_DEG, **kw)


def expected_pose(depth: float, exit_z: float = CAL.exit_depth_mm) -> tuple[np.ndarray, list[float]]:
    """NeedleTipToProbe worked out by hand: +x along the needle, rotation about probe y by -g."""
    g = math.radians(GUIDE_DEG)
    c, s = math.cos(g), math.sin(g)
    m = np.array([[c, 0, -s, depth * c], [0, 1, 0, 0], [s, 0, c, exit_z + depth * s], [0, 0, 0, 1]])
    return m, [0.0, -math.sin(g / 2), 0.0, math.cos(g / 2)]


def is_string(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda d: d.get("type") == "STRING" and d["name"] == "NeedleStatus" and d["string"] == text


def is_transform_at(depth: float) -> Callable[[dict[str, Any]], bool]:
    want = expected_pose(depth)[0]
    return lambda d: (d.get("type") == "TRANSFORM" and d["name"] == "NeedleTipToProbe"
                      and np.allclose(d["matrix"], want, atol=1e-4))


def drain(sock: socket.socket, closed: threading.Event) -> None:
    try:
        while sock.recv(1 << 20):
            pass
    except OSError:
        pass
    closed.set()


def sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.fixture
def server() -> Any:
    with IgtlServer(0, max_rate_hz=None, stale_after_s=30.0, status_period_s=30.0) as srv:
        yield srv


@pytest.fixture
def client_of() -> Any:
    started: list[Client] = []

    def make(port: int) -> Client:
        started.append(Client(port))
        return started[-1]

    yield make
    for c in started:
        c.close()


def test_needle_poses_images_requests_and_no_signal(server: IgtlServer, client_of: Any) -> None:
    client = client_of(server.port)
    client.connected()
    client.wait_for(is_string(NO_SIGNAL))  # nothing pushed yet: the status a client gets on connection

    # A trajectory, sample by sample: each pose reaches the client, as a transform and as a position.
    depths = [2.0 + 0.75 * k for k in range(30)]
    for depth in depths:
        server.push_state(live(depth), calibration=CAL)
        client.wait_for(is_transform_at(depth))
    _, ok = client.wait_for(is_string(OK))
    want, quaternion = expected_pose(depths[-1])
    _, pos = client.wait_for(lambda d: d.get("type") == "POSITION" and np.allclose(d["position"], want[:3, 3],
                                                                                   atol=1e-4))
    assert pos["name"] == "NeedleTip"
    assert np.allclose(pos["quaternion"], quaternion, atol=1e-6)
    transforms = client.of("TRANSFORM")
    assert all(d["header_version"] == 1 for d in transforms)
    assert server.stats().poses_published == len(depths)

    # The image, in the same frame as the needle: the tip's pixel maps to the tip's position.
    grey = np.random.default_rng(1).integers(0, 256, (48, 64), dtype=np.uint8)
    server.push_image(grey, calibration=CAL)
    _, img = client.wait_for(lambda d: d.get("type") == "IMAGE")
    assert img["name"] == "Image" and img["shape"] == [1, 48, 64] and img["dtype"] == "uint8"
    assert img["sha256"] == sha(grey)
    ijk = np.asarray(img["matrix"])
    assert np.allclose(np.linalg.norm(ijk[:3, :2], axis=0), CAL.mm_per_px, atol=1e-6)
    col, row = tip_px(CAL, depths[-1], GUIDE_DEG)
    assert np.allclose(ijk @ [col, row, 0, 1], want[:, 3], atol=1e-4)
    assert np.allclose(ijk[[0, 2], 3], px_to_mm(CAL, (0.0, 0.0)), atol=1e-5)

    # BGR in, RGB out, with the spacing given.
    bgr = np.random.default_rng(2).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    server.push_image(bgr, (0.1, 0.2))
    _, rgb = client.wait_for(lambda d: d.get("type") == "IMAGE" and d["shape"] == [1, 20, 30, 3])
    assert rgb["sha256"] == sha(bgr[:, :, ::-1])
    assert np.allclose(np.linalg.norm(np.asarray(rgb["matrix"])[:3, :2], axis=0), (0.1, 0.2), atol=1e-6)

    # Requests: the latest image and the live pose again.
    n = client.count
    client.send("get IMAGE Image")
    client.wait_for(lambda d: d.get("type") == "IMAGE" and d["sha256"] == rgb["sha256"], since=n)
    n = client.count
    client.send("get TRANS -")
    client.wait_for(is_transform_at(depths[-1]), since=n)
    assert server.stats().requests == 2

    # Stale: NO SIGNAL at once, and no pose after it, even when asked for one.
    server.push_state(live(40.0, age_s=1.0), calibration=CAL)
    i, _ = client.wait_for(is_string(NO_SIGNAL), since=n)
    lost_poll = client.lines[i]["poll"]
    server.push_state(live(41.0, flags=Flag.STALE), calibration=CAL)
    n = client.count
    client.send("get TRANS NeedleTipToProbe")
    client.wait_for(is_string(NO_SIGNAL), since=n)
    marker = np.full((16, 16), 7, np.uint8)
    server.push_image(marker, (0.5, 0.5))  # everything sent before it has arrived once it has
    client.wait_for(lambda d: d.get("type") == "IMAGE" and d["sha256"] == sha(marker), since=n)
    assert [d for d in client.lines[i:] if d.get("type") in ("TRANSFORM", "POSITION") and d["poll"] > lost_poll] \
        == []
    assert server.status == NO_SIGNAL

    # Fresh data without a usable depth says so; a live state brings the needle back.
    server.push_state(NeedleState(None, None, GUIDE_DEG, GUIDE_DEG, flags=Flag.DEPTH_INVALID), calibration=CAL)
    client.wait_for(is_string(NO_DEPTH), since=n)
    n = client.count
    server.push_state(live(12.0), calibration=CAL)
    client.wait_for(is_transform_at(12.0), since=n)
    client.wait_for(is_string(OK), since=n)
    assert ok["timestamp"] > 1e9


def test_a_pipeline_that_stops_pushing_is_a_lost_signal(client_of: Any) -> None:
    with IgtlServer(0, stale_after_s=0.2, status_period_s=30.0) as server:
        client = client_of(server.port)
        client.connected()
        server.push_needle((5.0, 0.0, 8.0), (1.0, 0.0, 1.0))
        last_push = time.monotonic()
        i, _ = client.wait_for(is_string(OK))
        j, _ = client.wait_for(is_string(NO_SIGNAL), since=i)
        waited = time.monotonic() - last_push
        assert 0.2 <= waited < 2.0
        assert server.status == NO_SIGNAL
        # Back as soon as the pipeline pushes again.
        server.push_needle((6.0, 0.0, 8.0), (1.0, 0.0, 1.0))
        client.wait_for(is_string(OK), since=j)


def test_a_late_client_gets_the_current_state_at_once(server: IgtlServer, client_of: Any) -> None:
    grey = np.arange(64 * 48, dtype=np.uint32).reshape(48, 64).astype(np.uint8)
    server.push_image(grey, calibration=CAL)
    server.push_state(live(20.0), calibration=CAL)
    wait_until(lambda: server.stats().poses_published == 1 and server.stats().images_published == 1, what="published")
    client = client_of(server.port)
    client.connected()
    client.wait_for(is_transform_at(20.0))
    client.wait_for(is_string(OK))
    client.wait_for(lambda d: d.get("type") == "IMAGE" and d["sha256"] == sha(grey))
    client.wait_for(lambda d: d.get("type") == "POSITION")


def test_clients_that_vanish_stall_or_talk_garbage_do_not_disturb_the_others(client_of: Any) -> None:
    with IgtlServer(0, max_rate_hz=None, stale_after_s=30.0, send_timeout_s=0.5) as server:
        good, doomed = client_of(server.port), client_of(server.port)
        stalled = socket.create_connection(("127.0.0.1", server.port))  # connects and never reads
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        garbage = socket.create_connection(("127.0.0.1", server.port))
        closed = threading.Event()  # the garbage client reads all it is sent, until the server closes it
        threading.Thread(target=drain, args=(garbage, closed), daemon=True).start()
        good.connected()
        doomed.connected()
        wait_until(lambda: server.stats().clients == 4, what="four clients")

        frame = np.zeros((480, 640, 3), np.uint8)
        slowest = 0.0
        for k in range(60):
            frame[0, 0] = k  # each frame differs
            t0 = time.perf_counter()
            server.push_image(frame, (0.1, 0.1))
            server.push_needle((float(k), 0.0, 10.0), (1.0, 0.0, 1.0))
            slowest = max(slowest, time.perf_counter() - t0)
            if k == 10:
                doomed.wait_for(lambda d: d.get("type") == "IMAGE")
                doomed.proc.kill()  # gone mid-stream, no goodbye
            if k == 20:
                garbage.sendall(struct.pack(">H12s20sIIQQ", 99, b"JUNK", b"", 0, 0, 10**12, 0))
        # Pushing never waits for a client: a blocking send to the stalled one would hang here for ever.
        assert slowest < 0.2

        good.wait_for(lambda d: d.get("type") == "IMAGE" and d["sha256"] == sha(frame[:, :, ::-1]))
        good.wait_for(lambda d: d.get("type") == "TRANSFORM" and d["matrix"][0][3] == 59.0)
        wait_until(lambda: server.stats().clients == 1, what="the three bad clients closed")
        stats = server.stats()
        assert stats.slow_disconnects == 1
        assert stats.errors >= 1  # the garbage header (the killed client may count too)
        assert stats.dropped > 0  # the stalled client was offered the newest, not a backlog
        assert closed.wait(WAIT_S)
        assert server.running
        # Still serving: a new client is welcome.
        late = client_of(server.port)
        late.wait_for(lambda d: d.get("type") == "IMAGE" and d["sha256"] == sha(frame[:, :, ::-1]))
        stalled.close()
        garbage.close()


def test_poses_are_rate_limited_to_the_newest() -> None:
    with IgtlServer(0, max_rate_hz=20.0, stale_after_s=30.0) as server:
        t0 = time.monotonic()
        for k in range(200):
            server.push_needle((float(k), 0.0, 1.0), (1.0, 0.0, 0.0))
        elapsed = time.monotonic() - t0
        wait_until(lambda: server.stats().poses_published + server.stats().coalesced == 200, what="all accounted")
        stats = server.stats()
        assert stats.needle_pushes == 200
        assert 1 <= stats.poses_published <= 2 + elapsed * 20.0 + 1
        assert stats.coalesced == 200 - stats.poses_published


def test_pose_and_image_geometry() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        d = rng.normal(size=3)
        m = needle_matrix((1.0, 2.0, 3.0), d)
        r = m[:3, :3]
        assert np.allclose(r.T @ r, np.eye(3), atol=1e-12) and np.isclose(np.linalg.det(r), 1.0)
        assert np.allclose(r[:, 0], d / np.linalg.norm(d))
        ox, oy, oz, w = quaternion_of(r)
        # The quaternion's own rotation matrix, written out.
        q = np.array([
            [1 - 2 * (oy * oy + oz * oz), 2 * (ox * oy - oz * w), 2 * (ox * oz + oy * w)],
            [2 * (ox * oy + oz * w), 1 - 2 * (ox * ox + oz * oz), 2 * (oy * oz - ox * w)],
            [2 * (ox * oz - oy * w), 2 * (oy * oz + ox * w), 1 - 2 * (ox * ox + oy * oy)]])
        assert np.allclose(q, r, atol=1e-9) and w >= 0
    assert np.allclose(needle_matrix((0, 0, 0), (1, 0, 0)), np.eye(4))
    mirrored = image_matrix((0.2, 0.3), (4.0, -1.0), lateral=-1)
    assert np.allclose(mirrored @ [10, 5, 0, 1], [4.0 - 2.0, 0.0, -1.0 + 1.5, 1.0])
    assert np.linalg.det(mirrored[:3, :3]) > 0 and np.linalg.det(image_matrix((0.2, 0.3))[:3, :3]) > 0


def test_position_message_is_the_protocols_layout() -> None:
    packed = PositionMessage((1.0, 2.0, 3.0), (0.0, 0.5, 0.0, 0.75), timestamp=1.7e9, device_name="NeedleTip").pack()
    assert len(packed) == 58 + 28
    assert packed[2:10] == b"POSITION" and packed[14:23] == b"NeedleTip"
    assert struct.unpack(">7f", packed[58:]) == (1.0, 2.0, 3.0, 0.0, 0.5, 0.0, 0.75)


def test_bad_arguments_are_refused_and_change_nothing(server: IgtlServer) -> None:
    before = server.stats()
    with pytest.raises(ValueError, match="Unix time"):
        server.push_needle((1, 2, 3), (1, 0, 0), timestamp=time.monotonic() % 1e6)
    with pytest.raises(ValueError, match="zero vector"):
        server.push_needle((1, 2, 3), (0, 0, 0))
    with pytest.raises(ValueError, match="uint8"):
        server.push_image(np.zeros((20, 20), np.float32), (0.1, 0.1))
    with pytest.raises(ValueError, match="calibration is for 64x48"):
        server.push_image(np.zeros((20, 20), np.uint8), calibration=CAL)
    with pytest.raises(ValueError, match="spacing"):
        server.push_image(np.zeros((20, 20), np.uint8))
    with pytest.raises(ValueError, match="spacing"):
        server.push_image(np.zeros((20, 20), np.uint8), (0.0, 0.1))
    assert server.stats() == before
    with pytest.raises(IgtlServerError, match=str(server.port)):
        IgtlServer(server.port).start()
