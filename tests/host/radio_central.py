"""A BLE central for the radio tests, run in its own process as a host application would be.

    python tests/host/radio_central.py TRANSPORT SCENARIO [SECONDS]

Scenarios:
  session  scan, connect (MTU 247), read status, stream SECONDS, echo (truncation), control write refused
           unencrypted then accepted after pairing, disconnect, reconnect with the bond, the probe disconnects
           us, reconnect at the default MTU (23)
  stream   scan, connect, stream SECONDS (then the parent may kill us)

Prints one JSON object per step on stdout ({"step": name, ...}); exits non-zero on an unexpected error.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from needletrack.link.bumble_link import BumbleLink, LinkError, SecurityError
from needletrack.protocol import Opcode, Result, decode_notification, decode_record, encode_command

ECHO_UUID = "301b00f0-5a5e-487c-b7c0-b53a1d892a59"


def emit(step: str, **fields: Any) -> None:
    print(json.dumps({"step": step, **fields}), flush=True)


async def stream(link: BumbleLink, seconds: float) -> None:
    seqs: list[int] = []
    sizes: list[int] = []
    t0 = time.monotonic()
    async for note in link.notifications(timeout=2.0):
        samples = decode_notification(note.data)
        seqs.extend(s.seq for s in samples)
        sizes.append(len(note.data))
        if note.t_host - t0 >= seconds:
            break
    emit("stream", seqs=seqs, sizes=sizes, seconds=time.monotonic() - t0)
    if not link.is_connected:
        emit("lost", reason=link.disconnect_reason)


async def connect(link: BumbleLink) -> None:
    t0 = time.monotonic()
    found = await link.scan(5.0, first=True)
    emit("scan", found=[{"address": f.address, "name": f.name, "uuids": list(f.service_uuids)} for f in found])
    await link.connect(found[0].address, timeout=5.0)
    emit("connect", mtu=link.mtu_size, address=link.address, seconds=time.monotonic() - t0)


async def echo(link: BumbleLink, payload: bytes) -> None:
    got: asyncio.Queue[bytes] = asyncio.Queue()
    await link.subscribe(ECHO_UUID, got.put_nowait)
    await link.write(ECHO_UUID, payload)
    value = await asyncio.wait_for(got.get(), 3.0)
    emit("echo", length=len(value), first=value[0], mtu=link.mtu_size)


async def session(link: BumbleLink, seconds: float) -> None:
    await connect(link)
    emit("status", record=(await link.read_status()).hex())
    await link.start_notify()
    await stream(link, seconds)
    await echo(link, bytes(range(100)))

    results: asyncio.Queue[bytes] = asyncio.Queue()
    await link.subscribe("301b0004-5a5e-487c-b7c0-b53a1d892a59", results.put_nowait)
    try:
        await link.write_control(encode_command(Opcode.TARE, 7))
        emit("control_unencrypted", refused=False)
    except SecurityError as e:
        emit("control_unencrypted", refused=True, att_error=e.att_error)
    new_bond = await link.pair()
    await link.write_control(encode_command(Opcode.TARE, 8))
    record = decode_record(await asyncio.wait_for(results.get(), 3.0))
    assert isinstance(record, Result)
    emit("control_paired", new_bond=new_bond, encrypted=link.is_encrypted, token=record.token,
         opcode=int(record.opcode))

    await link.disconnect()
    emit("disconnected", reason=link.disconnect_reason)
    await connect(link)
    new_bond = await link.pair()
    await link.write_control(encode_command(Opcode.TARE, 9))
    emit("reconnected", new_bond=new_bond, encrypted=link.is_encrypted)

    await link.write(ECHO_UUID, b"D")  # the probe hangs up on us
    reason = await link.wait_disconnected(5.0)
    emit("probe_disconnected", reason=reason)

    link.requested_mtu = 23
    await connect(link)
    await echo(link, bytes(range(100)))
    await link.start_notify()
    await stream(link, 0.5)
    await link.disconnect()


async def main(transport: str, scenario: str, seconds: float) -> None:
    async with BumbleLink(transport) as link:
        if scenario == "session":
            await session(link, seconds)
        elif scenario == "stream":
            await connect(link)
            await link.start_notify()
            emit("subscribed")
            await stream(link, seconds)
        else:
            raise SystemExit(f"unknown scenario {scenario}")
    emit("done")


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 2.0),
                                     120))
    except (LinkError, TimeoutError) as e:
        emit("error", error=repr(e))
        raise SystemExit(1) from e
