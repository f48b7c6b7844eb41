# Runs on the device (MicroPython), sent through the raw REPL by hil_tests/test_memory.py; prints one JSON line.
#
# Builds the device as app.py does and runs its main loop, Device.run(), unchanged. A meter link, serviced after
# every batch like the real links, samples the free heap into preallocated arrays and ends each phase by raising
# an exception made in advance, so measuring adds nothing to the heap:
#   warm-up   the first batches (boot transients may allocate)
#   locked    micropython.heap_lock(): any allocation in the loop raises MemoryError
#   free      the heap unlocked, gc.mem_free() sampled every every_ms: free RAM over time
# RUNS (set by the host ahead of this file) lists the runs: each a fresh Device with its links and phase lengths.
# Links: "serial" (samples on the console, as app.py adds it), "ble-stub" (the BLE link on a stand-in radio
# stack that does nothing and allocates nothing, so that what is measured is the link's own code).
import gc
import json
import time
from array import array

import micropython
from device import Device
from serial_link import SerialLink


class _Stop(Exception):
    pass


class _Meter:
    def __init__(self, cap):
        self.t = array("i", [0] * cap)
        self.free = array("i", [0] * cap)
        self.cap = cap
        self.n = 0
        self.batches = 0
        self.every = 100
        self.t0 = 0
        self.next = 0
        self.end = 0
        self.stop = _Stop()

    def start(self, seconds, every_ms):
        self.n = 0
        self.batches = 0
        self.every = every_ms
        self.t0 = time.ticks_ms()
        self.next = self.t0
        self.end = time.ticks_add(self.t0, int(seconds * 1000))

    def service(self):
        self.batches += 1
        now = time.ticks_ms()
        if time.ticks_diff(now, self.next) >= 0 and self.n < self.cap:
            self.t[self.n] = time.ticks_diff(now, self.t0)
            self.free[self.n] = gc.mem_free()
            self.n += 1
            self.next = time.ticks_add(self.next, self.every)
        if time.ticks_diff(now, self.end) >= 0:
            raise self.stop


class _QuietStack:
    # Stands in for bluetooth.BLE(): accepts what the BLE link asks of a stack, keeps nothing, allocates nothing.
    def active(self, on=None):
        return True

    def config(self, *args, **kwargs):
        return None

    def irq(self, handler):
        pass

    def gatts_register_services(self, services):
        return tuple(tuple(range(len(chars))) for _uuid, chars in services)

    def gatts_set_buffer(self, handle, n, append=False):
        pass

    def gatts_write(self, handle, value, send_update=False):
        pass

    def gatts_notify(self, conn, handle, data=None):
        return True

    def gap_advertise(self, interval_us, adv_data=None, resp_data=None, connectable=True):
        pass


def _phase(dev, meter, seconds, every_ms, locked):
    before = dev.loop.samples
    error = None
    gc.collect()
    meter.start(seconds, every_ms)
    if locked:
        micropython.heap_lock()
    try:
        dev.run()
    except _Stop:
        pass
    except MemoryError as e:
        error = e
    finally:
        if locked:
            micropython.heap_unlock()
    out = {"samples": dev.loop.samples - before, "batches": meter.batches, "seconds": seconds,
           "t_ms": list(meter.t[:meter.n]), "free": list(meter.free[:meter.n])}
    if error is not None:
        ms = time.ticks_diff(time.ticks_ms(), meter.t0)
        out["error"] = f"MemoryError after {ms} ms ({meter.batches} batches): {error}"
    return out


def _run(spec):
    dev = Device()
    names = []
    if "serial" in spec["links"]:
        dev.links.append(SerialLink(dev.ring))
        names.append("serial")
    if "ble-stub" in spec["links"]:
        from ble_link import BleLink

        dev.links.append(BleLink(dev, ble=_QuietStack(), firmware=dev.version))
        names.append("ble-stub")
    every = spec.get("every_ms", 100)
    meter = _Meter(int(spec["free_s"] * 1000 / every) + 8)
    dev.links.append(meter)
    gc.collect()
    dev.start()
    out = {"links": names, "rate_hz": dev.loop.cfg.rate_hz}
    try:
        out["warm"] = _phase(dev, meter, spec["warm_s"], 1000, False)
        out["locked"] = _phase(dev, meter, spec["locked_s"], 1000, True)
        if spec["free_s"] > 0:
            out["free"] = _phase(dev, meter, spec["free_s"], every, False)
    finally:
        dev.stop()
    out["overruns"] = dev.loop.overruns
    dev.links[:] = []
    gc.collect()
    out["free_after_collect"] = gc.mem_free()
    return out


print(json.dumps([_run(spec) for spec in RUNS]))  # noqa: F821 - RUNS is set by the host
