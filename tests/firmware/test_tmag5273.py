# TMAG5273 driver against the register-level emulator, on MicroPython. Expected register fields and timings are
# the datasheet's (SLYS045), written out here, not read back from the driver.
import errno
from array import array

import machine
import micropython
import vboard
from drivers import SensorError
from drivers.tmag5273 import (
    AXES_XYZ,
    SET_COUNT_SHIFT,
    STATUS_POR,
    STATUS_RESULT,
    TMAG5273,
    temp_to_cdeg,
)
from mptest import eq, near, raises
from tmag5273_emu import TMAG5273Emu


def rig(variant="A1", **kw):
    vboard.reset()
    emu = vboard.attach(0, TMAG5273Emu(variant))
    i2c = machine.I2C(0)
    return i2c, emu, TMAG5273(i2c, emu.addr, **kw)


def datasheet_conversion_us(averaging, channels):
    # t = 25 us + 25 us x averaging x channels: 1x, 3 axes is 10 kSPS; 32x, 3 axes is 0.4 kSPS
    return 25 + 25 * averaging * channels


def test_identity_and_variants():
    for variant, addr, ranges in (("A1", 0x35, (40, 80)), ("B1", 0x22, (40, 80)), ("A2", 0x35, (133, 266))):
        _, emu, hall = rig(variant)
        eq(hall.addr, addr, variant)
        eq(hall.version, int(variant[1]), variant)
        eq(hall.range_mt, ranges[0], variant + " narrow range by default")
        _, emu, hall = rig(variant, wide_range=True)
        eq(hall.range_mt, ranges[1], variant + " wide range")
        eq(emu.violations, [])


def test_missing_chip_names_chip_and_address():
    vboard.reset()
    e = raises(SensorError, TMAG5273, machine.I2C(0), 0x22)
    eq(str(e), "TMAG5273 not found at I2C 0x22 (ENODEV)")
    eq((e.chip, e.addr), ("TMAG5273", 0x22))


def test_wrong_manufacturer_or_version():
    vboard.reset()
    emu = TMAG5273Emu("A1")
    emu.manufacturer_id = 0x1234
    vboard.attach(0, emu)
    e = raises(SensorError, TMAG5273, machine.I2C(0))
    eq(str(e), "TMAG5273 at I2C 0x35: MANUFACTURER_ID is 0x1234, expected 0x5449")
    vboard.reset()
    vboard.attach(0, TMAG5273Emu("A1", version=0))
    e = raises(SensorError, TMAG5273, machine.I2C(0))
    eq(str(e), "TMAG5273 at I2C 0x35: DEVICE_ID version 0 is reserved")


def test_first_access_may_miss_but_a_second_answers():
    vboard.reset()
    vboard.attach(0, TMAG5273Emu("A1"))
    vboard.bus(0).inject_error(0x35, errno.ENODEV, count=1)
    TMAG5273(machine.I2C(0))
    vboard.bus(0).inject_error(0x35, errno.EIO, count=1, after=4)
    e = raises(SensorError, TMAG5273, machine.I2C(0))
    eq(str(e), "TMAG5273 at I2C 0x35: bus error EIO during setup")


def test_reference_configuration_bits():
    _, emu, hall = rig()
    r = emu.regs
    eq((r[0x00] >> 2) & 7, 0b101, "DEVICE_CONFIG_1 CONV_AVG = 32x")
    eq(r[0x00] & 0xE3, 0, "CRC off, no magnet temperature compensation, standard 3-byte reads")
    eq(r[0x01] & 3, 0b10, "DEVICE_CONFIG_2 OPERATING_MODE = continuous")
    eq(r[0x01] & 0x10, 0x10, "LP_LN = low noise")
    eq(r[0x01] & 0xEC, 0, "glitch filter on, I2C trigger, no threshold hysteresis")
    eq(r[0x02] >> 4, 0b0101, "SENSOR_CONFIG_1 MAG_CH_EN = Z, X")
    eq(r[0x03], 0x00, "SENSOR_CONFIG_2 X_Y_RANGE and Z_RANGE +-40 mT, angle off")
    eq(r[0x07], 0x01, "T_CONFIG T_CH_EN")
    eq(r[0x08], 0x00, "INT_CONFIG_1: no interrupt")
    eq(r[0x18] & STATUS_POR, 0, "POR flag cleared by setup")
    eq(hall.conversion_us, datasheet_conversion_us(32, 3))
    eq(hall.range_mt, 40)
    eq(emu.violations, [])


