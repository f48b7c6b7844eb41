# The attitude filter of firmware/attitude.py in floating point: same structure, same decisions, same effective
# gains (derived from the firmware's integer words, proportional and integral), but every quantity a float and no
# range bookkeeping.
# It runs unchanged on CPython (float64: the reference the fixed-point filter is measured against) and on
# MicroPython (the float path whose speed and allocation the fixed-point path is compared with).
import math

try:
    import micropython  # the compiler itself honours @micropython.native on MicroPython
except ImportError:  # CPython

    class micropython:  # stands in for the module
        @staticmethod
        def native(f):
            return f


_G_LSB = 8196.72
_GYRO_RAD_PER_LSB = 17.5e-3 * 3.141592653589793 / 180.0


def gyro_words(dt_s):
    """Same integer words as firmware attitude.gyro_words."""
    c = _GYRO_RAD_PER_LSB * dt_s * 0.5 * 2.0 ** 28
    sh = 0
    while c * 2.0 ** sh < 8192.0:
        sh += 1
    return int(c * 2.0 ** sh + 0.5), sh


def gain_word(kp_per_s, dt_s):
    return int(kp_per_s * dt_s * 2.0 ** 31 / _G_LSB + 0.5)


def integral_word(ki_per_s2, dt_s):
    return int(ki_per_s2 * dt_s * 2.0 ** 23 / (_G_LSB * _GYRO_RAD_PER_LSB) + 0.5)


