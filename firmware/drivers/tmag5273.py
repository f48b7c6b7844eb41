# TI TMAG5273 3-axis linear Hall sensor on I2C: identity, configuration, field and temperature reads.
#
# Register addresses and bit layouts are the datasheet's (SLYS045); hardware/sensors.md gives the reason for
# every value written. Variants: the letter is the factory I2C address (A 0x35, B 0x22, C 0x78, D 0x44), the digit
# the range (x1: +-40/80 mT, x2: +-133/266 mT), which the driver reads from DEVICE_ID. read() and the unit helpers
# allocate nothing. CRC on reads stays disabled (reset default): every I2C transfer here is short and on-board.
import time
from array import array

from micropython import const

from drivers import SensorError, chip_error, errname, not_found

ADDR_A = const(0x35)  # TMAG5273A1 / A2
ADDR_B = const(0x22)  # TMAG5273B1 / B2
ADDR_C = const(0x78)
ADDR_D = const(0x44)

_DEVICE_CONFIG_1 = const(0x00)  # CRC_EN(7) MAG_TEMPCO(6:5) CONV_AVG(4:2) I2C_RD(1:0)
_DEVICE_CONFIG_2 = const(0x01)  # THR_HYST(7:5) LP_LN(4) I2C_GLITCH_FILTER(3) TRIGGER_MODE(2) OPERATING_MODE(1:0)
_SENSOR_CONFIG_1 = const(0x02)  # MAG_CH_EN(7:4) SLEEPTIME(3:0)
_SENSOR_CONFIG_2 = const(0x03)  # THRX_COUNT(6) MAG_THR_DIR(5) MAG_GAIN_CH(4) ANGLE_EN(3:2) X_Y_RANGE(1) Z_RANGE(0)
_T_CONFIG = const(0x07)  # T_THR_CONFIG(7:1) T_CH_EN(0)
_INT_CONFIG_1 = const(0x08)  # RSLT_INT(7) THRSLD_INT(6) INT_STATE(5) INT_MODE(4:2) MASK_INTB(0)
_I2C_ADDRESS = const(0x0C)  # I2C_ADDRESS(7:1) I2C_ADDRESS_UPDATE_EN(0)
_DEVICE_ID = const(0x0D)  # VER(1:0); then MANUFACTURER_ID_LSB (0x0E), _MSB (0x0F)
_T_MSB_RESULT = const(0x10)  # T, X, Y, Z results MSB first (0x10..0x17), then CONV_STATUS (0x18)
_CONV_STATUS = const(0x18)  # SET_COUNT(7:5) POR(4) DIAG_STATUS(1) RESULT_STATUS(0)
_TRIGGER = const(0x80)  # OR-ed into the register address: start a conversion (standby mode)

_MANUFACTURER_ID = const(0x5449)
_LP_LN = const(0x10)
_MODE_STANDBY = const(0)
_MODE_CONTINUOUS = const(2)

# Enabled axes: MAG_CH_EN values 1..7 are exactly these bit sets
AXIS_X = const(1)
AXIS_Y = const(2)
AXIS_Z = const(4)
AXES_XZ = const(5)  # the reference design's field-angle pair (docs/depth.md)
AXES_XYZ = const(7)

# CONV_STATUS bits, as returned by read()
STATUS_RESULT = const(0x01)  # a conversion set completed since CONV_STATUS was last read
STATUS_DIAG = const(0x02)  # internal diagnostics failed (see DEVICE_STATUS)
STATUS_POR = const(0x10)  # the chip powered up since setup: its configuration is lost
SET_COUNT_SHIFT = const(5)  # SET_COUNT(7:5): rolling count of conversion sets, tells a new set from a repeat

_AVERAGING = (1, 2, 4, 8, 16, 32)
# counts -> uT: raw * num >> shift = raw * range_mT * 1000 / 32768, with raw * num < 2^30 for every range
_UT_SCALE = {40: (625, 9), 80: (625, 8), 133: (16625, 12), 266: (16625, 11)}


