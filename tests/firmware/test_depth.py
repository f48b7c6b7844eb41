# Depth estimator on MicroPython: against a float dipole model (depth_model.py), its validity flags, the
# sensor hand-off, tare, temperature compensation, calibration fitting, zero allocation and the 31-bit range.
# mp-heapsize: 512K
import math

import micropython

import depth
import depth_model as m
import rangecheck
from rangecheck import LIMIT, C as R
from rangecheck import _v
from mptest import eq, near, raises

INV = depth.INVALID
T20 = 2000  # cdeg


def _est(cal=None):
    e = depth.DepthEstimator()
    e.load(cal if cal is not None else m.calibration())
    return e


def _run(e, p, temp=T20, gap=m.GAP_MM, moment=m.MOMENT_AM2, z_gain=1.0, tilt=0.0):
    xa, za = m.counts(p, m.S_A_MM, gap, moment, z_gain, tilt)
    xb, zb = m.counts(p, m.S_B_MM, gap, moment, z_gain, tilt)
    return e.update(xa, za, xb, zb, temp)


def _float_ref(cal, p):
    # Float version of the same math on the same counts: angle, table, blend.
    s = cal["sensors"]
    vals = []
    for i, sx in ((0, m.S_A_MM), (1, m.S_B_MM)):
        x, z = m.counts(p, sx)
        a = math.degrees(math.atan2(z, -x)) * 1000.0
        ang = s[i]["angle_mdeg"]
        vals.append(m.pwl(ang, s[i]["disp_um"], a) if ang[0] <= a <= ang[-1] else None)
    da, db = vals
    if da is not None and db is not None:
        lo, hi = cal["blend_um"]
        w = min(1.0, max(0.0, ((da + db) / 2 - lo) / (hi - lo)))
        return da + w * (db - da)
    return da if da is not None else db


def test_uncalibrated_gives_no_depth():
    e = depth.DepthEstimator()
    x, z = m.counts(20.0, m.S_A_MM)
    eq(e.update(x, z, x, z, T20), INV)
    assert e.flags & depth.F_NOCAL and e.flags & depth.F_INVALID


def test_knots_reproduce_their_displacement():
    cal = m.calibration()
    e = _est(cal)
    s = cal["sensors"][0]
    for k in range(1, 20):  # knots well inside A's share of the stroke
        p = s["disp_um"][k] / 1000
        if p > 36.0:
            break
        got = _run(e, p)
        # Knot angles are rounded to 1 mdeg and the counts to 1 LSB; 15 um covers both at the steepest knot.
        near(got, s["disp_um"][k], 15, "knot %d" % k)


def test_fixed_point_matches_float_reference_over_stroke():
    cal = m.calibration()
    e = _est(cal)
    worst = 0.0
    sq = 0.0
    n = 0
    for k in range(0, 8001, 13):
        p = k / 100
        got = _run(e, p)
        ref = _float_ref(cal, p)
        assert got != INV, "p=%.2f flags=%x" % (p, e.flags)
        d = got - ref
        sq += d * d
        n += 1
        worst = max(worst, abs(d))
        # The table itself is only 24 points: against the truth allow its interpolation error.
        near(got, p * 1000, 120, "p=%.2f truth" % p)
    rms = math.sqrt(sq / n)
    print("fixed vs float: rms %.2f um, max %.2f um" % (rms, worst))
    assert worst < 12, worst
    assert rms < 4, rms


def test_weak_field_is_invalid():
    e = _est()
    # Magnet absent: only noise-level counts.
    eq(e.update(3, -2, 0, 1, T20), INV)
    assert e.flags & depth.F_A_WEAK and e.flags & depth.F_B_WEAK and e.flags & depth.F_INVALID
    # Magnet 20 times weaker than designed: sensor A sees under 1 mT (819 counts) except close in, and
    # wherever it does, it must refuse rather than trust the angle.
    weak_seen = 0
    for k in range(0, 81, 4):
        _run(e, float(k), moment=m.MOMENT_AM2 / 20)
        xa, za = m.counts(float(k), m.S_A_MM, moment=m.MOMENT_AM2 / 20)
        if math.sqrt(xa * xa + za * za) < 800:
            assert e.flags & depth.F_A_WEAK, k
            weak_seen += 1
    assert weak_seen > 10
    eq(e.update(0, 0, 0, 0, T20), INV)


