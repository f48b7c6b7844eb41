"""The viewer's display rate and latency: 1080p frames at 30 frames/s fused live with a virtual probe at 1000
samples/s, shown by the real window (offscreen) at 1920x1080.

    .venv/bin/python bench/bench_viewer.py [--seconds 20] [--soak-minutes 30]

The probe is the virtual one, served in real time at 1000 samples/s over its radio (the firmware on MicroPython,
the Bumble stack) by `needletrack sim serve` in a process of its own: the engine receives, maps, charts and fuses
exactly as with a real probe, and the probe's radio bridge and console relay (Python threads) do not compete for
the viewer's interpreter, as a real probe's radio does not. The frames are 60 synthetic B-mode images of the
dry_needling scenario at 1920x1080, made once and then delivered at 30 frames/s and stamped on arrival, as a
frame grabber delivers them: making speckle costs 24 ms a 1080p frame here, a cost a grabber does not put on
the host, and on this 2-core machine it would be the benchmark's own load.

Printed: frames delivered and displayed per second (target: every frame, >= 30/s); the engine's latency, frame
arrival to overlay drawn; the display latency, frame arrival to painted in the window (a real screen adds its
refresh wait, up to 17 ms at 60 Hz); the time a refresh takes; the samples received. With --soak-minutes, a soak:
the process's resident memory and the latencies minute by minute (target: memory growth < 5 % from the end of
minute 5, when the sample history, the charts and the allocator's pools have filled, to the end; latency steady).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
from PySide6.QtCore import QEventLoop, QTimer
from PySide6.QtWidgets import QApplication

from needletrack.frames.base import Frame, FrameSource
from needletrack.frames.synthetic import SyntheticSource
from needletrack.fusion import NoGo
from needletrack.sim import scenario
from needletrack.viewer import theme as th
from needletrack.viewer.engine import LiveEngine
from needletrack.viewer.frame_feed import FrameFeed
from needletrack.viewer.main_window import MainWindow
from needletrack.viewer.snapshot import Phase, Snapshot

SIZE = (1920, 1080)
FPS = 30.0
RATE_HZ = 1000
FRAMES = 60
WARM_MINUTES = 5


class GrabberLike(FrameSource):
    """Pre-made frames delivered at ``fps``, each stamped with its arrival time, for as long as it is read."""

    def __init__(self, images: list[np.ndarray], spacing: float, fps: float) -> None:
        self.images = images
        self.spacing = spacing
        self.fps = fps
        self.name = f"grabber-like {images[0].shape[1]}x{images[0].shape[0]}"

    def frames(self) -> Iterator[Frame]:
        start = time.monotonic()
        k = 0
        while True:
            wait = start + k / self.fps - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            yield Frame(self.images[k % len(self.images)], time.monotonic(), (self.spacing, self.spacing), None,
                        self.name, k)
            k += 1


@contextmanager
def served_elsewhere(work: Path, rate_hz: int) -> Iterator[str]:
    """`needletrack sim serve dry_needling --rate RATE --cpu ideal` in a child process (the viewer is measured
    against a probe that holds its rate); yields its radio transport."""
    proc = subprocess.Popen([sys.executable, "-m", "needletrack.cli", "sim", "serve", "dry_needling", "--rate",
                             str(rate_hz), "--workdir", str(work), "--cpu", "ideal"], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("radio: "):
                yield line.removeprefix("radio: ").strip()
                return
        raise RuntimeError(f"the virtual probe did not start (exit code {proc.wait()})")
    finally:
        proc.terminate()
        proc.wait(10)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


class Meter:
    """What the window shows, measured from inside it."""

    def __init__(self, engine: LiveEngine, window: MainWindow) -> None:
        self.engine, self.window = engine, window
        self.engine_ms: list[float] = []
        self.refresh_ms: list[float] = []
        self.delivered_first: int | None = None
        self.last_index = -1
        self.snap: Snapshot | None = None
        take, refresh = engine.snapshot, window.refresh

        def snapshot() -> Snapshot:
            s = take()
            if s.frame_index != self.last_index and s.frame_ready_s is not None and s.frame_time_s is not None:
                self.last_index = s.frame_index
                self.engine_ms.append((s.frame_ready_s - s.frame_time_s) * 1e3)
            self.snap = s
            return s

        def timed_refresh() -> None:
            t = time.perf_counter()
            refresh()
            self.refresh_ms.append((time.perf_counter() - t) * 1e3)

        engine.snapshot = snapshot  # type: ignore[method-assign]
        window.timer.timeout.disconnect()
        window.timer.timeout.connect(timed_refresh)

    def reset(self) -> None:
        self.engine_ms.clear()
        self.refresh_ms.clear()
        self.window.image.latencies_s.clear()


def run_for(app: QApplication, seconds: float) -> None:
    # A local loop: QApplication.quit() would close the window (Qt 6 closes every window on quit).
    loop = QEventLoop()
    QTimer.singleShot(round(seconds * 1000), loop.quit)
    loop.exec()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="measured time after a 3 s warm-up")
    ap.add_argument("--soak-minutes", type=float, default=0.0, help="also run a soak this long (e.g. 30)")
    ap.add_argument("--rate", type=int, default=RATE_HZ, help="the probe's output rate, samples/s")
    ap.add_argument("--nogo", type=float, default=17.0, help="no-go depth drawn, mm (0: none)")
    args = ap.parse_args()

    app = QApplication.instance() or QApplication(sys.argv[:1])
    sc = scenario.load("dry_needling")
    synthetic = SyntheticSource(sc, size=SIZE, fps=FPS)
    images = [synthetic.frame(round(i * synthetic.frame_count / FRAMES)).image for i in range(FRAMES)]
    feed = FrameFeed(GrabberLike(images, synthetic.mm_per_px, FPS), synthetic.calibration, fps=FPS)
    print(f"frames: {FRAMES} synthetic B-mode images {SIZE[0]}x{SIZE[1]}, delivered at {FPS:g}/s; "
          f"probe: virtual, {args.rate} samples/s over its radio; no-go depth {args.nogo or 'none'}")
    with tempfile.TemporaryDirectory() as work, served_elsewhere(Path(work) / "probe", args.rate) as transport:
        engine = LiveEngine(transport, feed=feed, nogo=NoGo(args.nogo or None),
                            record_root=Path(work) / "rec").start()
        window = MainWindow(engine, theme=th.Theme(1.0))
        window.resize(*SIZE)
        window.show()
        meter = Meter(engine, window)
        engine.connect().result(15)
        run_for(app, 3.0)  # warm-up: the clock mapping settles, the first frames go through
        meter.reset()
        shown0, t0 = window.image.frames_shown, time.monotonic()
        index0 = meter.snap.frame_index if meter.snap else 0
        samples0 = meter.snap.link.samples if meter.snap else 0
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        run_for(app, args.seconds)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.monotonic() - t0
        snap = meter.snap
        assert snap is not None
        shown = window.image.frames_shown - shown0
        delivered = snap.frame_index - index0
        display_ms = [v * 1e3 for v in window.image.latencies_s]
        cpu = (cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime) / wall
        print(f"measured {wall:.1f} s, link {snap.link.phase.value}, {snap.link.rate_hz:.0f} samples/s of device "
              f"time, {(snap.link.samples - samples0) / wall:.0f} received/s, {snap.link.lost} lost")
        print(f"frames fused        {delivered / wall:6.2f} /s")
        print(f"frames displayed    {shown / wall:6.2f} /s  ({shown} of {delivered} fused; target >= 30/s)")
        print(f"engine latency      arrival -> overlay drawn: median {pct(meter.engine_ms, 50):.1f} ms, "
              f"95th {pct(meter.engine_ms, 95):.1f} ms, max {max(meter.engine_ms, default=float('nan')):.1f} ms")
        print(f"display latency     arrival -> painted: median {pct(display_ms, 50):.1f} ms, "
              f"95th {pct(display_ms, 95):.1f} ms, max {max(display_ms, default=float('nan')):.1f} ms")
        print(f"refresh             median {pct(meter.refresh_ms, 50):.2f} ms, 95th {pct(meter.refresh_ms, 95):.2f} "
              f"ms per tick (every {window.timer.interval()} ms)")
        print(f"viewer process CPU  {100 * cpu:.0f} % of one core (the probe's MicroPython process not included)")
        if args.soak_minutes > 0:
            soak(app, meter, window, args.soak_minutes)
        window.close()
        engine.close()


def soak(app: QApplication, meter: Meter, window: MainWindow, minutes: float) -> None:
    """Minute by minute: resident memory, latencies, frames shown. Growth is judged from the end of minute
    WARM_MINUTES, once the sample history, the charts and the allocator's pools have filled."""
    print(f"soak: {minutes:g} min")
    rows: list[tuple[int, float, float, float, float, float]] = []
    for minute in range(1, int(np.ceil(minutes)) + 1):
        meter.reset()
        shown0, t0 = window.image.frames_shown, time.monotonic()
        run_for(app, 60.0)
        wall = time.monotonic() - t0
        snap = meter.snap
        display_ms = [v * 1e3 for v in window.image.latencies_s]
        phase = snap.link.phase if snap is not None else Phase.IDLE
        rows.append((minute, rss_mb(), pct(meter.engine_ms, 50), pct(display_ms, 50), pct(display_ms, 95),
                     (window.image.frames_shown - shown0) / wall))
        _, rss, engine, median, p95, fps = rows[-1]
        print(f"  min {minute:3d}  RSS {rss:7.1f} MB  engine {engine:5.1f} ms  display median {median:5.1f} ms, "
              f"95th {p95:5.1f} ms  {fps:5.2f} frames/s  link {phase.value}", flush=True)
    warm = min(WARM_MINUTES, len(rows)) - 1
    base, end = rows[warm][1], rows[-1][1]
    later = rows[warm:]
    slope = float(np.polyfit([r[0] for r in later], [r[1] for r in later], 1)[0]) if len(later) > 2 else 0.0
    medians = [r[3] for r in rows]
    print(f"soak: memory {rows[0][1]:.1f} MB after minute 1, {base:.1f} after minute {warm + 1}, {end:.1f} at the end: "
          f"{100 * (end - base) / base:+.2f} % since minute {warm + 1} (target < 5 %), trend {slope:+.2f} MB/min")
    print(f"soak: display latency median per minute {min(medians):.1f} .. {max(medians):.1f} ms "
          f"(spread {statistics.pstdev(medians):.2f} ms); frames shown {min(r[5] for r in rows):.2f} .. "
          f"{max(r[5] for r in rows):.2f} /s")

if __name__ == "__main__":
    main()
