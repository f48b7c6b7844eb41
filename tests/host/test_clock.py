"""Device-to-host clock mapping under radio-like delays."""

from __future__ import annotations

import numpy as np
import pytest

from needletrack.clock import TICK_PERIOD_US, ClockMapper, Unwrapper


def test_unwrapper_crosses_the_tick_wrap_and_keeps_small_steps_back():
    u = Unwrapper()
    assert u(TICK_PERIOD_US - 100) == TICK_PERIOD_US - 100
    assert u(50) == TICK_PERIOD_US + 50
    assert u(20) == TICK_PERIOD_US + 20  # a late sample: slightly earlier, not a whole period later
    assert u(TICK_PERIOD_US - 1) == 2 * TICK_PERIOD_US - 1 - TICK_PERIOD_US  # back across the wrap


def _session(seed, duration_s=180.0, rate=200.0, offset=1000.25, drift=40e-6, start_tick=0):
    rng = np.random.default_rng(seed)
    device_us = start_tick + np.arange(int(duration_s * rate)) * int(1e6 / rate)
    device_s = device_us / 1e6
    true_host = device_s + offset + drift * device_s
    # Delays: connection-interval quantisation, exponential jitter, and rare long stalls.
    delay = 0.003 + np.ceil(rng.uniform(0, 1, device_s.size) * 2) * 0.0075 + rng.exponential(0.004, device_s.size)
    stall = rng.uniform(size=device_s.size) < 0.002
    delay[stall] += rng.uniform(0.05, 0.3, stall.sum())
    return device_us, true_host, np.maximum.accumulate(true_host + delay)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mapping_recovers_offset_and_drift_despite_jitter(seed):
    device_us, true_host, arrival = _session(seed)
    clock = ClockMapper(min_latency_s=0.003 + 0.0075)
    for t_us, a in zip(device_us, arrival, strict=True):
        clock.observe(clock.device_seconds(int(t_us) % TICK_PERIOD_US), float(a))
    m = clock.mapping()
    err = m.to_host(device_us[-2000:] / 1e6) - true_host[-2000:]
    assert np.max(np.abs(err)) < 0.003, np.max(np.abs(err))
    assert m.drift == pytest.approx(40e-6, abs=10e-6)
    assert 0 < m.uncertainty_s < 0.005
    # Arrival time would have been far worse as a sample time.
    assert np.max(arrival[-2000:] - true_host[-2000:]) > 0.05


def test_mapping_holds_across_the_device_tick_wrap():
    start = TICK_PERIOD_US - 30_000_000  # wraps 30 s in
    device_us, true_host, arrival = _session(4, duration_s=90.0, start_tick=start)
    clock = ClockMapper()
    mapped = []
    for t_us, a in zip(device_us, arrival, strict=True):
        d = clock.device_seconds(int(t_us) % TICK_PERIOD_US)
        clock.observe(d, float(a))
        mapped.append(d)
    assert np.all(np.diff(mapped) > 0)
    assert np.allclose(np.array(mapped) - mapped[0], (device_us - device_us[0]) / 1e6)
    err = clock.mapping().to_host(np.array(mapped[-1000:])) - true_host[-1000:]
    assert np.max(np.abs(err)) < 0.03  # no min-latency given: the error is the link's minimum delay


def test_mapping_before_any_sample_is_an_error():
    with pytest.raises(RuntimeError, match="no samples"):
        ClockMapper().mapping()
