"""Losing the link and getting it back: the Receiver's accounting across reconnections, and StreamSession
reconnecting to the same probe over the virtual radio."""

from __future__ import annotations

import asyncio
import itertools
import struct
import time

import pytest

from needletrack.link.base import Notification
from needletrack.link.bumble_link import BumbleLink
from needletrack.protocol import Opcode, encode_command
from needletrack.receiver import Receiver, Timed
from needletrack.stream_session import Backoff, StreamSession

PERIOD_US = 5000  # 200 Hz


def _note(t_host: float, *samples: tuple[int, int]) -> Notification:
    return Notification(t_host, b"".join(struct.pack("<HIhhhhhhH", seq & 0xFFFF, tick & 0x3FFFFFFF, 100, 3000,
                                                     500, 250, 0, 0, 0x1000) for seq, tick in samples))


def _stream(rx: Receiver, seq0: int, tick0: int, host0: float, n: int) -> list[Timed]:
    out: list[Timed] = []
    for i in range(n):
        out += rx.feed(_note(host0 + i * PERIOD_US * 1e-6 + 0.003, (seq0 + i, tick0 + i * PERIOD_US)))
    return out


def test_duplicates_and_late_samples_are_counted_and_never_delivered():
    rx = Receiver()
    got = rx.feed(_note(1.0, (10, 0), (11, 5000), (12, 10000)))
    got += rx.feed(_note(1.01, (11, 5000), (12, 10000)))  # the same notification again
    got += rx.feed(_note(1.02, (14, 20000)))
    got += rx.feed(_note(1.03, (13, 15000)))  # arrived after 14: counted lost, now late
    assert [t.sample.seq for t in got] == [10, 11, 12, 14]
    assert (rx.duplicates, rx.reordered, rx.lost) == (2, 1, 1)


def test_a_reconnection_to_the_same_run_counts_the_outage_as_missed_and_keeps_the_clock():
    rx = Receiver()
    before = _stream(rx, 0, 1_000_000, 50.0, 400)
    offset = before[-1].host_s - before[-1].device_s
    rx.reconnected()
    # 3 s later: the 600 samples 400..999 were made while the link was down
    after = _stream(rx, 400 + 600, 1_000_000 + 1000 * PERIOD_US, 50.0 + 1000 * PERIOD_US * 1e-6, 200)
    assert (rx.lost, rx.missed, rx.restarts) == (0, 600, 0)
    assert after[0].device_s == pytest.approx(before[-1].device_s + 601 * PERIOD_US * 1e-6)
    assert after[-1].host_s - after[-1].device_s == pytest.approx(offset, abs=0.005)
    assert rx.rate_hz == pytest.approx(200.0, rel=1e-3)


def test_an_outage_longer_than_the_sequence_and_tick_wraps_is_still_one_run():
    rx = Receiver()
    before = _stream(rx, 65000, 1 << 29, 10.0, 400)
    rx.reconnected()
    gap_s = 1500.0  # past the 30-bit tick wrap (1073.7 s) and four 16-bit sequence wraps at 200 Hz
    n_gap = round(gap_s * 200)
    tick = (1 << 29) + (400 + n_gap) * PERIOD_US
    after = _stream(rx, 65000 + 400 + n_gap, tick, 10.0 + (400 + n_gap) * PERIOD_US * 1e-6, 50)
    assert rx.restarts == 0
    assert rx.missed == n_gap
    assert after[0].device_s - before[-1].device_s == pytest.approx(gap_s + PERIOD_US * 1e-6)


def test_a_probe_that_restarted_meanwhile_starts_a_new_clock_mapping():
    rx = Receiver()
    _stream(rx, 5000, 700_000_000, 100.0, 400)
    rx.reconnected()
    # rebooted: sequence and device clock begin again, 4 s later in host time
    after = _stream(rx, 0, 1_500_000, 104.0 + 2.0, 400)
    assert rx.restarts == 1 and rx.missed == 0 and rx.lost == 0
    assert after[0].host_s == pytest.approx(106.0, abs=0.01)
    assert all(b.host_s > a.host_s for a, b in itertools.pairwise(after))
    assert rx.rate_hz == pytest.approx(200.0, rel=1e-3)


