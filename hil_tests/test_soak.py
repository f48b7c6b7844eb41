"""Soak (opt-in): an hour of streaming over BLE with nothing lost.

Run with ``pytest hil_tests --soak`` (``needletrack hil --soak``), or ``-m soak``; otherwise it is skipped with
the reason shown. It is marked slow as well, so ``make test`` (``-m 'not slow'``) never selects it.
``NEEDLETRACK_HIL_SOAK_S`` sets another length (seconds), e.g. for a short trial of the soak itself.

The host is a StreamSession, as ``needletrack stream`` uses: if the link drops it reconnects, and the
reconnections are counted. Nothing may be lost within a connection, duplicated or reordered; the device must
drop nothing for back-pressure and its IMU FIFO must never overflow.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import numpy as np
import pytest

from hil_tests.central import Central
from needletrack.protocol import Status, decode_record
from needletrack.receiver import Receiver, Timed
from needletrack.stream_session import Backoff, StreamSession

pytestmark = [pytest.mark.soak, pytest.mark.slow, pytest.mark.keeps_rate]

SOAK_S = float(os.environ.get("NEEDLETRACK_HIL_SOAK_S", "3600"))
BIN_S = 10.0


async def _status(central: Central) -> Status:
    rec = decode_record(await central.link.read_status())
    assert isinstance(rec, Status)
    return rec


def _plot(bins: dict[int, int], rate: float, reconnects: list[float], t0: float) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(bins)
    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.plot([k * BIN_S / 60 for k in keys], [bins[k] / BIN_S for k in keys], lw=1)
    ax.axhline(rate, color="0.6", lw=1, ls="--", label=f"output rate {rate:.0f} Hz")
    for t in reconnects:
        ax.axvline((t - t0) / 60, color="tab:red", lw=1)
    ax.set_xlabel("minutes")
    ax.set_ylabel(f"samples per second ({BIN_S:g} s bins)")
    ax.legend(fontsize=8)
    return fig


def test_an_hour_of_streaming_loses_nothing(dut, report):
    rx = Receiver()
    bins: dict[int, int] = {}
    arrivals: list[float] = []
    t0 = time.monotonic()

    def on_samples(batch: list[Timed]) -> None:
        now = time.monotonic()
        arrivals.append(now)
        k = int((now - t0) // BIN_S)
        bins[k] = bins.get(k, 0) + len(batch)

    async def run() -> dict[str, Any]:
        async with Central.of(dut) as central:
            found = await central.link.scan(10.0, first=True)
            assert found, "no probe advertising"
            session = StreamSession(central.link, rx, address=found[0].address, on_samples=on_samples,
                                    backoff=Backoff(0.1, 2.0))
            await session.connect()
            before = await _status(central)
            stop = asyncio.Event()
            task = asyncio.create_task(session.run(stop))
            await asyncio.sleep(SOAK_S)
            after = await _status(central) if central.link.is_connected else None
            stop.set()
            await task
            reconnected = [e.t_host for e in session.events if e.what == "connected"][1:]
            return {"before": before, "after": after, "reconnects": session.reconnects, "at": reconnected}

    out = asyncio.run(run())
    rate = rx.rate_hz
    gaps = np.diff(arrivals) if len(arrivals) > 1 else np.array([0.0])
    before, after = out["before"], out["after"]
    span = rx.last.device_s - rx.first_device_s if rx.last is not None and rx.first_device_s is not None else 0.0
    report.figure("soak length, device time", round(span / 60, 2), "min", f"{SOAK_S / 60:g}")
    report.figure("samples", rx.samples)
    report.figure("lost / duplicated / reordered", f"{rx.lost} / {rx.duplicates} / {rx.reordered}", "",
                  "0 / 0 / 0")
    report.figure("reconnections", out["reconnects"])
    report.figure("missed while reconnecting", rx.missed, "samples")
    report.figure("output rate, from device time", round(rate, 3), "Hz")
    report.figure("longest silence", round(float(gaps.max()) * 1000, 1), "ms")
    if after is not None:
        report.figure("dropped on the device (back-pressure)", after.dropped, "samples", "0")
        report.figure("IMU FIFO overruns", after.fifo_overruns - before.fifo_overruns, "", "0")
    report.plot("Soak: samples per second over time (red: reconnections)", _plot(bins, rate, out["at"], t0))
    assert rx.lost == 0 and rx.duplicates == 0 and rx.reordered == 0 and rx.malformed == 0
    assert rx.restarts == 0, "the device restarted during the soak"
    if out["reconnects"] == 0:
        assert rx.missed == 0
    assert span > SOAK_S - 5
    assert rx.samples + rx.missed == pytest.approx(rate * span + 1, abs=2)  # every sample made is accounted for
    assert after is not None, "the link was down when the soak ended"
    assert after.dropped == 0 and after.fifo_overruns == before.fifo_overruns
