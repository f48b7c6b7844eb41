# The virtual probe's `time` module: MicroPython's API on the virtual clock (vclock).
#
# ticks_* wrap with the period of 32-bit boards, 2^30 us, so a long session meets the wrap exactly as on
# hardware (the unix port's own period, 2^62, would hide it). time() and localtime() come from the host.
# Every call is a call into the board: the firmware's compute up to it is charged first (vclock.enter).
from micropython import const

import vclock

_PERIOD = const(1 << 30)
_MASK = const((1 << 30) - 1)
_HALF = const(1 << 29)

_host = vclock._host_time
localtime = _host.localtime
mktime = _host.mktime
gmtime = getattr(_host, "gmtime", _host.localtime)
time_ns = _host.time_ns


def ticks_us():
    vclock.enter()
    t = vclock.now_us() & _MASK
    vclock.leave()
    return t


def ticks_ms():
    vclock.enter()
    t = (vclock.now_us() // 1000) & _MASK
    vclock.leave()
    return t


def ticks_cpu():
    vclock.enter()
    t = vclock.now_us() & _MASK
    vclock.leave()
    return t


def ticks_add(ticks, delta):
    return (ticks + delta) & _MASK


def ticks_diff(a, b):
    return ((a - b + _HALF) & _MASK) - _HALF


def sleep_us(us):
    vclock.enter()
    try:
        vclock.sleep_us(us)
    finally:
        vclock.leave()


def sleep_ms(ms):
    sleep_us(ms * 1000)


def sleep(s):
    sleep_us(int(s * 1000000))


def time():
    return _host.time()
