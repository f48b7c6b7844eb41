"""Magnet and Hall-sensor model: closed forms, limits, symmetries, counts, and the firmware's factory table."""

from __future__ import annotations

import ast
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from needletrack.sim import magnet as mg

ROOT = Path(__file__).resolve().parents[2]


def test_elliptic_integrals_match_tabulated_values():
    k, e = mg._ellipke(np.array([0.0, 0.5, 0.9]))
    # Abramowitz & Stegun table 17.1 values.
    assert k == pytest.approx([math.pi / 2, 1.8540746773013719, 2.5780921133481733], rel=1e-13)
    assert e == pytest.approx([math.pi / 2, 1.3506438810476755, 1.1047747327040733], rel=1e-13)


def test_cylinder_on_axis_matches_closed_form():
    m = mg.Magnet(diameter_mm=6.0, length_mm=10.0, br_mt=1300.0)
    z = np.array([5.5, 6.0, 8.0, 12.0, 30.0, -9.0])
    b_ax, b_rho = mg.cylinder_field(m, z, np.zeros_like(z))
    r, h = 3.0, 5.0
    want = m.br_mt / 2 * ((z + h) / np.hypot(r, z + h) - (z - h) / np.hypot(r, z - h))
    assert b_ax == pytest.approx(want, rel=1e-9)
    assert np.all(b_rho == 0.0)


def test_cylinder_tends_to_dipole_far_away():
    m = mg.Magnet()
    for ax, rho in ((150.0, 0.0), (0.0, 150.0), (100.0, 110.0), (-80.0, 120.0)):
        c = np.array(mg.cylinder_field(m, np.array(ax), np.array(rho)))
        d = np.array(mg.dipole_field(m, np.array(ax), np.array(rho)))
        assert np.linalg.norm(c - d) < 0.01 * np.linalg.norm(d)
    # ... and measurably not at the sensor's distance: the reason for the cylinder model.
    c = np.array(mg.cylinder_field(m, np.array(10.0), np.array(12.0)))
    d = np.array(mg.dipole_field(m, np.array(10.0), np.array(12.0)))
    assert np.linalg.norm(c - d) > 0.02 * np.linalg.norm(d)


def test_field_is_divergence_and_curl_free_outside_the_magnet():
    geom = mg.Geometry(sensors=(mg.HallSensor("A1", 0x35, 0.0, 12.0),))
    s = geom.sensors[0]
    h = 1e-3  # mm

    def b_at(x, y, z):
        moved = replace(geom, sensors=(replace(s, x_mm=x, y_mm=y, gap_mm=-z),))
        return mg.field_channel_mt(moved, moved.sensors[0], 0.0)

    for x, y, z in ((4.0, 1.0, -12.0), (-7.0, 0.0, -9.0), (15.0, -3.0, -14.0)):
        jac = np.empty((3, 3))
        for j, d in enumerate(np.eye(3) * h):
            jac[:, j] = (b_at(x + d[0], y + d[1], z + d[2]) - b_at(x - d[0], y - d[1], z - d[2])) / (2 * h)
        scale = np.abs(jac).max()
        assert abs(np.trace(jac)) < 1e-6 * scale
        assert np.abs(jac - jac.T).max() < 1e-6 * scale


def test_field_angle_is_zero_over_the_chip_and_rises_with_displacement():
    geom = mg.REFERENCE
    for i, s in enumerate(geom.sensors):
        b = mg.field_sensor_mt(geom, s.x_mm)[i]
        assert b[2] == pytest.approx(0.0, abs=1e-12) and b[0] < 0  # field anti-parallel to m beside it
        lo, hi = mg.TABLE_SPAN_MM[i]
        p = np.linspace(lo, hi, 400)
        bb = mg.field_sensor_mt(geom, p)[:, i]
        ang = mg.field_angle_deg(bb[:, 0], bb[:, 2])
        assert np.all(np.diff(ang) > 0)
        assert ang[0] > -170 and ang[-1] < 170  # far from the atan2 wrap


def test_symmetry_about_the_sensor():
    geom = mg.REFERENCE
    u = np.linspace(0.5, 30, 20)
    before = mg.field_sensor_mt(geom, 20.0 - u)[:, 0]
    after = mg.field_sensor_mt(geom, 20.0 + u)[:, 0]
    assert after[:, 0] == pytest.approx(before[:, 0], rel=1e-12)
    assert after[:, 2] == pytest.approx(-before[:, 2], rel=1e-12)


def test_remanence_drift_scales_the_field_but_not_its_angle():
    geom = mg.REFERENCE
    p = np.linspace(0, 80, 33)
    b20 = mg.field_sensor_mt(geom, p, temp_c=20.0)
    b60 = mg.field_sensor_mt(geom, p, temp_c=60.0)
    assert b60 == pytest.approx(b20 * (1 - 0.0012 * 40), rel=1e-12, abs=1e-15)
    a20 = mg.field_angle_deg(b20[..., 0], b20[..., 2])
    a60 = mg.field_angle_deg(b60[..., 0], b60[..., 2])
    assert a60 == pytest.approx(a20, abs=1e-9)


