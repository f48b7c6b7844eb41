"""The virtual probe's radio: the firmware's GATT server on a real BLE stack, reachable as an HCI controller.

There is no radio on a build machine, so the bridge makes one: two Bumble controllers on one virtual link
(``bumble.link.LocalLink``). The probe's side is a Bumble device on controller A, whose GATT table,
advertising and pairing follow what the firmware asks of its ``bluetooth`` module (``sim/mpy/bluetooth.py``,
connected through ``sim/mpy/vradio.py`` on a local socket). Controller B is exposed as an HCI transport,
``tcp-server:127.0.0.1:PORT``, so any Bumble host (``needletrack.link.bumble_link``, ``bumble-gatt-dump``, ...)
uses it as it would use a USB dongle: ``tcp-client:127.0.0.1:PORT``.

::

    MicroPython firmware                     this bridge (asyncio)                              a BLE host
    bluetooth.py ── vradio ── socket ──► _Session: Bumble Device ─ controller A ─┐
                                                                        LocalLink │
                                         HCI over TCP (H4) ──────── controller B ─┘ ◄── tcp-client:127.0.0.1:PORT

What the host sees is a real stack's behaviour: advertising and scan response bytes as the firmware gave
them, MTU exchange, notifications truncated to ATT_MTU - 3, ATT errors for reads and writes the attribute's
flags forbid (a write needing encryption on an unencrypted link fails with the error of the emulated stack:
NimBLE on ESP32 answers Insufficient Authentication, BTstack on the Pico W Insufficient Encryption), LE Secure
Connections pairing with the bond kept where the firmware keeps it (its _IRQ_GET_SECRET/_IRQ_SET_SECRET
handlers), connect, disconnect and reconnect. A host that goes away (its process ends, its TCP connection
drops) is a dongle pulled out: the probe sees a supervision timeout. A firmware that goes away (the
MicroPython process ends) is a probe switched off: the host sees a supervision timeout.

The socket protocol to the MicroPython side is described in ``sim/mpy/vradio.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import socket
import struct
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from bumble import att, hci
from bumble.controller import Controller
from bumble.core import UUID, PhysicalTransport
from bumble.device import AdvertisingType, Connection, Device, DeviceConfiguration
from bumble.gatt import (
    GATT_APPEARANCE_CHARACTERISTIC,
    GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR,
    GATT_DEVICE_NAME_CHARACTERISTIC,
    GATT_GENERIC_ACCESS_SERVICE,
    GATT_GENERIC_ATTRIBUTE_SERVICE,
    GATT_SERVICE_CHANGED_CHARACTERISTIC,
    Characteristic,
    CharacteristicValue,
    Descriptor,
    Service,
)
from bumble.host import Host
from bumble.keys import KeyStore, PairingKeys
from bumble.link import LocalLink
from bumble.pairing import PairingConfig, PairingDelegate
from bumble.transport.common import AsyncPipeSink, PacketParser

from needletrack.sim import att_discovery

logger = logging.getLogger(__name__)
# Bumble's controller warns of every packet still in flight for a link that has just gone; here links are
# dropped on purpose (a host leaving, a probe switched off, RadioBridge.drop_links), so that is expected.
logging.getLogger("bumble.controller").setLevel(logging.ERROR)

KIND_JSON = 0x4A
KIND_NOTIFY = 0x4E
KIND_INDICATE = 0x49

# MicroPython characteristic flags (extmod/modbluetooth.h); the low byte is the GATT properties byte.
FLAG_BROADCAST = 0x0001
FLAG_READ = 0x0002
FLAG_WRITE_NO_RESPONSE = 0x0004
FLAG_WRITE = 0x0008
FLAG_NOTIFY = 0x0010
FLAG_INDICATE = 0x0020
FLAG_AUTHENTICATED_SIGNED_WRITE = 0x0040
FLAG_AUX_WRITE = 0x0100
FLAG_READ_ENCRYPTED = 0x0200
FLAG_READ_AUTHENTICATED = 0x0400
FLAG_READ_AUTHORIZED = 0x0800
FLAG_WRITE_ENCRYPTED = 0x1000
FLAG_WRITE_AUTHENTICATED = 0x2000
FLAG_WRITE_AUTHORIZED = 0x4000

# HCI reasons and NimBLE host status codes the firmware can see
REASON_CONNECTION_TIMEOUT = 0x08
REASON_REMOTE_USER_TERMINATED = 0x13
BLE_HS_ENOTCONN = 7
BLE_HS_ETIMEOUT = 13
SEC_TYPE_PEER = 2  # NimBLE's BLE_STORE_OBJ_TYPE_PEER_SEC, the `sec_type` of the secret IRQs
BLE_HS_ERR_ATT_BASE = 0x100  # NimBLE: a GATT client status for an ATT Error Response is this + the ATT code
ATT_ERROR_HCI_DISCONNECT_RECEIVED = 0x1F  # BTstack's own att_status codes (ble/att_db.h / bluetooth.h)
ATT_ERROR_TIMEOUT = 0x7F

# GATT client ops from the firmware (bluetooth.gattc_*), by the _Session coroutine that carries each out
_GATTC_OPS = {"gattc_services": "_gattc_services", "gattc_chars": "_gattc_characteristics",
              "gattc_descs": "_gattc_descriptors", "gattc_read": "_gattc_read", "gattc_write": "_gattc_write"}
_GATTC_DONE = {"gattc_services": "services", "gattc_chars": "chars", "gattc_descs": "descs"}

STACKS = ("nimble", "btstack")
BOARD_STACKS = {"pico_w": "btstack", "xiao_esp32s3": "nimble"}
"""The BLE stack MicroPython runs on each board: BTstack on the Pico W (rp2 port), NimBLE on the ESP32-S3."""


def stack_for_board(board: str) -> str:
    """The stack a board's MicroPython runs, for ``RadioConfig(stack=...)``; ValueError for an unknown board."""
    try:
        return BOARD_STACKS[board]
    except KeyError:
        raise ValueError(f"no BLE stack known for board {board!r} (known: {sorted(BOARD_STACKS)})") from None


@dataclass
class RadioConfig:
    """What the bridge emulates. Addresses are MSB first, as printed on a board's label."""

    address: str = "F4:12:FA:00:00:01"
    """The probe's public address (controller A); config('mac') reports it."""
    host_address: str = "00:1B:DC:00:00:02"
    """The public address of the controller hosts connect to (controller B)."""
    stack: str = "nimble"
    """'nimble' (ESP32: XIAO ESP32S3) or 'btstack' (Pico W), see ``stack_for_board``: the stack's own GATT
    services and handles, the ATT errors for secured attributes, pairing (BTstack, as MicroPython builds it for
    the rp2 port, refuses it: its links are never encrypted) and the bonds kept by the firmware (NimBLE only)."""
    queue: int = 12
    """Transmit queue of the firmware's stack, in packets (NimBLE's mbuf pool: 12; BTstack: the controller's
    buffers, beyond which MicroPython keeps notifications on its heap)."""
    per_event: int = 4
    """Packets the stack sends per connection event at most."""
    bind: str = "127.0.0.1"
    hci_port: int = 0
    """TCP port of the HCI endpoint; 0: a free port."""
    shim_port: int = 0
    """TCP port the virtual probe's vradio connects to; 0: a free port."""
    request_timeout: float = 5.0
    """Seconds a read or a secret lookup waits for the firmware before the stack gives up."""
    pairing_timeout: float = 30.0
    """Seconds a passkey action waits for the firmware's gap_passkey (SMP's own timeout)."""


