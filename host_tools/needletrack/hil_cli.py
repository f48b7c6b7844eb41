"""`needletrack hil`: QA's hardware-in-the-loop suite (hil_tests/) on the virtual probe or a board on the bench.

It runs pytest on the suite of this installation with the HTML report and JUnit XML written into one directory,
shows pytest's progress as it goes, and ends with where the report is. The exit status is pytest's.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import click

from needletrack.paths import PACKAGE


def hil_tests_dir() -> Path:
    """The suite: $NEEDLETRACK_HIL_TESTS, else hil_tests/ of the checkout this package runs from."""
    env = os.environ.get("NEEDLETRACK_HIL_TESTS")
    path = Path(env) if env else PACKAGE.parents[1] / "hil_tests"
    if not (path / "conftest.py").is_file():
        raise FileNotFoundError(f"no HIL suite at {path}: set NEEDLETRACK_HIL_TESTS to the hil_tests directory")
    return path


def default_out() -> Path:
    return Path("out") / "hil" / dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def pytest_command(suite: Path, out: Path, *, board: str, ble: str | None, jig: Path | None, soak: bool,
                   no_flash: bool, extra: tuple[str, ...] = (), cpu: str = "board") -> list[str]:
    cmd = [sys.executable, "-m", "pytest", str(suite), "-v", "--board", board, "--cpu", cpu,
           "--hil-report", str(out), "--junitxml", str(out / "junit.xml")]
    if ble:
        cmd += ["--ble", ble]
    if jig is not None:
        cmd += ["--jig", str(jig)]
    if soak:
        cmd.append("--soak")
    if no_flash:
        cmd.append("--no-flash")
    return cmd + list(extra)


@click.command("hil", context_settings={"ignore_unknown_options": True})
@click.option("--board", default="sim", show_default=True,
              help="sim: the virtual probe (a XIAO ESP32S3); pico_w or xiao_esp32s3: the virtual probe as that "
                   "board; else the serial port of a board (e.g. /dev/ttyACM0).")
@click.option("--cpu", type=click.Choice(["board", "ideal"]), default="board", show_default=True,
              help="The virtual probe: the board's compute, I2C and flash time charged (board) or free (ideal).")
@click.option("--ble", default=None,
              help="BLE transport on a board: os (this computer's adapter, the default) or a Bumble one (usb:0).")
@click.option("--jig", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="A depth jig's known positions (JSON, docs/qa-guide.md): depth accuracy on a board.")
@click.option("--out", "out", type=click.Path(path_type=Path, file_okay=False),
              help="Where the report goes (default: out/hil/<date-time>/).")
@click.option("--soak", is_flag=True, help="Also the soak: an hour of streaming with nothing lost.")
@click.option("--no-flash", is_flag=True, help="Test the firmware the board holds instead of deploying this one.")
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def hil_command(board: str, cpu: str, ble: str | None, jig: Path | None, out: Path | None, soak: bool,
                no_flash: bool, pytest_args: tuple[str, ...]) -> None:
    """Run the hardware-in-the-loop suite and write its report (report.html, junit.xml).

    Arguments after the options go to pytest, e.g. `needletrack hil -- -k timing`.
    """
    try:
        suite = hil_tests_dir()
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from None
    out = (out or default_out()).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cmd = pytest_command(suite, out, board=board, ble=ble, jig=jig.resolve() if jig else None, soak=soak,
                         no_flash=no_flash, extra=pytest_args, cpu=cpu)
    virtual = {"sim": "xiao_esp32s3", "pico_w": "pico_w", "xiao_esp32s3": "xiao_esp32s3"}.get(board)
    target = f"the virtual probe as a {virtual} (cpu {cpu})" if virtual else f"the board on {board}"
    click.echo(f"HIL suite on {target}: {suite}")
    env = dict(os.environ, MPLBACKEND="Agg")
    with subprocess.Popen(cmd, cwd=suite.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            click.echo(line, nl=False)
        code = proc.wait()
    report = out / "report.html"
    if report.is_file():
        verdict = click.style("passed", fg="green") if code == 0 else click.style("FAILED", fg="red", bold=True)
        click.echo(f"\nHIL suite {verdict}. Report: {report}\nJUnit XML: {out / 'junit.xml'}")
    else:
        click.echo(click.style(f"\nno report was written (pytest exit status {code})", fg="red"))
    sys.exit(code)
