# Register-level emulator of the TI TMAG5273 3-axis linear Hall sensor, for the virtual probe.
#
# What it models, from the datasheet (hardware/sensors.md lists the registers and the assumptions):
# - register file 0x00..0x1C with reset values, read-only registers, reserved bits, DEVICE_ID (VER 1: +-40/80 mT,
#   VER 2: +-133/266 mT), MANUFACTURER_ID 0x5449, auto-increment;
# - variants: the letter is the factory address (A 0x35, B 0x22, C 0x78, D 0x44), the digit the range (1 or 2);
# - conversions timed on board time: one set of the enabled channels takes 25 us + 25 us * averaging * channels
#   (temperature counted as a channel); continuous mode starts 70 us after leaving standby and converts back to
#   back; standby mode converts once per trigger (the register address byte with bit 7 set); wake-up-and-sleep
#   mode converts after each SLEEPTIME; sleep mode does not convert;
# - results as int16 counts of the selected range (full scale +-32768), saturated; temperature as
#   17508 + 60.1 counts/degC above 25 degC; CONV_STATUS SET_COUNT (rolling 3-bit count of conversion sets),
#   RESULT_STATUS, POR (write 1 to clear); the angle result (ANGLE_EN) in 1/16 degree;
# - I2C_ADDRESS: with I2C_ADDRESS_UPDATE_EN the chip moves to the new address until the next power-on.
# Assumed where the datasheet is silent: RESULT_STATUS clears when CONV_STATUS is read; a conversion samples the
# field at the middle of its conversion time. Not modelled: CRC, the 1-byte read modes, thresholds and the INT
# pin, gain/offset correction, magnet temperature compensation, MAGNITUDE_RESULT, noise (the source adds it).
#
# The field comes from `source(t_us, out)`: called once per conversion with the board time of the sample (int us)
# and a preallocated list to fill with Bx, By, Bz in nanotesla and the die temperature in millidegrees C (ints).
# Without a source the list `field` holds a constant field. With integer sources nothing is allocated. `stray`
# (Bx, By, Bz nT) is added to every conversion: a magnet or steel near the chip; it outlasts power cycles.
# The factory address is the variant's unless `addr` is given; power-on returns the chip to it, so attach the
# emulator at its factory address (a moved address lasts until the next power-on, as on the chip).
import math

from micropython import const

from vboard import RO, RW, W1C, RegisterDevice

MANUFACTURER_ID = const(0x5449)
FACTORY_ADDR = {"A": 0x35, "B": 0x22, "C": 0x78, "D": 0x44}

_DEVICE_CONFIG_1 = const(0x00)
_DEVICE_CONFIG_2 = const(0x01)
_SENSOR_CONFIG_1 = const(0x02)
_SENSOR_CONFIG_2 = const(0x03)
_T_CONFIG = const(0x07)
_I2C_ADDRESS = const(0x0C)
_DEVICE_ID = const(0x0D)
_T_MSB = const(0x10)
_X_MSB = const(0x12)
_Y_MSB = const(0x14)
_Z_MSB = const(0x16)
_CONV_STATUS = const(0x18)
_ANGLE_MSB = const(0x19)

_STANDBY = const(0)
_CONTINUOUS = const(2)
_WAKE_SLEEP = const(3)
_START_MEASURE_US = const(70)  # standby -> continuous measure

_T_ADC_T0 = const(17508)  # temperature result at 25 degC
_T_ADC_RES_X10 = const(601)  # 60.1 counts per degC

