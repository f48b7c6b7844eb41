# Fixed-point helpers for the sampling loop. Integers only; every intermediate stays inside the 31-bit signed
# small-int range |v| < 2^30 of a 32-bit MicroPython board. Units and formats are named per function; range
# analysis: docs/fixed-point.md.
#
#   mdeg      angle in millidegrees (int)
#   Q8 mdeg   angle in 1/256 millidegree, used inside CORDIC so table rounding does not accumulate
#   Q14       value * 2^14 (1.0 = 16384): ratios and coarse unit vectors
#   Q28       value * 2^28 (1.0 = 268435456): quaternion components, unit vectors, sin/cos; products of
#             two Q28 values need the split multiply mul_q28 because a plain product reaches 2^56
#
# Array arguments are array.array("i") buffers (32-bit signed); quaternions are (w, x, y, z).
#
# Viper's ptr32 loads zero-extend on a 64-bit port (the unix port the tests run on) but are plain signed words
# on the 32-bit boards. Every signed load is therefore followed by
#     if (v >> 31) > 0: v = v - (w16 << 16)
# with w16 = _W16 a viper local: the branch is taken only on a 64-bit port, where (w16 << 16) = 2^32 is a
# machine word; on a 32-bit board (v >> 31) is 0 or -1 and the branch is dead. The shift must happen at run
# time: written as (_W16 << 16) the compiler folds it into the constant 2^32, which is no small int on the
# boards, and viper refuses to compile the function there (mpy-cross -march=xtensawin / armv6m).
import array
import micropython
from micropython import const

# CORDIC works on vectors normalised so that max(|x|, |y|) lies in [2^26, 2^27): the rotation gain (1.6468)
# times sqrt(2) then keeps every intermediate below 2^28.3, and 2^26 leaves angle resolution far below 1 mdeg.
_NORM_LO = const(0x4000000)  # 2^26
_NORM_HI = const(0x8000000)  # 2^27
_CORDIC_N = const(18)  # atan2: residual angle after 18 steps is atan(2^-17) = 0.44 mdeg
_SINCOS_N = const(24)  # sincos: Q8 mdeg table resolution (6.8e-8 rad) is reached after 24 steps
_DEG180_Q8 = const(46080000)  # 180000 mdeg in Q8 mdeg

# atan(2^-i) in Q8 mdeg, i = 0 .. _SINCOS_N-1: round(degrees(atan(2**-i)) * 1000 * 256).
_ATAN_Q8 = array.array("i", (
    11520000, 6800653, 3593278, 1824004, 915542, 458217, 229164, 114589, 57295, 28648,
    14324, 7162, 3581, 1790, 895, 448, 224, 112, 56, 28, 14, 7, 3, 2,
))
# 1 / CORDIC gain (prod sqrt(1 + 2^-2i), i < 24) in Q28: the start vector of rotation mode.
_CORDIC_INV_GAIN_Q28 = const(163008219)
_W16 = const(0x10000)
ONE_Q28 = const(0x10000000)
ONE_Q14 = const(0x4000)
SMALL_MAX = const(0x3FFFFFFF)  # largest magnitude every loop intermediate must stay within (2^30 - 1)

ATAN2_MAX_ERR_MDEG = const(2)  # bound stated in atan2_mdeg's docstring, asserted by the tests
ASIN_MAX_ERR_MDEG = const(5)  # bound stated in asin_q28_mdeg's docstring
SINCOS_MAX_ERR_Q28 = const(256)  # bound stated in sincos_q28's docstring (9.5e-7)


@micropython.viper
def atan2_mdeg(y: int, x: int) -> int:
    """Angle of the vector (x, y) in millidegrees, in (-180000, 180000]; atan2_mdeg(0, 0) == 0.

    Inputs: any ints with |x|, |y| <= 2^29 (same units for both). Error against the exact angle: at most
    2 mdeg (ATAN2_MAX_ERR_MDEG) over that whole input range; axis-aligned inputs are exact.
    Method: vectoring-mode CORDIC, 18 iterations, on the vector rotated into the right half-plane and
    normalised to [2^26, 2^27), angle accumulated in Q8 mdeg.
    """
    if y == 0:
        if x < 0:
            return 180000
        return 0
    if x == 0:
        if y > 0:
            return 90000
        return -90000
    z = 0
    if x < 0:
        # Rotate by 180 deg so CORDIC (which converges for |angle| < 99 deg) starts in the right half-plane.
        x = 0 - x
        y = 0 - y
        if y < 0:
            z = _DEG180_Q8
        else:
            z = 0 - _DEG180_Q8
    m = x
    if y < 0:
        m = m | (0 - y)
    else:
        m = m | y
    # The OR of |x| and |y| has the same top bit as their maximum, which is all the normalisation needs.
    while m >= _NORM_HI:
        m = m >> 1
        x = x >> 1
        y = y >> 1
    while m < _NORM_LO:
        m = m << 1
        x = x << 1
        y = y << 1
    tab = ptr32(_ATAN_Q8)
    i = 0
    while i < _CORDIC_N:
        dx = y >> i
        dy = x >> i
        if y > 0:
            x = x + dx
            y = y - dy
            z = z + tab[i]
        else:
            x = x - dx
            y = y + dy
            z = z - tab[i]
        i += 1
    z = (z + 128) >> 8
    if z > 180000:
        z = z - 360000
    elif z <= -180000:
        z = z + 360000
    return z


