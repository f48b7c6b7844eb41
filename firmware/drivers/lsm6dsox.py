# ST LSM6DSOX 6-axis IMU on I2C: identity, reset, configuration, FIFO batching, temperature.
#
# Register addresses and bit layouts are the datasheet's (DS12814); hardware/sensors.md gives the reason for
# every value written. Per-sample methods (fifo_status, read_fifo, read_gyro_accel, temperature_raw) read into
# buffers allocated here once and allocate nothing.
import time
from array import array

import micropython
from micropython import const

from drivers import SensorError, chip_error, errname, not_found

ADDR_LOW = const(0x6A)  # SA0/SDO pin to GND
ADDR_HIGH = const(0x6B)  # SA0/SDO pin to VDDIO

_WHO_AM_I_VALUE = const(0x6C)

_FIFO_CTRL1 = const(0x07)  # WTM[7:0]
_FIFO_CTRL2 = const(0x08)  # STOP_ON_WTM(7) FIFO_COMPR_RT_EN(6) ODRCHG_EN(4) UNCOPTR_RATE(2:1) WTM8(0)
_FIFO_CTRL3 = const(0x09)  # BDR_GY(7:4) BDR_XL(3:0)
_FIFO_CTRL4 = const(0x0A)  # DEC_TS_BATCH(7:6) ODR_T_BATCH(5:4) FIFO_MODE(2:0)
_INT1_CTRL = const(0x0D)  # ... INT1_FIFO_FULL(5) INT1_FIFO_OVR(4) INT1_FIFO_TH(3) ... INT1_DRDY_G(1) INT1_DRDY_XL(0)
_WHO_AM_I = const(0x0F)
_CTRL1_XL = const(0x10)  # ODR_XL(7:4) FS_XL(3:2) LPF2_XL_EN(1)
_CTRL2_G = const(0x11)  # ODR_G(7:4) FS_G(3:2) FS_125(1)
_CTRL3_C = const(0x12)  # BOOT(7) BDU(6) H_LACTIVE(5) PP_OD(4) SIM(3) IF_INC(2) SW_RESET(0)
_CTRL9_XL = const(0x18)  # DEN_X/Y/Z(7:5) DEN_XL_G(4) DEN_XL_EN(3) DEN_LH(2) I3C_DISABLE(1)
_OUT_TEMP_L = const(0x20)  # OUT_TEMP_L/H, then OUTX_L_G .. OUTZ_H_G (0x22..0x27), OUTX_L_A .. OUTZ_H_A
_OUTX_L_G = const(0x22)
# FIFO_STATUS1: DIFF_FIFO[7:0]; FIFO_STATUS2 (0x3B): WTM_IA OVR_IA FULL_IA COUNTER_BDR_IA OVR_LATCHED - DIFF_FIFO[9:8]
_FIFO_STATUS1 = const(0x3A)
_INTERNAL_FREQ_FINE = const(0x63)  # int8, ODR trim in steps of 0.15 %
_FIFO_DATA_OUT_TAG = const(0x78)  # TAG_SENSOR(7:3) TAG_CNT(2:1) TAG_PARITY(0), then X, Y, Z (0x79..0x7E)

_BOOT = const(0x80)
_BDU = const(0x40)
_IF_INC = const(0x04)
_SW_RESET = const(0x01)
_CTRL9_XL_DEFAULT = const(0xE0)
_I3C_DISABLE = const(0x02)
_FIFO_BYPASS = const(0)
_FIFO_CONTINUOUS = const(6)
_INT1_FIFO_TH = const(0x08)

_RESET_POLLS = const(20)  # CTRL3_C reads, 100 us apart, for SW_RESET (~50 us) and BOOT to clear
_BOOT_MS = const(10)  # trimming-data reload after BOOT

# FIFO word tags (TAG_SENSOR)
TAG_GYRO = const(1)
TAG_ACCEL = const(2)
TAG_TEMPERATURE = const(3)
TAG_TIMESTAMP = const(4)
TAG_CFG_CHANGE = const(5)

# FIFO_STATUS2 flags, as kept in LSM6DSOX.fifo_flags after fifo_status()
FIFO_WTM = const(0x80)  # level >= watermark
FIFO_OVR = const(0x40)  # full and words have been lost
FIFO_FULL = const(0x20)  # full at the next sample
FIFO_OVR_LATCHED = const(0x08)  # words lost since the previous fifo_status()

FIFO_DEPTH = const(512)  # words
WORD_BYTES = const(7)  # tag + X, Y, Z int16 little-endian

