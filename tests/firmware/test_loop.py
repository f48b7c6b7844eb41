# The sampling loop with the real drivers on the virtual board: rate, time stamps, values, faults, allocation.
# mp-heapsize: 4M
import micropython
import machine
import time
import vboard
import vclock
import depth_model
from vsources import G, HallAt, ImuAtRest
import packet
from attitude import Attitude
from depth import DepthEstimator
from drivers.lsm6dsox import LSM6DSOX
from drivers.tmag5273 import TMAG5273
from loop import MAX_PAIRS, WATERMARK_PAIRS, Config, SamplingLoop, imu_odr_for, nominal_odr_mhz
from lsm6dsox_emu import LSM6DSOXEmu
from ring import SampleRing
from tmag5273_emu import TMAG5273Emu
from mptest import eq, lcg, near

def _rig(depth_mm=20.0, start_us=0, rate_hz=200):
    vboard.reset()
    vclock.reset(start_us)
    vboard.board.now_us = start_us
    vboard.board.clock = vclock.now_us
    imu_src = ImuAtRest()
    emus = (LSM6DSOXEmu(0x6A, imu_src), TMAG5273Emu("A1", source=HallAt(depth_mm, depth_model.S_A_MM)),
            TMAG5273Emu("B1", source=HallAt(depth_mm, depth_model.S_B_MM)))
    for e in emus:
        vboard.attach(0, e, e.addr)
    i2c = machine.I2C(0, scl=machine.Pin(6), sda=machine.Pin(5), freq=1000000)
    imu = LSM6DSOX(i2c, 0x6A, odr_hz=imu_odr_for(rate_hz), watermark=2 * WATERMARK_PAIRS, max_words=2 * MAX_PAIRS)
    halls = (TMAG5273(i2c, 0x35), TMAG5273(i2c, 0x22))
    est = DepthEstimator()
    est.load(depth_model.calibration())
    ring = SampleRing(256)
    reader = ring.reader()
    loop = SamplingLoop(imu, halls, Attitude(), est, ring, Config(guide_mdeg=30000, rate_hz=rate_hz, sin_g_q14=8192),
                        odr_mhz=imu.odr_mhz())
    return loop, reader, imu_src, emus


class Collected:
    def __init__(self):
        self.seq = []
        self.t = []
        self.needle = []
        self.depth = []
        self.flags = []


def _i16(b, i):
    v = b[i] | b[i + 1] << 8
    return v - 0x10000 if v & 0x8000 else v


def _drain(ring, got):
    out = bytearray(20 * 12)
    while True:
        n = ring.drain_into(out, 12)
        if not n:
            return
        for k in range(n):
            o = k * 20
            got.seq.append(out[o] | out[o + 1] << 8)
            got.t.append(out[o + 2] | out[o + 3] << 8 | out[o + 4] << 16 | out[o + 5] << 24)
            got.needle.append(_i16(out, o + 6))
            got.depth.append(_i16(out, o + 10))
            got.flags.append(out[o + 18] | (out[o + 19] & 0x0F) << 8)


def _run_for(loop, ring, got, seconds):
    end = vclock.now_us() + int(seconds * 1e6)
    while vclock.now_us() < end:
        loop.step()
        _drain(ring, got)


def test_output_rate_time_stamps_and_values_at_rest():
    loop, ring, _, _ = _rig(20.0)
    got = Collected()
    _run_for(loop, ring, got, 3.0)
    n = len(got.seq)
    assert 596 <= n <= 602, n  # 200 Hz of the chip's 833.375 Hz
    for i in range(1, n):
        eq((got.seq[i] - got.seq[i - 1]) & 0xFFFF, 1, "seq step")
        dt = time.ticks_diff(got.t[i], got.t[i - 1])
        assert 3500 <= dt <= 6100, dt  # one sample every 4.17-6 IMU periods
    span = time.ticks_diff(got.t[-1], got.t[0])
    near(span / (n - 1), 5000, 15, "mean sample spacing (us)")
    settled = [i for i in range(n) if not got.flags[i] & packet.F_SETTLING]
    assert settled and settled[0] < 500, "attitude still settling after 2.5 s"
    for i in settled:
        near(got.needle[i], 3000, 30, "needle angle (cdeg) at rest")
        near(got.depth[i], 2000, 20, "depth (d10um) at 20 mm")
        eq(got.flags[i] & (packet.F_IMU_FAULT | packet.F_HALL_FAULT | packet.F_STALE | packet.F_DEPTH_INVALID), 0)


