"""Time: the device's 30-bit microsecond tick wraps every 1073.74 s, in the middle of streaming.

On the virtual probe the device clock starts 3 s before the wrap (the scenario's ``clock_start_s``): once in
virtual time, for the device's own view (its samples keep their pace and their values across the wrap), and
once served in real time over BLE, for the host's (its unwrapped device times run on and its clock mapping
to host time neither jumps nor drifts). A board's tick wraps only after 18 minutes of uptime: there the test
runs with --soak.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hil_tests import probes
from hil_tests.central import Central
from needletrack.protocol import Flag
from needletrack.receiver import Receiver, Timed

# Every test here needs a firmware that keeps its output rate (conftest: keeps_rate).
pytestmark = pytest.mark.keeps_rate

TICK_PERIOD_S = (1 << 30) / 1e6
BEFORE_WRAP_S = 3.0
AFTER_WRAP_S = 2.0
MAX_STEP_S = 0.0075  # 200 Hz from an 833 Hz IMU: 4.8 or 6.0 ms apart, never a batch late
MAX_SLIP_S = 0.0125  # the virtual radio's connection interval
MAX_JITTER_STEP_S = 0.02  # a real-time sample stamp's step, with the jitter of a busy host

WRAP = {
    "name": "hil_tick_wrap",
    "duration_s": BEFORE_WRAP_S + AFTER_WRAP_S + 1.0,
    "seed": 41,
    "guide_angle_deg": 30.0,
    "needle_length_mm": 60.0,
    "attitude": [[0, 0, 0, 0], [6, 0, 8, -5]],
    "depth": [[0, 10.0], [6, 30.0]],
    "clock_start_s": TICK_PERIOD_S - BEFORE_WRAP_S,
}


def _soak(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--soak", default=False))


def test_the_device_tick_wraps_in_virtual_time_without_a_gap_or_a_wrong_value(run_scenario, report):
    s = run_scenario(WRAP, "wrap")
    assert s.truth is not None
    raw = np.array([x.device_time_us for x in s.samples])
    wraps = np.flatnonzero(np.diff(raw) < 0) + 1
    assert len(wraps) == 1, f"the tick wrapped {len(wraps)} times"
    w = int(wraps[0])
    assert raw[w - 1] > (1 << 30) - 10_000 and raw[w] < 10_000  # from the top of the range to its bottom
    # The unwrapped device time runs on through the wrap at the output rate.
    dev = s.device_s
    steps = np.diff(dev)
    assert np.all(steps > 0) and steps.max() < MAX_STEP_S, f"device time step {steps.max() * 1000:.1f} ms"
    assert dev[w - 1] < TICK_PERIOD_S <= dev[w]
    assert abs(np.mean(steps) - 0.005) < 0.0001
    seq = np.array([x.seq for x in s.samples])
    assert np.all(np.diff(seq) % 65536 == 1), "sequence gaps"
    # The device's own timing (loop waits, re-probe timers, the attitude's dt) sees nothing at the wrap.
    near = np.abs(dev - TICK_PERIOD_S) < 0.5
    bad = Flag.STALE | Flag.IMU_FAULT | Flag.HALL_FAULT | Flag.DEPTH_INVALID | Flag.SETTLING
    flagged = [x.flags & bad for x, n in zip(s.samples, near, strict=True) if n and x.flags & bad]
    assert not flagged, f"flags near the wrap: {flagged[:3]}"
    depth = np.array([x.depth_mm for x in s.samples], dtype=float)
    angle = np.array([x.needle_angle_deg for x in s.samples], dtype=float)
    depth_err = float(np.max(np.abs(depth - s.truth["depth_mm"])[near]))
    angle_err = float(np.max(np.abs(angle - s.truth["needle_angle_deg"])[near]))
    report.figure("virtual time: device time step across the wrap", round(steps[w - 1] * 1000, 3), "ms", "5 +- 1")
    report.figure("virtual time: largest device time step", round(steps.max() * 1000, 3), "ms",
                  f"< {MAX_STEP_S * 1000:g}")
    report.figure("virtual time: depth error within 0.5 s of the wrap", round(depth_err, 3), "mm", "< 0.3")
    report.figure("virtual time: angle error within 0.5 s of the wrap", round(angle_err, 3), "deg", "< 0.5")
    assert depth_err < 0.3
    assert angle_err < 0.5


async def _stream(central: Central, until_device_s: float, timeout_s: float) -> tuple[Receiver, list[Timed]]:
    """Stream from a connected central until a sample's unwrapped device time passes `until_device_s`."""
    rx = Receiver()
    got: list[Timed] = []
    done = asyncio.Event()

    def on_note(note: Any) -> None:
        timed = rx.feed(note)
        got.extend(timed)
        if timed and timed[-1].device_s >= until_device_s:
            done.set()

    await central.link.start_notify(on_note)
    await asyncio.wait_for(done.wait(), timeout_s)
    return rx, got


