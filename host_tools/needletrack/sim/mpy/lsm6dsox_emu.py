# Register-level emulator of the ST LSM6DSOX IMU (main register page), for the virtual probe.
#
# What it models, from the datasheet (hardware/sensors.md lists the registers and the assumptions):
# - register file with reset values, read-only and reserved registers and reserved bits; WHO_AM_I = 0x6C;
# - IF_INC auto-increment, with the FIFO output block 0x78..0x7E wrapping back to 0x78 so one burst reads many
#   FIFO words; BDU (an output register pair is not updated between reading its low and its high byte);
# - SW_RESET and BOOT, complete by the next bus access (the driver polls and waits for the chip's own times;
#   `stuck_reset` makes them never complete);
# - accelerometer and gyroscope sampling at the configured ODR, all rates derived from one 6667 Hz oscillator
#   (ODR = 6667 Hz / 2^n, e.g. "833 Hz" = 833.375 Hz), trimmed by `clock_ppm` and reported in INTERNAL_FREQ_FINE;
# - the FIFO: 512 words of tag + 6 bytes, batching at BDR_XL / BDR_GY, bypass / FIFO / continuous modes,
#   watermark (WTM), STOP_ON_WTM, FIFO_WTM_IA, FIFO_FULL_IA, FIFO_OVR_IA and FIFO_OVR_LATCHED (cleared by reading
#   FIFO_STATUS2), TAG_CNT; the 25 us timestamp counter; STATUS_REG data-ready bits;
# - INT1 / INT2 lines (data-ready, FIFO threshold / overrun / full; active level per H_LACTIVE) driven onto board
#   pins with connect_int1() / connect_int2().
# Not modelled: embedded functions and their register page, compression, sensor hub, OIS, filters, self-test,
# temperature or timestamp batching, output rounding (ROUNDING), power modes (they change noise, not timing).
#
# Data come from `source(t_us, out)`: called once per sample instant with the board time of the sample (int us)
# and a preallocated list of 6 ints to fill with raw int16 counts: gyro X, Y, Z, accel X, Y, Z (saturated to
# int16 here). Raw counts depend on the full scale the firmware chose: accel_ug_per_lsb() and gyro_udps_per_lsb()
# give the current sensitivities. With integer sources, advance_us() allocates nothing.
from micropython import const

from vboard import RO, RW, RegisterDevice, board

WHO_AM_I_VALUE = const(0x6C)

_FIFO_CTRL1 = const(0x07)
_FIFO_CTRL2 = const(0x08)
_FIFO_CTRL3 = const(0x09)
_FIFO_CTRL4 = const(0x0A)
_INT1_CTRL = const(0x0D)
_INT2_CTRL = const(0x0E)
_WHO_AM_I = const(0x0F)
_CTRL1_XL = const(0x10)
_CTRL2_G = const(0x11)
_CTRL3_C = const(0x12)
_CTRL4_C = const(0x13)
_CTRL10_C = const(0x19)
_STATUS_REG = const(0x1E)
_OUT_TEMP_L = const(0x20)
_OUTX_L_G = const(0x22)
_OUTX_L_A = const(0x28)
_FIFO_STATUS1 = const(0x3A)
_FIFO_STATUS2 = const(0x3B)
_TIMESTAMP0 = const(0x40)
_TIMESTAMP3 = const(0x43)
_INTERNAL_FREQ_FINE = const(0x63)
_FIFO_TAG = const(0x78)
_FIFO_LAST = const(0x7E)

_XLDA = const(0x01)
_GDA = const(0x02)
_TDA = const(0x04)

TAG_GYRO = const(1)
TAG_ACCEL = const(2)

FIFO_WORDS = const(512)
_WORD = const(7)

# 1 / 6667 Hz in picoseconds: the period of the chip's base clock. ODR n ticks every 2^(10-n) base periods; the
# timestamp counts 6 times per base period (25 us nominal).
_BASE_PERIOD_PS = const(149_992_500)
_TEMP_DIVIDER = const(128)  # the temperature output refreshes at 6667 / 128 = 52 Hz