def _steady(loop, ring, out, seconds):
    end = vclock.now_us() + seconds * 1000000
    micropython.heap_lock()
    try:
        while vclock.now_us() < end:
            loop.step()
            ring.drain_into(out, 12)
    finally:
        micropython.heap_unlock()


def test_steady_state_allocates_nothing():
    loop, ring, _, _ = _rig(30.0)
    got = Collected()
    _run_for(loop, ring, got, 1.0)  # boot transients (first FIFO batches, settling) may allocate
    out = bytearray(240)
    before = loop.samples
    _steady(loop, ring, out, 30)  # MemoryError under heap_lock on any allocation
    made = loop.samples - before
    assert 5990 <= made <= 6010, made  # 30 s at 200 Hz, every sample produced with the heap locked


def test_unplugged_imu_is_flagged_paced_and_recovers():
    loop, ring, _, emus = _rig(20.0)
    got = Collected()
    _run_for(loop, ring, got, 2.0)
    vboard.detach(0, 0x6A)
    start = len(got.seq)
    _run_for(loop, ring, got, 1.0)
    lost = got.flags[start + 5:]
    assert len(lost) >= 180, len(lost)  # still ~200 samples/s with the IMU gone
    for i in range(start + 5, len(got.seq)):
        eq(got.flags[i] & (packet.F_IMU_FAULT | packet.F_STALE), packet.F_IMU_FAULT | packet.F_STALE)
        eq(got.needle[i], packet.NA, "needle angle while the IMU is gone")
        near(got.depth[i], 2000, 20, "depth keeps coming")
    vboard.attach(0, emus[0], 0x6A)
    back = len(got.seq)
    _run_for(loop, ring, got, 2.0)
    tail = range(back + 250, len(got.seq))
    assert len(tail) > 100
    for i in tail:
        eq(got.flags[i] & packet.F_IMU_FAULT, 0, "IMU fault cleared")
        near(got.needle[i], 3000, 60, "needle angle back")


def test_unplugged_needle_sensor_gives_no_depth_and_recovers():
    loop, ring, _, emus = _rig(20.0)  # at 20 mm only sensor A sees the magnet within its table
    got = Collected()
    _run_for(loop, ring, got, 1.0)
    vboard.detach(0, 0x35)
    start = len(got.seq)
    _run_for(loop, ring, got, 1.0)
    for i in range(start + 3, len(got.seq)):
        eq(got.flags[i] & (packet.F_HALL_FAULT | packet.F_DEPTH_INVALID), packet.F_HALL_FAULT | packet.F_DEPTH_INVALID)
        eq(got.depth[i], packet.NA, "depth while its sensor is gone")
    vboard.attach(0, emus[1], 0x35)
    back = len(got.seq)
    _run_for(loop, ring, got, 1.5)
    for i in range(back + 150, len(got.seq)):
        eq(got.flags[i] & (packet.F_HALL_FAULT | packet.F_DEPTH_INVALID), 0, "needle sensor back")
        near(got.depth[i], 2000, 20)


def test_stuck_imu_data_is_a_fault():
    loop, ring, _, _ = _rig(20.0)
    got = Collected()
    _run_for(loop, ring, got, 1.0)

    def frozen(t_us, out):
        out[0] = 1
        out[1] = 2
        out[2] = 3
        out[3] = 4
        out[4] = 5
        out[5] = -G

    vboard.bus(0).devices[0x6A].source = frozen
    start = len(got.seq)
    _run_for(loop, ring, got, 0.5)
    assert any(f & packet.F_IMU_FAULT for f in got.flags[start:]), "stuck data not flagged"


def _twitch_flagged_once(rate_hz):
    loop, ring, src, _ = _rig(20.0, rate_hz=rate_hz)
    got = Collected()
    _run_for(loop, ring, got, 2.0)
    src.burst_at = vclock.now_us() + 200000
    start = len(got.seq)
    _run_for(loop, ring, got, 1.0)
    hits = [i for i in range(start, len(got.seq)) if got.flags[i] & packet.F_TWITCH]
    eq(len(hits), 1, "samples flagged TWITCH")
    assert time.ticks_diff(got.t[hits[0]], src.burst_at) < 60000, "twitch reported late"


def test_a_twitch_sets_the_flag_on_one_sample():
    _twitch_flagged_once(200)


