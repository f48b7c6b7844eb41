# The virtual probe's clock, in microseconds since the scenario started.
#
# Virtual mode (default): time moves when the firmware sleeps and, with the board's CPU model on, by what the
# board would have taken for the firmware's own work. A session runs as fast as this machine allows. Real mode:
# time follows the host's monotonic clock, for live demos and latency.
#
# The board's CPU model (cpu_model(), "--cpu board"): the firmware's compute time is the thread's on-CPU time
# between two calls into the emulated modules (time, machine, bluetooth, the flash), times the scale from this
# machine's MicroPython to the board's (sim/mpy/cpuscale.py measures it). Time inside the emulated modules and
# chips is the hardware's, not the firmware's: enter() and leave() bracket it, and it is not charged. Bus and
# flash time are charged by whoever models them (charge_us). "--cpu ideal" charges nothing: compute is free and
# runs repeat to the bit.
#
# On-CPU time: wall time less the time the thread waited for a core (run_delay in /proc/thread-self/schedstat,
# nanoseconds, exact whenever the thread is running), so a busy host changes nothing. That holds while the thread
# only computes; where it blocked (the REPL waiting for a key) the kernel's own on-CPU count (schedstat's first
# field, brought up to date at least every scheduler tick) is taken instead.
#
# State lives in preallocated lists so the firmware's loop can read and advance it under heap_lock().
import sys

import micropython


def _builtin(name):
    # Reach MicroPython's own module past the virtual probe's stand-in of the same name.
    saved_mod = sys.modules.pop(name, None)
    saved_path = sys.path[:]
    sys.path.clear()
    try:
        return __import__(name)
    finally:
        sys.path.extend(saved_path)
        if saved_mod is not None:
            sys.modules[name] = saved_mod


_host_time = _builtin("time")
_ticks_us = _host_time.ticks_us

_state = [0, 0, 0]  # [virtual now us, real mode flag, host ticks at start]

# The CPU model: [on, depth of emulated calls, host us at the last leave, run_delay ns then, scale (board us per
# 1024 host us), board ns*1024 not yet charged, real mode: board us charged ahead of the host clock, host ns of
# firmware compute in all, board us charged for it in all, bus us charged in all, flash us charged in all,
# host ns of each call's own overhead (calling a Python stand-in where the board has a builtin) not charged,
# the kernel's on-CPU ns at the last leave]
_cpu = [0, 0, 0, 0, 1024, 0, 0, 0, 0, 0, 0, 0, 0]
_TICK_SLACK_NS = 3000000  # the kernel's on-CPU count lags by up to a scheduler tick at each end
interrupted = [0]  # a Ctrl-C held back where it would have been lost (flashfs.DeviceFS.stat), raised at enter()
_stat = [None]  # /proc/thread-self/schedstat, open
# [function, host us between calls, host us at the last call]: called from enter(), outside the charged time
# (the scale tracker, the heap watch). The overloaded firmware never sleeps, so this cannot wait for a sleep.
_poll = [None, 100000, 0]
_statbuf = bytearray(96)  # one reading of _stat

# Called with no arguments after every sleep (even a zero one): the places where the board's radio delivers
# its events to the firmware, as a stack would between two pieces of application code. Empty unless a
# peripheral (vradio) registers itself; iterating an empty list allocates nothing.
hooks = []


def set_realtime(on):
    # Either way the clock carries on from where it is now, without a jump.
    _state[0] = now_us()
    _state[1] = 1 if on else 0
    _state[2] = _ticks_us() - _state[0]
    _cpu[6] = 0


def reset(now_us=0):
    _state[0] = now_us
    _state[2] = _ticks_us() - now_us
    _cpu[6] = 0


def now_us():
    if _state[1]:
        # The unix port's own ticks period is 2^62 us: no wrap to handle here. What the CPU model charged
        # and real time has not caught up with yet is already the device's past.
        return _ticks_us() - _state[2] + _cpu[6]
    return _state[0]


# -- the board's CPU ---------------------------------------------------------------------------------------------

@micropython.viper
def _first_field(buf) -> int:
    p = ptr8(buf)
    i = 0
    v = 0
    while p[i] >= 48 and p[i] <= 57:
        v = v * 10 + p[i] - 48
        i += 1
    return v


@micropython.viper
def _second_field(buf) -> int:
    # "<on-cpu ns> <run_delay ns> <slices>\n": the second number.
    p = ptr8(buf)
    i = 0
    while p[i] != 32:
        i += 1
    i += 1
    v = 0
    while p[i] >= 48 and p[i] <= 57:
        v = v * 10 + p[i] - 48
        i += 1
    return v


def _open_stat():
    # Through a root-less host filesystem: the device's flash may be mounted at "/" already.
    import vfs
    _stat[0] = vfs.VfsPosix().open("/proc/thread-self/schedstat", "rb")


def _run_delay_ns():
    # Reads the file; _first_field(_statbuf) then gives the on-CPU ns of the same reading.
    f = _stat[0]
    f.seek(0)
    f.readinto(_statbuf)
    return _second_field(_statbuf)