# (first, last, access, reset value, writable bits): DS12814 register map, main page.
_SPEC = (
    (0x01, 0x01, RW, 0x00, 0xC1),  # FUNC_CFG_ACCESS
    (0x02, 0x02, RW, 0x3F, 0xC0),  # PIN_CTRL: bits 5:0 must stay 1
    (0x04, 0x05, RW, 0x00, 0xFF),  # S4S_TPH_L/H
    (0x06, 0x06, RW, 0x00, 0x03),  # S4S_RR
    (0x07, 0x07, RW, 0x00, 0xFF),  # FIFO_CTRL1: WTM[7:0]
    (0x08, 0x08, RW, 0x00, 0xD7),  # FIFO_CTRL2: STOP_ON_WTM, FIFO_COMPR_RT_EN, ODRCHG_EN, UNCOPTR_RATE, WTM8
    (0x09, 0x09, RW, 0x00, 0xFF),  # FIFO_CTRL3: BDR_GY, BDR_XL
    (0x0A, 0x0A, RW, 0x00, 0xF7),  # FIFO_CTRL4: DEC_TS_BATCH, ODR_T_BATCH, FIFO_MODE
    (0x0B, 0x0B, RW, 0x00, 0xE7),  # COUNTER_BDR_REG1
    (0x0C, 0x0C, RW, 0x00, 0xFF),  # COUNTER_BDR_REG2
    (0x0D, 0x0D, RW, 0x00, 0xFF),  # INT1_CTRL
    (0x0E, 0x0E, RW, 0x00, 0x7F),  # INT2_CTRL
    (0x0F, 0x0F, RO, WHO_AM_I_VALUE, 0x00),
    (0x10, 0x10, RW, 0x00, 0xFE),  # CTRL1_XL: ODR_XL, FS_XL, LPF2_XL_EN
    (0x11, 0x11, RW, 0x00, 0xFE),  # CTRL2_G: ODR_G, FS_G, FS_125
    (0x12, 0x12, RW, 0x04, 0xFD),  # CTRL3_C: BOOT BDU H_LACTIVE PP_OD SIM IF_INC - SW_RESET
    (0x13, 0x13, RW, 0x00, 0x6E),  # CTRL4_C: SLEEP_G INT2_on_INT1 DRDY_MASK I2C_disable LPF1_SEL_G
    (0x14, 0x14, RW, 0x00, 0xEF),  # CTRL5_C: XL_ULP_EN ROUNDING ST_G ST_XL
    (0x15, 0x15, RW, 0x00, 0xFF),  # CTRL6_C
    (0x16, 0x16, RW, 0x00, 0xF7),  # CTRL7_G
    (0x17, 0x17, RW, 0x00, 0xFF),  # CTRL8_XL
    (0x18, 0x18, RW, 0xE0, 0xFE),  # CTRL9_XL: DEN_X/Y/Z, DEN_XL_G, DEN_XL_EN, DEN_LH, I3C_disable
    (0x19, 0x19, RW, 0x00, 0x20),  # CTRL10_C: TIMESTAMP_EN
    (0x1A, 0x1E, RO, 0x00, 0x00),  # ALL_INT_SRC, WAKE_UP_SRC, TAP_SRC, D6D_SRC, STATUS_REG
    (0x20, 0x2D, RO, 0x00, 0x00),  # OUT_TEMP, OUTX/Y/Z_G, OUTX/Y/Z_A
    (0x35, 0x3B, RO, 0x00, 0x00),  # embedded-function status mirrors, FIFO_STATUS1/2
    (0x40, 0x43, RO, 0x00, 0x00),  # TIMESTAMP0..3
    (0x49, 0x55, RO, 0x00, 0x00),  # OIS status and outputs
    (0x56, 0x62, RW, 0x00, 0xFF),  # TAP_CFG0 .. I3C_BUS_AVB
    (0x63, 0x63, RO, 0x00, 0x00),  # INTERNAL_FREQ_FINE
    (0x6F, 0x75, RW, 0x00, 0xFF),  # UI_INT_OIS .. Z_OFS_USR
    (0x78, 0x7E, RO, 0x00, 0x00),  # FIFO_DATA_OUT_TAG, FIFO_DATA_OUT_X_L .. Z_H
)

# ODR_XL / ODR_G / BDR code -> base periods between samples (0: off). Code 11 is 1.6 Hz (accel, low-power) and
# 6.5 Hz as a gyro batch rate.
_DIV = (0, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1, 4096, 0, 0, 0, 0)
_DIV_G = (0, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1, 0, 0, 0, 0, 0)
_DIV_BDR_G = (0, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1, 1024, 0, 0, 0, 0)

_ACCEL_UG = (61, 488, 122, 244)  # FS_XL 00 +-2 g, 01 +-16 g, 10 +-4 g, 11 +-8 g (XL_FS_MODE = 0)
_GYRO_UDPS = (8750, 17500, 35000, 70000)  # FS_G 00 250, 01 500, 10 1000, 11 2000 dps


def _sat16(v):
    return 32767 if v > 32767 else (-32768 if v < -32768 else v)


