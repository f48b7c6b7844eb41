"""Video latency calibration: the needle echo's depth read from frames, and the lag that matches it to the
device's depth samples, on synthetic B-mode frames whose arrival is delayed by a known latency."""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest

from needletrack.frames.synthetic import SyntheticSource
from needletrack.latency import (
    LatencyError,
    calibrate_latency,
    echo_depth,
    echo_depths,
    estimate_lag,
    plot_latency,
)
from needletrack.sim import scenario

SAMPLE_HZ = 200.0
SAMPLE_NOISE_MM = 0.05
T0 = 5000.0  # host time of scenario time 0

# Pistoning at uneven depths and paces, as a hand does it: in, a few passes, out.
PISTONING = scenario.parse({
    "name": "pistoning", "duration_s": 8.0, "seed": 11, "guide_angle_deg": 45.0, "needle_length_mm": 50.0,
    "attitude": [[0, 0, 0, 0]],
    "depth": [[0, 0.0], [0.5, 0.0], [2.0, 20.0], [2.5, 12.0], [3.2, 24.0], [3.6, 15.0], [4.5, 26.0], [5.0, 13.0],
              [5.8, 22.0], [6.3, 16.0], [7.2, 25.0], [8.0, 10.0]],
})


def ramp(guide_angle_deg: float, seed: int = 3) -> scenario.Scenario:
    return scenario.parse({"name": "ramp", "duration_s": 10.0, "seed": seed, "guide_angle_deg": guide_angle_deg,
                           "needle_length_mm": 80.0, "attitude": [[0, 0, 0, 0]],
                           "depth": [[0, 0.0], [1.0, 0.0], [10.0, 70.0]]})


