# LSM6DSOX driver against the register-level emulator, on MicroPython. Expected register values are the
# datasheet's field codes (DS12814), written out here, not read back from the driver.
import errno
from array import array

import machine
import micropython
import vboard
from drivers import SensorError
from drivers.lsm6dsox import (
    FIFO_DEPTH,
    FIFO_OVR,
    FIFO_OVR_LATCHED,
    FIFO_WTM,
    LSM6DSOX,
    TAG_ACCEL,
    TAG_GYRO,
)
from lsm6dsox_emu import LSM6DSOXEmu
from mptest import eq, near, raises

# 833 Hz is 6667 Hz / 8 on the chip: one sample every 8 / 6667 s
PERIOD_NS = 8 * 1_000_000_000 // 6667  # 1_199_940 ns


class Ramp:
    """Sample n (from 1): gyro (n, -n, 1000 + n), accel (2n, -2n, 16384 - n); records each sample's time."""

    def __init__(self):
        self.n = 0
        self.times = []

    def __call__(self, t_us, out):
        self.n += 1
        n = self.n
        self.times.append(t_us)
        out[0] = n
        out[1] = -n
        out[2] = 1000 + n
        out[3] = 2 * n
        out[4] = -2 * n
        out[5] = 16384 - n


def gyro_word(n):
    return (TAG_GYRO, n, -n, 1000 + n)


def accel_word(n):
    return (TAG_ACCEL, 2 * n, -2 * n, 16384 - n)


def rig(addr=0x6A, source=None, **kw):
    vboard.reset()
    emu = vboard.attach(0, LSM6DSOXEmu(addr=addr, source=source if source is not None else Ramp()))
    i2c = machine.I2C(0)
    return i2c, emu, LSM6DSOX(i2c, addr, **kw)


def samples_us(n):
    return (n * PERIOD_NS + 999) // 1000  # board time at which sample n has been taken


def test_identity_at_both_addresses():
    for addr in (0x6A, 0x6B):
        _, emu, imu = rig(addr)
        eq(imu.addr, addr)
        eq(emu.violations, [], "no reserved register or bit written")


def test_missing_chip_names_chip_and_address():
    vboard.reset()
    i2c = machine.I2C(0)
    e = raises(SensorError, LSM6DSOX, i2c, 0x6A)
    eq(str(e), "LSM6DSOX not found at I2C 0x6A (ENODEV)")
    eq((e.chip, e.addr), ("LSM6DSOX", 0x6A))
    vboard.bus(0).nack_errno = errno.EIO
    vboard.attach(0, LSM6DSOXEmu(addr=0x6A))
    e = raises(SensorError, LSM6DSOX, i2c, 0x6B)
    eq(str(e), "LSM6DSOX not found at I2C 0x6B (EIO)")


def test_wrong_who_am_i():
    vboard.reset()
    vboard.attach(0, LSM6DSOXEmu(who_am_i=0x69))  # an LSM6DS3 on the same address
    e = raises(SensorError, LSM6DSOX, machine.I2C(0))
    eq(str(e), "LSM6DSOX at I2C 0x6A: WHO_AM_I is 0x69, expected 0x6C")


def test_bus_error_during_setup_is_a_sensor_error():
    vboard.reset()
    vboard.attach(0, LSM6DSOXEmu())
    vboard.bus(0).inject_error(0x6A, errno.EIO, count=1, after=3)
    e = raises(SensorError, LSM6DSOX, machine.I2C(0))
    eq(str(e), "LSM6DSOX at I2C 0x6A: bus error EIO during setup")


def test_reset_that_never_completes():
    vboard.reset()
    emu = vboard.attach(0, LSM6DSOXEmu())
    emu.stuck_reset = True
    e = raises(SensorError, LSM6DSOX, machine.I2C(0))
    eq(str(e), "LSM6DSOX at I2C 0x6A: software reset did not complete")