def _check_host_view(rx: Receiver, got: list[Timed], report: Any, epoch: float | None) -> None:
    raw = np.array([t.sample.device_time_us for t in got])
    wraps = np.flatnonzero(np.diff(raw) < -(1 << 29)) + 1
    assert len(wraps) == 1, f"the tick wrapped {len(wraps)} times while streaming"
    w = int(wraps[0])
    assert rx.lost == 0 and rx.duplicates == 0 and rx.reordered == 0 and rx.restarts == 0
    dev = np.array([t.device_s for t in got])
    host = np.array([t.host_s for t in got])
    dev_steps, host_steps = np.diff(dev), np.diff(host)
    # In real time a sample's stamp carries the jitter of when its batch was read (a busy host delays some
    # reads), so steps vary by a few ms either way; a wrap taken wrongly would be a step of 1073.74 s.
    report.figure("host: largest device time step", round(float(np.abs(dev_steps).max()) * 1000, 3), "ms",
                  f"< {MAX_JITTER_STEP_S * 1000:g}")
    assert np.abs(dev_steps).max() < MAX_JITTER_STEP_S, "unwrapped device time jumped"
    assert dev[-1] - dev[0] > BEFORE_WRAP_S
    assert np.all(host_steps > 0), "host time went backwards"
    # The mapping follows the device clock: once it has a second of samples, host time moves as device time
    # does, at the wrap as elsewhere, give or take the corrections of its estimate (each smaller than the
    # connection interval that spaces the arrivals it learns from).
    slip = np.abs(host_steps - dev_steps)[dev[1:] > dev[0] + 1.0]
    slip_at_wrap = abs(host_steps[w - 1] - dev_steps[w - 1])
    report.figure("host: device time step across the wrap", round(dev_steps[w - 1] * 1000, 3), "ms", "5 +- 1")
    report.figure("host: host time step across the wrap", round(host_steps[w - 1] * 1000, 3), "ms", "5 +- 1")
    report.figure("host: largest host-device step difference", round(float(slip.max()) * 1000, 3), "ms",
                  f"< {MAX_SLIP_S * 1000:g}")
    assert slip_at_wrap < MAX_SLIP_S and slip.max() < MAX_SLIP_S, f"host time slipped {slip.max() * 1000:.2f} ms"
    if epoch is None:
        return
    # Against the probe's true clock: host time = device time + where device time 0 fell on the host clock.
    err = host - (dev + epoch)
    steady = dev > dev[0] + 1.0
    spread = float(np.ptp(err[steady]))
    report.figure("host: mapped minus true host time, median", round(float(np.median(err[steady])) * 1000, 2), "ms",
                  "the link's minimum latency, a few ms")
    report.figure("host: mapped minus true host time, spread", round(spread * 1000, 2), "ms",
                  f"< {MAX_SLIP_S * 1000:g}")
    report.plot("Clock mapping across the device tick wrap", _plot_mapping(dev, err, dev[w]))
    assert abs(float(np.median(err[steady]))) < 0.02
    assert spread < MAX_SLIP_S, f"the mapping wandered {spread * 1000:.1f} ms"


def _plot_mapping(dev: np.ndarray, err: np.ndarray, wrap_s: float) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.plot(dev - wrap_s, err * 1000, ".", ms=2)
    ax.axvline(0, color="tab:red", lw=1, label="tick wraps (2^30 us)")
    ax.set_xlabel("device time from the wrap (s)")
    ax.set_ylabel("mapped - true host time (ms)")
    ax.legend(fontsize=8)
    return fig


def test_the_host_follows_the_device_clock_across_the_wrap(dut, request, tmp_path: Path, report):
    if dut.kind != "sim":
        if not _soak(request):
            pytest.skip("a board's tick wraps after 1073.74 s of uptime: 18 minutes; run with --soak")
        asyncio.run(_board_wrap(dut, report))
        return
    from needletrack.sim import scenario, serve

    with serve.served(scenario.parse(dict(WRAP, name="hil_tick_wrap_served")), tmp_path, **probes.SIM) as probe:
        async def run() -> tuple[Receiver, list[Timed]]:
            async with Central(probe.transport, probe) as central:
                await central.connect()
                return await _stream(central, TICK_PERIOD_S + AFTER_WRAP_S, BEFORE_WRAP_S + AFTER_WRAP_S + 10)

        rx, got = asyncio.run(run())
        epoch = probe.console.device_epoch()
    assert got[0].device_s < TICK_PERIOD_S - 1.0, "streaming began too late to see the device before the wrap"
    _check_host_view(rx, got, report, epoch)


async def _board_wrap(dut: Any, report: Any) -> None:
    async with Central.of(dut) as central:
        await central.connect()
        rx = Receiver()
        got: list[Timed] = []
        wrapped = asyncio.Event()

        def on_note(note: Any) -> None:
            timed = rx.feed(note)
            got.extend(timed)
            if len(got) > 2 and any(b.sample.device_time_us < a.sample.device_time_us - (1 << 29)
                                    for a, b in itertools.pairwise(got[-len(timed) - 1:])):
                wrapped.set()

        t0 = time.monotonic()
        await central.link.start_notify(on_note)
        await asyncio.wait_for(wrapped.wait(), TICK_PERIOD_S + 60)
        await asyncio.sleep(AFTER_WRAP_S)
        report.figure("board: streamed until the wrap", round(time.monotonic() - t0, 1), "s")
    _check_host_view(rx, got, report, None)