# (first, last, access, reset value, writable bits)
_SPEC = (
    (0x00, 0x00, RW, 0x00, 0xFF),  # DEVICE_CONFIG_1: CRC_EN MAG_TEMPCO CONV_AVG I2C_RD
    (0x01, 0x01, RW, 0x00, 0xFF),  # DEVICE_CONFIG_2: THR_HYST LP_LN I2C_GLITCH_FILTER TRIGGER_MODE OPERATING_MODE
    (0x02, 0x02, RW, 0x00, 0xFF),  # SENSOR_CONFIG_1: MAG_CH_EN SLEEPTIME
    (0x03, 0x03, RW, 0x00, 0x7F),  # SENSOR_CONFIG_2: THRX_COUNT MAG_THR_DIR MAG_GAIN_CH ANGLE_EN X_Y_RANGE Z_RANGE
    (0x04, 0x06, RW, 0x00, 0xFF),  # X/Y/Z_THR_CONFIG
    (0x07, 0x07, RW, 0x00, 0xFF),  # T_CONFIG: T_THR_CONFIG T_CH_EN
    (0x08, 0x08, RW, 0x00, 0xFD),  # INT_CONFIG_1: RSLT_INT THRSLD_INT INT_STATE INT_MODE - MASK_INTB
    (0x09, 0x0B, RW, 0x00, 0xFF),  # MAG_GAIN_CONFIG, MAG_OFFSET_CONFIG_1/2
    (0x0C, 0x0C, RW, 0x00, 0xFF),  # I2C_ADDRESS (reset value: factory address << 1)
    (0x0D, 0x0D, RO, 0x00, 0x00),  # DEVICE_ID: VER
    (0x0E, 0x0E, RO, MANUFACTURER_ID & 0xFF, 0x00),
    (0x0F, 0x0F, RO, MANUFACTURER_ID >> 8, 0x00),
    (0x10, 0x17, RO, 0x00, 0x00),  # T, X, Y, Z results, MSB first
    (0x18, 0x18, W1C, 0x10, 0x10),  # CONV_STATUS: SET_COUNT POR - DIAG_STATUS RESULT_STATUS
    (0x19, 0x1B, RO, 0x00, 0x00),  # ANGLE_RESULT_MSB/LSB, MAGNITUDE_RESULT
    (0x1C, 0x1C, W1C, 0x10, 0x0F),  # DEVICE_STATUS: INTB_RB OSC_ER INT_ER OTP_CRC_ER VCC_UV_ER
)

# MAG_CH_EN -> enabled axes (bit 0 X, 1 Y, 2 Z) and conversions per set (XYX, YXY... convert one axis twice)
_AXES = (0, 1, 2, 3, 4, 5, 6, 7, 3, 3, 6, 5, 0, 0, 0, 0)
_CONVERSIONS = (0, 1, 1, 2, 1, 2, 2, 3, 3, 3, 3, 3, 0, 0, 0, 0)
_SLEEP_MS = (1, 5, 10, 15, 20, 30, 50, 100, 500, 1000, 2000, 5000, 20000, 20000, 20000, 20000)


