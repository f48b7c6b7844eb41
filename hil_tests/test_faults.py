"""Faults (virtual probe): a sensor that vanishes, bus errors, stuck data, a saturated or stray field, a brownout.

Each scenario runs in virtual time with one fault from 2 s (to 3 s; a brownout glitch is an instant; see
docs/scenarios.md, "faults"). The fault must raise its flag while it lasts, the device must come back by itself
once it clears (flag gone, values near the truth again), and at no time may a value reach the host that is wrong
without a flag saying so: a depth or an angle is either NA (with the flag that explains it) or close to the
truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from needletrack.protocol import Flag

# Every test here needs a firmware that keeps its output rate (conftest: keeps_rate).
pytestmark = pytest.mark.keeps_rate

FAULT_AT_S = 2.0
FAULT_UNTIL_S = 3.0
DEPTH_TOL_MM = 1.0  # a depth further than this from the truth is a wrong number
ANGLE_TOL_DEG = 1.0
MAX_GAP_S = 0.1  # receiver.STALE_AFTER_S: a longer silence would read as a lost link
REPROBE_S = 0.5  # loop.REPROBE_US: a lost sensor is looked for again this often
STRAY_MT = [3.0, 0.0, -2.0]  # the stray_magnet library scenario's field

# The needle advances and the probe tilts slowly, so a stale value shows as a wrong one. The fault window
# (21 - 24 mm) lies in sensor A's share of the stroke, where sensor B has no say: there a fault of sensor A
# leaves the depth nothing to fall back on. Sensor B's faults run on HANDOVER, whose needle goes on into
# B's share, where a sensor B that did not come back would leave no depth.
BASE = {
    "name": "hil_fault",
    "duration_s": 6.5,
    "seed": 21,
    "guide_angle_deg": 30.0,
    "needle_length_mm": 80.0,
    "attitude": [[0, 0, 0, 0], [6.5, 0, 6, -4]],
    "depth": [[0, 15.0], [6.5, 35.0]],
}
HANDOVER = [[0, 25.0], [6.5, 50.0]]  # the fault window at 33 - 36 mm, where the two sensors hand over


@dataclass(frozen=True)
class Case:
    id: str
    faults: list[dict[str, Any]]
    flag: Flag | None  # raised while the fault lasts (None: a glitch the device must ride through)
    share: float = 0.95  # of the samples in the fault window that carry `flag`
    covering: Flag | None = None  # every sample in the window carries one of these (default: `flag`)
    until_s: float = FAULT_UNTIL_S  # when the fault is over as the device sees it
    recover_s: float = 0.1  # after that, the flag is gone for good within this
    detect_s: float = 0.06  # after it starts, the flag is up within this
    angles: bool = False  # the attitude restarts (the IMU was lost): SETTLING clears before the end
    depth: list[list[float]] | None = None  # the needle's path, if not BASE's


def _fault(kind: str, sensor: str, until: float = FAULT_UNTIL_S, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "sensor": sensor, "t_s": FAULT_AT_S, "until_s": until, **extra}


def _xfail(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=reason)


REPROBED_S = REPROBE_S + 0.1  # a lost sensor is back within one re-probe interval
CASES = [
    pytest.param(Case("imu_unplugged", [_fault("unplug", "imu")], Flag.IMU_FAULT, recover_s=REPROBED_S,
                      angles=True), id="imu_unplugged"),
    pytest.param(Case("hall_a_unplugged", [_fault("unplug", "hall_a")], Flag.HALL_FAULT, recover_s=REPROBED_S),
                 id="hall_a_unplugged"),
    pytest.param(Case("hall_b_unplugged", [_fault("unplug", "hall_b")], Flag.HALL_FAULT, recover_s=REPROBED_S,
                      depth=HANDOVER), id="hall_b_unplugged"),
    pytest.param(Case("imu_i2c_errors", [_fault("i2c_errors", "imu")], Flag.IMU_FAULT, recover_s=REPROBED_S,
                      angles=True), id="imu_i2c_errors"),
    # After a re-probe the field read before the fault must not come back as a depth (it would be stale).
    pytest.param(Case("hall_a_i2c_errors", [_fault("i2c_errors", "hall_a")], Flag.HALL_FAULT,
                      recover_s=REPROBED_S), id="hall_a_i2c_errors"),
    pytest.param(Case("hall_b_i2c_errors", [_fault("i2c_errors", "hall_b")], Flag.HALL_FAULT,
                      recover_s=REPROBED_S, depth=HANDOVER), id="hall_b_i2c_errors"),
    # A stuck IMU answers its re-probe, so the flag drops for the 64 samples it takes to find it stuck again;
    # meanwhile the restarted attitude says SETTLING: never a trusted angle.
    pytest.param(Case("imu_stuck", [_fault("stuck", "imu")], Flag.IMU_FAULT, share=0.6,
                      covering=Flag.IMU_FAULT | Flag.SETTLING, detect_s=0.1, recover_s=REPROBED_S, angles=True),
                 id="imu_stuck"),
    # A needle sensor whose field stops changing: found after 16 conversions that repeat it to the count.
    pytest.param(Case("hall_a_stuck", [_fault("stuck", "hall_a")], Flag.HALL_FAULT, detect_s=0.2,
                      recover_s=REPROBED_S), id="hall_a_stuck"),
    # A saturated field is no fault of the sensor: the depth is invalid while it lasts and back as soon as the
    # field is (with one sensor saturated, the other carries the depth where its share of the stroke reaches).
    pytest.param(Case("hall_a_saturated", [_fault("saturate", "hall_a")], None), id="hall_a_saturated"),
    pytest.param(Case("both_saturated", [_fault("saturate", "hall_a"), _fault("saturate", "hall_b")],
                      Flag.DEPTH_INVALID), id="both_saturated"),
    pytest.param(Case("stray_magnet", [_fault("stray_field", s, field_mt=STRAY_MT) for s in ("hall_a", "hall_b")],
                      Flag.DEPTH_INVALID, depth=HANDOVER), id="stray_magnet",
                 marks=_xfail("a 3 mT stray field moves the depth by up to 12 mm and the firmware flags it only "
                              "part of the time: nothing checks the field magnitude against the calibration")),
    # A brownout of zero length: the chip resets under the firmware's feet and answers on, unconfigured. The
    # IMU falls silent (its FIFO is off), found within loop.NO_DATA_US and set up again at the next re-probe;
    # a Hall sensor reports POR at the next read and is set up again at once, its depth never stale.
    pytest.param(Case("imu_brownout", [_fault("brownout", "imu", until=FAULT_AT_S)], Flag.IMU_FAULT,
                      until_s=FAULT_AT_S + REPROBE_S, detect_s=0.07, recover_s=0.15, angles=True),
                 id="imu_brownout"),
    pytest.param(Case("hall_a_brownout", [_fault("brownout", "hall_a", until=FAULT_AT_S)], None,
                      until_s=FAULT_AT_S), id="hall_a_brownout"),
    pytest.param(Case("hall_b_brownout", [_fault("brownout", "hall_b", until=FAULT_AT_S)], None,
                      until_s=FAULT_AT_S, depth=HANDOVER), id="hall_b_brownout"),
    # A longer dip: the chip is silent, then powers on unconfigured.
    pytest.param(Case("hall_a_brownout_dip", [_fault("brownout", "hall_a", until=FAULT_AT_S + 0.3)],
                      Flag.HALL_FAULT, until_s=FAULT_AT_S + 0.3, recover_s=REPROBED_S), id="hall_a_brownout_dip"),
]


@dataclass
class Run:
    t: np.ndarray  # scenario time, s
    seq: np.ndarray
    flags: list[Flag]
    depth: np.ndarray  # mm, NaN where NA
    angle: np.ndarray  # needle angle, deg, NaN where NA
    depth_true: np.ndarray
    angle_true: np.ndarray

    def has(self, flag: Flag) -> np.ndarray:
        return np.array([bool(f & flag) for f in self.flags])


def _run(run_scenario: Any, doc: dict[str, Any]) -> Run:
    s = run_scenario(doc, doc["name"])
    assert s.truth is not None
    nan = float("nan")
    return Run(
        t=s.device_s - doc.get("clock_start_s", 0.0),
        seq=np.array([x.seq for x in s.samples]),
        flags=[x.flags for x in s.samples],
        depth=np.array([nan if x.depth_mm is None else x.depth_mm for x in s.samples]),
        angle=np.array([nan if x.needle_angle_deg is None else x.needle_angle_deg for x in s.samples]),
        depth_true=s.truth["depth_mm"],
        angle_true=s.truth["needle_angle_deg"],
    )


def _wrong_values(r: Run, during: np.ndarray | None = None) -> tuple[float, float]:
    """The largest depth and angle errors among values the device did not flag (0 when none)."""
    sel = np.ones(len(r.t), bool) if during is None else during
    depth_err = np.abs(r.depth - r.depth_true)[sel & ~np.isnan(r.depth)]
    trusted = sel & ~np.isnan(r.angle) & ~r.has(Flag.SETTLING)
    angle_err = np.abs(r.angle - r.angle_true)[trusted]
    return (float(depth_err.max()) if len(depth_err) else 0.0, float(angle_err.max()) if len(angle_err) else 0.0)


def _plot_flags(r: Run, title: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_v, ax_f) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True, height_ratios=[2, 1.4])
    ax_v.plot(r.t, r.depth_true, color="0.6", lw=3, label="depth, truth")
    ax_v.plot(r.t, r.depth, ".", ms=2, label="depth, device")
    ax_a = ax_v.twinx()
    ax_a.plot(r.t, r.angle_true, color="tab:orange", lw=3, alpha=0.3)
    ax_a.plot(r.t, r.angle, ".", ms=2, color="tab:orange", label="needle angle, device")
    ax_v.set_ylabel("depth (mm)")
    ax_a.set_ylabel("needle angle (deg)")
    ax_v.legend(loc="upper left", fontsize=8)
    ax_a.legend(loc="lower right", fontsize=8)
    shown = [Flag.IMU_FAULT, Flag.HALL_FAULT, Flag.DEPTH_INVALID, Flag.STALE, Flag.SETTLING]
    for row, flag in enumerate(shown):
        on = r.has(flag)
        ax_f.plot(r.t[on], np.full(on.sum(), row), "|", ms=8)
    ax_f.set_yticks(range(len(shown)), [str(f.name) for f in shown])
    ax_f.set_ylim(-0.7, len(shown) - 0.3)
    for ax in (ax_v, ax_f):
        ax.axvspan(FAULT_AT_S, FAULT_UNTIL_S, color="tab:red", alpha=0.08)
    ax_f.set_xlabel("scenario time (s)")
    fig.suptitle(title)
    return fig


def _figures(case: Case, r: Run) -> dict[str, tuple[float, str, str]]:
    """What the report shows for a case, worked out before anything is asserted (a failing case shows it too)."""
    depth_err, angle_err = _wrong_values(r)
    out = {"worst unflagged depth error": (depth_err, "mm", f"< {DEPTH_TOL_MM}"),
           "worst unflagged angle error": (angle_err, "deg", f"< {ANGLE_TOL_DEG}")}
    if case.flag is None:
        return out
    flagged = r.has(case.flag) & (r.t >= FAULT_AT_S)
    if flagged.any():
        out["detected after"] = ((r.t[flagged][0] - FAULT_AT_S) * 1000, "ms", f"<= {case.detect_s * 1000:g}")
        out["cleared after"] = (max(r.t[flagged][-1] - case.until_s, 0.0) * 1000, "ms",
                                f"<= {case.recover_s * 1000:g}")
    during = (r.t >= FAULT_AT_S + case.detect_s) & (r.t < case.until_s)
    out["flagged while faulty"] = (float(r.has(case.flag)[during].mean()) * 100, "%", f">= {case.share:.0%}")
    return out


@pytest.mark.parametrize("case", CASES)
def test_a_fault_raises_its_flag_and_the_device_recovers(case: Case, run_scenario, report):
    r = _run(run_scenario, dict(BASE, name=case.id, faults=case.faults, depth=case.depth or BASE["depth"]))
    for name, (value, unit, target) in _figures(case, r).items():
        report.figure(f"{case.id}: {name}", round(value, 3), unit, target)
    if case.id == "hall_a_unplugged":
        report.plot("Needle sensor A unplugged from 2 s to 3 s: values and flags", _plot_flags(r, case.id))
    # The stream itself never stops: every sample arrives, none far from the one before.
    assert np.all(np.diff(r.seq) % 65536 == 1), "sequence gaps"
    gap = float(np.max(np.diff(r.t)))
    assert gap < MAX_GAP_S, f"the stream stopped for {gap * 1000:.0f} ms"
    # The protocol's rules for NA: a missing value is explained, an explained fault carries no number.
    for i, f in enumerate(r.flags):
        assert (Flag.IMU_FAULT in f) == np.isnan(r.angle[i]), (r.t[i], f)
        assert bool(f & (Flag.DEPTH_INVALID | Flag.HALL_FAULT)) == np.isnan(r.depth[i]), (r.t[i], f)
    during = (r.t >= FAULT_AT_S + case.detect_s) & (r.t < case.until_s)
    after = r.t >= case.until_s + case.recover_s
    if case.flag is not None:
        flagged = r.has(case.flag)
        first = r.t[flagged & (r.t >= FAULT_AT_S)]
        assert len(first), f"{case.flag.name} never raised"
        assert first[0] - FAULT_AT_S <= case.detect_s, f"{case.flag.name} raised only at {first[0]:.3f} s"
        share = float(flagged[during].mean())
        assert share >= case.share, f"{case.flag.name} on {share:.0%} of the samples while the fault lasted"
        covering = case.covering or case.flag
        uncovered = r.t[during & ~r.has(covering)]
        assert not len(uncovered), f"samples without {covering!r} during the fault, from {uncovered[0]:.3f} s"
        assert not flagged[after].any(), f"{case.flag.name} still raised at {r.t[after & flagged][0]:.3f} s"
    # Back to normal: no fault flag, depth valid and near the truth; the attitude settles again.
    faults = Flag.IMU_FAULT | Flag.HALL_FAULT | Flag.DEPTH_INVALID | Flag.STALE
    still = r.t[after & r.has(faults)]
    assert not len(still), f"a fault flag at {still[0]:.3f} s, after the fault was over"
    assert float(np.max(np.abs(r.depth - r.depth_true)[after])) < DEPTH_TOL_MM
    settled = after & ~r.has(Flag.SETTLING)
    if case.angles:
        assert settled[-1], "the attitude did not settle again before the end"
    assert float(np.max(np.abs(r.angle - r.angle_true)[settled])) < ANGLE_TOL_DEG
    # Nothing wrong went out unflagged, before, during or after.
    depth_err, angle_err = _wrong_values(r)
    assert depth_err < DEPTH_TOL_MM, f"a depth {depth_err:.2f} mm from the truth went out unflagged"
    assert angle_err < ANGLE_TOL_DEG, f"an angle {angle_err:.2f} deg from the truth went out unflagged"
