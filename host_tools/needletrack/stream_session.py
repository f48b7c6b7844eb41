"""Keep one probe streaming: connect, subscribe, and when the link drops, reconnect to the same probe.

::

    rx = Receiver()
    async with open_link(transport) as link:
        session = StreamSession(link, rx, on_samples=show)
        await session.run(stop)          # until stop is set; survives the probe going out of range

The probe is found once (by address, or the first one advertising the service) and from then on only that
address is tried: another probe in the room is never picked up by mistake. Reconnection attempts back off
(``Backoff``) but each one waits, listening, for the probe's advertising, so a probe back in range is
reconnected as soon as it advertises, not at the next retry. The Receiver is told of every reconnection, so
samples are never duplicated or reordered across it, and a probe that restarted meanwhile gets a new clock
mapping (needletrack.receiver).

While the link is down the Receiver's stream ages: consumers see the signal lost (STALE_AFTER_S), never a
needle frozen at its last place.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from needletrack.link.base import Link, LinkError, Notification
from needletrack.receiver import Receiver, Timed

logger = logging.getLogger(__name__)


class State(enum.Enum):
    CONNECTING = "connecting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Backoff:
    """Pause between failed connection attempts: first_s, doubling, at most max_s."""

    first_s: float = 0.1
    max_s: float = 2.0

    def delay(self, failures: int) -> float:
        return min(self.first_s * 2 ** max(failures - 1, 0), self.max_s)


@dataclass(frozen=True)
class LinkEvent:
    t_host: float
    what: str  # "connected", "lost", "attempt failed"
    detail: str = ""


class StreamSession:
    """``address``: the probe to stream from (None: the first advertising the service, then that one only).
    ``on_samples`` gets each batch of timed samples, in order, never twice; ``on_connected`` is awaited after
    every (re)connection, subscribed, for reads the caller needs each time (e.g. the status record)."""

    def __init__(self, link: Link, receiver: Receiver, *, address: str | None = None,
                 on_samples: Callable[[list[Timed]], Any] | None = None,
                 on_connected: Callable[[Link], Any] | None = None,
                 backoff: Backoff = Backoff(), attempt_timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.link = link
        self.receiver = receiver
        self.address = address
        self.on_samples = on_samples
        self.on_connected = on_connected
        self.backoff = backoff
        self.attempt_timeout_s = attempt_timeout_s
        self.clock = clock
        self.state = State.CONNECTING
        self.reconnects = 0
        self.failures = 0  # consecutive failed attempts
        self.events: list[LinkEvent] = []
        self.connected_at: float | None = None
        self._lost = asyncio.Event()

    def _event(self, what: str, detail: str = "") -> None:
        self.events.append(LinkEvent(self.clock(), what, detail))
        logger.info("%s %s", what, detail)

    def _on_notification(self, note: Notification) -> None:
        timed = self.receiver.feed(note)
        if timed and self.on_samples is not None:
            self.on_samples(timed)

    def _on_disconnect(self, reason: int) -> None:
        self._event("lost", f"reason 0x{reason:02x}")
        self._lost.set()

    async def _connect_once(self, timeout: float) -> None:
        self._lost.clear()
        await self.link.connect(self.address, timeout=timeout)
        if self.address is None:
            self.address = getattr(self.link, "address", None)
        if self.state is State.RECONNECTING:
            self.receiver.reconnected()
            self.reconnects += 1
        await self.link.start_notify(self._on_notification)
        self.connected_at = self.clock()
        self._event("connected", self.address or "")
        if self.on_connected is not None:
            result = self.on_connected(self.link)
            if asyncio.iscoroutine(result):
                await result

    async def connect(self, timeout: float = 10.0) -> None:
        """The first connection: failures are the caller's to report (no probe, wrong address)."""
        self.link.on_disconnect = self._on_disconnect
        await self._connect_once(timeout)
        self.state = State.STREAMING

    async def run(self, stop: asyncio.Event) -> None:
        """Stream until `stop` is set, reconnecting whenever the link drops. Connects first if not connected."""
        self.link.on_disconnect = self._on_disconnect
        try:
            if self.state is State.CONNECTING:
                await self.connect()
            while not stop.is_set():
                if self.state is State.STREAMING:
                    await _first(stop.wait(), self._lost.wait())
                    if stop.is_set():
                        break
                    self.state = State.RECONNECTING
                    self.failures = 0
                    continue
                try:
                    await _first(stop.wait(), self._connect_once(self.attempt_timeout_s))
                except LinkError as e:
                    self.failures += 1
                    self._event("attempt failed", str(e))
                    with contextlib.suppress(Exception):
                        await self.link.disconnect()
                    await _first(stop.wait(), asyncio.sleep(self.backoff.delay(self.failures)))
                    continue
                if not stop.is_set():
                    self.state = State.STREAMING
        finally:
            self.state = State.STOPPED
            self.link.on_disconnect = None


async def _first(*aws: Any) -> None:
    """Run the awaitables until the first finishes; cancel the rest. The first's exception propagates."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                if not t.done() or t.cancelled():
                    await t
    for t in done:
        error = None if t.cancelled() else t.exception()
        if error is not None:
            raise error