# Nominal ODRs (Hz) by ODR code 1..10; all derive from a 6667 Hz clock, ODR code n = 6667 Hz / 2^(10 - n).
_ODRS = (12, 26, 52, 104, 208, 416, 833, 1666, 3333, 6666)


@micropython.viper
def _decode_words(raw: ptr8, out: ptr16, n: int):
    # 7-byte FIFO words -> (tag, x, y, z) in an int16 array; the 16-bit store keeps the two's complement sign.
    i = 0
    j = 0
    k = 0
    while i < n:
        out[k] = raw[j] >> 3
        out[k + 1] = raw[j + 1] | (raw[j + 2] << 8)
        out[k + 2] = raw[j + 3] | (raw[j + 4] << 8)
        out[k + 3] = raw[j + 5] | (raw[j + 6] << 8)
        i += 1
        j += 7
        k += 4


@micropython.viper
def _decode_le16(raw: ptr8, out: ptr16, n: int):
    i = 0
    while i < n:
        out[i] = raw[2 * i] | (raw[2 * i + 1] << 8)
        i += 1


def _odr_code(odr_hz):
    # ODR_XL / ODR_G / BDR code of a nominal rate such as 833 (within 1 Hz); ValueError if none.
    for i, nominal in enumerate(_ODRS):
        if abs(odr_hz - nominal) <= 1:
            return i + 1
    raise ValueError("odr_hz not an LSM6DSOX ODR")


def temp_to_cdeg(raw):
    """OUT_TEMP counts (256 per degC, 0 at 25 degC) to centi-degrees C, rounded."""
    return 2500 + ((raw * 25 + 32) >> 6)