def temp_to_cdeg(raw):
    """Temperature result to centi-degrees C: 25 degC at 17508 counts, 60.1 counts per degC; rounded."""
    d = (raw - 17508) * 1000  # |d| < 2^26 for any 16-bit raw
    return 2500 + ((d + 300) // 601 if d >= 0 else -((300 - d) // 601))


class TMAG5273:
    """The Hall sensor, converting continuously (or on trigger()), read as raw int16 counts.

    Defaults are the reference design's (docs/depth.md): X and Z channels, +-40/133 mT (the x1/x2 narrow range),
    32x averaging, low-noise mode, temperature channel on, continuous conversion.
    """

    def __init__(
        self,
        i2c,
        addr=ADDR_A,
        *,
        axes=AXES_XZ,
        wide_range=False,
        averaging=32,
        temperature=True,
        low_noise=True,
        continuous=True,
        probe=True,
    ):
        self.i2c = i2c
        self.addr = addr
        self._b1 = bytearray(1)
        self._b3 = bytearray(3)
        self._b9 = bytearray(9)
        self.raw = array("h", bytes(8))  # X, Y, Z, T counts
        # the latest read(): field counts, temperature in centi-degC, CONV_STATUS
        self.x = 0
        self.y = 0
        self.z = 0
        self.temp_cdeg = 0
        self.status = 0
        self.version = 0
        self.range_mt = 0
        self.ut_num = 0
        self.ut_shift = 0
        self.conversion_us = 0
        self._config = (axes, wide_range, averaging, temperature, low_noise, continuous)
        if probe:
            self.init()

    # -- setup (allocation allowed)
    def _identify(self):
        b = self._b3
        try:
            try:
                self.i2c.readfrom_mem_into(self.addr, _DEVICE_ID, b)
            except OSError:
                # a chip in sleep mode wakes on this access and may miss it; it is awake 50 us later
                time.sleep_us(100)
                self.i2c.readfrom_mem_into(self.addr, _DEVICE_ID, b)
        except OSError as e:
            raise not_found("TMAG5273", self.addr, e) from None
        mid = b[1] | (b[2] << 8)
        if mid != _MANUFACTURER_ID:
            raise chip_error("TMAG5273", self.addr, "MANUFACTURER_ID is 0x%04X, expected 0x5449" % mid)
        ver = b[0] & 0x03
        if ver != 1 and ver != 2:
            raise chip_error("TMAG5273", self.addr, "DEVICE_ID version %d is reserved" % ver)
        self.version = ver

    def init(self):
        """Identify and configure the chip again with the same settings (re-probe after a fault)."""
        self._identify()
        self.setup()

    def setup(self):
        """Configure (again, e.g. after read() reported STATUS_POR)."""
        try:
            self.configure(*self._config)
        except SensorError:
            raise
        except OSError as e:
            raise chip_error("TMAG5273", self.addr, "bus error %s during setup" % errname(e)) from None

    def configure(
        self, axes=AXES_XZ, wide_range=False, averaging=32, temperature=True, low_noise=True, continuous=True
    ):
        if averaging not in _AVERAGING:
            raise ValueError("averaging must be 1, 2, 4, 8, 16 or 32")
        if not 0 < axes <= AXES_XYZ:
            raise ValueError("axes: a non-empty set of AXIS_X, AXIS_Y, AXIS_Z")
        channels = (axes & 1) + ((axes >> 1) & 1) + ((axes >> 2) & 1) + (1 if temperature else 0)
        ranges = (40, 80) if self.version == 1 else (133, 266)
        self.range_mt = ranges[1 if wide_range else 0]
        self.ut_num, self.ut_shift = _UT_SCALE[self.range_mt]
        self.conversion_us = 25 + 25 * averaging * channels
        self._write(_DEVICE_CONFIG_2, _MODE_STANDBY)  # stop converting while the rest changes
        self._write(_DEVICE_CONFIG_1, _AVERAGING.index(averaging) << 2)  # no CRC, no magnet tempco, 3-byte reads
        self._write(_SENSOR_CONFIG_1, axes << 4)
        self._write(_SENSOR_CONFIG_2, 0x03 if wide_range else 0x00)  # X_Y_RANGE, Z_RANGE; angle unit off
        self._write(_T_CONFIG, 0x01 if temperature else 0x00)
        self._write(_INT_CONFIG_1, 0x00)  # no interrupt: the loop polls
        self._write(_CONV_STATUS, STATUS_POR)  # clear POR so a later power loss shows in read()
        mode = _MODE_CONTINUOUS if continuous else _MODE_STANDBY
        self._write(_DEVICE_CONFIG_2, (_LP_LN if low_noise else 0) | mode)
        self._config = (axes, wide_range, averaging, temperature, low_noise, continuous)

    def _write(self, reg, val):
        self._b1[0] = val
        self.i2c.writeto_mem(self.addr, reg, self._b1)

    def set_address(self, new_addr):
        """Move the chip to another 7-bit address until its next power-on (two sensors of one variant on a
        bus: power them up one at a time and move the first)."""
        self._write(_I2C_ADDRESS, (new_addr << 1) | 0x01)
        self.addr = new_addr
        self.i2c.readfrom_mem_into(self.addr, _DEVICE_ID, self._b3)

    # -- per sample (no allocation)
    def trigger(self):
        """Standby mode: start one conversion set (ready conversion_us later). Returns CONV_STATUS."""
        self.i2c.readfrom_mem_into(self.addr, _CONV_STATUS | _TRIGGER, self._b1)
        return self._b1[0]

    def read(self, out=None):
        """Read the latest results in one 9-byte burst: X, Y, Z field and temperature, raw counts, into `out`
        (default self.raw) in that order, and into self.x, self.y, self.z (counts), self.temp_cdeg and
        self.status. Returns CONV_STATUS (STATUS_*, SET_COUNT)."""
        b = self._b9
        self.i2c.readfrom_mem_into(self.addr, _T_MSB_RESULT, b)
        if out is None:
            out = self.raw
        v = (b[2] << 8) | b[3]
        v = v - 0x10000 if v & 0x8000 else v
        out[0] = v
        self.x = v
        v = (b[4] << 8) | b[5]
        v = v - 0x10000 if v & 0x8000 else v
        out[1] = v
        self.y = v
        v = (b[6] << 8) | b[7]
        v = v - 0x10000 if v & 0x8000 else v
        out[2] = v
        self.z = v
        v = (b[0] << 8) | b[1]  # unsigned; below 0x8000 for any temperature the chip survives
        out[3] = v - 0x10000 if v & 0x8000 else v
        self.temp_cdeg = temp_to_cdeg(v)
        self.status = b[8]
        return b[8]

    def to_ut(self, raw):
        """Field counts to microtesla (int, rounded) for the configured range."""
        return (raw * self.ut_num + (1 << (self.ut_shift - 1))) >> self.ut_shift

    def temperature_cdeg(self, raw):
        return temp_to_cdeg(raw)
