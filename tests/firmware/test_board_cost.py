# What the virtual probe charges the firmware, on MicroPython: compute at the board's scale (vclock's CPU model),
# I2C transfers at the bus's rate, flash writes at the flash chip's; the ports' I2C frequency rules and timer ids.
# mp-heapsize: 2M
import os

import machine
import micropython
import time
import vboard
import vclock
import flashfs
from mptest import eq, near, raises

_TOTALS = [0, 0, 0, 0]


class Regs(vboard.RegisterDevice):
    NAME = "regs"
    SIZE = 128

    def __init__(self, addr=0x40):
        super().__init__(addr, ((0x00, 0x7F, vboard.RW, 0x00, 0xFF),))
        self.power_on()


def _board(rules=None):
    vboard.reset()
    vclock.reset(0)
    vboard.board.clock = vclock.now_us
    vboard.board.i2c = rules
    vboard.attach(0, Regs())


def _busy(n):
    x = 0
    for i in range(n):
        x += (i * 7) & 15
    return x


def test_ideal_compute_moves_no_time():
    _board()
    vclock.cpu_stop()
    t0 = time.ticks_us()
    _busy(20000)
    eq(time.ticks_diff(time.ticks_us(), t0), 0, "with the CPU model off compute is free")


def test_compute_is_charged_at_the_scale_and_the_stand_ins_are_not():
    _board()
    vclock.cpu_model(100 * 1024)  # 100 board us per host us
    t0 = time.ticks_us()
    vclock.cpu_totals(_TOTALS)
    host0, board0 = _TOTALS[0], _TOTALS[1]
    h0 = vclock.cpu_us()
    _busy(20000)
    h1 = vclock.cpu_us()
    t1 = time.ticks_us()
    vclock.cpu_totals(_TOTALS)
    vclock.cpu_stop()
    host_us = (_TOTALS[0] - host0) / 1000
    near(time.ticks_diff(t1, t0), (_TOTALS[1] - board0), 2, "the device clock moved by what was charged")
    near((_TOTALS[1] - board0) / host_us, 100, 1, "board us per host us")
    # The loop, and no more than a few microseconds of the calls around it, is what was charged.
    eq(host_us <= (h1 - h0) + 20, True, "charged %.1f us for a loop of %d us" % (host_us, h1 - h0))
    eq(host_us >= (h1 - h0) * 0.9, True, "charged %.1f us for a loop of %d us" % (host_us, h1 - h0))


def test_the_model_allocates_nothing_per_call():
    _board()
    vclock.cpu_model(100 * 1024)
    i2c = machine.I2C(0, freq=400_000)
    buf = bytearray(6)

    def calls():
        micropython.heap_lock()
        try:
            for _ in range(100):
                time.ticks_us()
                i2c.readfrom_mem_into(0x40, 0, buf)
        finally:
            micropython.heap_unlock()

    try:
        calls()
    finally:
        vclock.cpu_stop()


