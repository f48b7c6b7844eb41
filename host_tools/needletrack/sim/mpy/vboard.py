# The virtual board behind the emulated `machine` module.
#
# One Board holds the I2C buses (each a map of 7-bit address -> emulated chip), pin levels, ADC voltages, PWM
# outputs, timers, the watchdog and the board's virtual time. Nothing runs by itself: board time moves only by
# advance_us(), which steps every plugged-in chip and fires timers and the watchdog in time order, so a run
# repeats to the microsecond. Either a test calls advance_us() itself, or `board.clock` is set to a function
# returning the virtual probe's time in us (vclock.now_us): then every machine call first brings the board up to
# that time (sync()), so chips have converted exactly what the firmware's clock says has elapsed.
#
# The paths the firmware takes once per sample (I2C reads, advance_us with integer sources) allocate nothing, so
# firmware tests can run them under micropython.heap_lock().
import errno

import vclock

# Access kinds of a register (RegisterDevice.kind)
RESERVED = 0
RO = 1
RW = 2
W1C = 3  # read, and write 1 to clear the bits in the writable mask


class RegisterDevice:
    """An I2C chip as a register file.

    The first byte written in a transaction sets the register pointer; each further byte written or read moves it
    on by next_ptr() (auto-increment, with the chip's own wrap-arounds). Each register has an access kind and a
    mask of writable bits; as on the chip, a write to a reserved or read-only register, or of a reserved bit, has
    no effect, and here it is also recorded in `violations` so tests can prove a driver never does it.
    Subclasses give the register map `spec`: (first, last, kind, reset value, writable mask) rows.
    """

    NAME = "chip"
    SIZE = 128

    def __init__(self, addr, spec):
        self.addr = addr
        self.bus = None
        self.kind = bytearray(self.SIZE)
        self.wmask = bytearray(self.SIZE)
        self.reset_values = bytearray(self.SIZE)
        for first, last, kind, reset, mask in spec:
            for reg in range(first, last + 1):
                self.kind[reg] = kind
                self.reset_values[reg] = reset
                self.wmask[reg] = mask
        self.regs = bytearray(self.SIZE)
        self.ptr = 0
        self.violations = []
        self.t_us = 0  # board time at which the chip was last powered on

    # -- power
    def power_on(self, t_us=0):
        """Power-on reset: registers to their reset values; t_us is the board time of power-up."""
        self.regs[:] = self.reset_values
        self.ptr = 0
        self.t_us = t_us

    def advance_us(self, dt):
        pass

    # -- bus side, called by machine.I2C
    def i2c_select(self, reg):
        self.ptr = reg & (self.SIZE - 1)

    def i2c_write(self, buf, start):
        n = len(buf)
        i = start
        while i < n:
            self.write_reg(self.ptr, buf[i])
            self.ptr = self.next_ptr(self.ptr)
            i += 1

    def i2c_read(self, buf):
        n = len(buf)
        i = 0
        while i < n:
            buf[i] = self.read_reg(self.ptr)
            self.ptr = self.next_ptr(self.ptr)
            i += 1
        self.after_read()

    # -- register file, overridden by chips with side effects
    def next_ptr(self, reg):
        return (reg + 1) & (self.SIZE - 1)

    def read_reg(self, reg):
        return self.regs[reg] if self.kind[reg] else 0

    def after_read(self):
        pass

    def write_reg(self, reg, val):
        kind = self.kind[reg]
        if kind == RW:
            mask = self.wmask[reg]
            fixed = self.reset_values[reg] & ~mask & 0xFF
            if val & ~mask & 0xFF != fixed:
                self.violation("reserved bits written", reg, val)
            val = (val & mask) | fixed
            self.regs[reg] = val
            self.on_write(reg, val)
        elif kind == W1C:
            self.regs[reg] &= ~(val & self.wmask[reg]) & 0xFF
            self.on_write(reg, val)
        else:
            self.violation("write to read-only register" if kind == RO else "write to reserved register", reg, val)

    def on_write(self, reg, val):
        pass

    def violation(self, what, reg, val):
        self.violations.append(f"{self.NAME}@0x{self.addr:02X}: {what}: 0x{reg:02X} <- 0x{val:02X}")


