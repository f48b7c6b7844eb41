# The `machine` module of the virtual probe, for the MicroPython unix port.
#
# Placed ahead of firmware/ on MICROPYPATH, it shadows the built-in module, so the firmware's `import machine`
# gets I2C, Pin, Timer, WDT, ADC and PWM wired to the virtual board (vboard.board) instead of hardware. The
# signatures are the MicroPython ones the firmware uses on ESP32-S3 and RP2040; behaviour follows the hardware
# where the firmware can see it: an address nobody answers raises OSError(ENODEV) (or EIO, see vboard.Bus),
# an injected fault raises the injected errno, writes to read-only registers have no effect.
import sys

import vboard
import vclock
from vclock import enter, leave


def _builtin_machine():
    # The unix port's own machine module (mem8/16/32, Signal, PinBase, ...), reached past this file: take this
    # module out of sys.modules and empty the path so the import can only find the built-in, then put both back.
    mine = sys.modules.pop("machine", None)
    path = list(sys.path)
    sys.path.clear()
    try:
        import machine as builtin
    finally:
        sys.path.extend(path)
        if mine is not None:
            sys.modules["machine"] = mine
    return builtin


_builtin = _builtin_machine()
PinBase = _builtin.PinBase
Signal = _builtin.Signal
mem8 = _builtin.mem8
mem16 = _builtin.mem16
mem32 = _builtin.mem32
time_pulse_us = _builtin.time_pulse_us
del _builtin


def idle():
    # A board's WFI: the core sleeps until an interrupt, and its tick wakes it at least every millisecond. The
    # radio's events are delivered then (vclock.hooks); at most 1 ms of device time passes.
    vclock.enter()
    try:
        vclock.sleep_us(1000)
    finally:
        vclock.leave()


_board = vboard.board

# reset_cause() values (ESP32 numbering)
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5


class I2C:
    """machine.I2C on a virtual bus. Each call is one bus transaction against the chip at `addr`, and takes its
    bits' time at the bus frequency (vclock.charge_us): the firmware waits for the bus as on a board.

    Each method brackets itself (enter, try, settle, leave) rather than calling a shared helper: whatever runs
    before enter() is charged as the firmware's compute, so the path to it is kept as short as a builtin's."""

    def __init__(self, id=0, *, scl=None, sda=None, freq=400_000, timeout=50_000):
        self._bus = _board.bus(id)
        self.init(scl=scl, sda=sda, freq=freq, timeout=timeout)

    def init(self, *, scl=None, sda=None, freq=400_000, timeout=50_000):
        self._bus.set_freq(freq, _board.i2c)
        self.scl = scl
        self.sda = sda
        self.timeout = timeout

    def deinit(self):
        pass

    def __repr__(self):
        return f"I2C({self._bus.id}, freq={self._bus.freq})"

    def scan(self):
        bus = self._bus
        enter()
        try:
            _board.sync()
            found = bus.scan()
            bus.pending = 112 * 11  # one address byte with its start and stop for each of 0x08-0x77
            return found
        finally:
            bus.settle()
            leave()

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        _check_addrsize(addrsize)
        bus = self._bus
        enter()
        try:
            _board.sync()
            dev = bus.begin(addr, 3 + len(buf), 3)
            dev.i2c_select(memaddr)
            dev.i2c_read(buf)
        finally:
            bus.settle()
            leave()

    def readfrom_mem(self, addr, memaddr, nbytes, *, addrsize=8):
        buf = bytearray(nbytes)
        self.readfrom_mem_into(addr, memaddr, buf, addrsize=addrsize)
        return bytes(buf)

    def writeto_mem(self, addr, memaddr, buf, *, addrsize=8):
        _check_addrsize(addrsize)
        bus = self._bus
        enter()
        try:
            _board.sync()
            dev = bus.begin(addr, 2 + len(buf), 2)
            dev.i2c_select(memaddr)
            dev.i2c_write(buf, 0)
        finally:
            bus.settle()
            leave()

    def readfrom_into(self, addr, buf, stop=True):
        bus = self._bus
        enter()
        try:
            _board.sync()
            dev = bus.begin(addr, 1 + len(buf), 2)
            dev.i2c_read(buf)
        finally:
            bus.settle()
            leave()

    def readfrom(self, addr, nbytes, stop=True):
        buf = bytearray(nbytes)
        self.readfrom_into(addr, buf, stop)
        return bytes(buf)

    def writeto(self, addr, buf, stop=True):
        bus = self._bus
        enter()
        try:
            _board.sync()
            dev = bus.begin(addr, 1 + len(buf), 2)
            if len(buf):
                dev.i2c_select(buf[0])
                dev.i2c_write(buf, 1)
            return len(buf)
        finally:
            bus.settle()
            leave()

    def writevto(self, addr, vector, stop=True):
        data = bytearray()
        for b in vector:
            data.extend(b)
        return self.writeto(addr, data, stop)