def _frame(kind: int, payload: bytes) -> bytes:
    return struct.pack("<HB", len(payload) + 1, kind) + payload


class _Link(LocalLink):
    """Bumble's LocalLink, routing LE data by the connection's own address.

    LocalLink stamps every LE data packet with the sender controller's random address, so a link opened with a
    public address (the probe's default, as an ESP32's) would lose all its data; here the source is the address
    the connection was made with.
    """

    def send_acl_data(
        self, sender_controller: Controller, destination_address: hci.Address, transport: PhysicalTransport,
        data: bytes,
    ) -> None:
        connection = sender_controller.le_connections.get(destination_address)
        if transport != PhysicalTransport.LE or connection is None:
            super().send_acl_data(sender_controller, destination_address, transport, data)
            return
        destination = self.find_le_controller(destination_address)
        if destination is not None:
            source = connection.self_address
            asyncio.get_running_loop().call_soon(destination.on_link_acl_data, source, transport, data)


class _HostController(Controller):
    """Controller B, with scanning that reports what the advertiser really sends.

    Bumble's Controller reports an advertiser's own data twice (as advertising and as scan response) and
    connects to any advertiser; a host here sees the probe's scan response (its name, docs/protocol.md), only
    when scanning actively, and can connect only while the probe advertises connectably.
    """

    active_scan = True

    def on_hci_le_set_scan_parameters_command(
        self, command: hci.HCI_LE_Set_Scan_Parameters_Command
    ) -> hci.HCI_StatusReturnParameters:
        if not self.le_scan_enable:
            self.active_scan = bool(command.le_scan_type)
        return super().on_hci_le_set_scan_parameters_command(command)

    def on_hci_le_set_extended_scan_parameters_command(
        self, command: hci.HCI_LE_Set_Extended_Scan_Parameters_Command
    ) -> hci.HCI_StatusReturnParameters:
        self.active_scan = any(command.scan_types)
        return super().on_hci_le_set_extended_scan_parameters_command(command)

    def _advertiser(self, address: hci.Address) -> tuple[bool, bool, bytes] | None:
        # (connectable, scannable, scan response) of whoever on the link advertises from `address`
        for c in self.link.controllers:
            if c is self:
                continue
            legacy = c.le_legacy_advertiser
            if legacy.enabled and legacy.address == address:
                kind = legacy.advertising_type
                return kind in (0, 1, 4), kind in (0, 2), bytes(legacy.scan_response_data)
            for adv_set in c.advertising_sets.values():
                if adv_set.enabled and adv_set.address == address and adv_set.parameters is not None:
                    props = int(adv_set.parameters.advertising_event_properties)
                    return bool(props & 1), bool(props & 2), bytes(adv_set.scan_response_data)
        return None

    def on_advertising_pdu(self, pdu: Any) -> None:
        found = self._advertiser(pdu.advertiser_address)
        if found is None:
            return
        connectable, scannable, response = found
        if self.le_scan_enable:
            self._report(pdu.advertiser_address, connectable, scannable, False, bytes(pdu.data))
            if scannable and self.active_scan:
                self._report(pdu.advertiser_address, connectable, scannable, True, response)
        pending = self.pending_le_connection
        if connectable and pending is not None and pending.peer_address == pdu.advertiser_address:
            self.create_le_connection(pdu.advertiser_address)

    def on_hci_le_create_connection_cancel_command(
        self, command: hci.HCI_LE_Create_Connection_Cancel_Command
    ) -> hci.HCI_StatusReturnParameters:
        # A real controller stops initiating and ends the attempt with a failed LE Connection Complete (Vol 4,
        # Part E, 7.8.13); Bumble's keeps the attempt pending, so a host that gave up could never connect again.
        pending = self.pending_le_connection
        if pending is None:
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        self.pending_le_connection = None
        self.send_hci_packet(hci.HCI_LE_Connection_Complete_Event(
            status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR, connection_handle=0,
            role=hci.Role.CENTRAL, peer_address_type=pending.peer_address.address_type,
            peer_address=pending.peer_address, connection_interval=0, peripheral_latency=0,
            supervision_timeout=0, central_clock_accuracy=0,
        ))
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)

    def _report(self, address: hci.Address, connectable: bool, scannable: bool, response: bool, data: bytes) -> None:
        if self.le_features & hci.LeFeatureMask.LE_EXTENDED_ADVERTISING:
            kinds = hci.HCI_LE_Extended_Advertising_Report_Event.EventType
            event_type = kinds.LEGACY_ADVERTISING_PDU_USED
            if connectable:
                event_type |= kinds.CONNECTABLE_ADVERTISING
            if scannable:
                event_type |= kinds.SCANNABLE_ADVERTISING
            if response:
                event_type |= kinds.SCAN_RESPONSE
            report = hci.HCI_LE_Extended_Advertising_Report_Event.Report(
                event_type=event_type, address_type=address.address_type, address=address,
                primary_phy=hci.Phy.LE_1M, secondary_phy=0, advertising_sid=0xFF, tx_power=0x7F, rssi=-50,
                periodic_advertising_interval=0, direct_address_type=0, direct_address=hci.Address.ANY, data=data,
            )
            self.send_hci_packet(hci.HCI_LE_Extended_Advertising_Report_Event([report]))
        else:
            legacy = hci.HCI_LE_Advertising_Report_Event.EventType
            if response:
                kind = legacy.SCAN_RSP
            elif connectable:
                kind = legacy.ADV_IND
            else:
                kind = legacy.ADV_SCAN_IND if scannable else legacy.ADV_NONCONN_IND
            legacy_report = hci.HCI_LE_Advertising_Report_Event.Report(
                event_type=kind, address_type=address.address_type, address=address, data=data, rssi=-50
            )
            self.send_hci_packet(hci.HCI_LE_Advertising_Report_Event([legacy_report]))


def _drop_links(controller: Controller, reason: int) -> None:
    # Terminate every LE link of a controller as its link layer would (the peer hears `reason`).
    for handle in [c.handle for c in controller.le_connections.values()]:
        controller.on_hci_disconnect_command(hci.HCI_Disconnect_Command(connection_handle=handle, reason=reason))


def _addr_fields(address: hci.Address) -> dict[str, Any]:
    return {"addr_type": 0 if address.is_public else 1, "addr": bytes(address)[::-1].hex()}


