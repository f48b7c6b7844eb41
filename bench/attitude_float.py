# The attitude filter of firmware/attitude.py in floating point: same structure, same decisions, same effective
# gains (derived from the firmware's integer words), but every quantity a float and no range bookkeeping.
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


class AttitudeFloat:
    def __init__(self, dt_s=1.0 / 833.0, kp_settle=5.0, kp_still=1.0, kp_move=0.5, still_dps=3.0,
                 move_dps=8.0, reject_dps=150.0, accel_band=0.10, still_s=0.2, hold_s=0.1,
                 bias_tau_s=1.2, settle_bias_s=0.6, settle_s=0.5, bias_max_dps=17.0):
        kg, gsh = gyro_words(dt_s)
        self.c_gyro = kg / 2.0 ** gsh / 2.0 ** 28  # half-angle (rad) per LSB per sample
        # Fixed: h[Q28] += ((e >> 11) * KP) >> 7 with e = g_est[Q14] x a, i.e. h[rad] = e_float * KP / 2^32.
        self.k_settle = gain_word(kp_settle, dt_s) / 2.0 ** 32
        self.k_still = gain_word(kp_still, dt_s) / 2.0 ** 32
        self.k_move = gain_word(kp_move, dt_s) / 2.0 ** 32
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
        self.settle_bias_n = max(1, int(settle_bias_s / dt_s))
        self.settle_n = max(1, int(settle_s / dt_s))
        self.bias_max = int(min(bias_max_dps, 17.0) / 17.5e-3)  # LSB
        self.q = [1.0, 0.0, 0.0, 0.0]
        self.b = [0.0, 0.0, 0.0]
        self.still_n = 0
        self.bias_n = 0
        self.bshift = 0
        self.hold = 0
        self.samples = 0
        self.initialised = False
        self.settling = True
        self.moving = False

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
        if not self.initialised:
            if self._init(ax, ay, az):
                self.initialised = True
            return
        b = self.b
        wx = gx - b[0]
        wy = gy - b[1]
        wz = gz - b[2]
        m = max(abs(wx), abs(wy), abs(wz))
        n2 = (ax * 0.5) ** 2 + (ay * 0.5) ** 2 + (az * 0.5) ** 2
        lo, hi = self.n2_still
        if m < self.still_w and lo < n2 < hi:
            self.still_n += 1
        else:
            self.still_n = 0
        if self.still_n >= self.still_n_min:
            k = 1.0 / (1 << self.bshift)
            bm = self.bias_max
            b[0] = min(bm, max(-bm, b[0] + wx * k))
            b[1] = min(bm, max(-bm, b[1] + wy * k))
            b[2] = min(bm, max(-bm, b[2] + wz * k))
            self.bias_n += 1
            if self.bias_n >= (1 << self.bshift) and self.bshift < self.bshift_max:
                self.bshift += 1
        lo, hi = self.n2_move
        if m > self.move_w or n2 < lo or n2 > hi:
            self.hold = self.hold_n
        elif self.hold > 0:
            self.hold -= 1
        self.moving = self.hold > 0
        self.samples += 1
        if self.settling and self.bias_n >= self.settle_bias_n and self.samples >= self.settle_n:
            self.settling = False
        c = self.c_gyro
        hx = wx * c
        hy = wy * c
        hz = wz * c
        qw, qx, qy, qz = self.q
        lo, hi = self.n2_acc
        if lo < n2 < hi and m < self.reject_w:
            kp = self.k_settle if self.settling else (self.k_move if self.moving else self.k_still)
            gex = 2.0 * (qx * qz - qw * qy)
            gey = 2.0 * (qy * qz + qw * qx)
            gez = qw * qw - qx * qx - qy * qy + qz * qz
            hx += (gey * az - gez * ay) * kp
            hy += (gez * ax - gex * az) * kp
            hz += (gex * ay - gey * ax) * kp
            hm = 0x300000 / 2.0 ** 28  # the firmware's per-axis half-angle clamp
            hx = min(hm, max(-hm, hx))
            hy = min(hm, max(-hm, hy))
            hz = min(hm, max(-hm, hz))
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