class LSM6DSOX:
    """The IMU, set up for FIFO batching of gyro and accel words at one ODR.

    Units: raw int16 counts; accel_ug_per_lsb (micro-g per count) and gyro_udps_per_lsb (micro-degrees per second
    per count) convert them. Setup failures raise drivers.SensorError; per-sample bus errors stay OSError.
    """

    def __init__(
        self,
        i2c,
        addr=ADDR_LOW,
        *,
        accel_fs_g=4,
        gyro_fs_dps=500,
        odr_hz=833,
        watermark=16,
        max_words=32,
        int1_watermark=True,
        probe=True,
    ):
        self.i2c = i2c
        self.addr = addr
        self.max_words = max_words
        self._b1 = bytearray(1)
        self._b2 = bytearray(2)
        self._b12 = bytearray(12)
        self._raw = bytearray(WORD_BYTES * max_words)
        mv = memoryview(self._raw)
        # one view per word count, made now, so read_fifo(n) slices nothing per call
        self._views = [mv[: WORD_BYTES * n] for n in range(max_words + 1)]
        self.words = array("h", bytes(8 * max_words))  # per word: tag, x, y, z
        self.fifo_flags = 0
        self.overrun = 0  # read_pairs(): words were lost since the previous call
        self._held = 0  # read_pairs(): tag of a word waiting for its partner (0: none), its TAG_CNT, X, Y, Z
        self._held_cnt = 0
        self._hx = 0
        self._hy = 0
        self._hz = 0
        self.accel_ug_per_lsb = 0
        self.gyro_udps_per_lsb = 0
        self.odr_code = 0
        self.watermark = 0
        self._ctrl = 0
        self._config = (accel_fs_g, gyro_fs_dps, odr_hz, watermark, int1_watermark)
        if probe:
            self.init()

    # -- setup (allocation allowed)
    def _identify(self):
        try:
            self.i2c.readfrom_mem_into(self.addr, _WHO_AM_I, self._b1)
        except OSError as e:
            raise not_found("LSM6DSOX", self.addr, e) from None
        if self._b1[0] != _WHO_AM_I_VALUE:
            raise chip_error("LSM6DSOX", self.addr, "WHO_AM_I is 0x%02X, expected 0x6C" % self._b1[0])

    def init(self):
        """Identify and set up the chip again with the same configuration (re-probe after a fault)."""
        self._identify()
        self.setup()

    def setup(self):
        """Reset and configure (again, e.g. after is_configured() found the chip re-powered)."""
        self._held = 0
        try:
            self.reset()
            self.configure(*self._config)
        except SensorError:
            raise
        except OSError as e:
            raise chip_error("LSM6DSOX", self.addr, "bus error %s during setup" % errname(e)) from None

    def reset(self):
        """Software reset (control registers to defaults, FIFO emptied), then BOOT (trimming data reloaded)."""
        self._write(_CTRL3_C, _SW_RESET)
        self._wait_clear(_SW_RESET, "software reset")
        self._write(_CTRL3_C, _BOOT | _IF_INC)
        time.sleep_ms(_BOOT_MS)
        self._wait_clear(_BOOT, "boot")

    def _wait_clear(self, bit, what):
        for _ in range(_RESET_POLLS):
            self.i2c.readfrom_mem_into(self.addr, _CTRL3_C, self._b1)
            if not self._b1[0] & bit:
                return
            time.sleep_us(100)
        raise chip_error("LSM6DSOX", self.addr, what + " did not complete")

    def configure(self, accel_fs_g=4, gyro_fs_dps=500, odr_hz=833, watermark=16, int1_watermark=True):
        """Full scales (g, dps), one ODR for both sensors (a nominal rate such as 833, within 1 Hz), FIFO
        watermark in words (1..511), INT1 on the watermark or not. Leaves the FIFO empty and both sensors on."""
        code = _odr_code(odr_hz)
        # FS_XL code, micro-g per count (XL_FS_MODE = 0 mapping)
        xl = {2: (0, 61), 4: (2, 122), 8: (3, 244), 16: (1, 488)}.get(accel_fs_g)
        # FS_G(3:2) | FS_125(1) field, micro-dps per count
        g = {125: (0x02, 4375), 250: (0x00, 8750), 500: (0x04, 17500), 1000: (0x08, 35000), 2000: (0x0C, 70000)}.get(
            gyro_fs_dps
        )
        if xl is None or g is None:
            raise ValueError("accel_fs_g must be 2/4/8/16 and gyro_fs_dps 125/250/500/1000/2000")
        fs_xl, self.accel_ug_per_lsb = xl
        fs_g, self.gyro_udps_per_lsb = g
        if not 0 < watermark < FIFO_DEPTH:
            raise ValueError("watermark must be 1..511 words")
        ctrl1 = (code << 4) | (fs_xl << 2)
        ctrl2 = (code << 4) | fs_g
        self._write(_CTRL3_C, _BDU | _IF_INC)
        self._write(_CTRL9_XL, _CTRL9_XL_DEFAULT | _I3C_DISABLE)
        self._write(_FIFO_CTRL4, _FIFO_BYPASS)  # empties the FIFO
        self._held = 0  # and a word read_pairs() held for its partner has none now
        self._write(_FIFO_CTRL1, watermark & 0xFF)
        self._write(_FIFO_CTRL2, watermark >> 8)
        self._write(_FIFO_CTRL3, (code << 4) | code)  # gyro and accel batched at their ODR
        self._write(_INT1_CTRL, _INT1_FIFO_TH if int1_watermark else 0)
        self._write(_FIFO_CTRL4, _FIFO_CONTINUOUS)
        self._write(_CTRL1_XL, ctrl1)  # sensors on last: the first samples land in a ready FIFO
        self._write(_CTRL2_G, ctrl2)
        self._ctrl = ctrl1 | (ctrl2 << 8)
        self.odr_code = code
        self.watermark = watermark
        self._config = (accel_fs_g, gyro_fs_dps, odr_hz, watermark, int1_watermark)

    def set_odr(self, odr_hz):
        """configure() again at another ODR (a nominal rate, as there), every other setting kept; the FIFO is
        emptied. A bad rate raises ValueError and changes nothing. The new rate is kept for init() and setup()
        even if the bus fails on the way (OSError), so a re-probed chip comes back at it."""
        _odr_code(odr_hz)
        accel_fs_g, gyro_fs_dps, _, watermark, int1_watermark = self._config
        self._config = (accel_fs_g, gyro_fs_dps, odr_hz, watermark, int1_watermark)
        self.configure(*self._config)

    def _write(self, reg, val):
        self._b1[0] = val
        self.i2c.writeto_mem(self.addr, reg, self._b1)

    def odr_mhz(self):
        """The true ODR in millihertz: nominal 6667 Hz / 2^(10 - code), trimmed by INTERNAL_FREQ_FINE."""
        self.i2c.readfrom_mem_into(self.addr, _INTERNAL_FREQ_FINE, self._b1)
        ff = self._b1[0] - 256 if self._b1[0] & 0x80 else self._b1[0]
        return 6667 * (10000 + 15 * ff) // (10 << (10 - self.odr_code))

    def flush_fifo(self):
        """Drop every word in the FIFO (bypass, then continuous again), e.g. after a stall."""
        self._held = 0
        self._write(_FIFO_CTRL4, _FIFO_BYPASS)
        self._write(_FIFO_CTRL4, _FIFO_CONTINUOUS)

    def raw_pairs(self, max_pairs):
        """A buffer for read_pairs(): max_pairs rows of gx, gy, gz, ax, ay, az (int16)."""
        return array("h", bytes(12 * max_pairs))

    # -- per sample (no allocation)
    def is_configured(self):
        """False if CTRL1_XL/CTRL2_G no longer hold our configuration (the chip lost power or was reset)."""
        b = self._b2
        self.i2c.readfrom_mem_into(self.addr, _CTRL1_XL, b)
        return (b[0] | (b[1] << 8)) == self._ctrl

    def fifo_status(self):
        """Words waiting in the FIFO (0..512). The FIFO_STATUS2 flags (FIFO_WTM, FIFO_OVR, FIFO_FULL,
        FIFO_OVR_LATCHED) go to self.fifo_flags; the read clears FIFO_OVR_LATCHED on the chip."""
        b = self._b2
        self.i2c.readfrom_mem_into(self.addr, _FIFO_STATUS1, b)
        self.fifo_flags = b[1] & 0xF8
        return b[0] | ((b[1] & 0x03) << 8)

    def read_fifo(self, n, raw=None, out=None):
        """Read n FIFO words in one bus transaction and decode them into `out` (default self.words): word i is
        out[4i] = tag (TAG_GYRO, TAG_ACCEL, ...), out[4i+1..4i+3] = X, Y, Z raw counts. `raw`, if given, is the
        caller's buffer of exactly 7*n bytes. Read at most the level fifo_status() reported. Returns n."""
        if raw is None:
            if n > self.max_words:
                raise ValueError("n > max_words")
            raw = self._views[n]
        elif len(raw) != WORD_BYTES * n:
            raise ValueError("raw must hold 7*n bytes")
        if out is None:
            out = self.words
        if len(out) < 4 * n:
            raise ValueError("out must hold 4*n values")
        if n > 0:
            self.i2c.readfrom_mem_into(self.addr, _FIFO_DATA_OUT_TAG, raw)
            _decode_words(raw, out, n)
        return n

    def read_pairs(self, out, max_pairs):
        """Drain up to max_pairs samples from the FIFO into `out` as rows of gx, gy, gz, ax, ay, az raw counts,
        oldest first; returns the number of rows. A gyro and an accel word pair up when their TAG_CNT (time slot)
        matches, whichever comes first and across calls if a read split them; a word whose partner was lost to
        an overrun is dropped. self.overrun is set when the chip reported lost words since the previous call."""
        level = self.fifo_status()
        self.overrun = 1 if self.fifo_flags & (FIFO_OVR | FIFO_OVR_LATCHED) else 0
        w = self.words
        raw = self._raw
        rows = 0
        while level > 0 and rows < max_pairs:
            n = 2 * (max_pairs - rows) - (1 if self._held else 0)
            if n > level:
                n = level
            if n > self.max_words:
                n = self.max_words
            self.read_fifo(n)
            level -= n
            i = 0
            while i < n:
                tag = w[4 * i]
                cnt = raw[7 * i] & 0x06
                if tag == TAG_GYRO or tag == TAG_ACCEL:
                    if self._held and self._held != tag and self._held_cnt == cnt:
                        b = 6 * rows
                        g = 4 * i + 1
                        if tag == TAG_ACCEL:
                            out[b] = self._hx
                            out[b + 1] = self._hy
                            out[b + 2] = self._hz
                            out[b + 3] = w[g]
                            out[b + 4] = w[g + 1]
                            out[b + 5] = w[g + 2]
                        else:
                            out[b] = w[g]
                            out[b + 1] = w[g + 1]
                            out[b + 2] = w[g + 2]
                            out[b + 3] = self._hx
                            out[b + 4] = self._hy
                            out[b + 5] = self._hz
                        rows += 1
                        self._held = 0
                    else:
                        self._held = tag
                        self._held_cnt = cnt
                        self._hx = w[4 * i + 1]
                        self._hy = w[4 * i + 2]
                        self._hz = w[4 * i + 3]
                i += 1
        return rows

    def read_gyro_accel(self, out):
        """The latest sample from the output registers: out[0..5] = gyro X, Y, Z, accel X, Y, Z raw counts."""
        if len(out) < 6:
            raise ValueError("out must hold 6 values")
        self.i2c.readfrom_mem_into(self.addr, _OUTX_L_G, self._b12)
        _decode_le16(self._b12, out, 6)  # type: ignore[arg-type]  # viper ptr8/ptr16 take buffers

    def temperature_raw(self):
        """OUT_TEMP: 256 counts per degC, 0 at 25 degC."""
        b = self._b2
        self.i2c.readfrom_mem_into(self.addr, _OUT_TEMP_L, b)
        v = b[0] | (b[1] << 8)
        return v - 0x10000 if v & 0x8000 else v

    def temperature_cdeg(self):
        return temp_to_cdeg(self.temperature_raw())