def cpu_model(scale_q10):
    """Charge the firmware's compute at scale_q10/1024 board us per host us from now on; 0 turns it off."""
    if _stat[0] is None:
        _open_stat()
    _cpu[0] = 1 if scale_q10 else 0
    _cpu[4] = scale_q10 or 1024
    _cpu[1] = 0
    for i in range(5, 11):
        _cpu[i] = 0
    _cpu[3] = _run_delay_ns()
    _cpu[12] = _first_field(_statbuf)
    _cpu[2] = _ticks_us()


def on_poll(fn, period_us=100000):
    """fn() every period_us of host time while the CPU model runs, between two firmware calls into the board."""
    _poll[0] = fn
    _poll[1] = period_us
    _poll[2] = _ticks_us()


def cpu_stop():
    """No more charging; the totals stay for cpu_totals()."""
    _cpu[0] = 0


def set_scale(scale_q10, overhead_ns=-1):
    _cpu[4] = scale_q10
    if overhead_ns >= 0:
        _cpu[11] = overhead_ns


def cpu_us():
    """Host on-CPU us of this thread (for calibrating the scale): wall time less time spent waiting for a core."""
    if _stat[0] is None:
        _open_stat()
    return _ticks_us() - _run_delay_ns() // 1000


def enter():
    # The firmware calls into the emulated hardware: what it computed since it last left is charged.
    c = _cpu
    if interrupted[0] and not c[1]:
        interrupted[0] = 0
        raise KeyboardInterrupt
    if c[0] and not c[1]:
        w = _ticks_us()
        rd = _run_delay_ns()
        ns = (w - c[2]) * 1000 - (rd - c[3])
        if ns > _TICK_SLACK_NS:
            on_cpu = _first_field(_statbuf) - c[12]
            if ns > on_cpu + _TICK_SLACK_NS:
                ns = on_cpu  # it blocked (waited for input): only its time on a core counts
        ns -= c[11]
        if ns < 0:
            ns = 0
        c[7] += ns
        acc = c[5] + ns * c[4]
        us = acc // 1024000
        c[5] = acc - us * 1024000
        c[8] += us
        if _state[1]:
            _owe(us - ns // 1000)  # ns // 1000 of it has passed in real time already
        else:
            _state[0] += us
        p = _poll
        if p[0] is not None and w - p[2] >= p[1]:
            p[2] = w
            c[1] = 1
            p[0]()
            c[1] = 0
    c[1] += 1


def leave():
    c = _cpu
    c[1] -= 1
    if c[0] and not c[1]:
        c[3] = _run_delay_ns()  # run_delay first: the reads' own cost falls outside the charged interval
        c[12] = _first_field(_statbuf)
        c[2] = _ticks_us()


def call_out(fn, a, b):
    # From inside the emulated hardware into firmware code (an IRQ handler, a timer callback): its compute is
    # the firmware's.
    c = _cpu
    depth = c[1]
    c[1] = 1
    leave()
    try:
        return fn(a, b) if b is not None else fn(a)
    finally:
        enter()
        c[1] = depth


def charge_us(us, flash=0):
    """Hardware time the firmware waits through (bus transfers, flash stalls): the device clock moves on. Only
    with the board's CPU model on: "--cpu ideal" keeps the hardware as free as the compute."""
    if not _cpu[0]:
        return
    _cpu[10 if flash else 9] += us
    if _state[1]:
        _owe(us)
    else:
        _state[0] += us


_OWE_SLICE_US = 1000


def _owe(us):
    # Real mode: the board would have taken longer than this machine did. The device clock is ahead by what is
    # owed; the firmware's thread waits it out in slices, while the clock stands still, so it runs no faster
    # than the board would.
    c = _cpu
    c[6] += us
    if c[6] > _OWE_SLICE_US:
        t0 = _ticks_us()
        _host_time.sleep_us(c[6])
        c[6] -= _host_time.ticks_diff(_ticks_us(), t0)
        if c[6] < 0:
            c[6] = 0


def cpu_totals(out):
    """Fills out (a list of 4): host ns of firmware compute, board us charged for it, bus us, flash us."""
    out[0] = _cpu[7]
    out[1] = _cpu[8]
    out[2] = _cpu[9]
    out[3] = _cpu[10]
    return out


# -- sleeping --------------------------------------------------------------------------------------------------

_SLICE_US = 1000  # the radio is serviced at least this often (device time) during a long sleep


def sleep_us(us):
    # As a board's stack sends at its connection events while the application sleeps: a notification queued
    # before a 100 ms sleep leaves at its event, not when the sleep is over. With a radio (hooks), the sleep
    # passes in slices, each followed by the hooks; in virtual time the radio's pacing hook holds each slice to
    # real time, so what the stack sends during the sleep leaves when it would on a board.
    if us > 0:
        if _state[1]:
            while us > _SLICE_US and hooks:
                _host_time.sleep_us(_SLICE_US)
                us -= _SLICE_US
                for hook in hooks:
                    hook()
            _host_time.sleep_us(us)
        else:
            end = _state[0] + us
            while end - _state[0] > _SLICE_US and hooks:
                _state[0] += _SLICE_US
                for hook in hooks:
                    hook()
            if end > _state[0]:
                _state[0] = end
    for hook in hooks:
        hook()


def advance_to(t_us):
    # Virtual mode: jump forward to t_us (never backwards). Real mode: wait until then.
    sleep_us(t_us - now_us())
