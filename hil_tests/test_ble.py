"""BLE: discovery by the service UUID, the MTU, streaming without gaps, a dropped link taken up again by the
stream session, and control writes only on a bonded link.

On the virtual probe the host is a Bumble stack on the virtual radio; on a board, the computer's adapter (bleak)
or a Bumble transport (``--ble usb:0``). What needs the radio's own controls (a link dropped as if out of range,
the moment advertising began) or a host stack the test drives itself (no MTU exchange, no automatic pairing)
says so and is skipped where it cannot run.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from hil_tests.central import DIS_SERIAL_NUMBER, Central, is_bumble
from needletrack.link import Notification, SecurityError
from needletrack.protocol import SERVICE_UUID, Opcode, encode_command
from needletrack.receiver import Receiver, Timed
from needletrack.stream_session import Backoff, StreamSession

STREAM_S = 10.0


def _bumble_only(dut: Any, why: str) -> None:
    if not is_bumble(dut.ble):
        pytest.skip(f"needs a Bumble host stack ({why}); the OS adapter ({dut.ble}) does not let the test decide "
                    f"that: run with --ble usb:0 and a USB dongle")


@dataclass
class Streamed:
    rx: Receiver = field(default_factory=Receiver)
    timed: list[Timed] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)

    def on_note(self, note: Notification) -> None:
        self.arrivals.append(note.t_host)
        self.sizes.append(len(note.data))
        self.timed.extend(self.rx.feed(note))

    @property
    def seqs(self) -> list[int]:
        return [t.sample.seq for t in self.timed]


async def _stream(central: Central, seconds: float) -> Streamed:
    """Notifications for ``seconds``. The test process's own garbage collection is held meanwhile: after the
    suite's GUI tests a full collection here can pause the host for a few hundred ms, and the arrival times
    would show that pause as a silence of the probe's."""
    out = Streamed()
    gc.collect()
    gc.disable()
    try:
        await central.link.start_notify(out.on_note)
        await asyncio.sleep(seconds)
    finally:
        gc.enable()
    return out


def _gapless(seqs: list[int]) -> bool:
    return all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))


def test_the_probe_is_found_by_its_service_uuid_and_named_after_its_id(dut, report):
    async def run() -> tuple[Any, float, bytes]:
        async with Central.of(dut) as central:
            found = await central.connect()
            serial = await central.read_char(DIS_SERIAL_NUMBER)
            await central.disconnect()
            return found, central.scan_s, serial

    found, scan_s, serial = asyncio.run(run())
    assert found is not None and SERVICE_UUID in found.service_uuids
    assert found.name is not None and re.fullmatch(r"NeedleTrack-[0-9A-F]{4}", found.name), found.name
    device_id = serial.decode()
    assert re.fullmatch(r"[0-9a-f]{12}", device_id), device_id
    assert found.name.endswith(device_id[-4:].upper())  # the name is the id's last four hex digits
    report.figure("found by service UUID within", round(scan_s, 3), "s", "< 1 (advertising every 100 ms)")
    report.identity("BLE name", found.name)
    assert scan_s < 1.0 or not is_bumble(dut.ble)  # bleak scans for its whole timeout


def test_mtu_247_is_negotiated_and_notifications_carry_batches(dut, report):
    async def run() -> tuple[int, Streamed]:
        async with Central.of(dut) as central:
            await central.connect()
            streamed = await _stream(central, 1.5)
            mtu = central.mtu_size
            await central.disconnect()
            return mtu, streamed

    mtu, streamed = asyncio.run(run())
    assert mtu == 247
    sizes = np.array(streamed.sizes)
    assert np.all(sizes % 20 == 0) and sizes.max() <= 240  # at most floor((247 - 3) / 20) = 12 samples
    assert sizes.max() > 20, "never more than one sample per notification at MTU 247"
    assert _gapless(streamed.seqs)
    report.figure("ATT MTU", mtu, "bytes", "247")
    report.figure("samples per notification at MTU 247, mean", round(float(sizes.mean()) / 20, 2), "", "1 - 12")