def test_saturated_axis_is_invalid():
    e = _est()
    xa, za = m.counts(20.0, m.S_A_MM)
    for bad in ((32767, za), (-32768, za), (xa, 32767), (xa, -32768), (32000, za)):
        eq(e.update(bad[0], bad[1], 0, 0, T20), INV)
        assert e.flags & depth.F_A_SAT, bad
    # A magnet 30 times stronger saturates sensor A when over it: invalid, never a clipped angle's depth.
    eq(_run(e, 20.0, moment=m.MOMENT_AM2 * 30), INV)
    assert e.flags & depth.F_A_SAT


def test_angle_outside_table_is_invalid():
    cal = m.calibration()
    cal["sensors"] = [m.sensor(m.S_A_MM, 0.0, 40.0)]
    del cal["blend_um"]
    e = _est(cal)
    assert _run(e, 30.0) != INV
    eq(_run(e, 44.0), INV)  # past the table's deep end, field still strong
    assert e.flags & depth.F_A_RANGE and not e.flags & depth.F_A_WEAK
    eq(_run(e, -2.0), INV)
    assert e.flags & depth.F_A_RANGE


def test_sensors_disagreeing_give_no_depth():
    e = _est()
    xa, za = m.counts(40.0, m.S_A_MM)
    xb, zb = m.counts(44.0, m.S_B_MM)  # B sees the magnet 4 mm further than A does
    eq(e.update(xa, za, xb, zb, T20), INV)
    assert e.flags & depth.F_DISAGREE


def test_handoff_is_continuous():
    e = _est()
    prev = None
    prev_w = -1
    worst = 0
    for k in range(3000, 5001, 2):  # 30 .. 50 mm in 20 um steps
        p = k / 100
        d = _run(e, p)
        assert d != INV, p
        assert e.weight_q14 >= prev_w, "weight must not fall as the needle advances (p=%.2f)" % p
        prev_w = e.weight_q14
        if prev is not None:
            worst = max(worst, abs((d - prev) - 20))
        prev = d
    eq(prev_w, 16384)
    print("largest step deviation across the seam: %d um" % worst)
    assert worst <= 25, worst


def test_handoff_uses_the_remaining_sensor():
    e = _est()
    xa, za = m.counts(40.0, m.S_A_MM)
    xb, zb = m.counts(40.0, m.S_B_MM)
    both = e.update(xa, za, xb, zb, T20)
    only_a = e.update(xa, za, 0, 0, T20)
    assert e.flags & depth.F_B_WEAK and not e.flags & depth.F_INVALID
    only_b = e.update(32767, 32767, xb, zb, T20)
    assert e.flags & depth.F_A_SAT and not e.flags & depth.F_INVALID
    for v in (only_a, only_b):
        near(v, both, 150)
        near(v, 40000, 150)


def test_tare():
    e = _est()
    _run(e, 5.0)
    t = e.tare_here()
    near(t, 5000, 120)
    eq(_run(e, 5.0), 0)
    d = _run(e, 35.0)
    near(d, 30000, 200)
    e.update(0, 0, 0, 0, T20)
    eq(e.tare_here(), INV)  # no valid displacement: tare unchanged
    eq(e.tare_um, t)
    raises(ValueError, e.set_tare, 200000)
    e.set_tare(0)
    near(_run(e, 35.0), 35000, 120)


def test_remanence_drift_leaves_depth_unchanged():
    # NdFeB loses ~0.12 %/K of its remanence: +-40 K changes the field by ~5 %, the angle not at all.
    e = _est()
    worst = 0
    for k in range(0, 81, 2):
        p = float(k)
        ref = _run(e, p)
        for dt in (-40, 40):
            d = _run(e, p, temp=T20 + dt * 100, moment=m.MOMENT_AM2 * (1 - 0.0012 * dt))
            worst = max(worst, abs(d - ref))
    print("depth change over +-40 K remanence drift: %d um" % worst)
    assert worst <= 10, worst


def test_z_gain_drift_is_compensated():
    # Z channel reads 400 ppm/K higher than X: at +30 K that is 1.2 %, a real angle error.
    tc = 400
    dt = 30
    zg = 1 + tc * 1e-6 * dt
    plain = _est(m.calibration())
    comp = _est(m.calibration(z_tc=tc))
    worst_plain = 0
    worst_comp = 0
    for k in range(0, 81, 2):
        p = float(k)
        ref = _run(plain, p)
        worst_plain = max(worst_plain, abs(_run(plain, p, temp=T20 + dt * 100, z_gain=zg) - ref))
        worst_comp = max(worst_comp, abs(_run(comp, p, temp=T20 + dt * 100, z_gain=zg) - ref))
    print("Z gain drift +1.2 %%: uncompensated %d um, compensated %d um" % (worst_plain, worst_comp))
    assert worst_plain > 60, worst_plain
    assert worst_comp <= 10, worst_comp


