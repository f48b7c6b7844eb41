# Fixed-point helpers, checked against MicroPython's float math on the unix port.
import array
import math

import fixmath
from mptest import eq, near, lcg


def _ref_atan2_mdeg(y, x):
    return math.degrees(math.atan2(y, x)) * 1000.0


def _angle_err(got, want):
    d = got - want
    while d > 180000.0:
        d -= 360000.0
    while d < -180000.0:
        d += 360000.0
    return abs(d)


def test_atan2_axes_exact():
    eq(fixmath.atan2_mdeg(0, 0), 0)
    eq(fixmath.atan2_mdeg(0, 5), 0)
    eq(fixmath.atan2_mdeg(0, -5), 180000)
    eq(fixmath.atan2_mdeg(7, 0), 90000)
    eq(fixmath.atan2_mdeg(-7, 0), -90000)
    eq(fixmath.atan2_mdeg(1 << 29, 1 << 29), 45000)
    eq(fixmath.atan2_mdeg(-(1 << 29), -(1 << 29)), -135000)


def test_atan2_error_bound_random():
    bound = fixmath.ATAN2_MAX_ERR_MDEG
    rnd = lcg(12345)
    worst = 0.0
    lim = 1 << 29
    for k in range(6000):
        # Mix full-range, mid-range and tiny magnitudes: normalisation shifts both ways.
        span = (lim, 1 << 20, 1000, 3)[k % 4]
        y = rnd(-span, span)
        x = rnd(-span, span)
        got = fixmath.atan2_mdeg(y, x)
        assert -180000 < got <= 180000, (y, x, got)
        e = _angle_err(got, _ref_atan2_mdeg(y, x))
        if e > worst:
            worst = e
        assert e <= bound, f"atan2_mdeg({y}, {x}) = {got}, want {_ref_atan2_mdeg(y, x):.3f}"
    print(f"atan2 worst error over random inputs: {worst:.3f} mdeg")


def test_atan2_sweep_and_extremes():
    bound = fixmath.ATAN2_MAX_ERR_MDEG
    lim = 1 << 29
    for r in (lim, 32767, 1):
        for k in range(0, 3600, 7):
            a = math.radians(k * 0.1 + 0.05)
            y = int(r * math.sin(a))
            x = int(r * math.cos(a))
            near(fixmath.atan2_mdeg(y, x), _ref_atan2_mdeg(y, x), bound, f"r={r} k={k}")
    for y, x in ((lim, -lim), (-lim, lim), (lim, 1), (-lim, 1), (1, -lim), (-1, -lim), (lim, lim - 1)):
        got = fixmath.atan2_mdeg(y, x)
        assert -180000 < got <= 180000
        assert _angle_err(got, _ref_atan2_mdeg(y, x)) <= bound, (y, x, got)


def test_atan2_no_alloc():
    import micropython

    f = fixmath.atan2_mdeg
    micropython.heap_lock()
    try:
        acc = 0
        for i in range(2000):
            acc += f(i - 1000, 300 - i)
    finally:
        micropython.heap_unlock()
    assert acc != 0


def test_isqrt_exact():
    rnd = lcg(7)
    cases = [0, 1, 2, 3, 4, 15, 16, 17, (1 << 30) - 1, (1 << 28), (1 << 28) - 1, 32767 * 32767]
    cases += [rnd(0, (1 << 30) - 1) for _ in range(3000)]
    for n in cases:
        r = fixmath.isqrt(n)
        assert r * r <= n < (r + 1) * (r + 1), (n, r)
    eq(fixmath.isqrt(-5), 0)


def test_saturating_helpers():
    eq(fixmath.sat(5, 3), 3)
    eq(fixmath.sat(-5, 3), -3)
    eq(fixmath.sat(2, 3), 2)
    eq(fixmath.clamp(-9, -4, 7), -4)
    eq(fixmath.clamp(9, -4, 7), 7)
    eq(fixmath.clamp(1, -4, 7), 1)
    big = fixmath.SMALL_MAX
    eq(big, (1 << 30) - 1)
    eq(fixmath.add_sat30(big, big), big)
    eq(fixmath.add_sat30(-big, -big), -big)
    eq(fixmath.add_sat30(big, -1), big - 1)


def test_mul_q28_against_exact_product():
    rnd = lcg(99)
    lim = 1 << 29
    one = fixmath.ONE_Q28
    for _k in range(4000):
        a = rnd(-lim, lim)
        # Keep |a*b| <= 2^57, the documented domain.
        blim = (1 << 57) // (abs(a) + 1)
        if blim > lim:
            blim = lim
        b = rnd(-blim, blim)
        got = fixmath.mul_q28(a, b)
        exact = a * b / one
        # Floors: within [exact - 2, exact + 0].
        assert exact - 2.0 <= got <= exact + 1e-9, (a, b, got, exact)
    eq(fixmath.mul_q28(one, one), one)
    eq(fixmath.mul_q28(-one, one), -one)


