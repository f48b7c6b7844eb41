"""`needletrack device config` and `device command`: the probe's control channel over BLE.

Every command goes over a bonded, encrypted link (the probe refuses configuration otherwise), carries a token,
and is answered by a RESULT record with that token; a command the probe refuses changed nothing on it.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass

import click
from rich.console import Console
from rich.table import Table

from needletrack.link import LinkError, open_link
from needletrack.protocol import (
    NA,
    NA32,
    STATUS_UUID,
    Config,
    Opcode,
    ProtocolError,
    Record,
    Result,
    ResultCode,
    Status,
    decode_record,
    encode_command,
)

console = Console()
_tokens = itertools.count(1)


@dataclass(frozen=True)
class Answer:
    result: Result
    record: Record | None  # CONFIG or STATUS, for the commands that read one


async def send(transport: str, address: str | None, opcode: Opcode, *args: int, timeout: float = 5.0) -> Answer:
    token = next(_tokens) & 0xFF
    async with open_link(transport) as link:
        await link.connect(address)
        await link.pair()
        records: asyncio.Queue[bytes] = asyncio.Queue()
        await link.subscribe(STATUS_UUID, records.put_nowait)
        await link.write_control(encode_command(opcode, token, *args))
        result: Result | None = None
        extra: Record | None = None
        want_extra = opcode in (Opcode.READ_CONFIG, Opcode.READ_STATUS)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while result is None or (want_extra and result.code == ResultCode.OK and extra is None):
            left = deadline - loop.time()
            if left <= 0:
                raise LinkError(f"no answer to {opcode.name} within {timeout:g} s")
            try:
                rec = decode_record(await asyncio.wait_for(records.get(), left))
            except (ProtocolError, TimeoutError):
                continue
            if isinstance(rec, Result) and rec.token == token and rec.opcode == opcode:
                result = rec
            elif want_extra and isinstance(rec, Config if opcode == Opcode.READ_CONFIG else Status):
                extra = rec
        await link.disconnect()
        return Answer(result, extra)


# name -> (opcode, argument names with their wire scale from the user's units)
COMMANDS: dict[str, tuple[Opcode, tuple[tuple[str, float], ...]]] = {
    "set-guide-angle": (Opcode.SET_GUIDE_ANGLE, (("degrees", 100),)),
    "set-needle-length": (Opcode.SET_NEEDLE_LENGTH, (("mm", 10),)),
    "set-nogo": (Opcode.SET_NOGO, (("tip-depth-mm (or 'none')", 100), ("margin-mm", 100))),
    "set-rate": (Opcode.SET_OUTPUT_RATE, (("hz", 1),)),
    "tare": (Opcode.TARE, ()),
    "identify": (Opcode.IDENTIFY, (("seconds", 1),)),
    "reboot": (Opcode.REBOOT, ()),
    "cal-begin": (Opcode.CAL_BEGIN, ()),
    "cal-point": (Opcode.CAL_POINT, (("known-depth-mm", 100),)),
    "cal-commit": (Opcode.CAL_COMMIT, ()),
    "cal-abort": (Opcode.CAL_ABORT, ()),
    "field": (Opcode.READ_FIELD, (("sensor (0 = A, 1 = B)", 1),)),
    "cal-residual": (Opcode.CAL_RESIDUAL, (("point-index", 1),)),
}

# What an OK answer's value is, for the commands that return one.
VALUES: dict[Opcode, str] = {
    Opcode.TARE: "tare, um",
    Opcode.CAL_POINT: "field angle, mdeg",
    Opcode.CAL_COMMIT: "calibration id",
    Opcode.READ_FIELD: "field angle, mdeg",
    Opcode.CAL_RESIDUAL: "residual, um",
}


def describe_value(opcode: Opcode, result: Result) -> str:
    """The answer's value with what it means: e.g. "(field angle, mdeg: -98885)", "" where there is none."""
    value = result.value
    if result.code != ResultCode.OK:
        return f" (value {value})" if value else ""
    what = VALUES.get(opcode)
    if what is None:
        return f" (value {value})" if value else ""
    if opcode == Opcode.CAL_COMMIT:
        return f" ({what} {value:04x})"
    if opcode == Opcode.CAL_RESIDUAL and value == NA32:
        return " (no fit used this point)"
    return f" ({what}: {value})"


def _wire_args(name: str, values: tuple[str, ...]) -> list[int]:
    opcode, spec = COMMANDS[name]
    if len(values) != len(spec):
        wanted = " ".join(n.upper() for n, _ in spec) or "no arguments"
        raise click.UsageError(f"{name} takes {wanted}")
    out = []
    for (arg, scale), text in zip(spec, values, strict=True):
        if opcode == Opcode.SET_NOGO and arg.startswith("tip") and text.lower() == "none":
            out.append(NA)
            continue
        try:
            out.append(round(float(text) * scale))
        except ValueError:
            raise click.UsageError(f"{arg}: {text!r} is not a number") from None
    return out


def _print_record(rec: Record | None) -> None:
    if rec is None:
        return
    table = Table(show_header=False)
    for field in rec.__class__.__dataclass_fields__:
        v = getattr(rec, field)
        table.add_row(field.replace("_", " "), "none" if v is None else str(getattr(v, "name", v)))
    console.print(table)


def _run(transport: str, address: str | None, opcode: Opcode, args: list[int]) -> Answer:
    try:
        answer = asyncio.run(send(transport, address, opcode, *args))
    except (LinkError, OSError) as e:
        raise click.ClickException(str(e)) from None
    return answer


_TRANSPORT = click.option("--transport", "-t", default="os", show_default=True,
                          help="A BLE transport: os, usb:0, or the virtual probe's tcp-client:127.0.0.1:PORT.")
_ADDRESS = click.option("--address", "-a", help="The probe's address (default: the first found).")


@click.command("config")
@_TRANSPORT
@_ADDRESS
def config_command(transport: str, address: str | None) -> None:
    """The probe's configuration and status, read over BLE."""
    for opcode in (Opcode.READ_CONFIG, Opcode.READ_STATUS):
        answer = _run(transport, address, opcode, [])
        _print_record(answer.record)


@click.command("command")
@click.argument("name", type=click.Choice(sorted(COMMANDS)))
@click.argument("values", nargs=-1)
@_TRANSPORT
@_ADDRESS
def command_command(name: str, values: tuple[str, ...], transport: str, address: str | None) -> None:
    """Send one control command over a bonded BLE link and show the probe's answer.

    Units: degrees, mm, Hz, seconds, e.g. `set-guide-angle 45`, `set-nogo 17 3`, `set-nogo none 0`; `field 0`
    reads sensor A's field angle, `cal-residual 3` the fourth point's residual after `cal-commit`.
    """
    opcode = COMMANDS[name][0]
    answer = _run(transport, address, opcode, _wire_args(name, values))
    code = answer.result.code
    colour = "green" if code == ResultCode.OK else "bold red"
    console.print(f"{name}: [{colour}]{code.name}[/]{describe_value(opcode, answer.result)}")
    if code != ResultCode.OK:
        raise SystemExit(1)