def test_clip_expansion_is_compensated():
    tc = 100  # ppm/K
    e = _est(m.calibration(disp_tc=tc))
    for p in (5.0, 40.0, 78.0):
        cold = _run(e, p)
        hot = _run(e, p, temp=T20 + 2500)
        near(hot, cold * (1 + tc * 1e-6 * 25), 3, "p=%.0f" % p)
    # Temperatures past the chip's range are clamped, not extrapolated.
    eq(_run(e, 78.0, temp=100000), _run(e, 78.0, temp=depth.T_MAX_CDEG))


def test_load_rejects_bad_calibration_and_keeps_old():
    e = _est()
    before = _run(e, 25.0)
    bad = []
    c = m.calibration()
    c["sensors"][0]["angle_mdeg"][5] = c["sensors"][0]["angle_mdeg"][4]
    bad.append(c)
    c = m.calibration()
    c["sensors"][0]["disp_um"][6] = c["sensors"][0]["disp_um"][4]
    bad.append(c)
    bad.append(m.calibration(n=7))
    c = m.calibration()
    c["blend_um"] = [30000, 36000]  # starts before sensor B's table
    bad.append(c)
    c = m.calibration()
    c["sensors"][1]["disp_um"][-1] = 200000
    bad.append(c)
    c = m.calibration()
    c["disp_tc_ppm"] = 501
    bad.append(c)
    c = m.calibration()
    c["sensors"] = c["sensors"][::-1]
    bad.append(c)
    for c in bad:
        raises(depth.CalibrationError, e.load, c)
        eq(_run(e, 25.0), before)


def test_fit_calibration_from_eight_jig_points():
    # As built: sensor A 0.6 mm deeper and 0.7 mm further away, chip tilted 1.5 deg; B 0.4 mm shallower.
    base = m.calibration()
    shift = {m.S_A_MM: 0.6, m.S_B_MM: -0.4}
    gap = 12.7

    def counts(p, s):
        return m.counts(p, s + shift[s], gap, tilt_deg=1.5)

    jig = [k * 80.0 / 7 for k in range(8)]
    probe = depth.DepthEstimator()
    probe.load(base)
    angles = []
    for p in jig:
        xa, za = counts(p, m.S_A_MM)
        xb, zb = counts(p, m.S_B_MM)
        probe.update(xa, za, xb, zb, T20)
        angles.append([None if a == INV else a for a in (probe.angle_a, probe.angle_b)])
    cal, rms = depth.fit_calibration(base, [int(p * 1000) for p in jig], angles)
    print("fit rms per sensor (um):", rms)
    fitted = _est(cal)
    nominal = _est(base)
    worst_fit = 0
    worst_nom = 0
    for k in range(0, 81):
        p = float(k)
        xa, za = counts(p, m.S_A_MM)
        xb, zb = counts(p, m.S_B_MM)
        df = fitted.update(xa, za, xb, zb, T20)
        dn = nominal.update(xa, za, xb, zb, T20)
        assert df != INV, p
        worst_fit = max(worst_fit, abs(df - p * 1000))
        if dn != INV:
            worst_nom = max(worst_nom, abs(dn - p * 1000))
    print("worst error: nominal table %d um, fitted %d um" % (worst_nom, worst_fit))
    assert worst_nom > 500
    assert worst_fit < 150
    # Too few points for a sensor: refused.
    raises(depth.CalibrationError, depth.fit_calibration, base, [0, 5000, 10000], [[-90000, None]] * 3)


