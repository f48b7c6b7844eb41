"""Sample lines on a serial console (the firmware's serial_link): ``NT1 <hex of one notification>``.

Every other line (boot banner, logs, the REPL) is not a sample line and is passed over; a line that claims to
be a sample line but does not decode raises :class:`~needletrack.protocol.ProtocolError`.
"""

from __future__ import annotations

from needletrack.protocol import ProtocolError, Sample, decode_notification

PREFIX = b"NT1 "


def payload(line: bytes) -> bytes | None:
    """The notification bytes a console line carries, or None if it is not a sample line."""
    line = line.strip()
    if not line.startswith(PREFIX):
        return None
    try:
        return bytes.fromhex(line[len(PREFIX):].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError(f"sample line is not hex: {line[:40]!r}") from None


def parse_line(line: bytes) -> list[Sample] | None:
    """The samples of one console line, or None if it is not a sample line."""
    data = payload(line)
    return None if data is None else decode_notification(data)
