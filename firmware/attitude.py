# Probe attitude from the LSM6DSOX: a Mahony complementary filter (proportional and integral) in fixed point.
#
# Inputs per sample: raw gyro and accel LSB already rotated into the probe body frame (gyro +-500 dps at
# 17.50 mdps/LSB, accel +-4 g at 0.122 mg/LSB). Formats (docs/fixed-point.md has the range analysis):
#   quaternion      Q28 (1.0 = 2^28), (w, x, y, z), body -> world (world x north, y east, z down)
#   gyro bias       Q14 LSB (raw gyro LSB * 2^14): the integral term's steps are a few Q14 units per sample
#   half-angle h    Q28 rad: the rotation of one sample is q += q (x) (0, h), h = omega * dt / 2
#   gravity g_est   R^T e_z, the world "down" axis seen in the body; Q14 inside update(), Q28 for outputs
#   error e         g_est x a, accel LSB * Q14: sin(angle between estimate and accelerometer) * |a| * 2^14
#   angles          mdeg
# Q28 because a Q14 quaternion cannot integrate slow turns: at 833 Hz, 1 deg/s moves h by 1.05e-5 rad per
# sample, below Q14's 6.1e-5, while one gyro LSB moves it by 1.8e-7 rad = 49 Q28 units.
#
# The gyro bias comes from what the accelerometer observes: the integral of the same error vector that drives
# the proportional correction. That error is perpendicular to gravity, so it learns the two bias components that
# tilt the probe and never the one about the vertical (yaw), which no accelerometer can see and which does not
# move the needle angle, pitch or roll. A slow deliberate tilt is measured by the gyro and seen by the
# accelerometer alike, so it is not learnt as bias. Only the vertical component is averaged from the gyro while
# the probe is quiet, so that it is known when a later tilt brings part of it into view.
import array
import micropython
from micropython import const

import fixmath

_G_LSB = 8196.72  # accel LSB per g at +-4 g (1 / 0.122 mg)
_GYRO_RAD_PER_LSB = 17.5e-3 * 3.141592653589793 / 180.0

# State array (array "i"); the first four entries are the quaternion so fixmath helpers can take the array.
_S_QW = const(0)
_S_QX = const(1)
_S_QY = const(2)
_S_QZ = const(3)
_S_BX = const(4)  # gyro bias, Q14 LSB
_S_BY = const(5)
_S_BZ = const(6)
_S_STILL_N = const(7)  # consecutive quiet samples, capped
_S_BIAS_N = const(8)  # samples the vertical bias average has taken, capped
_S_BSHIFT = const(9)  # that average's low-pass shift: grows with _S_BIAS_N so early samples average evenly
_S_HOLD = const(10)  # samples left in the "moving" state
_S_FLAGS = const(11)
_S_INT_N = const(12)  # samples the integral term has learnt at the settling gains, capped
_S_GUIDE = const(13)  # guide angle (mdeg) whose cos/sin are cached in _S_GCOS/_S_GSIN
_S_GCOS = const(14)
_S_GSIN = const(15)
_S_AX = const(16)  # the previous sample's accelerometer (saturated LSB): the one that matches q at entry
_S_AY = const(17)
_S_AZ = const(18)
_S_LEN = const(19)

_F_INIT = const(1)
_F_SETTLING = const(2)
_F_MOVING = const(4)
_F_STILL = const(8)
_F_ACCEL = const(16)  # the last update's accelerometer sample was used for correction
_F_A_OK = const(32)  # the sample in _S_AX.._S_AZ is within the accelerometer band

# Parameter array (array "i"), computed for one dt at construction and by set_dt().
_P_KG = const(0)  # gyro: h[Q28 rad] = (w[LSB] * KG) >> GSH, KG in [2^13, 2^14)
_P_GSH = const(1)
_P_KP_SETTLE = const(2)  # proportional gains: h += ((e / 2^11) * KP) >> 7, KP <= 8192
_P_KP_STILL = const(3)
_P_KP_MOVE = const(4)
_P_STILL_W = const(5)  # rate thresholds, Q14 LSB
_P_MOVE_W = const(6)
_P_REJECT_W = const(7)
_P_N2_STILL_LO = const(8)  # |a/2|^2 bands, LSB^2
_P_N2_STILL_HI = const(9)
_P_N2_MOVE_LO = const(10)
_P_N2_MOVE_HI = const(11)
_P_N2_ACC_LO = const(12)
_P_N2_ACC_HI = const(13)
_P_STILL_N = const(14)  # quiet samples before the probe counts as still
_P_HOLD_N = const(15)  # samples "moving" persists after the last motion cue
_P_BSHIFT_MAX = const(16)
_P_KI_SETTLE = const(17)  # integral gains: b -= ((e / 2^11) * KI + 2^11) >> 12, KI <= 2^17
_P_SETTLE_N = const(18)  # samples of integral learning at the settling gains before settling ends
_P_BIAS_MAX = const(19)  # bias clamp, Q14 LSB
_P_N2_INIT_MIN = const(20)  # |a/2|^2 below which the first accel sample cannot set the attitude
_P_KI_STILL = const(21)
_P_KI_MOVE = const(22)
_P_LEN = const(23)

