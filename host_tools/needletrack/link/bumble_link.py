"""BLE link to a NeedleTrack probe through a Bumble host stack.

The host talks HCI to whatever ``transport`` names: a USB dongle (``"usb:0"``), a serial HCI controller, or the
virtual probe's radio bridge (``"tcp-client:127.0.0.1:PORT"``, see ``needletrack.sim.radio``). Nothing here
knows which: the same code drives a real probe and the virtual one.

It has the shape of bleak's ``BleakClient`` (connect, start_notify, read/write, pair, disconnect), narrowed to
the NeedleTrack GATT table of docs/protocol.md::

    async with BumbleLink("tcp-client:127.0.0.1:9000") as link:
        await link.connect()                 # scan for the service UUID, connect, MTU 247, discover
        await link.start_notify()            # measurement notifications
        async for note in link.notifications():
            samples = decode_notification(note.data)   # note.t_host: arrival time (never the sample time)
        await link.pair()                    # LE Secure Connections, bonded (needed for control writes)
        await link.write_control(encode_command(Opcode.TARE, 1))
        status = await link.read_status()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bumble import hci
from bumble.core import UUID, AdvertisingData, ProtocolError
from bumble.core import TimeoutError as BumbleTimeoutError
from bumble.device import Advertisement, Connection, Device, DeviceConfiguration, Peer
from bumble.gatt_client import CharacteristicProxy, ServiceProxy
from bumble.keys import JsonKeyStore, KeyStore, MemoryKeyStore
from bumble.pairing import PairingConfig, PairingDelegate
from bumble.transport import Transport, open_transport

from needletrack.link.base import Found, LinkError, Notification, SecurityError
from needletrack.protocol import CONTROL_UUID, MEASUREMENT_UUID, SERVICE_UUID, STATUS_UUID

__all__ = ["BumbleLink", "Found", "LinkError", "Notification", "SecurityError"]

logger = logging.getLogger(__name__)
# The firmware streams from the moment a host connects; what arrives before this host subscribes is expected
# and dropped by Bumble, which would otherwise warn of each such notification on the user's terminal.
logging.getLogger("bumble.gatt_client").setLevel(logging.ERROR)

DEFAULT_MTU = 247
_ADDRESS = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}(/P)?")  # Bumble's form: /P marks a public address
ATT_INSUFFICIENT_AUTHENTICATION = 0x05
ATT_INSUFFICIENT_ENCRYPTION = 0x0F


@dataclass
class _Gatt:
    service: ServiceProxy
    measurement: CharacteristicProxy[bytes]
    control: CharacteristicProxy[bytes] | None
    status: CharacteristicProxy[bytes] | None
    extra: dict[str, CharacteristicProxy[bytes]] = field(default_factory=dict)


def _uuids(data: AdvertisingData) -> tuple[str, ...]:
    found: list[str] = []
    for kind in (
        AdvertisingData.Type.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
        AdvertisingData.Type.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
        AdvertisingData.Type.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
        AdvertisingData.Type.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
    ):
        for group in data.get_all(kind):
            found.extend(str(u).lower() for u in group)
    return tuple(found)


def _name(data: AdvertisingData) -> str | None:
    for kind in (AdvertisingData.Type.COMPLETE_LOCAL_NAME, AdvertisingData.Type.SHORTENED_LOCAL_NAME):
        value = data.get(kind)
        if value is not None:
            return value if isinstance(value, str) else bytes(value).decode("utf-8", "replace")
    return None


class BumbleLink:
    """One BLE central on one HCI transport, connected to at most one probe at a time.

    keystore: a JSON file keeping bonds across runs (None: bonds live as long as this object).
    clock: the host clock stamping notification arrivals, in seconds.
    """

    def __init__(
        self,
        transport: str,
        *,
        keystore: str | Path | None = None,
        mtu: int = DEFAULT_MTU,
        clock: Callable[[], float] = time.monotonic,
        service_uuid: str = SERVICE_UUID,
    ) -> None:
        self.transport_name = transport
        self.keystore_path = Path(keystore) if keystore is not None else None
        self.requested_mtu = mtu
        self.clock = clock
        self.service_uuid = service_uuid.lower()
        self._transport: Transport | None = None
        self._device: Device | None = None
        self._connection: Connection | None = None
        self._peer: Peer | None = None
        self._gatt: _Gatt | None = None
        self._queue: asyncio.Queue[Notification | None] = asyncio.Queue()
        self._callback: Callable[[Notification], Any] | None = None
        self._disconnected = asyncio.Event()
        self.disconnect_reason: int | None = None
        self.on_disconnect: Callable[[int], Any] | None = None  # the probe went away (not our disconnect())
        self._closing = False

    # -- lifetime
    async def open(self) -> None:
        """Open the HCI transport and power on the host stack."""
        if self._device is not None:
            return
        self._transport = await open_transport(self.transport_name)
        config = DeviceConfiguration(name="needletrack", address=hci.Address.generate_static_address())
        device = Device.from_config_with_hci(config, self._transport.source, self._transport.sink)
        await device.power_on()
        # A controller with a public address gives the host a stable identity, so bonds outlive this process.
        self._own_type = (
            hci.OwnAddressType.PUBLIC if device.public_address != hci.Address.ANY else hci.OwnAddressType.RANDOM
        )
        identity = device.public_address if self._own_type == hci.OwnAddressType.PUBLIC else device.random_address
        store: KeyStore
        if self.keystore_path is not None:
            store = JsonKeyStore(namespace=str(identity), filename=str(self.keystore_path))
        else:
            store = MemoryKeyStore()
        device.keystore = store
        address_type = (
            PairingConfig.AddressType.PUBLIC if self._own_type == hci.OwnAddressType.PUBLIC
            else PairingConfig.AddressType.RANDOM
        )
        device.pairing_config_factory = lambda _c: PairingConfig(
            sc=True, mitm=False, bonding=True, identity_address_type=address_type,
            delegate=PairingDelegate(PairingDelegate.IoCapability.NO_OUTPUT_NO_INPUT),
        )
        self._device = device

    async def close(self) -> None:
        """Disconnect and release the transport."""
        with contextlib.suppress(Exception):
            await self.disconnect()
        if self._device is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._device.power_off(), 2.0)
        if self._transport is not None:
            with contextlib.suppress(Exception):
                await self._transport.close()
        self._device = None
        self._transport = None

    async def __aenter__(self) -> BumbleLink:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def device(self) -> Device:
        if self._device is None:
            raise LinkError("link not open")
        return self._device

    # -- discovery
    async def scan(self, timeout: float = 5.0, *, first: bool = False) -> list[Found]:
        """Probes advertising the NeedleTrack service UUID, heard within `timeout` seconds (or the first one)."""
        device = self.device
        found: dict[str, Found] = {}
        names: dict[str, str] = {}
        done = asyncio.Event()

        def on_advertisement(adv: Advertisement) -> None:
            address = str(adv.address)
            name = _name(adv.data)
            if name is not None:
                names[address] = name
            uuids = _uuids(adv.data)
            if self.service_uuid in uuids or address in found:
                previous = found.get(address)
                found[address] = Found(address, names.get(address), adv.rssi,
                                       uuids or (previous.service_uuids if previous else ()))
                if first and found[address].name is not None:
                    done.set()

        device.on(device.EVENT_ADVERTISEMENT, on_advertisement)
        try:
            await device.start_scanning(active=True, own_address_type=self._own_type, filter_duplicates=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout)
        finally:
            device.remove_listener(device.EVENT_ADVERTISEMENT, on_advertisement)
            with contextlib.suppress(Exception):
                await device.stop_scanning()
        return sorted(found.values(), key=lambda f: -f.rssi)

    # -- connection
    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    @property
    def address(self) -> str | None:
        return None if self._connection is None else str(self._connection.peer_address)

    @property
    def mtu_size(self) -> int:
        return 23 if self._connection is None else int(self._connection.att_mtu)

    @property
    def connection(self) -> Connection:
        if self._connection is None:
            raise LinkError("not connected")
        return self._connection

    async def connect(self, address: str | None = None, *, timeout: float = 10.0) -> None:
        """Connect to `address`, or to the first probe advertising the service; exchange MTU; discover."""
        device = self.device
        if self._connection is not None:
            raise LinkError("already connected")
        if address is None:
            found = await self.scan(timeout, first=True)
            if not found:
                raise LinkError(f"no probe advertising {self.service_uuid} within {timeout} s")
            address = found[0].address
        if not _ADDRESS.fullmatch(address):
            raise LinkError(f"{address!r} is not a Bluetooth address (like F4:12:FA:00:00:01, /P if public)")
        try:
            connection = await device.connect(address, own_address_type=self._own_type, timeout=timeout)
        except (TimeoutError, BumbleTimeoutError) as e:
            raise LinkError(f"cannot connect to {address}: no answer within {timeout:g} s (out of range, off, or "
                            "connected to another host)") from e
        except Exception as e:
            raise LinkError(f"cannot connect to {address}: {str(e) or type(e).__name__}") from e
        self._connection = connection
        self._disconnected.clear()
        self.disconnect_reason = None
        connection.on(connection.EVENT_DISCONNECTION, self._on_disconnection)
        try:
            async with asyncio.timeout(timeout):
                self._peer = Peer(connection)
                if self.requested_mtu > 23:
                    await self._peer.request_mtu(self.requested_mtu)
                self._gatt = await self._discover(self._peer)
        except BaseException:
            await self.disconnect()
            raise

    async def _discover(self, peer: Peer) -> _Gatt:
        services = await peer.discover_service(UUID(self.service_uuid))
        if not services:
            raise LinkError(f"service {self.service_uuid} not found")
        service = services[0]
        await service.discover_characteristics()

        def char(uuid: str) -> CharacteristicProxy[bytes] | None:
            found = service.get_characteristics_by_uuid(UUID(uuid))
            return found[0] if found else None

        measurement = char(MEASUREMENT_UUID)
        if measurement is None:
            raise LinkError("measurement characteristic not found")
        return _Gatt(service, measurement, char(CONTROL_UUID), char(STATUS_UUID))

    def _on_disconnection(self, reason: int) -> None:
        self.disconnect_reason = reason
        self._connection = None
        self._peer = None
        self._gatt = None
        self._disconnected.set()
        self._queue.put_nowait(None)
        if self.on_disconnect is not None and not self._closing:
            self.on_disconnect(reason)

    async def disconnect(self) -> None:
        connection = self._connection
        if connection is None:
            return
        self._closing = True
        try:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.disconnect(), 5.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._disconnected.wait(), 5.0)
        finally:
            self._closing = False
        self._connection = None

    async def wait_disconnected(self, timeout: float | None = None) -> int | None:
        """Wait until the probe is gone; returns the HCI reason."""
        async with asyncio.timeout(timeout):
            await self._disconnected.wait()
        return self.disconnect_reason

    # -- security
    async def pair(self) -> bool:
        """Encrypt the link: with the stored bond if the probe still knows it, else pair and bond (LE Secure
        Connections, Just Works). Returns True if a new bond was made."""
        connection = self.connection
        keys = await self.device.keystore.get(str(connection.peer_address)) if self.device.keystore else None
        if keys is not None:
            try:
                await asyncio.wait_for(connection.encrypt(), 10.0)
                return False
            except Exception as e:  # the probe lost its bond: pair again
                logger.info("stored bond refused (%s); pairing again", e)
                if self._connection is None:
                    raise LinkError("disconnected while encrypting") from e
        try:
            await asyncio.wait_for(connection.pair(), 30.0)
        except Exception as e:
            raise LinkError(f"pairing failed: {e}") from e
        return True

    @property
    def is_encrypted(self) -> bool:
        return self._connection is not None and bool(self._connection.encryption)

    # -- data
    def _gatt_or_raise(self) -> _Gatt:
        if self._gatt is None:
            raise LinkError("not connected")
        return self._gatt

    async def start_notify(self, callback: Callable[[Notification], Any] | None = None) -> None:
        """Subscribe to measurement notifications: to `callback`, and to the notifications() iterator."""
        self._callback = callback
        gatt = self._gatt_or_raise()
        while not self._queue.empty():  # what an earlier subscription left unread is not this one's
            self._queue.get_nowait()
        await gatt.measurement.subscribe(self._on_notification, prefer_notify=True)

    async def subscribe(self, uuid: str, callback: Callable[[bytes], Any]) -> None:
        """Notifications (or indications) of any characteristic, by UUID, to `callback(value)`."""
        await (await self._find(uuid)).subscribe(callback, prefer_notify=True)

    async def stop_notify(self) -> None:
        gatt = self._gatt
        if gatt is not None:
            await gatt.measurement.unsubscribe(self._on_notification)

    def _on_notification(self, value: bytes) -> None:
        note = Notification(self.clock(), bytes(value))
        if self._callback is not None:
            self._callback(note)  # a callback takes them: queued as well, they would pile up unread
        else:
            self._queue.put_nowait(note)

    async def notifications(self, timeout: float | None = None) -> AsyncIterator[Notification]:
        """Measurement notifications as they arrive; ends when the link drops (or after `timeout` s of silence)."""
        while True:
            try:
                note = await asyncio.wait_for(self._queue.get(), timeout)
            except TimeoutError:
                return
            if note is None:
                return
            yield note

    async def write_control(self, command: bytes, *, response: bool = True) -> None:
        """Write one command to the control characteristic (needs an encrypted, bonded link)."""
        control = self._gatt_or_raise().control
        if control is None:
            raise LinkError("control characteristic not found")
        await self._write(control, command, response)

    async def read_status(self) -> bytes:
        """Read the status characteristic (a STATUS record)."""
        status = self._gatt_or_raise().status
        if status is None:
            raise LinkError("status characteristic not found")
        return bytes(await status.read_value())

    async def read(self, uuid: str) -> bytes:
        """Read any characteristic by UUID (e.g. Device Information's)."""
        characteristic = await self._find(uuid)
        return bytes(await characteristic.read_value())

    async def write(self, uuid: str, data: bytes, *, response: bool = True) -> None:
        await self._write(await self._find(uuid), data, response)

    async def _find(self, uuid: str) -> CharacteristicProxy[bytes]:
        gatt = self._gatt_or_raise()
        if uuid not in gatt.extra:
            assert self._peer is not None
            found = self._peer.get_characteristics_by_uuid(UUID(uuid))
            if not found:
                await self._peer.discover_all()
                found = self._peer.get_characteristics_by_uuid(UUID(uuid))
            if not found:
                raise LinkError(f"characteristic {uuid} not found")
            gatt.extra[uuid] = found[0]
        return gatt.extra[uuid]

    async def _write(self, characteristic: CharacteristicProxy[bytes], data: bytes, response: bool) -> None:
        try:
            await characteristic.write_value(data, with_response=response)
        except ProtocolError as e:
            code = getattr(e, "error_code", None)
            if code in (ATT_INSUFFICIENT_AUTHENTICATION, ATT_INSUFFICIENT_ENCRYPTION):
                raise SecurityError(f"write refused: {e}", int(code)) from e
            raise