def _check_addrsize(addrsize):
    if addrsize != 8:
        raise ValueError("the emulated chips use 8-bit register addresses")


class Pin(PinBase):
    """machine.Pin on the virtual board. Levels the MCU drives are visible to vboard (and logged when
    vboard.board.pin_log is a list); inputs read what vboard.board.drive_pin() puts on them."""

    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2
    DRIVE_0 = 0
    DRIVE_1 = 1
    DRIVE_2 = 2
    DRIVE_3 = 3

    def __init__(self, id, mode=-1, pull=-1, *, value=None, drive=None, alt=None):
        self.id = id
        self._st = _board.pin(id)
        self.init(mode, pull, value=value)

    def init(self, mode=-1, pull=-1, *, value=None, drive=None, alt=None):
        st = self._st
        if value is not None:
            st.out = 1 if value else 0
        if mode != -1:
            st.mode = mode
        if pull != -1:
            st.pull = pull
        if mode in (self.OUT, self.OPEN_DRAIN):
            _board.mcu_drive(st, st.out)

    def value(self, x=None):
        enter()
        try:
            _board.sync()
            if x is None:
                return self._st.level()
            _board.mcu_drive(self._st, 1 if x else 0)
            return None
        finally:
            leave()

    def __call__(self, x=None):
        return self.value(x)

    def on(self):
        enter()
        try:
            _board.mcu_drive(self._st, 1)
        finally:
            leave()

    def off(self):
        enter()
        try:
            _board.mcu_drive(self._st, 0)
        finally:
            leave()

    def toggle(self):
        enter()
        try:
            _board.mcu_drive(self._st, 0 if self._st.out else 1)
        finally:
            leave()

    def mode(self, mode=None):
        if mode is None:
            return self._st.mode
        self.init(mode)
        return None

    def pull(self, pull=None):
        if pull is None:
            return self._st.pull
        self._st.pull = pull
        return None

    def irq(self, handler=None, trigger=3, *, priority=1, wake=None, hard=False):
        st = self._st
        st.handler = handler
        st.trigger = trigger
        st.pin = self
        return _PinIRQ(st)

    def __repr__(self):
        return f"Pin({self.id!r})"


class _PinIRQ:
    def __init__(self, st):
        self._st = st

    def trigger(self, trigger=None):
        if trigger is not None:
            self._st.trigger = trigger
        return self._st.trigger

    def flags(self):
        return self._st.trigger


def _pin_id(pin):
    return pin.id if isinstance(pin, Pin) else pin


class ADC:
    """machine.ADC: reads the voltage vboard.board.set_adc_uv() put on the pin."""

    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    WIDTH_9BIT = 9
    WIDTH_10BIT = 10
    WIDTH_11BIT = 11
    WIDTH_12BIT = 12
    # Full-scale input per attenuation on ESP32-S3 (approximate, from Espressif's ADC documentation); an RP2040
    # ADC (no attenuation argument) spans 0..3.3 V.
    _FULL_SCALE_UV = (950_000, 1_250_000, 1_750_000, 3_100_000)

    def __init__(self, pin, *, atten=None):
        self.id = _pin_id(pin)
        pins = _board.adc_pins
        if pins is not None and self.id not in pins:
            raise ValueError("Pin doesn't have ADC capabilities")
        self._atten = atten
        self._bits = 12

    def atten(self, atten):
        self._atten = atten

    def width(self, bits):
        self._bits = bits

    def _full_scale_uv(self):
        return 3_300_000 if self._atten is None else self._FULL_SCALE_UV[self._atten]

    def read_uv(self):
        enter()
        try:
            _board.sync()
            uv = _board.adc_uv.get(self.id, 0)
            return max(0, min(uv, self._full_scale_uv()))
        finally:
            leave()

    def read_u16(self):
        return self.read_uv() * 65535 // self._full_scale_uv()

    def read(self):
        return self.read_u16() >> (16 - self._bits)


class ADC_RP2:
    """machine.ADC as the rp2 port builds it: ADC(pin) and read_u16() alone, 0..3.3 V full scale (no attenuation,
    no read_uv, no width: ports/rp2/machine_adc.c). The virtual probe makes it the module's ADC on an RP2040."""

    CORE_TEMP = 4

    def __init__(self, pin):
        self.id = _pin_id(pin)
        pins = _board.adc_pins
        if pins is not None and self.id not in pins:
            raise ValueError("Pin doesn't have ADC capabilities")

    def read_u16(self):
        enter()
        try:
            _board.sync()
            uv = _board.adc_uv.get(self.id, 0)
            return max(0, min(uv, 3_300_000)) * 65535 // 3_300_000
        finally:
            leave()