def test_update_does_not_allocate():
    e = _est()
    inputs = []
    for k in range(0, 81, 3):
        xa, za = m.counts(float(k), m.S_A_MM)
        xb, zb = m.counts(float(k), m.S_B_MM)
        inputs.append((xa, za, xb, zb))
    inputs.append((0, 0, 0, 0))
    inputs.append((32767, 5, -32768, 5))
    xa, za = m.counts(40.0, m.S_A_MM)
    xb, zb = m.counts(45.0, m.S_B_MM)
    inputs.append((xa, za, xb, zb))  # disagreement
    out = [0] * len(inputs)
    e.update(1, 1, 1, 1, T20)
    micropython.heap_lock()
    try:
        for rep in range(3):
            for i in range(len(inputs)):
                v = inputs[i]
                out[i] = e.update(v[0], v[1], v[2], v[3], T20 + rep * 1000)
            e.tare_here()
    finally:
        micropython.heap_unlock()
    assert out[-1] == INV and out[-2] == INV and out[-3] == INV
    assert out[5] != INV


# ---- 31-bit range: every intermediate of update() with input-derived values is checked ----

# Checked ints (tests/firmware/rangecheck.py): every operation on them must stay inside +-2^30.


def _checked_atan2(y, x):
    y = _v(y)
    x = _v(x)
    assert abs(y) <= 1 << 29 and abs(x) <= 1 << 29, "atan2_mdeg input outside its documented range"
    return R(_real_atan2[0](y, x), "atan2_mdeg")


_real_atan2 = [depth.atan2_mdeg]


def _extreme_cals():
    # Tables at the limits check_calibration allows, with the largest temperature coefficients.
    wide = {"angle_mdeg": [-179999 + k * 51428 for k in range(8)],
            "disp_um": [-131071 + k * 37448 for k in range(8)],
            "min_field_ut": 100, "range_mt": 80, "z_gain_tc_ppm": depth.MAX_Z_TC_PPM}
    steep = {"angle_mdeg": [-3 + k for k in range(8)],
             "disp_um": [-131071 + k * 8192 for k in range(8)],
             "min_field_ut": 20000, "range_mt": 40, "z_gain_tc_ppm": -depth.MAX_Z_TC_PPM}
    falling = {"angle_mdeg": [-179999 + k * 51428 for k in range(8)],
               "disp_um": [-131071 + (7 - k) * 37448 for k in range(8)],
               "min_field_ut": 100, "range_mt": 40, "z_gain_tc_ppm": -depth.MAX_Z_TC_PPM}
    out = []
    top = depth.MAX_DISP_TC_PPM
    for a, b, tc, ct in ((wide, steep, top, depth.T_MIN_CDEG), (steep, wide, -top, depth.T_MAX_CDEG),
                         (falling, wide, top, depth.T_MAX_CDEG)):
        lo = max(min(a["disp_um"][0], a["disp_um"][-1]), min(b["disp_um"][0], b["disp_um"][-1]))
        out.append({"sensors": [a, b], "blend_um": [lo, lo + depth.MAX_BLEND_WIDTH_UM],
                    "disagree_um": depth.MAX_DISAGREE_UM, "cal_temp_cdeg": ct, "disp_tc_ppm": tc})
    out.append(m.calibration(z_tc=2000, disp_tc=-500, cal_temp=-4000))
    return out


def test_range_every_intermediate_within_31_bits():
    rangecheck.reset_peak()
    vals = (-32768, -32767, -32000, -31999, -20000, -1000, -1, 0, 1, 1000, 20000, 31999, 32000, 32767)
    temps = (-100000, -4000, 2000, 12500, 100000)
    depth.atan2_mdeg = _checked_atan2
    n = 0
    try:
        for cal in _extreme_cals():
            e = depth.DepthEstimator()
            e.load(cal)
            for tare in (-depth.MAX_ABS_DISP_UM, depth.MAX_ABS_DISP_UM):
                e.set_tare(tare)
                for x in vals:
                    for z in vals:
                        for t in temps:
                            # Both sensors see the same extremes; then B mirrored, to reach the blend path.
                            e.update(R(x), R(z), R(x), R(z), R(t))
                            e.update(R(x), R(z), R(-x), R(z), R(t))
                            n += 2
            # Every angle a table can hold, at both temperature extremes.
            for a in range(-179999, 180000, 997):
                c = math.cos(math.radians(a / 1000))
                s = math.sin(math.radians(a / 1000))
                x = int(-31000 * c)
                z = int(31000 * s)
                for t in (-4000, 12500):
                    e.update(R(x), R(z), R(x), R(z), R(t))
                    n += 1
    finally:
        depth.atan2_mdeg = _real_atan2[0]
    peak = rangecheck.PEAK[0]
    print("%d updates checked; largest intermediate %d (2^%.2f)" % (n, peak, math.log(peak) / math.log(2)))
    assert peak < LIMIT