def test_backoff_doubles_up_to_its_cap():
    b = Backoff(0.1, 1.0)
    assert [b.delay(n) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


async def _drop_and_resume(served_probe) -> dict[str, object]:
    seqs: list[list[int]] = []  # per connection
    first_arrival: list[float] = []
    rx = Receiver()

    def on_samples(batch: list[Timed]) -> None:
        if len(seqs) < rx.connections:  # the first samples of a new connection
            seqs.append([])
            first_arrival.append(time.monotonic())
        seqs[-1].extend(t.sample.seq for t in batch)

    async def until(cond, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not cond():
                await asyncio.sleep(0.01)

    radio = served_probe.radio
    stop = asyncio.Event()
    resume: list[float] = []
    async with BumbleLink(served_probe.transport) as link:
        found = await link.scan(5.0, first=True)
        session = StreamSession(link, rx, address=found[0].address, on_samples=on_samples,
                                backoff=Backoff(0.1, 1.0))
        task = asyncio.create_task(session.run(stop))
        await until(lambda: seqs and len(seqs[0]) > 200, 10.0)
        for n in range(2, 4):
            assert await asyncio.to_thread(radio.call, _drop) == 1
            await until(lambda n=n: len(seqs) == n and len(seqs[-1]) > 100, 10.0)
            began = await asyncio.to_thread(radio.call, _advertising_began)
            resume.append(first_arrival[-1] - began)
        stop.set()
        await task
    return {"seqs": seqs, "rx": rx, "reconnects": session.reconnects, "resume_s": resume,
            "lost_events": sum(e.what == "lost" for e in session.events)}


async def _drop(bridge) -> int:
    return int(await bridge.drop_links())


async def _advertising_began(bridge) -> float:
    return float(bridge.advertising_began())


def test_the_session_reconnects_to_the_same_probe_and_resumes_without_duplicates(served_probe):
    out = asyncio.run(_drop_and_resume(served_probe))
    rx = out["rx"]
    assert isinstance(rx, Receiver)
    seqs = out["seqs"]
    assert isinstance(seqs, list) and len(seqs) == 3
    assert out["reconnects"] == 2 and out["lost_events"] == 2
    for part in seqs:
        assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(part)), "a gap within a connection"
    for a, b in itertools.pairwise(seqs):
        assert 0 < (b[0] - a[-1]) % 65536 < 2000  # later samples, fresh from a loop that never stopped
    assert rx.lost == 0 and rx.duplicates == 0 and rx.reordered == 0 and rx.restarts == 0
    assert rx.missed == sum((b[0] - a[-1]) % 65536 - 1 for a, b in itertools.pairwise(seqs))
    resume = out["resume_s"]
    assert isinstance(resume, list) and max(resume) < 2.0, resume


async def _reboot_midway(served_probe) -> tuple[Receiver, StreamSession, list[Timed]]:
    got: list[Timed] = []
    rx = Receiver()
    stop = asyncio.Event()
    async with BumbleLink(served_probe.transport) as link:
        session = StreamSession(link, rx, on_samples=got.extend, backoff=Backoff(0.1, 0.5))
        await session.connect()
        task = asyncio.create_task(session.run(stop))
        async with asyncio.timeout(10):
            while len(got) < 200:
                await asyncio.sleep(0.01)
        await link.pair()
        await link.write_control(encode_command(Opcode.REBOOT, 7))
        n = len(got)
        async with asyncio.timeout(30):
            while session.reconnects < 1 or len(got) < n + 200:
                await asyncio.sleep(0.05)
        stop.set()
        await task
    return rx, session, got


def test_a_probe_that_reboots_is_followed_with_a_new_clock_mapping_and_time_runs_forward(served_probe):
    rx, session, got = asyncio.run(_reboot_midway(served_probe))
    assert rx.restarts == 1 and session.reconnects >= 1
    assert rx.lost == 0 and rx.duplicates == 0 and rx.reordered == 0
    host = [t.host_s for t in got]
    assert all(b > a for a, b in itertools.pairwise(host)), "host time went backwards across the reboot"
    i = next(i for i, (a, b) in enumerate(itertools.pairwise(got)) if b.device_s < a.device_s) + 1
    assert got[i].sample.seq < 400  # the new boot counts from 0
    assert rx.rate_hz == pytest.approx(200.0, rel=0.02)