def test_time_stamps_cross_the_tick_wrap():
    loop, ring, _, _ = _rig(20.0, (1 << 30) - 1500000)  # ticks_us() wraps 1.5 s in
    got = Collected()
    _run_for(loop, ring, got, 3.0)
    wrapped = [i for i in range(1, len(got.t)) if got.t[i] < got.t[i - 1]]
    eq(len(wrapped), 1, "wraps seen")
    i = wrapped[0]
    dt = time.ticks_diff(got.t[i], got.t[i - 1])
    assert 3500 <= dt <= 6100, dt
    for k in range(i + 1, len(got.seq)):
        eq(got.flags[k] & (packet.F_IMU_FAULT | packet.F_STALE), 0, "no fault from the wrap")


# ---- 1000 Hz output: the IMU at 1666 Hz ----------------------------------------------------------------------


def test_imu_odr_for_each_output_rate():
    eq([imu_odr_for(r) for r in (10, 200, 416, 417, 800, 1000)], [833, 833, 833, 1666, 1666, 1666])
    eq((nominal_odr_mhz(833), nominal_odr_mhz(1666)), (833375, 1666750))
    loop, _, _, _ = _rig(20.0, rate_hz=1000)
    eq((loop.odr_mhz, loop.period_us, loop.hall_div), (1666750, 600, 4))
    near(loop.att.dt_s, 1.0 / 1666.75, 1e-12, "attitude dt")
    eq(loop.twitch.shift, 7)
    loop.set_odr(833375)
    eq((loop.odr_mhz, loop.period_us, loop.hall_div), (833375, 1200, 2))
    near(loop.att.dt_s, 1.0 / 833.375, 1e-12, "attitude dt")
    eq(loop.twitch.shift, 6)


class _Counted:
    # Counts read() calls on a needle sensor driver, passing them through.
    def __init__(self, drv):
        self.drv = drv
        self.n = 0

    def __call__(self):
        self.n += 1
        return self.drv.__class__.read(self.drv)


def test_1000_hz_rate_time_stamps_hall_reads_and_values():
    loop, ring, _, _ = _rig(20.0, rate_hz=1000)
    reads = _Counted(loop.hall[0])
    loop.hall[0].read = reads
    got = Collected()
    _run_for(loop, ring, got, 2.5)  # settling (settle_s, 2 s) over; the ring is drained every step
    start = len(got.seq)
    reads.n = 0
    t0 = vclock.now_us()
    _run_for(loop, ring, got, 3.0)
    span_s = (vclock.now_us() - t0) / 1e6
    n = len(got.seq) - start
    near(n / span_s, 1000, 1, "output samples per second of device time")
    near(reads.n / span_s, 416.7, 2, "needle sensor reads per second")
    for i in range(start + 1, len(got.seq)):
        eq((got.seq[i] - got.seq[i - 1]) & 0xFFFF, 1, "seq step")
        dt = time.ticks_diff(got.t[i], got.t[i - 1])
        assert 550 <= dt <= 1250, dt  # one or two IMU periods of 600 us
    span = time.ticks_diff(got.t[-1], got.t[start])
    near(span / (n - 1), 1000, 1, "mean sample spacing (us)")
    for i in range(start, len(got.seq)):
        near(got.needle[i], 3000, 30, "needle angle (cdeg) at rest")
        near(got.depth[i], 2000, 20, "depth (d10um) at 20 mm")
        eq(got.flags[i] & (packet.F_IMU_FAULT | packet.F_HALL_FAULT | packet.F_STALE | packet.F_DEPTH_INVALID
                           | packet.F_SETTLING), 0)


def test_steady_state_allocates_nothing_at_1000_hz():
    loop, ring, _, _ = _rig(30.0, rate_hz=1000)
    got = Collected()
    _run_for(loop, ring, got, 1.0)
    out = bytearray(240)
    before = loop.samples
    _steady(loop, ring, out, 10)
    made = loop.samples - before
    assert 9990 <= made <= 10010, made  # 10 s at 1000 Hz, every sample produced with the heap locked


def test_a_twitch_sets_the_flag_on_one_sample_at_1000_hz():
    _twitch_flagged_once(1000)