_CAP = const(0x3FFFFFF)  # counters saturate here (2^26 - 1)
_W16 = const(0x10000)  # see fixmath: sign-fix of ptr32 loads on 64-bit ports
_ONE_Q28 = const(0x10000000)
_IN_MAX = const(32767)  # raw inputs saturate to +-32767 so every bound below starts from 2^15
_H_MAX = const(0x300000)  # per-axis half-angle clamp, Q28 rad (0.0117 rad): 3 * _H_MAX^2 = 4.1e-4
# The integral learns only while every axis of e is below sin(3.5 deg) * 1 g (accel LSB * Q14 / 2^11, rounded:
# the form update() keeps e in): a larger error is an attitude error (a wrong start, a long spell without the
# accelerometer), not bias, and integrating it would wind the bias up. A bias within the clamp (17 deg/s) leaves
# at most 3.4 deg at the settling gain (5 /s), so settling learns any of them (with a lower settling gain, a bias
# the gate keeps out leaves the probe settling, which the host sees).
_E11_MAX = const(4003)


def gain_word(kp_per_s, dt_s):
    """Integer correction gain KP for a proportional gain kp (1/s): h[Q28] += ((e / 2^11) * KP) >> 7 with e in
    accel LSB * Q14, i.e. h = e * KP / 2^18 [Q28] = kp * dt / 2 * e / (G_LSB * 2^14) rad."""
    return int(kp_per_s * dt_s * 2.0 ** 31 / _G_LSB + 0.5)


def integral_word(ki_per_s2, dt_s):
    """Integer integral gain KI for ki (1/s^2): b[Q14 LSB] -= ((e / 2^11) * KI) >> 12 with e in accel LSB * Q14,
    i.e. the bias changes by ki * (error angle, rad) rad/s per second: KI = ki * dt * 2^23 / (G_LSB * rad/LSB)."""
    return int(ki_per_s2 * dt_s * 2.0 ** 23 / (_G_LSB * _GYRO_RAD_PER_LSB) + 0.5)


def gyro_words(dt_s):
    """(KG, GSH) with KG in [2^13, 2^14): h[Q28 rad] = (w[LSB] * KG) >> GSH = w * rad/LSB * dt / 2 * 2^28."""
    c = _GYRO_RAD_PER_LSB * dt_s * 0.5 * 2.0 ** 28
    sh = 0
    while c * 2.0 ** sh < 8192.0:
        sh += 1
    return int(c * 2.0 ** sh + 0.5), sh


