"""`needletrack view`: the live viewer for the clinician."""

from __future__ import annotations

from pathlib import Path

import click

_TRANSPORT_HELP = ("os (this computer's Bluetooth, via bleak), a Bumble transport such as usb:0 or the virtual "
                   "probe's tcp-client:127.0.0.1:PORT, or console:PORT for a board's serial console")


@click.command("view")
@click.argument("device", required=False)
@click.option("--transport", "-t", default="os", show_default=True, help=_TRANSPORT_HELP)
@click.option("--frames", "frames_spec", default=None, metavar="SOURCE",
              help="Ultrasound frames to draw the needle on: capture:0, video:FILE, dicom:FILE, igtl:HOST:PORT, "
                   "synthetic:SCENARIO (default: none, readouts and charts only).")
@click.option("--probe-model", default=None,
              help="The stored image calibration to place the needle with (needletrack image calibrate).")
@click.option("--latency", "video_latency_s", type=float, default=0.0, show_default=True,
              help="Video latency of the frame source, s (needletrack calibrate latency measures it).")
@click.option("--nogo", "nogo_mm", type=float, default=None,
              help="No-go tip depth, mm below the transducer face: drawn, and warned about.")
@click.option("--nogo-margin", "nogo_margin_mm", type=float, default=5.0, show_default=True,
              help="Warn this many mm before the no-go depth.")
@click.option("--record-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where recordings go, one new directory each (default: ~/NeedleTrack/recordings).")
@click.option("--fullscreen", is_flag=True, help="Start in full screen (F11 toggles it).")
def view_command(device: str | None, transport: str, frames_spec: str | None, probe_model: str | None,
                 video_latency_s: float, nogo_mm: float | None, nogo_margin_mm: float, record_dir: Path | None,
                 fullscreen: bool) -> None:
    """The live viewer: the needle on the ultrasound image, large readouts, strip charts, alerts, recording.

    DEVICE: the probe's address, connected to at once (default: connect from the window, C).
    """
    from needletrack.frames import FrameSourceError
    from needletrack.fusion import NoGo
    from needletrack.geometry import CalibrationError
    from needletrack.viewer.app import run
    from needletrack.viewer.engine import LiveEngine
    from needletrack.viewer.frame_feed import open_feed

    if nogo_margin_mm < 0:
        raise click.BadParameter("the margin is a distance, 0 or more", param_hint="--nogo-margin")
    feed = None
    if frames_spec is not None:
        try:
            feed = open_feed(frames_spec, probe_model=probe_model, video_latency_s=video_latency_s)
        except (CalibrationError, FrameSourceError, OSError, ValueError) as e:
            raise click.ClickException(str(e)) from None
    engine = LiveEngine(transport, address=device, feed=feed, nogo=NoGo(nogo_mm, nogo_margin_mm),
                        record_root=record_dir)
    raise SystemExit(run(engine, fullscreen=fullscreen, connect=device is not None))
