"""`needletrack demo`: a dry-needling session end to end, on the virtual probe, in real time.

::

    virtual probe (firmware on MicroPython, real time) ──radio──► Bumble host ──► Receiver (clock mapping)
                                                                                    │ samples
    synthetic B-mode (the scenario's true needle) ──┐                               ▼
    a real ultrasound cine (DICOM, pydicom-data) ───┴─► capture time ──► SampleHistory.state_at ──► overlay
                                                                                    │
                                  fused MP4, PLUS sequence file, screenshot, session recording ◄┘

Both image streams are live (delivered at their frame rate, stamped by the host clock); the needle on each
frame is the one of its capture time. The synthetic frames are made at the true scenario time of the probe, so
the drawn tip can be compared with the true tip: the demo prints that error, and the clock mapping's error
against the virtual device's true clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from pydicom.data import get_testdata_file
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from needletrack.frames.base import Frame, FrameSource
from needletrack.frames.dicom import DicomSource
from needletrack.frames.playback import Playback
from needletrack.frames.synthetic import SyntheticSource
from needletrack.fused_stream import FusedFrame, Fuser, Sink, fuse_live
from needletrack.fusion import NoGo, SampleHistory
from needletrack.geometry import Calibration, from_region, tip_px
from needletrack.link.bumble_link import BumbleLink
from needletrack.receiver import Receiver, Timed
from needletrack.recording import RecordingWriter
from needletrack.sim import scenario, serve
from needletrack.sim.scenario import Scenario
from needletrack.sinks import SequenceSink, SnapshotSink, VideoSink
from needletrack.stream_session import StreamSession

DEMO_DICOM = "color3d_jpeg_baseline.dcm"  # a 120-frame ultrasound cine at 30 fps, with ultrasound regions
SYNTHETIC_FPS = 25.0


@dataclass
class TipErrors:
    """The drawn tip against the true tip of each synthetic frame, in mm in the image."""

    errors_mm: list[float] = field(default_factory=list)
    unknown: int = 0  # frames drawn without a needle (no state, stale or NA)

    def rms(self) -> float:
        return float(np.sqrt(np.mean(np.square(self.errors_mm)))) if self.errors_mm else math.nan


class TipErrorSink:
    def __init__(self, source: SyntheticSource, errors: TipErrors) -> None:
        self.source = source
        self.errors = errors

    def write(self, fused: FusedFrame) -> None:
        s = fused.state
        if s is None or s.depth_mm is None or s.guide_angle_deg is None or s.age_s > 0.1:
            self.errors.unknown += 1
            return
        truth = self.source.truth(fused.frame.index % self.source.frame_count)
        drawn = tip_px(self.source.calibration, s.depth_mm, s.guide_angle_deg)
        mm = self.source.mm_per_px
        self.errors.errors_mm.append(math.dist(drawn, truth.tip_px) * mm)

    def close(self) -> None:
        pass


@dataclass
class DemoResult:
    directory: Path
    files: dict[str, Path]
    receiver: Receiver
    tip: TipErrors
    clock_errors_ms: list[float]
    frames: dict[str, int]
    wall_s: float
    board: str = "xiao_esp32s3"  # the board the virtual probe was
    cpu: str = "board"  # whether the board's compute, bus and flash time were charged
    rate_hz: int = 200  # the output rate the probe was configured for


def _synthetic_live(src: SyntheticSource, epoch: float, first: int, count: int) -> Iterator[Frame]:
    """The probe's scenario imaged live: frame j shows scenario time (first + j) / fps (the scenario repeats on
    the served probe), delivered and stamped at the host time the device clock reaches it."""
    for j in range(count):
        k = first + j
        due = epoch + k / src.fps
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        frame = src.frame(k % src.frame_count)
        yield replace(frame, time_s=due, index=k)


def dicom_calibration(source: DicomSource, size: tuple[int, int]) -> Calibration:
    if source.region is None:
        raise ValueError(f"{source.path}: no ultrasound region to calibrate from")
    return from_region(source.region, probe_model=f"{source.path.name} (pydicom-data)", image_size=size)


def _tip_score(fused: FusedFrame) -> float | None:
    # The screenshot: the deepest fresh tip, which in the dry-needling scenario is at the no-go depth.
    s = fused.state
    if s is None or s.age_s > 0.1 or s.tip_depth_mm is None:
        return None
    return s.tip_depth_mm


async def _session(probe: serve.ServedProbe, sc: Scenario, out: Path, seconds: float, dicom: str | None,
                   progress: Progress) -> DemoResult:
    t0 = time.monotonic()
    rx = Receiver()
    history = SampleHistory()
    clock_errors: list[float] = []
    recording = RecordingWriter(out / "recording", {"device": "virtual probe", "transport": probe.transport,
                                                    "scenario": sc.to_json(), "host_clock": "time.monotonic"})
    epoch: list[float | None] = [None]
    open_ = [True]

    def on_samples(batch: list[Timed]) -> None:
        if not open_[0]:
            return  # notifications still on their way after the session ended
        history.add(batch)
        for t in batch:
            recording.add_sample(t.sample, t.device_s, t.host_s)
            if epoch[0] is not None:
                clock_errors.append((t.host_s - (epoch[0] + t.device_s)) * 1e3)

    files: dict[str, Path] = {}
    frames: dict[str, int] = {}
    tip = TipErrors()
    stop = asyncio.Event()
    task = progress.add_task("connecting to the probe over its radio", total=None)
    async with BumbleLink(probe.transport) as link:
        session = StreamSession(link, rx, on_samples=on_samples)
        await session.connect()
        epoch[0] = probe.console.device_epoch()
        if epoch[0] is None:
            raise RuntimeError("the virtual probe did not report its clock")
        streaming = asyncio.create_task(session.run(stop))
        nogo = NoGo(sc.nogo_depth_mm)

        syn = SyntheticSource(sc, fps=SYNTHETIC_FPS, size=(640, 480))
        first = math.ceil((time.monotonic() + 0.3 - epoch[0]) * syn.fps)
        count = round(seconds * syn.fps)
        syn_sinks: list[Sink] = [
            VideoSink(out / "fused_synthetic.mp4", syn.size, syn.fps),
            SequenceSink(out / "synthetic.seq.mha", syn.calibration),
            SnapshotSink(out / "screenshot_synthetic.png", _tip_score),
            TipErrorSink(syn, tip),
        ]
        jobs = [fuse_live(_synthetic_live(syn, epoch[0], first, count), Fuser(history, syn.calibration, nogo=nogo),
                          syn_sinks, stop)]
        sinks = list(syn_sinks)
        if dicom is not None:
            path = get_testdata_file(dicom, download=False)
            if not isinstance(path, str):
                raise FileNotFoundError(f"{dicom} is not installed (pip install pydicom-data)")
            progress.update(task, description=f"decoding {dicom}")
            source = DicomSource(path)
            cine: FrameSource = await asyncio.to_thread(Playback, source, seconds=seconds)
            size = source.size
            cal = dicom_calibration(source, size)
            fps = 1.0 / float(np.median(np.diff(source.times_s))) if source.frame_count > 1 else 30.0
            dcm_sinks: list[Sink] = [
                VideoSink(out / "fused_dicom.mp4", size, fps),
                SequenceSink(out / "dicom.seq.mha", cal),
                SnapshotSink(out / "screenshot_dicom.png", _tip_score),
            ]
            jobs.append(fuse_live(cine.frames(), Fuser(history, cal, nogo=nogo), dcm_sinks, stop))
            sinks += dcm_sinks
        progress.update(task, description=f"{sc.name}: live, {len(jobs)} image streams", total=seconds,
                        completed=0)

        async def tick() -> None:
            start = time.monotonic()
            while not stop.is_set():
                progress.update(task, completed=min(time.monotonic() - start, seconds))
                await asyncio.sleep(0.2)

        ticker = asyncio.create_task(tick())
        try:
            counts = await asyncio.gather(*jobs)
        finally:
            stop.set()
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await streaming
            open_[0] = False
            for sink in sinks:
                sink.close()
            recording.close(samples_lost=rx.lost, reconnects=session.reconnects)
    frames["synthetic"] = counts[0]
    if dicom is not None:
        frames["dicom"] = counts[1]
    for name in ("fused_synthetic.mp4", "fused_dicom.mp4", "synthetic.seq.mha", "dicom.seq.mha",
                 "screenshot_synthetic.png", "screenshot_dicom.png", "recording"):
        if (out / name).exists():
            files[name] = out / name
    return DemoResult(out, files, rx, tip, clock_errors, frames, time.monotonic() - t0)


def run(out: Path, scenario_name: str = "dry_needling", *, seconds: float | None = None,
        dicom: str | None = DEMO_DICOM, console: Console | None = None, board: str = "xiao_esp32s3",
        cpu: str = "board") -> DemoResult:
    """Serve the scenario's probe, stream and fuse it live for `seconds` (default: one pass of the scenario).
    board and cpu: the board the virtual probe is, and whether its compute, bus and flash time are charged."""
    console = console or Console()
    sc = scenario.load(scenario_name)
    session_dir = out / time.strftime("session-%Y%m%d-%H%M%S")
    session_dir.mkdir(parents=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(), console=console,
                  transient=True) as progress:
        boot = progress.add_task("booting the virtual probe (firmware on MicroPython)", total=None)
        with serve.served(sc, session_dir / "virtual-probe", board=board, cpu=cpu) as probe:
            progress.remove_task(boot)
            result = asyncio.run(_session(probe, sc, session_dir, seconds or sc.duration_s, dicom, progress))
    return replace(result, board=board, cpu=cpu)


def report(result: DemoResult, console: Console) -> None:
    rx = result.receiver
    t = Table(title="NeedleTrack demo: the virtual probe in real time, fused with ultrasound frames",
              show_header=False)
    t.add_row("virtual probe", f"{result.board}, its compute, I2C and flash time "
              + ("charged as on the board" if result.cpu == "board" else "free (--cpu ideal)"))
    t.add_row("samples", f"{rx.samples} received, {rx.lost} lost, {rx.rate_hz:.1f}/s")
    if rx.rate_hz < 0.95 * result.rate_hz:
        t.add_row("", f"[red]the firmware does not keep its {result.rate_hz} samples/s on this board[/]"
                  + (" (--cpu ideal runs it with compute free)" if result.cpu == "board" else ""))
    if result.clock_errors_ms:
        e = np.array(result.clock_errors_ms[len(result.clock_errors_ms) // 10:])
        t.add_row("clock mapping", f"{np.sqrt(np.mean(e**2)):.2f} ms RMS vs the device's true clock "
                                   f"(max {np.abs(e).max():.2f} ms)")
    tip = result.tip
    t.add_row("drawn tip vs true tip", f"{tip.rms():.2f} mm RMS, max "
              f"{max(tip.errors_mm, default=math.nan):.2f} mm over {len(tip.errors_mm)} synthetic frames"
              + (f" ({tip.unknown} without a needle)" if tip.unknown else ""))
    t.add_row("frames fused", ", ".join(f"{k} {v}" for k, v in result.frames.items()))
    t.add_row("wall time", f"{result.wall_s:.0f} s")
    console.print(t)
    console.print(f"[bold green]output:[/] {result.directory}")
    what = {
        "fused_synthetic.mp4": "fused video, synthetic B-mode with the true needle echo",
        "fused_dicom.mp4": "fused video on a real ultrasound cine (DICOM)",
        "screenshot_synthetic.png": "screenshot: the deepest pass",
        "screenshot_dicom.png": "screenshot on the real cine",
        "synthetic.seq.mha": "PLUS sequence for 3D Slicer: images, needle tip, times",
        "dicom.seq.mha": "PLUS sequence file of the real cine",
        "recording": "session recording (samples.csv, events.csv, session.json)",
        "overview.png": "plot of the session: angle, depth, events",
    }
    for name in result.files:
        console.print(f"  {name:26} {what.get(name, '')}")
