# Needle depth from the field angle of the carriage magnet at one or two TMAG5273 sensors (docs/depth.md).
#
# Formats (every loop intermediate stays inside |v| < 2^30; the range analysis is in docs/depth.md):
#   counts   raw TMAG5273 result, int16 (820 LSB/mT at +-40 mT)
#   mdeg     field angle in millidegrees, atan2(Bz, -Bx), in (-180000, 180000]
#   um       carriage displacement and depth in micrometres
#   cdeg     temperature in centidegrees Celsius
#   Q16      table slope in um/mdeg * 2^16, kept split as Q8 high part + 8-bit low part
#   Q14      blend weight (16384 = all sensor B) and the Z-gain temperature correction
#   Q16 sc   displacement scale correction for the clip's thermal expansion
#
# update() is the sampling-loop entry: integers only, no allocation. load() and fit_calibration() run
# outside the loop and may allocate and use floats.
from micropython import const
import array

from fixmath import atan2_mdeg

INVALID = const(-0x20000000)  # returned instead of a depth; no real depth is anywhere near it
MAX_SENSORS = const(2)
MIN_POINTS = const(8)
MAX_POINTS = const(24)

# Limits the calibration must respect; each one keeps an intermediate of update() inside 2^30.
MAX_ABS_DISP_UM = const(131071)  # 2^17 - 1: table values, tare
MAX_SLOPE_UM_PER_MDEG = const(8192)  # Q16 slope < 2^29
MAX_BLEND_WIDTH_UM = const(32767)  # (mid - lo) << 14 < 2^29
MAX_DISAGREE_UM = const(10000)
MAX_Z_TC_PPM = const(2000)  # per K, residual Z/X sensitivity drift the chip leaves
MAX_DISP_TC_PPM = const(500)  # per K, thermal expansion of the clip
T_MIN_CDEG = const(-4000)  # the TMAG5273's operating range, -40 .. 125 C
T_MAX_CDEG = const(12500)

# Raw values at or beyond this are treated as saturated: the result clips at the rails (+-32768) and the last
# few percent below them are no longer linear.
SAT_COUNTS = const(32000)

# flags: why the last update() had no depth, or what it noticed.
F_NOCAL = const(0x0001)  # no calibration loaded
F_A_WEAK = const(0x0002)  # field at sensor A below its min_field: magnet far or absent
F_A_SAT = const(0x0004)  # an axis of sensor A at or beyond SAT_COUNTS
F_A_RANGE = const(0x0008)  # field angle outside sensor A's table
F_B_WEAK = const(0x0010)
F_B_SAT = const(0x0020)
F_B_RANGE = const(0x0040)
F_DISAGREE = const(0x0080)  # both sensors valid but further apart than disagree_um: no depth
F_INVALID = const(0x0100)  # summary: update() returned INVALID

_F_SENSOR_SHIFT = const(3)  # sensor B's flags are sensor A's shifted by this

# 1e8 / 2^14 and 1e8 / 2^16: ppm/K * cdeg -> Q14 and Q16 fractions (1e6 ppm, 100 cdeg per K).
_PPM_CDEG_PER_Q14 = const(6104)
_PPM_CDEG_PER_Q16 = const(1526)
_ONE_Q14 = const(16384)


class CalibrationError(ValueError):
    pass


def _int_in(v, lo, hi, where):
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or v > hi:
        raise CalibrationError("%s: %r is not an integer in %d .. %d" % (where, v, lo, hi))


