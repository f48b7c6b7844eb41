"""The virtual probe's radio: a MicroPython GATT peripheral, a real BLE stack in the bridge, a host in another process.

The peripheral (tests/host/mpy/radio_peripheral.py) runs on the MicroPython unix port with the virtual probe's
bluetooth/vradio/time modules; the bridge (needletrack.sim.radio) runs in a thread here; the central is
tests/host/radio_central.py, a separate process using needletrack.link.bumble_link on the bridge's
tcp-client transport, as the host application would use a dongle.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from needletrack.link.bumble_link import BumbleLink, SecurityError
from needletrack.protocol import Opcode, Status, decode_record, encode_command
from needletrack.sim.radio import RadioBridgeThread, RadioConfig, stack_for_board
from tests.host.line_process import LineProcess
from tests.mpy_harness import micropython_command

ROOT = Path(__file__).resolve().parents[2]
MPY = ROOT / "tests" / "host" / "mpy"
MICROPYPATH = f"{ROOT / 'host_tools' / 'needletrack' / 'sim' / 'mpy'}:{MPY}"
CENTRAL = ROOT / "tests" / "host" / "radio_central.py"
ECHO_UUID = "301b00f0-5a5e-487c-b7c0-b53a1d892a59"
REASON_CONNECTION_TIMEOUT = 0x08
REASON_REMOTE_USER_TERMINATED = 0x13


class Peripheral(LineProcess):
    """The MicroPython peripheral in its own process; its "# ..." lines collected as they come."""

    def __init__(self, port: int, duration_s: float = 0, pace: float = 1.0, *options: str):
        super().__init__([*micropython_command(), str(MPY / "radio_peripheral.py"), str(port), str(duration_s),
                          str(pace), *options], {**os.environ, "MICROPYPATH": MICROPYPATH},
                         stderr=subprocess.STDOUT)

    def wait_for(self, prefix: str, timeout: float, count: int = 1) -> list[str]:
        def found(lines: list[str]) -> list[str] | None:
            hits = [line for line in lines if line.startswith(prefix)]
            return hits if len(hits) >= count else None

        return list(self.wait_until(found, timeout, f"peripheral never printed {prefix!r} x{count}"))

    def __enter__(self) -> Peripheral:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def central(transport: str, scenario: str, seconds: float, timeout: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CENTRAL), transport, scenario, str(seconds)],
        env={**os.environ, "PYTHONPATH": str(ROOT / "host_tools")}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )


def steps_of(proc: subprocess.Popen[str], timeout: float) -> dict[str, list[dict[str, Any]]]:
    out, err = proc.communicate(timeout=timeout)
    steps: dict[str, list[dict[str, Any]]] = {}
    for line in out.splitlines():
        record = json.loads(line)
        steps.setdefault(record["step"], []).append(record)
    assert "error" not in steps, (steps["error"], err[-2000:])
    return steps


def gaps(seqs: list[int]) -> int:
    return sum(1 for a, b in itertools.pairwise(seqs) if (b - a) % 65536 != 1)


@pytest.fixture(scope="module")
def session() -> Iterator[tuple[dict[str, list[dict[str, Any]]], list[str]]]:
    with RadioBridgeThread() as bridge, Peripheral(bridge.shim_port) as probe:
        probe.wait_for("# ready", 10)
        steps = steps_of(central(bridge.transport, "session", 2.0, 60), 60)
        assert "done" in steps
        yield steps, list(probe.lines)


def test_the_host_finds_the_probe_by_service_uuid_and_reads_its_scan_response(session):
    steps, _ = session
    (found,) = steps["scan"][0]["found"]
    assert "301b0001-5a5e-487c-b7c0-b53a1d892a59" in found["uuids"]
    assert found["name"] == "NeedleTrack-TEST"  # only in the scan response
    assert found["address"] == RadioConfig.address + "/P"


def test_mtu_247_is_negotiated_and_the_firmware_hears_of_it(session):
    steps, lines = session
    assert steps["connect"][0]["mtu"] == 247
    assert "# mtu 247" in lines


def test_notifications_stream_without_gaps_in_batches_that_fit_the_mtu(session):
    steps, _ = session
    stream = steps["stream"][0]
    seqs, sizes = stream["seqs"], stream["sizes"]
    assert len(seqs) >= 0.8 * 200 * 2.0  # 200 Hz for 2 s
    assert gaps(seqs) == 0
    assert all(s % 20 == 0 and 20 <= s <= 240 for s in sizes)  # whole samples, at most (247 - 3) // 20 of them


def test_a_read_is_answered_by_the_firmware_on_its_read_request(session):
    steps, _ = session
    status = decode_record(bytes.fromhex(steps["status"][0]["record"]))
    assert isinstance(status, Status)
    assert status.rate_hz == 200


def test_the_stack_truncates_notifications_to_mtu_minus_3_and_writes_to_the_buffer(session):
    steps, _ = session
    at_247, at_23 = steps["echo"]
    assert (at_247["mtu"], at_247["length"]) == (247, 244)
    assert (at_23["mtu"], at_23["length"]) == (23, 20)
    assert at_247["first"] == at_23["first"] == 64  # a 100-byte write kept what fits gatts_set_buffer(h, 64)


def test_an_encrypted_write_is_refused_unbonded_and_accepted_after_pairing(session):
    steps, lines = session
    refused = steps["control_unencrypted"][0]
    assert refused["refused"] and refused["att_error"] == 0x05  # NimBLE: Insufficient Authentication
    paired = steps["control_paired"][0]
    assert paired["new_bond"] and paired["encrypted"]
    assert (paired["opcode"], paired["token"]) == (Opcode.TARE, 8)
    controls = [line for line in lines if line.startswith("# control")]
    assert controls[0] == "# control 0508"  # the refused write (token 7) never reached the firmware
    # encrypted, Just Works (not authenticated), bonded, 16-byte key; heard before the first encrypted write
    assert lines.index("# enc 1 1 0 1 16") < lines.index("# control 0508")


def test_a_reconnection_encrypts_with_the_bond_the_firmware_kept(session):
    steps, lines = session
    assert steps["disconnected"][0]["reason"] == REASON_REMOTE_USER_TERMINATED
    again = steps["reconnected"][0]
    assert again == {"step": "reconnected", "new_bond": False, "encrypted": True}
    assert len([line for line in lines if line.startswith("# bonded")]) == 1
    assert "# control 0509" in lines


def test_the_probe_can_hang_up(session):
    steps, lines = session
    assert steps["probe_disconnected"][0]["reason"] == REASON_REMOTE_USER_TERMINATED
    assert len([line for line in lines if line.startswith("# connect")]) == 3


def test_a_host_that_dies_is_a_supervision_timeout_and_the_next_host_connects():
    with RadioBridgeThread() as bridge, Peripheral(bridge.shim_port, pace=5) as probe:
        probe.wait_for("# ready", 10)
        first = central(bridge.transport, "stream", 30.0, 60)
        assert first.stdout is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "subscribed" not in (first.stdout.readline() or "subscribed"):
            pass
        probe.wait_for("# mtu 247", 10)
        time.sleep(0.5)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        probe.wait_for("# disconnect", 10)
        # the probe re-advertises on its disconnect IRQ; a new host process finds it and streams
        steps = steps_of(central(bridge.transport, "stream", 1.5, 60), 60)
        seqs = steps["stream"][0]["seqs"]
        assert len(seqs) >= 0.8 * 200 * 5 * 1.5  # paced at 5x real time
        assert gaps(seqs) == 0
        assert len(probe.wait_for("# connect", 1, count=2)) == 2


def test_a_probe_switched_off_is_a_supervision_timeout_for_the_host():
    with RadioBridgeThread() as bridge, Peripheral(bridge.shim_port) as probe:
        probe.wait_for("# ready", 10)
        host = central(bridge.transport, "stream", 30.0, 60)
        probe.wait_for("# mtu 247", 15)
        time.sleep(0.3)
        probe.stop()
        steps = steps_of(host, 30)
        assert steps["lost"][0]["reason"] == REASON_CONNECTION_TIMEOUT


def test_btstack_refuses_with_insufficient_encryption_and_indications_updates_random_address_work():
    async def host(transport: str) -> tuple[int, str, list[bytes]]:
        async with BumbleLink(transport) as link:
            await link.connect(timeout=5.0)
            status: asyncio.Queue[bytes] = asyncio.Queue()
            await link.subscribe("301b0004-5a5e-487c-b7c0-b53a1d892a59", status.put_nowait)
            try:
                await link.write_control(encode_command(Opcode.TARE, 1))
                error = 0
            except SecurityError as e:
                error = e.att_error
            await link.write(ECHO_UUID, b"U")
            got = [await asyncio.wait_for(status.get(), 3.0)]
            # an indication the host did not subscribe to is still confirmed by its stack (and not delivered)
            await link.write(ECHO_UUID, b"I")
            await asyncio.sleep(0.3)
            return error, str(link.address), got

    config = RadioConfig(stack="btstack")
    with RadioBridgeThread(config) as bridge, Peripheral(bridge.shim_port, 0, 1.0, "random") as probe:
        probe.wait_for("# ready", 10)
        error, address, got = asyncio.run(asyncio.wait_for(host(bridge.transport), 20))
        assert error == 0x0F  # BTstack: Insufficient Encryption
        assert got == [b"upd"]  # the CCCD asks for notifications: send_update notifies
        # _IRQ_GATTS_INDICATE_DONE, status 0; BTstack's own services end at handle 6, so status's value is 14
        assert probe.wait_for("# indicated", 5) == ["# indicated 14 0"]
        (mac,) = probe.wait_for("# mac", 0)
        addr_type, addr = mac.split()[2:]
        assert addr_type == "1" and int(addr[:2], 16) >> 6 == 0b11  # a static random address
        assert address == ":".join(addr[i:i + 2] for i in range(0, 12, 2)).upper()


class _ScriptedBridge:
    """A stand-in for the bridge: answers the stack's requests the way the test script expects."""

    def __init__(self, stack: str = "nimble", read_after_writes: bool = False, interval: int = 24,
                 after_connect: list[dict[str, Any]] | None = None) -> None:
        self.stack = stack
        self.read_after_writes = read_after_writes
        self.interval = interval  # the connection interval, in units of 1.25 ms
        self.after_connect = after_connect or []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.notified: list[tuple[int, int, bytes]] = []
        self.notified_at: list[float] = []  # time.monotonic() of each notification's arrival
        self.ops: list[dict[str, Any]] = []
        self.replies: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _send(self, conn: socket.socket, obj: dict[str, Any]) -> None:
        payload = json.dumps(obj).encode()
        conn.sendall(struct.pack("<HB", len(payload) + 1, 0x4A) + payload)

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        self._send(conn, {"ev": "hello", "addr": "f412fa000001", "addr_type": 0, "stack": self.stack, "queue": 12,
                          "per_event": 4})
        stream = conn.makefile("rb")
        with contextlib.suppress(ConnectionError):
            self._loop(conn, stream)
        conn.close()

    def _loop(self, conn: socket.socket, stream: Any) -> None:
        write_handle = 0
        while header := stream.read(2):
            (n,) = struct.unpack("<H", header)
            body = stream.read(n)
            if body[0] == 0x4E:
                c, h = struct.unpack_from("<HH", body, 1)
                self.notified.append((c, h, body[5:]))
                self.notified_at.append(time.monotonic())
                continue
            op = json.loads(body[1:])
            self.ops.append(op)
            if op["op"] == "services":
                write_handle = op["services"][0][1][1][2]
            elif op["op"] == "adv" and op["interval_us"]:
                self._send(conn, {"ev": "connect", "conn": 1, "addr_type": 0, "addr": "001bdc000002",
                                  "interval": self.interval, "latency": 0, "timeout": 72})
                for event in self.after_connect:
                    self._send(conn, event)
            elif op["op"] == "update":
                for value in (b"abcdefgh", b"12345678"):
                    self._send(conn, {"ev": "write", "conn": 1, "handle": write_handle, "value": value.hex()})
                if self.read_after_writes:
                    self._send(conn, {"ev": "read", "conn": 1, "handle": write_handle, "id": 7})
            elif op["op"] == "reply":
                self.replies.append(op)
            elif op["op"] == "disconnect":
                self._send(conn, {"ev": "disconnect", "conn": 1, "addr_type": 0, "addr": "001bdc000002",
                                  "reason": REASON_REMOTE_USER_TERMINATED})


