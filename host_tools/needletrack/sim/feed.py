"""Sensor data for the virtual probe: a scenario turned into what each emulated chip measures.

Writes the files that the MicroPython side reads (``sim/mpy/feed.py`` documents the layout):

- ``imu.bin``: LSM6DSOX raw counts at the chip's real output rate (833.375 Hz, or 1666.75 Hz for output rates
  above 416 Hz: ``imu_odr_for``), from the attitude path (with hand tremor), the twitch bursts, gyro bias and
  datasheet noise;
- ``hall_a.bin``, ``hall_b.bin``: the field at each TMAG5273 every 0.5 ms from the magnet model of the
  reference clip, with temperature, stray field and noise.

The same effective attitude path (keyframes plus tremor) gives the truth, so truth and sensor data agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from needletrack.sim import magnet, motion
from needletrack.sim.imu_model import ImuModel
from needletrack.sim.scenario import Scenario

IMU_ODR_HZ = 833.375  # the LSM6DSOX's "833 Hz" setting: 6667 Hz / 8
IMU_ODR_FAST_HZ = 1666.75  # its "1666 Hz" setting: 6667 Hz / 4
HALL_STEP_S = 0.0005
TWITCH_HZ = 25.0  # a local twitch response felt at the probe: a damped oscillation of a few tens of Hz
TWITCH_TAU_S = 0.04
TWITCH_DIR_BODY = np.array([0.3, 0.0, 1.0]) / math.hypot(0.3, 1.0)  # mostly along the probe axis
TREMOR_STEP_S = 0.004
CONV_AVG = 32  # the firmware's TMAG5273 averaging
JIG_MM = (0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 75.0)


@dataclass(frozen=True)
class Feed:
    imu: Path
    hall_a: Path
    hall_b: Path
    attitude_keyframes: np.ndarray  # the effective path: scenario keyframes with tremor folded in
    imu_odr_hz: float = IMU_ODR_HZ  # the rate imu.bin is sampled at


def imu_odr_for(rate_hz: int) -> float:
    """The chip's true ODR the firmware runs the IMU at for an output rate (firmware/loop.py imu_odr_for)."""
    return IMU_ODR_HZ if rate_hz <= 416 else IMU_ODR_FAST_HZ


def attitude_path(sc: Scenario) -> np.ndarray:
    """Scenario keyframes, densified with the hand tremor if it has any (deterministic in the seed)."""
    imp = sc.imperfections
    if imp.tremor_deg <= 0:
        return sc.attitude
    rng = np.random.default_rng(sc.seed + 101)
    t = np.arange(0.0, sc.duration_s + TREMOR_STEP_S, TREMOR_STEP_S)
    base = sc.attitude_at(t)
    tremor = np.zeros_like(base)
    for axis in range(3):
        # Three incommensurate tones around tremor_hz with random phases: physiological tremor is narrow-band.
        for f in (0.8, 1.0, 1.25):
            tremor[:, axis] += np.sin(2 * np.pi * imp.tremor_hz * f * t + rng.uniform(0, 2 * np.pi))
    tremor *= imp.tremor_deg / np.sqrt(1.5)  # three unit tones have an RMS of sqrt(1.5): scale to tremor_deg RMS
    return np.column_stack([t, base + tremor])


def _twitch_accel_world(sc: Scenario, t: np.ndarray, ypr: np.ndarray) -> np.ndarray:
    body = np.zeros((len(t), 3))
    for t0, amp in sc.twitches:
        m = (t >= t0) & (t < t0 + 8 * TWITCH_TAU_S)
        dt = t[m] - t0
        body[m] += (amp * np.exp(-dt / TWITCH_TAU_S) * np.sin(2 * np.pi * TWITCH_HZ * dt))[:, None] * TWITCH_DIR_BODY
    if not len(sc.twitches):
        return body
    r = motion.euler_to_matrix(ypr)
    return np.einsum("nij,nj->ni", r, body)


def imu_counts(sc: Scenario, keys: np.ndarray, odr_hz: float = IMU_ODR_HZ) -> np.ndarray:
    """(n, 6) int16: gyro x y z, accel x y z in LSB, sample k at k / odr_hz."""
    n = math.floor(sc.duration_s * odr_hz) + 1
    t = np.arange(n) / odr_hz
    extra = _twitch_accel_world(sc, t, motion.euler_at(keys, t))
    ms = motion.sample(keys, duration_s=(n - 1) / odr_hz, rate_hz=odr_hz, accel_world_g=extra)
    imp = sc.imperfections
    model = ImuModel(odr_hz=odr_hz, accel_noise_ug_rthz=imp.accel_noise_ug_rthz,
                     gyro_noise_mdps_rthz=imp.gyro_noise_mdps_rthz, gyro_bias_dps=imp.gyro_bias_dps,
                     accel_bias_mg=imp.accel_bias_mg, seed=sc.seed)
    g, a = model.raw(ms.gyro_rad_s, ms.accel_g)
    return np.hstack([g, a]).astype("<i2")