@micropython.viper
def sat(x: int, lim: int) -> int:
    """x clamped to [-lim, lim] (lim >= 0)."""
    if x > lim:
        return lim
    if x < 0 - lim:
        return 0 - lim
    return x


@micropython.viper
def clamp(x: int, lo: int, hi: int) -> int:
    """x clamped to [lo, hi] (lo <= hi)."""
    if x > hi:
        return hi
    if x < lo:
        return lo
    return x


@micropython.viper
def add_sat30(a: int, b: int) -> int:
    """a + b saturated to +-(2^30 - 1); inputs within +-(2^30 - 1), so the sum is < 2^31 even on a
    32-bit machine word."""
    s = a + b
    if s > SMALL_MAX:
        return SMALL_MAX
    if s < 0 - SMALL_MAX:
        return 0 - SMALL_MAX
    return s


@micropython.viper
def isqrt(n: int) -> int:
    """floor(sqrt(n)) for 0 <= n < 2^30, exact; 0 for n <= 0. Bit-by-bit: no division, 15 steps."""
    if n <= 0:
        return 0
    r = 0
    bit = 0x10000000  # 4^14, the largest power of four below 2^30
    while bit > n:
        bit = bit >> 2
    while bit != 0:
        if n >= r + bit:
            n = n - r - bit
            r = (r >> 1) + bit
        else:
            r = r >> 1
        bit = bit >> 2
    return r


@micropython.viper
def mul_q28(a: int, b: int) -> int:
    """a * b / 2^28, floored to within 1 unit, for |a|, |b| <= 2^29 and |a * b| <= 2^57.

    Split multiply: a = ah * 2^14 + al with 0 <= al < 2^14 (same for b). ah * bh is the result's integer part
    (|ah * bh| <= 2^29 by the product bound); the two cross terms are each below 2^29 in magnitude so their sum
    stays below 2^30; al * bl / 2^28 < 1 is dropped.
    """
    ah = a >> 14
    al = a & 0x3FFF
    bh = b >> 14
    bl = b & 0x3FFF
    return ah * bh + ((ah * bl + al * bh) >> 14)


@micropython.viper
def sincos_q28(angle_mdeg: int, out):
    """out[0] = cos, out[1] = sin of angle_mdeg (any int with |angle| <= 2^29), both Q28, error <= 256 units
    (SINCOS_MAX_ERR_Q28, 9.5e-7). CORDIC rotation mode, 24 steps, on the angle reduced to [-90, 90] deg."""
    o = ptr32(out)
    a = angle_mdeg % 360000  # floor modulo: [0, 360000)
    if a > 180000:
        a = a - 360000
    flip = 0
    if a > 90000:
        a = a - 180000
        flip = 1
    elif a < -90000:
        a = a + 180000
        flip = 1
    z = a << 8  # Q8 mdeg, |z| <= 2^24.5
    x = _CORDIC_INV_GAIN_Q28
    y = 0
    tab = ptr32(_ATAN_Q8)
    i = 0
    while i < _SINCOS_N:
        dx = y >> i
        dy = x >> i
        if z >= 0:
            x = x - dx
            y = y + dy
            z = z - tab[i]
        else:
            x = x + dx
            y = y - dy
            z = z + tab[i]
        i += 1
    if flip:
        x = 0 - x
        y = 0 - y
    o[0] = x
    o[1] = y