def _div_round(n, d):
    return (n + d // 2) // d if n >= 0 else -((d // 2 - n) // d)


class TMAG5273Emu(RegisterDevice):
    NAME = "TMAG5273"
    SIZE = 128  # 7-bit register address; bit 7 of the address byte is the conversion trigger

    def __init__(self, variant="A1", addr=None, source=None, version=None):
        self.variant = variant
        self.factory_addr = FACTORY_ADDR[variant[0]] if addr is None else addr
        self.version = int(variant[1]) if version is None else version  # DEVICE_ID VER; 0 or 3 emulates junk
        self.manufacturer_id = MANUFACTURER_ID
        self.source = source
        self.field = [0, 0, 0, 25_000]  # Bx, By, Bz nT; temperature mdegC
        self.stray = [0, 0, 0]  # Bx, By, Bz nT from outside the scenario's magnet
        self.conversions = 0  # conversion sets completed since power-on
        super().__init__(self.factory_addr, _SPEC)
        self.power_on(0)

    def range_mt(self, xy=True):
        bit = 0x02 if xy else 0x01
        wide = self.regs[_SENSOR_CONFIG_2] & bit
        if self.version == 2:
            return 266 if wide else 133
        return 80 if wide else 40

    def conversion_us(self):
        r = self.regs
        n = _CONVERSIONS[r[_SENSOR_CONFIG_1] >> 4] + (r[_T_CONFIG] & 1)
        if not n:
            return 0
        avg = (r[_DEVICE_CONFIG_1] >> 2) & 7
        return 25 + 25 * (1 << min(avg, 5)) * n

    # -- power
    def power_on(self, t_us=0):
        if self.bus is not None and self.addr != self.factory_addr:
            self.bus.move(self.addr, self.factory_addr)
        self.addr = self.factory_addr
        self.reset_values[_I2C_ADDRESS] = self.factory_addr << 1
        self.reset_values[_DEVICE_ID] = self.version & 3
        self.reset_values[0x0E] = self.manufacturer_id & 0xFF
        self.reset_values[0x0F] = self.manufacturer_id >> 8
        super().power_on(t_us)
        self._now = 0  # us since power-on
        self._busy = False
        self._started = 0
        self._done = 0
        self._set_count = 0
        self._mode_before = 0
        self.conversions = 0

    # -- time
    def advance_us(self, dt):
        self._now += dt
        while self._busy and self._done <= self._now:
            self._complete()

    def _start(self, at):
        t = self.conversion_us()
        if not t:
            self._busy = False
            return
        self._started = at
        self._done = at + t
        self._busy = True

    def _complete(self):
        r = self.regs
        start = self._started
        end = self._done
        f = self.field
        if self.source is not None:
            self.source(self.t_us + (start + end) // 2, f)
        axes = _AXES[r[_SENSOR_CONFIG_1] >> 4]
        st = self.stray
        if axes & 1:
            self._result(_X_MSB, f[0] + st[0], self.range_mt(True))
        if axes & 2:
            self._result(_Y_MSB, f[1] + st[1], self.range_mt(True))
        if axes & 4:
            self._result(_Z_MSB, f[2] + st[2], self.range_mt(False))
        if r[_T_CONFIG] & 1:
            t = _T_ADC_T0 + _div_round((f[3] - 25_000) * _T_ADC_RES_X10, 10_000)
            t = 0 if t < 0 else (65535 if t > 65535 else t)
            r[_T_MSB] = t >> 8
            r[_T_MSB + 1] = t & 0xFF
        if r[_SENSOR_CONFIG_2] & 0x0C:
            self._angle((r[_SENSOR_CONFIG_2] >> 2) & 3)
        self._set_count = (self._set_count + 1) & 7
        r[_CONV_STATUS] = (self._set_count << 5) | (r[_CONV_STATUS] & 0x10) | 0x01
        self.conversions += 1
        mode = r[_DEVICE_CONFIG_2] & 3
        if mode == _CONTINUOUS:
            self._start(end)
        elif mode == _WAKE_SLEEP:
            self._start(end + _SLEEP_MS[r[_SENSOR_CONFIG_1] & 15] * 1000)
        else:
            self._busy = False

    def _result(self, reg, b_nt, range_mt):
        v = _div_round(b_nt * 32768, range_mt * 1_000_000)
        v = 32767 if v > 32767 else (-32768 if v < -32768 else v)
        self.regs[reg] = (v >> 8) & 0xFF
        self.regs[reg + 1] = v & 0xFF

    def _code(self, reg):
        v = (self.regs[reg] << 8) | self.regs[reg + 1]
        return v - 0x10000 if v & 0x8000 else v

    def _angle(self, pair):
        first, second = ((_X_MSB, _Y_MSB), (_Y_MSB, _Z_MSB), (_X_MSB, _Z_MSB))[pair - 1]
        deg = math.degrees(math.atan2(self._code(second), self._code(first))) % 360.0
        v = round(deg * 16) & 0x1FFF
        self.regs[_ANGLE_MSB] = v >> 8
        self.regs[_ANGLE_MSB + 1] = v & 0xFF

    # -- bus side
    def i2c_select(self, reg):
        if reg & 0x80:
            self._trigger()
        self.ptr = reg & 0x7F

    def _trigger(self):
        r = self.regs
        if r[_DEVICE_CONFIG_2] & 3 == _STANDBY and not r[_DEVICE_CONFIG_2] & 0x04 and not self._busy:
            self._start(self._now)

    def read_reg(self, reg):
        if not self.kind[reg]:
            return 0
        v = self.regs[reg]
        if reg == _CONV_STATUS:
            self.regs[reg] = v & 0xFE
        return v

    def on_write(self, reg, val):
        if reg == _DEVICE_CONFIG_2:
            mode = val & 3
            if mode == _CONTINUOUS or mode == _WAKE_SLEEP:
                if not self._busy or self._mode_before != mode:
                    self._start(self._now + _START_MEASURE_US)
            elif self._mode_before == _CONTINUOUS or self._mode_before == _WAKE_SLEEP:
                self._busy = False
        elif reg == _DEVICE_CONFIG_1:
            if val & 0x80:
                self.violation("CRC is not emulated", reg, val)
            if val & 0x03:
                self.violation("1-byte read modes are not emulated", reg, val)
            if (val >> 2) & 7 > 5:
                self.violation("reserved CONV_AVG value", reg, val)
        elif reg == _I2C_ADDRESS and val & 1:
            new = val >> 1
            if self.bus is not None:
                self.bus.move(self.addr, new)
            self.addr = new

    def write_reg(self, reg, val):
        self._mode_before = self.regs[_DEVICE_CONFIG_2] & 3
        super().write_reg(reg, val)