@pytest.mark.keeps_rate
def test_at_mtu_23_every_notification_carries_one_sample(dut, report):
    _bumble_only(dut, "a central that keeps the default ATT MTU of 23")

    async def run() -> tuple[int, Streamed]:
        async with Central(dut.ble, dut.served, mtu=23) as central:
            await central.connect()
            streamed = await _stream(central, 2.0)
            mtu = central.mtu_size
            await central.disconnect()
            return mtu, streamed

    mtu, streamed = asyncio.run(run())
    assert mtu == 23
    assert set(streamed.sizes) == {20}, f"notification sizes {sorted(set(streamed.sizes))}"
    assert _gapless(streamed.seqs), "sequence gaps at MTU 23"
    rate = streamed.rx.rate_hz
    per_s = len(streamed.sizes) / (streamed.arrivals[-1] - streamed.arrivals[0])
    report.figure("notifications per second at MTU 23", round(per_s, 1), "1/s", f"= the output rate ({rate:.0f})")
    assert per_s == pytest.approx(rate, rel=0.05)


def _plot_stream(s: Streamed) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_gap, ax_n) = plt.subplots(1, 2, figsize=(9, 3.2))
    gaps_ms = np.diff(s.arrivals) * 1000
    ax_gap.hist(gaps_ms, bins=60)
    ax_gap.set_xlabel("time between notifications (ms)")
    ax_gap.set_ylabel("notifications")
    per = np.array(s.sizes) // 20
    ax_n.hist(per, bins=np.arange(0.5, per.max() + 1.5, 1))
    ax_n.set_xlabel("samples per notification")
    fig.suptitle(f"{STREAM_S:g} s of streaming at MTU 247")
    return fig


@pytest.mark.keeps_rate
def test_ten_seconds_of_streaming_without_a_gap(dut, report):
    async def run() -> Streamed:
        async with Central.of(dut) as central:
            await central.connect()
            streamed = await _stream(central, STREAM_S)
            await central.disconnect()
            return streamed

    s = asyncio.run(run())
    rx = s.rx
    seqs = s.seqs
    dev = np.array([t.device_s for t in s.timed])
    rate = rx.rate_hz
    gaps = np.diff(s.arrivals)
    report.figure("samples in 10 s", len(seqs), "", f"{rate * STREAM_S:.0f} +- 1 %")
    report.figure("lost / duplicated / reordered", f"{rx.lost} / {rx.duplicates} / {rx.reordered}", "", "0 / 0 / 0")
    report.figure("output rate, from device time", round(rate, 2), "Hz")
    report.figure("longest silence between notifications", round(float(gaps.max()) * 1000, 1), "ms",
                  "< 100 (the host's stale threshold)")
    report.plot("Notification spacing and batching, 10 s at MTU 247", _plot_stream(s))
    assert _gapless(seqs), "sequence gaps"
    assert rx.lost == 0 and rx.duplicates == 0 and rx.reordered == 0 and rx.malformed == 0
    assert np.all(np.diff(dev) > 0)
    assert len(seqs) == pytest.approx(rate * (dev[-1] - dev[0]) + 1, abs=1.5)
    assert dev[-1] - dev[0] > STREAM_S - 0.5
    assert gaps.max() < 0.1


async def _drop_on_radio(bridge: Any) -> int:
    return int(await bridge.drop_links())


async def _advertising_began(bridge: Any) -> float:
    return float(bridge.advertising_began())


async def _drop_from_host(central: Central) -> None:
    # The host's side of the link goes without the link object being told: to the session it is a link lost.
    bumble = central.bumble
    if bumble is not None:
        await bumble.connection.disconnect()
    else:
        await central.link.client.disconnect()  # type: ignore[attr-defined]  # BleakLink