@micropython.viper
def asin_q28_mdeg(s: int) -> int:
    """asin(s / 2^28) in mdeg, in [-90000, 90000]; s is a Q28 ratio, clamped to [-1, 1].

    Error <= 5 mdeg (ASIN_MAX_ERR_MDEG): the angle is atan2(s, c) with c = sqrt((1 - s)(1 + s)), and c is taken
    from a square root normalised to 15 significant bits, so steep angles keep their precision.
    """
    if s >= ONE_Q28:
        return 90000
    if s <= 0 - ONE_Q28:
        return -90000
    c2 = int(mul_q28(ONE_Q28 - s, ONE_Q28 + s))  # Q28, (1 - s)(1 + s); the factors sum to 2^29
    if c2 <= 0:
        if s > 0:
            return 90000
        return -90000
    # Bring c2 into [2^28, 2^30) by an even shift 2k so isqrt yields 15 significant bits, then undo k.
    k = 0
    while c2 < 0x10000000:
        c2 = c2 << 2
        k += 1
    c = int(isqrt(c2))  # sqrt(c2_orig * 4^k), in [2^14, 2^15)
    if k <= 14:
        c = c << (14 - k)  # Q28
    else:
        c = c >> (k - 14)
    return int(atan2_mdeg(s, c))


@micropython.viper
def asin_q14_mdeg(s: int) -> int:
    """asin(s / 2^14) in mdeg for a Q14 ratio (clamped to [-1, 1]); same method and bound as asin_q28_mdeg."""
    if s > ONE_Q14:
        s = ONE_Q14
    elif s < 0 - ONE_Q14:
        s = 0 - ONE_Q14
    return int(asin_q28_mdeg(s << 14))


@micropython.viper
def quat_mul_q28(out, a, b):
    """out = a (x) b, Hamilton product of Q28 quaternions (w, x, y, z) of norm <= 1 + 2^-10.

    Every product goes through mul_q28 (each term <= 2^28 in magnitude); each output is a dot product of a
    unit row with a unit vector, so partial sums stay below |a| |b| * 2^28 (Cauchy-Schwarz). out may alias a
    or b: all inputs are read before the first store.
    """
    w16 = _W16  # a local, so 2^32 below is computed at run time, never a constant
    pa = ptr32(a)
    pb = ptr32(b)
    po = ptr32(out)
    aw = pa[0]
    if (aw >> 31) > 0:
        aw = aw - (w16 << 16)
    ax = pa[1]
    if (ax >> 31) > 0:
        ax = ax - (w16 << 16)
    ay = pa[2]
    if (ay >> 31) > 0:
        ay = ay - (w16 << 16)
    az = pa[3]
    if (az >> 31) > 0:
        az = az - (w16 << 16)
    bw = pb[0]
    if (bw >> 31) > 0:
        bw = bw - (w16 << 16)
    bx = pb[1]
    if (bx >> 31) > 0:
        bx = bx - (w16 << 16)
    by = pb[2]
    if (by >> 31) > 0:
        by = by - (w16 << 16)
    bz = pb[3]
    if (bz >> 31) > 0:
        bz = bz - (w16 << 16)
    w = int(mul_q28(aw, bw)) - int(mul_q28(ax, bx)) - int(mul_q28(ay, by)) - int(mul_q28(az, bz))
    x = int(mul_q28(aw, bx)) + int(mul_q28(ax, bw)) + int(mul_q28(ay, bz)) - int(mul_q28(az, by))
    y = int(mul_q28(aw, by)) - int(mul_q28(ax, bz)) + int(mul_q28(ay, bw)) + int(mul_q28(az, bx))
    z = int(mul_q28(aw, bz)) + int(mul_q28(ax, by)) - int(mul_q28(ay, bx)) + int(mul_q28(az, bw))
    po[0] = w
    po[1] = x
    po[2] = y
    po[3] = z


@micropython.viper
def quat_renorm_step_q28(q):
    """One Newton step towards |q| = 1 for a Q28 quaternion already near unit norm.

    q *= 1 + e with e = (1 - |q|^2) / 2 (exact to (3/8)(|q|^2 - 1)^2). e is held in units of 2^-27 and clamped
    to +-2^15 (2.4e-4 relative, i.e. |q|^2 errors up to 4.9e-4 are removed in one step; larger ones take
    several) so that (q_i >> 14) * e < 2^29.1 whatever q holds.
    Squares: q_i^2 / 2^28 = qh^2 + (2 qh ql) >> 14 with qh = q_i >> 14, ql = q_i & 0x3FFF.
    """
    w16 = _W16  # a local, so 2^32 below is computed at run time, never a constant
    p = ptr32(q)
    n2 = 0
    i = 0
    while i < 4:
        v = p[i]
        if (v >> 31) > 0:
            v = v - (w16 << 16)
        vh = v >> 14
        n2 = n2 + vh * vh + ((vh * (v & 0x3FFF)) >> 13)
        i += 1
    e = (ONE_Q28 - n2) >> 2
    if e > 0x8000:
        e = 0x8000
    elif e < -0x8000:
        e = -0x8000
    i = 0
    while i < 4:
        v = p[i]
        if (v >> 31) > 0:
            v = v - (w16 << 16)
        p[i] = v + (((v >> 14) * e) >> 13)
        i += 1