def test_reference_configuration_bits():
    _, emu, imu = rig()
    r = emu.regs
    eq(r[0x10] >> 4, 0b0111, "CTRL1_XL ODR_XL = 833 Hz")
    eq((r[0x10] >> 2) & 3, 0b10, "CTRL1_XL FS_XL = +-4 g")
    eq(r[0x11] >> 4, 0b0111, "CTRL2_G ODR_G = 833 Hz")
    eq((r[0x11] >> 1) & 7, 0b010, "CTRL2_G FS_G = +-500 dps, FS_125 = 0")
    eq(r[0x12] & 0x44, 0x44, "CTRL3_C BDU and IF_INC")
    eq(r[0x12] & 0x81, 0, "CTRL3_C BOOT and SW_RESET done")
    eq(r[0x18] & 0x02, 0x02, "CTRL9_XL I3C_disable")
    eq(r[0x09], 0x77, "FIFO_CTRL3: gyro and accel batched at 833 Hz")
    eq(r[0x0A] & 7, 0b110, "FIFO_CTRL4 FIFO_MODE = continuous")
    eq(r[0x0A] & 0xF0, 0, "no temperature or timestamp batching")
    eq(r[0x07] | ((r[0x08] & 1) << 8), 16, "watermark 16 words")
    eq(r[0x08] & 0x80, 0, "STOP_ON_WTM off: the FIFO keeps its full depth")
    eq(r[0x0D], 0x08, "INT1_CTRL INT1_FIFO_TH only")
    eq((imu.accel_ug_per_lsb, imu.gyro_udps_per_lsb), (122, 17500), "datasheet sensitivities")
    eq(emu.violations, [])


def test_other_configurations():
    _, emu, imu = rig(accel_fs_g=16, gyro_fs_dps=2000, odr_hz=104, watermark=300, int1_watermark=False)
    r = emu.regs
    eq((r[0x10] >> 4, (r[0x10] >> 2) & 3), (0b0100, 0b01), "104 Hz, +-16 g")
    eq((r[0x11] >> 4, (r[0x11] >> 1) & 7), (0b0100, 0b110), "104 Hz, +-2000 dps")
    eq((r[0x07], r[0x08] & 1), (300 & 0xFF, 1), "WTM8 carries the ninth watermark bit")
    eq(r[0x0D], 0)
    eq((imu.accel_ug_per_lsb, imu.gyro_udps_per_lsb), (488, 70000))
    _, emu, imu = rig(gyro_fs_dps=125, accel_fs_g=2)
    eq((emu.regs[0x11] >> 1) & 7, 0b001, "FS_125")
    eq((emu.regs[0x10] >> 2) & 3, 0b00)
    eq((imu.accel_ug_per_lsb, imu.gyro_udps_per_lsb), (61, 4375))
    raises(ValueError, lambda: LSM6DSOX(machine.I2C(0), 0x6A, odr_hz=100))
    raises(ValueError, lambda: LSM6DSOX(machine.I2C(0), 0x6A, accel_fs_g=3))
    raises(ValueError, lambda: LSM6DSOX(machine.I2C(0), 0x6A, watermark=512))


def test_reset_restores_registers_left_by_a_previous_run():
    vboard.reset()
    emu = vboard.attach(0, LSM6DSOXEmu(source=Ramp()))
    i2c = machine.I2C(0)
    i2c.writeto_mem(0x6A, 0x15, b"\x07")  # CTRL6_C: gyro LPF1 bandwidth
    i2c.writeto_mem(0x6A, 0x08, b"\x80")  # FIFO_CTRL2: STOP_ON_WTM
    i2c.writeto_mem(0x6A, 0x19, b"\x20")  # CTRL10_C: timestamp on
    LSM6DSOX(i2c)
    eq((emu.regs[0x15], emu.regs[0x08], emu.regs[0x19]), (0, 0, 0))