def check_calibration(cal):
    """Raise CalibrationError naming the first field of cal that update() could not run on safely."""
    if not isinstance(cal, dict):
        raise CalibrationError("calibration: not a dict")
    for key in ("sensors", "disagree_um", "cal_temp_cdeg", "disp_tc_ppm"):
        if key not in cal:
            raise CalibrationError("calibration: missing %s" % key)
    sensors = cal["sensors"]
    if not isinstance(sensors, list) or not 1 <= len(sensors) <= MAX_SENSORS:
        raise CalibrationError("sensors: need a list of 1 or %d sensors" % MAX_SENSORS)
    _int_in(cal["disagree_um"], 100, MAX_DISAGREE_UM, "disagree_um")
    _int_in(cal["cal_temp_cdeg"], T_MIN_CDEG, T_MAX_CDEG, "cal_temp_cdeg")
    _int_in(cal["disp_tc_ppm"], -MAX_DISP_TC_PPM, MAX_DISP_TC_PPM, "disp_tc_ppm")
    spans = []
    for i, s in enumerate(sensors):
        w = "sensors[%d]" % i
        if not isinstance(s, dict):
            raise CalibrationError(w + ": not a dict")
        for key in ("angle_mdeg", "disp_um", "min_field_ut", "range_mt", "z_gain_tc_ppm"):
            if key not in s:
                raise CalibrationError("%s: missing %s" % (w, key))
        ang = s["angle_mdeg"]
        disp = s["disp_um"]
        if not isinstance(ang, list) or not isinstance(disp, list) or len(ang) != len(disp):
            raise CalibrationError(w + ": angle_mdeg and disp_um must be lists of the same length")
        n = len(ang)
        if not MIN_POINTS <= n <= MAX_POINTS:
            raise CalibrationError("%s: %d points, need %d .. %d" % (w, n, MIN_POINTS, MAX_POINTS))
        for k in range(n):
            _int_in(ang[k], -179999, 179999, "%s.angle_mdeg[%d]" % (w, k))
            _int_in(disp[k], -MAX_ABS_DISP_UM, MAX_ABS_DISP_UM, "%s.disp_um[%d]" % (w, k))
        rising = disp[1] > disp[0]
        for k in range(1, n):
            da = ang[k] - ang[k - 1]
            dd = disp[k] - disp[k - 1]
            if da <= 0:
                raise CalibrationError("%s.angle_mdeg[%d]: angles must increase" % (w, k))
            if (dd > 0) != rising or dd == 0:
                raise CalibrationError("%s.disp_um[%d]: displacements must be monotonic" % (w, k))
            if abs(dd) > MAX_SLOPE_UM_PER_MDEG * da:
                raise CalibrationError("%s.disp_um[%d]: slope above %d um/mdeg" % (w, k, MAX_SLOPE_UM_PER_MDEG))
        _int_in(s["min_field_ut"], 100, 20000, w + ".min_field_ut")
        if s["range_mt"] not in (40, 80):
            raise CalibrationError("%s.range_mt: %r is not 40 or 80" % (w, s["range_mt"]))
        _int_in(s["z_gain_tc_ppm"], -MAX_Z_TC_PPM, MAX_Z_TC_PPM, w + ".z_gain_tc_ppm")
        spans.append((min(disp[0], disp[-1]), max(disp[0], disp[-1])))
    if len(sensors) == 2:
        blend = cal.get("blend_um")
        if not isinstance(blend, list) or len(blend) != 2:
            raise CalibrationError("blend_um: need [lo, hi] for two sensors")
        lo, hi = blend
        _int_in(lo, -MAX_ABS_DISP_UM, MAX_ABS_DISP_UM, "blend_um[0]")
        _int_in(hi, lo + 1, lo + MAX_BLEND_WIDTH_UM, "blend_um[1]")
        olo = max(spans[0][0], spans[1][0])
        ohi = min(spans[0][1], spans[1][1])
        if lo < olo or hi > ohi:
            raise CalibrationError("blend_um: %d .. %d is not inside both tables (%d .. %d)" % (lo, hi, olo, ohi))
        if spans[0][0] > spans[1][0]:
            raise CalibrationError("sensors: sensor A must cover the shallower part of the stroke")