class AttitudeFloat:
    def __init__(self, dt_s=1.0 / 833.0, kp_settle=5.0, kp_still=1.0, kp_move=0.5, still_dps=3.0,
                 move_dps=8.0, reject_dps=150.0, accel_band=0.10, still_s=0.2, hold_s=0.1,
                 bias_tau_s=1.2, settle_s=2.0, bias_max_dps=17.0, ki_settle=9.0, ki_still=0.1, ki_move=0.05):
        kg, gsh = gyro_words(dt_s)
        self.c_gyro = kg / 2.0 ** gsh / 2.0 ** 28  # half-angle (rad) per LSB per sample
        # Fixed: h[Q28] += ((e >> 11) * KP) >> 7 with e = g_est[Q14] x a, i.e. h[rad] = e_float * KP / 2^32.
        self.k_settle = gain_word(kp_settle, dt_s) / 2.0 ** 32
        self.k_still = gain_word(kp_still, dt_s) / 2.0 ** 32
        self.k_move = gain_word(kp_move, dt_s) / 2.0 ** 32
        # Fixed: b[Q14 LSB] -= ((e >> 11) * KI) >> 12, i.e. b[LSB] -= e_float * KI / 2^23.
        self.i_settle = integral_word(ki_settle, dt_s) / 2.0 ** 23
        self.i_still = integral_word(ki_still, dt_s) / 2.0 ** 23
        self.i_move = integral_word(ki_move, dt_s) / 2.0 ** 23
        self.e_max = 4003 * 2.0 ** 11 / 2.0 ** 14  # the firmware's learning gate, sin(3.5 deg) * 1 g in accel LSB
        lsb14 = 16384.0 / 17.5e-3
        self.still_w = int(still_dps * lsb14) / 16384.0  # LSB
        self.move_w = int(move_dps * lsb14) / 16384.0
        self.reject_w = int(min(reject_dps, 999.0) * lsb14) / 16384.0
        g2 = (_G_LSB * 0.5) ** 2
        self.n2_still = (int(g2 * 0.97 ** 2), int(g2 * 1.03 ** 2))
        self.n2_move = (int(g2 * 0.95 ** 2), int(g2 * 1.05 ** 2))
        self.n2_acc = (int(g2 * (1.0 - accel_band) ** 2), int(g2 * (1.0 + accel_band) ** 2))
        self.n2_init = int(g2 * 0.25)
        self.still_n_min = max(1, int(still_s / dt_s))
        self.hold_n = max(1, int(hold_s / dt_s))
        sh = 0
        while (1 << (sh + 1)) * dt_s <= bias_tau_s and sh < 16:
            sh += 1
        self.bshift_max = sh
        self.settle_n = max(1, int(settle_s / dt_s))
        self.bias_max = int(min(bias_max_dps, 17.0) / 17.5e-3)  # LSB
        self.q = [1.0, 0.0, 0.0, 0.0]
        self.b = [0.0, 0.0, 0.0]
        self.a_prev = [0, 0, 0]
        self.a_prev_ok = False
        self.still_n = 0
        self.bias_n = 0
        self.bshift = 0
        self.hold = 0
        self.int_n = 0
        self.initialised = False
        self.settling = True
        self.moving = False
        self.still = False
        self.accel_used = False

    def _init(self, ax, ay, az):
        n2 = (ax * 0.5) ** 2 + (ay * 0.5) ** 2 + (az * 0.5) ** 2
        if n2 < self.n2_init:
            return False
        n = math.sqrt(n2) * 2.0
        ux = -ax / n
        uy = -ay / n
        uz = -az / n
        q = [1.0 + uz, uy, -ux, 0.0] if uz >= 0 else [uy, 1.0 - uz, 0.0, ux]
        m = math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3])
        self.q = [c / m for c in q]
        return True

    @micropython.native
    def update(self, gx, gy, gz, ax, ay, az):
        n2 = (ax * 0.5) ** 2 + (ay * 0.5) ** 2 + (az * 0.5) ** 2
        lo, hi = self.n2_acc
        a_ok = lo < n2 < hi
        ap = self.a_prev
        pax, pay, paz = ap[0], ap[1], ap[2]
        p_ok = self.a_prev_ok
        # The correction pairs the quaternion at entry with the previous sample, taken at the same instant.
        ap[0], ap[1], ap[2] = ax, ay, az
        self.a_prev_ok = a_ok
        if not self.initialised:
            if self._init(ax, ay, az):
                self.initialised = True
            return
        b = self.b
        wx = gx - b[0]
        wy = gy - b[1]
        wz = gz - b[2]
        m = max(abs(wx), abs(wy), abs(wz))
        lo, hi = self.n2_still
        if m < self.still_w and lo < n2 < hi:
            self.still_n += 1
        else:
            self.still_n = 0
        lo, hi = self.n2_move
        if m > self.move_w or n2 < lo or n2 > hi:
            self.hold = self.hold_n
        elif self.hold > 0:
            self.hold -= 1
        self.moving = self.hold > 0
        self.still = self.still_n >= self.still_n_min
        use_acc = p_ok and m < self.reject_w
        self.accel_used = use_acc
        c = self.c_gyro
        hx = wx * c
        hy = wy * c
        hz = wz * c
        qw, qx, qy, qz = self.q
        if use_acc or self.still:
            gex = 2.0 * (qx * qz - qw * qy)
            gey = 2.0 * (qy * qz + qw * qx)
            gez = qw * qw - qx * qx - qy * qy + qz * qz
            bx, by, bz = b[0], b[1], b[2]
            if self.still:
                # Only the rate along the vertical, which the accelerometer cannot see, is averaged.
                k = (wx * gex + wy * gey + wz * gez) / (1 << self.bshift)
                bx += k * gex
                by += k * gey
                bz += k * gez
                self.bias_n += 1
                if self.bias_n >= (1 << self.bshift) and self.bshift < self.bshift_max:
                    self.bshift += 1
            if use_acc:
                if self.settling:
                    kp, ki = self.k_settle, self.i_settle
                elif self.moving:
                    kp, ki = self.k_move, self.i_move
                else:
                    kp, ki = self.k_still, self.i_still
                ex = gey * paz - gez * pay
                ey = gez * pax - gex * paz
                ez = gex * pay - gey * pax
                hx += ex * kp
                hy += ey * kp
                hz += ez * kp
                hm = 0x300000 / 2.0 ** 28  # the firmware's per-axis half-angle clamp
                hx = min(hm, max(-hm, hx))
                hy = min(hm, max(-hm, hy))
                hz = min(hm, max(-hm, hz))
                em = self.e_max
                if -em < ex < em and -em < ey < em and -em < ez < em:
                    bx -= ex * ki
                    by -= ey * ki
                    bz -= ez * ki
                    if self.settling:
                        self.int_n += 1
                        if self.int_n >= self.settle_n:
                            self.settling = False
            bm = self.bias_max
            b[0] = min(bm, max(-bm, bx))
            b[1] = min(bm, max(-bm, by))
            b[2] = min(bm, max(-bm, bz))
        dw = -qx * hx - qy * hy - qz * hz
        dx = qw * hx + qy * hz - qz * hy
        dy = qw * hy - qx * hz + qz * hx
        dz = qw * hz + qx * hy - qy * hx
        qw += dw
        qx += dx
        qy += dy
        qz += dz
        e = (1.0 - (qw * qw + qx * qx + qy * qy + qz * qz)) * 0.5
        e = min(1.0 / 4096, max(-1.0 / 4096, e))
        s = 1.0 + e
        q = self.q
        q[0] = qw * s
        q[1] = qx * s
        q[2] = qy * s
        q[3] = qz * s

    def needle_angle_deg(self, guide_deg):
        qw, qx, qy, qz = self.q
        r31 = 2.0 * (qx * qz - qw * qy)
        r33 = qw * qw - qx * qx - qy * qy + qz * qz
        g = math.radians(guide_deg)
        s = r31 * math.cos(g) + r33 * math.sin(g)
        return math.degrees(math.asin(min(1.0, max(-1.0, s))))
