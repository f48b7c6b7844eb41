"""Probe-to-image calibration: tip pixels, calibration from DICOM regions and from two clicked needle tips,
store."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from needletrack import geometry
from needletrack.geometry import Calibration, CalibrationError, CalibrationStore, Region


def _cal(**kw):
    base = dict(probe_model="L12-5", image_size=(640, 480), exit_px=(10.0, 20.0), face_row=20.0,
                mm_per_px=(0.1, 0.2), lateral=1)
    return Calibration(**{**base, **kw})


def test_tip_pixel_by_hand():
    cal = _cal()
    # 10 mm at 30 deg: 8.660 mm across (86.60 px at 0.1 mm/px), 5 mm down (25 px at 0.2 mm/px).
    assert geometry.tip_px(cal, 10.0, 30.0) == pytest.approx((96.6025, 45.0), abs=1e-4)
    mirrored = _cal(lateral=-1, exit_px=(600.0, 20.0))
    assert geometry.tip_px(mirrored, 10.0, 30.0) == pytest.approx((513.3975, 45.0), abs=1e-4)
    assert geometry.tip_px(cal, 0.0, 45.0) == cal.exit_px
    assert geometry.depth_row(cal, 5.0) == pytest.approx(45.0)
    assert geometry.px_to_mm(cal, (96.6025, 45.0)) == pytest.approx((8.66025, 5.0), abs=1e-4)


def test_trajectory_runs_from_the_exit_through_the_tip_to_the_image_border():
    cal = _cal(exit_px=(0.0, 0.0), face_row=0.0, mm_per_px=(0.1, 0.1), image_size=(100, 80))
    path = geometry.trajectory(cal, 2.0, 45.0)
    assert path.exit_px == (0.0, 0.0)
    assert path.tip_px == pytest.approx((14.142, 14.142), abs=1e-3)
    assert path.end_px == pytest.approx((79.0, 79.0))  # the bottom row comes first
    beyond = geometry.trajectory(cal, 20.0, 45.0)  # tip 141 px along: outside the image
    assert beyond.end_px == pytest.approx(beyond.tip_px)
    shallow = geometry.trajectory(cal, 1.0, 20.0)
    assert shallow.end_px[0] == pytest.approx(99.0) and shallow.end_px[1] < 79


def test_calibration_from_a_dicom_region():
    region = Region(32, 24, 335, 415, (0.3827, 0.3827), reference_px=(186.0, 45.0), reference_mm=(0.0, 0.0))
    cal = geometry.from_region(region, probe_model="C5", image_size=(640, 480))
    assert cal.face_row == 45.0 and cal.exit_px == (32.0, 45.0) and cal.mm_per_px == (0.3827, 0.3827)
    assert cal.method == "dicom-region" and cal.region == region
    off = geometry.from_region(region, probe_model="C5", image_size=(640, 480), exit_offset_mm=(3.0, 1.0))
    assert off.exit_px == pytest.approx((32.0 - 3.0 / 0.3827, 45.0 + 1.0 / 0.3827))
    assert off.exit_depth_mm == pytest.approx(1.0)
    mirrored = geometry.from_region(region, probe_model="C5", image_size=(640, 480), lateral=-1)
    assert mirrored.exit_px == (335.0, 45.0)
    # Without a reference point the face is the region's top; a reference point at depth d moves it up by d.
    assert Region(0, 30, 99, 99, (0.5, 0.5)).face_row() == 30.0
    assert Region(0, 30, 99, 99, (0.5, 0.5), (50.0, 40.0), (0.0, 5.0)).face_row() == pytest.approx(30.0)


def _clicks(exit_px, scale, lateral, guide_deg, d1, d2):
    g = math.radians(guide_deg)

    def at(d):
        return (exit_px[0] + lateral * d * math.cos(g) / scale, exit_px[1] + d * math.sin(g) / scale)

    return at(d1), at(d2)


def test_two_point_calibration_recovers_the_exit_and_scale():
    p1, p2 = _clicks((-15.0, 12.0), 0.08, 1, 30.0, 10.0, 35.0)
    cal = geometry.from_two_points(p1, 10.0, p2, 35.0, guide_angle_deg=30.0, image_size=(640, 480),
                                   probe_model="L12-5")
    assert cal.exit_px == pytest.approx((-15.0, 12.0)) and cal.mm_per_px == pytest.approx((0.08, 0.08))
    assert cal.lateral == 1 and cal.face_row == pytest.approx(12.0) and cal.method == "two-point"
    # Given in the other order, and mirrored.
    q1, q2 = _clicks((650.0, 5.0), 0.08, -1, 45.0, 12.0, 30.0)
    mirrored = geometry.from_two_points(q2, 30.0, q1, 12.0, guide_angle_deg=45.0, image_size=(640, 480),
                                        probe_model="L12-5", face_row=0.0)
    assert mirrored.exit_px == pytest.approx((650.0, 5.0)) and mirrored.lateral == -1
    assert mirrored.face_row == 0.0 and mirrored.exit_depth_mm == pytest.approx(0.4)
    # A click a pixel off moves the scale by a fraction of a percent, the exit by a few pixels.
    noisy = geometry.from_two_points((p1[0] + 1, p1[1]), 10.0, p2, 35.0, guide_angle_deg=30.0,
                                     image_size=(640, 480), probe_model="L12-5")
    assert noisy.mm_per_px[0] == pytest.approx(0.08, rel=0.005)
    assert math.dist(noisy.exit_px, (-15.0, 12.0)) < 3.0


@settings(max_examples=60, deadline=None)
@given(scale=st.floats(0.03, 0.3), guide=st.floats(15.0, 75.0), lateral=st.sampled_from([1, -1]),
       d1=st.floats(2.0, 20.0), span=st.floats(8.0, 30.0), ex=st.floats(-30.0, 30.0), ez=st.floats(0.0, 20.0))
def test_two_point_calibration_inverts_the_tip_projection(scale, guide, lateral, d1, span, ex, ez):
    exit_px = (ex if lateral == 1 else 639 - ex, ez)
    p1, p2 = _clicks(exit_px, scale, lateral, guide, d1, d1 + span)
    inside = all(0 <= p[0] <= 639 and 0 <= p[1] <= 479 for p in (p1, p2))
    assume(inside and math.dist(p1, p2) >= geometry.MIN_POINT_SPAN_PX)
    cal = geometry.from_two_points(p1, d1, p2, d1 + span, guide_angle_deg=guide, image_size=(640, 480),
                                   probe_model="p")
    for d in (0.0, d1, d1 + span, 50.0):
        want = (exit_px[0] + lateral * d * math.cos(math.radians(guide)) / scale,
                exit_px[1] + d * math.sin(math.radians(guide)) / scale)
        assert geometry.tip_px(cal, d, guide) == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize(("change", "message"), [
    (dict(d2=11.0), "differ by at least"),
    (dict(p2=(105.0, 60.0), d2=30.0), "px apart"),
    (dict(p2=(300.0, 10.0)), "not lower"),
    (dict(guide=30.0), "guide is at 30.0 deg"),
    (dict(p2=(700.0, 100.0)), "not inside"),
    (dict(d1=-1.0), "outside 0 .. 200"),
    (dict(p2=(130.0, 90.0), d2=100.0), "mm/px"),
])
def test_two_point_calibration_refuses_bad_input(change, message):
    args = dict(p1=(100.0, 60.0), d1=10.0, p2=(200.0, 160.0), d2=30.0, guide=45.0)
    args.update(change)
    with pytest.raises(CalibrationError, match=message):
        geometry.from_two_points(args["p1"], args["d1"], args["p2"], args["d2"],
                                 guide_angle_deg=args["guide"], image_size=(640, 480), probe_model="L12-5")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("mm_per_px", (0.0, 0.1), "mm_per_px x"),
    ("mm_per_px", (0.1, 5.0), "mm_per_px y"),
    ("lateral", 0, "lateral"),
    ("exit_px", (5000.0, 0.0), "more than an image away"),
    ("image_size", (8, 8), "too small"),
])
def test_implausible_calibrations_are_refused(field, value, message):
    with pytest.raises(CalibrationError, match=message):
        _cal(**{field: value})


def test_resized_calibration_follows_the_image():
    cal = _cal(mm_per_px=(0.1, 0.1))
    big = cal.resized((1920, 1440))
    tip, tip_big = geometry.tip_px(cal, 20.0, 40.0), geometry.tip_px(big, 20.0, 40.0)
    assert tip_big == pytest.approx(((tip[0] + 0.5) * 3 - 0.5, (tip[1] + 0.5) * 3 - 0.5))
    boxed = cal.resized((1920, 1080), offset=(240.0, 0.0), scale=2.25)
    tip_boxed = geometry.tip_px(boxed, 20.0, 40.0)
    assert tip_boxed == pytest.approx(((tip[0] + 0.5) * 2.25 - 0.5 + 240, (tip[1] + 0.5) * 2.25 - 0.5))
    assert boxed.mm_per_px == pytest.approx((0.1 / 2.25, 0.1 / 2.25))


def test_store_keeps_one_calibration_per_probe_model(tmp_path):
    store = CalibrationStore(tmp_path / "cfg" / "cal.json")
    assert store.models() == []
    a = _cal(probe_model="L12-5")
    region = Region(10, 20, 600, 470, (0.1, 0.1), (300.0, 20.0), (0.0, 0.0))
    b = geometry.from_region(region, probe_model="C5", image_size=(640, 480))
    store.save(a)
    store.save(b)
    store.save(_cal(probe_model="L12-5", exit_px=(12.0, 20.0)))  # a new calibration replaces the old one
    assert store.models() == ["C5", "L12-5"]
    assert store.load("C5") == b
    assert store.load("L12-5").exit_px == (12.0, 20.0)
    again = CalibrationStore(tmp_path / "cfg" / "cal.json")
    assert again.load("C5").region == b.region
    with pytest.raises(CalibrationError, match=r"'L7'.*C5, L12-5"):
        again.load("L7")
    assert again.remove("C5") and not again.remove("C5") and again.models() == ["L12-5"]


def test_store_refuses_a_damaged_file(tmp_path):
    path = tmp_path / "cal.json"
    path.write_text("{not json")
    with pytest.raises(CalibrationError, match="unreadable"):
        CalibrationStore(path).models()
    path.write_text(json.dumps({"version": 1, "probes": {"X": {"probe_model": "X"}}}))
    with pytest.raises(CalibrationError, match="missing or malformed"):
        CalibrationStore(path).load("X")
    path.write_text(json.dumps({"version": 9, "probes": {}}))
    with pytest.raises(CalibrationError, match="version 1"):
        CalibrationStore(path).models()


def test_default_store_path_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NEEDLETRACK_CONFIG", str(tmp_path / "nt"))
    assert geometry.default_store_path() == tmp_path / "nt" / "image_calibrations.json"
    monkeypatch.delenv("NEEDLETRACK_CONFIG")
    monkeypatch.setattr(geometry.sys, "platform", "linux")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert geometry.default_store_path() == tmp_path / "xdg" / "needletrack" / "image_calibrations.json"
