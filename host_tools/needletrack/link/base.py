"""What every link to a probe offers, whatever carries it (BLE through the OS or Bumble, a serial console)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol


class LinkError(Exception):
    """The link cannot do what was asked (no probe found, not connected, timeout, ...)."""


class SecurityError(LinkError):
    """The probe refused an operation on an unencrypted or unbonded link (ATT error ``att_error``)."""

    def __init__(self, message: str, att_error: int) -> None:
        super().__init__(message)
        self.att_error = att_error


@dataclass(frozen=True)
class Found:
    """An advertising NeedleTrack probe."""

    address: str
    name: str | None
    rssi: int
    service_uuids: tuple[str, ...]


@dataclass(frozen=True)
class Notification:
    """One measurement notification: its bytes and the host time it arrived (never the sample time)."""

    t_host: float
    data: bytes


async def drain(queue: asyncio.Queue[Notification], timeout: float | None) -> AsyncIterator[Notification]:
    """Notifications from a backend's queue as they come; ends once none has come for `timeout` seconds."""
    while True:
        try:
            yield await asyncio.wait_for(queue.get(), timeout)
        except TimeoutError:
            return


class Link(Protocol):
    """The calls the host tools make; each backend implements them for its transport.

    ``on_disconnect``, when set, is called with a reason code when the link drops by itself (the probe out of
    range or switched off, the cable pulled); not when the host disconnects.
    """

    on_disconnect: Callable[[int], Any] | None

    @property
    def is_connected(self) -> bool: ...

    async def __aenter__(self) -> Link: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def scan(self, timeout: float = 5.0, *, first: bool = False) -> list[Found]: ...

    async def connect(self, address: str | None = None, *, timeout: float = 10.0) -> None: ...

    async def start_notify(self, callback: Callable[[Notification], Any] | None = None) -> None: ...

    def notifications(self, timeout: float | None = None) -> AsyncIterator[Notification]: ...

    async def subscribe(self, uuid: str, callback: Callable[[bytes], Any]) -> None: ...

    async def pair(self) -> bool: ...

    async def write_control(self, command: bytes, *, response: bool = True) -> None: ...

    async def read_status(self) -> bytes: ...

    async def disconnect(self) -> None: ...