def _params(dt_s, kp_settle, kp_still, kp_move, still_dps, move_dps, reject_dps, accel_band, still_s, hold_s,
            bias_tau_s, settle_s, bias_max_dps, ki_settle, ki_still, ki_move):
    # The parameter array of Attitude (the _P_ words) for one sample period; ValueError if a gain does not fit.
    if not 1.0 / 6700.0 <= dt_s <= 1.0 / 400.0:
        # Below 416 Hz one sample's turn at full scale outgrows the per-sample renormalisation.
        raise ValueError("dt_s outside 1/6667 .. 1/416 s (LSM6DSOX ODR 416 .. 6667 Hz)")
    p = array.array("i", [0] * _P_LEN)
    p[_P_KG], p[_P_GSH] = gyro_words(dt_s)
    for idx, kp in ((_P_KP_SETTLE, kp_settle), (_P_KP_STILL, kp_still), (_P_KP_MOVE, kp_move)):
        w = gain_word(kp, dt_s)
        if not 0 <= w <= 8192:
            raise ValueError("proportional gain outside 0 .. 8192 / 2^31 * G / dt")
        p[idx] = w
    for idx, ki in ((_P_KI_SETTLE, ki_settle), (_P_KI_STILL, ki_still), (_P_KI_MOVE, ki_move)):
        w = integral_word(ki, dt_s)
        if not 0 <= w <= 0x20000:
            raise ValueError("integral gain outside 0 .. 2^17 / 2^23 * G * rad/LSB / dt")
        p[idx] = w
    lsb14 = 16384.0 / 17.5e-3  # Q14 LSB per dps
    p[_P_STILL_W] = int(still_dps * lsb14)
    p[_P_MOVE_W] = int(move_dps * lsb14)
    p[_P_REJECT_W] = int(min(reject_dps, 999.0) * lsb14)  # < 2^30
    g2 = (_G_LSB * 0.5) ** 2
    p[_P_N2_STILL_LO] = int(g2 * 0.97 ** 2)
    p[_P_N2_STILL_HI] = int(g2 * 1.03 ** 2)
    p[_P_N2_MOVE_LO] = int(g2 * 0.95 ** 2)
    p[_P_N2_MOVE_HI] = int(g2 * 1.05 ** 2)
    p[_P_N2_ACC_LO] = int(g2 * (1.0 - accel_band) ** 2)
    p[_P_N2_ACC_HI] = int(g2 * (1.0 + accel_band) ** 2)
    p[_P_STILL_N] = max(1, int(still_s / dt_s))
    p[_P_HOLD_N] = max(1, int(hold_s / dt_s))
    sh = 0
    while (1 << (sh + 1)) * dt_s <= bias_tau_s and sh < 16:
        sh += 1
    p[_P_BSHIFT_MAX] = sh
    p[_P_SETTLE_N] = min(_CAP, max(1, int(settle_s / dt_s)))
    p[_P_BIAS_MAX] = int(min(bias_max_dps, 17.0) / 17.5e-3) << 14  # |bias| <= 2^10 LSB
    p[_P_N2_INIT_MIN] = int(g2 * 0.25)
    return p


