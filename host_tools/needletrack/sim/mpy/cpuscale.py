# The scale from this machine's MicroPython to a board's: kernel.py (a fixed workload, unchanged from
# shared/mcu) timed here by on-CPU time, against what each of its parts took on an RP2040 at 125 MHz under
# MicroPython's rp2 port (kernel-rp2040.json, measured on a cycle-counting emulator; its method is in the file).
#
# Of the kernel's parts, "call" (small functions called with a few arguments) predicted the firmware's loop on
# the RP2040 best (-4 % to +10 %); "py" and "pack" over-predict by 9-23 %, and viper code scales about twice as
# steeply as interpreted code. The probe charges interpreted-code time: the "call" ratio is the scale.
import json

import kernel
import vclock
import time as _stand_in  # the emulated module (MICROPYPATH puts it first)

SCALE_PART = "call"


class _CpuClock:
    # kernel.py times its parts with time.ticks_us(); here that is this thread's on-CPU time, so a busy host
    # does not inflate the figures. ticks_diff stays MicroPython's own (the "py" part uses it in its loop).
    ticks_us = vclock.cpu_us
    ticks_diff = vclock._host_time.ticks_diff


def rp2040_figures(path, code=".mpy armv6m"):
    with open(path) as f:
        for entry in json.load(f):
            if entry["code"] == code:
                return entry["us"]
    raise ValueError("no RP2040 figures for %s in %s" % (code, path))


def measure(mcu, repeats=3):
    """{part: RP2040 us / this machine's us} for each kernel part, measured now; mcu: rp2040_figures()."""
    saved = kernel.time
    kernel.time = _CpuClock
    try:
        here = kernel.run(kernel.N, repeats)
    finally:
        kernel.time = saved
    return {part: mcu[part] / max(1, us) for part, us in here.items()}


def _stand_in_calls(n):
    t = _stand_in.ticks_us
    for _ in range(n):
        t()


def _builtin_calls(n):
    t = vclock._host_time.ticks_us
    for _ in range(n):
        t()


def call_overhead_ns(n=5000, repeats=5):
    """Host ns a call into a stand-in (a Python function, through vclock.enter/leave) is charged beyond what a
    builtin call costs, as the board's ticks_us is: the stand-in's own overhead, not the firmware's. Measured with
    the CPU model charging at scale 1 and left off; the virtual clock is put back (a real-time clock, whose
    epoch the console has reported, is not touched: at scale 1 nothing was charged ahead of it)."""
    before = vclock._state[0]
    vclock.cpu_model(1024)
    totals = [0, 0, 0, 0]
    _stand_in_calls(n // 10)  # warm up: the first calls of a fresh process cost more
    _builtin_calls(n // 10)
    best_stub = best_builtin = 1 << 40
    for _ in range(repeats):
        vclock.cpu_totals(totals)
        a = totals[0]
        _stand_in_calls(n)
        vclock.cpu_totals(totals)
        best_stub = min(best_stub, totals[0] - a)
        t0 = vclock.cpu_us()
        _builtin_calls(n)
        best_builtin = min(best_builtin, (vclock.cpu_us() - t0) * 1000)
    vclock.cpu_model(0)
    vclock._state[0] = before
    vclock._cpu[6] = 0
    return max(0, (best_stub - best_builtin) // n)


class Tracker:
    # This machine switches between speed states (about 1.75x apart): a scale measured once at boot would charge
    # the firmware by the wrong one later. Every period_us of host time (outside the firmware's charged time),
    # the "call" part runs once more on an eighth of its iterations (its loop is linear in them; about 60 us here),
    # and the scale follows the median of the last five ratios. poll() is called every 20 ms of host time
    # (vclock.on_poll): the machine's speed changes within tens of milliseconds when the other core is busy.
    def __init__(self, mcu, board_factor):
        self.n = kernel.N // 8
        self.mcu_us = mcu[SCALE_PART] * self.n // kernel.N
        self.overhead_q10 = 0
        self.factor_q10 = int(board_factor * 1024 + 0.5)
        self.ratios = [0] * 5  # RP2040 us per 1024 host us
        self.sorted = [0] * 5
        self.i = 0
        self.fn = kernel._call

    def start(self, ratio, overhead_ns=0):
        # overhead_ns: host ns per call into a stand-in, at the speed the ratio was taken (call_overhead_ns)
        self.overhead_q10 = overhead_ns * 1024
        r = int(ratio * 1024)
        self.ratio0 = r
        for i in range(5):
            self.ratios[i] = r
        vclock.cpu_model(self.scale_q10())
        vclock.set_scale(self.scale_q10(), self.overhead_q10 >> 10)

    def scale_q10(self):
        s = self.sorted
        for i in range(5):
            s[i] = self.ratios[i]
        s.sort()
        return s[2] * self.factor_q10 >> 10

    def poll(self):
        saved = kernel.time
        kernel.time = _CpuClock
        try:
            us = self.fn(self.n)
        finally:
            kernel.time = saved
        self.ratios[self.i] = self.mcu_us * 1024 // max(1, us)
        self.i = (self.i + 1) % 5
        # The stand-ins' overhead follows this machine's speed as the kernel does.
        vclock.set_scale(self.scale_q10(), self.overhead_q10 // self.ratios[self.i - 1] * self.ratio0 >> 10)