def test_other_configuration():
    _, emu, hall = rig(
        axes=AXES_XYZ, averaging=4, wide_range=True, temperature=False, continuous=False, low_noise=False
    )
    r = emu.regs
    eq((r[0x00] >> 2) & 7, 0b010, "4x")
    eq(r[0x01] & 0x13, 0, "standby, low active current")
    eq(r[0x02] >> 4, 0b0111, "X, Y, Z")
    eq(r[0x03] & 3, 3, "+-80 mT")
    eq(r[0x07] & 1, 0)
    eq(hall.conversion_us, datasheet_conversion_us(4, 3))
    raises(ValueError, lambda: TMAG5273(machine.I2C(0), averaging=3))
    raises(ValueError, lambda: TMAG5273(machine.I2C(0), axes=0))


def test_continuous_conversion_timing():
    vboard.reset()
    times = []

    def src(t_us, out):
        times.append(t_us)

    emu = vboard.attach(0, TMAG5273Emu("A1", source=src))
    hall = TMAG5273(machine.I2C(0), averaging=8)
    t = datasheet_conversion_us(8, 3)  # X, Z and temperature: 625 us
    start = vboard.now_us()
    vboard.advance_us(70 + t - 1)  # continuous measure starts 70 us after leaving standby
    eq(emu.conversions, 0)
    vboard.advance_us(1)
    eq(emu.conversions, 1)
    vboard.advance_us(100 * t)
    eq(emu.conversions, 101)
    eq(times[0], start + 70 + t // 2, "sampled mid-conversion")
    eq(times[1] - times[0], t)
    status = hall.read()
    eq(hall.status, status)
    eq(status >> SET_COUNT_SHIFT, 101 % 8, "SET_COUNT rolls over every 8 sets")
    eq(status & STATUS_RESULT, STATUS_RESULT)
    eq(hall.read() & STATUS_RESULT, 0, "no new set since the last read")


def test_field_counts_and_units():
    for variant, wide, fs_mt in (("A1", True, 80), ("A1", False, 40), ("A2", True, 266), ("B2", False, 133)):
        _, emu, hall = rig(variant, wide_range=wide, axes=AXES_XYZ)
        lsb_nt = fs_mt * 1_000_000 // 32768
        for bx, by, bz in ((12_345_678, -25_000_000, 500), (-30_000_000, 1_000_000, -7_777_777)):
            emu.field[0] = bx
            emu.field[1] = by
            emu.field[2] = bz
            vboard.advance_us(10_000)
            hall.read()
            eq((hall.x, hall.y, hall.z), tuple(hall.raw[:3]))
            for i, b in enumerate((bx, by, bz)):
                near(hall.raw[i] * fs_mt * 1_000_000 // 32768, b, lsb_nt, "%s counts, axis %d" % (variant, i))
                near(hall.to_ut(hall.raw[i]), b // 1000, lsb_nt // 1000 + 1, "%s uT, axis %d" % (variant, i))


def test_saturation():
    _, emu, hall = rig()  # +-40 mT
    emu.field[0] = 60_000_000
    emu.field[2] = -60_000_000
    vboard.advance_us(10_000)
    hall.read()
    eq((hall.x, hall.z), (32767, -32768))


def test_temperature():
    _, emu, hall = rig()
    for mdeg, cdeg in ((25_000, 2500), (85_000, 8500), (-40_000, -4000), (37_500, 3750)):
        emu.field[3] = mdeg
        vboard.advance_us(10_000)
        hall.read()
        near(temp_to_cdeg(hall.raw[3]), cdeg, 1, "temperature at %d mdegC" % mdeg)
        eq(hall.temp_cdeg, temp_to_cdeg(hall.raw[3]))


def test_standby_and_trigger():
    _, emu, hall = rig(continuous=False, averaging=1)
    vboard.advance_us(50_000)
    eq(emu.conversions, 0, "standby does not convert")
    emu.field[2] = 20_000_000
    hall.trigger()
    vboard.advance_us(hall.conversion_us)
    eq(emu.conversions, 1)
    status = hall.read()
    eq(status >> SET_COUNT_SHIFT, 1)
    near(hall.to_ut(hall.raw[2]), 20_000, 3)
    vboard.advance_us(50_000)
    eq(emu.conversions, 1, "one set per trigger")


def test_power_loss_shows_as_por():
    _, emu, hall = rig()
    vboard.advance_us(5_000)
    eq(hall.read() & STATUS_POR, 0)
    vboard.detach(0, 0x35)
    vboard.attach(0, emu)
    eq(hall.read() & STATUS_POR, STATUS_POR, "re-powered chip: configuration lost")
    eq(emu.regs[0x01] & 3, 0, "back in standby")
    hall.setup()
    eq(hall.read() & STATUS_POR, 0)
    vboard.advance_us(5_000)
    eq(emu.conversions > 0, True)


def test_init_reprobes_after_the_chip_came_back():
    _, emu, hall = rig("B1")
    vboard.detach(0, 0x22)
    raises(OSError, hall.read)
    e = raises(OSError, hall.init)
    eq(str(e), "TMAG5273 not found at I2C 0x22 (ENODEV)", "SensorError is an OSError")
    vboard.attach(0, emu)
    hall.init()
    eq(emu.regs[0x01] & 3, 2, "converting again")


def test_two_sensors_of_one_variant_by_address_change():
    vboard.reset()
    i2c = machine.I2C(0)
    first = vboard.attach(0, TMAG5273Emu("A1"))
    near_sensor = TMAG5273(i2c)
    near_sensor.set_address(0x36)
    eq(i2c.scan(), [0x36])
    second = vboard.attach(0, TMAG5273Emu("A1"))
    far_sensor = TMAG5273(i2c)
    first.field[0] = 10_000_000
    second.field[0] = -10_000_000
    vboard.advance_us(10_000)
    near_sensor.read()
    far_sensor.read()
    eq((near_sensor.to_ut(near_sensor.raw[0]) > 0, far_sensor.to_ut(far_sensor.raw[0]) < 0), (True, True))
    vboard.detach(0, 0x35)
    vboard.detach(0, 0x36)
    vboard.attach(0, first)
    eq(i2c.scan(), [0x35], "a power cycle restores the factory address")


def test_unit_helpers_stay_in_31_bits_and_are_exact():
    limit = 1 << 30
    for fs_mt, num, shift in ((40, 625, 9), (80, 625, 8), (133, 16625, 12), (266, 16625, 11)):
        eq(num * 32768, fs_mt * 1000 << shift, "scale of the %d mT range" % fs_mt)
    _, _, hall = rig("A2", wide_range=True)  # the widest range has the largest factor
    eq(hall.range_mt, 266)
    for raw in (-32768, 32767):
        eq(abs(raw * hall.ut_num) + (1 << hall.ut_shift) < limit, True, "raw * ut_num fits in 31 bits")
    for raw in range(-32768, 32768, 97):
        want = raw * 266_000 / 32768
        near(hall.to_ut(raw), want, 0.5, "to_ut(%d)" % raw)
    for raw in (0, 65535):
        eq(abs((raw - 17508) * 1000) + 601 < limit, True)
    for raw in range(0, 40000, 37):
        near(temp_to_cdeg(raw), 2500 + (raw - 17508) * 100 / 60.1, 0.5, "temp_to_cdeg(%d)" % raw)


def test_emulator_angle_result():
    i2c, emu, _ = rig(axes=AXES_XYZ)
    i2c.writeto_mem(0x35, 0x03, b"\x07")  # ANGLE_EN = X, Y; both ranges wide
    emu.field[0] = 5_000_000
    emu.field[1] = 5_000_000
    vboard.advance_us(10_000)
    eq(i2c.readfrom_mem(0x35, 0x19, 2), bytes([(45 * 16) >> 8, (45 * 16) & 0xFF]), "45 deg in 1/16 deg")
    emu.field[1] = -5_000_000
    vboard.advance_us(10_000)
    v = i2c.readfrom_mem(0x35, 0x19, 2)
    eq((v[0] << 8) | v[1], 315 * 16)


def steady_field(t_us, out):
    out[0] = 1_000_000 + (t_us & 0xFFFF)
    out[1] = -2_000_000
    out[2] = 3_000_000
    out[3] = 30_000


def test_per_sample_reads_allocate_nothing():
    vboard.reset()
    vboard.attach(0, TMAG5273Emu("A1", source=steady_field))
    hall = TMAG5273(machine.I2C(0))
    out = array("h", [0] * 4)
    acc = 0
    micropython.heap_lock()
    try:
        for _ in range(100):
            vboard.advance_us(5_000)
            hall.read()
            hall.read(out)
            acc += hall.to_ut(out[0]) + hall.to_ut(out[1]) + hall.to_ut(out[2]) + temp_to_cdeg(out[3])
    finally:
        micropython.heap_unlock()
    eq(acc != 0, True)