def test_an_i2c_transfer_takes_its_bits_at_the_bus_rate():
    _board()
    i2c = machine.I2C(0, freq=400_000)
    buf = bytearray(12)
    vclock.cpu_model(1)  # compute nearly free: what moves the clock is the bus
    vclock.cpu_totals(_TOTALS)
    bus0 = _TOTALS[2]
    for _ in range(100):
        i2c.readfrom_mem_into(0x40, 0x10, buf)
    vclock.cpu_totals(_TOTALS)
    vclock.cpu_stop()
    # Each: start, address+W, register, repeated start, address+R, 12 data bytes, stop: 15 bytes of 9 clocks + 3.
    eq(_TOTALS[2] - bus0, 100 * (15 * 9 + 3) * 1000000 // 400000, "bus us for 100 reads of 12 bytes at 400 kHz")


def test_a_refused_transfer_takes_the_address_byte_only():
    _board()
    i2c = machine.I2C(0, freq=100_000)
    vclock.cpu_model(1)
    vclock.cpu_totals(_TOTALS)
    bus0 = _TOTALS[2]
    raises(OSError, lambda: i2c.readfrom_mem(0x41, 0, 8))
    vclock.cpu_totals(_TOTALS)
    vclock.cpu_stop()
    eq(_TOTALS[2] - bus0, 110, "9 clocks of the address byte, start and stop, at 100 kHz")


def test_rp2_sets_its_divider_rate_and_caps_at_fast_mode_plus():
    _board([125_000_000, 1_000_000, 1])
    eq(machine.I2C(0, freq=400_000)._bus.freq, 125_000_000 // 313, "clk_sys / round(clk_sys / freq)")
    eq(machine.I2C(0, freq=1_000_000)._bus.freq, 1_000_000)
    i2c = machine.I2C(0, freq=3_000_000)
    eq(i2c._bus.scl_hz, 1_000_000, "the bus runs no faster than 1 MHz")
    raises(ValueError, lambda: machine.I2C(0, freq=0))


def test_esp32s3_reports_the_rate_asked_for_and_runs_at_400_khz():
    _board([0, 400_000, 0])
    i2c = machine.I2C(0, freq=1_000_000)
    eq(i2c._bus.freq, 1_000_000, "repr shows what was asked")
    eq(i2c._bus.scl_hz, 400_000, "the master is specified to 400 kHz")
    eq(machine.I2C(0, freq=100_000)._bus.scl_hz, 100_000)


def test_timer_ids_are_the_ports_own():
    _board()
    vboard.board.timer_ids = (-1, -1)  # rp2
    raises(ValueError, lambda: machine.Timer(0))
    machine.Timer(-1).deinit()
    vboard.board.timer_ids = (-1, 3)  # ESP32-S3
    machine.Timer(3).deinit()
    raises(ValueError, lambda: machine.Timer(4))
    vboard.board.adc_pins = (26, 27, 28, 29)
    raises(ValueError, lambda: machine.ADC(machine.Pin(1)))
    machine.ADC(machine.Pin(28))


def test_flash_writes_cost_erase_and_program_time():
    root = "/tmp/nt-board-cost-%d" % (vclock._host_time.ticks_us() & 0xFFFFFF)
    os.mkdir(root)
    fs = flashfs.DeviceFS(root)
    fs.timing(400, 45000)
    vclock.reset(0)
    vclock.cpu_model(1)
    vclock.cpu_totals(_TOTALS)
    flash0 = _TOTALS[3]
    f = fs.open("/cfg.tmp", "w")
    f.write("x" * 600)  # 1 sector, 3 pages
    f.close()
    fs.rename("/cfg.tmp", "/cfg.json")  # the data, then two directory commits (the file, the rename)
    vclock.cpu_totals(_TOTALS)
    vclock.cpu_stop()
    eq(_TOTALS[3] - flash0, 45000 + 3 * 400 + 2 * 400, "flash us")
    eq(vclock.now_us() >= 45000 + 5 * 400, True, "the device clock waited through it")
    fs.remove("/cfg.json")
    os.rmdir(root)


def test_rp2_adc_is_read_u16_alone_and_the_battery_reads_through_it():
    import battery

    _board()
    vboard.board.adc_pins = (26, 27, 28, 29)
    vboard.board.set_adc_uv(28, 1_900_000)  # a 3.8 V cell behind the 1:2 divider
    saved = machine.ADC
    machine.ADC = machine.ADC_RP2
    try:
        adc = machine.ADC(machine.Pin(28))
        eq(hasattr(adc, "atten") or hasattr(adc, "read_uv") or hasattr(adc, "width"), False, "rp2's ADC API")
        eq(adc.read_u16(), 1_900_000 * 65535 // 3_300_000)
        bat = battery.Battery(28, 2)
        bat.read()
        near(bat.mv, 3800, 2, "battery mV through read_u16")
    finally:
        machine.ADC = saved
