"""Frames fused with the samples of their instant: offline, live with a late stream, and with video latency."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from needletrack.frames.synthetic import SyntheticSource
from needletrack.fused_stream import FusedFrame, Fuser, fuse_all, fuse_live
from needletrack.fusion import SampleHistory
from needletrack.protocol import Flag, Sample
from needletrack.receiver import Timed
from needletrack.sim import scenario

SC = scenario.parse({"name": "fusion", "duration_s": 4.0, "seed": 5, "guide_angle_deg": 30.0,
                     "needle_length_mm": 60.0, "attitude": [[0, 0, 0, 0]],
                     "depth": [[0, 5.0], [1.0, 35.0], [2.0, 10.0], [3.0, 40.0], [4.0, 20.0]]})


def _samples(t0: float, t1: float, offset: float = 0.0, rate: float = 200.0) -> list[Timed]:
    """Samples of the scenario's true depth, stamped on the host clock (scenario time + offset)."""
    out = []
    for i, t in enumerate(np.arange(t0, t1, 1.0 / rate)):
        d = float(SC.depth_at(t))
        s = Sample(i, int(t * 1e6), 40.0, SC.guide_angle_deg, d, d * 0.5, 0.0, 0.0, Flag(0))
        out.append(Timed(s, float(t), float(t) + offset))
    return out


class Collect:
    def __init__(self) -> None:
        self.frames: list[FusedFrame] = []
        self.closed = False

    def write(self, fused: FusedFrame) -> None:
        self.frames.append(fused)

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("latency", [0.0, 0.08])
def test_each_frame_gets_the_needle_of_its_capture_time(latency):
    src = SyntheticSource(SC, fps=25.0, size=(320, 240), start_s=100.0 + latency)  # frames arrive late
    history = SampleHistory()
    history.add(_samples(0.0, 4.01, offset=100.0))
    sink = Collect()
    fuser = Fuser(history, src.calibration, video_latency_s=latency)
    fused = list(fuse_all(src.frames(), fuser, [sink]))
    assert len(fused) == src.frame_count == len(sink.frames)
    err = [f.state.depth_mm - src.truth(f.frame.index).depth_mm for f in fused if f.state is not None]
    assert len(err) == len(fused)
    assert max(abs(e) for e in err) < 0.05  # interpolated between 5 ms samples of a piecewise-linear motion
    assert fused[10].image.shape == (240, 320, 3)
    assert not np.array_equal(fused[10].image[:, :, 0], fused[10].frame.image)  # the overlay is drawn


def test_without_the_latency_correction_the_needle_lags_the_echo():
    src = SyntheticSource(SC, fps=25.0, size=(320, 240), start_s=100.08)
    history = SampleHistory()
    history.add(_samples(0.0, 4.01, offset=100.0))
    fused = list(fuse_all(src.frames(), Fuser(history, src.calibration), []))
    err = [abs(f.state.depth_mm - src.truth(f.frame.index).depth_mm) for f in fused if f.state is not None]
    assert max(err) > 2.0  # 30 mm/s for 80 ms


def test_live_frames_wait_for_their_samples_and_a_silent_stream_shows_as_lost():
    async def scenario_run() -> list[FusedFrame]:
        now = time.monotonic()
        src = SyntheticSource(SC, fps=25.0, size=(320, 240), start_s=now, realtime=True)
        history = SampleHistory()
        fuser = Fuser(history, src.calibration)
        stop = asyncio.Event()
        samples = _samples(0.0, 4.0, offset=now)

        async def feed() -> None:
            # samples arrive 30 ms after they were taken, in notifications of 6; then the stream stops at 2 s
            i = 0
            while i < len(samples) and samples[i].device_s < 2.0:
                batch = samples[i:i + 6]
                wait = batch[-1].host_s + 0.03 - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                history.add(batch)
                i += 6

        sink = Collect()
        feeder = asyncio.create_task(feed())
        frames = src.frames()
        got: list[FusedFrame] = []
        n = await fuse_live((f for f, _ in zip(frames, range(80), strict=False)), fuser, [sink], stop,
                            on_frame=got.append)
        await feeder
        assert n == len(got) == len(sink.frames)
        return got

    got = asyncio.run(scenario_run())
    live = [f for f in got if f.frame.time_s < got[0].frame.time_s + 1.9]
    # Waited for the samples, then interpolated (a loaded machine may make a rare frame miss its hold).
    fresh = [f for f in live[1:] if f.state is not None and f.state.age_s == 0.0]
    assert len(fresh) >= 0.9 * len(live[1:])
    truth = SyntheticSource(SC, fps=25.0, size=(320, 240))
    assert max(abs(f.state.depth_mm - truth.truth(f.frame.index).depth_mm) for f in fresh) < 0.05
    lost = [f for f in got if f.frame.time_s > got[0].frame.time_s + 2.2]
    assert lost and all(f.state is not None and f.state.age_s > 0.1 for f in lost)
    delays = sorted(f.ready_s - f.frame.time_s for f in got)
    assert delays[len(delays) // 2] < 0.1 and delays[-1] < 0.3, delays  # the hold never piles up
