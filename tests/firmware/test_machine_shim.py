# The virtual probe's `machine` module and board, on MicroPython: the I2C semantics the drivers rely on (register
# pointer, auto-increment, errors of an absent chip, injected faults), pins and IRQs, timers and the watchdog on
# board time, ADC, PWM, and the built-in unix `machine` reached past the shadowing file.
import errno

import machine
import micropython
import vboard
from mptest import eq, raises


class Regs(vboard.RegisterDevice):
    """A small register file: 0x00..0x07 read/write, 0x08 read-only (0xA5), 0x09 reserved, 0x0A rw with bits
    7:4 reserved (reset 0x30)."""

    NAME = "regs"
    SIZE = 16

    def __init__(self, addr=0x40):
        super().__init__(
            addr,
            (
                (0x00, 0x07, vboard.RW, 0x00, 0xFF),
                (0x08, 0x08, vboard.RO, 0xA5, 0x00),
                (0x0A, 0x0A, vboard.RW, 0x30, 0x0F),
            ),
        )
        self.power_on()
        self.stepped = 0

    def advance_us(self, dt):
        self.stepped += dt


def fresh():
    vboard.reset()
    dev = vboard.attach(0, Regs())
    return machine.I2C(0, freq=400_000), dev


def test_builtin_machine_reached_past_the_shadow():
    eq(machine.__file__.endswith("machine.py"), True, "the virtual board's machine.py is the one imported")
    eq(type(machine.mem32).__name__, "mem", "mem32 is the built-in memory accessor")
    p = machine.Pin(5, machine.Pin.OUT, value=0)
    s = machine.Signal(p, invert=True)
    eq(s.value(), 1, "built-in Signal reads our Pin, inverted")
    s.on()
    eq(p.value(), 0, "Signal.on() on an inverted signal drives the pin low")


def test_register_pointer_and_auto_increment():
    i2c, dev = fresh()
    i2c.writeto_mem(0x40, 0x02, b"\x11\x22\x33")
    eq(bytes(dev.regs[0:6]), b"\x00\x00\x11\x22\x33\x00", "a burst write lands at consecutive registers")
    eq(i2c.readfrom_mem(0x40, 0x03, 2), b"\x22\x33")
    buf = bytearray(3)
    i2c.readfrom_mem_into(0x40, 0x02, buf)
    eq(bytes(buf), b"\x11\x22\x33")
    # write the pointer only, then read: the read starts where the pointer was left (repeated-start idiom)
    eq(i2c.writeto(0x40, b"\x04"), 1, "writeto returns the bytes acknowledged")
    eq(i2c.readfrom(0x40, 1), b"\x33")
    i2c.writeto(0x40, b"\x00\x7e")
    eq(dev.regs[0], 0x7E, "writeto: first byte is the register, the rest data")
    i2c.writevto(0x40, (b"\x01", b"\x55\x66"))
    eq(bytes(dev.regs[1:3]), b"\x55\x66")


def test_read_only_reserved_and_reserved_bits():
    i2c, dev = fresh()
    eq(i2c.readfrom_mem(0x40, 0x08, 1), b"\xa5")
    i2c.writeto_mem(0x40, 0x08, b"\x00")
    eq(dev.regs[0x08], 0xA5, "a read-only register ignores writes")
    i2c.writeto_mem(0x40, 0x09, b"\xff")
    eq(i2c.readfrom_mem(0x40, 0x09, 1), b"\x00", "a reserved register reads 0")
    i2c.writeto_mem(0x40, 0x0A, b"\x05")
    eq(dev.regs[0x0A], 0x35, "reserved bits keep their reset value")
    eq(len(dev.violations), 3, "each bad write is recorded: " + repr(dev.violations))


def test_absent_address_raises_like_hardware():
    i2c, _ = fresh()
    e = raises(OSError, i2c.readfrom_mem, 0x41, 0, 1)
    eq(e.args[0], errno.ENODEV)
    vboard.bus(0).nack_errno = errno.EIO  # as the rp2 port reports it
    e = raises(OSError, i2c.writeto_mem, 0x41, 0, b"\x00")
    eq(e.args[0], errno.EIO)
    eq(i2c.scan(), [0x40])


def test_detach_and_reattach():
    i2c, dev = fresh()
    i2c.writeto_mem(0x40, 0, b"\x99")
    vboard.detach(0, 0x40)
    eq(i2c.scan(), [])
    raises(OSError, i2c.readfrom_mem, 0x40, 0, 1)
    vboard.attach(0, dev)
    eq(i2c.readfrom_mem(0x40, 0, 1), b"\x00", "plugging in powers the chip up: registers back to reset values")


def test_injected_errors_count_down_and_persist():
    i2c, _ = fresh()
    bus = vboard.bus(0)
    bus.inject_error(0x40, errno.EIO, count=2)
    for _ in range(2):
        e = raises(OSError, i2c.readfrom_mem, 0x40, 0, 1)
        eq(e.args[0], errno.EIO)
    eq(i2c.readfrom_mem(0x40, 0, 1), b"\x00", "recovers after the injected count")
    bus.inject_error(None, errno.ETIMEDOUT, count=-1)
    for _ in range(5):
        e = raises(OSError, i2c.readfrom_mem, 0x40, 0, 1)
        eq(e.args[0], errno.ETIMEDOUT)
    eq(i2c.scan(), [], "a stuck bus finds nobody")
    bus.clear_errors()
    eq(i2c.readfrom_mem(0x40, 0, 1), b"\x00")


