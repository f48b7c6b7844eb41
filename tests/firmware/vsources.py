# Sensor sources for firmware tests on the virtual board: what the emulated chips measure, allocation-free.
import depth_model

G = 8197  # LSB per g at +-4 g
BIAS = 29  # 0.5 dps in LSB at +-500 dps


class ImuAtRest:
    # A probe resting straight down with a gyro bias and a few LSB of noise (integer LCG: allocation-free).
    def __init__(self):
        self.seed = 12345
        self.burst_at = -1

    def _noise(self):
        self.seed = (self.seed * 1103515245 + 12345) & 0x3FFFFFFF
        return ((self.seed >> 12) & 31) - 16

    def __call__(self, t_us, out):
        out[0] = BIAS + self._noise()
        out[1] = -BIAS + self._noise()
        out[2] = self._noise()
        out[3] = self._noise()
        out[4] = self._noise()
        out[5] = -G + self._noise()
        if self.burst_at >= 0 and self.burst_at <= t_us < self.burst_at + 60000:
            # a crude twitch: 0.4 g square pulses along the probe axis at 25 Hz
            out[5] += 3280 if ((t_us - self.burst_at) // 20000) % 2 == 0 else -3280


class HallAt:
    # The carriage magnet fixed at p_mm, seen by a sensor at s_mm (dipole model), in nT and mdegC.
    def __init__(self, p_mm, s_mm):
        self.s_mm = s_mm
        self.n = 0
        self.move_to(p_mm)

    def move_to(self, p_mm):
        bx, bz = depth_model.field_mt(p_mm, self.s_mm)
        self.bx = int(bx * 1e6)
        self.bz = int(bz * 1e6)

    def __call__(self, t_us, out):
        self.n = (self.n + 7) % 13
        out[0] = self.bx + (self.n - 6) * 2000  # +-12 uT of deterministic ripple
        out[1] = 0
        out[2] = self.bz - (self.n - 6) * 2000
        out[3] = 25000