def test_chip_tilt_shifts_the_field_angle_by_the_tilt():
    tilted = replace(mg.REFERENCE, sensors=tuple(replace(s, tilt_deg=2.0) for s in mg.REFERENCE.sensors))
    p = np.linspace(5, 35, 7)
    b0 = mg.field_sensor_mt(mg.REFERENCE, p)[:, 0]
    b1 = mg.field_sensor_mt(tilted, p)[:, 0]
    d = mg.field_angle_deg(b1[:, 0], b1[:, 2]) - mg.field_angle_deg(b0[:, 0], b0[:, 2])
    assert d == pytest.approx(np.full_like(d, -2.0), abs=1e-9)


def test_stray_field_adds_in_the_chip_frame():
    p = np.array([10.0, 50.0])
    b0 = mg.field_sensor_mt(mg.REFERENCE, p)
    b1 = mg.field_sensor_mt(mg.REFERENCE, p, stray_mt=(0.05, -0.02, 0.01))
    assert b1 - b0 == pytest.approx(np.broadcast_to([0.05, -0.02, 0.01], b0.shape), abs=1e-12)


def test_counts_follow_the_tmag5273_result_format():
    assert mg.to_counts(np.array(1.0), 40.0) == 819  # 820 LSB/mT (32768 / 40)
    assert mg.to_counts(np.array(1.0), 80.0) == 410
    assert mg.to_counts(np.array([39.0, 41.0, -41.0, -40.0]), 40.0).tolist() == [31949, 32767, -32768, -32768]
    assert mg.to_counts(np.array(-0.0006), 40.0) == 0


@settings(max_examples=60, deadline=None)
@given(st.floats(-200, 200), st.floats(-200, 200), st.sampled_from([40.0, 80.0]))
def test_counts_are_monotonic_and_bounded(a, b, rng):
    ca, cb = mg.to_counts(np.array([a, b]), rng)
    assert -32768 <= ca <= 32767 and -32768 <= cb <= 32767
    if a <= b:
        assert ca <= cb


def test_noise_scales_with_averaging_and_shows_in_counts():
    assert mg.noise_mt(1) == mg.NOISE_1X_MT
    assert mg.noise_mt(32) == pytest.approx(mg.NOISE_1X_MT / math.sqrt(32))
    with pytest.raises(ValueError):
        mg.noise_mt(3)
    rng = np.random.default_rng(5)
    p = np.full(20000, 20.0)
    c = mg.sample_counts(mg.REFERENCE, p, rng, conv_avg=4).astype(float)
    clean = mg.sample_counts(mg.REFERENCE, 20.0).astype(float)
    sd = (c - clean).std(axis=0)
    want = mg.noise_mt(4) * mg.lsb_per_mt(40.0)
    assert sd == pytest.approx(np.full_like(sd, want), rel=0.05)


def test_reference_geometry_neither_saturates_nor_runs_weak():
    p = np.linspace(-3, 83, 861)
    b = mg.field_sensor_mt(mg.REFERENCE, p, temp_c=-20.0)  # cold: strongest magnet
    assert np.abs(b).max() < 0.5 * mg.REFERENCE.sensors[0].range_mt
    hot = mg.field_sensor_mt(mg.REFERENCE, p, temp_c=60.0)
    mag = np.hypot(hot[..., 0], hot[..., 2])
    for i in range(2):
        lo, hi = mg.TABLE_SPAN_MM[i]
        inside = (p >= lo) & (p <= hi)
        assert mag[inside, i].min() > 2 * mg.MIN_FIELD_UT / 1000


def _firmware_factory() -> dict:
    tree = ast.parse((ROOT / "firmware" / "store.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "FACTORY_CALIBRATION":
            return ast.literal_eval(node.value)
    raise AssertionError("FACTORY_CALIBRATION not found in firmware/store.py")


def test_firmware_factory_table_is_the_reference_geometry():
    fw = _firmware_factory()
    want = mg.factory_calibration()
    assert {k: v for k, v in fw.items() if k != "sensors"} == {k: v for k, v in want.items() if k != "sensors"}
    for a, b in zip(fw["sensors"], want["sensors"], strict=True):
        assert np.abs(np.subtract(a["angle_mdeg"], b["angle_mdeg"])).max() <= 2
        assert np.abs(np.subtract(a["disp_um"], b["disp_um"])).max() <= 2
        assert {k: v for k, v in a.items() if k not in ("angle_mdeg", "disp_um")} == \
            {k: v for k, v in b.items() if k not in ("angle_mdeg", "disp_um")}


def test_factory_table_reproduces_the_model():
    cal = mg.factory_calibration()
    for i, s in enumerate(cal["sensors"]):
        lo, hi = mg.TABLE_SPAN_MM[i]
        p = np.linspace(lo, hi, 500)
        b = mg.field_sensor_mt(mg.REFERENCE, p)[:, i]
        ang = mg.field_angle_deg(b[:, 0], b[:, 2]) * 1000
        est = np.interp(ang, s["angle_mdeg"], s["disp_um"]) / 1000
        inside = (p > lo + 0.5) & (p < hi - 0.5)
        err = (est - p)[inside]
        # 16 points: the interpolation error is what is left, at most 0.1 mm and 0.04 mm RMS.
        assert np.abs(err).max() < 0.1
        assert np.sqrt(np.mean(err**2)) < 0.04