ADC_ESP32 = ADC


class PWM:
    """machine.PWM: the settings are the output (vboard.board.pwm[pin id] is this object)."""

    def __init__(self, dest, *, freq=None, duty_u16=None, duty_ns=None, invert=False):
        self.id = _pin_id(dest)
        self._freq = 0
        self._duty_u16 = 0
        self.invert = invert
        self.active = True
        self.init(freq=freq, duty_u16=duty_u16, duty_ns=duty_ns)
        _board.pwm[self.id] = self

    def init(self, *, freq=None, duty_u16=None, duty_ns=None, invert=None):
        if freq is not None:
            self._freq = freq
        if duty_u16 is not None:
            self._duty_u16 = duty_u16
        if duty_ns is not None:
            self.duty_ns(duty_ns)
        if invert is not None:
            self.invert = invert
        self.active = True

    def deinit(self):
        self.active = False

    def freq(self, value=None):
        if value is None:
            return self._freq
        self._freq = value
        return None

    def duty_u16(self, value=None):
        if value is None:
            return self._duty_u16
        self._duty_u16 = max(0, min(65535, value))
        return None

    def duty_ns(self, value=None):
        period_ns = 1_000_000_000 // self._freq if self._freq else 0
        if value is None:
            return self._duty_u16 * period_ns // 65535
        self._duty_u16 = min(65535, value * 65535 // period_ns) if period_ns else 0
        return None


class Timer:
    """machine.Timer on board time: the callback runs inside vboard.advance_us() when its time comes."""

    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id=-1, *, mode=PERIODIC, period=-1, freq=-1, callback=None, tick_hz=1000):
        ids = _board.timer_ids
        if ids is not None and not ids[0] <= id <= ids[1]:
            # rp2: only the soft timer, -1; ESP32-S3: -1 (esp_timer) and hardware timers 0-3
            raise ValueError("Timer doesn't exist" if ids[1] < 0 else
                             "Timer(%d) doesn't exist, there are only %d hardware timers" % (id, ids[1] + 1))
        self.id = id
        self._t = vboard.Timer(self)
        if callback is not None or period != -1 or freq != -1:
            self.init(mode=mode, period=period, freq=freq, callback=callback, tick_hz=tick_hz)

    def init(self, *, mode=PERIODIC, period=-1, freq=-1, callback=None, tick_hz=1000):
        t = self._t
        if freq > 0:
            interval = 1_000_000 // freq
        elif period >= 0:
            interval = period * 1_000_000 // tick_hz
        else:
            raise ValueError("period or freq needed")
        t.interval_us = max(1, interval)
        t.periodic = mode == self.PERIODIC
        t.callback = callback
        t.due_us = _board.now_us + t.interval_us
        t.active = True
        if t not in _board.timers:
            _board.timers.append(t)

    def deinit(self):
        self._t.active = False
        if self._t in _board.timers:
            _board.timers.remove(self._t)


class WDT:
    """machine.WDT: if not fed within `timeout` ms of board time, vboard.board.wdt_expired goes True, the
    reset cause becomes WDT_RESET and vboard.board.on_wdt() runs (the console reboots the firmware there)."""

    def __init__(self, id=0, timeout=5000):
        _board.wdt_start(timeout)

    def feed(self):
        enter()
        try:
            _board.sync()
            _board.wdt_feed()
        finally:
            leave()


def bitstream(pin, encoding, timing, buf):
    # Kept whole for the scenario to read back (e.g. the RGB LED's colour on a WS2812).
    _board.bitstreams[_pin_id(pin)] = bytes(buf)


def freq(hz=None):
    if hz is None:
        return _board.cpu_freq
    _board.cpu_freq = hz
    return None


def unique_id():
    return _board.uid


def reset_cause():
    return _board.reset_cause


def _restart(cause):
    _board.reset_cause = cause
    if _board.on_reset is not None:
        _board.on_reset()
    raise SystemExit(cause)


def reset():
    _restart(HARD_RESET)


def soft_reset():
    _restart(SOFT_RESET)


def deepsleep(time_ms=None):
    _restart(DEEPSLEEP_RESET)


def lightsleep(time_ms=None):
    if _board.on_sleep is not None:
        _board.on_sleep(time_ms)


def disable_irq():
    return 0


def enable_irq(state=0):
    pass