def test_sincos_q28():
    one = fixmath.ONE_Q28
    bound = fixmath.SINCOS_MAX_ERR_Q28
    out = array.array("i", [0, 0])
    worst = 0.0
    for k in range(-400, 401):
        mdeg = k * 997 + 13
        fixmath.sincos_q28(mdeg, out)
        a = math.radians(mdeg / 1000.0)
        ec = abs(out[0] - math.cos(a) * one)
        es = abs(out[1] - math.sin(a) * one)
        worst = max(worst, ec, es)
        assert ec <= bound and es <= bound, (mdeg, out[0], out[1])
    for mdeg in (0, 90000, -90000, 180000, -180000, 45000, 359999, 1 << 29, -(1 << 29)):
        fixmath.sincos_q28(mdeg, out)
        a = math.radians(mdeg / 1000.0)
        near(out[0], math.cos(a) * one, bound, f"cos {mdeg}")
        near(out[1], math.sin(a) * one, bound, f"sin {mdeg}")
    print(f"sincos worst error: {worst:.1f} Q28 units")


def test_asin_bounds_and_steep_angles():
    one = fixmath.ONE_Q28
    bound = fixmath.ASIN_MAX_ERR_MDEG
    worst = 0.0
    rnd = lcg(3)
    samples = [rnd(-one, one) for _ in range(3000)]
    # Near +-1 asin is steepest: probe the last few hundred ppm densely.
    samples += [one - (1 << k) for k in range(0, 24)] + [-one + (1 << k) for k in range(0, 24)]
    for s in samples:
        got = fixmath.asin_q28_mdeg(s)
        want = math.degrees(math.asin(s / one)) * 1000.0
        e = abs(got - want)
        worst = max(worst, e)
        assert e <= bound, (s, got, want)
    eq(fixmath.asin_q28_mdeg(one), 90000)
    eq(fixmath.asin_q28_mdeg(-one - 5), -90000)
    eq(fixmath.asin_q28_mdeg(0), 0)
    near(fixmath.asin_q14_mdeg(8192), 30000, bound)
    eq(fixmath.asin_q14_mdeg(1 << 20), 90000)
    print(f"asin worst error: {worst:.2f} mdeg")


def _qf(q):
    s = 1.0 / fixmath.ONE_Q28
    return [v * s for v in q]


def _qmul_f(a, b):
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return [
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ]


def _unit_quat(rnd):
    v = [rnd(-1000, 1000) for _ in range(4)]
    n = math.sqrt(sum(c * c for c in v)) or 1.0
    return array.array("i", [int(c / n * fixmath.ONE_Q28) for c in v])


def test_quat_mul_matches_float():
    rnd = lcg(11)
    out = array.array("i", [0] * 4)
    for _ in range(500):
        a = _unit_quat(rnd)
        b = _unit_quat(rnd)
        want = _qmul_f(_qf(a), _qf(b))
        fixmath.quat_mul_q28(out, a, b)
        for i in range(4):
            near(out[i], want[i] * fixmath.ONE_Q28, 8, "component")
    # Aliasing: out is a.
    a = _unit_quat(rnd)
    b = _unit_quat(rnd)
    want = _qmul_f(_qf(a), _qf(b))
    fixmath.quat_mul_q28(a, a, b)
    for i in range(4):
        near(a[i], want[i] * fixmath.ONE_Q28, 8)


def test_quat_normalize():
    one = fixmath.ONE_Q28
    rnd = lcg(5)
    for k in range(400):
        span = (1 << 28, 1 << 20, 3000, 2)[k % 4]
        q = array.array("i", [rnd(-span, span) for _ in range(4)])
        if k == 0:
            q = array.array("i", [-(1 << 29) + 1, (1 << 29) - 1, 0, 1])
        ref = [float(c) for c in q]
        n = math.sqrt(sum(c * c for c in ref))
        ok = fixmath.quat_normalize_q28(q)
        if n == 0:
            eq(ok, 0)
            continue
        eq(ok, 1)
        # Direction and scale both kept to a few Q28 units, whatever the input's magnitude.
        for i in range(4):
            near(q[i], ref[i] / n * one, 8, f"q{i} of {ref}")
        n2 = sum((c / one) ** 2 for c in q)
        near(n2, 1.0, 2e-7, "norm^2")
    eq(fixmath.quat_normalize_q28(array.array("i", [0, 0, 0, 0])), 0)