class Attitude:
    """Mahony filter: gyro integration of a Q28 quaternion, pulled towards the accelerometer's gravity by a
    proportional gain kp; the gyro bias is the integral of the same error times ki.

    The correction compares the quaternion at entry with the previous accelerometer sample, the one taken at the
    same instant: pairing it with the current sample would lead the estimate by one sample's turn (0.07 deg at
    60 deg/s), which the integral would take for bias.

    Gains: `kp_settle`/`ki_settle` while settling (after boot, until the integral has learnt for `settle_s`),
    `kp_still`/`ki_still` at rest, `kp_move`/`ki_move` while moving (`ki_move=0` freezes the bias then); no
    correction and no learning when |f| is off 1 g by more than `accel_band` (fraction) or any axis turns faster
    than `reject_dps` (linear acceleration would bias both), nor learning while the error exceeds 3.5 deg.
    Moving: an axis faster than `move_dps` or |f| off 1 g by more than 5 %, held `hold_s`. Still: every axis
    within `still_dps` of the bias and |f| within 3 % of 1 g for `still_s`; the gyro rate's component along the
    estimated vertical is then averaged into the bias (time constant up to `bias_tau_s`), nothing else: a slow
    tilt is a rate across the vertical and leaves the bias alone. Yaw, and so the bias along the vertical, is
    unobservable without a magnetometer; neither moves the needle angle, pitch or roll.
    """

    def __init__(self, dt_s=1.0 / 833.0, kp_settle=5.0, kp_still=1.0, kp_move=0.5, still_dps=3.0,
                 move_dps=8.0, reject_dps=150.0, accel_band=0.10, still_s=0.2, hold_s=0.1,
                 bias_tau_s=1.2, settle_s=2.0, bias_max_dps=17.0, ki_settle=9.0, ki_still=0.1, ki_move=0.05):
        if not 0.0 < still_dps <= 8.0:
            raise ValueError("still_dps must be in (0, 8]: the vertical average's range analysis assumes it")
        if not 0.0 < accel_band <= 0.10:
            raise ValueError("accel_band must be in (0, 0.10]: update()'s range analysis assumes |f| <= 1.1 g")
        self._gains = (kp_settle, kp_still, kp_move, still_dps, move_dps, reject_dps, accel_band, still_s, hold_s,
                       bias_tau_s, settle_s, bias_max_dps, ki_settle, ki_still, ki_move)
        self._p = _params(dt_s, *self._gains)
        self._s = array.array("i", [0] * _S_LEN)
        self._sc = array.array("i", [0, 0])  # sincos_q28 output
        self._g = array.array("i", [0, 0, 0])  # gravity_q28 output for the angle outputs
        self.dt_s = dt_s
        self.reset()

    def set_dt(self, dt_s):
        """A new sample period (the IMU's ODR changed), keeping the attitude and the bias: the integer words are
        computed again, and the counters kept in samples (quiet run, moving hold, settling progress) are rescaled
        to keep their time in seconds. A dt the gains do not fit raises ValueError and changes nothing.
        Between samples only: allocates."""
        p = _params(dt_s, *self._gains)
        s = self._s
        ratio = self.dt_s / dt_s
        for i, cap in ((_S_STILL_N, _CAP), (_S_HOLD, p[_P_HOLD_N]), (_S_INT_N, p[_P_SETTLE_N])):
            s[i] = min(cap, int(s[i] * ratio + 0.5))
        if s[_S_BSHIFT] > p[_P_BSHIFT_MAX]:
            s[_S_BSHIFT] = p[_P_BSHIFT_MAX]
        self._p = p
        self.dt_s = dt_s

    def reset(self):
        """Forget attitude and bias: the next sample re-initialises from the accelerometer."""
        s = self._s
        for i in range(_S_LEN):
            s[i] = 0
        s[_S_QW] = _ONE_Q28
        s[_S_GUIDE] = 0  # cos/sin cache holds guide angle 0
        s[_S_GCOS] = _ONE_Q28
        s[_S_FLAGS] = _F_SETTLING

    # ---- flags and state ------------------------------------------------------------------------------
    @property
    def settling(self):
        """True from boot until the integral has learnt the bias for settle_s at the settling gains (the
        accelerometer in use, the probe still or moving)."""
        return bool(self._s[_S_FLAGS] & _F_SETTLING)

    @property
    def moving(self):
        """True while the probe turns or accelerates (see the class docstring), and hold_s after."""
        return bool(self._s[_S_FLAGS] & _F_MOVING)

    @property
    def still(self):
        """True while the probe is quiet and the bias about the vertical is being averaged."""
        return bool(self._s[_S_FLAGS] & _F_STILL)

    @property
    def accel_used(self):
        """True if the last sample's accelerometer corrected the attitude."""
        return bool(self._s[_S_FLAGS] & _F_ACCEL)

    @property
    def initialised(self):
        return bool(self._s[_S_FLAGS] & _F_INIT)

    def bias_q14(self, out):
        """Gyro bias estimate, Q14 LSB (x, y, z) into out[0..2]."""
        s = self._s
        out[0] = s[_S_BX]
        out[1] = s[_S_BY]
        out[2] = s[_S_BZ]
        return out

    def quat_q28(self, out):
        """Attitude quaternion (w, x, y, z), Q28, body -> world, into out[0..3]."""
        s = self._s
        out[0] = s[_S_QW]
        out[1] = s[_S_QX]
        out[2] = s[_S_QY]
        out[3] = s[_S_QZ]
        return out

    def set_quat_q28(self, q):
        """Set the attitude (any non-zero quaternion, |q_i| < 2^29; normalised here) and mark initialised."""
        s = self._s
        for i in range(4):
            s[i] = q[i]
        if not fixmath.quat_normalize_q28(s):
            raise ValueError("zero quaternion")
        s[_S_FLAGS] = s[_S_FLAGS] | _F_INIT

    # ---- outputs (not per-sample work, but allocation-free) ------------------------------------------
    @micropython.viper
    def gravity_q28(self, out):
        """g = R^T e_z, the world down axis in body coordinates, Q28, into out[0..2] (third row of R)."""
        w16 = _W16  # a local, so 2^32 below is computed at run time, never a constant
        s = ptr32(self._s)
        o = ptr32(out)
        w = s[_S_QW]
        if (w >> 31) > 0:
            w = w - (w16 << 16)
        x = s[_S_QX]
        if (x >> 31) > 0:
            x = x - (w16 << 16)
        y = s[_S_QY]
        if (y >> 31) > 0:
            y = y - (w16 << 16)
        z = s[_S_QZ]
        if (z >> 31) > 0:
            z = z - (w16 << 16)
        o[0] = (int(fixmath.mul_q28(x, z)) - int(fixmath.mul_q28(w, y))) << 1
        o[1] = (int(fixmath.mul_q28(y, z)) + int(fixmath.mul_q28(w, x))) << 1
        o[2] = (int(fixmath.mul_q28(w, w)) - int(fixmath.mul_q28(x, x)) - int(fixmath.mul_q28(y, y))
                + int(fixmath.mul_q28(z, z)))
        return out

    # pitch, roll and needle angle all start from the gravity row that gravity_q28 writes into a preallocated
    # array; each loads back only the entries it needs (with the 64-bit port's sign fix, see fixmath).
    @micropython.viper
    def pitch_mdeg(self) -> int:
        """Pitch theta (Z-Y-X Euler, mdeg, [-90000, 90000]): asin(-R31)."""
        w16 = _W16  # a local, so 2^32 below is computed at run time, never a constant
        g = ptr32(self.gravity_q28(self._g))
        r31 = g[0]
        if (r31 >> 31) > 0:
            r31 = r31 - (w16 << 16)
        return int(fixmath.asin_q28_mdeg(0 - r31))

    @micropython.viper
    def roll_mdeg(self) -> int:
        """Roll phi (Z-Y-X Euler, mdeg, (-180000, 180000]): atan2(R32, R33)."""
        w16 = _W16  # a local, so 2^32 below is computed at run time, never a constant
        g = ptr32(self.gravity_q28(self._g))
        r32 = g[1]
        if (r32 >> 31) > 0:
            r32 = r32 - (w16 << 16)
        r33 = g[2]
        if (r33 >> 31) > 0:
            r33 = r33 - (w16 << 16)
        return int(fixmath.atan2_mdeg(r32, r33))

    @micropython.viper
    def needle_angle_mdeg(self, guide_angle_mdeg: int) -> int:
        """Needle elevation below horizontal (mdeg, [-90000, 90000]): asin((R d).z) with the needle direction
        d = (cos g, 0, sin g) in the body for guide angle g; equals g with the probe upright.
        (R d).z = R31 cos g + R33 sin g; cos g and sin g are cached per guide angle."""
        w16 = _W16  # a local, so 2^32 below is computed at run time, never a constant
        s = ptr32(self._s)
        cached = s[_S_GUIDE]
        if (cached >> 31) > 0:
            cached = cached - (w16 << 16)
        if guide_angle_mdeg != cached:
            fixmath.sincos_q28(guide_angle_mdeg, self._sc)
            sc = ptr32(self._sc)
            s[_S_GCOS] = sc[0]
            s[_S_GSIN] = sc[1]
            s[_S_GUIDE] = guide_angle_mdeg
        c = s[_S_GCOS]
        if (c >> 31) > 0:
            c = c - (w16 << 16)
        sn = s[_S_GSIN]
        if (sn >> 31) > 0:
            sn = sn - (w16 << 16)
        g = ptr32(self.gravity_q28(self._g))
        r31 = g[0]
        if (r31 >> 31) > 0:
            r31 = r31 - (w16 << 16)
        r33 = g[2]
        if (r33 >> 31) > 0:
            r33 = r33 - (w16 << 16)
        # |R31 cos + R33 sin| <= 1: a unit row dotted with a unit vector.
        e = int(fixmath.mul_q28(r31, c)) + int(fixmath.mul_q28(r33, sn))
        return int(fixmath.asin_q28_mdeg(e))

    # ---- per-sample work -------------------------------------------------------------------------------
    @micropython.viper
    def _init_from_accel(self, ax: int, ay: int, az: int) -> int:
        """Attitude (yaw 0) whose gravity matches the accelerometer: the shortest rotation taking the measured
        down direction u = -a/|a| to e_z, or, with u pointing up, that rotation after a half turn about x
        (the shortest arc is ill-conditioned near u = -e_z). Returns 0 if |a| is implausibly small."""
        s = ptr32(self._s)
        p = ptr32(self._p)
        hx = ax >> 1
        hy = ay >> 1
        hz = az >> 1
        n2 = hx * hx + hy * hy + hz * hz  # <= 3 * 2^28
        if n2 < p[_P_N2_INIT_MIN]:
            return 0
        n = int(fixmath.isqrt(n2))  # |a| / 2, in [2^11, 2^15)
        # u in Q15: a_i * 2^14 / (|a| / 2); |a_i| << 14 <= 2^29. Only the common scale carries n's error.
        ux = (0 - (ax << 14)) // n
        uy = (0 - (ay << 14)) // n
        uz = (0 - (az << 14)) // n
        if uz >= 0:
            s[_S_QW] = 0x8000 + uz
            s[_S_QX] = uy
            s[_S_QY] = 0 - ux
            s[_S_QZ] = 0
        else:
            s[_S_QW] = uy
            s[_S_QX] = 0x8000 - uz
            s[_S_QY] = 0
            s[_S_QZ] = ux
        fixmath.quat_normalize_q28(self._s)
        return 1

    @micropython.viper
    def update(self, gx: int, gy: int, gz: int, ax: int, ay: int, az: int):
        """One IMU sample: raw gyro and accel LSB in the body frame, dt as constructed or set_dt(). No allocation."""
        w16 = _W16  # a local, so 2^32 below is computed at run time, never a constant
        s = ptr32(self._s)
        p = ptr32(self._p)
        if gx > _IN_MAX:
            gx = _IN_MAX
        elif gx < 0 - _IN_MAX:
            gx = 0 - _IN_MAX
        if gy > _IN_MAX:
            gy = _IN_MAX
        elif gy < 0 - _IN_MAX:
            gy = 0 - _IN_MAX
        if gz > _IN_MAX:
            gz = _IN_MAX
        elif gz < 0 - _IN_MAX:
            gz = 0 - _IN_MAX
        if ax > _IN_MAX:
            ax = _IN_MAX
        elif ax < 0 - _IN_MAX:
            ax = 0 - _IN_MAX
        if ay > _IN_MAX:
            ay = _IN_MAX
        elif ay < 0 - _IN_MAX:
            ay = 0 - _IN_MAX
        if az > _IN_MAX:
            az = _IN_MAX
        elif az < 0 - _IN_MAX:
            az = 0 - _IN_MAX
        flags = s[_S_FLAGS]
        hx = ax >> 1
        hy = ay >> 1
        hz = az >> 1
        n2 = hx * hx + hy * hy + hz * hz  # |a/2|^2 <= 3 * 2^28
        # The accelerometer sample kept for the next update, which pairs it with the quaternion of this instant.
        a_ok = 0
        if p[_P_N2_ACC_LO] < n2 and n2 < p[_P_N2_ACC_HI]:
            a_ok = _F_A_OK
        pax = s[_S_AX]
        if (pax >> 31) > 0:
            pax = pax - (w16 << 16)
        pay = s[_S_AY]
        if (pay >> 31) > 0:
            pay = pay - (w16 << 16)
        paz = s[_S_AZ]
        if (paz >> 31) > 0:
            paz = paz - (w16 << 16)
        s[_S_AX] = ax
        s[_S_AY] = ay
        s[_S_AZ] = az
        if not (flags & _F_INIT):
            if int(self._init_from_accel(ax, ay, az)):
                flags = flags | _F_INIT | _F_SETTLING
            s[_S_FLAGS] = (flags & (0 - 1 - _F_A_OK)) | a_ok
            return

        # Bias-corrected rate, Q14 LSB: |g << 14| <= 2^29 - 2^14, |bias| <= 2^24.
        bx = s[_S_BX]
        if (bx >> 31) > 0:
            bx = bx - (w16 << 16)
        by = s[_S_BY]
        if (by >> 31) > 0:
            by = by - (w16 << 16)
        bz = s[_S_BZ]
        if (bz >> 31) > 0:
            bz = bz - (w16 << 16)
        wx = (gx << 14) - bx
        wy = (gy << 14) - by
        wz = (gz << 14) - bz
        m = wx
        if m < 0:
            m = 0 - m
        if wy > m:
            m = wy
        elif 0 - wy > m:
            m = 0 - wy
        if wz > m:
            m = wz
        elif 0 - wz > m:
            m = 0 - wz

        still_n = s[_S_STILL_N]
        if m < p[_P_STILL_W] and p[_P_N2_STILL_LO] < n2 and n2 < p[_P_N2_STILL_HI]:
            if still_n < _CAP:
                still_n += 1
        else:
            still_n = 0
        s[_S_STILL_N] = still_n
        hold = s[_S_HOLD]
        if m > p[_P_MOVE_W] or n2 < p[_P_N2_MOVE_LO] or n2 > p[_P_N2_MOVE_HI]:
            hold = p[_P_HOLD_N]
        elif hold > 0:
            hold -= 1
        s[_S_HOLD] = hold
        use_acc = 0
        if (flags & _F_A_OK) and m < p[_P_REJECT_W]:
            use_acc = 1
        flags = flags & (0 - 1 - _F_STILL - _F_MOVING - _F_ACCEL - _F_A_OK)
        flags = flags | a_ok
        if hold > 0:
            flags = flags | _F_MOVING
        still = 0
        if still_n >= p[_P_STILL_N]:
            still = 1
            flags = flags | _F_STILL

        qw = s[_S_QW]
        if (qw >> 31) > 0:
            qw = qw - (w16 << 16)
        qx = s[_S_QX]
        if (qx >> 31) > 0:
            qx = qx - (w16 << 16)
        qy = s[_S_QY]
        if (qy >> 31) > 0:
            qy = qy - (w16 << 16)
        qz = s[_S_QZ]
        if (qz >> 31) > 0:
            qz = qz - (w16 << 16)

        # Gyro half-angle, Q28 rad, from the rate before this sample's bias update: w = wi * 2^14 + wf split so
        # each product stays below 2^29.1.
        kg = p[_P_KG]
        gsh = p[_P_GSH]
        hx = ((wx >> 14) * kg + (((wx & 0x3FFF) * kg) >> 14)) >> gsh
        hy = ((wy >> 14) * kg + (((wy & 0x3FFF) * kg) >> 14)) >> gsh
        hz = ((wz >> 14) * kg + (((wz & 0x3FFF) * kg) >> 14)) >> gsh

        if use_acc or still:
            # Gravity estimate g_est = R^T e_z in Q14 from rounded Q14 halves of q: a unit vector, |g_est| = 2^14
            # to a few units, each axis <= 2^14 + 4.
            rw = (qw + 0x2000) >> 14
            rx = (qx + 0x2000) >> 14
            ry = (qy + 0x2000) >> 14
            rz = (qz + 0x2000) >> 14
            gex = (rx * rz - rw * ry) >> 13
            gey = (ry * rz + rw * rx) >> 13
            gez = (rw * rw - rx * rx - ry * ry + rz * rz) >> 14
            bmax = p[_P_BIAS_MAX]
            if still:
                # The rate's component along the vertical (Q5 LSB; |w_i| < still threshold <= 8 deg/s = 2^22.84,
                # so |w >> 9| |g_est| <= sqrt(3) 2^13.84 2^14 = 2^28.6 by Cauchy-Schwarz) is all the gyro may say
                # about bias: the accelerometer cannot see it, and a tilt has none of it. Rounded, not floored: a
                # floor would push every axis of the bias down, across the vertical too, where only the slow
                # integral could push back.
                sh = s[_S_BSHIFT]
                d = (((wx + 0x100) >> 9) * gex + ((wy + 0x100) >> 9) * gey + ((wz + 0x100) >> 9) * gez
                     + 0x2000) >> 14
                r = 0x10 << sh  # half of the shift below: round to nearest
                bx = bx + ((d * gex + r) >> (sh + 5))  # d * g_est: Q19 LSB, <= 2^28.6
                by = by + ((d * gey + r) >> (sh + 5))
                bz = bz + ((d * gez + r) >> (sh + 5))
                bias_n = s[_S_BIAS_N]
                if bias_n < _CAP:
                    bias_n += 1
                    s[_S_BIAS_N] = bias_n
                if bias_n >= (1 << sh) and sh < p[_P_BSHIFT_MAX]:
                    s[_S_BSHIFT] = sh + 1
            if use_acc:
                flags = flags | _F_ACCEL
                if flags & _F_SETTLING:
                    kp = p[_P_KP_SETTLE]
                    ki = p[_P_KI_SETTLE]
                elif flags & _F_MOVING:
                    kp = p[_P_KP_MOVE]
                    ki = p[_P_KI_MOVE]
                else:
                    kp = p[_P_KP_STILL]
                    ki = p[_P_KI_STILL]
                # e = (-a) x g_est = g_est x a (accel LSB * Q14), a the previous sample (within 1.1 g, so
                # |e_i| <= |g_est| |a| <= 2^14 * 9017 = 2^27.14), kept as e / 2^11 rounded (< 2^16.14).
                ex = (gey * paz - gez * pay + 0x400) >> 11
                ey = (gez * pax - gex * paz + 0x400) >> 11
                ez = (gex * pay - gey * pax + 0x400) >> 11
                hx = hx + ((ex * kp) >> 7)
                hy = hy + ((ey * kp) >> 7)
                hz = hz + ((ez * kp) >> 7)
                # |h|^2 must stay within one renormalisation step's reach (4.9e-4) whatever the gains; the gyro
                # alone is at most 0.0108 rad per axis (517 deg/s at 416 Hz), so only the correction is clipped.
                if hx > _H_MAX:
                    hx = _H_MAX
                elif hx < 0 - _H_MAX:
                    hx = 0 - _H_MAX
                if hy > _H_MAX:
                    hy = _H_MAX
                elif hy < 0 - _H_MAX:
                    hy = 0 - _H_MAX
                if hz > _H_MAX:
                    hz = _H_MAX
                elif hz < 0 - _H_MAX:
                    hz = 0 - _H_MAX
                if (ex < _E11_MAX and ex > 0 - _E11_MAX and ey < _E11_MAX and ey > 0 - _E11_MAX
                        and ez < _E11_MAX and ez > 0 - _E11_MAX):
                    if ki:
                        # Integral term, rounded so that it has no drift of its own: |e / 2^11| < 2^11.97 here
                        # and KI <= 2^17, so the product is below 2^29.
                        bx = bx - ((ex * ki + 0x800) >> 12)
                        by = by - ((ey * ki + 0x800) >> 12)
                        bz = bz - ((ez * ki + 0x800) >> 12)
                    if flags & _F_SETTLING:
                        n = s[_S_INT_N] + 1
                        s[_S_INT_N] = n
                        if n >= p[_P_SETTLE_N]:
                            flags = flags & (0 - 1 - _F_SETTLING)
            if bx > bmax:
                bx = bmax
            elif bx < 0 - bmax:
                bx = 0 - bmax
            if by > bmax:
                by = bmax
            elif by < 0 - bmax:
                by = 0 - bmax
            if bz > bmax:
                bz = bmax
            elif bz < 0 - bmax:
                bz = 0 - bmax
            s[_S_BX] = bx
            s[_S_BY] = by
            s[_S_BZ] = bz
        s[_S_FLAGS] = flags

        # q += q (x) (0, h), every Q28 x Q28 product split into 14-bit halves: q = qh * 2^14 + ql,
        # h = hh * 2^14 + hl; q h / 2^28 = qh hh + (qh hl + ql hh) >> 14 (ql hl / 2^28 < 1 dropped).
        qwh = qw >> 14
        qwl = qw & 0x3FFF
        qxh = qx >> 14
        qxl = qx & 0x3FFF
        qyh = qy >> 14
        qyl = qy & 0x3FFF
        qzh = qz >> 14
        qzl = qz & 0x3FFF
        hxh = hx >> 14
        hxl = hx & 0x3FFF
        hyh = hy >> 14
        hyl = hy & 0x3FFF
        hzh = hz >> 14
        hzl = hz & 0x3FFF
        dw = (0 - qxh * hxh - qyh * hyh - qzh * hzh
              + ((0 - qxh * hxl - qxl * hxh - qyh * hyl - qyl * hyh - qzh * hzl - qzl * hzh) >> 14))
        dx = (qwh * hxh + qyh * hzh - qzh * hyh
              + ((qwh * hxl + qwl * hxh + qyh * hzl + qyl * hzh - qzh * hyl - qzl * hyh) >> 14))
        dy = (qwh * hyh - qxh * hzh + qzh * hxh
              + ((qwh * hyl + qwl * hyh - qxh * hzl - qxl * hzh + qzh * hxl + qzl * hxh) >> 14))
        dz = (qwh * hzh + qxh * hyh - qyh * hxh
              + ((qwh * hzl + qwl * hzh + qxh * hyl + qxl * hyh - qyh * hxl - qyl * hxh) >> 14))
        qw = qw + dw
        qx = qx + dx
        qy = qy + dy
        qz = qz + dz

        # Newton step back to |q| = 1 (as fixmath.quat_renorm_step_q28): the step above grew |q|^2 by |h|^2,
        # at most 4.6e-4 (full scale on every axis at 416 Hz) or 4.1e-4 (the clamp): within the step's 4.9e-4.
        vh = qw >> 14
        n2 = vh * vh + ((vh * (qw & 0x3FFF)) >> 13)
        vh = qx >> 14
        n2 = n2 + vh * vh + ((vh * (qx & 0x3FFF)) >> 13)
        vh = qy >> 14
        n2 = n2 + vh * vh + ((vh * (qy & 0x3FFF)) >> 13)
        vh = qz >> 14
        n2 = n2 + vh * vh + ((vh * (qz & 0x3FFF)) >> 13)
        e = (_ONE_Q28 - n2) >> 2  # half the norm error, in units of 2^-27
        if e > 0x8000:
            e = 0x8000
        elif e < -0x8000:
            e = -0x8000
        s[_S_QW] = qw + (((qw >> 14) * e) >> 13)
        s[_S_QX] = qx + (((qx >> 14) * e) >> 13)
        s[_S_QY] = qy + (((qy >> 14) * e) >> 13)
        s[_S_QZ] = qz + (((qz >> 14) * e) >> 13)
