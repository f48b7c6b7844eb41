"""Probe motion truth from attitude keyframes: attitude, body angular rate and specific force.

Keyframes are rows ``[t_s, yaw_deg, pitch_deg, roll_deg]``; each angle is linear in time between keyframes and
held before the first and after the last (the scenario convention). Attitude is intrinsic Z-Y-X,
R = Rz(yaw) Ry(pitch) Rx(roll), body -> world, world x north, y east, z down. Because each Euler angle moves at a
constant rate within a segment, the body angular rate follows exactly from the Euler rates:

    omega_body = (roll' - yaw' sin(pitch),
                  pitch' cos(roll) + yaw' cos(pitch) sin(roll),
                  -pitch' sin(roll) + yaw' cos(pitch) cos(roll))

The accelerometer's specific force is f_body = R^T (a_world - g_world) with g_world = (0, 0, +1 g): (0, 0, -1) g
at rest. a_world is zero when the probe turns about the sensor; with a lever arm r (the sensor at R r from a
fixed pivot) it is the second derivative of R r, and any extra world acceleration can be added.

Sampling: sample k is at t0 + k / rate_hz. A real gyro's output is low-pass filtered; ``gyro_average`` reports
the mean body rate over the sample interval (t - dt, t] (Gauss-Legendre quadrature within each keyframe segment
of the interval), which is what integrating q += q (x) (0, omega dt / 2) sample by sample needs to land on the
truth at every sample, corners included. The lever-arm acceleration is likewise the mean over the interval
(the velocity change divided by dt), so a keyframe corner's impulse is spread over one sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEG = np.pi / 180.0
G_MPS2 = 9.80665
ODR_HZ = 833.0  # LSM6DSOX reference configuration


def _keys(keyframes: np.ndarray) -> np.ndarray:
    k = np.asarray(keyframes, dtype=float)
    if k.ndim != 2 or k.shape[1] != 4 or len(k) == 0:
        raise ValueError("keyframes: expected shape (n, 4) rows of [t_s, yaw_deg, pitch_deg, roll_deg]")
    if np.any(np.diff(k[:, 0]) <= 0):
        raise ValueError("keyframes: times must increase")
    return k


def euler_at(keyframes: np.ndarray, t_s: np.ndarray | float) -> np.ndarray:
    """(yaw, pitch, roll) in degrees at t_s, linear between keyframes; shape (..., 3)."""
    k = _keys(keyframes)
    t = np.asarray(t_s, dtype=float)
    return np.stack([np.interp(t, k[:, 0], k[:, i]) for i in (1, 2, 3)], axis=-1)


def euler_rate_at(keyframes: np.ndarray, t_s: np.ndarray | float) -> np.ndarray:
    """d(yaw, pitch, roll)/dt in deg/s at t_s: the slope of the segment that starts at or before t_s (so a
    keyframe time takes the outgoing segment's rate); zero before the first and from the last keyframe on."""
    k = _keys(keyframes)
    t = np.asarray(t_s, dtype=float)
    if len(k) < 2:
        return np.zeros((*t.shape, 3))
    slopes = np.diff(k[:, 1:], axis=0) / np.diff(k[:, 0])[:, None]  # (n-1, 3)
    seg = np.searchsorted(k[:, 0], t, side="right") - 1
    inside = (seg >= 0) & (seg < len(k) - 1)
    out = np.zeros((*t.shape, 3))
    out[inside] = slopes[seg[inside]]
    return out


def euler_to_matrix(ypr_deg: np.ndarray) -> np.ndarray:
    """R = Rz(yaw) Ry(pitch) Rx(roll), body -> world; shape (..., 3, 3)."""
    a = np.asarray(ypr_deg, dtype=float) * DEG
    cy, sy = np.cos(a[..., 0]), np.sin(a[..., 0])
    cp, sp = np.cos(a[..., 1]), np.sin(a[..., 1])
    cr, sr = np.cos(a[..., 2]), np.sin(a[..., 2])
    r = np.empty((*a.shape[:-1], 3, 3))
    r[..., 0, 0] = cy * cp
    r[..., 0, 1] = cy * sp * sr - sy * cr
    r[..., 0, 2] = cy * sp * cr + sy * sr
    r[..., 1, 0] = sy * cp
    r[..., 1, 1] = sy * sp * sr + cy * cr
    r[..., 1, 2] = sy * sp * cr - cy * sr
    r[..., 2, 0] = -sp
    r[..., 2, 1] = cp * sr
    r[..., 2, 2] = cp * cr
    return r


def euler_to_quat(ypr_deg: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of R = Rz Ry Rx, body -> world, w >= 0; shape (..., 4)."""
    a = np.asarray(ypr_deg, dtype=float) * DEG * 0.5
    cy, sy = np.cos(a[..., 0]), np.sin(a[..., 0])
    cp, sp = np.cos(a[..., 1]), np.sin(a[..., 1])
    cr, sr = np.cos(a[..., 2]), np.sin(a[..., 2])
    q = np.stack([
        cy * cp * cr + sy * sp * sr,
        cy * cp * sr - sy * sp * cr,
        cy * sp * cr + sy * cp * sr,
        sy * cp * cr - cy * sp * sr,
    ], axis=-1)
    return q * np.where(q[..., :1] < 0, -1.0, 1.0)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrix of unit quaternions (w, x, y, z); shape (..., 3, 3)."""
    q = np.asarray(q, dtype=float)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    r = np.empty((*q.shape[:-1], 3, 3))
    r[..., 0, 0] = 1 - 2 * (y * y + z * z)
    r[..., 0, 1] = 2 * (x * y - w * z)
    r[..., 0, 2] = 2 * (x * z + w * y)
    r[..., 1, 0] = 2 * (x * y + w * z)
    r[..., 1, 1] = 1 - 2 * (x * x + z * z)
    r[..., 1, 2] = 2 * (y * z - w * x)
    r[..., 2, 0] = 2 * (x * z - w * y)
    r[..., 2, 1] = 2 * (y * z + w * x)
    r[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return r


def body_rate(ypr_deg: np.ndarray, ypr_rate_deg_s: np.ndarray) -> np.ndarray:
    """Body angular rate (rad/s) from Euler angles (deg) and their rates (deg/s); shape (..., 3)."""
    a = np.asarray(ypr_deg, dtype=float) * DEG
    d = np.asarray(ypr_rate_deg_s, dtype=float) * DEG
    cp, sp = np.cos(a[..., 1]), np.sin(a[..., 1])
    cr, sr = np.cos(a[..., 2]), np.sin(a[..., 2])
    yd, pd, rd = d[..., 0], d[..., 1], d[..., 2]
    return np.stack([rd - yd * sp, pd * cr + yd * cp * sr, -pd * sr + yd * cp * cr], axis=-1)


def needle_angle_deg(ypr_deg: np.ndarray, guide_deg: float) -> np.ndarray:
    """Needle elevation below horizontal, asin((R d).z) with d = (cos g, 0, sin g) in the body (DESIGN 3)."""
    r = euler_to_matrix(ypr_deg)
    g = guide_deg * DEG
    return np.degrees(np.arcsin(np.clip(r[..., 2, 0] * np.cos(g) + r[..., 2, 2] * np.sin(g), -1.0, 1.0)))


def _rate_at(k: np.ndarray, t: np.ndarray) -> np.ndarray:
    return body_rate(euler_at(k, t), euler_rate_at(k, t))


# 4-point Gauss-Legendre nodes and weights on [0, 1].
_GL_X = 0.5 + 0.5 * np.array([-0.8611363115940526, -0.3399810435848563, 0.3399810435848563, 0.8611363115940526])
_GL_W = 0.5 * np.array([0.3478548451374538, 0.6521451548625461, 0.6521451548625461, 0.3478548451374538])


def mean_body_rate(keyframes: np.ndarray, t_start: np.ndarray, t_end: np.ndarray) -> np.ndarray:
    """Mean body rate (rad/s) over [t_start, t_end] per element: quadrature within each keyframe segment the
    interval covers (the rate is smooth inside a segment, discontinuous only at keyframes).

    Vectorised over the intervals: pass m handles every interval's m-th piece at once, so the cost grows with
    the most keyframes any one interval holds (one or two for dense tremor paths), not with all keyframes."""
    k = _keys(keyframes)
    t0, t1 = np.broadcast_arrays(np.asarray(t_start, dtype=float), np.asarray(t_end, dtype=float))
    times = k[:, 0]
    first = np.searchsorted(times, t0, side="right")  # first keyframe strictly after the interval's start
    cuts = np.searchsorted(times, t1, side="left") - first  # keyframes strictly inside the interval
    cuts = np.maximum(cuts, 0)
    total = np.zeros((*t0.shape, 3))
    lo = t0.copy()
    for m in range(int(cuts.max(initial=0)) + 1):
        piece = m <= cuts
        hi = np.where(m < cuts, times[np.minimum(first + m, len(times) - 1)], t1)
        span = np.where(piece, np.maximum(hi - lo, 0.0), 0.0)
        for x, w in zip(_GL_X, _GL_W, strict=True):
            total += (w * span)[..., None] * _rate_at(k, lo + x * span)
        lo = np.where(piece, hi, lo)
    return total / np.maximum(t1 - t0, 1e-300)[..., None]


@dataclass(frozen=True)
class MotionSamples:
    """Truth at the sample instants."""

    t_s: np.ndarray  # (n,)
    ypr_deg: np.ndarray  # (n, 3)
    quat: np.ndarray  # (n, 4) w, x, y, z, body -> world
    gyro_rad_s: np.ndarray  # (n, 3) body angular rate (mean over the sample interval, or instantaneous)
    accel_g: np.ndarray  # (n, 3) specific force in the body, g

    @property
    def rate_hz(self) -> float:
        return float(1.0 / np.median(np.diff(self.t_s))) if len(self.t_s) > 1 else ODR_HZ


def _lever_velocity(k: np.ndarray, t: np.ndarray, lever_m: np.ndarray) -> np.ndarray:
    """World velocity (m/s) of the point R(t) r: R (omega x r), right-continuous at keyframes."""
    ypr = euler_at(k, t)
    w = body_rate(ypr, euler_rate_at(k, t))
    return np.einsum("...ij,...j->...i", euler_to_matrix(ypr), np.cross(w, lever_m))


def sample(keyframes: np.ndarray, duration_s: float | None = None, rate_hz: float = ODR_HZ, t0_s: float = 0.0,
           gyro_average: bool = True, lever_arm_m: tuple[float, float, float] | None = None,
           accel_world_g: np.ndarray | None = None) -> MotionSamples:
    """Truth at t0_s + k / rate_hz for k = 0 .. floor(duration_s * rate_hz) (duration defaults to the last
    keyframe's time).

    lever_arm_m: sensor position in the body frame relative to a world-fixed pivot (m); None means the probe
    turns about the sensor. accel_world_g: extra world-frame acceleration per sample, shape (n, 3), in g.
    """
    k = _keys(keyframes)
    if duration_s is None:
        duration_s = float(k[-1, 0] - t0_s)
    dt = 1.0 / rate_hz
    n = int(np.floor(duration_s * rate_hz + 1e-9)) + 1
    t = t0_s + np.arange(n) * dt
    ypr = euler_at(k, t)
    r = euler_to_matrix(ypr)
    gyro = mean_body_rate(k, t - dt, t) if gyro_average else _rate_at(k, t)
    a_world = np.zeros((n, 3))
    if lever_arm_m is not None:
        lever = np.asarray(lever_arm_m, dtype=float)
        a_world += (_lever_velocity(k, t, lever) - _lever_velocity(k, t - dt, lever)) / dt / G_MPS2
    if accel_world_g is not None:
        extra = np.asarray(accel_world_g, dtype=float)
        if extra.shape != (n, 3):
            raise ValueError(f"accel_world_g: expected shape {(n, 3)}, got {extra.shape}")
        a_world += extra
    a_world[:, 2] -= 1.0  # minus g_world
    f = np.einsum("nji,nj->ni", r, a_world)  # R^T (a - g)
    return MotionSamples(t_s=t, ypr_deg=ypr, quat=euler_to_quat(ypr), gyro_rad_s=gyro, accel_g=f)