async def _drops(dut: Any, drops: int) -> dict[str, Any]:
    runs: list[list[int]] = []  # sequence numbers per connection
    first_arrival: list[float] = []
    rx = Receiver()

    def on_samples(batch: list[Timed]) -> None:
        if len(runs) < rx.connections:  # the first samples of a new connection
            runs.append([])
            first_arrival.append(time.monotonic())
        runs[-1].extend(t.sample.seq for t in batch)

    async def until(cond: Any, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not cond():
                await asyncio.sleep(0.01)

    resume: list[float] = []
    stop = asyncio.Event()
    async with Central.of(dut) as central:
        found = await central.link.scan(10.0, first=True)
        assert found, "no probe advertising"
        session = StreamSession(central.link, rx, address=found[0].address, on_samples=on_samples,
                                backoff=Backoff(0.1, 1.0))
        task = asyncio.create_task(session.run(stop))
        try:
            await until(lambda: runs and len(runs[0]) > 200, 10.0)
            for n in range(2, drops + 2):
                t_drop = time.monotonic()
                if dut.served is not None:
                    assert await asyncio.to_thread(dut.served.radio.call, _drop_on_radio) == 1
                else:
                    await _drop_from_host(central)
                await until(lambda n=n: len(runs) == n and len(runs[-1]) > 100, 15.0)
                if dut.served is not None:
                    began = await asyncio.to_thread(dut.served.radio.call, _advertising_began)
                    resume.append(first_arrival[-1] - began)
                else:
                    resume.append(first_arrival[-1] - t_drop)
        finally:
            stop.set()
            await task
    return {"runs": runs, "rx": rx, "reconnects": session.reconnects, "resume_s": resume,
            "lost_events": sum(e.what == "lost" for e in session.events)}


def test_a_dropped_link_is_taken_up_again_by_the_stream_session(dut, report):
    out = asyncio.run(_drops(dut, 2))
    rx: Receiver = out["rx"]
    runs: list[list[int]] = out["runs"]
    resume: list[float] = out["resume_s"]
    since = "advertising began" if dut.served is not None else "the host dropped the link"
    report.figure(f"samples again after {since}, worst of 2", round(max(resume) * 1000, 1), "ms", "< 2000")
    report.figure("reconnections", out["reconnects"], "", "2")
    report.figure("missed while disconnected", rx.missed, "samples")
    assert len(runs) == 3 and out["reconnects"] == 2 and out["lost_events"] == 2
    for part in runs:
        assert _gapless(part), "a gap within a connection"
    for a, b in itertools.pairwise(runs):
        assert 0 < (b[0] - a[-1]) % 65536 < 2000  # later samples, from a loop that never stopped
    assert rx.lost == 0 and rx.duplicates == 0 and rx.reordered == 0 and rx.restarts == 0
    assert rx.missed == sum((b[0] - a[-1]) % 65536 - 1 for a, b in itertools.pairwise(runs))
    assert max(resume) < 2.0, resume


@pytest.mark.keeps_rate
def test_control_writes_need_a_bonded_link(dut, report):
    _bumble_only(dut, "an unbonded central: the OS adapter pairs by itself when a write is refused")

    async def guide_now(streamed: Streamed, settle_s: float = 0.3) -> set[float | None]:
        n = len(streamed.timed)
        await asyncio.sleep(settle_s)
        return {t.sample.guide_angle_deg for t in streamed.timed[n + 10:]}

    async def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with Central.of(dut) as central:
            await central.connect()
            streamed = Streamed()
            await central.link.start_notify(streamed.on_note)
            before = await guide_now(streamed)
            assert len(before) == 1 and None not in before
            original = before.pop()
            assert original is not None
            other = round(original * 100) + (500 if original < 60 else -500)
            token = central.next_token()
            try:
                await central.link.write_control(encode_command(Opcode.SET_GUIDE_ANGLE, token, other))
            except SecurityError as e:
                out["refused"] = e.att_error
            out["results_unbonded"] = await central.results_within(0.3)
            out["guide_after_refusal"] = await guide_now(streamed, 0.1)
            t0 = time.monotonic()
            await central.pair()
            out["pair_s"] = time.monotonic() - t0
            result, _ = await central.command(Opcode.SET_GUIDE_ANGLE, other)
            out["bonded"] = result
            out["guide_after_write"] = await guide_now(streamed)
            restored, _ = await central.command(Opcode.SET_GUIDE_ANGLE, round(original * 100))
            out["restored"] = restored
            out["original"], out["other"] = original, other
            await central.disconnect()
        return out

    out = asyncio.run(run())
    report.figure("pairing (LE Secure Connections, bonded)", round(out["pair_s"] * 1000, 1), "ms")
    assert out.get("refused") in (0x05, 0x0F), "an unbonded central's control write was not refused"
    assert out["results_unbonded"] == [], "the device answered a command from an unbonded central"
    assert out["guide_after_refusal"] == {out["original"]}, "the refused write changed the guide angle"
    assert out["bonded"].code == 0 and out["bonded"].opcode == Opcode.SET_GUIDE_ANGLE
    assert out["guide_after_write"] == {out["other"] / 100}
    assert out["restored"].code == 0
