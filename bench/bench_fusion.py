"""Fusion with ultrasound frames: host pipeline speed, end-to-end tip accuracy, video latency calibration.

1. Host pipeline per frame at 640x480 and 1920x1080 (synthetic B-mode frames made beforehand, samples at
   1000/s in the history): interpolation at the capture time + overlay, then the same plus MP4 encoding in a
   second thread (as the live pipeline runs it). Prints frames per second and the frame-arrival to
   overlay-ready time (median, 95th percentile). Targets: >= 120 fps at 640x480, >= 40 fps at 1080p, <= 5 ms
   median at 1080p.
2. End to end on the virtual probe in real time: a pistoning needle with the probe fanning and rocking; radio,
   clock mapping, interpolation at each frame's capture time, overlay. The drawn tip against the true tip of
   every frame. Targets: <= 0.5 mm RMS, <= 1.5 mm max.
3. Video latency calibration (docs/latency.md): frames stamped 80 ms after they were formed; the estimate
   against the injected latency. Target: within 5 ms.

    .venv/bin/python bench/bench_fusion.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from needletrack import demo
from needletrack.frames.synthetic import SyntheticSource
from needletrack.fused_stream import Fuser
from needletrack.fused_video import FusedVideoWriter
from needletrack.fusion import NoGo, SampleHistory
from needletrack.protocol import Flag, Sample
from needletrack.receiver import Timed
from needletrack.sim import scenario

# The host's pipeline is measured against a probe that holds its rate (compute, bus and flash free); what
# the firmware costs each board is bench_board_load.py's.
PROBE_CPU = "ideal"

console = Console()

MOVING = {
    "name": "pistoning_while_fanning",
    "description": "Pistoning passes 5-35 mm while the probe fans +-15 deg and rocks +-8 deg.",
    "duration_s": 20.0, "seed": 21, "guide_angle_deg": 30.0, "needle_length_mm": 60.0, "nogo_depth_mm": 18.0,
    "attitude": [[0, 0, 0, 0], [3, 0, 15, 5], [6, 0, -15, -8], [9, 0, 10, 8], [12, 0, -10, -5],
                 [15, 0, 15, 0], [18, 0, -5, 5], [20, 0, 0, 0]],
    "depth": [[0, 5.0], [2, 30.0], [3.5, 12.0], [5, 35.0], [6.5, 8.0], [8, 28.0], [9.5, 15.0], [11, 33.0],
              [12.5, 6.0], [14, 30.0], [15.5, 10.0], [17, 25.0], [18.5, 8.0], [20, 5.0]],
}


def _history(sc: scenario.Scenario, rate: float = 1000.0) -> SampleHistory:
    h = SampleHistory(capacity=int(sc.duration_s * rate) + 10)
    batch = []
    for i, t in enumerate(np.arange(0.0, sc.duration_s, 1.0 / rate)):
        d = float(sc.depth_at(t))
        s = Sample(i & 0xFFFF, int(t * 1e6), 40.0, sc.guide_angle_deg, d, d * 0.5, 0.0, 0.0, Flag(0))
        batch.append(Timed(s, float(t), float(t)))
    h.add(batch)
    return h


def pipeline(size: tuple[int, int], frames: int, tmp: Path) -> dict[str, float]:
    sc = scenario.parse(MOVING)
    src = SyntheticSource(sc, fps=30.0, size=size)
    images = [src.frame(i) for i in range(min(frames, 60))]
    history = _history(sc)
    fuser = Fuser(history, src.calibration, nogo=NoGo(sc.nogo_depth_mm))
    # interpolation + overlay only
    ready = []
    t0 = time.perf_counter()
    for k in range(frames):
        frame = images[k % len(images)]
        t_in = time.perf_counter()
        fuser.fuse(frame)
        ready.append(time.perf_counter() - t_in)
    overlay_fps = frames / (time.perf_counter() - t0)
    # + encoding in a second thread, as fuse_live hands frames to the sinks
    work: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=8)
    writer = FusedVideoWriter(tmp / f"bench_{size[0]}x{size[1]}.mp4", size, 30.0)

    def encode() -> None:
        while (img := work.get()) is not None:
            writer.write(img)

    worker = threading.Thread(target=encode)
    worker.start()
    t0 = time.perf_counter()
    for k in range(frames):
        work.put(fuser.fuse(images[k % len(images)]).image)
    work.put(None)
    worker.join()
    writer.close()
    full_fps = frames / (time.perf_counter() - t0)
    r = np.array(ready) * 1e3
    return {"overlay_fps": overlay_fps, "full_fps": full_fps, "ready_med_ms": float(np.median(r)),
            "ready_p95_ms": float(np.percentile(r, 95))}


def end_to_end(seconds: float, tmp: Path) -> demo.DemoResult:
    path = tmp / "moving.json"
    path.write_text(json.dumps(MOVING))
    return demo.run(tmp / "e2e", str(path), seconds=seconds, dicom=None, console=console, cpu=PROBE_CPU)


def latency_end_to_end(seconds: float, injected_s: float, tmp: Path) -> tuple[object, float]:
    """The probe streams the moving scenario over its radio; synthetic frames of the same instants are stamped
    `injected_s` late, as a grabber would deliver them; the calibration estimates the lag from the two. Returns
    the estimate and the link's own minimum latency (measured against the device's true clock), which the lag
    found includes with the opposite sign."""
    import asyncio

    from needletrack.latency import calibrate_latency
    from needletrack.link.bumble_link import BumbleLink
    from needletrack.receiver import Receiver
    from needletrack.sim import serve
    from needletrack.stream_session import StreamSession

    sc = scenario.parse(MOVING)
    samples: list[tuple[float, float]] = []
    link_bias: list[float] = []

    with serve.served(sc, tmp / "latency-probe", cpu=PROBE_CPU) as probe:
        async def run() -> object:
            stop = asyncio.Event()
            async with BumbleLink(probe.transport) as link:
                epoch = probe.console.device_epoch()
                assert epoch is not None

                def on_samples(batch: list[Timed]) -> None:
                    for t in batch:
                        if t.sample.depth_mm is not None:
                            samples.append((t.host_s, t.sample.depth_mm))
                        link_bias.append(t.host_s - (epoch + t.device_s))

                session = StreamSession(link, Receiver(), on_samples=on_samples)
                await session.connect()
                task = asyncio.create_task(session.run(stop))
                src = SyntheticSource(sc, fps=25.0, size=(640, 480))
                first = int((time.monotonic() + 0.2 - epoch) * src.fps) + 1
                frames = demo._synthetic_live(src, epoch, first, round(seconds * src.fps))
                late = (replace(f, time_s=f.time_s + injected_s) for f in frames)
                est = await asyncio.to_thread(calibrate_latency, late, samples, src.calibration,
                                              sc.guide_angle_deg, console=console)
                stop.set()
                await task
                return est

        est = asyncio.run(run())
    return est, float(np.median(link_bias[len(link_bias) // 4:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="end-to-end streaming time")
    ap.add_argument("--frames", type=int, default=300, help="frames per pipeline measurement")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t = Table(title="Host pipeline per frame (interpolate + overlay [+ MP4 encode in a second thread])")
        for col in ("size", "interp + overlay", "+ encode", "arrival -> overlay ready (median / 95 %)"):
            t.add_column(col, justify="right")
        results = {}
        for size, target_fps in (((640, 480), 120.0), ((1920, 1080), 40.0)):
            r = pipeline(size, args.frames, tmp)
            results[size] = r
            t.add_row(f"{size[0]}x{size[1]}", f"{r['overlay_fps']:.0f} fps", f"{r['full_fps']:.0f} fps "
                      f"(target >= {target_fps:.0f})", f"{r['ready_med_ms']:.2f} / {r['ready_p95_ms']:.2f} ms")
        console.print(t)
        hd = results[(1920, 1080)]
        console.print(f"  1080p: {hd['full_fps']:.0f} fps with encoding, overlay ready {hd['ready_med_ms']:.2f} ms "
                      f"median (target <= 5 ms): "
                      + ("[green]met[/]" if hd["full_fps"] >= 40 and hd["ready_med_ms"] <= 5 else "[red]missed[/]"))
        sd = results[(640, 480)]
        console.print(f"  640x480: {sd['full_fps']:.0f} fps with encoding: "
                      + ("[green]met[/]" if sd["full_fps"] >= 120 else "[red]missed[/]"))

        e2e = end_to_end(args.seconds, tmp)
        tip = e2e.tip
        clock = np.array(e2e.clock_errors_ms[len(e2e.clock_errors_ms) // 10:])
        console.print(f"End to end ({MOVING['description']}): drawn tip vs true tip {tip.rms():.3f} mm RMS, "
                      f"max {max(tip.errors_mm):.3f} mm over {len(tip.errors_mm)} frames "
                      f"({tip.unknown} without a needle); {e2e.receiver.samples} samples, {e2e.receiver.lost} lost; "
                      f"clock mapping {statistics.fmean(clock):+.2f} ms vs the device's true clock: "
                      + ("[green]met[/]" if tip.rms() <= 0.5 and max(tip.errors_mm) <= 1.5 else "[red]missed[/]"))

        injected = 0.080
        est, bias = latency_end_to_end(min(args.seconds, 12.0), injected, tmp)
        lag = getattr(est, "lag_s", None)
        console.print(f"Video latency calibration, {injected * 1e3:.0f} ms injected: {est.summary()}")  # type: ignore[attr-defined]
        if lag is not None:
            err = lag - injected
            console.print(f"  error {err * 1e3:+.1f} ms (target within 5 ms); the link's own minimum latency "
                          f"{bias * 1e3:+.1f} ms is part of it: "
                          + ("[green]met[/]" if abs(err) <= 0.005 else "[red]missed[/]"))


if __name__ == "__main__":
    main()
