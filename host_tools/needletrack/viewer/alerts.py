"""The alerts the viewer shows: a pure function of the needle state, the signal, the device flags and battery.

Two priorities, as on medical monitors: HIGH (red: the needle cannot be trusted or is where it must not be) and
MEDIUM (amber: act soon). An alert is shown for as long as its condition holds and cannot be dismissed; muting
silences its sound only (``cues``, ``sound``).

While the signal is lost, what the last samples said about the needle (no-go, sensor faults, calibration) is
not shown: it is out of date, and NO SIGNAL already says the needle is not known. The battery, read every few
seconds from the device's status, is shown still.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from needletrack import overlay
from needletrack.needle_state import NeedleState
from needletrack.protocol import Flag
from needletrack.viewer.procedure import SetupInfo, SetupState

LOW_BATTERY_PCT = 15  # the firmware's own threshold (firmware/battery.py), for a status read before the flag


class Priority(enum.IntEnum):
    MEDIUM = 2
    HIGH = 3


class AlertKind(enum.Enum):
    NO_SIGNAL = "no signal"
    SETUP_MISMATCH = "setup mismatch"
    NOGO_REACHED = "no-go reached"
    IMU_FAULT = "imu fault"
    HALL_FAULT = "needle sensor fault"
    NOGO_NEAR = "no-go near"
    UNCALIBRATED = "depth uncalibrated"
    DEPTH_INVALID = "depth invalid"
    LOW_BATTERY = "low battery"
    SETUP_UNCONFIRMED = "setup not confirmed"


# (background, text) as #rrggbb: white on red and black on amber, both well past a 4.5:1 contrast ratio.
COLOURS = {Priority.HIGH: ("#d0021b", "#ffffff"), Priority.MEDIUM: ("#ffb000", "#000000")}


@dataclass(frozen=True)
class Alert:
    kind: AlertKind
    priority: Priority
    title: str
    detail: str

    @property
    def background(self) -> str:
        return COLOURS[self.priority][0]

    @property
    def foreground(self) -> str:
        return COLOURS[self.priority][1]


def _nogo(state: NeedleState, flags: Flag) -> overlay.NogoLevel:
    if state.nogo_depth_mm is not None:
        return overlay.nogo_level(state, max_age_s=float("inf"))  # staleness is decided by the caller
    # No depth marked on the host: the device's own no-go flags still count.
    if Flag.NOGO_REACHED in flags:
        return overlay.NogoLevel.REACHED
    if Flag.NOGO_NEAR in flags:
        return overlay.NogoLevel.NEAR
    return overlay.NogoLevel.NONE


def active_alerts(state: NeedleState | None, stale: bool, flags: Flag, battery_pct: int | None, *,
                  watching: bool = True, no_signal_detail: str = "", setup: SetupInfo | None = None) -> list[Alert]:
    """The alerts to show now, most urgent first.

    ``state``: the newest needle state (None before any sample); ``stale``: the signal is lost (stale data, link
    down, or an outage too recent to have been seen); ``flags``: the device's newest flags; ``battery_pct``: the
    device's last reported charge (None: unknown); ``watching``: a probe is connected or being reconnected (before
    the first connection and after a deliberate disconnect, silence is not an alarm); ``setup``: the procedure's
    setup against the probe's (None: not checked). A setup mismatch is about the probe's configuration, not the
    needle data, so it shows whether the signal is lost or not."""
    out: list[Alert] = []
    if setup is not None and watching:
        if setup.state is SetupState.MISMATCH:
            out.append(Alert(AlertKind.SETUP_MISMATCH, Priority.HIGH, "SETUP MISMATCH: NEEDLE HIDDEN",
                             f"{setup.problem}: confirm the setup again (U)"))
        elif setup.state is SetupState.NOT_SET and setup.device is not None:
            out.append(Alert(AlertKind.SETUP_UNCONFIRMED, Priority.MEDIUM, "SETUP NOT CONFIRMED",
                             f"the probe uses {setup.device.describe()}: confirm the procedure's (U)"))
    if stale and watching:
        out.append(Alert(AlertKind.NO_SIGNAL, Priority.HIGH, "NO SIGNAL",
                         no_signal_detail or "needle position unknown: the needle is hidden"))
    if not stale and state is not None:
        flags = flags | state.flags
        level = _nogo(state, flags)
        tip, nogo = state.tip_depth_mm, state.nogo_depth_mm
        if level is overlay.NogoLevel.REACHED:
            detail = (f"tip {tip - nogo:.1f} mm past the no-go depth ({nogo:.1f} mm)"
                      if tip is not None and nogo is not None else "the device reports the tip at the no-go depth")
            out.append(Alert(AlertKind.NOGO_REACHED, Priority.HIGH, "NO-GO DEPTH REACHED", detail))
        elif level is overlay.NogoLevel.NEAR:
            detail = (f"{nogo - tip:.1f} mm to the no-go depth" if tip is not None and nogo is not None
                      else "the device reports the tip near the no-go depth")
            out.append(Alert(AlertKind.NOGO_NEAR, Priority.MEDIUM, "NEAR NO-GO", detail))
        if Flag.IMU_FAULT in flags:
            out.append(Alert(AlertKind.IMU_FAULT, Priority.HIGH, "IMU FAULT", "needle angle not measured"))
        if Flag.HALL_FAULT in flags:
            out.append(Alert(AlertKind.HALL_FAULT, Priority.HIGH, "NEEDLE SENSOR FAULT", "needle depth not measured"))
        if Flag.UNCALIBRATED in flags:
            out.append(Alert(AlertKind.UNCALIBRATED, Priority.MEDIUM, "DEPTH UNCALIBRATED",
                             "calibrate the needle sensor before use"))
        if Flag.DEPTH_INVALID in flags and Flag.HALL_FAULT not in flags:
            out.append(Alert(AlertKind.DEPTH_INVALID, Priority.MEDIUM, "DEPTH INVALID",
                             "needle magnet out of the sensor's range"))
    low_flag = Flag.LOW_BATTERY in flags or (state is not None and Flag.LOW_BATTERY in state.flags)
    if low_flag or (battery_pct is not None and battery_pct <= LOW_BATTERY_PCT):
        title = "LOW BATTERY" if battery_pct is None else f"LOW BATTERY {battery_pct} %"
        out.append(Alert(AlertKind.LOW_BATTERY, Priority.MEDIUM, title, "charge the probe after this procedure"))
    order = list(AlertKind)
    return sorted(out, key=lambda a: (-a.priority, order.index(a.kind)))