class DepthEstimator:
    """Carriage displacement and needle depth from raw field counts; see docs/depth.md."""

    def __init__(self):
        n = MAX_SENSORS * MAX_POINTS
        self._ang = array.array("i", bytes(4 * n))  # mdeg, per sensor i at i*MAX_POINTS
        self._disp = array.array("i", bytes(4 * n))  # um
        self._shi = array.array("i", bytes(4 * n))  # Q16 slope >> 8 (floor), per segment
        self._slo = array.array("i", bytes(4 * n))  # Q16 slope & 255
        self._n = array.array("i", bytes(4 * MAX_SENSORS))
        self._min2 = array.array("i", bytes(4 * MAX_SENSORS))  # (min field counts / 2)^2
        self._ztc = array.array("i", bytes(4 * MAX_SENSORS))  # ppm/K
        # Last field angle (mdeg) and displacement (um) per sensor, INVALID where the field was weak or
        # saturated (angle) or the angle outside the table (displacement): diagnostics and the calibration
        # command's readout. Plain attributes, so nothing but a rebinding happens per update.
        self.angle_a = INVALID
        self.angle_b = INVALID
        self.um_a = INVALID
        self.um_b = INVALID
        self.n_sensors = 0
        self._blend_lo = 0
        self._blend_hi = 1
        self._disagree = 0
        self._cal_t = 0
        self._dtc = 0
        self.tare_um = 0
        self.disp_um = INVALID  # last carriage displacement (before tare), or INVALID
        self.depth_um = INVALID
        self.weight_q14 = 0  # share of sensor B in the last estimate
        self.flags = F_NOCAL | F_INVALID

    def load(self, cal):
        """Use calibration cal (the store's dict); raises CalibrationError and keeps the old one if bad."""
        check_calibration(cal)
        sensors = cal["sensors"]
        for i in range(len(sensors)):
            s = sensors[i]
            ang = s["angle_mdeg"]
            disp = s["disp_um"]
            base = i * MAX_POINTS
            for k in range(len(ang)):
                self._ang[base + k] = ang[k]
                self._disp[base + k] = disp[k]
                if k + 1 < len(ang):
                    # Rounded Q16 slope; floor split so that hi * 256 + lo == slope for either sign.
                    dd = disp[k + 1] - disp[k]
                    da = ang[k + 1] - ang[k]
                    q = (dd * 65536 + (da >> 1)) // da if dd >= 0 else -((-dd * 65536 + (da >> 1)) // da)
                    self._shi[base + k] = q >> 8
                    self._slo[base + k] = q & 255
            self._n[i] = len(ang)
            c = s["min_field_ut"] * 32768 // (s["range_mt"] * 1000)
            self._min2[i] = (c >> 1) * (c >> 1)
            self._ztc[i] = s["z_gain_tc_ppm"]
        self.n_sensors = len(sensors)
        if self.n_sensors == 2:
            self._blend_lo = cal["blend_um"][0]
            self._blend_hi = cal["blend_um"][1]
        self._disagree = cal["disagree_um"]
        self._cal_t = cal["cal_temp_cdeg"]
        self._dtc = cal["disp_tc_ppm"]
        self.flags = F_INVALID

    def set_tare(self, tare_um):
        if not -MAX_ABS_DISP_UM <= tare_um <= MAX_ABS_DISP_UM:
            raise ValueError("tare_um out of range")
        self.tare_um = tare_um

    def tare_here(self):
        """Make the last valid displacement depth 0; returns the new tare in um, or INVALID (tare unchanged)."""
        if self.disp_um == INVALID:
            return INVALID
        self.tare_um = self.disp_um
        return self.tare_um

    def _sensor(self, i, x, z, dt):
        # Displacement (um) seen by sensor i, or INVALID with the reason in self.flags.
        sh = i * _F_SENSOR_SHIFT
        if i == 0:
            self.angle_a = INVALID
        else:
            self.angle_b = INVALID
        if x >= SAT_COUNTS or x <= -SAT_COUNTS or z >= SAT_COUNTS or z <= -SAT_COUNTS:
            self.flags |= F_A_SAT << sh
            return INVALID
        hx = x >> 1
        hz = z >> 1
        if hx * hx + hz * hz < self._min2[i]:
            self.flags |= F_A_WEAK << sh
            return INVALID
        zq = (self._ztc[i] * dt) // _PPM_CDEG_PER_Q14
        z = z - ((z * zq) >> 14)
        a = atan2_mdeg(z, -x)
        if i == 0:
            self.angle_a = a
        else:
            self.angle_b = a
        ang = self._ang
        base = i * MAX_POINTS
        last = base + self._n[i] - 1
        if a < ang[base] or a > ang[last]:
            self.flags |= F_A_RANGE << sh
            return INVALID
        # Binary search for the segment j with ang[j] <= a <= ang[j + 1].
        j = base
        hi = last
        while hi - j > 1:
            mid = (j + hi) >> 1
            if a < ang[mid]:
                hi = mid
            else:
                j = mid
        d = a - ang[j]
        return self._disp[j] + ((d * self._shi[j] + ((d * self._slo[j]) >> 8) + 128) >> 8)

    def update(self, xa, za, xb, zb, temp_cdeg):
        """One estimate from sensor A's (xa, za) and sensor B's (xb, zb) raw counts and the temperature.

        Returns the depth in um (displacement minus tare), or INVALID with the reasons in self.flags. x is
        the chip's X channel (along the channel), z its Z channel (towards the magnet); with one sensor
        configured, xb and zb are ignored.
        """
        self.flags = 0
        if self.n_sensors == 0:
            self.flags = F_NOCAL | F_INVALID
            self.disp_um = INVALID
            self.depth_um = INVALID
            return INVALID
        t = temp_cdeg
        if t < T_MIN_CDEG:
            t = T_MIN_CDEG
        elif t > T_MAX_CDEG:
            t = T_MAX_CDEG
        dt = t - self._cal_t
        da = self._sensor(0, xa, za, dt)
        self.um_a = da
        db = INVALID
        if self.n_sensors == 2:
            db = self._sensor(1, xb, zb, dt)
            self.um_b = db
        if da != INVALID and db != INVALID:
            diff = db - da
            if diff > self._disagree or diff < -self._disagree:
                self.flags |= F_DISAGREE | F_INVALID
                self.disp_um = INVALID
                self.depth_um = INVALID
                return INVALID
            mid = (da + db) >> 1
            lo = self._blend_lo
            if mid <= lo:
                w = 0
            elif mid >= self._blend_hi:
                w = _ONE_Q14
            else:
                w = ((mid - lo) << 14) // (self._blend_hi - lo)
            disp = da + ((diff * w) >> 14)
        elif da != INVALID:
            disp = da
            w = 0
        elif db != INVALID:
            disp = db
            w = _ONE_Q14
        else:
            self.flags |= F_INVALID
            self.disp_um = INVALID
            self.depth_um = INVALID
            return INVALID
        # Clip expansion: every length in the clip scales by (1 + disp_tc * dT) about the table's origin.
        sc = (self._dtc * dt) // _PPM_CDEG_PER_Q16
        disp = disp + ((disp * sc) >> 16)
        self.weight_q14 = w
        self.disp_um = disp
        self.depth_um = disp - self.tare_um
        return self.depth_um