class _FirmwareKeyStore(KeyStore):
    """Bonds kept by the firmware, through _IRQ_SET_SECRET / _IRQ_GET_SECRET, as MicroPython's NimBLE bindings do.

    A secret's key is the peer's identity address as NimBLE's ble_addr_t (type byte, 6 bytes LSB first); its
    value is opaque to the firmware (here: JSON of the peer's address and Bumble's pairing keys). A firmware
    that does not answer these IRQs keeps no bonds: every reconnection must pair again, as on the board.
    """

    def __init__(self, session: _Session) -> None:
        self.session = session
        self.known: dict[str, PairingKeys] = {}  # bonds seen this session, for resolving private addresses

    @staticmethod
    def _key(name: str) -> bytes:
        address = hci.Address(name)
        return bytes((0 if address.is_public else 1,)) + bytes(address)

    async def _get(self, index: int, key: bytes | None) -> tuple[str, PairingKeys] | None:
        if self.session.config.stack != "nimble":
            return None  # no secret IRQs without MICROPY_PY_BLUETOOTH_ENABLE_PAIRING_BONDING
        reply = await self.session.request(
            {"ev": "get_secret", "type": SEC_TYPE_PEER, "index": index, "key": None if key is None else key.hex()}
        )
        if not reply or reply.get("value") is None:
            return None
        try:
            blob = json.loads(bytes.fromhex(reply["value"]))
            return blob["addr"], PairingKeys.from_dict(blob["keys"])
        except (ValueError, KeyError, TypeError):
            logger.warning("firmware returned a secret this stack did not store; ignored")
            return None

    async def get(self, name: str) -> PairingKeys | None:
        found = await self._get(0, self._key(name))
        if found is None:
            return None
        self.session.restored[name] = found[1]
        self.known[name] = found[1]
        return found[1]

    async def get_all(self) -> list[tuple[str, PairingKeys]]:
        out = []
        for index in range(64):
            found = await self._get(index, None)
            if found is None:
                break
            out.append(found)
        self.known = dict(out)
        return out

    async def get_resolving_keys(self) -> list[tuple[bytes, hci.Address]]:
        # From what the firmware told us (read once when it starts, then kept up to date), so pairing never
        # waits on a round of lookups.
        return [(keys.irk.value, hci.Address(name, keys.address_type if keys.address_type is not None
                                             else hci.Address.RANDOM_DEVICE_ADDRESS))
                for name, keys in self.known.items() if keys.irk is not None]

    def restore(self, blobs: list[str]) -> None:
        """The bonds the firmware gave while NimBLE started (active(True): load_irk, restore the peers' IRKs)."""
        known = {}
        for value in blobs:
            try:
                blob = json.loads(bytes.fromhex(value))
                known[blob["addr"]] = PairingKeys.from_dict(blob["keys"])
            except (ValueError, KeyError, TypeError):
                logger.warning("firmware returned a secret this stack did not store; ignored")
        self.known = known

    async def update(self, name: str, keys: PairingKeys) -> None:
        if self.session.config.stack != "nimble" or not self.session.security["bond"]:
            return  # without bonding NimBLE distributes no keys and stores nothing
        blob = json.dumps({"addr": name, "keys": keys.to_dict()}).encode()
        reply = await self.session.request(
            {"ev": "set_secret", "type": SEC_TYPE_PEER, "key": self._key(name).hex(), "value": blob.hex()}
        )
        if reply and reply.get("ok"):
            self.session.stored.add(name)
            self.known[name] = keys

    async def delete(self, name: str) -> None:
        self.known.pop(name, None)
        if self.session.config.stack != "nimble":
            return
        await self.session.request(
            {"ev": "set_secret", "type": SEC_TYPE_PEER, "key": self._key(name).hex(), "value": None}
        )

    async def delete_all(self) -> None:
        for name, _ in await self.get_all():
            await self.delete(name)


class _FirmwareDelegate(PairingDelegate):
    """Pairing decisions taken by the firmware: _IRQ_PASSKEY_ACTION, answered with gap_passkey()."""

    ACTION_INPUT = 2
    ACTION_DISPLAY = 3
    ACTION_NUMERIC_COMPARISON = 4

    def __init__(self, session: _Session, connection: Connection, io: int) -> None:
        super().__init__(io_capability=PairingDelegate.IoCapability(io))
        self.session = session
        self.connection = connection

    async def accept(self) -> bool:
        # BTstack as the rp2 port builds it has no pairing: the link stays unencrypted.
        return self.session.config.stack == "nimble"

    async def confirm(self, auto: bool = False) -> bool:
        return True  # Just Works: NimBLE accepts without asking the application

    async def compare_numbers(self, number: int, digits: int) -> bool:
        answer = await self.session.passkey_action(self.connection, self.ACTION_NUMERIC_COMPARISON, number)
        return bool(answer)

    async def get_number(self) -> int | None:
        return await self.session.passkey_action(self.connection, self.ACTION_INPUT, 0)

    async def generate_passkey(self) -> int:
        answer = await self.session.passkey_action(self.connection, self.ACTION_DISPLAY, 0)
        return 0 if answer is None else answer

    async def display_number(self, number: int, digits: int) -> None:
        return None


@dataclass
class _ConnState:
    pairing: bool = False
    enc_pending: bool = False
    mitm: bool = False
    bonded: bool = False
    passkey: asyncio.Future[int] | None = None
    passkey_action: int = 0
    # While pairing completes, what the central sends waits, so the firmware hears of the encryption first
    # (NimBLE finishes pairing, bond stored, before it reads the next PDU).
    held: list[dict[str, Any]] = field(default_factory=list)
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    def settle(self, session: _Session) -> None:
        self.pairing = False
        for event in self.held:
            session.send(event)
        self.held.clear()
        self.settled.set()


