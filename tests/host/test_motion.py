"""Motion truth and LSM6DSOX model: frames, rates consistent with the attitude path, noise and quantisation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from needletrack.sim import imu_model as im
from needletrack.sim import motion as mo


def _rx(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _qmul(a, b):
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw])


def _integrate(q0, gyro, dt):
    """Exact-exponential integration of per-sample body rates; returns the quaternion after each sample."""
    q = np.array(q0, dtype=float)
    out = [q]
    for w in gyro[1:]:
        n = np.linalg.norm(w)
        if n > 0:
            h = n * dt / 2
            q = _qmul(q, np.r_[np.cos(h), np.sin(h) * w / n])
        out.append(q)
    return np.array(out)


def _angle_between(qa, qb):
    d = np.clip(np.abs(np.sum(qa * qb, axis=-1)), 0.0, 1.0)
    return np.degrees(2 * np.arccos(d))


def test_matrix_is_rz_ry_rx_and_quaternion_agrees():
    rng = np.random.default_rng(1)
    ypr = rng.uniform([-180, -89, -180], [180, 89, 180], (50, 3))
    r = mo.euler_to_matrix(ypr)
    for i in range(len(ypr)):
        y, p, ro = np.radians(ypr[i])
        np.testing.assert_allclose(r[i], _rz(y) @ _ry(p) @ _rx(ro), atol=1e-12)
    np.testing.assert_allclose(mo.quat_to_matrix(mo.euler_to_quat(ypr)), r, atol=1e-12)
    np.testing.assert_allclose(np.einsum("nij,nkj->nik", r, r), np.broadcast_to(np.eye(3), r.shape), atol=1e-12)


def test_rest_reads_minus_one_g_on_z_and_no_rate():
    m = mo.sample(np.array([[0.0, 37.0, 0.0, 0.0], [1.0, 37.0, 0.0, 0.0]]))
    assert len(m.t_s) == 834
    np.testing.assert_allclose(m.accel_g, np.tile([0.0, 0.0, -1.0], (834, 1)), atol=1e-15)
    np.testing.assert_allclose(m.gyro_rad_s, 0.0, atol=1e-15)


def test_tilt_specific_force_matches_gravity_row():
    # Pitched nose-down by theta: f = g (sin theta, 0, -cos theta) (DESIGN: f = R^T (a - g)).
    m = mo.sample(np.array([[0.0, 0.0, 30.0, 0.0], [0.5, 0.0, 30.0, 0.0]]))
    np.testing.assert_allclose(m.accel_g[0], [0.5, 0.0, -np.cos(np.radians(30))], atol=1e-12)
    m = mo.sample(np.array([[0.0, 0.0, 0.0, 40.0], [0.5, 0.0, 0.0, 40.0]]))
    np.testing.assert_allclose(m.accel_g[0], [0.0, -np.sin(np.radians(40)), -np.cos(np.radians(40))], atol=1e-12)


def test_single_axis_ramps_give_body_rates():
    for axis, col in ((0, 2), (1, 1), (2, 0)):  # yaw -> body z, pitch -> body y, roll -> body x at level
        k = np.zeros((2, 4))
        k[1, 0] = 1.0
        k[1, 1 + axis] = 10.0
        m = mo.sample(k, duration_s=0.5, gyro_average=False)
        want = np.zeros(3)
        want[col] = np.radians(10.0)
        np.testing.assert_allclose(m.gyro_rad_s[0], want, atol=1e-12)


def test_body_rate_matches_numerical_derivative_of_r():
    # R' = R [omega]x for the body rate: check against central differences on a smooth Euler path.
    rng = np.random.default_rng(3)
    for _ in range(20):
        ypr = rng.uniform([-180, -80, -180], [180, 80, 180])
        rate = rng.uniform(-60, 60, 3)
        h = 1e-6
        rp = mo.euler_to_matrix(ypr + rate * h)
        rm = mo.euler_to_matrix(ypr - rate * h)
        rdot = (rp - rm) / (2 * h)
        skew = mo.euler_to_matrix(ypr).T @ rdot
        w = mo.body_rate(ypr, rate)
        np.testing.assert_allclose([skew[2, 1], skew[0, 2], skew[1, 0]], w, atol=1e-6)
        np.testing.assert_allclose(skew + skew.T, 0.0, atol=1e-6)


@settings(max_examples=12, deadline=None)
@given(st.lists(st.tuples(st.floats(-60, 60), st.floats(-60, 60), st.floats(-60, 60)), min_size=2, max_size=5),
       st.sampled_from([833.0, 104.0]))
def test_integrating_sampled_gyro_lands_on_truth(angles, rate_hz):
    # Keyframes at awkward times (not on the sample grid) so corners fall inside sample intervals; up to
    # 240 deg/s per angle, beyond a hand-held probe.
    k = np.array([[0.5 * i + (0.0 if i == 0 else 0.0413), *a] for i, a in enumerate(angles)])
    k[0, 0] = 0.0
    m = mo.sample(k, duration_s=float(k[-1, 0]) + 0.05, rate_hz=rate_hz)
    q = _integrate(m.quat[0], m.gyro_rad_s, 1.0 / rate_hz)
    # Mean-rate integration is exact up to the non-commutativity of rotations within one sample (coning), which
    # shrinks with the square of the per-sample turn: a few degrees per sample at 104 Hz, a fraction at 833 Hz.
    assert _angle_between(q, m.quat).max() < (1e-3 if rate_hz > 800 else 0.03)


def test_instantaneous_rate_misses_corners_that_mean_rate_hits():
    k = np.array([[0.0, 0, 0, 0], [0.0512, 0, 20, 0], [0.2, 0, -20, 0]])
    dt = 1 / 833
    avg = mo.sample(k, duration_s=0.25)
    inst = mo.sample(k, duration_s=0.25, gyro_average=False)
    ea = _angle_between(_integrate(avg.quat[0], avg.gyro_rad_s, dt), avg.quat).max()
    ei = _angle_between(_integrate(inst.quat[0], inst.gyro_rad_s, dt), inst.quat).max()
    assert ea < 1e-9
    assert ei > 0.05  # a fraction of one sample's turn at 390 and 270 deg/s


def test_needle_angle_is_guide_angle_at_rest_and_follows_pitch():
    assert mo.needle_angle_deg(np.array([0.0, 0.0, 0.0]), 30.0) == pytest.approx(30.0)
    assert mo.needle_angle_deg(np.array([123.0, 0.0, 0.0]), 45.0) == pytest.approx(45.0)
    # Pitch about body y tilts the image plane: the needle's elevation shifts by -pitch (R31 = -sin(pitch)).
    assert mo.needle_angle_deg(np.array([0.0, 10.0, 0.0]), 30.0) == pytest.approx(20.0)
    # Roll about body x swings the needle out of the vertical plane: elevation drops.
    assert mo.needle_angle_deg(np.array([0.0, 0.0, 20.0]), 30.0) < 30.0


def test_lever_arm_centripetal_and_extra_world_acceleration():
    # Constant yaw rate about a pivot 5 cm from the sensor along body x: centripetal w^2 r towards the pivot.
    k = np.array([[0.0, 0.0, 0.0, 0.0], [2.0, 120.0, 0.0, 0.0]])
    m = mo.sample(k, duration_s=1.0, lever_arm_m=(0.05, 0.0, 0.0))
    w = np.radians(60.0)
    mid = m.accel_g[400:600]
    np.testing.assert_allclose(mid[:, 0], -w * w * 0.05 / mo.G_MPS2, rtol=1e-5)
    np.testing.assert_allclose(mid[:, 2], -1.0, atol=1e-12)
    # The start of the turn is a velocity step: one sample carries its whole impulse w r / dt.
    assert m.accel_g[0, 1] == pytest.approx(w * 0.05 * 833 / mo.G_MPS2, rel=1e-3)
    extra = np.zeros((len(m.t_s), 3))
    extra[:, 2] = -0.5  # accelerating upwards at 0.5 g
    up = mo.sample(k, duration_s=1.0, accel_world_g=extra)
    np.testing.assert_allclose(up.accel_g[:, 2], -1.5, atol=1e-12)
    with pytest.raises(ValueError, match="accel_world_g"):
        mo.sample(k, duration_s=1.0, accel_world_g=np.zeros((3, 3)))


def test_bad_keyframes_are_rejected():
    with pytest.raises(ValueError, match="increase"):
        mo.sample(np.array([[0.0, 0, 0, 0], [0.0, 1, 1, 1]]))
    with pytest.raises(ValueError, match="shape"):
        mo.sample(np.array([0.0, 0, 0, 0]))


def test_imu_noise_matches_datasheet_density_and_quantises():
    imu = im.ImuModel(seed=4, gyro_bias_dps=(0.5, -0.5, 0.25), accel_bias_mg=(2.0, 0.0, -3.0))
    n = 200_000
    g_raw, a_raw = imu.raw(np.zeros((n, 3)), np.tile([0.0, 0.0, -1.0], (n, 1)))
    assert g_raw.dtype == np.int16 and a_raw.dtype == np.int16
    g_dps = g_raw * 17.5e-3
    a_g = a_raw * 0.122e-3
    # RMS over ODR/2: 3.8 mdps/rtHz * sqrt(416.5) = 0.0776 dps, 70 ug/rtHz * sqrt(416.5) = 1.43 mg.
    np.testing.assert_allclose(g_dps.std(axis=0), 3.8e-3 * np.sqrt(416.5), rtol=0.03)
    np.testing.assert_allclose(a_g.std(axis=0), 70e-6 * np.sqrt(416.5), rtol=0.03)
    np.testing.assert_allclose(g_dps.mean(axis=0), [0.5, -0.5, 0.25], atol=2e-3)
    np.testing.assert_allclose(a_g.mean(axis=0), [0.002, 0.0, -1.003], atol=1e-4)
    assert abs(np.median(a_raw[:, 2]) - round(-1.003 / 0.122e-3)) <= 1


def test_imu_saturates_rounds_and_is_reproducible():
    imu = im.ImuModel(accel_noise_ug_rthz=0.0, gyro_noise_mdps_rthz=0.0)
    g, a = imu.raw(np.radians([[600.0, -600.0, 1.0]]), np.array([[5.0, -5.0, 0.00018]]))
    assert g.tolist() == [[32767, -32768, 57]]  # 1 dps / 17.5 mdps = 57.1
    assert a.tolist() == [[32767, -32768, 1]]  # 0.18 mg / 0.122 mg = 1.48
    noisy = im.ImuModel(seed=9)
    x = noisy.raw(np.zeros((100, 3)), np.zeros((100, 3)))
    y = noisy.raw(np.zeros((100, 3)), np.zeros((100, 3)))
    np.testing.assert_array_equal(x[0], y[0])
    assert not np.array_equal(x[0], im.ImuModel(seed=10).raw(np.zeros((100, 3)), np.zeros((100, 3)))[0])
    with pytest.raises(ValueError):
        im.ImuModel(accel_fs_g=3)