def _pwl(ang, disp, a):
    # Float piecewise-linear lookup with linear extrapolation past the ends (fitting only).
    n = len(ang)
    j = 0
    while j < n - 2 and a > ang[j + 1]:
        j += 1
    return disp[j] + (a - ang[j]) * (disp[j + 1] - disp[j]) / (ang[j + 1] - ang[j])


def _fit_sensor(ang, disp, pts, c):
    # Least squares of p = a + k * T(theta - c) over pts [(p_um, theta_mdeg)]; returns (a, k, rms_um).
    n = len(pts)
    tm = 0.0
    pm = 0.0
    vals = []
    for p, th in pts:
        v = _pwl(ang, disp, th - c)
        vals.append(v)
        tm += v
        pm += p
    tm /= n
    pm /= n
    sxx = 0.0
    sxy = 0.0
    for j in range(n):
        dv = vals[j] - tm
        sxx += dv * dv
        sxy += dv * (pts[j][0] - pm)
    k = sxy / sxx if sxx > 0 else 1.0
    a = pm - k * tm
    ss = 0.0
    for j in range(n):
        r = a + k * vals[j] - pts[j][0]
        ss += r * r
    return a, k, (ss / n) ** 0.5


def _used_angle(base_sensor, i, jig_um, angles):
    # The angle sensor i's fit takes from a jig point, or None. The jig knows where the carriage is: only the
    # points inside this sensor's share of the stroke (its base table's span, 2 mm slack for the as-built
    # shift) count, not whatever angle a far, weak field happens to give.
    th = angles[i] if i < len(angles) else None
    if th is None:
        return None
    disp = base_sensor["disp_um"]
    if min(disp[0], disp[-1]) - 2000 <= jig_um <= max(disp[0], disp[-1]) + 2000:
        return th
    return None