def test_the_stack_model_queue_buffers_and_errors():
    bridge = _ScriptedBridge()
    run = subprocess.run([*micropython_command(), str(MPY / "shim_check.py"), str(bridge.port)],
                         env={**os.environ, "MICROPYPATH": MICROPYPATH}, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stdout + run.stderr
    checks = {c["check"]: c for c in map(json.loads, run.stdout.splitlines())}
    assert set(checks) >= {"inactive", "uuid", "handles", "local_write", "busy", "connected", "queue", "append",
                           "disconnect", "disconnected", "done"}
    enodev, enomem, enotconn, einval, ebusy = 19, 12, 107, 22, 16
    assert checks["inactive"] == {"check": "inactive", "notify": enodev, "mac": enodev}
    uuid = checks["uuid"]
    assert (uuid["r16"], uuid["r128"]) == ("UUID(0x180a)", "UUID('6e400001-b5a3-f393-e0a9-e50e24dcca9e')")
    assert uuid["b128"] == bytes.fromhex("6E400001B5A3F393E0A9E50E24DCCA9E")[::-1].hex()
    assert uuid["eq"] and uuid["hash"] and uuid["ne"]
    # GAP 1-5, GATT 6-9, service 10, notify char 11/12 + CCCD 13, write char 14/15, its descriptor 16
    assert checks["handles"]["handles"] == [12, 15, 16]
    assert checks["local_write"] == {"check": "local_write", "returned": 30, "read": "7a" * 30, "unknown": einval}
    assert checks["busy"]["register"] == ebusy  # services cannot change while advertising
    assert checks["connected"]["event"] == 1 and checks["connected"]["addr"] == "001bdc000002"
    q = checks["queue"]
    # 12 packets fit the queue; one connection event (30 ms) sends 4, so 4 more fit; after 1 s all 12 again
    assert (q["first"], q["err1"], q["second"], q["err2"], q["third"], q["err3"]) == (12, enomem, 4, enomem, 12,
                                                                                      enomem)
    assert checks["append"] == {"check": "append", "events": [3, 3], "read1": b"abcdefgh12".hex(), "read2": ""}
    assert checks["disconnect"]["returned"] is True
    assert checks["disconnected"] == {"check": "disconnected", "event": 2, "notify": enotconn, "again": False}
    # everything the stack accepted reached the bridge, in order
    sent = [(1, 12, bytes((i,)) * 30) for n in (12, 4, 12) for i in range(n)]
    assert bridge.notified == sent


def test_the_link_sends_during_a_sleep_and_a_disconnection_waits_for_its_connection_event():
    # 30 ms connection interval. On a board the controller sends a queued notification at the next connection
    # event while the application sleeps, and ends a link at a connection event, not within the bytecodes that
    # follow gap_disconnect.
    bridge = _ScriptedBridge()
    started = time.monotonic()
    run = subprocess.run([*micropython_command(), str(MPY / "link_timing_check.py"), str(bridge.port)],
                         env={**os.environ, "MICROPYPATH": MICROPYPATH}, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout.splitlines()[-1])
    assert result["slept"] >= 290
    assert len(bridge.notified_at) == 1
    # the notification left within a connection interval or two of being queued, not 300 ms later
    (sent,) = bridge.notified_at
    assert sent - started < (time.monotonic() - started) - 0.15, (sent - started, time.monotonic() - started)
    assert result["after_spin"] == 1  # connected, not yet disconnected
    assert result["disconnected"] and result["spun_ms"] < 200  # a spinning firmware hears it too


ENOMEM, EINVAL, ENOTCONN = 12, 22, 107


@pytest.mark.parametrize("board", ["pico_w", "xiao_esp32s3"])
def test_each_board_gets_its_stack_as_micropython_builds_it(board):
    stack = stack_for_board(board)
    bridge = _ScriptedBridge(stack, read_after_writes=True)
    run = subprocess.run([*micropython_command(), str(MPY / "stack_check.py"), str(bridge.port), board],
                         env={**os.environ, "MICROPYPATH": MICROPYPATH}, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    checks = {c["check"]: c for c in map(json.loads, run.stdout.splitlines())}
    assert "done" in checks, run.stdout + run.stderr
    type_error = ["TypeError"]
    types = checks["types"]
    # mp_obj_get_int and mp_get_buffer_raise: a None connection handle is a TypeError, not an OSError
    for name in ("notify_none", "notify_handle_str", "notify_int_data", "read_none", "advertise_float",
                 "uuid_list", "disconnect_none"):
        assert types[name][:1] == type_error, (name, types[name])
    assert types["write_str"] is None  # a str has the buffer protocol
    # an IRQ reaches a loop that never sleeps nor calls into the stack
    assert checks["busy_loop"]["connected"]
    assert checks["config"]["is_ble"]
    assert {"op": "exchange_mtu", "conn": 1} in bridge.ops  # the peripheral's own MTU exchange (GATT client)
    # each write is what gatts_read sees in its own IRQ, in order
    assert checks["writes"]["seen"] == ["abcdefgh", "12345678"]
    # the read request's IRQ returns 3 (Read Not Permitted): NimBLE refuses the read with it, BTstack cannot
    (reply,) = bridge.replies
    assert (reply["id"], reply["status"], bytes.fromhex(reply["value"])) == (7, 0 if stack == "btstack" else 3,
                                                                            b"12345678")
    config, congestion = checks["config"], checks["congestion"]
    if stack == "btstack":
        unknown = ["ValueError", "unknown config param"]
        assert [config[k] for k in ("bond", "le_secure", "mitm", "io", "rxbuf")] == [unknown] * 5
        assert not config["gap_pair"] and not config["gap_passkey"] and not config["class_gap_pair"]
        assert config["gap_pair_error"] == ["AttributeError", "'BLE' object has no attribute 'gap_pair'"]
        assert config["gap_name"] == "MPY BTSTACK"
        assert (config["mtu"], config["mtu_600"]) == (1017, None)  # l2cap_max_le_mtu(); anything below it
        assert checks["active"]["secrets"] == []  # no secret IRQs
        assert types["handles"] == [9, 12]  # BTstack's GAP and GATT services take handles 1-6
        # gatts_notify never refuses: 60 notifications of 200 bytes, 12 in the controller, the rest on the heap
        assert (congestion["sent"], congestion["error"], congestion["waiting"]) == (60, None, 48)
        assert congestion["heap_fell"] >= 48 * 200
        assert checks["unknown_conn"] == {"check": "unknown_conn", "notify": ["OSError", EINVAL], "disconnect": True,
                                          "exchange_mtu": None}
        assert checks["disconnected"]["data"] == [1, 255, "000000000000"]  # BTstack: no address on disconnect
        assert checks["disconnected"]["waiting_before"] == 0  # sent at the connection events since
        assert [n for n, _, _ in bridge.notified].count(1) == 60  # every one reached the radio, in order
        assert [v[0] for _, _, v in bridge.notified] == list(range(60))
    else:
        assert [config[k] for k in ("bond", "le_secure", "mitm", "io")] == [None] * 4
        assert config["rxbuf"] == ["ValueError", "unknown config param"]
        assert config["gap_pair"] and config["gap_passkey"] and config["gap_name"] == "MPY ESP32"
        assert config["class_gap_pair"] and config["gap_pair_error"] is None
        assert (config["mtu"], config["mtu_600"]) == (256, ["OSError", EINVAL])  # NimBLE: 23-527
        # active(True) asks for the stored IRK, offers a new one, then reads the stored peers (load_irk)
        assert checks["active"]["secrets"] == [["get", 10, 0, "irk"], ["set", 10, "irk", 16], ["get", 2, 0, None]]
        assert types["handles"] == [12, 15]
        # NimBLE's refusal when its mbufs are gone: OSError(ENOMEM) once the 12 buffers are taken
        assert (congestion["sent"], congestion["error"], congestion["waiting"]) == (12, ENOMEM, 0)
        assert congestion["heap_fell"] < 48 * 200
        assert checks["unknown_conn"] == {"check": "unknown_conn", "notify": ["OSError", ENOTCONN],
                                          "disconnect": False, "exchange_mtu": ["OSError", ENOTCONN]}
        assert checks["disconnected"]["data"] == [1, 0, "001bdc000002"]


@pytest.mark.parametrize("board", ["pico_w", "xiao_esp32s3"])
def test_the_firmware_never_lets_the_stack_queue_grow_beyond_the_link(board):
    # A central at a 100 ms interval (4 packets per event: 40 notifications/s) and 1000 samples/s (84
    # notifications/s): the link cannot carry them. NimBLE refuses what it has no buffer for; BTstack would queue
    # it all on the heap, so the firmware paces itself by the interval the stack reported. Either way what is not
    # sent stays in the firmware's ring, whose overflow is counted, and the stack holds at most its 12 buffers.
    after = [{"ev": "mtu", "conn": 1, "mtu": 247},
             {"ev": "conn_update", "conn": 1, "interval": 80, "latency": 0, "timeout": 400, "status": 0}]
    bridge = _ScriptedBridge(stack_for_board(board), interval=80, after_connect=after)
    firmware = ROOT / "firmware"
    run = subprocess.run([*micropython_command(), str(MPY / "pacing_check.py"), str(bridge.port), board],
                         env={**os.environ, "MICROPYPATH": f"{MICROPYPATH}:{firmware}"}, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    out = json.loads(run.stdout.splitlines()[-1])
    assert (out["mtu"], out["interval_ms"]) == (247, 100)
    assert out["paced"] == (board == "pico_w")
    assert out["produced"] == 10000
    assert out["most_in_stack"] <= 12  # nothing ever waited on the heap beyond the controller's buffers
    assert out["sent"] + out["dropped"] + 256 >= out["produced"]  # every sample sent, dropped or still in the ring
    bridge.thread.join(10)  # every frame the probe sent has been read
    handles = [h for _, h, _ in bridge.notified]
    h_meas = max(set(handles), key=handles.count)
    notes = handles.count(h_meas)
    received = sum(len(v) // 20 for _, h, v in bridge.notified if h == h_meas)
    assert 0 <= out["sent"] - received <= 12 * 12  # what the stack took and had not sent when the probe ended
    if board == "pico_w":
        # two notifications per reported interval, 20/s, the status's every 2 s included; none refused
        assert 185 <= notes <= 200 and out["busy"] == 0
    else:
        # as many as the stack takes: the link's 40/s, the rest refused with ENOMEM
        assert 380 <= notes <= 410 and out["busy"] > 0


@pytest.mark.slow
def test_sixty_seconds_of_notifications_without_a_gap():
    with RadioBridgeThread() as bridge, Peripheral(bridge.shim_port, pace=1.0) as probe:
        probe.wait_for("# ready", 10)
        steps = steps_of(central(bridge.transport, "stream", 60.0, 120), 120)
        seqs = steps["stream"][0]["seqs"]
        assert len(seqs) >= 0.95 * 200 * 60
        assert gaps(seqs) == 0
