"""The overlay, checked pixel by pixel on plain frames: tip, path, no-go states, stale data, banners,
scaling."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from needletrack import geometry, overlay
from needletrack.geometry import Calibration
from needletrack.needle_state import NeedleState
from needletrack.overlay import NogoLevel, Style
from needletrack.protocol import Flag, Sample

STYLE = Style()
GREY = 90


def _frame(size=(640, 480)):
    return np.full((size[1], size[0]), GREY, np.uint8)


def _cal(size=(640, 480)):
    s = 40.0 / size[1]  # 40 mm deep image, square pixels
    return Calibration("L12-5", size, (-2.0 / s, 0.0), 0.0, (s, s))


def _state(depth=20.0, guide=45.0, nogo=25.0, **kw):
    tip = depth * math.sin(math.radians(guide))
    return replace(NeedleState(depth, tip, guide, guide, Flag(0), 0.05, nogo, 5.0), **kw)


def _is(img, p, colour):
    return tuple(int(v) for v in img[round(p[1]), round(p[0])]) == colour


def _count(img, colour, region=(slice(None), slice(None))):
    return int(np.all(img[region] == np.array(colour, np.uint8), axis=-1).sum())


@pytest.mark.parametrize(("depth", "flags", "colour", "level"), [
    (20.0, Flag(0), STYLE.tip_clear, NogoLevel.CLEAR),  # tip 14.1 mm, no-go 25, margin 5
    (30.0, Flag(0), STYLE.amber, NogoLevel.NEAR),  # tip 21.2 mm: inside the margin
    (36.0, Flag(0), STYLE.red, NogoLevel.REACHED),  # tip 25.5 mm: past it
    (20.0, Flag.NOGO_NEAR, STYLE.amber, NogoLevel.NEAR),  # the device's flag alone is enough
    (20.0, Flag.NOGO_REACHED, STYLE.red, NogoLevel.REACHED),
])
def test_tip_marker_colour_at_the_tip_pixel(depth, flags, colour, level):
    cal, st = _cal(), _state(depth, flags=flags)
    assert overlay.nogo_level(st) is level
    img = overlay.draw(_frame(), cal, st)
    tip = geometry.tip_px(cal, depth, 45.0)
    assert _is(img, tip, colour)
    for dx, dy in ((3, 0), (0, 3), (-3, 0), (0, -3)):  # a disc, not a dot
        assert _is(img, (tip[0] + dx, tip[1] + dy), colour)


def test_path_is_solid_behind_the_tip_and_dashed_ahead():
    cal, st = _cal(), _state(20.0)
    img = overlay.draw(_frame(), cal, st)
    path = geometry.trajectory(cal, 20.0, 45.0)

    def along(a, b, n):
        return [(a[0] + (b[0] - a[0]) * k / n, a[1] + (b[1] - a[1]) * k / n) for k in range(n + 1)]

    behind = [p for p in along(path.exit_px, path.tip_px, 60) if p[0] >= 2 and math.dist(p, path.tip_px) > 12]
    assert all(_is(img, p, STYLE.trajectory) for p in behind)
    ahead = [p for p in along(path.tip_px, path.end_px, 400) if math.dist(p, path.tip_px) > 12 and p[1] < 470]
    drawn = sum(_is(img, p, STYLE.trajectory) for p in ahead) / len(ahead)
    assert 0.3 < drawn < 0.85  # dashes and gaps
    assert path.end_px[1] == pytest.approx(479.0)


def test_nogo_line_states():
    cal = _cal()
    row = round(geometry.depth_row(cal, 25.0))
    cols = (slice(None), slice(300, 620))  # clear of the readouts (left) and of the needle's path
    clear = overlay.draw(_frame(), cal, _state(20.0))
    near = overlay.draw(_frame(), cal, _state(30.0))
    reached = overlay.draw(_frame(), cal, _state(36.0))
    line = (slice(row, row + 1), slice(300, 620))
    assert 0.3 < _count(clear, STYLE.nogo_clear, line) / 320 < 0.9  # dashed
    assert _count(near, STYLE.amber, line) == 320 and _count(near, STYLE.red, cols) == 0
    assert _count(reached, STYLE.red, line) == 320
    below = reached[row + 40, 300].astype(int)
    assert below[2] > GREY + 20 and below[0] < GREY  # the zone past the line is tinted red
    assert tuple(clear[row + 40, 300]) == (GREY, GREY, GREY)
    assert _count(overlay.draw(_frame(), cal, _state(20.0, nogo=None)), STYLE.nogo_clear, line) == 0


@pytest.mark.parametrize("stale", [
    dict(age_s=1.0),
    dict(flags=Flag.STALE),
    dict(age_s=math.nan),
    None,
])
def test_stale_state_hides_the_needle_and_says_no_signal(stale):
    cal = _cal()
    st = None if stale is None else _state(30.0, **stale)
    assert overlay.is_stale(st)
    img = overlay.draw(_frame(), cal, st)
    for colour in (STYLE.tip_clear, STYLE.amber, STYLE.trajectory):
        assert _count(img, colour) == 0, colour
    # A red banner right across, tall, with white text on it, clear of the no-go line (row 300) and its label.
    rows = _banner_rows(img)
    assert len(rows) >= 60
    if st is not None:
        assert rows[0] > 300 or rows[-1] < 300 - 30
    assert _count(img, STYLE.text, (slice(rows[0], rows[-1] + 1), slice(None))) > 200
    fresh = overlay.draw(_frame(), cal, _state(30.0))
    assert _count(fresh, STYLE.trajectory) > 100 and len(_banner_rows(fresh)) == 0


def _banner_rows(img):
    b, g, r = (img[..., k].astype(int) for k in range(3))
    reddish = (r > 150) & (g < 100) & (b < 100)
    return np.nonzero(reddish.mean(axis=1) > 0.6)[0]


def test_no_signal_banner_is_centred_without_a_nogo_line():
    rows = _banner_rows(overlay.draw(_frame(), _cal(), _state(30.0, nogo=None, age_s=1.0)))
    assert abs((rows[0] + rows[-1]) / 2 - 240) <= 2


def test_banners_for_missing_calibration_and_faults():
    cal = _cal()
    img = overlay.draw(_frame(), None, _state(20.0))
    above_readouts = (slice(0, 350), slice(None))
    assert _count(img, STYLE.trajectory) == 0 and _count(img, STYLE.tip_clear, above_readouts) == 0
    top = img[9:13, 250:390].astype(int)  # the banner's padding above its text
    assert ((np.abs(top - np.array(STYLE.amber)) < 40).all(axis=-1)).mean() > 0.95
    assert [b.text for b in overlay.banners(_state(20.0), None)] == ["IMAGE NOT CALIBRATED"]
    fault = _state(20.0, depth_mm=None, tip_depth_mm=None, flags=Flag.HALL_FAULT | Flag.UNCALIBRATED)
    names = [b.text for b in overlay.banners(fault, cal)]
    assert names == ["NEEDLE SENSOR FAULT", "DEPTH UNCALIBRATED"]  # red first
    img = overlay.draw(_frame(), cal, fault)
    assert _count(img, STYLE.trajectory) == 0  # no depth: no needle
    top = img[9:13, 250:390].astype(int)  # the banner's padding above its text
    assert ((np.abs(top - np.array(STYLE.red)) < 40).all(axis=-1)).mean() > 0.95
    imu = [b.text for b in overlay.banners(_state(flags=Flag.IMU_FAULT | Flag.LOW_BATTERY), cal)]
    assert imu == ["IMU FAULT", "LOW BATTERY"]
    assert "NO-GO DEPTH REACHED" in [b.text for b in overlay.banners(_state(36.0), cal)]


def test_twitch_flash_fades():
    cal = _cal()
    border = (slice(0, 4), slice(100, 500))

    def pinkness(img):
        px = img[border].astype(int)
        return float((px[..., 0] + px[..., 2] - 2 * px[..., 1]).mean())

    fresh = overlay.draw(_frame(), cal, _state(20.0, twitch_age_s=0.0))
    fading = overlay.draw(_frame(), cal, _state(20.0, twitch_age_s=0.4))
    gone = overlay.draw(_frame(), cal, _state(20.0, twitch_age_s=1.0))
    never = overlay.draw(_frame(), cal, _state(20.0))
    assert pinkness(fresh) > pinkness(fading) > 20 and pinkness(gone) == pinkness(never) == 0
    sample = Sample(1, 0, 44.0, 45.0, 20.0, 14.1, 0.0, 0.0, Flag.TWITCH)
    assert NeedleState.from_sample(sample).twitch_age_s == 0.0
    stale_twitch = overlay.draw(_frame(), cal, _state(20.0, twitch_age_s=0.0, age_s=2.0))
    assert pinkness(stale_twitch) == 0


def test_sizes_follow_the_image_height():
    def disc_width(size):
        cal = _cal(size)
        img = overlay.draw(_frame(size), cal, _state(20.0))
        tip = geometry.tip_px(cal, 20.0, 45.0)
        row = img[round(tip[1])]
        return int(np.all(row == np.array(STYLE.tip_clear, np.uint8), axis=-1).sum())

    small, big = disc_width((640, 480)), disc_width((1920, 1080))
    assert small >= 9 and big / small == pytest.approx(1080 / 480, rel=0.2)


def test_readouts_sit_in_the_corner_below_the_guide():
    cal = _cal()
    img = overlay.draw(_frame(), cal, _state(20.0))
    dark = img[..., 0].astype(int) < GREY - 30
    assert dark[400:470, 10:150].mean() > 0.5 and dark[400:470, 490:630].mean() < 0.05
    mirrored = Calibration("L12-5", (640, 480), (664.0, 0.0), 0.0, (40 / 480, 40 / 480), lateral=-1)
    img = overlay.draw(_frame(), mirrored, _state(20.0))
    dark = img[..., 0].astype(int) < GREY - 30
    assert dark[400:470, 490:630].mean() > 0.5 and dark[400:470, 10:150].mean() < 0.05


def test_input_is_left_alone_and_sizes_must_match():
    frame = np.dstack([_frame()] * 3)
    before = frame.copy()
    out = overlay.draw(frame, _cal(), _state(20.0))
    np.testing.assert_array_equal(frame, before)
    assert out.shape == (480, 640, 3) and out.dtype == np.uint8
    with pytest.raises(ValueError, match="resized"):
        overlay.draw(_frame((800, 600)), _cal(), _state(20.0))
