"""LSM6DSOX output model: noise, bias, quantisation to raw int16 counts at the reference full scales.

Figures from the LSM6DSOX datasheet (typical, high-performance mode): accelerometer noise density 70 ug/sqrt(Hz),
gyroscope rate noise density 3.8 mdps/sqrt(Hz), both independent of ODR; RMS noise is quoted for a bandwidth of
ODR / 2, which is the default noise bandwidth here. Sensitivities: accel 0.061 / 0.122 / 0.244 / 0.488 mg/LSB at
+-2 / 4 / 8 / 16 g; gyro 4.375 / 8.75 / 17.5 / 35 / 70 mdps/LSB at +-125 / 250 / 500 / 1000 / 2000 dps.
Reference configuration: +-4 g, +-500 dps, 833 Hz. Noise is white and Gaussian per axis, from a seeded numpy
generator; bias is constant; the output rounds to the nearest count and saturates at the int16 limits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ACCEL_MG_PER_LSB = {2: 0.061, 4: 0.122, 8: 0.244, 16: 0.488}
GYRO_MDPS_PER_LSB = {125: 4.375, 250: 8.75, 500: 17.5, 1000: 35.0, 2000: 70.0}
ACCEL_NOISE_UG_RTHZ = 70.0
GYRO_NOISE_MDPS_RTHZ = 3.8
INT16_MIN = -32768
INT16_MAX = 32767


@dataclass(frozen=True)
class ImuModel:
    accel_fs_g: int = 4
    gyro_fs_dps: int = 500
    odr_hz: float = 833.0
    accel_noise_ug_rthz: float = ACCEL_NOISE_UG_RTHZ
    gyro_noise_mdps_rthz: float = GYRO_NOISE_MDPS_RTHZ
    gyro_bias_dps: tuple[float, float, float] = (0.0, 0.0, 0.0)
    accel_bias_mg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    noise_bandwidth_hz: float | None = None  # None: odr_hz / 2, the datasheet's RMS convention
    seed: int = 0

    def __post_init__(self) -> None:
        if self.accel_fs_g not in ACCEL_MG_PER_LSB:
            raise ValueError(f"accel_fs_g must be one of {sorted(ACCEL_MG_PER_LSB)}")
        if self.gyro_fs_dps not in GYRO_MDPS_PER_LSB:
            raise ValueError(f"gyro_fs_dps must be one of {sorted(GYRO_MDPS_PER_LSB)}")

    @property
    def accel_g_per_lsb(self) -> float:
        return ACCEL_MG_PER_LSB[self.accel_fs_g] * 1e-3

    @property
    def gyro_dps_per_lsb(self) -> float:
        return GYRO_MDPS_PER_LSB[self.gyro_fs_dps] * 1e-3

    @property
    def bandwidth_hz(self) -> float:
        return self.odr_hz / 2.0 if self.noise_bandwidth_hz is None else self.noise_bandwidth_hz

    @property
    def accel_noise_rms_g(self) -> float:
        return self.accel_noise_ug_rthz * 1e-6 * np.sqrt(self.bandwidth_hz)

    @property
    def gyro_noise_rms_dps(self) -> float:
        return self.gyro_noise_mdps_rthz * 1e-3 * np.sqrt(self.bandwidth_hz)

    def raw(self, gyro_rad_s: np.ndarray, accel_g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw counts (int16 arrays, shape (n, 3)) for true body rate (rad/s) and specific force (g)."""
        gyro_dps = np.degrees(np.asarray(gyro_rad_s, dtype=float))
        accel = np.asarray(accel_g, dtype=float)
        if gyro_dps.shape != accel.shape or gyro_dps.ndim != 2 or gyro_dps.shape[1] != 3:
            raise ValueError("gyro and accel: expected matching shapes (n, 3)")
        rng = np.random.default_rng(self.seed)
        n = len(gyro_dps)
        g = gyro_dps + np.asarray(self.gyro_bias_dps) + rng.normal(0.0, self.gyro_noise_rms_dps, (n, 3))
        a = accel + np.asarray(self.accel_bias_mg) * 1e-3 + rng.normal(0.0, self.accel_noise_rms_g, (n, 3))
        return self.quantise(g / self.gyro_dps_per_lsb), self.quantise(a / self.accel_g_per_lsb)

    @staticmethod
    def quantise(counts: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(counts), INT16_MIN, INT16_MAX).astype(np.int16)