@micropython.viper
def quat_normalize_q28(q) -> int:
    """Scale q (components |q_i| < 2^29, any Q) to unit norm in Q28, in place. Returns 0 if q is zero.

    The components are shifted (exactly, or dropping at most 2 low bits) to max |q_i| in [2^27, 2^28); the norm
    is estimated from their top bits (q_i >> 15, sum of squares <= 2^28) with isqrt, and q is multiplied by the
    resulting Q28 factor 2^13 / n (in (0.5, 2]) with mul_q28, so the direction keeps full precision and only the
    scale carries the estimate's 2^-12 error; three quat_renorm_step_q28 steps remove that.
    """
    w16 = _W16  # a local, so 2^32 below is computed at run time, never a constant
    p = ptr32(q)
    w = p[0]
    if (w >> 31) > 0:
        w = w - (w16 << 16)
    x = p[1]
    if (x >> 31) > 0:
        x = x - (w16 << 16)
    y = p[2]
    if (y >> 31) > 0:
        y = y - (w16 << 16)
    z = p[3]
    if (z >> 31) > 0:
        z = z - (w16 << 16)
    m = 0
    if w < 0:
        m = m | (0 - w)
    else:
        m = m | w
    if x < 0:
        m = m | (0 - x)
    else:
        m = m | x
    if y < 0:
        m = m | (0 - y)
    else:
        m = m | y
    if z < 0:
        m = m | (0 - z)
    else:
        m = m | z
    if m == 0:
        return 0
    while m >= 0x10000000:
        m = m >> 1
        w = w >> 1
        x = x >> 1
        y = y >> 1
        z = z >> 1
    while m < 0x8000000:
        m = m << 1
        w = w << 1
        x = x << 1
        y = y << 1
        z = z << 1
    rw = w >> 15
    rx = x >> 15
    ry = y >> 15
    rz = z >> 15
    n = int(isqrt(rw * rw + rx * rx + ry * ry + rz * rz))  # |q| / 2^15, in [2^12, 2^14]
    f = ((0x20000000 // n) << 12)  # Q28 of 2^13 / n: |q| * f / 2^28 = 2^28
    p[0] = int(mul_q28(w, f))
    p[1] = int(mul_q28(x, f))
    p[2] = int(mul_q28(y, f))
    p[3] = int(mul_q28(z, f))
    quat_renorm_step_q28(q)
    quat_renorm_step_q28(q)
    quat_renorm_step_q28(q)
    return 1


@micropython.viper
def quat_rotate_q28(out, q, v):
    """out = R(q) v for a unit Q28 quaternion q and a vector v (any Q, |v| <= 2^29): rotation matrix rows
    (each |R_ij| <= 1, Q28) dotted with v. Each row is a unit vector, so every partial sum is <= |v|
    (+ rounding). out must not alias v."""
    w16 = _W16  # a local, so 2^32 below is computed at run time, never a constant
    pq = ptr32(q)
    pv = ptr32(v)
    po = ptr32(out)
    w = pq[0]
    if (w >> 31) > 0:
        w = w - (w16 << 16)
    x = pq[1]
    if (x >> 31) > 0:
        x = x - (w16 << 16)
    y = pq[2]
    if (y >> 31) > 0:
        y = y - (w16 << 16)
    z = pq[3]
    if (z >> 31) > 0:
        z = z - (w16 << 16)
    xx = int(mul_q28(x, x))
    yy = int(mul_q28(y, y))
    zz = int(mul_q28(z, z))
    xy = int(mul_q28(x, y))
    xz = int(mul_q28(x, z))
    yz = int(mul_q28(y, z))
    wx = int(mul_q28(w, x))
    wy = int(mul_q28(w, y))
    wz = int(mul_q28(w, z))
    vx = pv[0]
    if (vx >> 31) > 0:
        vx = vx - (w16 << 16)
    vy = pv[1]
    if (vy >> 31) > 0:
        vy = vy - (w16 << 16)
    vz = pv[2]
    if (vz >> 31) > 0:
        vz = vz - (w16 << 16)
    po[0] = (int(mul_q28(ONE_Q28 - ((yy + zz) << 1), vx)) + int(mul_q28((xy - wz) << 1, vy))
             + int(mul_q28((xz + wy) << 1, vz)))
    po[1] = (int(mul_q28((xy + wz) << 1, vx)) + int(mul_q28(ONE_Q28 - ((xx + zz) << 1), vy))
             + int(mul_q28((yz - wx) << 1, vz)))
    po[2] = (int(mul_q28((xz - wy) << 1, vx)) + int(mul_q28((yz + wx) << 1, vy))
             + int(mul_q28(ONE_Q28 - ((xx + yy) << 1), vz)))