def _field_table(geom: magnet.Geometry) -> tuple[np.ndarray, np.ndarray]:
    # The cylinder model is costly; the field is smooth in p and linear in the remanence, so a 10 um table at
    # the reference temperature, scaled by Br(T)/Br(ref), stands in for it exactly enough (< 1e-6 mT).
    p = np.arange(-15.0, 100.0, 0.01)
    return p, magnet.field_sensor_mt(geom, p)


def hall_records(sc: Scenario, geom: magnet.Geometry = magnet.REFERENCE) -> list[np.ndarray]:
    """Per sensor (n, 4) int32: Bx By Bz in nT, die temperature in mdegC, every HALL_STEP_S."""
    imp = sc.imperfections
    t = np.arange(0.0, sc.duration_s + HALL_STEP_S, HALL_STEP_S)
    p = sc.depth_at(t)
    temp = imp.temperature_c + imp.temperature_drift_c_per_min * t / 60.0
    grid, table = _field_table(geom)
    scale = geom.magnet.br_at(temp) / geom.magnet.br_at(geom.magnet.t_ref_c)
    stray_on = (t >= imp.stray_field_from_s)[:, None] * np.asarray(imp.stray_field_mt)
    rng = np.random.default_rng(sc.seed + 202)
    sigma = math.hypot(magnet.noise_mt(CONV_AVG), imp.hall_noise_ut * 1e-3)
    out = []
    for i in range(len(geom.sensors)):
        b = np.column_stack([np.interp(p, grid, table[:, i, k]) for k in range(3)]) * scale[:, None]
        b += stray_on + rng.normal(0.0, sigma, b.shape)
        rec = np.column_stack([np.rint(b * 1e6), np.rint(temp * 1000.0)])
        out.append(rec.astype("<i4"))
    return out


def jig_angles(geom: magnet.Geometry = magnet.REFERENCE) -> tuple[list[int], list[list[int | None]]]:
    """Jig positions (um) and the field angles (mdeg) each sensor reads there, as CAL_POINT records them."""
    jig = np.array(JIG_MM)
    b = magnet.sample_counts(geom, jig)
    angles: list[list[int | None]] = []
    for row in b:
        per = []
        for s, (bx, _, bz) in zip(geom.sensors, row, strict=True):
            strong = math.hypot(bx, bz) / magnet.lsb_per_mt(s.range_mt) * 1000 >= magnet.MIN_FIELD_UT
            per.append(round(float(magnet.field_angle_deg(bx, bz)) * 1000) if strong else None)
        angles.append(per)
    return [round(v * 1000) for v in jig], angles


def write(sc: Scenario, out_dir: Path, imu_odr_hz: float = IMU_ODR_HZ) -> Feed:
    """The feed files for sc, imu.bin at imu_odr_hz: the chip's true ODR for the device's output rate
    (imu_odr_for), which the virtual probe's session carries to the emulated chip's source."""
    if not imu_odr_hz > 0:
        raise ValueError(f"imu_odr_hz must be positive, not {imu_odr_hz}")
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = attitude_path(sc)
    paths = Feed(out_dir / "imu.bin", out_dir / "hall_a.bin", out_dir / "hall_b.bin", keys, imu_odr_hz)
    imu_counts(sc, keys, imu_odr_hz).tofile(paths.imu)
    a, b = hall_records(sc)
    a.tofile(paths.hall_a)
    b.tofile(paths.hall_b)
    return paths


def truth(sc: Scenario, keys: np.ndarray, device_s: np.ndarray) -> dict[str, np.ndarray]:
    """The scenario's truth at device times (s): what a perfect device would have sent."""
    ypr = motion.euler_at(keys, device_s)
    depth = sc.depth_at(device_s)
    g = sc.guide_angle_deg
    return {
        "needle_angle_deg": motion.needle_angle_deg(ypr, g),
        "guide_angle_deg": np.full(len(device_s), g),
        "depth_mm": depth,
        "tip_depth_mm": depth * math.sin(math.radians(g)),
        "pitch_deg": ypr[:, 1],
        "roll_deg": ypr[:, 2],
    }
