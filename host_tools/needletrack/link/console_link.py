"""A probe on a USB cable: the samples its firmware prints on the serial console (``NT1 <hex>`` lines).

Streaming only: configuration and calibration go over BLE, where the link is bonded and encrypted.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from needletrack.link.base import Found, LinkError, Notification, drain
from needletrack.link.serial_lines import payload
from needletrack.protocol import ProtocolError


class ConsoleLink:
    def __init__(self, port: str, *, baudrate: int = 115200, clock: Callable[[], float] = time.monotonic) -> None:
        self.port = port
        self.baudrate = baudrate
        self.clock = clock
        self._serial: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._queue: asyncio.Queue[Notification] = asyncio.Queue()
        self._callback: Callable[[Notification], Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.log: list[str] = []  # the console's other lines: boot banner, "# " notes
        self.on_disconnect: Callable[[int], Any] | None = None

    @property
    def is_connected(self) -> bool:
        return self._serial is not None

    async def __aenter__(self) -> ConsoleLink:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()

    async def scan(self, timeout: float = 5.0, *, first: bool = False) -> list[Found]:
        return [Found(self.port, None, 0, ())]

    async def connect(self, address: str | None = None, *, timeout: float = 10.0) -> None:
        import serial  # pyserial, installed with mpremote

        try:
            self._serial = serial.Serial(address or self.port, self.baudrate, timeout=0.2)
        except (OSError, serial.SerialException) as e:
            raise LinkError(f"cannot open {address or self.port}: {e}") from e
        self._loop = asyncio.get_running_loop()

    async def start_notify(self, callback: Callable[[Notification], Any] | None = None) -> None:
        if self._serial is None:
            raise LinkError("not connected")
        self._callback = callback
        self._stop.clear()
        self._thread = threading.Thread(target=self._read, name="console-link", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._loop is not None
        while not self._stop.is_set():
            try:
                line = self._serial.readline()
            except OSError:  # the cable was pulled or the board reset its USB port
                if not self._stop.is_set():
                    self._loop.call_soon_threadsafe(self._lost)
                return
            if not line:
                continue
            t = self.clock()
            try:
                data = payload(line)
            except ProtocolError:
                data = b""  # a broken sample line: delivered, so the receiver counts it as malformed
            if data is None:
                self.log.append(line.strip().decode(errors="replace"))
                continue
            note = Notification(t, data)
            self._loop.call_soon_threadsafe(self._deliver, note)

    def _lost(self) -> None:
        if self._serial is not None:
            with contextlib.suppress(OSError):
                self._serial.close()
            self._serial = None
        if self.on_disconnect is not None:
            self.on_disconnect(0x08)

    def _deliver(self, note: Notification) -> None:
        if self._callback is not None:
            self._callback(note)
        else:
            self._queue.put_nowait(note)

    def notifications(self, timeout: float | None = None) -> AsyncIterator[Notification]:
        return drain(self._queue, timeout)

    async def subscribe(self, uuid: str, callback: Callable[[bytes], Any]) -> None:
        raise LinkError("the serial console carries samples only; characteristics are read over BLE")

    async def pair(self) -> bool:
        return False  # a cable needs no pairing

    async def write_control(self, command: bytes, *, response: bool = True) -> None:
        raise LinkError("control commands go over BLE (bonded and encrypted), not the serial console")

    async def read_status(self) -> bytes:
        raise LinkError("the status record is read over BLE; the serial console carries samples only")

    async def disconnect(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None
        if self._serial is not None:
            with contextlib.suppress(OSError):
                self._serial.close()
            self._serial = None
