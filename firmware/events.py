# Event detectors that run beside the estimators: local twitch response, needle passes, no-go proximity.
# Integers only; all state preallocated. Units: accelerometer and gyroscope raw LSB at the reference ranges
# (+-4 g: 0.122 mg/LSB; +-500 dps: 17.5 mdps/LSB), lengths in um.
from micropython import const

import packet

# Twitch: a short burst in the accelerometer's high-passed signal while the probe rests on the skin. Its timing is
# in seconds, counted in IMU samples at the ODR in use (set_odr): the same detector at 833 Hz and at 1666 Hz.
_LP_TAU_US = const(76800)  # low-pass time constant, longer than a twitch burst: 2^6 samples at 833 Hz
_HOLDOFF_US = const(400000)  # one burst is one twitch
_TWITCH_G_LSB = const(1230)  # 0.15 g as an L1 norm of the high-passed vector
_REST_GYRO_LSB = const(2286)  # 40 dps as an L1 norm: still resting through hand tremor, not while fanning


class TwitchDetector:
    def __init__(self, odr_mhz=833375):
        # Low-passed accelerometer per axis, in LSB * 16 (|a| * 16 < 2^20).
        self.lx = 0
        self.ly = 0
        self.lz = 0
        self.primed = 0
        self.holdoff = 0
        self.threshold = _TWITCH_G_LSB
        self.shift = 6  # low-pass shift, samples to prime and to hold off: set_odr() sets them
        self.prime_n = 256
        self.holdoff_n = 333
        self.set_odr(odr_mhz)

    def set_odr(self, odr_mhz):
        # The IMU's output rate in mHz. The low-pass is a shift: the power of two of samples nearest (in ratio)
        # to _LP_TAU_US, i.e. 2^6 at 833.375 Hz and 2^7 at 1666.75 Hz, trimmed parts included.
        odr_hz = odr_mhz // 1000
        n = odr_hz * _LP_TAU_US // 1000000  # samples per time constant
        sh = 0
        while (10 << (sh + 1)) <= n * 14:  # 2^(sh+1) <= n * 1.4
            sh += 1
        self.shift = sh
        self.prime_n = 4 << sh  # the low-pass starts from zero: four time constants to settle
        self.holdoff_n = odr_hz * (_HOLDOFF_US // 1000) // 1000

    def update(self, gx, gy, gz, ax, ay, az):
        # Returns 1 on the IMU sample where a twitch is first seen, else 0.
        hx = (ax << 4) - self.lx
        hy = (ay << 4) - self.ly
        hz = (az << 4) - self.lz
        sh = self.shift
        self.lx += hx >> sh
        self.ly += hy >> sh
        self.lz += hz >> sh
        if self.primed < self.prime_n:
            self.primed += 1
            return 0
        if self.holdoff:
            self.holdoff -= 1
            return 0
        hp = ((hx if hx >= 0 else -hx) + (hy if hy >= 0 else -hy) + (hz if hz >= 0 else -hz)) >> 4
        rate = (gx if gx >= 0 else -gx) + (gy if gy >= 0 else -gy) + (gz if gz >= 0 else -gz)
        if hp > self.threshold and rate < _REST_GYRO_LSB:
            self.holdoff = self.holdoff_n
            return 1
        return 0


_PASS_HYST_UM = const(1500)  # reversals smaller than this are hand jitter, not a pass


class PassDetector:
    # A pass ends where the needle turns from advancing to withdrawing (pistoning).
    def __init__(self):
        self.advancing = 1
        self.extreme = 0  # deepest point while advancing, shallowest while withdrawing
        self.valid = 0

    def update(self, depth_um):
        # Returns 1 on the update where a pass ends; call only with a valid depth.
        if not self.valid:
            self.valid = 1
            self.extreme = depth_um
            return 0
        if self.advancing:
            if depth_um > self.extreme:
                self.extreme = depth_um
            elif depth_um < self.extreme - _PASS_HYST_UM:
                self.advancing = 0
                self.extreme = depth_um
                return 1
        else:
            if depth_um < self.extreme:
                self.extreme = depth_um
            elif depth_um > self.extreme + _PASS_HYST_UM:
                self.advancing = 1
                self.extreme = depth_um
        return 0

    def invalidate(self):
        # After a gap in depth the next valid reading starts afresh: no pass is made up across it.
        self.valid = 0
        self.advancing = 1


def nogo_flags(tip_um, nogo_um, margin_um):
    # nogo_um < 0: no no-go depth configured.
    if nogo_um < 0:
        return 0
    if tip_um >= nogo_um:
        return packet.F_NOGO_REACHED
    if tip_um >= nogo_um - margin_um:
        return packet.F_NOGO_NEAR
    return 0
