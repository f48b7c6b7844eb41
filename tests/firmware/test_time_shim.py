# The virtual probe's time module: MicroPython's ticks API with the boards' 2^30 us period, on virtual time.
import micropython
import time
import vclock
from mptest import eq

PERIOD = 1 << 30


def test_time_is_the_virtual_probe_clock():
    eq(time.__file__.endswith("sim/mpy/time.py"), True, time.__file__)


def test_sleep_advances_virtual_time_exactly():
    vclock.reset(0)
    t0 = time.ticks_us()
    time.sleep_ms(250)
    time.sleep_us(7)
    eq(time.ticks_diff(time.ticks_us(), t0), 250007)
    eq(time.ticks_ms(), 250)


def test_ticks_wrap_at_the_board_period():
    vclock.reset(PERIOD - 10)
    before = time.ticks_us()
    time.sleep_us(25)
    after = time.ticks_us()
    eq(after, 15)
    eq(time.ticks_diff(after, before), 25)
    eq(time.ticks_diff(before, after), -25)
    eq(time.ticks_add(PERIOD - 1, 2), 1)
    eq(time.ticks_add(3, -5), PERIOD - 2)


def test_ticks_diff_is_signed_over_half_the_period():
    eq(time.ticks_diff(PERIOD // 2 - 1, 0), PERIOD // 2 - 1)
    eq(time.ticks_diff(PERIOD // 2, 0), -(PERIOD // 2))


def _spin(n):
    micropython.heap_lock()
    try:
        for _ in range(n):
            time.sleep_us(1200)
            t = time.ticks_us()
            time.ticks_diff(t, 0)
    finally:
        micropython.heap_unlock()


def test_clock_calls_allocate_nothing():
    vclock.reset(0)
    _spin(2000)
    eq(time.ticks_us(), 2400000)


def test_realtime_mode_follows_the_host_clock():
    vclock.reset(0)
    vclock.set_realtime(True)
    try:
        t0 = time.ticks_us()
        time.sleep_ms(20)
        dt = time.ticks_diff(time.ticks_us(), t0)
    finally:
        vclock.set_realtime(False)
    assert 19000 <= dt < 500000, dt
