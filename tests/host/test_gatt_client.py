"""The GATT client role on the virtual probe's own connections (bluetooth.gattc_*), on both boards' stacks.

A MicroPython peripheral (tests/host/mpy/gatt_client_peripheral.py, the unix port with the stand-in) discovers,
reads and writes the GATT server of a real Bumble central connected through the radio bridge, and receives the
central's notification and indication. What the peripheral's handler hears must be MicroPython's event tuples,
with each board's statuses and refusals (extmod/nimble/modbluetooth_nimble.c, extmod/btstack/modbluetooth_btstack.c).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from typing import Any

import pytest
from bumble import att, hci
from bumble.device import Connection, Device, DeviceConfiguration
from bumble.gatt import Characteristic, CharacteristicValue, Descriptor, Service
from bumble.transport import open_transport

from needletrack.sim.radio import RadioBridgeThread, RadioConfig, stack_for_board
from tests.host.test_radio import MICROPYPATH, MPY
from tests.mpy_harness import micropython_command

SERVICE = "a5a5a5a5-ffff-9999-1111-5a5a5a5a5a5a"
CHAR = "00000000-1111-2222-3333-444444444444"
LOCKED = "00000000-1111-2222-3333-555555555555"
SLOW = "00000000-1111-2222-3333-666666666666"  # its reads are never answered
OTHER_SERVICE = "180F"  # battery, a 16-bit UUID, before ours in the table

ENOTCONN, EINVAL, EBUSY, EALREADY = 107, 22, 16, 114


def _uuid_repr(u: str) -> str:
    return f"UUID('{u}')"


async def central(transport: str, probe_address: str, steps: asyncio.Queue[dict[str, Any]],
                  cut: bool = False) -> dict[str, Any]:
    """Connect to the probe, serve a GATT table, record the probe's writes, then notify and indicate (cut: drop
    the link once the probe reads SLOW)."""
    seen: dict[str, Any] = {"writes": []}
    async with await open_transport(transport) as t:
        device = Device.from_config_with_hci(
            DeviceConfiguration(name="central", address=hci.Address.generate_static_address(),
                                gap_service_enabled=False, gatt_service_enabled=False), t.source, t.sink)
        server = device.gatt_server
        wrote = asyncio.Event()
        char: Characteristic[bytes] = Characteristic(
            CHAR, Characteristic.Properties.READ | Characteristic.Properties.WRITE
            | Characteristic.Properties.WRITE_WITHOUT_RESPONSE | Characteristic.Properties.NOTIFY
            | Characteristic.Properties.INDICATE,
            Characteristic.Permissions.READABLE | Characteristic.Permissions.WRITEABLE,
            CharacteristicValue(read=lambda _c: b"hello", write=lambda _c, _v: None),
            [Descriptor("2901", Descriptor.Permissions.READABLE, b"the char")])
        def refuse(_connection: Connection) -> bytes:
            raise att.ATT_Error(att.ErrorCode.READ_NOT_PERMITTED)

        locked: Characteristic[bytes] = Characteristic(LOCKED, Characteristic.Properties.WRITE,
                                                       Characteristic.Permissions.WRITEABLE,
                                                       CharacteristicValue(read=refuse, write=lambda _c, _v: None))
        asked = asyncio.Event()

        async def never(_connection: Connection) -> bytes:
            asked.set()
            await asyncio.Event().wait()
            return b""

        slow: Characteristic[bytes] = Characteristic(SLOW, Characteristic.Properties.READ,
                                                     Characteristic.Permissions.READABLE,
                                                     CharacteristicValue(read=never))
        device.add_services([Service(OTHER_SERVICE, []), Service(SERVICE, [char, locked, *([slow] if cut else [])])])
        on_pdu = server.on_gatt_pdu

        def record(connection: Connection, pdu: att.ATT_PDU) -> None:
            if pdu.op_code in (att.Opcode.ATT_WRITE_REQUEST, att.Opcode.ATT_WRITE_COMMAND):
                seen["writes"].append([pdu.name, pdu.attribute_handle, bytes(pdu.attribute_value).decode()])
                if pdu.op_code == att.Opcode.ATT_WRITE_COMMAND:
                    wrote.set()
            on_pdu(connection, pdu)

        server.on_gatt_pdu = record  # type: ignore[method-assign]
        await device.power_on()
        while (await steps.get())["step"] != "advertising":
            pass
        connection = await device.connect(hci.Address(probe_address, hci.Address.PUBLIC_DEVICE_ADDRESS),
                                          own_address_type=hci.OwnAddressType.PUBLIC, timeout=5.0)
        gone = asyncio.Event()
        connection.on(connection.EVENT_DISCONNECTION, lambda _reason: gone.set())
        if cut:
            await asyncio.wait_for(asked.wait(), 15.0)
            await connection.disconnect()
            return seen
        await asyncio.wait_for(wrote.wait(), 15.0)
        seen["handles"] = {"char": char.handle, "locked": locked.handle, "user": char.descriptors[0].handle}
        # not subscribed: both stacks still deliver what arrives
        await server.notify_subscriber(connection, char, b"note", force=True)
        await server.indicate_subscriber(connection, char, b"ind", force=True)
        seen["indication_confirmed"] = True
        # the probe hangs up (active(False)) once it has heard both
        await asyncio.wait_for(gone.wait(), 10.0)
    return seen


def run(board: str, cut: bool = False) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    config = RadioConfig(stack=stack_for_board(board))
    with RadioBridgeThread(config) as bridge:
        probe = subprocess.Popen([*micropython_command(), str(MPY / "gatt_client_peripheral.py"),
                                  str(bridge.shim_port), SERVICE, *([SLOW] if cut else [])],
                                 env={**os.environ, "MICROPYPATH": MICROPYPATH}, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        steps: dict[str, dict[str, Any]] = {}
        lines: list[str] = []

        async def main() -> dict[str, Any]:
            queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            loop = asyncio.get_running_loop()

            def read_probe() -> None:
                assert probe.stdout is not None
                for line in probe.stdout:
                    lines.append(line)
                    if line.startswith("{"):
                        step = json.loads(line)
                        steps[step["step"]] = step
                        loop.call_soon_threadsafe(queue.put_nowait, step)

            reader = loop.run_in_executor(None, read_probe)
            try:
                return await asyncio.wait_for(central(bridge.transport, config.address, queue, cut), 30)
            finally:
                await asyncio.wait_for(reader, 15)

        try:
            seen = asyncio.run(main())
        except Exception as e:
            raise AssertionError("the probe printed:\n" + "".join(lines)[-3000:]) from e
        finally:
            if probe.poll() is None:
                probe.kill()
            probe.wait(5)
    assert "done" in steps, "".join(lines)[-3000:]
    return steps, seen


@pytest.mark.parametrize("board", ["pico_w", "xiao_esp32s3"])
def test_the_peripheral_discovers_reads_writes_and_hears_the_central(board):
    steps, seen = run(board)
    nimble = stack_for_board(board) == "nimble"
    h = seen["handles"]
    # argument types as modbluetooth.c parses them
    assert steps["types"] == {"step": "types", "services": ["TypeError"], "chars": ["TypeError"],
                              "write": ["TypeError"]}
    # a handle with no connection: NimBLE ENOTCONN; BTstack's binding looks up its connection for a read
    # (ENOTCONN) but gatt_client answers the discovery (unknown connection identifier: EINVAL)
    assert steps["unknown_conn"]["read"] == [ENOTCONN]
    assert steps["unknown_conn"]["services"] == [ENOTCONN if nimble else EINVAL]

    services = steps["services"]
    assert services["done"][1] == 0
    uuids = [r[3] for r in services["results"]]
    assert uuids == ["UUID(0x180f)", _uuid_repr(SERVICE)]
    ours = services["results"][1]
    assert ours[1] == h["char"] - 2  # the service declaration, then the characteristic's
    assert steps["service_by_uuid"]["results"] == [ours]

    chars = steps["characteristics"]
    assert chars["done"][1] == 0
    # (conn, end, value handle, properties, uuid); the first ends where the second's declaration begins
    assert [r[1:] for r in chars["results"]] == [
        [h["locked"] - 2, h["char"], 0x3E, _uuid_repr(CHAR)],
        [ours[2], h["locked"], 0x08, _uuid_repr(LOCKED)],
    ]
    # one characteristic discovery at a time: NimBLE's binding says EBUSY, BTstack's gatt_client EALREADY
    assert chars["busy"] == [EBUSY if nimble else EALREADY]

    descriptors = steps["descriptors"]
    assert descriptors["done"][1] == 0
    # Find Information from after the value handle to the characteristic's end: its CCCD and user description
    found = {uuid: handle for _, handle, uuid in descriptors["results"]}
    assert len(descriptors["results"]) == 2 and found["UUID(0x2901)"] == h["user"]
    assert h["char"] < found["UUID(0x2902)"] < h["locked"] - 1

    conn = ours[0]
    assert steps["read"]["events"] == [[15, conn, h["char"], b"hello".hex()], [16, conn, h["char"], 0]]
    # Read Not Permitted (0x02): NimBLE reports 0x100 + the ATT error, BTstack the error itself
    assert steps["read_refused"]["events"] == [[16, conn, h["locked"], 0x102 if nimble else 0x02]]
    assert steps["written"]["events"] == [[17, conn, h["char"], 0]]
    assert steps["written"]["bad_mode"] == [EINVAL]
    # a write without response longer than ATT_MTU - 3: NimBLE's ATT layer cuts it, BTstack's gatt_client
    # refuses it (GATT_CLIENT_VALUE_TOO_LONG: EINVAL)
    assert steps["written"]["long"] == (None if nimble else [EINVAL])
    long = [["ATT_WRITE_COMMAND", h["char"], "x" * 20]] if nimble else []
    assert seen["writes"] == [["ATT_WRITE_REQUEST", h["char"], "with"], *long,
                              ["ATT_WRITE_COMMAND", h["char"], "without"]]

    assert steps["received"]["events"] == [[18, conn, h["char"], b"note".hex()], [19, conn, h["char"], b"ind".hex()]]
    assert seen["indication_confirmed"]


@pytest.mark.parametrize("board", ["pico_w", "xiao_esp32s3"])
def test_a_read_the_link_cuts_ends_as_each_stack_ends_it(board):
    steps, _ = run(board, cut=True)
    events = steps["cut"]["events"]
    assert events[0][0] == 2  # _IRQ_CENTRAL_DISCONNECT
    conn = events[0][1]
    if stack_for_board(board) == "nimble":
        # the procedure fails with BLE_HS_ENOTCONN, reported as the read's status
        assert [e[0] for e in events] == [2, 16] and events[1][1] == conn and events[1][3] == 7
    else:
        # BTstack's binding has already dropped the connection: the read's end is not reported
        assert events == [[2, conn]]
