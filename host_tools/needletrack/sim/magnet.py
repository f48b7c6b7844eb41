"""The needle carriage's magnet and the two TMAG5273 sensors in the clip: fields, raw counts, factory table.

Reference geometry (docs/depth.md draws it). The channel frame has x along the guide channel, positive in the
direction the needle advances, and z across the channel in the plane of motion, from the sensors towards the
magnet's axis; y = z cross x completes it. The carriage displacement p (mm) is the x of the magnet's centre,
0 when the needle tip is at the guide exit. The magnet is an axially magnetised NdFeB cylinder whose north
pole points in +x. Each TMAG5273 sits on the clip's board at (x_s, y_s, -gap) with its chip X axis along +x and
its Z axis along +z, so it reads the field in the (x, z) plane of motion on its X and Z channels.

Two field models:
- ``cylinder`` (default): the magnet as its equivalent surface current (a solenoid sheet K = M on the side
  wall), integrated over the length with Gauss-Legendre quadrature; each current loop's field comes from the
  complete elliptic integrals, computed with the arithmetic-geometric mean. Exact for a uniformly magnetised
  cylinder up to the quadrature error (well under 1e-6 relative at the sensor distances used here).
- ``dipole``: the point dipole of the same moment m = Br V / mu0, the far-field limit of the cylinder.

Options for imperfect conditions: a uniform stray field (mT, channel frame), the magnet's temperature (NdFeB
remanence drifts about -0.12 %/K), per-axis sensor gain and offset errors, a residual per-axis sensitivity
drift, chip tilt about its Y axis and magnet tilt. Raw counts follow the TMAG5273's 16-bit result format:
full scale +-range_mt maps to +-32768 counts (820 LSB/mT at +-40 mT), saturating at the rails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal, TypeVar

import numpy as np

MU0 = 4e-7 * math.pi  # T m / A

FieldModel = Literal["cylinder", "dipole"]

# TMAG5273 X/Y/Z channel noise, 1-sigma, at CONV_AVG = 1x, per axis. The datasheet's typical figures for the
# +-40 mT parts are of this order; averaging N conversions divides it by sqrt(N). An assumption to re-check
# against the datasheet revision in use: docs/depth.md, "Noise".
NOISE_1X_MT = 0.125
FULL_SCALE_COUNTS = 32768

# Gauss-Legendre nodes over the magnet's length: 48 keeps the current-sheet sum exact to ~1e-9 relative for
# sensors further than one radius from the wall, which the clip guarantees.
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(48)


_Temp = TypeVar("_Temp", float, np.ndarray)


@dataclass(frozen=True)
class Magnet:
    """Axially magnetised NdFeB cylinder; north pole towards +x (the needle's advance)."""

    diameter_mm: float = 6.0
    length_mm: float = 10.0
    br_mt: float = 1300.0  # N42 remanence at t_ref_c
    br_tc_per_k: float = -0.0012  # reversible temperature coefficient of Br (NdFeB, about -0.12 %/K)
    t_ref_c: float = 20.0
    tilt_deg: float = 0.0  # magnetisation axis rotated about y (assembly error)

    def br_at(self, temp_c: _Temp) -> _Temp:
        """Remanence in mT at temp_c (a temperature or an array of them)."""
        return self.br_mt * (1.0 + self.br_tc_per_k * (temp_c - self.t_ref_c))

    def volume_m3(self) -> float:
        r = self.diameter_mm * 0.5e-3
        return math.pi * r * r * self.length_mm * 1e-3

    def moment_am2(self, temp_c: float | None = None) -> float:
        """Dipole moment m = Br V / mu0 in A m^2."""
        br = self.br_at(self.t_ref_c if temp_c is None else temp_c) * 1e-3
        return br * self.volume_m3() / MU0


@dataclass(frozen=True)
class HallSensor:
    """One TMAG5273 on the clip's board, as built."""

    name: str
    address: int
    x_mm: float  # along the channel, in the same coordinate as the carriage displacement
    gap_mm: float  # from the chip's sensing point to the magnet's axis
    y_mm: float = 0.0  # out of the plane of motion (assembly error)
    tilt_deg: float = 0.0  # chip rotated about its Y axis (assembly error): shifts the field angle
    range_mt: float = 40.0  # +-40 mT or +-80 mT on the x1 variants (A1, B1)
    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per-axis sensitivity factor
    gain_tc_per_k: tuple[float, float, float] = (0.0, 0.0, 0.0)  # residual per-axis sensitivity drift
    offset_mt: tuple[float, float, float] = (0.0, 0.0, 0.0)  # per-axis zero-field offset
    t_ref_c: float = 20.0


@dataclass(frozen=True)
class Geometry:
    magnet: Magnet = field(default_factory=Magnet)
    sensors: tuple[HallSensor, ...] = ()
    stroke_mm: tuple[float, float] = (0.0, 80.0)
    model: FieldModel = "cylinder"


# The reference design: a 6 x 10 mm N42 magnet, two sensors 40 mm apart, 12 mm from the magnet's axis. The
# sensors sit at 20 and 60 mm so that each sees the magnet within +-24 mm, where the field angle still turns
# by about 1 deg per 0.1 mm and the field stays above 1.5 mT (docs/depth.md, "Geometry").
REFERENCE = Geometry(
    magnet=Magnet(),
    sensors=(
        HallSensor(name="A1", address=0x35, x_mm=20.0, gap_mm=12.0),
        HallSensor(name="B1", address=0x22, x_mm=60.0, gap_mm=12.0),
    ),
)

# The factory split of the stroke between the sensors: A covers the shallow half, B the deep half, and the
# estimate blends linearly from A to B across the seam. Each table reaches a little past the stroke ends.
BLEND_MM = (37.0, 43.0)
TABLE_SPAN_MM = ((-3.0, 46.0), (34.0, 83.0))
TABLE_POINTS = 24
MIN_FIELD_UT = 1000


def _ellipke(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Complete elliptic integrals K(m), E(m) (parameter m = k^2 < 1) by the arithmetic-geometric mean."""
    a = np.ones_like(m)
    b = np.sqrt(1.0 - m)
    total = 0.5 * m  # sum over n of 2^(n-1) c_n^2, with c_0^2 = m
    weight = 0.5
    for _ in range(30):
        c = 0.5 * (a - b)
        a, b = 0.5 * (a + b), np.sqrt(a * b)
        weight *= 2.0
        total = total + weight * c * c
        if np.all(np.abs(c) <= 1e-16 * a):
            break
    k = np.pi / (2.0 * a)
    e = k * (1.0 - total)
    return k, e


def loop_field(radius: float, current: float, axial: np.ndarray, rho: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Field (B_axial, B_radial) in T of a circular loop (radius m, current A) at (axial, rho) metres."""
    a = radius
    q = (a + rho) ** 2 + axial**2
    d = (a - rho) ** 2 + axial**2
    m = 4.0 * a * rho / q
    kk, ee = _ellipke(np.clip(m, 0.0, 1.0 - 1e-15))
    c = MU0 * current / (2.0 * np.pi * np.sqrt(q))
    b_ax = c * (kk + (a * a - rho * rho - axial * axial) / d * ee)
    with np.errstate(invalid="ignore", divide="ignore"):
        b_rho = np.where(rho > 1e-12, c * axial / rho * (-kk + (a * a + rho * rho + axial * axial) / d * ee), 0.0)
    return b_ax, b_rho


def cylinder_field(magnet: Magnet, axial_mm: np.ndarray, rho_mm: np.ndarray,
                   temp_c: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(B_axial, B_radial) in mT of the axially magnetised cylinder, magnet-centred cylindrical coordinates."""
    br = magnet.br_at(magnet.t_ref_c if temp_c is None else temp_c) * 1e-3  # T
    k_sheet = br / MU0  # A/m, surface current of the side wall
    half = magnet.length_mm * 0.5e-3
    radius = magnet.diameter_mm * 0.5e-3
    z = np.asarray(axial_mm, dtype=float)[..., None] * 1e-3
    rho = np.asarray(rho_mm, dtype=float)[..., None] * 1e-3
    z0 = half * _GL_NODES
    b_ax, b_rho = loop_field(radius, k_sheet * half, z - z0, rho)
    w = _GL_WEIGHTS
    return (b_ax * w).sum(-1) * 1e3, (b_rho * w).sum(-1) * 1e3


def dipole_field(magnet: Magnet, axial_mm: np.ndarray, rho_mm: np.ndarray,
                 temp_c: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(B_axial, B_radial) in mT of the point dipole with the magnet's moment."""
    m = magnet.moment_am2(temp_c)
    z = np.asarray(axial_mm, dtype=float) * 1e-3
    rho = np.asarray(rho_mm, dtype=float) * 1e-3
    r2 = z * z + rho * rho
    r5 = r2 ** 2.5
    k = MU0 / (4.0 * np.pi) * m
    return k * (3.0 * z * z - r2) / r5 * 1e3, k * 3.0 * z * rho / r5 * 1e3


def _rot_y(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def field_channel_mt(geom: Geometry, sensor: HallSensor, p_mm: np.ndarray | float,
                     temp_c: float | None = None) -> np.ndarray:
    """Magnet field (mT) at the sensor's sensing point in the channel frame, shape (..., 3)."""
    p = np.asarray(p_mm, dtype=float)
    rel = np.stack(np.broadcast_arrays(sensor.x_mm - p, np.full_like(p, sensor.y_mm),
                                       np.full_like(p, -sensor.gap_mm)), axis=-1)
    rot = _rot_y(geom.magnet.tilt_deg)  # magnet frame -> channel frame
    rel_m = rel @ rot  # channel -> magnet frame (rot is orthonormal: v_m = rot^T v_c)
    axial = rel_m[..., 0]
    rho = np.hypot(rel_m[..., 1], rel_m[..., 2])
    fn = cylinder_field if geom.model == "cylinder" else dipole_field
    b_ax, b_rho = fn(geom.magnet, axial, rho, temp_c)
    with np.errstate(invalid="ignore", divide="ignore"):
        uy = np.where(rho > 0, rel_m[..., 1] / rho, 0.0)
        uz = np.where(rho > 0, rel_m[..., 2] / rho, 0.0)
    b_m = np.stack([b_ax, b_rho * uy, b_rho * uz], axis=-1)
    return b_m @ rot.T


def field_sensor_mt(geom: Geometry, p_mm: np.ndarray | float, temp_c: float | None = None,
                    stray_mt: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """What each sensor measures, in mT on its own X, Y, Z axes, before noise: shape (..., n_sensors, 3).

    temp_c drives the magnet's remanence and the sensors' residual gain drift; None means the reference
    temperature. stray_mt is a uniform field in the channel frame (earth, nearby steel, the probe's cable).
    """
    out = []
    for s in geom.sensors:
        b = field_channel_mt(geom, s, p_mm, temp_c) + np.asarray(stray_mt, dtype=float)
        b = b @ _rot_y(s.tilt_deg)  # channel -> chip frame
        t = s.t_ref_c if temp_c is None else temp_c
        g = np.asarray(s.gain) * (1.0 + np.asarray(s.gain_tc_per_k) * (t - s.t_ref_c))
        out.append(b * g + np.asarray(s.offset_mt))
    return np.stack(out, axis=-2)


def lsb_per_mt(range_mt: float) -> float:
    return FULL_SCALE_COUNTS / range_mt


def to_counts(b_mt: np.ndarray, range_mt: float | np.ndarray) -> np.ndarray:
    """TMAG5273 16-bit results: round(B * 32768 / range), saturating at -32768 .. 32767."""
    c = np.rint(np.asarray(b_mt) * (FULL_SCALE_COUNTS / np.asarray(range_mt, dtype=float)))
    return np.clip(c, -FULL_SCALE_COUNTS, FULL_SCALE_COUNTS - 1).astype(np.int32)


def noise_mt(conv_avg: int = 32) -> float:
    """1-sigma per-axis noise of one result with CONV_AVG = conv_avg (1, 2, 4, 8, 16 or 32)."""
    if conv_avg not in (1, 2, 4, 8, 16, 32):
        raise ValueError(f"conv_avg must be 1, 2, 4, 8, 16 or 32, not {conv_avg}")
    return NOISE_1X_MT / math.sqrt(conv_avg)


def sample_counts(geom: Geometry, p_mm: np.ndarray | float, rng: np.random.Generator | None = None,
                  conv_avg: int = 32, temp_c: float | None = None,
                  stray_mt: tuple[float, float, float] = (0.0, 0.0, 0.0),
                  extra_noise_mt: float = 0.0) -> np.ndarray:
    """Raw int counts (..., n_sensors, 3) as the sensors would report them; noise only if rng is given."""
    b = field_sensor_mt(geom, p_mm, temp_c, stray_mt)
    if rng is not None:
        sigma = math.hypot(noise_mt(conv_avg), extra_noise_mt)
        b = b + rng.normal(0.0, sigma, b.shape)
    ranges = np.array([s.range_mt for s in geom.sensors])[:, None]
    return to_counts(b, ranges)


def field_angle_deg(bx: np.ndarray, bz: np.ndarray) -> np.ndarray:
    """The estimator's field angle: atan2(Bz, -Bx), 0 with the magnet centred over the chip, rising with p."""
    return np.degrees(np.arctan2(bz, -np.asarray(bx)))


def _fit_values(theta: np.ndarray, p: np.ndarray, knots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(knots)
    basis = np.empty((len(theta), n))
    for j in range(n):
        e = np.zeros(n)
        e[j] = 1.0
        basis[:, j] = np.interp(theta, knots, e)
    values, *_ = np.linalg.lstsq(basis, p, rcond=None)
    return values, basis @ values - p


def place_knots(theta: np.ndarray, p: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Knot angles and least-squares knot values of an n-point piecewise-linear p(theta).

    theta must increase. The two end knots are the ends of the data; the inner ones start evenly spaced in p
    and move by coordinate descent on RMS + max/4 of the residual, so they crowd where p(theta) bends.
    """
    knots = np.interp(np.linspace(p[0], p[-1], n), p, theta)

    def cost(k: np.ndarray) -> float:
        r = _fit_values(theta, p, k)[1]
        return float(np.sqrt(np.mean(r * r)) + 0.25 * np.abs(r).max())

    cur = cost(knots)
    step = (theta[-1] - theta[0]) / (4 * n)
    while step > 1e-3 * (theta[-1] - theta[0]) / n:
        improved = False
        for j in range(1, n - 1):
            for sgn in (-1.0, 1.0):
                k = knots.copy()
                k[j] += sgn * step
                if not k[j - 1] < k[j] < k[j + 1]:
                    continue
                c = cost(k)
                if c < cur:
                    cur, knots, improved = c, k, True
        if not improved:
            step *= 0.5
    return knots, _fit_values(theta, p, knots)[0]


def factory_calibration(geom: Geometry = REFERENCE, n_points: int = TABLE_POINTS, temp_c: float = 20.0,
                        samples: int = 981) -> dict:
    """The nominal calibration of a geometry, in the store's format (firmware/store.py, docs/depth.md).

    Tables map field angle (mdeg, increasing) to carriage displacement (um) per sensor, sampled from the
    model without noise and fitted with place_knots.
    """
    sensors = []
    for i, s in enumerate(geom.sensors):
        lo, hi = TABLE_SPAN_MM[i]
        p = np.linspace(lo, hi, samples)
        b = field_sensor_mt(replace(geom, sensors=(s,)), p, temp_c)[..., 0, :]
        theta = np.unwrap(np.radians(field_angle_deg(b[:, 0], b[:, 2])))
        theta = np.degrees(theta) * 1000.0
        if theta[-1] < theta[0]:
            theta, p = theta[::-1], p[::-1]
        knots, values = place_knots(theta, p * 1000.0, n_points)
        sensors.append({
            "angle_mdeg": [round(v) for v in knots],
            "disp_um": [round(v) for v in values],
            "min_field_ut": MIN_FIELD_UT,
            "range_mt": round(s.range_mt),
            "z_gain_tc_ppm": 0,
        })
    return {
        "sensors": sensors,
        "blend_um": [round(BLEND_MM[0] * 1000), round(BLEND_MM[1] * 1000)],
        "disagree_um": 3000,
        "cal_temp_cdeg": round(temp_c * 100),
        "disp_tc_ppm": 0,
    }
