"""The `needletrack` command line."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from needletrack import __version__, protocol

console = Console()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="needletrack")
def main() -> None:
    """NeedleTrack host tools: needle angle and depth from the clip-on accessory, fused with ultrasound."""


@main.group("protocol")
def protocol_group() -> None:
    """Inspect protocol v1 bytes (docs/protocol.md)."""


@protocol_group.command("decode")
@click.argument("hex_values", nargs=-1, required=True)
@click.option("--record", is_flag=True, help="Decode status-characteristic records instead of samples.")
def protocol_decode(hex_values: tuple[str, ...], record: bool) -> None:
    """Decode measurement notifications (or status records) given as hex strings."""
    failed = False
    for text in hex_values:
        try:
            data = bytes.fromhex(text)
            if record:
                console.print(protocol.decode_record(data))
            else:
                _print_samples(protocol.decode_notification(data))
        except ValueError as e:  # ProtocolError, and hex that is not hex
            console.print(f"[bold red]{text[:48]}: {e}[/]")
            failed = True
    if failed:
        sys.exit(1)


def _fmt(v: float | None, unit: str) -> str:
    return "NA" if v is None else f"{v:.2f} {unit}"


def _print_samples(samples: list[protocol.Sample]) -> None:
    table = Table("seq", "device time", "needle", "guide", "depth", "tip depth", "pitch", "roll", "flags")
    for s in samples:
        table.add_row(str(s.seq), f"{s.device_time_us} us", _fmt(s.needle_angle_deg, "deg"),
                      _fmt(s.guide_angle_deg, "deg"), _fmt(s.depth_mm, "mm"), _fmt(s.tip_depth_mm, "mm"),
                      _fmt(s.pitch_deg, "deg"), _fmt(s.roll_deg, "deg"), " ".join(s.flag_names))
    console.print(table)


_TRANSPORT_HELP = ("os (this computer's Bluetooth, via bleak), a Bumble transport such as usb:0 or the virtual "
                   "probe's tcp-client:127.0.0.1:PORT, or console:PORT for a board's serial console")


def _link_errors():
    import contextlib

    from needletrack.link import LinkError

    @contextlib.contextmanager
    def wrap():
        try:
            yield
        except (LinkError, FileExistsError, OSError) as e:
            raise click.ClickException(str(e)) from None

    return wrap()


@main.command("scan")
@click.option("--transport", "-t", default="os", show_default=True, help=_TRANSPORT_HELP)
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to listen.")
def scan_cmd(transport: str, timeout: float) -> None:
    """Probes advertising nearby: name, address, signal strength."""
    import asyncio

    from needletrack import live

    with _link_errors():
        found = asyncio.run(live.scan(transport, timeout))
    table = Table("name", "address", "RSSI")
    for f in found:
        table.add_row(f.name or "?", f.address, f"{f.rssi} dBm")
    console.print(table if found else "no NeedleTrack probe found")
    if not found:
        sys.exit(1)


def _fusion_options(f):
    """--frames and what goes with it, shared by stream and record."""
    f = click.option("--igtl-port", type=int, default=None,
                     help="Serve the needle and the fused image over OpenIGTLink on this port (0: any free one; "
                          "3D Slicer's default is 18944).")(f)
    f = click.option("--nogo", "nogo_mm", type=float, default=None,
                     help="No-go tip depth to draw, mm below the transducer face.")(f)
    f = click.option("--latency", "video_latency_s", type=float, default=0.0, show_default=True,
                     help="Video latency of the frame source, s (needletrack calibrate latency measures it).")(f)
    f = click.option("--probe-model", default=None,
                     help="The stored image calibration to place the needle with (needletrack image calibrate).")(f)
    f = click.option("--frames", "frames_spec", default=None, metavar="SOURCE",
                     help="Ultrasound frames to draw the needle on: capture:0, video:FILE, dicom:FILE, "
                          "igtl:HOST:PORT, synthetic:SCENARIO.")(f)
    return f


def _fusion(frames_spec: str | None, probe_model: str | None, video_latency_s: float, nogo_mm: float | None,
            igtl_port: int | None):
    from needletrack.live_fusion import FusionOptions

    if frames_spec is None:
        if igtl_port is not None:
            raise click.UsageError("--igtl-port serves fused frames: give --frames too")
        return None
    return FusionOptions(frames_spec, probe_model, None, video_latency_s, nogo_mm, igtl_port)


def _run_live(transport: str, device: str | None, seconds: float | None, directory: Path | None, fusion):
    import asyncio

    from needletrack import live
    from needletrack.frames import FrameSourceError
    from needletrack.geometry import CalibrationError

    with _link_errors():
        try:
            return asyncio.run(live.run(transport, device, seconds, directory, console, fusion))
        except (CalibrationError, FrameSourceError) as e:
            raise click.ClickException(str(e)) from None


@main.command("stream")
@click.argument("device", required=False)
@click.option("--transport", "-t", default="os", show_default=True, help=_TRANSPORT_HELP)
@click.option("--duration", "--seconds", "seconds", type=float, help="Stop after this many seconds (default: Ctrl-C).")
@_fusion_options
def stream_cmd(device: str | None, transport: str, seconds: float | None, frames_spec: str | None,
               probe_model: str | None, video_latency_s: float, nogo_mm: float | None, igtl_port: int | None) -> None:
    """Show a probe's samples live: angle, depth, rate, loss. DEVICE: an address (default: the first found).
    With --frames, the needle is drawn on the ultrasound frames (and served over OpenIGTLink with --igtl-port)."""
    _run_live(transport, device, seconds, None, _fusion(frames_spec, probe_model, video_latency_s, nogo_mm,
                                                        igtl_port))


@main.command("record")
@click.argument("args", nargs=-1, required=True, metavar="[DEVICE] DIR")
@click.option("--transport", "-t", default="os", show_default=True, help=_TRANSPORT_HELP)
@click.option("--duration", "--seconds", "seconds", type=float, help="Stop after this many seconds (default: Ctrl-C).")
@_fusion_options
def record_cmd(args: tuple[str, ...], transport: str, seconds: float | None, frames_spec: str | None,
               probe_model: str | None, video_latency_s: float, nogo_mm: float | None, igtl_port: int | None) -> None:
    """Record a probe's samples into DIR (docs/recording.md), shown live; Ctrl-C ends it cleanly. With --frames,
    DIR also gets the fused video (fused.mp4) and the images with the needle tip for 3D Slicer
    (ultrasound.seq.mha)."""
    if len(args) > 2:
        raise click.UsageError("expected [DEVICE] DIR")
    device, directory = (None, args[0]) if len(args) == 1 else args
    rx = _run_live(transport, device, seconds, Path(directory),
                   _fusion(frames_spec, probe_model, video_latency_s, nogo_mm, igtl_port))
    import json

    written = json.loads((Path(directory) / "session.json").read_text()).get("samples", rx.samples)
    gaps = f", {rx.missed} made while the link was down" if rx.connections > 1 else ""
    console.print(f"recording: {directory} ({written} samples, {rx.lost} lost{gaps})")


@main.group("sim")
def sim_group() -> None:
    """The virtual probe: the unchanged firmware on MicroPython with emulated sensors."""


@sim_group.command("list")
def sim_list() -> None:
    """The scenario library."""
    from needletrack.sim import scenario

    table = Table("scenario", "duration", "description")
    for name in scenario.library():
        sc = scenario.load(name)
        table.add_row(name, f"{sc.duration_s:g} s", sc.description)
    console.print(table)


BOARD_OPTION = click.option(
    "--board", type=click.Choice(["pico_w", "xiao_esp32s3"]), default="xiao_esp32s3", show_default=True,
    help="The board the virtual probe is: its CPU, I2C, flash, heap, pins and BLE stack (docs/virtual-probe.md).")
CPU_OPTION = click.option(
    "--cpu", type=click.Choice(["board", "ideal"]), default="board", show_default=True,
    help="board: the firmware's compute, I2C and flash time cost what they cost on the board; "
         "ideal: they are free, and a run repeats to the bit.")
FIRMWARE_OPTION = click.option(
    "--firmware", type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Run this firmware tree instead of the project's, deployed as `needletrack flash` deploys it.")


def _run_scenario(name: str, record: Path | None, realtime: bool, rate: int, workdir: Path | None,
                  board: str = "xiao_esp32s3", cpu: str = "board", firmware: Path | None = None):
    from needletrack.sim import runner, scenario

    try:
        sc = scenario.load(name)
    except scenario.ScenarioError as e:
        raise click.ClickException(str(e)) from None
    work = workdir or Path(tempfile.mkdtemp(prefix="needletrack-sim-"))
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:.1f}/{task.total:g} s"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(f"{sc.name} on the virtual probe", total=sc.duration_s)
        try:
            summary = runner.run(sc, work, realtime=realtime, record=record, rate_hz=rate, board=board, cpu=cpu,
                                 firmware=firmware,
                                 on_progress=lambda t: progress.update(task, completed=min(t, sc.duration_s)))
        except (runner.VirtualProbeError, FileExistsError) as e:
            raise click.ClickException(str(e)) from None
    return sc, summary


def _print_summary(summary) -> None:
    table = Table("", "", title="virtual probe session", show_header=False)
    table.add_row("device", summary.banner)
    table.add_row("samples", f"{summary.samples} ({summary.lost} lost)")
    rate = summary.samples / summary.last_device_s if summary.last_device_s else 0.0
    table.add_row("rate", f"{rate:.1f} samples/s of device time")
    table.add_row("wall time", f"{summary.wall_s:.1f} s for {summary.last_device_s:.1f} s of device time")
    for key, unit in (("needle_angle_deg", "deg"), ("depth_mm", "mm"), ("tip_depth_mm", "mm")):
        if key in summary.errors:
            table.add_row(f"RMS error, {key.rsplit('_', 1)[0].replace('_', ' ')}", f"{summary.errors[key]:.3f} {unit}")
    for line in summary.log:
        if line.startswith("# fault"):
            table.add_row("fault", line[2:])
    console.print(table)
    if summary.device_load:
        console.print(_device_load_table(summary.device_load))


def _device_load_table(load: dict) -> Table:
    # What a board would have had to do: the probe charged the firmware its compute, bus and flash time.
    table = Table("", "", title=f"device load on {load['board']} (cpu {load['cpu']})", show_header=False)
    cpu = load["cpu_fraction"]
    bus = load["bus_fraction"]
    style = "red" if cpu + bus >= 1 else ("yellow" if cpu + bus > 0.5 else "green")
    table.add_row("CPU", f"[{style}]{cpu:.3f} s per device second[/] (+ I2C {bus:.3f} s)")
    table.add_row("IMU samples processed", f"{load['imu_samples_processed_fraction'] * 100:.1f} %"
                  f" ({load['imu_samples_lost']} lost)")
    table.add_row("FIFO overruns", str(load["fifo_overruns"]))
    table.add_row("free heap, lowest", f"{load['heap_free_min_bytes']:,} B")
    if load.get("flash_s"):
        table.add_row("flash busy", f"{load['flash_s'] * 1000:.1f} ms")
    if load["cpu"] == "board":
        table.add_row("scale", f"{load['scale']:.1f} board us per host us")
    return table


@sim_group.command("run")
@click.argument("scenario_name", metavar="SCENARIO")
@click.option("--record", "record", type=click.Path(path_type=Path), help="Write the session recording here.")
@click.option("--realtime", is_flag=True, help="Pace the virtual probe by the host clock (live use).")
@click.option("--rate", default=200, show_default=True, help="Output sample rate configured on the device, Hz.")
@click.option("--workdir", type=click.Path(path_type=Path), help="Keep the virtual probe's files here.")
@BOARD_OPTION
@CPU_OPTION
@FIRMWARE_OPTION
def sim_run(scenario_name: str, record: Path | None, realtime: bool, rate: int, workdir: Path | None, board: str,
            cpu: str, firmware: Path | None) -> None:
    """Run SCENARIO (a library name or a JSON file) through the virtual probe to its end."""
    _, summary = _run_scenario(scenario_name, record, realtime, rate, workdir, board, cpu, firmware)
    _print_summary(summary)
    if record is not None:
        console.print(f"recording: {record}")


@sim_group.command("serve")
@click.argument("scenario_name", metavar="SCENARIO")
@click.option("--rate", default=200, show_default=True, help="Output sample rate configured on the device, Hz.")
@click.option("--workdir", type=click.Path(path_type=Path), help="The probe's files (flash, feeds) live here.")
@click.option("--keep-flash", is_flag=True, help="Boot the flash already in --workdir instead of a fresh one.")
@BOARD_OPTION
@CPU_OPTION
@FIRMWARE_OPTION
def sim_serve(scenario_name: str, rate: int, workdir: Path | None, keep_flash: bool, board: str, cpu: str,
              firmware: Path | None) -> None:
    """Keep a virtual probe up in real time, its scenario repeating, until Ctrl-C.

    Prints one line per way in, e.g. `serial: /dev/pts/5` for mpremote.
    """
    from needletrack.sim import scenario, serve
    from needletrack.sim.console import ConsoleError

    try:
        sc = scenario.load(scenario_name)
    except scenario.ScenarioError as e:
        raise click.ClickException(str(e)) from None
    work = workdir or Path(tempfile.mkdtemp(prefix="needletrack-serve-"))
    try:
        serve.serve(sc, work, rate_hz=rate, keep_flash=keep_flash, board=board, cpu=cpu, firmware=firmware)
    except ConsoleError as e:
        raise click.ClickException(str(e)) from None


@main.command("demo")
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("out/demo"), show_default=True)
@click.option("--scenario", "scenario_name", default="dry_needling", show_default=True)
@click.option("--seconds", type=float, default=None, help="How long to stream (default: one pass of the scenario).")
@click.option("--no-dicom", is_flag=True, help="Only the synthetic image stream, not the real DICOM cine.")
@BOARD_OPTION
@CPU_OPTION
def demo(out: Path, scenario_name: str, seconds: float | None, no_dicom: bool, board: str, cpu: str) -> None:
    """The main job on the built-in probe: the virtual probe plays a dry-needling session in real time over its
    radio; its needle is drawn live on synthetic B-mode frames and on a real ultrasound cine; the fused videos,
    screenshots, PLUS sequence files and the session recording go to OUT."""
    from needletrack import demo as demo_mod
    from needletrack import plots, recording

    result = demo_mod.run(out, scenario_name, seconds=seconds, dicom=None if no_dicom else demo_mod.DEMO_DICOM,
                          console=console, board=board, cpu=cpu)
    rec = recording.load(result.directory / "recording")
    png = plots.session_overview(rec, result.directory / "overview.png", f"{scenario_name}: streamed live")
    result.files["overview.png"] = png
    demo_mod.report(result, console)


def _register_groups() -> None:
    from needletrack.calibrate_commands import calibrate_group
    from needletrack.device_control import command_command, config_command
    from needletrack.flashing_cli import device_group, flash_command
    from needletrack.hil_cli import hil_command
    from needletrack.image_commands import image_group
    from needletrack.viewer.cli import view_command
    from needletrack.viewer.review_cli import review_command

    main.add_command(calibrate_group)
    main.add_command(review_command)
    main.add_command(hil_command)
    main.add_command(view_command)
    device_group.add_command(config_command)
    device_group.add_command(command_command)
    main.add_command(image_group)
    main.add_command(flash_command)
    main.add_command(device_group)


_register_groups()

if __name__ == "__main__":
    main()
