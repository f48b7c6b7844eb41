# 31-bit range proof for the event detectors and the loop's own arithmetic: driven with full-scale inputs on
# checked integers (rangecheck.C), every intermediate must stay within +-2^30 as on the boards.
import events
import loop
import packet
import rangecheck
from rangecheck import C, RangeError
from mptest import eq, raises

FULL = (-32768, -32767, -16384, -1, 0, 1, 16384, 32767)
DEPTHS = (-262143, -131071, -1, 0, 1, 131071, 262143)  # um: beyond anything the depth estimator returns


def test_twitch_detector_full_scale():
    # At both IMU rates the loop uses (a longer low-pass shift at 1666 Hz).
    for odr_mhz in (833375, 1666750):
        rangecheck.reset_peak()
        d = events.TwitchDetector(odr_mhz)
        k = 0
        for _ in range(5):  # past the priming (512 updates at 1666 Hz) into the detection itself
            for a in FULL:
                for b in FULL:
                    g = FULL[k % len(FULL)]
                    k += 1
                    d.update(C(g), C(-g), C(g), C(a), C(b), C(-a))
                    d.update(C(-g), C(g), C(-g), C(-a), C(-b), C(a))
        assert rangecheck.peak_log2() <= 23, rangecheck.PEAK


def test_pass_detector_and_nogo_extremes():
    rangecheck.reset_peak()
    p = events.PassDetector()
    for d in DEPTHS + tuple(reversed(DEPTHS)) + DEPTHS:
        p.update(C(d))
        for nogo in (-1, 0, 200000):
            for margin in (0, 20000):
                events.nogo_flags(C(d), C(nogo), C(margin))
    assert rangecheck.peak_log2() <= 19, rangecheck.PEAK


def test_tip_depth_and_packing_conversions():
    rangecheck.reset_peak()
    for d in DEPTHS:
        for s in (0, 1, 8192, 15, 16383, 16384):
            for exit_z in (-20000, 0, 20000):
                loop.tip_depth_um(C(exit_z), C(d), C(s))
    for v in (-180000, -1, 0, 1, 180000, 10 ** 8, -(10 ** 8)):
        packet.to_cdeg(C(v))
        packet.to_d10um(C(v))
    assert rangecheck.peak_log2() <= 29, rangecheck.PEAK


def _naive_tip(exit_z, d, s):
    return exit_z + d * s // 16384


def test_the_range_check_catches_an_unsplit_product():
    # The same tip depth without the split multiply overflows for a deep needle at a steep guide.
    e = raises(RangeError, _naive_tip, C(0), C(262143), C(16384))
    eq("outside" in str(e), True)
