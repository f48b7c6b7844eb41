"""BLE link through the operating system's Bluetooth adapter, with bleak (BlueZ, CoreBluetooth, WinRT).

The same calls as the Bumble backend; bleak does the MTU exchange and pairing the platform's way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from bleak import BleakClient, BleakScanner
from bleak.exc import BleakError

from needletrack.link.base import Found, LinkError, Notification, SecurityError, drain
from needletrack.protocol import CONTROL_UUID, MEASUREMENT_UUID, SERVICE_UUID, STATUS_UUID


class BleakLink:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._client: BleakClient | None = None
        self._queue: asyncio.Queue[Notification] = asyncio.Queue()
        self._callback: Callable[[Notification], Any] | None = None
        self._closing = False
        self.on_disconnect: Callable[[int], Any] | None = None

    @property
    def is_connected(self) -> bool:
        return self._client is not None and self._client.is_connected

    async def __aenter__(self) -> BleakLink:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()

    async def scan(self, timeout: float = 5.0, *, first: bool = False) -> list[Found]:
        found = await BleakScanner.discover(timeout=timeout, return_adv=True, service_uuids=[SERVICE_UUID])
        out = [Found(dev.address, adv.local_name or dev.name, adv.rssi, tuple(adv.service_uuids))
               for dev, adv in found.values()]
        return sorted(out, key=lambda f: -f.rssi)

    async def connect(self, address: str | None = None, *, timeout: float = 10.0) -> None:
        if address is None:
            found = await self.scan(timeout)
            if not found:
                raise LinkError("no NeedleTrack probe is advertising")
            address = found[0].address
        client = BleakClient(address, timeout=timeout, services=[SERVICE_UUID],
                             disconnected_callback=self._on_disconnected)
        try:
            await client.connect()
        except (TimeoutError, BleakError) as e:
            raise LinkError(f"cannot connect to {address}: {e}") from e
        self._client = client

    def _on_disconnected(self, _client: BleakClient) -> None:
        if not self._closing and self.on_disconnect is not None:
            self.on_disconnect(0x08)  # bleak gives no reason; report it as the link timing out

    @property
    def client(self) -> BleakClient:
        if self._client is None or not self._client.is_connected:
            raise LinkError("not connected")
        return self._client

    async def start_notify(self, callback: Callable[[Notification], Any] | None = None) -> None:
        self._callback = callback

        def on_data(_char: object, data: bytearray) -> None:
            note = Notification(self.clock(), bytes(data))
            if self._callback is not None:
                self._callback(note)
            else:
                self._queue.put_nowait(note)

        await self.client.start_notify(MEASUREMENT_UUID, on_data)

    async def subscribe(self, uuid: str, callback: Callable[[bytes], Any]) -> None:
        await self.client.start_notify(uuid, lambda _char, data: callback(bytes(data)))

    def notifications(self, timeout: float | None = None) -> AsyncIterator[Notification]:
        return drain(self._queue, timeout)

    async def pair(self) -> bool:
        try:
            await self.client.pair()
        except BleakError as e:
            raise LinkError(f"pairing failed: {e}") from e
        return True

    async def write_control(self, command: bytes, *, response: bool = True) -> None:
        try:
            await self.client.write_gatt_char(CONTROL_UUID, command, response=response)
        except BleakError as e:
            if "auth" in str(e).lower() or "encrypt" in str(e).lower():
                raise SecurityError(f"the probe refused the command: {e}", 0x05) from e
            raise LinkError(str(e)) from e

    async def read_status(self) -> bytes:
        return bytes(await self.client.read_gatt_char(STATUS_UUID))

    async def disconnect(self) -> None:
        if self._client is not None:
            self._closing = True
            try:
                await self._client.disconnect()
            finally:
                self._client = None
                self._closing = False
