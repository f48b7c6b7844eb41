"""`needletrack calibrate image|image-dicom|latency`: the calibrations measured with the probe and the image.

``image`` and ``image-dicom`` are the image calibrations of ``needletrack image`` (two clicked needle tips; a
DICOM's ultrasound regions). ``latency`` streams the probe while reading frames, and finds the video latency
from the needle's motion in both (docs/latency.md). The group is added to the main command by cli.py.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

import click
import numpy as np
from rich.console import Console

from needletrack.image_commands import image_group

console = Console()
_TRANSPORT_HELP = "as for `needletrack stream`: os, a Bumble transport (usb:0, tcp-client:...), console:PORT"


@click.group("calibrate")
def calibrate_group() -> None:
    """Calibrations measured with the probe and the ultrasound image."""


calibrate_group.add_command(image_group.commands["calibrate"], name="image")
calibrate_group.add_command(image_group.commands["calibrate-dicom"], name="image-dicom")


class _LinkThread:
    """The probe streaming in a thread of its own, its (host time, depth) samples appended to a list that the
    calibration reads once its frames are in."""

    def __init__(self, transport: str, address: str | None) -> None:
        self.transport = transport
        self.address = address
        self.samples: list[tuple[float, float]] = []
        self.angles: list[float] = []
        self.connected = threading.Event()
        self.quit = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="needle-link", daemon=True)

    def _on_samples(self, batch: list) -> None:  # list[Timed]
        for t in batch:
            if t.sample.depth_mm is not None:
                self.samples.append((t.host_s, t.sample.depth_mm))
            if t.sample.guide_angle_deg is not None:
                self.angles.append(t.sample.guide_angle_deg)

    async def _stream(self) -> None:
        from needletrack.link import open_link
        from needletrack.receiver import Receiver
        from needletrack.stream_session import StreamSession

        stop = asyncio.Event()
        async with open_link(self.transport) as link:
            session = StreamSession(link, Receiver(), address=self.address, on_samples=self._on_samples)
            await session.connect()
            self.connected.set()
            task = asyncio.create_task(session.run(stop))
            while not self.quit.is_set() and not task.done():
                await asyncio.sleep(0.05)
            stop.set()
            await task

    def _run(self) -> None:
        try:
            asyncio.run(self._stream())
        except BaseException as e:  # reported on the main thread
            self.failure = e
        finally:
            self.connected.set()

    def __enter__(self) -> _LinkThread:
        self.thread.start()
        self.connected.wait(30.0)
        if self.failure is not None or not self.thread.is_alive():
            raise click.ClickException(f"no probe streaming on {self.transport}: {self.failure or 'timed out'}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.quit.set()
        self.thread.join(5.0)

    def guide_angle(self, wait_s: float = 2.0) -> float | None:
        deadline = time.monotonic() + wait_s
        while not self.angles and time.monotonic() < deadline:
            time.sleep(0.05)
        return float(np.median(self.angles)) if self.angles else None


@calibrate_group.command("latency")
@click.option("--frames", "frames_spec", required=True,
              help="The frame source to calibrate: capture:N, igtl:HOST:PORT[/DEVICE], video:PATH, ...")
@click.option("--transport", "-t", default="os", show_default=True, help=_TRANSPORT_HELP)
@click.option("--device", default=None, help="Probe address (default: the first found).")
@click.option("--probe-model", default=None, help="The stored image calibration of these frames.")
@click.option("--guide-angle", type=float, default=None, help="Guide angle, deg (default: as the probe reports).")
@click.option("--seconds", type=float, default=12.0, show_default=True, help="Seconds of frames to read.")
@click.option("--search", nargs=2, type=float, default=(-0.1, 0.5), show_default=True, help="Lag range, s.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write the match plot (PNG).")
def latency_command(frames_spec: str, transport: str, device: str | None, probe_model: str | None,
                    guide_angle: float | None, seconds: float, search: tuple[float, float],
                    plot: Path | None) -> None:
    """Measure the frame source's video latency: move the needle in and out, 10 mm or more, for about 10 s
    while the probe streams. Prints the lag (give it to stream/record as --latency) and its confidence, or why
    none can be given."""
    from needletrack.frames import FrameSourceError, open_source
    from needletrack.frames.synthetic import SyntheticSource
    from needletrack.geometry import CalibrationError, CalibrationStore
    from needletrack.latency import calibrate_latency

    try:
        cal = CalibrationStore().load(probe_model) if probe_model else None
        src = open_source(frames_spec, calibration=cal)
    except (FrameSourceError, CalibrationError) as e:
        raise click.ClickException(str(e)) from None
    if isinstance(src, SyntheticSource):
        src.realtime, src.start_s = True, time.monotonic()
        cal = src.calibration
    if cal is None:
        src.close()
        raise click.ClickException("no image calibration for these frames: give --probe-model "
                                   "(needletrack calibrate image)")
    with _LinkThread(transport, device) as link, src:
        angle = guide_angle if guide_angle is not None else link.guide_angle()
        if angle is None:
            raise click.ClickException("the probe reports no guide angle: give --guide-angle")
        console.print(f"move the needle in and out, 10 mm or more, for {seconds:g} s")
        est = calibrate_latency(src, link.samples, cal, angle, seconds=seconds, search_s=search, plot=plot,
                                console=console)
    console.print(est.summary())
    if plot is not None:
        console.print(f"plot: {plot}")
    if not est.ok:
        sys.exit(1)