class Bus:
    """One I2C bus: the chips plugged into it, injected faults, and the traffic it carried."""

    def __init__(self, bus_id):
        self.id = bus_id
        self.devices = {}
        # address, or None for every address -> [errno, failures left (-1: until cleared), good ones first]
        self.faults = {}
        # An address nobody answers: ESP32 reports ENODEV; rp2 reports EIO. Set to match the board emulated.
        self.nack_errno = errno.ENODEV
        self.freq = 400_000  # what machine.I2C reports
        self.scl_hz = 400_000  # what the bus really clocks at
        self.transactions = 0
        self.bits = 0  # SCL clocks spent (9 per byte incl. address bytes, +1 per start/stop)
        self.pending = 0  # clocks of the transaction under way, charged as time when it ends (settle)
        self.rem = 0  # us * scl_hz not yet charged: no rounding drift over millions of transactions
        self.warned = 0

    def set_freq(self, freq, rules=None):
        """The frequency machine.I2C asks for, as the board's port handles it. rules: [source clock Hz for a
        divider (0: exact), highest SCL Hz the part runs at, 1 if the port reports the rate it really set]."""
        if freq <= 0:
            raise ValueError("freq must be positive")
        scl = freq
        if rules is not None:
            src, top, actual = rules
            if src:
                scl = src // ((src + freq // 2) // freq)  # the divider the port computes (pico-sdk's rounding)
            if top and scl > top:
                if not self.warned:
                    self.warned = 1
                    print("# I2C %d: %d Hz is beyond the %d Hz this board's I2C master runs at; the bus runs at %d Hz"
                          % (self.id, freq, top, top))
                scl = top
            if actual:
                freq = scl
        self.freq = freq
        self.scl_hz = scl

    def settle(self):
        """The transaction is over: its clocks pass as device time (the firmware waited for the bus)."""
        bits = self.pending
        if bits:
            self.pending = 0
            t = bits * 1_000_000 + self.rem
            us = t // self.scl_hz
            self.rem = t - us * self.scl_hz
            vclock.charge_us(us)

    def attach(self, dev, addr=None):
        addr = dev.addr if addr is None else addr
        if addr in self.devices:
            raise ValueError(f"I2C {self.id}: address 0x{addr:02X} already taken")
        dev.addr = addr
        dev.bus = self
        self.devices[addr] = dev
        return dev

    def detach(self, addr):
        dev = self.devices.pop(addr)
        dev.bus = None
        return dev

    def move(self, old, new):
        """A chip changed its own address (e.g. TMAG5273 I2C_ADDRESS): it answers at `new` from now on."""
        dev = self.devices.pop(old)
        if new in self.devices:
            raise ValueError(f"I2C {self.id}: address 0x{new:02X} already taken")
        dev.addr = new
        self.devices[new] = dev

    def inject_error(self, addr=None, err=errno.EIO, count=1, after=0):
        """Make `count` transactions to `addr` (None: to any address) fail with OSError(err), once `after`
        more have succeeded; count=-1 keeps failing until clear_errors()."""
        self.faults[addr] = [err, count, after]

    def clear_errors(self, addr=None):
        if addr is None:
            self.faults.clear()
        else:
            self.faults.pop(addr, None)

    def begin(self, addr, nbytes, conditions):
        """Start a transaction of `nbytes` bytes on the wire (address bytes included): the chip, or OSError."""
        self.transactions += 1
        bits = 9 * nbytes + conditions
        self.bits += bits
        self.pending = 11  # the address byte, start and stop: all a refused transaction takes
        faults = self.faults
        if faults:
            key = addr if addr in faults else None
            fault = faults.get(key)
            if fault is not None and fault[2] > 0:
                fault[2] -= 1
            elif fault is not None:
                if fault[1] > 0:
                    fault[1] -= 1
                    if fault[1] == 0:
                        del faults[key]
                raise OSError(fault[0])
        dev = self.devices.get(addr)
        if dev is None:
            raise OSError(self.nack_errno)
        self.pending = bits
        return dev

    def scan(self):
        found = []
        for addr in sorted(self.devices):
            fault = self.faults.get(addr) or self.faults.get(None)
            if fault is None or fault[1] == 0 or fault[2] > 0:
                found.append(addr)
        return found

    def busy_us(self):
        """Time the bus spent clocking, at its frequency: the I2C share of a loop's budget."""
        return self.bits * 1_000_000 // self.scl_hz


class PinState:
    """One pin as the board sees it: what the MCU drives, what the outside world drives, and its IRQ."""

    def __init__(self, pin_id):
        self.id = pin_id
        self.mode = 1  # machine.Pin.IN
        self.pull = -1
        self.out = 0  # level the MCU drives (OUT / OPEN_DRAIN)
        self.ext = -1  # level driven from outside (a chip's INT line, a button); -1: not driven
        self.handler = None
        self.trigger = 0
        self.pin = None  # the machine.Pin handed to the handler

    def level(self):
        if self.mode == 3:  # OUT
            return self.out
        ext = self.ext if self.ext >= 0 else (1 if self.pull == 1 or self.mode == 7 else 0)
        if self.mode == 7:  # OPEN_DRAIN: either side can pull low
            return ext & self.out
        return ext


class Timer:
    """A machine.Timer's schedule on the board."""

    def __init__(self, owner):
        self.owner = owner
        self.active = False
        self.periodic = True
        self.interval_us = 0
        self.due_us = 0
        self.callback = None