def device_samples(sc: scenario.Scenario, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The device's depth at 200 Hz on the host clock, with its noise."""
    t = np.arange(0.0, sc.duration_s, 1.0 / SAMPLE_HZ)
    d = sc.depth_at(t) + np.random.default_rng(seed).normal(0.0, SAMPLE_NOISE_MM, len(t))
    return T0 + t, d


@pytest.fixture(scope="module")
def dry_needling_echoes() -> tuple[np.ndarray, np.ndarray, scenario.Scenario]:
    """Echo depths of the library's dry-needling session at 25 fps, frame k taken at scenario time k / 25."""
    sc = scenario.load("dry_needling")
    src = SyntheticSource(sc, fps=25.0, size=(320, 240))
    t, d = echo_depths(src.frames(), src.calibration, sc.guide_angle_deg)
    return t, d, sc


# --- the echo depth of one frame -------------------------------------------------------------------------


@pytest.mark.parametrize(("angle", "size", "deepest"), [(30.0, (640, 480), 60.0), (20.0, (320, 240), 55.0),
                                                        (45.0, (320, 240), 52.0), (60.0, (320, 240), 42.0)])
def test_echo_depth_follows_the_true_depth_and_sees_no_needle_when_none_is_in(angle, size, deepest):
    sc = ramp(angle)
    src = SyntheticSource(sc, fps=10.0, size=size)  # the pleura at 30 mm, speckle, fat septa, fibres
    errors, absent = [], []
    for i in range(src.frame_count):
        truth = src.truth(i)
        depth = echo_depth(src.frame(i).image, src.calibration, angle)
        if truth.depth_mm == 0.0:
            absent.append(depth)
        elif 5.0 <= truth.depth_mm <= deepest:
            assert depth is not None, f"no echo found at {truth.depth_mm:.1f} mm"
            errors.append(depth - truth.depth_mm)
    assert absent and all(d is None for d in absent)
    assert len(errors) > 30
    assert max(abs(e) for e in errors) < 0.35  # a pixel is 0.08 / 0.17 mm
    assert abs(float(np.median(errors))) < 0.1


def test_a_tip_beyond_the_image_is_not_read_as_the_image_edge():
    sc = ramp(45.0)
    src = SyntheticSource(sc, fps=10.0, size=(320, 240))
    deep = [i for i in range(src.frame_count) if src.truth(i).tip_mm[1] > 41.0]  # below the 40 mm image
    assert deep
    assert all(echo_depth(src.frame(i).image, src.calibration, 45.0) is None for i in deep)


def test_a_mirrored_image_with_a_mirrored_calibration_reads_the_same_depth():
    sc = ramp(45.0)
    src = SyntheticSource(sc, fps=10.0, size=(320, 240))
    cal = src.calibration
    w = cal.image_size[0]
    mirrored = dataclasses.replace(cal, exit_px=(w - 1 - cal.exit_px[0], cal.exit_px[1]), lateral=-1)
    for i in (30, 50, 70):
        image = src.frame(i).image
        plain = echo_depth(image, cal, 45.0)
        flipped = echo_depth(np.ascontiguousarray(image[:, ::-1]), mirrored, 45.0)
        assert plain is not None and flipped is not None
        assert flipped == pytest.approx(plain, abs=0.05)
        assert flipped == pytest.approx(src.truth(i).depth_mm, abs=0.2)


def test_a_calibration_for_another_image_size_is_refused():
    src = SyntheticSource(ramp(45.0), fps=10.0, size=(320, 240))
    with pytest.raises(ValueError, match="320x240 px"):
        echo_depth(np.zeros((480, 640), np.uint8), src.calibration, 45.0)


def test_a_colour_frame_reads_as_its_grey_image():
    src = SyntheticSource(ramp(45.0), fps=10.0, size=(320, 240))
    frame = src.frame(60)
    assert echo_depth(frame.bgr(), src.calibration, 45.0) == echo_depth(frame.image, src.calibration, 45.0)


# --- the lag ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("latency_s", [0.0, 0.08, 0.15])
def test_the_injected_latency_is_recovered_within_5_ms(dry_needling_echoes, latency_s):
    t, d, sc = dry_needling_echoes
    st, sd = device_samples(sc)
    est = estimate_lag(T0 + latency_s + t, d, st, sd)  # frames arrive latency_s after they were taken
    assert est.ok, est.refusal
    assert est.lag_s == pytest.approx(latency_s, abs=0.005)
    assert est.confidence > 0.8
    assert est.uncertainty_s < 0.005
    assert est.rms_mm < 0.1
    assert est.motion_mm > 10.0
    assert est.require() == est.lag_s


def test_frames_without_the_needle_are_skipped(dry_needling_echoes):
    t, d, sc = dry_needling_echoes
    truth = sc.depth_at(t)
    assert np.all(np.isnan(d[truth == 0.0]))  # before insertion: no echo, no guess
    found = np.isfinite(d)
    st, sd = device_samples(sc)
    est = estimate_lag(T0 + 0.08 + t, d, st, sd)
    assert est.frames_total == len(t)
    assert est.frames_used == int(found.sum()) < len(t) - 50
    assert est.lag_s == pytest.approx(0.08, abs=0.005)


def test_a_still_needle_gives_no_lag_but_a_reason():
    still = scenario.parse({"name": "still", "duration_s": 6.0, "seed": 4, "guide_angle_deg": 45.0,
                            "needle_length_mm": 50.0, "attitude": [[0, 0, 0, 0]], "depth": [[0, 20.0]]})
    src = SyntheticSource(still, fps=25.0, size=(320, 240), start_s=T0 + 0.08)
    st, sd = device_samples(still)
    est = calibrate_latency(src, list(zip(st, sd, strict=True)), src.calibration, 45.0, progress=False)
    assert est.frames_used > 100  # the echo is seen in every frame: it just does not move
    assert est.lag_s is None and est.confidence < 0.5
    assert est.refusal is not None and "barely moved" in est.refusal
    with pytest.raises(LatencyError, match="barely moved"):
        est.require()
    assert "no latency" in est.summary()


def test_a_steady_rhythm_faster_than_the_search_range_is_ambiguous():
    t = np.arange(0.0, 12.0, 1.0 / SAMPLE_HZ)

    def depth(x: np.ndarray) -> np.ndarray:  # a triangle wave: in and out every 0.3 s, exactly
        return 15.0 + 10.0 * 2.0 * np.abs((x / 0.3) % 1.0 - 0.5)

    frames = np.arange(0.5, 11.5, 1 / 25)
    est = estimate_lag(frames + 0.08, depth(frames), t, depth(t))
    assert est.lag_s is None and "ambiguous" in (est.refusal or "")


def test_a_lag_outside_the_search_range_is_not_given_as_its_edge(dry_needling_echoes):
    t, d, sc = dry_needling_echoes
    st, sd = device_samples(sc)
    est = estimate_lag(T0 + 0.3 + t, d, st, sd, search_s=(-0.1, 0.2))
    assert est.lag_s is None and "edge of the search range" in (est.refusal or "")
    assert estimate_lag(T0 + 0.3 + t, d, st, sd).lag_s == pytest.approx(0.3, abs=0.005)


def test_wild_frames_and_a_gap_in_the_samples_do_not_move_the_lag(dry_needling_echoes):
    t, d, sc = dry_needling_echoes
    d = d.copy()
    found = np.flatnonzero(np.isfinite(d))
    rng = np.random.default_rng(5)
    wild = rng.choice(found, size=len(found) // 20, replace=False)
    d[wild] += rng.choice([-8.0, 8.0], size=len(wild))  # a bright fibre taken for the tip now and then
    st, sd = device_samples(sc)
    keep = (st < T0 + 9.0) | (st > T0 + 10.0)  # the link lost for a second
    est = estimate_lag(T0 + 0.08 + t, d, st[keep], sd[keep])
    assert est.lag_s == pytest.approx(0.08, abs=0.005)
    # A frame is used only if the samples cover it at every lag searched (-0.1 .. 0.5 s), and the 30 ms the
    # low-pass reaches beyond: the frame taken at scenario time t needs samples over t - 0.45 .. t + 0.21.
    in_gap = np.isfinite(d) & (t + 0.21 > 9.0) & (t - 0.45 < 10.0)
    assert abs(est.frames_used - (np.isfinite(d).sum() - in_gap.sum())) <= 1


def test_bad_input_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="same length"):
        estimate_lag([1.0, 2.0], [3.0], [1.0, 2.0], [3.0, 4.0])
    with pytest.raises(ValueError, match="search range"):
        estimate_lag([1.0], [3.0], [1.0, 2.0], [3.0, 4.0], search_s=(0.5, 0.1))
    est = estimate_lag([1.0, 2.0], [3.0, math.nan], [0.0, 3.0], [3.0, 4.0])
    assert est.lag_s is None and "found in 1 of 2 frames" in (est.refusal or "")


# --- the whole calibration, and its plot ------------------------------------------------------------------


def test_calibrating_from_a_frame_source_and_samples_recovers_80_ms_and_plots_it(tmp_path):
    src = SyntheticSource(PISTONING, fps=30.0, size=(640, 480), start_s=T0 + 0.08)
    st, sd = device_samples(PISTONING, seed=2)
    png = tmp_path / "latency.png"
    est = calibrate_latency(src, list(zip(st, sd, strict=True)), src.calibration, PISTONING.guide_angle_deg,
                            plot=png, progress=False)
    assert est.lag_s == pytest.approx(0.08, abs=0.005), est.summary()
    assert est.frames_total == src.frame_count
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 400 and image.shape[1] > 600
    refused = dataclasses.replace(est, lag_s=None, refusal="the needle barely moved")
    assert plot_latency(refused, tmp_path / "refused.png").stat().st_size > 10_000


def test_calibration_reads_only_the_seconds_asked_for():
    src = SyntheticSource(PISTONING, fps=25.0, size=(320, 240), start_s=T0)
    st, sd = device_samples(PISTONING)
    est = calibrate_latency(src.frames(), list(zip(st, sd, strict=True)), src.calibration, 45.0, seconds=4.0,
                            progress=False)
    assert est.frames_total == 101  # 0 .. 4 s at 25 fps
    assert float(est.frame_times_s[-1]) == pytest.approx(T0 + 4.0)