def test_bus_time_accounting():
    i2c, _ = fresh()
    bus = vboard.bus(0)
    bus.bits = 0
    buf = bytearray(14)
    i2c.readfrom_mem_into(0x40, 0, buf)
    # address+W, register, address+R, 14 data bytes: 17 bytes of 9 clocks, plus start, restart and stop
    eq(bus.bits, 17 * 9 + 3)
    eq(bus.busy_us(), (17 * 9 + 3) * 1_000_000 // 400_000)


def test_i2c_read_allocates_nothing():
    i2c, _ = fresh()
    buf = bytearray(8)
    micropython.heap_lock()
    try:
        for _ in range(50):
            i2c.readfrom_mem_into(0x40, 0, buf)
            i2c.readfrom_into(0x40, buf)
    finally:
        micropython.heap_unlock()


def test_pins_and_irq():
    vboard.reset()
    led = machine.Pin("LED", machine.Pin.OUT, value=1)
    eq(vboard.board.pin_level("LED"), 1)
    led.off()
    eq(vboard.board.pin_level("LED"), 0)
    led.toggle()
    eq(led.value(), 1)
    btn = machine.Pin(3, machine.Pin.IN, machine.Pin.PULL_UP)
    eq(btn.value(), 1, "pull-up reads high when nothing drives the pin")
    seen = []
    btn.irq(lambda p: seen.append(p.value()), trigger=machine.Pin.IRQ_FALLING)
    vboard.board.drive_pin(3, 0)
    vboard.board.drive_pin(3, 1)
    vboard.board.drive_pin(3, 0)
    eq(seen, [0, 0], "falling edges only")
    vboard.board.pin_log = []
    led.value(0)
    led.value(0)
    led.value(1)
    eq([e[1:] for e in vboard.board.pin_log], [("LED", 0), ("LED", 1)], "only changes are logged")


def test_timers_fire_on_board_time():
    vboard.reset()
    ticks = []
    machine.Timer(0, mode=machine.Timer.PERIODIC, period=10, callback=lambda t: ticks.append(vboard.now_us()))
    once = []
    machine.Timer(1, mode=machine.Timer.ONE_SHOT, freq=40, callback=lambda t: once.append(vboard.now_us()))
    vboard.advance_us(55_000)
    eq(ticks, [10_000, 20_000, 30_000, 40_000, 50_000])
    eq(once, [25_000])
    eq(vboard.now_us(), 55_000)


def test_timer_deinit_stops_it():
    vboard.reset()
    ticks = []
    t = machine.Timer(-1, period=1, callback=lambda t: ticks.append(1))
    vboard.advance_us(3_500)
    t.deinit()
    vboard.advance_us(10_000)
    eq(len(ticks), 3)


def test_devices_step_with_board_time_only_while_plugged():
    _, dev = fresh()
    vboard.advance_us(1234)
    eq(dev.stepped, 1234)
    vboard.detach(0, 0x40)
    vboard.advance_us(1000)
    eq(dev.stepped, 1234, "an unplugged chip does not run")


def test_watchdog():
    vboard.reset()
    bites = []
    vboard.board.on_wdt = lambda: bites.append(vboard.now_us())
    wdt = machine.WDT(timeout=100)
    for _ in range(5):
        vboard.advance_us(90_000)
        wdt.feed()
    eq(vboard.board.wdt_expired, False, "fed in time")
    vboard.advance_us(150_000)
    eq(vboard.board.wdt_expired, True)
    eq(bites, [450_000 + 100_000], "bites exactly timeout after the last feed")
    eq(machine.reset_cause(), machine.WDT_RESET)


def test_adc_and_pwm():
    vboard.reset()
    vboard.board.set_adc_uv(4, 1_650_000)
    adc = machine.ADC(machine.Pin(4))
    eq(adc.read_uv(), 1_650_000)
    eq(adc.read_u16(), 1_650_000 * 65535 // 3_300_000)
    adc = machine.ADC(4, atten=machine.ADC.ATTN_0DB)
    eq(adc.read_u16(), 65535, "above full scale the ADC saturates")
    pwm = machine.PWM(machine.Pin(7), freq=200, duty_u16=16384)
    eq(vboard.board.pwm[7].duty_u16(), 16384)
    pwm.duty_ns(2_500_000)
    eq(pwm.duty_u16(), 2_500_000 * 65535 // 5_000_000)


def test_reset_raises_system_exit():
    vboard.reset()
    calls = []
    vboard.board.on_reset = lambda: calls.append(1)
    raises(SystemExit, machine.reset)
    eq(calls, [1])
    eq(machine.reset_cause(), machine.HARD_RESET)


def test_board_follows_an_external_clock():
    i2c, dev = fresh()
    now = [0]
    vboard.board.clock = lambda: now[0]
    try:
        now[0] = 2500
        i2c.readfrom_mem(0x40, 0, 1)
        eq((vboard.now_us(), dev.stepped), (2500, 2500), "an I2C access first brings the board up to the clock")
        ticks = []
        machine.Timer(0, period=1, callback=lambda t: ticks.append(vboard.now_us()))
        now[0] = 5000
        machine.Pin(1).value()
        eq(ticks, [3500, 4500], "timers due meanwhile fire at their own times")
    finally:
        vboard.board.clock = None