def _run_with_late_reads(seconds, seed):
    # The loop as on a busy device: some batches are read up to 8 ms late (a BLE event, a flash write), and
    # reading the FIFO takes bus time (12 bytes a pair, 9 bits a byte at 400 kHz), more for a late, fuller one.
    loop, ring, _, _ = _rig(20.0)
    got = Collected()
    rnd = lcg(seed)
    read_pairs = loop.imu.read_pairs

    def on_the_bus(out, max_pairs):
        n = read_pairs(out, max_pairs)
        time.sleep_us(n * 12 * 9 * 1000000 // 400000)
        return n

    loop.imu.read_pairs = on_the_bus
    end = vclock.now_us() + int(seconds * 1e6)
    while vclock.now_us() < end:
        if seed and rnd(0, 3) == 0:
            time.sleep_us(rnd(0, 8000))
        loop.step()
        _drain(ring, got)
    return got


def test_late_batch_reads_never_make_time_run_backwards_nor_stamp_samples_late():
    punctual = _run_with_late_reads(3.0, 0)
    busy = _run_with_late_reads(3.0, 7)
    n = min(len(punctual.seq), len(busy.seq))
    assert n > 550, n
    for i in range(1, len(busy.seq)):
        dt = time.ticks_diff(busy.t[i], busy.t[i - 1])
        assert dt > 0, "time ran backwards at sample %d (%d us)" % (i, dt)
    # The same samples (same sequence numbers, same chip clock): stamps within a ms of the punctual run's.
    worst = max(abs(time.ticks_diff(busy.t[i], punctual.t[i])) for i in range(50, n))
    assert worst < 1000, worst


def _depth_flags_after(loop, ring, got, seconds):
    start = len(got.seq)
    _run_for(loop, ring, got, seconds)
    return got.depth[start:], got.flags[start:]


def _frozen_hall(t_us, out):
    # The chip keeps converting, but its data no longer follow the magnet.
    out[0] = 1000000
    out[1] = 0
    out[2] = 2000000
    out[3] = 25000


def test_a_needle_sensor_with_stuck_data_is_a_fault_and_depth_is_na():
    loop, ring, _, emus = _rig(20.0)
    got = Collected()
    _run_for(loop, ring, got, 1.0)

    emus[1].source = _frozen_hall
    depth, flags = _depth_flags_after(loop, ring, got, 1.0)
    stuck = [i for i in range(len(flags)) if flags[i] & packet.F_HALL_FAULT]
    assert stuck and stuck[0] < 50, "stuck needle-sensor data not flagged within 0.25 s"
    for i in stuck:
        eq(depth[i], packet.NA, "depth while a needle sensor is faulted")


def test_after_i2c_errors_a_needle_sensor_gives_no_depth_until_it_converts_again():
    loop, ring, _, emus = _rig(20.0)
    got = Collected()
    _run_for(loop, ring, got, 1.0)
    vboard.bus(0).inject_error(0x35, count=-1)
    _run_for(loop, ring, got, 0.3)
    emus[1].source.move_to(23.0)  # the needle moves while the sensor is unreachable
    vboard.bus(0).clear_errors(0x35)
    depth, flags = _depth_flags_after(loop, ring, got, 1.5)
    for i in range(len(depth)):
        if depth[i] != packet.NA:
            near(depth[i], 2300, 30, "a depth after the fault must be the needle's new one, not the one before")
    assert depth[-1] != packet.NA and not flags[-1] & packet.F_HALL_FAULT, "the sensor never came back"


def test_a_saturated_needle_sensor_is_invalid_depth_not_a_fault():
    loop, ring, _, emus = _rig(20.0)
    got = Collected()
    _run_for(loop, ring, got, 1.0)
    source = emus[1].source

    def saturated(t_us, out):  # a magnet far too close: both axes beyond the range, at the rails
        out[0] = 900000000
        out[1] = 0
        out[2] = -900000000
        out[3] = 25000

    emus[1].source = saturated
    depth, flags = _depth_flags_after(loop, ring, got, 0.5)
    for f in flags[5:]:
        eq(f & packet.F_HALL_FAULT, 0, "saturation taken for a sensor fault")
    emus[1].source = source
    depth, flags = _depth_flags_after(loop, ring, got, 0.2)
    eq(flags[-1] & (packet.F_HALL_FAULT | packet.F_DEPTH_INVALID), 0, "depth not back with the field")
    near(depth[-1], 2000, 20)


def test_a_stuck_needle_sensor_stays_faulted_across_its_re_probes():
    loop, ring, _, emus = _rig(20.0)
    got = Collected()
    _run_for(loop, ring, got, 1.0)

    emus[1].source = _frozen_hall
    depth, flags = _depth_flags_after(loop, ring, got, 2.0)  # four re-probes
    first = next(i for i in range(len(flags)) if flags[i] & packet.F_HALL_FAULT)
    for i in range(first, len(flags)):
        assert flags[i] & packet.F_HALL_FAULT, "a stuck sensor's re-probe let its repeated field through"
        eq(depth[i], packet.NA)
