"""Accuracy: the needle angle and depth the device reports, against the truth on the virtual probe, or against a
depth jig's known positions on a board.

On the virtual probe the scenario's truth is known at every sample's device time: the session (a tilt and an
insertion) and a harder run (fanning and rocking at up to 10 deg/s while the needle crosses the whole stroke,
both needle sensors and the hand-off between them) are compared sample by sample, once the attitude filter has
settled. A board has no truth; with --jig FILE the depth is compared with the jig's positions (hil_tests/jig.py
describes the file), and without it those tests are skipped with the reason."""

from __future__ import annotations

import numpy as np
import pytest

from hil_tests import jig, plots, probes

# Every test here needs a firmware that keeps its output rate (conftest: keeps_rate).
pytestmark = pytest.mark.keeps_rate

ANGLE_RMS_DEG = 0.3
DEPTH_RMS_MM = 0.2

# Fanning (yaw) and rocking (pitch, roll) while the needle goes in to the end of the stroke and back out.
SWEEP = {
    "name": "hil_accuracy_sweep",
    "duration_s": 14.0,
    "seed": 21,
    "guide_angle_deg": 45.0,
    "needle_length_mm": 90.0,
    "attitude": [[0, 0, 0, 0], [3, 0, 0, 0], [5, 10, 12, 0], [7, 10, 12, -10], [9, -10, -8, 6], [11, 0, 0, 0],
                 [14, 0, 0, 0]],
    "depth": [[0, 0.0], [3, 0.0], [9, 78.0], [10, 78.0], [13, 5.0], [14, 5.0]],
    "imperfections": {"gyro_bias_dps": [-0.3, 0.4, 0.2]},
}


def _series(s: probes.Session, key: str) -> np.ndarray:
    return np.array([np.nan if getattr(x, key) is None else getattr(x, key) for x in s.samples])


def _compare(s: probes.Session, truth: dict[str, np.ndarray], report, title: str) -> tuple[float, float]:
    settled = np.array(["SETTLING" not in x.flag_names for x in s.samples])
    angle = _series(s, "needle_angle_deg")
    depth = _series(s, "depth_mm")
    ea = angle[settled] - truth["needle_angle_deg"][settled]
    ed = depth - truth["depth_mm"]
    rms_a = float(np.sqrt(np.nanmean(ea**2)))
    rms_d = float(np.sqrt(np.nanmean(ed**2)))
    report.figure("needle angle error, RMS", round(rms_a, 4), "deg", f"< {ANGLE_RMS_DEG}")
    report.figure("needle angle error, max", round(float(np.nanmax(np.abs(ea))), 3), "deg")
    report.figure("depth error, RMS", round(rms_d, 4), "mm", f"< {DEPTH_RMS_MM}")
    report.figure("depth error, max", round(float(np.nanmax(np.abs(ed))), 3), "mm")
    report.figure("samples compared (angle: settled only)", f"{int(settled.sum())} / {len(settled)}")
    report.figure("samples without a depth", int(np.isnan(depth).sum()), target="0")
    t = s.device_s
    report.plot(title, plots.against_truth(t, [
        ("needle angle", "deg", np.where(settled, angle, np.nan), truth["needle_angle_deg"]),
        ("depth", "mm", depth, truth["depth_mm"]),
    ], title))
    assert not np.isnan(depth).any(), "samples without a depth inside the stroke"
    assert rms_a < ANGLE_RMS_DEG, f"needle angle RMS error {rms_a:.3f} deg"
    assert rms_d < DEPTH_RMS_MM, f"depth RMS error {rms_d:.3f} mm"
    return rms_a, rms_d


def test_needle_angle_and_depth_match_the_truth(session, truth, report):
    _compare(session, truth, report, "Session: needle angle and depth against the truth")


def test_accuracy_holds_while_fanning_across_the_whole_stroke(run_scenario, report):
    s = run_scenario(SWEEP, "sweep")
    assert s.truth is not None
    _compare(s, s.truth, report, "Fanning and rocking across the whole stroke: device against the truth")


def test_depth_matches_the_jig(request, report):
    """With --jig FILE: the board streams on its serial console while the carriage sits at each position of
    the file's schedule; the median depth over each window's last second is compared with the position."""
    path = request.config.getoption("--jig")
    if path is None:
        pytest.skip("no --jig FILE: a board's depth is checked against a depth jig's known positions "
                    "(docs/qa-guide.md); the virtual probe's is checked against its truth above")
    j = jig.load(path)
    if not j.timed:
        pytest.skip(f"{path}: no position has a measured_at window")
    tr = request.config.pluginmanager.get_plugin("terminalreporter")

    def announce() -> None:
        if tr is not None:
            steps = ", ".join(f"{p.depth_mm:g} mm at {p.window_s[0]:g}-{p.window_s[1]:g} s" for p in j.timed
                              if p.window_s)
            tr.write_line(f"\njig: streaming now for {j.stream_s:.0f} s; carriage at {steps}")

    dut = request.getfixturevalue("dut")  # deployed first
    s = probes.from_serial_port(dut.serial, seconds=j.stream_s, on_start=announce)
    assert s.samples, f"no samples from {dut.serial}; console said: {s.log[-5:]}"
    t = s.device_s - s.device_s[0]
    readings = jig.compare(j, t, _series(s, "depth_mm"))
    for r in readings:
        got = "no depth" if r.device_mm is None else f"{r.device_mm:.3f}"
        report.figure(f"jig {r.position.depth_mm:g} mm", got, "mm", f"+- {j.tolerance_mm:g}")
    known = np.array([r.position.depth_mm for r in readings if r.device_mm is not None])
    measured = np.array([r.device_mm for r in readings if r.device_mm is not None])
    if len(known):
        report.plot("Depth against the jig", plots.jig_positions(known, measured, "Device depth minus jig position"))
    bad = [r for r in readings if r.error_mm is None or abs(r.error_mm) > j.tolerance_mm]
    assert not bad, "; ".join(
        f"{r.position.depth_mm:g} mm: " + ("no depth in the window" if r.device_mm is None
                                           else f"device {r.device_mm:.3f} mm") for r in bad)
