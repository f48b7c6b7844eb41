# Float field model for the depth tests (MicroPython): the carriage magnet as a point dipole along the
# channel, sensors at x = s on the clip, gap below the magnet's axis, chip X along the channel and Z towards
# the axis (docs/depth.md). Independent of firmware/depth.py: the truth the fixed-point code is checked against.
import math

MOMENT_AM2 = 0.29  # 6 x 10 mm N42 cylinder, Br V / mu0
GAP_MM = 12.0
S_A_MM = 20.0
S_B_MM = 60.0


def field_mt(p_mm, s_mm, gap_mm=GAP_MM, moment=MOMENT_AM2):
    """(Bx, Bz) in mT at a sensor at s_mm with the magnet's centre at p_mm."""
    u = (s_mm - p_mm) * 1e-3
    w = -gap_mm * 1e-3
    r2 = u * u + w * w
    k = 1e-7 * moment / (r2 * r2 * math.sqrt(r2))
    return k * (3.0 * u * u - r2) * 1e3, k * 3.0 * u * w * 1e3


def to_counts(b_mt, range_mt=40):
    c = round(b_mt * 32768.0 / range_mt)
    return max(-32768, min(32767, c))


def counts(p_mm, s_mm, gap_mm=GAP_MM, moment=MOMENT_AM2, z_gain=1.0, tilt_deg=0.0, range_mt=40):
    """Raw (x, z) counts; z_gain scales the Z channel, tilt_deg rotates the chip about its Y axis."""
    bx, bz = field_mt(p_mm, s_mm, gap_mm, moment)
    if tilt_deg:
        c = math.cos(math.radians(tilt_deg))
        s = math.sin(math.radians(tilt_deg))
        bx, bz = c * bx - s * bz, s * bx + c * bz
    return to_counts(bx, range_mt), to_counts(bz * z_gain, range_mt)


def angle_mdeg(p_mm, s_mm, gap_mm=GAP_MM):
    bx, bz = field_mt(p_mm, s_mm, gap_mm)
    return math.degrees(math.atan2(bz, -bx)) * 1000.0


def table(s_mm, lo_mm, hi_mm, n=24, gap_mm=GAP_MM):
    """Exact table of n points evenly spaced in displacement from lo_mm to hi_mm (angle rises with p)."""
    ang = []
    disp = []
    for k in range(n):
        p = lo_mm + (hi_mm - lo_mm) * k / (n - 1)
        ang.append(round(angle_mdeg(p, s_mm, gap_mm)))
        disp.append(round(p * 1000))
    return ang, disp


def sensor(s_mm, lo_mm, hi_mm, n=24, gap_mm=GAP_MM, min_field_ut=1000, z_tc=0):
    ang, disp = table(s_mm, lo_mm, hi_mm, n, gap_mm)
    return {"angle_mdeg": ang, "disp_um": disp, "min_field_ut": min_field_ut, "range_mt": 40,
            "z_gain_tc_ppm": z_tc}


def calibration(n=24, gap_mm=GAP_MM, disp_tc=0, z_tc=0, cal_temp=2000):
    return {
        "sensors": [sensor(S_A_MM, -3.0, 46.0, n, gap_mm, z_tc=z_tc), sensor(S_B_MM, 34.0, 83.0, n, gap_mm, z_tc=z_tc)],
        "blend_um": [37000, 43000],
        "disagree_um": 3000,
        "cal_temp_cdeg": cal_temp,
        "disp_tc_ppm": disp_tc,
    }


def pwl(ang, disp, a):
    """Float piecewise-linear lookup: the definition the fixed-point lookup approximates."""
    j = 0
    while j < len(ang) - 2 and a > ang[j + 1]:
        j += 1
    return disp[j] + (a - ang[j]) * (disp[j + 1] - disp[j]) / (ang[j + 1] - ang[j])