def fit_calibration(base, jig_um, angles, max_rms_um=500):
    """A new calibration from jig points, fitted to the shape of base (e.g. the factory table).

    jig_um: known carriage displacements (um); angles: per jig point a list [angle_a, angle_b] in mdeg with
    None where that sensor had no valid reading. For each sensor, the base table T is moved as
    p = a + k * T(theta - c): c absorbs chip tilt and angle offsets, a the sensor's position along the channel,
    k its distance to the magnet's axis (the field angle depends on position over gap). Needs 3 points per
    sensor inside its share of the stroke (its table's displacement span, 2 mm slack). Returns
    (cal, rms_um per sensor); raises CalibrationError if a sensor has too few points, the fit is
    implausible, or the result fails check_calibration.
    """
    check_calibration(base)
    out = {}
    for key in base:
        if key != "sensors":
            out[key] = base[key]
    out["sensors"] = []
    rms_all = []
    for i in range(len(base["sensors"])):
        s = base["sensors"][i]
        ang = s["angle_mdeg"]
        disp = s["disp_um"]
        pts = []
        for j in range(len(jig_um)):
            th = _used_angle(s, i, jig_um[j], angles[j])
            if th is not None:
                pts.append((jig_um[j], th))
        if len(pts) < 3:
            raise CalibrationError("sensors[%d]: %d usable jig points, need 3" % (i, len(pts)))
        # The angle shift enters non-linearly: scan +-15 deg, then narrow down around the best.
        a, k, rms = _fit_sensor(ang, disp, pts, 0.0)
        best = (0.0, a, k, rms)
        step = 1000.0
        span = 15
        for _ in range(5):
            c0 = best[0]
            for m in range(-span, span + 1):
                c = c0 + m * step
                a, k, rms = _fit_sensor(ang, disp, pts, c)
                if rms < best[3]:
                    best = (c, a, k, rms)
            step /= 10.0
            span = 10
        c, a, k, rms = best
        if not 0.8 <= k <= 1.25 or rms > max_rms_um:
            raise CalibrationError("sensors[%d]: implausible fit (scale %.3f, rms %.0f um)" % (i, k, rms))
        ns = {}
        for key in s:
            ns[key] = s[key]
        ns["angle_mdeg"] = [round(v + c) for v in ang]
        ns["disp_um"] = [round(a + k * v) for v in disp]
        out["sensors"].append(ns)
        rms_all.append(rms)
    check_calibration(out)
    return out, rms_all


def fit_residuals(base, cal, jig_um, angles):
    """Per jig point, how far the fitted calibration cal puts it from the jig: in um, the table's displacement
    at the point's field angle minus the jig's, for the sensors whose fit (fit_calibration(base, ...)) used
    the point, their mean if both; None for a point no sensor's fit used."""
    out = []
    for j in range(len(jig_um)):
        total = 0.0
        n = 0
        for i in range(len(base["sensors"])):
            th = _used_angle(base["sensors"][i], i, jig_um[j], angles[j])
            if th is not None:
                s = cal["sensors"][i]
                total += _pwl(s["angle_mdeg"], s["disp_um"], th) - jig_um[j]
                n += 1
        out.append(round(total / n) if n else None)
    return out
