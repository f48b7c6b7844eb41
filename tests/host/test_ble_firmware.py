"""The firmware's own GATT server over the virtual radio, seen by a Bumble host: discovery by UUID, MTU 247,
batched notifications without gaps, the device information, bonded-only configuration and command results."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

import pytest

from needletrack.link.base import LinkError
from needletrack.link.bumble_link import BumbleLink, SecurityError
from needletrack.protocol import (
    STATUS_UUID,
    Config,
    Opcode,
    Result,
    ResultCode,
    Status,
    decode_notification,
    decode_record,
    encode_command,
)
from needletrack.sim import scenario, serve
from needletrack.sim.console import Console
from needletrack.sim.radio import RadioBridgeThread, RadioConfig, stack_for_board
from tests.host.conftest import SERVED


@pytest.fixture(scope="module")
def probe(served_probe):
    return served_probe.transport


async def _results(link: BumbleLink) -> asyncio.Queue[bytes]:
    q: asyncio.Queue[bytes] = asyncio.Queue()
    await link.subscribe(STATUS_UUID, q.put_nowait)
    return q


async def _next(q: asyncio.Queue[bytes], kind: type) -> object:
    while True:
        rec = decode_record(await asyncio.wait_for(q.get(), 5.0))
        if isinstance(rec, kind):
            return rec


async def _connect_and_stream(link: BumbleLink, out: dict[str, object]) -> None:
    # Find the probe by its name, connect, read STATUS, and take 600 samples' worth of notifications.
    found = await link.scan(5.0, first=True)
    assert found and found[0].name is not None and found[0].name.startswith("NeedleTrack-")
    await link.connect(found[0].address, timeout=5.0)
    out["mtu"] = link.mtu_size
    out["status"] = decode_record(await link.read_status())
    await link.start_notify()
    seqs: list[int] = []
    sizes: list[int] = []
    async for note in link.notifications(timeout=3.0):
        sizes.append(len(note.data))
        seqs.extend(s.seq for s in decode_notification(note.data))
        if len(seqs) > 600:
            break
    out["seqs"], out["sizes"] = seqs, sizes


async def _session(transport: str) -> dict[str, object]:
    out: dict[str, object] = {}
    async with BumbleLink(transport) as link:
        await _connect_and_stream(link, out)
        out["model"] = (await link.read("00002a24-0000-1000-8000-00805f9b34fb")).decode()
        results = await _results(link)
        with pytest.raises(SecurityError):
            await link.write_control(encode_command(Opcode.SET_GUIDE_ANGLE, 1, 4500))
        await link.pair()
        await link.write_control(encode_command(Opcode.SET_GUIDE_ANGLE, 2, 4500))
        out["set"] = await _next(results, Result)
        await link.write_control(encode_command(Opcode.SET_GUIDE_ANGLE, 3, 9000))
        out["bad"] = await _next(results, Result)
        await link.write_control(encode_command(Opcode.READ_CONFIG, 4))
        out["config"] = await _next(results, Config)
        await link.disconnect()
    return out


def test_the_firmware_streams_and_answers_over_ble(probe):
    out = asyncio.run(_session(probe))
    assert out["mtu"] == 247
    assert out["model"] == "NT-1"
    assert isinstance(out["status"], Status)
    seqs = out["seqs"]
    assert isinstance(seqs, list) and len(seqs) > 600
    assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs)), "sequence gaps"
    sizes = out["sizes"]
    assert isinstance(sizes, list) and max(sizes) <= 240 and all(s % 20 == 0 for s in sizes)
    assert max(sizes) > 20  # batched beyond one sample at this MTU
    ok = out["set"]
    assert isinstance(ok, Result) and (ok.opcode, ok.token, ok.code) == (Opcode.SET_GUIDE_ANGLE, 2, ResultCode.OK)
    bad = out["bad"]
    assert isinstance(bad, Result) and (bad.token, bad.code) == (3, ResultCode.OUT_OF_RANGE)
    cfg = out["config"]
    assert isinstance(cfg, Config) and cfg.guide_angle_deg == pytest.approx(45.0)


def test_a_host_that_comes_back_gets_fresh_samples(probe):
    async def twice() -> tuple[list[int], list[int]]:
        runs = []
        for _ in range(2):
            async with BumbleLink(probe) as link:
                found = await link.scan(5.0, first=True)
                await link.connect(found[0].address, timeout=5.0)
                await link.start_notify()
                seqs: list[int] = []
                async for note in link.notifications(timeout=3.0):
                    seqs.extend(s.seq for s in decode_notification(note.data))
                    if len(seqs) > 100:
                        break
                await link.disconnect()
            runs.append(seqs)
            await asyncio.sleep(1.0)  # the bridge takes a new host on its HCI socket once the last one has gone
        return runs[0], runs[1]

    first, second = asyncio.run(twice())
    assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(second))
    assert (second[0] - first[-1]) % 65536 < 30000  # newer samples, the loop never stopped


@pytest.mark.slow
def test_a_central_in_its_own_process_streams_a_minute_without_gaps(probe):
    import subprocess
    import sys

    central = Path(__file__).with_name("radio_central.py")
    proc = subprocess.run([sys.executable, str(central), probe, "stream", "60"], capture_output=True, text=True,
                          timeout=120)
    steps = {d["step"]: d for d in map(json.loads, proc.stdout.splitlines()) if d.get("step")}
    assert steps["connect"]["mtu"] == 247
    seqs = steps["stream"]["seqs"]
    assert len(seqs) > 60 * 190
    assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs)), "sequence gaps"


def test_connecting_to_a_malformed_or_absent_address_says_why(probe):
    async def attempt(address: str) -> str:
        async with BumbleLink(probe) as link:
            with pytest.raises(LinkError) as refused:
                await link.connect(address, timeout=1.0)
            return str(refused.value)

    assert "is not a Bluetooth address" in asyncio.run(attempt("F4:12:FA:00:01"))
    assert "no answer within 1 s" in asyncio.run(attempt("AA:BB:CC:DD:EE:FF/P"))


async def _btstack_session(transport: str) -> dict[str, object]:
    out: dict[str, object] = {}
    async with BumbleLink(transport) as link:
        await _connect_and_stream(link, out)
        out["board"] = (await link.read("00002a27-0000-1000-8000-00805f9b34fb")).decode()
        with pytest.raises(SecurityError) as refused:
            await link.write_control(encode_command(Opcode.SET_GUIDE_ANGLE, 1, 4500))
        out["att_error"] = refused.value.att_error
        with pytest.raises(LinkError, match="pairing failed"):
            await link.pair()
        out["encrypted"] = link.is_encrypted
        await link.disconnect()
    return out


def test_the_firmware_boots_and_streams_on_a_pico_w_over_btstack(tmp_path):
    # The Pico W's stack as MicroPython builds it: no pairing or bonding config (the firmware boots without
    # them), a notify that never refuses (the firmware paces itself), a link that is never encrypted.
    # The stack under test, not the board's CPU speed: compute free.
    session, fresh = serve.prepare(scenario.parse(SERVED), tmp_path, board="pico_w", cpu="ideal")
    doc = json.loads(session.read_text())
    with RadioBridgeThread(RadioConfig(stack=stack_for_board("pico_w"))) as radio:
        doc["radio"] = {"port": radio.shim_port, "pace": 1}
        session.write_text(json.dumps(doc, indent=1))
        with Console(tmp_path, session, provision=fresh):
            out = asyncio.run(asyncio.wait_for(_btstack_session(radio.transport), 60))
    assert out["board"] == "pico_w" and out["mtu"] == 247
    assert isinstance(out["status"], Status)
    seqs = out["seqs"]
    assert isinstance(seqs, list) and len(seqs) > 600
    assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs)), "sequence gaps"
    sizes = out["sizes"]
    assert isinstance(sizes, list) and max(sizes) <= 240 and all(s % 20 == 0 for s in sizes)
    assert out["att_error"] == 0x0F  # BTstack: Insufficient Encryption; the link cannot be encrypted
    assert out["encrypted"] is False