def test_quat_renorm_step_converges():
    one = fixmath.ONE_Q28
    q = array.array("i", [int(one * 1.0001), 0, int(one * 0.0002), -int(one * 0.0001)])
    for _ in range(3):
        fixmath.quat_renorm_step_q28(q)
    near(sum((c / one) ** 2 for c in q), 1.0, 1e-7)


def test_quat_rotate_matches_float():
    rnd = lcg(21)
    one = fixmath.ONE_Q28
    out = array.array("i", [0] * 3)
    for _ in range(300):
        q = _unit_quat(rnd)
        v = array.array("i", [rnd(-(1 << 28), 1 << 28) for _ in range(3)])
        w, x, y, z = _qf(q)
        # Rotate via q (0,v) q*.
        t = _qmul_f(_qmul_f([w, x, y, z], [0.0, v[0], v[1], v[2]]), [w, -x, -y, -z])
        fixmath.quat_rotate_q28(out, q, v)
        for i in range(3):
            near(out[i], t[i + 1], 16, "rotated component")
    # 90 deg about z takes x to y.
    h = int(one * math.sqrt(0.5))
    q = array.array("i", [h, 0, 0, h])
    fixmath.quat_rotate_q28(out, q, array.array("i", [one, 0, 0]))
    near(out[0], 0, 8)
    near(out[1], one, 8)
    near(out[2], 0, 8)


# ---- 31-bit range -----------------------------------------------------------------------------------------
def _extremes(f):
    """Every helper at the edges of its documented domain, on rangecheck's checked copy."""
    from rangecheck import C

    lim = 1 << 29
    one = 1 << 28
    edge = (lim, -lim, lim - 1, -lim + 1, 1, -1, 0, 12345, -98765)
    for y in edge:
        for x in edge:
            f.atan2_mdeg(C(y), C(x))
    for n in (0, 1, 2, 3, (1 << 30) - 1, 1 << 28, (1 << 28) - 1, 32767 * 32767):
        f.isqrt(C(n))
    for a in (lim, -lim, one, -one):
        for b in (lim, -lim, one, -one, (1 << 14) - 1, 0x3FFF3FFF >> 2):
            if abs(a * b) <= 1 << 57:
                f.mul_q28(C(a), C(b))
    out = array.array("i", [0, 0])
    for ang in (lim, -lim, 0, 90000, -90000, 180000, -180000, 45000, 359999):
        f.sincos_q28(C(ang), out)
    for s in (one, -one, one - 1, -one + 1, 0, 1, -1, one + 5, lim, -lim):
        f.asin_q28_mdeg(C(s))
    for s in (1 << 14, -(1 << 14), 1 << 20, -(1 << 20), 0):
        f.asin_q14_mdeg(C(s))
    for q in ((lim - 1, lim - 1, lim - 1, lim - 1), (-lim + 1, -lim + 1, -lim + 1, -lim + 1), (1, 0, 0, 0),
              (0, 0, 0, -1), (one, one, one, one), (3, -2, 1, 7)):
        f.quat_normalize_q28(array.array("i", q))
    q = array.array("i", [one, 0, 0, 0])
    h = one >> 1
    for qa in ((one, 0, 0, 0), (h, h, h, h), (-h, h, -h, h)):
        for qb in ((0, 0, 0, one), (h, -h, h, -h), (-one, 0, 0, 0)):
            f.quat_mul_q28(q, array.array("i", qa), array.array("i", qb))
            v = array.array("i", [lim, -lim, lim])
            f.quat_rotate_q28(array.array("i", [0, 0, 0]), array.array("i", qa), v)
    for qa in ((one + 30000, 0, 0, 0), (one - 30000, 0, 0, 0), (h, h, h, -h)):
        f.quat_renorm_step_q28(array.array("i", qa))
    for x in (lim, -lim, 0):
        f.sat(C(x), C(1 << 20))
        f.clamp(C(x), C(-5), C(5))
        f.add_sat30(C((1 << 30) - 1), C(-1 if x < 0 else 0))


def test_range_every_helper_within_31_bits():
    import rangecheck

    rangecheck.reset_peak()
    _extremes(rangecheck.load(["fixmath"])["fixmath"])
    print("largest |intermediate|: %d at %s" % (rangecheck.PEAK[0], rangecheck.PEAK[1]))


def test_range_check_catches_widened_cordic_input():
    import rangecheck

    for old, new in (("_NORM_HI = const(0x8000000)", "_NORM_HI = const(0x20000000)"),
                     ("ah = a >> 14\n    al = a & 0x3FFF", "ah = a >> 13\n    al = a & 0x1FFF")):
        f = rangecheck.load(["fixmath"], patch={"fixmath": [(old, new)]})["fixmath"]
        try:
            _extremes(f)
        except rangecheck.RangeError as e:
            print("caught: " + str(e))
            continue
        raise AssertionError("overflow not caught after " + new)
