"""Control commands on an open link, each matched to its RESULT by token (docs/protocol.md).

The status characteristic carries three kinds of record: RESULT (the answer to a command, with the command's
opcode and token), STATUS (sent every 2 s and on request: battery, device state) and CONFIG (on request).
One subscription per connection feeds them all: answers go to the command waiting for that token, status and
configuration to the callbacks. A command whose link drops before its answer fails at once, not at its
timeout. One command is in flight at a time: the probe's control characteristic holds one value, and a command
written before the last one was taken from it would overwrite it (docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

from needletrack.link.base import Link, LinkError
from needletrack.protocol import (
    STATUS_UUID,
    Config,
    Opcode,
    ProtocolError,
    Result,
    Status,
    decode_record,
    encode_command,
)

DEFAULT_TIMEOUT_S = 5.0


class CommandChannel:
    def __init__(self, on_status: Callable[[Status], object] | None = None,
                 on_config: Callable[[Config], object] | None = None) -> None:
        self.on_status = on_status
        self.on_config = on_config
        self.malformed = 0
        self._tokens = itertools.count(1)
        self._pending: dict[tuple[int, int], asyncio.Future[Result]] = {}
        self._one_at_a_time: asyncio.Lock | None = None  # made on the loop that sends

    async def attach(self, link: Link) -> None:
        """Subscribe to the status records of a (new) connection. Raises LinkError where the link has none."""
        await link.subscribe(STATUS_UUID, self.on_record)

    def detach(self, why: str = "the link was lost before the probe answered") -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(LinkError(why))
        self._pending.clear()

    def on_record(self, data: bytes) -> None:
        try:
            record = decode_record(data)
        except ProtocolError:
            self.malformed += 1
            return
        if isinstance(record, Result):
            future = self._pending.get((record.opcode, record.token))
            if future is not None and not future.done():
                future.set_result(record)
        elif isinstance(record, Status):
            if self.on_status is not None:
                self.on_status(record)
        elif self.on_config is not None:
            self.on_config(record)

    async def send(self, link: Link, opcode: Opcode, *args: int, timeout: float = DEFAULT_TIMEOUT_S) -> Result:
        """Write one command and wait for its RESULT. The link must be encrypted (paired) for most commands."""
        token = next(self._tokens) & 0xFF
        command = encode_command(opcode, token, *args)  # a malformed command fails here, before the link
        if self._one_at_a_time is None:
            self._one_at_a_time = asyncio.Lock()
        async with self._one_at_a_time:
            return await self._send(link, opcode, token, command, timeout)

    async def _send(self, link: Link, opcode: Opcode, token: int, command: bytes, timeout: float) -> Result:
        key = (int(opcode), token)
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            await link.write_control(command)
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise LinkError(f"no answer to {opcode.name} within {timeout:g} s") from None
        finally:
            self._pending.pop(key, None)