class _Session:
    """One boot of the virtual probe: its socket, its controller (A) and Bumble device, its GATT table."""

    def __init__(
        self, bridge: RadioBridge, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.bridge = bridge
        self.config = bridge.config
        self.reader = reader
        self.writer = writer
        self.closed = False
        self.active = False
        self.next_id = 1
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.conns: dict[int, _ConnState] = {}
        self.stored: set[str] = set()
        self.restored: dict[str, PairingKeys] = {}
        self.gap_name = b"MPY ESP32" if self.config.stack == "nimble" else b"MPY BTSTACK"
        self.security: dict[str, Any] = {"bond": False, "mitm": False, "io": 3, "le_secure": False}
        self.own_address_type = hci.OwnAddressType.PUBLIC
        self.advertising_began: float | None = None  # time.monotonic() when connectable advertising last began
        public = hci.Address(self.config.address, hci.Address.PUBLIC_DEVICE_ADDRESS)
        self.controller = Controller("probe", link=bridge.link, public_address=public)
        device_config = DeviceConfiguration(
            name="probe",
            address=hci.Address.generate_static_address(),
            gap_service_enabled=False,
            gatt_service_enabled=False,
        )
        self.device = Device(config=device_config, host=Host(self.controller, AsyncPipeSink(self.controller)))
        self.device.keystore = _FirmwareKeyStore(self)
        self.device.pairing_config_factory = self._pairing_config
        self.device.on(self.device.EVENT_CONNECTION, self._on_connection)
        self._reset_table()

    # -- the socket
    def send(self, obj: dict[str, Any]) -> None:
        if not self.closed:
            self.writer.write(_frame(KIND_JSON, json.dumps(obj).encode()))

    async def request(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Ask the firmware (through its IRQ handler); None if it does not answer in time or is not active."""
        if self.closed or not self.active:
            return None
        rid = self.next_id
        self.next_id += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[rid] = future
        logger.debug("asking the firmware: %s", obj)
        self.send({**obj, "id": rid})
        try:
            return await asyncio.wait_for(future, self.config.request_timeout)
        except TimeoutError:
            logger.warning("firmware did not answer %s within %.1f s", obj.get("ev"), self.config.request_timeout)
            return None
        finally:
            self.pending.pop(rid, None)

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("radio task failed: %r", task.exception())

    async def run(self) -> None:
        self.send({
            "ev": "hello", **_addr_fields(hci.Address(self.config.address, hci.Address.PUBLIC_DEVICE_ADDRESS)),
            "stack": self.config.stack, "queue": self.config.queue, "per_event": self.config.per_event,
        })
        try:
            await self.device.power_on()
            while True:
                header = await self.reader.readexactly(2)
                (n,) = struct.unpack("<H", header)
                body = await self.reader.readexactly(n)
                await self._frame(body[0], body[1:])
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            await self.close()

    async def close(self) -> None:
        # The probe is switched off: its centrals lose the link (supervision timeout), its tables are gone.
        if self.closed:
            return
        self.closed = True
        for future in self.pending.values():
            future.cancel()
        for task in list(self.tasks):
            task.cancel()
        _drop_links(self.controller, REASON_CONNECTION_TIMEOUT)
        self.controller.le_legacy_advertiser.stop()
        for advertising_set in self.controller.advertising_sets.values():
            advertising_set.stop()
        with contextlib.suppress(KeyError, ValueError):
            self.bridge.link.remove_controller(self.controller)
        self.writer.close()

    # -- frames from the firmware
    async def _frame(self, kind: int, payload: bytes) -> None:
        if kind == KIND_NOTIFY:
            conn_handle, value_handle = struct.unpack_from("<HH", payload)
            self._notify(conn_handle, value_handle, payload[4:])
        elif kind == KIND_INDICATE:
            conn_handle, value_handle = struct.unpack_from("<HH", payload)
            self.spawn(self._indicate(conn_handle, value_handle, payload[4:]))
        elif kind == KIND_JSON:
            await self._op(json.loads(payload))

    async def _op(self, op: dict[str, Any]) -> None:
        name = op.get("op")
        logger.debug("firmware: %s", op)
        if name == "reply":
            future = self.pending.get(op["id"])
            if future is not None and not future.done():
                future.set_result(op)
        elif name == "config":
            self._config(op)
        elif name == "services":
            self._register(op["services"])
        elif name == "adv":
            try:
                await self._advertise(op)
            except Exception as e:  # e.g. BTstack, which does not check, given 32 bytes: the controller refuses
                logger.warning("advertising refused by the controller: %r", e)
        elif name == "disconnect":
            connection = self._connection(op["conn"])
            if connection is not None:
                self.spawn(connection.disconnect(REASON_REMOTE_USER_TERMINATED))
        elif name == "update":
            self._update(op["handle"], bytes.fromhex(op["value"]))
        elif name == "exchange_mtu":
            connection = self._connection(op["conn"])
            if connection is not None:
                self.spawn(self._exchange_mtu(connection))
        elif name in _GATTC_OPS:
            connection = self._connection(op["conn"])
            if connection is not None:
                self.spawn(getattr(self, _GATTC_OPS[name])(connection, op))
            else:
                self._gattc_unconnected(op)
        elif name == "pair":
            connection = self._connection(op["conn"])
            if connection is not None:
                self.device.request_pairing(connection)
        elif name == "passkey":
            state = self.conns.get(op["conn"])
            if state is not None and state.passkey is not None and not state.passkey.done():
                state.passkey.set_result(op["passkey"])
        elif name == "active":
            self.active = bool(op["on"])
            if self.active:
                self.spawn(self._load_bonds(op.get("bonds") or []))
            else:
                await self._power_down()
        else:
            logger.warning("unknown radio op %r", name)

    async def _exchange_mtu(self, connection: Connection) -> None:
        # gattc_exchange_mtu: the probe's stack asks with its preferred MTU; the new MTU is reported as for an
        # exchange the central started (_IRQ_MTU_EXCHANGED).
        with contextlib.suppress(Exception):
            await connection.gatt_client.request_mtu(self.device.gatt_server.max_mtu)

    # -- the GATT client on the probe's own connections (gattc_discover_*, gattc_read, gattc_write)
    def _gattc_status(self, error: int) -> int:
        # A procedure ended by an ATT Error Response: NimBLE reports BLE_HS_ERR_ATT_BASE + the code, BTstack
        # (GATT_EVENT_QUERY_COMPLETE's att_status) the code itself.
        return (BLE_HS_ERR_ATT_BASE + error) if self.config.stack == "nimble" else error

    def _gattc_failed(self, connection: Connection) -> int:
        # A procedure the link took down (disconnection) or that had no answer in 30 s (the ATT timeout).
        down = connection.handle not in self.conns
        if self.config.stack == "nimble":
            return BLE_HS_ENOTCONN if down else BLE_HS_ETIMEOUT
        return ATT_ERROR_HCI_DISCONNECT_RECEIVED if down else ATT_ERROR_TIMEOUT

    def _gattc_unconnected(self, op: dict[str, Any]) -> None:
        # The link closed between the firmware's call and this op: the procedure ends as the stack ends it.
        status = BLE_HS_ENOTCONN if self.config.stack == "nimble" else ATT_ERROR_HCI_DISCONNECT_RECEIVED
        what = _GATTC_DONE.get(op["op"])
        if what is not None:
            self.send({"ev": "gattc_done", "conn": op["conn"], "what": what, "status": status})
        elif op["op"] == "gattc_read" or op.get("mode") == 1:
            self.send({"ev": "gattc_" + ("read" if op["op"] == "gattc_read" else "write") + "_done",
                       "conn": op["conn"], "handle": op["handle"], "status": status})

    async def _gattc_request(self, connection: Connection, pdu: att.ATT_PDU) -> Any:
        # One ATT request of a procedure. A disconnection cancels the response Bumble waits for: that is the
        # procedure failing (unless the probe's session itself is closing).
        try:
            return await connection.gatt_client.send_request(pdu)
        except asyncio.CancelledError:
            if self.closed or not (task := asyncio.current_task()) or task.cancelling():
                raise
            raise ConnectionError("the link went down during the procedure") from None

    async def _gattc_services(self, connection: Connection, op: dict[str, Any]) -> None:
        h = connection.handle
        uuid = op.get("uuid")
        status = 0
        try:
            async for s, e, u in att_discovery.services(lambda pdu: self._gattc_request(connection, pdu),
                                                        None if uuid is None else bytes.fromhex(uuid)):
                self.send({"ev": "gattc_service", "conn": h, "start": s, "end": e, "uuid": u.hex()})
        except att_discovery.AttError as e:
            status = self._gattc_status(e.code)
        except Exception:
            status = self._gattc_failed(connection)
        self.send({"ev": "gattc_done", "conn": h, "what": "services", "status": status})

    async def _gattc_characteristics(self, connection: Connection, op: dict[str, Any]) -> None:
        h = connection.handle
        uuid = op.get("uuid")
        status = 0
        try:
            async for end, value_handle, props, u in att_discovery.characteristics(
                    lambda pdu: self._gattc_request(connection, pdu), op["start"], op["end"],
                    None if uuid is None else bytes.fromhex(uuid)):
                self.send({"ev": "gattc_char", "conn": h, "handle": value_handle, "props": props, "uuid": u.hex(),
                           "end": end})
        except att_discovery.AttError as e:
            status = self._gattc_status(e.code)
        except Exception:
            status = self._gattc_failed(connection)
        self.send({"ev": "gattc_done", "conn": h, "what": "chars", "status": status})

    async def _gattc_descriptors(self, connection: Connection, op: dict[str, Any]) -> None:
        h = connection.handle
        status = 0
        try:
            async for handle, u in att_discovery.descriptors(lambda pdu: self._gattc_request(connection, pdu),
                                                             op["start"], op["end"]):
                self.send({"ev": "gattc_desc", "conn": h, "handle": handle, "uuid": u.hex()})
        except att_discovery.AttError as e:
            status = self._gattc_status(e.code)
        except Exception:
            status = self._gattc_failed(connection)
        self.send({"ev": "gattc_done", "conn": h, "what": "descs", "status": status})

    async def _gattc_read(self, connection: Connection, op: dict[str, Any]) -> None:
        # One Read Request (neither stack's binding reads a long value on): the value, then the status.
        h, handle = connection.handle, op["handle"]
        try:
            r = await self._gattc_request(connection, att.ATT_Read_Request(attribute_handle=handle))
            if r.op_code == att.Opcode.ATT_ERROR_RESPONSE:
                status = self._gattc_status(r.error_code)
            else:
                status = 0
                self.send({"ev": "gattc_read", "conn": h, "handle": handle, "value": bytes(r.attribute_value).hex()})
        except Exception:
            status = self._gattc_failed(connection)
        self.send({"ev": "gattc_read_done", "conn": h, "handle": handle, "status": status})

    async def _gattc_write(self, connection: Connection, op: dict[str, Any]) -> None:
        # mode 0: a Write Command, no event; mode 1: a Write Request, then _IRQ_GATTC_WRITE_DONE with the status.
        h, handle = connection.handle, op["handle"]
        value = bytes.fromhex(op["value"])[: connection.att_mtu - 3]
        if op.get("mode", 0) == 0:
            connection.gatt_client.send_gatt_pdu(bytes(att.ATT_Write_Command(attribute_handle=handle,
                                                                             attribute_value=value)))
            return
        try:
            r = await self._gattc_request(connection, att.ATT_Write_Request(attribute_handle=handle,
                                                                                attribute_value=value))
            status = self._gattc_status(r.error_code) if r.op_code == att.Opcode.ATT_ERROR_RESPONSE else 0
        except Exception:
            status = self._gattc_failed(connection)
        self.send({"ev": "gattc_write_done", "conn": h, "handle": handle, "status": status})

    def _connection(self, handle: int) -> Connection | None:
        connection = self.device.lookup_connection(handle)
        return connection if connection is not None and handle in self.conns else None

    def _config(self, op: dict[str, Any]) -> None:
        if op.get("gap_name") is not None:
            self.gap_name = bytes.fromhex(op["gap_name"])
        if op.get("mtu"):
            self.device.gatt_server.max_mtu = op["mtu"]
        for key in self.security:
            if key in op:
                self.security[key] = op[key]
        addr_type, addr = op.get("addr", (0, None))
        if addr_type == 1 and addr:
            self.own_address_type = hci.OwnAddressType.RANDOM
            # advertising picks the device's random address up when it (re)starts
            self.device.random_address = hci.Address(bytes.fromhex(addr)[::-1], hci.Address.RANDOM_DEVICE_ADDRESS)
        else:
            self.own_address_type = hci.OwnAddressType.PUBLIC

    async def _load_bonds(self, blobs: list[str]) -> None:
        # The firmware's stack read them synchronously in active(True), before its IRQ handler returned.
        keystore = self.device.keystore
        assert isinstance(keystore, _FirmwareKeyStore)
        keystore.restore(blobs)
        await self.device.refresh_resolving_list()

    async def _power_down(self) -> None:
        # active(False): NimBLE stops, terminating every connection as the local host.
        await self.device.stop_advertising()
        for handle in list(self.conns):
            connection = self.device.lookup_connection(handle)
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.disconnect(REASON_REMOTE_USER_TERMINATED)
        self._reset_table()

    # -- GATT table
    def _reset_table(self) -> None:
        server = self.device.gatt_server
        server.services.clear()
        server.attributes.clear()
        server.attributes_by_handle.clear()
        name: Characteristic[bytes] = Characteristic(GATT_DEVICE_NAME_CHARACTERISTIC, Characteristic.Properties.READ,
                              Characteristic.Permissions.READABLE,
                              CharacteristicValue(read=lambda _c: self.gap_name))
        if self.config.stack == "nimble":
            # NimBLE's ble_svc_gap_init/ble_svc_gatt_init: name and appearance; service changed, indicate
            gap = Service(GATT_GENERIC_ACCESS_SERVICE, [
                name, Characteristic(GATT_APPEARANCE_CHARACTERISTIC, Characteristic.Properties.READ,
                                     Characteristic.Permissions.READABLE, bytes(2))])
            changed = Characteristic(GATT_SERVICE_CHANGED_CHARACTERISTIC, Characteristic.Properties.INDICATE,
                                     Characteristic.Permissions(0), b"")
        else:
            # modbluetooth_btstack.c mp_bluetooth_gatts_register_service_begin: the name only; service changed
            # readable, without a CCCD
            gap = Service(GATT_GENERIC_ACCESS_SERVICE, [name])
            changed = Characteristic(GATT_SERVICE_CHANGED_CHARACTERISTIC, Characteristic.Properties.READ,
                                     Characteristic.Permissions.READABLE, b"")
        server.add_services([gap, Service(GATT_GENERIC_ATTRIBUTE_SERVICE, [changed])])

    def _register(self, services: list[Any]) -> None:
        # The layout mirrors the one bluetooth.py promised the firmware (its handles are already in use there).
        self._reset_table()
        server = self.device.gatt_server
        expected: list[tuple[Any, int]] = []
        built = []
        for suuid, chars in services:
            characteristics = []
            for cuuid, flags, value_handle, cccd_handle, descs in chars:
                value: CharacteristicValue[bytes] = CharacteristicValue(
                    read=self._reader(value_handle, flags, True), write=self._writer(value_handle, flags, True))
                characteristic: Characteristic[bytes] = Characteristic(
                    UUID.from_bytes(bytes.fromhex(cuuid)),
                    Characteristic.Properties(flags & 0xFF),
                    Characteristic.Permissions.READABLE | Characteristic.Permissions.WRITEABLE,
                    value,
                )
                descriptors = []
                expected.append((characteristic, value_handle))
                if cccd_handle:
                    cccd = Descriptor(GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR,
                                      Descriptor.Permissions.READABLE | Descriptor.Permissions.WRITEABLE,
                                      server.make_descriptor_value(characteristic))
                    descriptors.append(cccd)
                    expected.append((cccd, cccd_handle))
                for duuid, dflags, handle in descs:
                    descriptor = Descriptor(UUID.from_bytes(bytes.fromhex(duuid)),
                                            Descriptor.Permissions.READABLE | Descriptor.Permissions.WRITEABLE,
                                            CharacteristicValue(read=self._reader(handle, dflags, False),
                                                                write=self._writer(handle, dflags, False)))
                    descriptors.append(descriptor)
                    expected.append((descriptor, handle))
                characteristic.descriptors = descriptors
                characteristics.append(characteristic)
            built.append(Service(UUID.from_bytes(bytes.fromhex(suuid)), characteristics))
        server.add_services(built)
        for attribute, handle in expected:
            if attribute.handle != handle:
                raise RuntimeError(f"GATT layout differs from the firmware's: {attribute} expected at {handle}")

    def _check_access(self, connection: Connection, flags: int, read: bool, characteristic: bool) -> None:
        if read:
            allowed, enc, authen, author = (flags & FLAG_READ, FLAG_READ_ENCRYPTED, FLAG_READ_AUTHENTICATED,
                                            FLAG_READ_AUTHORIZED)
        else:
            allowed, enc, authen, author = (flags & (FLAG_WRITE | FLAG_WRITE_NO_RESPONSE), FLAG_WRITE_ENCRYPTED,
                                            FLAG_WRITE_AUTHENTICATED, FLAG_WRITE_AUTHORIZED)
        if not allowed:
            raise att.ATT_Error(att.ErrorCode.READ_NOT_PERMITTED if read else att.ErrorCode.WRITE_NOT_PERMITTED)
        if not characteristic:
            return  # NimBLE applies no security to descriptors
        encrypted = bool(connection.encryption)
        state = self.conns.get(connection.handle)
        mitm = encrypted and state is not None and state.mitm
        if self.config.stack == "nimble":
            if (flags & enc and not encrypted) or (flags & authen and not mitm):
                raise att.ATT_Error(att.ErrorCode.INSUFFICIENT_AUTHENTICATION)
        else:
            if flags & author:
                raise att.ATT_Error(att.ErrorCode.INSUFFICIENT_AUTHORIZATION)
            if flags & authen and not mitm:
                raise att.ATT_Error(att.ErrorCode.INSUFFICIENT_AUTHENTICATION)
            if flags & enc and not encrypted:
                raise att.ATT_Error(att.ErrorCode.INSUFFICIENT_ENCRYPTION)

    def _reader(self, handle: int, flags: int, characteristic: bool) -> Callable[[Connection], Awaitable[bytes]]:
        async def read(connection: Connection) -> bytes:
            self._check_access(connection, flags, True, characteristic)
            state = self.conns.get(connection.handle)
            if state is not None and state.pairing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(state.settled.wait(), self.config.request_timeout)
            reply = await self.request({"ev": "read", "conn": connection.handle, "handle": handle})
            if reply is None:
                raise att.ATT_Error(att.ErrorCode.UNLIKELY_ERROR)
            if reply.get("status"):
                raise att.ATT_Error(reply["status"])
            return bytes.fromhex(reply.get("value") or "")

        return read

    def _writer(self, handle: int, flags: int, characteristic: bool) -> Callable[[Connection, bytes], None]:
        def write(connection: Connection, value: bytes) -> None:
            self._check_access(connection, flags, False, characteristic)
            event = {"ev": "write", "conn": connection.handle, "handle": handle, "value": bytes(value).hex()}
            state = self.conns.get(connection.handle)
            if state is not None and state.pairing:
                state.held.append(event)
            else:
                self.send(event)

        return write

    # -- what the firmware transmits
    def _notify(self, conn_handle: int, value_handle: int, value: bytes) -> None:
        connection = self._connection(conn_handle)
        if connection is None:
            return  # the link closed while the packet was queued: it is lost, as on air
        pdu = att.ATT_Handle_Value_Notification(attribute_handle=value_handle,
                                                attribute_value=value[: connection.att_mtu - 3])
        self.device.send_l2cap_pdu(connection.handle, att.ATT_CID, bytes(pdu))

    async def _indicate(self, conn_handle: int, value_handle: int, value: bytes) -> None:
        connection = self._connection(conn_handle)
        status = BLE_HS_ENOTCONN
        if connection is not None:
            attribute = self.device.gatt_server.get_attribute(value_handle)
            if attribute is None:
                attribute = att.Attribute(GATT_SERVICE_CHANGED_CHARACTERISTIC, att.Attribute.Permissions(0))
                attribute.handle = value_handle
            try:
                await connection.cancel_on_disconnection(
                    self.device.gatt_server.indicate_subscriber(connection, attribute, value, force=True))
                status = 0
            except TimeoutError:
                status = BLE_HS_ETIMEOUT
            except asyncio.CancelledError:
                if self.closed:
                    raise
                status = BLE_HS_ENOTCONN  # the link went down before the confirmation
            except Exception:
                status = BLE_HS_ENOTCONN
        self.send({"ev": "indicate_done", "conn": conn_handle, "handle": value_handle, "status": status})

    def _update(self, value_handle: int, value: bytes) -> None:
        # gatts_write(..., send_update=True): each subscribed central gets what its CCCD asks for.
        server = self.device.gatt_server
        for handle in list(self.conns):
            connection = self._connection(handle)
            if connection is None:
                continue
            cccd = server.subscribers.get(connection, {}).get(value_handle, b"\0\0")
            bits = int.from_bytes(cccd[:2], "little")
            if bits & 1:
                self._notify(handle, value_handle, value)
            elif bits & 2:
                self.spawn(self._indicate(handle, value_handle, value))

    async def _advertise(self, op: dict[str, Any]) -> None:
        if op.get("interval_us") is None:
            await self.device.stop_advertising()
            return
        adv = bytes.fromhex(op.get("adv") or "")
        resp = bytes.fromhex(op.get("resp") or "")
        if op.get("connectable", True):
            kind = AdvertisingType.UNDIRECTED_CONNECTABLE_SCANNABLE
        else:
            # ADV_SCAN_IND on both stacks, scan response or not: NimBLE's binding advertises with
            # BLE_GAP_CONN_MODE_NON and BLE_GAP_DISC_MODE_GEN (ble_gap_adv_type: ADV_SCAN_IND), BTstack's with
            # advertising type 2 (mp_bluetooth_gap_advertise_start).
            kind = AdvertisingType.UNDIRECTED_SCANNABLE
        interval_ms = (op["interval_us"] // 625 * 0.625) or 100.0
        await self.device.start_advertising(
            advertising_type=kind, own_address_type=self.own_address_type, advertising_data=adv,
            scan_response_data=resp, advertising_interval_min=interval_ms, advertising_interval_max=interval_ms,
        )
        if op.get("connectable", True):
            self.advertising_began = time.monotonic()

    # -- connections
    def _on_connection(self, connection: Connection) -> None:
        if connection.role != hci.Role.PERIPHERAL:
            return
        handle = connection.handle
        state = _ConnState()
        state.settled.set()
        self.conns[handle] = state
        params = connection.parameters
        self.send({
            "ev": "connect", "conn": handle, **_addr_fields(connection.peer_address),
            "interval": round(params.connection_interval / 1.25), "latency": params.peripheral_latency,
            "timeout": round(params.supervision_timeout / 10),
        })

        def on_disconnection(reason: int) -> None:
            state.settle(self)
            self.conns.pop(handle, None)
            if state.passkey is not None and not state.passkey.done():
                state.passkey.cancel()
            self.send({"ev": "disconnect", "conn": handle, **_addr_fields(connection.peer_address),
                       "reason": reason})

        def on_mtu() -> None:
            self.send({"ev": "mtu", "conn": handle, "mtu": connection.att_mtu})

        def on_parameters() -> None:
            p = connection.parameters
            self.send({"ev": "conn_update", "conn": handle, "interval": round(p.connection_interval / 1.25),
                       "latency": p.peripheral_latency, "timeout": round(p.supervision_timeout / 10), "status": 0})

        def on_encryption_change(*_: Any) -> None:
            if state.pairing:
                state.enc_pending = True  # NimBLE reports the change once pairing has finished
                return
            keys = self.restored.get(str(connection.peer_address))
            state.bonded = keys is not None
            state.mitm = bool(keys and keys.ltk and keys.ltk.authenticated)
            self._send_encryption(connection, state)

        def on_pairing_start() -> None:
            state.pairing = True
            state.settled.clear()

        def on_pairing(keys: PairingKeys) -> None:
            state.mitm = bool(keys.ltk and keys.ltk.authenticated) or bool(
                keys.ltk_peripheral and keys.ltk_peripheral.authenticated)
            state.bonded = str(connection.peer_address) in self.stored
            self._send_encryption(connection, state)
            state.settle(self)

        def on_pairing_failure(_reason: int) -> None:
            self._send_encryption(connection, state)
            state.settle(self)

        # What the central notifies or indicates reaches the firmware whether or not it subscribed (both stacks
        # deliver every Handle Value Notification/Indication: _IRQ_GATTC_NOTIFY/_IRQ_GATTC_INDICATE); the stack
        # confirms an indication at once.
        client = connection.gatt_client

        def on_notification(pdu: att.ATT_Handle_Value_Notification) -> None:
            self.send({"ev": "gattc_notify", "conn": handle, "handle": pdu.attribute_handle,
                       "value": bytes(pdu.attribute_value).hex(), "indication": False})

        def on_indication(pdu: att.ATT_Handle_Value_Indication) -> None:
            self.send({"ev": "gattc_notify", "conn": handle, "handle": pdu.attribute_handle,
                       "value": bytes(pdu.attribute_value).hex(), "indication": True})
            client.send_confirmation(att.ATT_Handle_Value_Confirmation())

        client.on_att_handle_value_notification = on_notification  # type: ignore[method-assign,assignment]
        client.on_att_handle_value_indication = on_indication  # type: ignore[method-assign,assignment]

        connection.on(connection.EVENT_DISCONNECTION, on_disconnection)
        connection.on(connection.EVENT_CONNECTION_ATT_MTU_UPDATE, on_mtu)
        connection.on(connection.EVENT_CONNECTION_PARAMETERS_UPDATE, on_parameters)
        connection.on(connection.EVENT_CONNECTION_ENCRYPTION_CHANGE, on_encryption_change)
        connection.on(connection.EVENT_PAIRING_START, on_pairing_start)
        connection.on(connection.EVENT_PAIRING, on_pairing)
        connection.on(connection.EVENT_PAIRING_FAILURE, on_pairing_failure)

    def _send_encryption(self, connection: Connection, state: _ConnState) -> None:
        encrypted = bool(connection.encryption)
        logger.debug("encryption of 0x%04X: %s, %s", connection.handle, encrypted, state)
        self.send({"ev": "enc", "conn": connection.handle, "encrypted": encrypted,
                   "authenticated": encrypted and state.mitm, "bonded": encrypted and state.bonded,
                   # Bumble's controllers do not report a key size: the stack negotiates 16 bytes
                   "key_size": (connection.encryption_key_size or 16) if encrypted else 0})

    def _pairing_config(self, connection: Connection) -> PairingConfig:
        s = self.security
        return PairingConfig(sc=bool(s["le_secure"]), mitm=bool(s["mitm"]), bonding=bool(s["bond"]),
                             delegate=_FirmwareDelegate(self, connection, int(s["io"])))

    async def passkey_action(self, connection: Connection, action: int, passkey: int) -> int | None:
        state = self.conns.get(connection.handle)
        if state is None:
            return None
        state.passkey = asyncio.get_running_loop().create_future()
        state.passkey_action = action
        self.send({"ev": "passkey", "conn": connection.handle, "action": action, "passkey": passkey})
        try:
            return await asyncio.wait_for(state.passkey, self.config.pairing_timeout)
        except (TimeoutError, asyncio.CancelledError):
            return None
        finally:
            state.passkey = None


class _HciEndpoint(asyncio.Protocol):
    """One host on the TCP HCI transport: a fresh controller B for each, like plugging in a dongle."""

    def __init__(self, bridge: RadioBridge) -> None:
        self.bridge = bridge
        self.transport: asyncio.Transport | None = None
        self.controller: Controller | None = None
        self.parser: PacketParser | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self.bridge.hci_busy:
            transport.close()  # one host at a time, as a USB dongle opened by one process
            return
        self.bridge.hci_busy = True
        self.transport = transport
        public = hci.Address(self.bridge.config.host_address, hci.Address.PUBLIC_DEVICE_ADDRESS)
        self.controller = _HostController("host", host_sink=self, link=self.bridge.link, public_address=public)
        self.parser = PacketParser(self.controller)

    def on_packet(self, packet: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(packet)

    def data_received(self, data: bytes) -> None:
        if self.parser is not None:
            try:
                self.parser.feed_data(data)
            except Exception:
                logger.exception("bad HCI data from the host; dropping it")
                if self.transport is not None:
                    self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        controller = self.controller
        if controller is None:
            return
        # The dongle is gone: its links time out on the probe's side, its advertising reports stop.
        controller.host = None
        _drop_links(controller, REASON_CONNECTION_TIMEOUT)
        with contextlib.suppress(KeyError, ValueError):
            self.bridge.link.remove_controller(controller)
        self.controller = None
        self.transport = None
        self.bridge.hci_busy = False


@dataclass
class RadioBridge:
    """The bridge, on the running asyncio loop: ``async with RadioBridge(RadioConfig()) as bridge: ...``."""

    config: RadioConfig = field(default_factory=RadioConfig)
    link: LocalLink = field(init=False)
    hci_busy: bool = field(init=False, default=False)
    session: _Session | None = field(init=False, default=None)
    _servers: list[asyncio.Server] = field(init=False, default_factory=list)
    _session_task: asyncio.Task[None] | None = field(init=False, default=None)
    _session_changed: asyncio.Event | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.config.stack not in STACKS:
            raise ValueError(f"stack must be one of {STACKS}, not {self.config.stack!r}")

    @property
    def hci_port(self) -> int:
        return self._port(0)

    @property
    def shim_port(self) -> int:
        return self._port(1)

    @property
    def transport(self) -> str:
        """The HCI transport string a Bumble host connects with."""
        return f"tcp-client:{self.config.bind}:{self.hci_port}"

    def _port(self, i: int) -> int:
        sockets = self._servers[i].sockets
        return int(sockets[0].getsockname()[1])

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.link = _Link()
        self._session_changed = asyncio.Event()
        hci_server = await loop.create_server(lambda: _HciEndpoint(self), self.config.bind, self.config.hci_port)
        shim_server = await asyncio.start_server(self._on_shim, self.config.bind, self.config.shim_port)
        self._servers = [hci_server, shim_server]

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        if self.session is not None:
            await self.session.close()
        if self._session_task is not None:
            self._session_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._session_task
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    async def __aenter__(self) -> RadioBridge:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_for_probe(self, timeout: float) -> None:
        """Wait until a virtual probe is connected."""
        assert self._session_changed is not None
        async with asyncio.timeout(timeout):
            while self.session is None:
                self._session_changed.clear()
                await self._session_changed.wait()

    async def drop_links(self) -> int:
        """Lose every link between the probe and the hosts as a radio out of range would: both sides see a
        supervision timeout. Returns how many links there were."""
        session = self.session
        if session is None:
            return 0
        count = len(session.controller.le_connections)
        for connection in list(session.device.connections.values()):
            # The probe's stack hears the timeout first, then the host's: what a link layer reports when
            # connection events stop getting through either way.
            with contextlib.suppress(Exception):
                await connection.disconnect(REASON_CONNECTION_TIMEOUT)
        return count

    def advertising_began(self) -> float | None:
        """time.monotonic() when the probe last began advertising connectably (None: never, this boot)."""
        return None if self.session is None else self.session.advertising_began

    async def _on_shim(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.session is not None:
            writer.close()  # one probe per bridge
            return
        session = _Session(self, reader, writer)
        self.session = session
        assert self._session_changed is not None
        self._session_changed.set()
        self._session_task = asyncio.current_task()
        try:
            await session.run()
        except asyncio.CancelledError:
            pass  # the bridge is stopping (mid-operation, e.g. while the probe restarts advertising)
        except Exception:
            logger.exception("virtual probe session failed")
        finally:
            self.session = None
            self._session_task = None
            self._session_changed.set()


class RadioBridgeThread:
    """The bridge on its own event loop in a daemon thread, for synchronous callers (the sim runner, tests).

    ::

        with RadioBridgeThread() as bridge:
            session["radio"] = {"port": bridge.shim_port}
            ... run the virtual probe; hosts connect to bridge.transport ...
    """

    def __init__(self, config: RadioConfig | None = None) -> None:
        self.config = config or RadioConfig()
        self.bridge: RadioBridge | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def hci_port(self) -> int:
        assert self.bridge is not None
        return self.bridge.hci_port

    @property
    def shim_port(self) -> int:
        assert self.bridge is not None
        return self.bridge.shim_port

    @property
    def transport(self) -> str:
        assert self.bridge is not None
        return self.bridge.transport

    def start(self, timeout: float = 10.0) -> RadioBridgeThread:
        self._thread = threading.Thread(target=self._run, name="radio-bridge", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("radio bridge did not start")
        if self._error is not None:
            raise RuntimeError("radio bridge failed to start") from self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self.bridge = RadioBridge(self.config)
            loop.run_until_complete(self.bridge.start())
        except BaseException as e:
            self._error = e
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            # A controller's answer to a command the stopping bridge cancelled finds no one waiting: Bumble's host
            # then raises InvalidStateError in a callback. That is the shutdown, not a fault: keep it quiet.
            def on_error(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
                if not isinstance(context.get("exception"), asyncio.InvalidStateError):
                    lp.default_exception_handler(context)

            loop.set_exception_handler(on_error)
            loop.run_until_complete(self.bridge.stop())
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    def call(self, fn: Callable[[RadioBridge], Coroutine[Any, Any, Any]], timeout: float = 10.0) -> Any:
        """Run a coroutine against the bridge on its loop and wait for its result."""
        assert self._loop is not None and self.bridge is not None
        return asyncio.run_coroutine_threadsafe(fn(self.bridge), self._loop).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> RadioBridgeThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port(bind: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((bind, 0))
        return int(s.getsockname()[1])


async def _serve(config: RadioConfig) -> None:
    async with RadioBridge(config) as bridge:
        print(json.dumps({"hci_port": bridge.hci_port, "shim_port": bridge.shim_port,
                          "transport": bridge.transport}), flush=True)
        loop = asyncio.get_running_loop()
        stop = loop.create_future()

        def on_stdin() -> None:
            # Ends when stdin closes, so a parent that dies takes the bridge with it.
            if not sys.stdin.readline() and not stop.done():
                stop.set_result(None)

        loop.add_reader(sys.stdin.fileno(), on_stdin)
        try:
            await stop
        finally:
            loop.remove_reader(sys.stdin.fileno())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m needletrack.sim.radio", description=__doc__.split("\n")[0])
    parser.add_argument("--hci-port", type=int, default=0)
    parser.add_argument("--shim-port", type=int, default=0)
    parser.add_argument("--stack", choices=STACKS, default="nimble")
    parser.add_argument("--address", default=RadioConfig.address)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    config = RadioConfig(address=args.address, stack=args.stack, hci_port=args.hci_port, shim_port=args.shim_port)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config))


if __name__ == "__main__":
    main()
