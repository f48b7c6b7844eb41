# The virtual probe's clock, in microseconds since the scenario started.
#
# Virtual mode (default): time moves only when the firmware sleeps, so a session runs as fast as the CPU allows
# and is repeatable to the bit. Real mode: time follows the host's monotonic clock, for live demos and latency.
# State lives in a preallocated list so the firmware's loop can read and advance it under heap_lock().
import sys


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

_state = [0, 0, 0]  # [virtual now us, real mode flag, host ticks at start]

# Called with no arguments after every sleep (even a zero one): the places where the board's radio delivers
# its events to the firmware, as a stack would between two pieces of application code. Empty unless a
# peripheral (vradio) registers itself; iterating an empty list allocates nothing.
hooks = []


def set_realtime(on):
    # Either way the clock carries on from where it is now, without a jump.
    _state[0] = now_us()
    _state[1] = 1 if on else 0
    _state[2] = _host_time.ticks_us() - _state[0]


def reset(now_us=0):
    _state[0] = now_us
    _state[2] = _host_time.ticks_us() - now_us


def now_us():
    if _state[1]:
        # The unix port's own ticks period is 2^62 us: no wrap to handle here.
        return _host_time.ticks_us() - _state[2]
    return _state[0]


_SLICE_US = 1000  # in real time, the radio is serviced at least this often during a long sleep


def sleep_us(us):
    if us > 0:
        if _state[1]:
            # As a board's stack sends at its connection events while the application sleeps: a notification
            # queued before a 10 ms sleep leaves at its event, not when the sleep is over.
            while us > _SLICE_US and hooks:
                _host_time.sleep_us(_SLICE_US)
                us -= _SLICE_US
                for hook in hooks:
                    hook()
            _host_time.sleep_us(us)
        else:
            _state[0] += us
    for hook in hooks:
        hook()


def advance_to(t_us):
    # Virtual mode: jump forward to t_us (never backwards). Real mode: wait until then.
    sleep_us(t_us - now_us())