class LSM6DSOXEmu(RegisterDevice):
    NAME = "LSM6DSOX"
    SIZE = 128

    def __init__(self, addr=0x6A, source=None, who_am_i=WHO_AM_I_VALUE, clock_ppm=0):
        self.source = source
        self.who_am_i = who_am_i  # another value emulates a different chip on the address
        self.clock_ppm = clock_ppm
        self.stuck_reset = False
        # Order of the gyro and accel words of one time slot in the FIFO; the datasheet does not fix it, so a
        # driver must not depend on it (TAG_CNT tells the slot).
        self.accel_first = False
        self.temperature_raw = 0  # OUT_TEMP: 256 LSB/degC, 0 = 25 degC
        self.sample = [0, 0, 0, 0, 0, 0]
        self.samples = 0  # sample instants produced since power-on
        # FIFO accounting across power cycles, for the probe's load report: words pushed, lost to overrun,
        # read out, and overrun episodes (the FIFO full, then read below full again)
        self.words_in = 0
        self.words_lost = 0
        self.words_read = 0
        self.overruns = 0
        self.fifo = bytearray(FIFO_WORDS * _WORD)
        self._pend = bytearray(14)  # OUT_TEMP_L..OUTZ_H_A updates held back by BDU
        self._int_pins = [None, None]
        self._int_levels = [-1, -1]
        self._event_us = -1  # board time of the sample being produced, for INT edges; -1 outside advance_us
        super().__init__(addr, _SPEC)
        self.power_on(0)

    # -- configuration by tests and scenarios
    def connect_int1(self, pin_id):
        self._int_pins[0] = pin_id
        self._int_levels[0] = -1
        self._update_ints()

    def connect_int2(self, pin_id):
        self._int_pins[1] = pin_id
        self._int_levels[1] = -1
        self._update_ints()

    def set_temperature(self, degc):
        self.temperature_raw = _sat16(round((degc - 25) * 256))

    def accel_ug_per_lsb(self):
        return _ACCEL_UG[(self.regs[_CTRL1_XL] >> 2) & 3]

    def gyro_udps_per_lsb(self):
        c = self.regs[_CTRL2_G]
        return 4375 if c & 0x02 else _GYRO_UDPS[(c >> 2) & 3]

    def fifo_level(self):
        return self._count

    # -- power and reset
    def power_on(self, t_us=0):
        super().power_on(t_us)
        self.regs[_WHO_AM_I] = self.who_am_i
        ff = (abs(self.clock_ppm) + 750) // 1500  # 0.15 % per LSB
        ff = min(127, ff) if self.clock_ppm >= 0 else max(-128, -ff)
        self._ff = ff & 0xFF
        self.regs[_INTERNAL_FREQ_FINE] = self._ff
        self._period_ps = _BASE_PERIOD_PS * 1_000_000 // (1_000_000 + self.clock_ppm)
        self._t_ps = 0  # time since power-on
        self._k = 0  # next base tick to process
        self._hold = 0
        self._pend_mask = 0
        self._ts_latch = 0
        self.samples = 0
        self._clear_fifo()
        self._reconfigure()

    def _soft_reset(self):
        keep_t = self._t_ps
        regs = self.regs
        regs[:] = self.reset_values
        regs[_WHO_AM_I] = self.who_am_i
        regs[_INTERNAL_FREQ_FINE] = self._ff
        self._hold = 0
        self._pend_mask = 0
        self._clear_fifo()
        self._t_ps = keep_t
        self._reconfigure()

    def _clear_fifo(self):
        self._head = 0
        self._count = 0
        self._ovr = False
        self._ovr_latched = False
        self._tag_cnt = 0

    def _reconfigure(self):
        r = self.regs
        self._div_xl = _DIV[r[_CTRL1_XL] >> 4]
        self._div_g = _DIV_G[r[_CTRL2_G] >> 4]
        mode = r[_FIFO_CTRL4] & 7
        self._fifo_mode = mode
        bdr_xl = _DIV[r[_FIFO_CTRL3] & 15]
        bdr_g = _DIV_BDR_G[r[_FIFO_CTRL3] >> 4]
        # A sensor is batched at its BDR, but never faster than it samples.
        self._bdr_xl = max(bdr_xl, self._div_xl) if bdr_xl and self._div_xl and mode else 0
        self._bdr_g = max(bdr_g, self._div_g) if bdr_g and self._div_g and mode else 0
        self._per_slot = (1 if self._bdr_xl else 0) + (1 if self._bdr_g else 0)
        wtm = r[_FIFO_CTRL1] | ((r[_FIFO_CTRL2] & 1) << 8)
        self._wtm = wtm
        self._depth = wtm if (r[_FIFO_CTRL2] & 0x80) and wtm else FIFO_WORDS
        step = 0
        for d in (self._div_xl, self._div_g):
            if d and (step == 0 or d < step):
                step = d
        if step and step > _TEMP_DIVIDER:
            step = _TEMP_DIVIDER
        self._step = step
        # next tick on the new grid, strictly after now
        k = self._t_ps // self._period_ps + 1
        if step:
            k = (k + step - 1) // step * step
        self._k = k
        self._update_ints()

    # -- time
    def advance_us(self, dt):
        self._t_ps += dt * 1_000_000
        step = self._step
        period = self._period_ps
        if not step:
            self._k = self._t_ps // period + 1
            return
        k = self._k
        while k * period <= self._t_ps:
            self._tick(k)
            k += step
        self._k = k

    def _tick(self, k):
        r = self.regs
        g = self._div_g and k % self._div_g == 0
        xl = self._div_xl and k % self._div_xl == 0
        if g or xl:
            s = self.sample
            if self.source is not None:
                self.source(self.t_us + k * self._period_ps // 1_000_000, s)
            self.samples += 1
            i = 0
            while i < 6:
                s[i] = _sat16(s[i])
                i += 1
            status = r[_STATUS_REG]
            if g:
                self._out(_OUTX_L_G, s[0])
                self._out(_OUTX_L_G + 2, s[1])
                self._out(_OUTX_L_G + 4, s[2])
                status |= _GDA
            if xl:
                self._out(_OUTX_L_A, s[3])
                self._out(_OUTX_L_A + 2, s[4])
                self._out(_OUTX_L_A + 4, s[5])
                status |= _XLDA
            r[_STATUS_REG] = status
            if self._fifo_mode:
                bg = self._bdr_g and k % self._bdr_g == 0
                bxl = self._bdr_xl and k % self._bdr_xl == 0
                if bxl and self.accel_first:
                    self._push(TAG_ACCEL, s[3], s[4], s[5])
                if bg:
                    self._push(TAG_GYRO, s[0], s[1], s[2])
                if bxl and not self.accel_first:
                    self._push(TAG_ACCEL, s[3], s[4], s[5])
                if bg or bxl:
                    self._tag_cnt = (self._tag_cnt + 1) & 3
        if k % _TEMP_DIVIDER == 0:
            self._out(_OUT_TEMP_L, self.temperature_raw)
            r[_STATUS_REG] |= _TDA
        self._event_us = self.t_us + k * self._period_ps // 1_000_000
        self._update_ints()
        self._event_us = -1

    def _out(self, reg, v):
        block = 4 if reg < _OUTX_L_G else (1 if reg < _OUTX_L_A else 2)
        lo = v & 0xFF
        hi = (v >> 8) & 0xFF
        if self._hold & block:
            p = self._pend
            p[reg - _OUT_TEMP_L] = lo
            p[reg - _OUT_TEMP_L + 1] = hi
            self._pend_mask |= block
        else:
            self.regs[reg] = lo
            self.regs[reg + 1] = hi

    def _release(self, block):
        self._hold &= ~block
        if self._pend_mask & block:
            self._pend_mask &= ~block
            if block == 4:
                reg = _OUT_TEMP_L
                last = _OUTX_L_G
            elif block == 1:
                reg = _OUTX_L_G
                last = _OUTX_L_A
            else:
                reg = _OUTX_L_A
                last = _OUTX_L_A + 6
            while reg < last:
                self.regs[reg] = self._pend[reg - _OUT_TEMP_L]
                reg += 1

    # -- FIFO
    def _push(self, tag, x, y, z):
        self.words_in += 1
        if self._count >= self._depth:
            self.words_lost += 1
            if not self._ovr:
                self.overruns += 1
            self._ovr = True
            self._ovr_latched = True
            mode = self._fifo_mode
            if mode == 1 or mode == 7:  # FIFO mode / bypass-to-FIFO: stop when full, the new word is lost
                return
            self._head = (self._head + 1) % FIFO_WORDS  # continuous: the oldest word is overwritten
            self._count -= 1
        i = (self._head + self._count) % FIFO_WORDS * _WORD
        f = self.fifo
        f[i] = (tag << 3) | (self._tag_cnt << 1)
        f[i + 1] = x & 0xFF
        f[i + 2] = (x >> 8) & 0xFF
        f[i + 3] = y & 0xFF
        f[i + 4] = (y >> 8) & 0xFF
        f[i + 5] = z & 0xFF
        f[i + 6] = (z >> 8) & 0xFF
        self._count += 1

    def _fifo_status2(self):
        c = self._count
        v = (c >> 8) & 3
        if self._wtm and c >= self._wtm:
            v |= 0x80
        if self._ovr:
            v |= 0x40
        if self._per_slot and c + self._per_slot >= self._depth:
            v |= 0x20
        if self._ovr_latched:
            v |= 0x08
        return v

    # -- register side effects
    def next_ptr(self, reg):
        if not self.regs[_CTRL3_C] & 0x04:  # IF_INC off: the address stays
            return reg
        if reg == _FIFO_LAST:
            return _FIFO_TAG
        return (reg + 1) & 0x7F

    def read_reg(self, reg):
        if reg >= _FIFO_TAG:
            if reg > _FIFO_LAST:
                return 0
            if not self._count:
                return 0
            v = self.fifo[self._head * _WORD + reg - _FIFO_TAG]
            if reg == _FIFO_LAST:
                self._head = (self._head + 1) % FIFO_WORDS
                self._count -= 1
                self.words_read += 1
                if self._count < self._depth:
                    self._ovr = False
            return v
        if reg == _FIFO_STATUS1:
            return self._count & 0xFF
        if reg == _FIFO_STATUS2:
            v = self._fifo_status2()
            self._ovr_latched = False
            return v
        if _OUT_TEMP_L <= reg <= 0x2D:
            block = 4 if reg < _OUTX_L_G else (1 if reg < _OUTX_L_A else 2)
            v = self.regs[reg]
            bdu = self.regs[_CTRL3_C] & 0x40
            if reg & 1:  # high byte: the pair has been read; data-ready clears
                self.regs[_STATUS_REG] &= ~(_TDA if block == 4 else (_GDA if block == 1 else _XLDA)) & 0xFF
                if bdu or self._hold & block:
                    self._release(block)
            elif bdu:
                self._hold |= block
            return v
        if _TIMESTAMP0 <= reg <= _TIMESTAMP3:
            if reg == _TIMESTAMP0:
                self._ts_latch = self._timestamp()
            return (self._ts_latch >> (8 * (reg - _TIMESTAMP0))) & 0xFF
        return self.regs[reg] if self.kind[reg] else 0

    def _timestamp(self):
        if not self.regs[_CTRL10_C] & 0x20:
            return 0
        return (self._t_ps * 6 // self._period_ps) & 0xFFFFFFFF

    def after_read(self):
        self._update_ints()

    def on_write(self, reg, val):
        if reg == _CTRL3_C:
            if self.stuck_reset:
                return
            if val & 0x01:
                self._soft_reset()
                return
            if val & 0x80:
                self.regs[_CTRL3_C] = val & 0x7F
            self._update_ints()
        elif reg == _FIFO_CTRL4:
            if not val & 7:
                self._clear_fifo()
            self._reconfigure()
        elif reg in (_CTRL1_XL, _CTRL2_G, _FIFO_CTRL1, _FIFO_CTRL2, _FIFO_CTRL3):
            self._reconfigure()
        elif reg in (_INT1_CTRL, _INT2_CTRL):
            self._update_ints()
        elif reg == _CTRL4_C and val & 0x04:
            self.violation("I2C_disable set (the chip would stop answering on I2C)", reg, val)
        elif reg == 0x01 and val & 0xC0:
            self.violation("embedded-function / sensor-hub register page is not emulated", reg, val)

    # -- interrupt lines
    def _update_ints(self):
        pins = self._int_pins
        if pins[0] is None and pins[1] is None:
            return
        r = self.regs
        st = r[_STATUS_REG]
        f2 = self._fifo_status2()
        active_low = 1 if r[_CTRL3_C] & 0x20 else 0
        c1 = r[_INT1_CTRL]
        c2 = r[_INT2_CTRL]
        on1 = (
            (c1 & 0x01 and st & _XLDA)
            or (c1 & 0x02 and st & _GDA)
            or (c1 & 0x08 and f2 & 0x80)
            or (c1 & 0x10 and f2 & 0x40)
            or (c1 & 0x20 and f2 & 0x20)
        )
        on2 = (
            (c2 & 0x01 and st & _XLDA)
            or (c2 & 0x02 and st & _GDA)
            or (c2 & 0x04 and st & _TDA)
            or (c2 & 0x08 and f2 & 0x80)
            or (c2 & 0x10 and f2 & 0x40)
            or (c2 & 0x20 and f2 & 0x20)
        )
        self._drive(0, (1 if on1 else 0) ^ active_low)
        self._drive(1, (1 if on2 else 0) ^ active_low)

    def _drive(self, i, level):
        pin = self._int_pins[i]
        if pin is not None and level != self._int_levels[i]:
            self._int_levels[i] = level
            board.drive_pin(pin, level, self._event_us)
