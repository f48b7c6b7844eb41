# Twitch, pass and no-go detection on synthetic raw sequences.
# mp-heapsize: 8M
import math
import random
import micropython
import packet
from events import PassDetector, TwitchDetector, nogo_flags
from mptest import eq, near

G = 8197  # 1 g in LSB at +-4 g
DPS = 57.14  # 1 dps in LSB at +-500 dps
FS = 833


def _noise():
    # ~16 LSB RMS (2 mg): a sum of uniforms, since MicroPython's random has no gauss()
    return int((random.random() + random.random() + random.random() - 1.5) * 32)


def _rest_stream(n, seed, burst_at=-1, amp_g=0.4, tilt_rate_dps=0.0, fs=FS, more_bursts=()):
    # Probe resting (or tilting steadily about y), accelerometer noise ~ 2 mg RMS, optional twitch bursts (at
    # burst_at and more_bursts, sample indices): a 25 Hz damped sinusoid, mostly along the probe axis; fs samples
    # per second.
    random.seed(seed)
    out = []
    starts = ((burst_at,) if burst_at >= 0 else ()) + tuple(more_bursts)
    for k in range(n):
        th = math.radians(tilt_rate_dps * k / fs)
        ax = -math.sin(th) * G
        az = -math.cos(th) * G
        for k0 in starts:
            if k < k0:
                continue
            t = (k - k0) / fs
            b = amp_g * G * math.exp(-t / 0.04) * math.sin(2 * math.pi * 25 * t)
            az += b
            ax += 0.3 * b
        n1 = _noise()
        n2 = _noise()
        n3 = _noise()
        out.append((0, int(tilt_rate_dps * DPS), 0, int(ax) + n1, n2, int(az) + n3))
    return out


def _count_twitches(stream, odr_mhz=833375):
    d = TwitchDetector(odr_mhz)
    hits = []
    for k, s in enumerate(stream):
        if d.update(*s):
            hits.append(k)
    return hits


def test_a_twitch_burst_at_rest_is_one_event_near_its_start():
    hits = _count_twitches(_rest_stream(2000, 1, burst_at=1200, amp_g=0.35))
    eq(len(hits), 1, "events")
    assert 1200 <= hits[0] < 1200 + 40, hits


def test_no_twitch_from_noise_or_steady_tilting():
    eq(_count_twitches(_rest_stream(4000, 2)), [])
    eq(_count_twitches(_rest_stream(2000, 3, tilt_rate_dps=20.0)), [])


def test_no_twitch_while_the_probe_is_swept_fast():
    stream = _rest_stream(2000, 4, burst_at=1000, amp_g=0.35, tilt_rate_dps=60.0)
    eq(_count_twitches(stream), [])


FAST = 1666.75  # Hz: the IMU's ODR for output rates above 416 Hz


def test_twitch_timing_is_the_same_in_seconds_at_1666_hz():
    slow = TwitchDetector(833375)
    fast = TwitchDetector(1666750)
    eq((slow.shift, slow.prime_n, slow.holdoff_n), (6, 256, 333))
    eq((fast.shift, fast.prime_n, fast.holdoff_n), (7, 512, 666))
    eq(TwitchDetector(1666750 * 1003 // 1000).shift, 7, "a part trimmed 0.3 % fast")
    # The same burst, 1.44 s in, seen at both rates: one event each, at the same time within a few ms.
    t_slow = _count_twitches(_rest_stream(2000, 1, burst_at=1200, amp_g=0.35))
    t_fast = _count_twitches(_rest_stream(4000, 1, burst_at=2400, amp_g=0.35, fs=FAST), 1666750)
    eq((len(t_slow), len(t_fast)), (1, 1), "events")
    near(t_fast[0] / FAST, t_slow[0] / FS, 0.005, "detection time (s)")
    assert 2400 <= t_fast[0] < 2400 + 80, t_fast
    # Two bursts 0.3 s apart are one twitch (the 0.4 s holdoff), 0.6 s apart two, at both rates.
    for fs, odr_mhz in ((FS, 833375), (FAST, 1666750)):
        for gap_s, want in ((0.3, 1), (0.6, 2)):
            both = _rest_stream(int(fs * 2.2), 7, burst_at=int(fs * 1.2), amp_g=0.35, fs=fs,
                                more_bursts=(int(fs * (1.2 + gap_s)),))
            eq(len(_count_twitches(both, odr_mhz)), want, "bursts %.1f s apart at %d Hz" % (gap_s, fs))
    eq(_count_twitches(_rest_stream(4000, 2, fs=FAST), 1666750), [], "noise alone")


def test_pistoning_passes_are_counted_and_jitter_is_not():
    p = PassDetector()
    depths = []
    for _ in range(5):  # 14 mm <-> 24 mm
        depths += list(range(14000, 24001, 250)) + list(range(24000, 13999, -250))
    jitter = [20000 + (500 if i % 2 else -500) for i in range(200)]
    passes = sum(p.update(d) for d in depths)
    eq(passes, 5)
    eq(sum(p.update(d) for d in jitter), 0)


def test_a_depth_gap_does_not_invent_a_pass():
    p = PassDetector()
    for d in range(0, 20001, 500):
        p.update(d)
    p.invalidate()
    eq(p.update(5000), 0)
    eq(p.update(4000), 0)


def test_nogo_flags():
    eq(nogo_flags(10000, -1, 3000), 0)
    eq(nogo_flags(16999, 20000, 3000), 0)
    eq(nogo_flags(17000, 20000, 3000), packet.F_NOGO_NEAR)
    eq(nogo_flags(20000, 20000, 3000), packet.F_NOGO_REACHED)
    eq(nogo_flags(25000, 20000, 0), packet.F_NOGO_REACHED)


def _steady(d, p, stream, n):
    micropython.heap_lock()
    try:
        for i in range(n):
            s = stream[i % len(stream)]
            d.update(s[0], s[1], s[2], s[3], s[4], s[5])
            p.update(10000 + (i % 400) * 25)
            nogo_flags(i * 10, 20000, 3000)
    finally:
        micropython.heap_unlock()


def test_detectors_allocate_nothing():
    stream = _rest_stream(500, 5, burst_at=300)
    _steady(TwitchDetector(), PassDetector(), stream, 5000)