class Board:
    """Everything the emulated machine module is wired to. `board` below is the one instance."""

    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self):
        self.clear()

    def clear(self):
        """Back to an empty, unpowered board at time 0 (between tests or scenarios)."""
        self.buses = {}
        self.now_us = 0
        self.devices = []  # plugged-in chips, stepped by advance_us
        self.pins = {}
        self.pin_log = None  # a list to log (t_us, pin id, level) of every MCU-driven change, or None
        self.adc_uv = {}
        self.pwm = {}
        self.bitstreams = {}
        self.timers = []
        self.wdt_timeout_us = 0  # 0: watchdog not started
        self.wdt_deadline_us = 0
        self.wdt_expired = False
        self.on_wdt = None  # called with no argument when the watchdog bites
        self.on_reset = None  # called by machine.reset()/soft_reset()/deepsleep() before they raise SystemExit
        self.on_sleep = None  # called by machine.lightsleep(ms) to let the virtual clock pass the time
        self.reset_cause = 1  # machine.PWRON_RESET
        self.cpu_freq = 240_000_000
        self.uid = b"NTVP\x00\x01"
        self.clock = None  # optional: function returning the time board time should follow, in us
        # The board's port, where it differs (vprobe sets them from the board profile; None: anything goes):
        self.i2c = None  # Bus.set_freq rules
        self.timer_ids = None  # (lowest, highest) machine.Timer id
        self.adc_pins = None  # pins machine.ADC accepts

    # -- I2C
    def bus(self, bus_id):
        b = self.buses.get(bus_id)
        if b is None:
            b = self.buses[bus_id] = Bus(bus_id)
        return b

    def attach(self, bus_id, dev, addr=None):
        """Plug a chip in: it powers on now and answers at `addr` (default: its own address)."""
        self.bus(bus_id).attach(dev, addr)
        dev.power_on(self.now_us)
        if dev not in self.devices:
            self.devices.append(dev)
        return dev

    def detach(self, bus_id, addr):
        """Unplug a chip: it stops answering and, unpowered, stops converting. Returns it."""
        dev = self.bus(bus_id).detach(addr)
        if dev in self.devices:
            self.devices.remove(dev)
        return dev

    # -- pins
    def pin(self, pin_id):
        st = self.pins.get(pin_id)
        if st is None:
            st = self.pins[pin_id] = PinState(pin_id)
        return st

    def pin_level(self, pin_id):
        return self.pin(pin_id).level()

    def drive_pin(self, pin_id, level, t_us=-1):
        """Drive a pin from outside the MCU (level 0/1, or -1 to release it); fires its IRQ on a matching edge.
        A chip changing its line while advance_us() steps it passes the board time of the change as t_us, and
        the IRQ handler runs with now_us set to it."""
        st = self.pin(pin_id)
        before = st.level()
        st.ext = level
        if t_us < 0:
            self._edge(st, before)
            return
        now = self.now_us
        self.now_us = t_us
        try:
            self._edge(st, before)
        finally:
            self.now_us = now

    def mcu_drive(self, st, level):
        before = st.level()
        st.out = level
        if self.pin_log is not None and st.level() != before:
            self.pin_log.append((self.now_us, st.id, st.level()))
        self._edge(st, before)

    def _edge(self, st, before):
        after = st.level()
        if st.handler is not None and after != before:
            if st.trigger & (self.IRQ_RISING if after else self.IRQ_FALLING):
                vclock.call_out(st.handler, st.pin, None)

    # -- analogue in
    def set_adc_uv(self, pin_id, uv):
        self.adc_uv[pin_id] = uv

    # -- watchdog
    def wdt_start(self, timeout_ms):
        self.wdt_timeout_us = timeout_ms * 1000
        self.wdt_feed()

    def wdt_feed(self):
        if self.wdt_timeout_us:
            self.wdt_deadline_us = self.now_us + self.wdt_timeout_us

    # -- time
    def sync(self):
        """Bring board time up to `clock()`, if a clock is set; machine calls this before each access."""
        clock = self.clock
        if clock is not None:
            t = clock()
            if t > self.now_us:
                self.advance_us(t - self.now_us)

    def advance_us(self, dt):
        """Let dt microseconds of board time pass: chips convert, timers and the watchdog fire in time order."""
        end = self.now_us + dt
        while True:
            t = end
            event = None
            for tm in self.timers:
                if tm.active and tm.due_us <= t:
                    t = tm.due_us
                    event = tm
            if self.wdt_timeout_us and self.wdt_deadline_us <= t:
                t = self.wdt_deadline_us
                event = self
            if t > self.now_us:
                step = t - self.now_us
                for dev in self.devices:
                    dev.advance_us(step)
                self.now_us = t
            if event is None:
                return
            if event is self:
                self.wdt_timeout_us = 0
                self.wdt_expired = True
                self.reset_cause = 3  # machine.WDT_RESET
                if self.on_wdt is not None:
                    self.on_wdt()
            else:
                if event.periodic:
                    event.due_us += event.interval_us
                else:
                    event.active = False
                if event.callback is not None:
                    vclock.call_out(event.callback, event.owner, None)


board = Board()


# Module-level shorthands for tests and scenarios.
def bus(bus_id):
    return board.bus(bus_id)


def attach(bus_id, dev, addr=None):
    return board.attach(bus_id, dev, addr)


def detach(bus_id, addr):
    return board.detach(bus_id, addr)


def advance_us(dt):
    board.advance_us(dt)


def now_us():
    return board.now_us


def reset():
    board.clear()