def test_sample_rate_and_times():
    src = Ramp()
    _, _, imu = rig(source=src)
    vboard.advance_us(1_000_000)
    eq(src.n, 833, "833.375 samples per second")
    for i in (0, 1, 100, 832):
        near(src.times[i], (i + 1) * PERIOD_NS // 1000, 1, "time of sample %d" % (i + 1))
    eq(imu.odr_mhz(), 833_375)


def test_trimmed_clock():
    vboard.reset()
    src = Ramp()
    vboard.attach(0, LSM6DSOXEmu(source=src, clock_ppm=3000))  # 0.3 % fast: FREQ_FINE = 2 steps of 0.15 %
    imu = LSM6DSOX(machine.I2C(0))
    eq(imu.odr_mhz(), 6667 * 1003 // 8, "ODR = 6667 Hz * (1 + 0.0015 * 2) / 8, in mHz")
    vboard.advance_us(10_000_000)
    near(src.n, 8358, 1, "samples in 10 s at 835.8 Hz")


def test_1666_hz_pairs_and_times():
    # "1666 Hz" is 6667 Hz / 4: one sample every 4 / 6667 s, a gyro and an accel word per sample in the FIFO.
    period_ns = 4 * 1_000_000_000 // 6667  # 599_970 ns
    src = Ramp()
    _, emu, imu = rig(source=src, odr_hz=1666)
    eq((emu.regs[0x10] >> 4, emu.regs[0x11] >> 4, emu.regs[0x09]), (0b1000, 0b1000, 0x88), "ODR and BDR codes")
    eq(imu.odr_mhz(), 1_666_750)
    out = imu.raw_pairs(32)
    rows = []
    for _ in range(100):
        vboard.advance_us(10_000)
        n = imu.read_pairs(out, 32)
        rows += rows_of(out, n)
        eq(imu.overrun, 0)
    eq(src.n, 1666, "1666.75 samples per second")
    eq(len(rows), 1666, "pairs read")
    eq(rows, [sample_row(n) for n in range(1, 1667)], "in order, gyro and accel of the same sample")
    for i in (0, 1, 100, 1665):
        near(src.times[i], (i + 1) * period_ns // 1000, 1, "time of sample %d" % (i + 1))


def test_set_odr_keeps_every_other_setting():
    src = Ramp()
    _, emu, imu = rig(source=src, accel_fs_g=8, gyro_fs_dps=1000, watermark=20)
    r = emu.regs
    before = (r[0x10] & 0x0F, r[0x11] & 0x0F, r[0x07], r[0x08], r[0x0D], r[0x0A], r[0x12], r[0x18])
    vboard.advance_us(samples_us(10))
    imu.set_odr(1666)
    eq((r[0x10] >> 4, r[0x11] >> 4, r[0x09]), (0b1000, 0b1000, 0x88))
    eq((r[0x10] & 0x0F, r[0x11] & 0x0F, r[0x07], r[0x08], r[0x0D], r[0x0A], r[0x12], r[0x18]), before)
    eq((imu.accel_ug_per_lsb, imu.gyro_udps_per_lsb, imu.odr_mhz()), (244, 35000, 1_666_750))
    eq(imu.fifo_status(), 0, "the FIFO emptied")
    eq(imu.is_configured(), True)
    raises(ValueError, imu.set_odr, 1000)
    eq((r[0x10] >> 4, imu.odr_mhz()), (0b1000, 1_666_750), "a bad rate changes nothing")
    imu.set_odr(833)
    eq((r[0x10] >> 4, r[0x09], imu.odr_mhz()), (0b0111, 0x77, 833_375))
    # The rate set is the one a re-probe configures, even if the chip was gone when it was set.
    vboard.detach(0, 0x6A)
    raises(OSError, imu.set_odr, 1666)
    vboard.attach(0, emu)
    imu.init()
    eq((r[0x10] >> 4, r[0x10] & 0x0F, imu.odr_mhz()), (0b1000, before[0], 1_666_750))
    eq(emu.violations, [])


def test_fifo_words_decode_to_the_source_values():
    _, _, imu = rig()
    vboard.advance_us(samples_us(40))
    level = imu.fifo_status()
    eq(level, 80, "gyro + accel word per sample")
    got = []
    while level:
        n = imu.read_fifo(min(level, imu.max_words))
        w = imu.words
        for i in range(n):
            got.append((w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]))
        level = imu.fifo_status()
    eq(len(got), 80)
    for s in range(40):
        eq(got[2 * s], gyro_word(s + 1), "word %d" % (2 * s))
        eq(got[2 * s + 1], accel_word(s + 1), "word %d" % (2 * s + 1))


def test_saturation_and_sign():
    def extremes(t_us, out):
        out[0] = -32768
        out[1] = 40000
        out[2] = -40000
        out[3] = -1
        out[4] = 32767
        out[5] = 0

    _, _, imu = rig(source=extremes)
    vboard.advance_us(samples_us(1))
    eq(imu.read_fifo(imu.fifo_status()), 2)
    eq(list(imu.words[:8]), [TAG_GYRO, -32768, 32767, -32768, TAG_ACCEL, -1, 32767, 0])
    out = array("h", [0] * 6)
    imu.read_gyro_accel(out)
    eq(list(out), [-32768, 32767, -32768, -1, 32767, 0], "output registers")


def test_watermark_flag_and_int1_line():
    vboard.reset()
    emu = vboard.attach(0, LSM6DSOXEmu(source=Ramp()))
    emu.connect_int1("IMU_INT1")
    imu = LSM6DSOX(machine.I2C(0), watermark=10)
    int1 = machine.Pin("IMU_INT1", machine.Pin.IN)
    edges = []
    int1.irq(lambda p: edges.append(vboard.now_us()), trigger=machine.Pin.IRQ_RISING)
    vboard.advance_us(samples_us(4))
    eq(imu.fifo_status(), 8)
    eq(imu.fifo_flags & FIFO_WTM, 0)
    eq(int1.value(), 0)
    vboard.advance_us(samples_us(5) - samples_us(4))
    eq(imu.fifo_status(), 10)
    eq(imu.fifo_flags & FIFO_WTM, FIFO_WTM, "level >= watermark")
    eq(int1.value(), 1, "INT1 follows the watermark flag")
    eq(len(edges), 1)
    near(edges[0], 5 * PERIOD_NS // 1000, 1, "the IRQ runs at the board time of sample 5")
    imu.read_fifo(4)
    eq(imu.fifo_status(), 6)
    eq(imu.fifo_flags & FIFO_WTM, 0)
    eq(int1.value(), 0)


def test_overrun_keeps_the_newest_words():
    src = Ramp()
    _, _, imu = rig(source=src)
    vboard.advance_us(samples_us(300))  # 600 words into 512
    eq(imu.fifo_status(), FIFO_DEPTH)
    eq(imu.fifo_flags & (FIFO_OVR | FIFO_OVR_LATCHED), FIFO_OVR | FIFO_OVR_LATCHED)
    eq(imu.fifo_status(), FIFO_DEPTH)
    eq(imu.fifo_flags & FIFO_OVR_LATCHED, 0, "the latched flag clears once read")
    imu.read_fifo(2)
    first = 300 - FIFO_DEPTH // 2 + 1  # the oldest sample still held
    eq(tuple(imu.words[:4]), gyro_word(first))
    eq(tuple(imu.words[4:8]), accel_word(first))
    imu.fifo_status()
    eq(imu.fifo_flags & FIFO_OVR, 0, "no longer full")


def rows_of(out, n):
    return [tuple(out[6 * i : 6 * i + 6]) for i in range(n)]


def sample_row(n):
    return gyro_word(n)[1:] + accel_word(n)[1:]


def test_read_pairs_rows_in_order_across_calls():
    for accel_first in (False, True):
        _, emu, imu = rig()
        emu.accel_first = accel_first
        out = imu.raw_pairs(32)
        vboard.advance_us(samples_us(45))
        eq(imu.read_pairs(out, 32), 32)
        eq(rows_of(out, 32), [sample_row(n) for n in range(1, 33)], "accel first: %s" % accel_first)
        eq(imu.read_pairs(out, 32), 13)
        eq(rows_of(out, 13), [sample_row(n) for n in range(33, 46)])
        eq(imu.read_pairs(out, 32), 0)
        eq(imu.overrun, 0)


def test_read_pairs_drops_a_word_whose_partner_is_gone():
    _, _, imu = rig()
    out = imu.raw_pairs(8)
    vboard.advance_us(samples_us(5))
    imu.read_fifo(1)  # sample 1's gyro word, read elsewhere
    eq(imu.read_pairs(out, 8), 4)
    eq(rows_of(out, 4), [sample_row(n) for n in range(2, 6)])
    vboard.advance_us(samples_us(300))
    eq(imu.read_pairs(out, 8), 8)
    eq(imu.overrun, 1, "words were lost")
    eq(imu.read_pairs(out, 8), 8)
    eq(imu.overrun, 0)


def test_init_reprobes_after_the_chip_came_back():
    _, emu, imu = rig()
    vboard.detach(0, 0x6A)
    raises(OSError, imu.fifo_status)
    e = raises(OSError, imu.init)
    eq(str(e), "LSM6DSOX not found at I2C 0x6A (ENODEV)", "SensorError is an OSError")
    vboard.attach(0, emu)
    imu.init()
    eq(imu.is_configured(), True)


def test_caller_buffers():
    _, _, imu = rig()
    vboard.advance_us(samples_us(3))
    raw = bytearray(7 * 5)
    out = array("h", [0] * 20)
    eq(imu.read_fifo(5, raw, out), 5)
    eq(tuple(out[16:20]), gyro_word(3))
    eq(raw[0] >> 3, TAG_GYRO, "the raw words stay in the caller's buffer")
    raises(ValueError, imu.read_fifo, 2, bytearray(13))
    raises(ValueError, imu.read_fifo, 2, None, array("h", [0] * 7))
    raises(ValueError, imu.read_fifo, imu.max_words + 1)


def test_temperature():
    _, emu, imu = rig()
    emu.set_temperature(30.0)
    vboard.advance_us(25_000)  # the temperature output refreshes at 52 Hz
    eq(imu.temperature_cdeg(), 3000)
    emu.set_temperature(-10.5)
    vboard.advance_us(25_000)
    eq(imu.temperature_raw(), -35 * 256 - 128)
    eq(imu.temperature_cdeg(), -1050)


def test_flush_and_power_loss():
    _, emu, imu = rig()
    vboard.advance_us(samples_us(10))
    imu.flush_fifo()
    eq(imu.fifo_status(), 0)
    eq(imu.is_configured(), True)
    vboard.detach(0, 0x6A)
    vboard.attach(0, emu)  # re-plugged: powered up with reset values
    eq(imu.is_configured(), False)
    imu.setup()
    eq(imu.is_configured(), True)
    vboard.advance_us(samples_us(2))
    eq(imu.fifo_status(), 4)


def quiet_source(t_us, out):
    out[0] = t_us & 0x7FFF
    out[1] = -(t_us & 0x3FFF)
    out[2] = 7
    out[3] = 100
    out[4] = -100
    out[5] = 16384


def test_per_sample_reads_allocate_nothing():
    _, _, imu = rig(source=quiet_source)
    six = array("h", [0] * 6)
    rows = imu.raw_pairs(32)
    total = 0
    pairs = 0
    micropython.heap_lock()
    try:
        for _ in range(30):
            vboard.advance_us(10_000)
            level = imu.fifo_status()
            while level:
                n = imu.read_fifo(level if level < 32 else 32)
                total += n
                level -= n
            vboard.advance_us(10_000)
            pairs += imu.read_pairs(rows, 32)
            imu.read_gyro_accel(six)
            imu.temperature_raw()
            imu.is_configured()
    finally:
        micropython.heap_unlock()
    eq(total > 400, True, "words were read: %d" % total)
    eq(pairs > 200, True, "pairs were read: %d" % pairs)


def test_emulator_if_inc_and_bdu():
    i2c, _, _ = rig()
    b = bytearray(2)
    i2c.writeto_mem(0x6A, 0x12, b"\x40")  # BDU on, IF_INC off: the address stays put
    i2c.readfrom_mem_into(0x6A, 0x0F, b)
    eq(bytes(b), b"\x6c\x6c")
    i2c.writeto_mem(0x6A, 0x12, b"\x44")
    vboard.advance_us(samples_us(1))
    lo = i2c.readfrom_mem(0x6A, 0x22, 1)[0]  # OUTX_L_G of sample 1
    vboard.advance_us(samples_us(300) - samples_us(1))  # sample 300: X = 300 = 0x012C
    hi = i2c.readfrom_mem(0x6A, 0x23, 1)[0]
    eq((hi << 8) | lo, 1, "BDU: the high byte still belongs to the sample whose low byte was read")
    eq(i2c.readfrom_mem(0x6A, 0x22, 2), b"\x2c\x01", "then the held update lands")
