"""The procedure's setup: the guide detent and the needle the clinician chose, against what the probe uses.

The probe computes the tip depth from its configured detent and limits the insertion by its configured needle
length, so a probe set up for another detent puts the tip in the wrong place however well it measures. The
viewer therefore holds the clinician's choice (:class:`Procedure`), sends it, reads the probe's configuration
back, and compares the two on every CONFIG record and every sample (each sample carries the detent in use):

::

    NOT_SET ──confirm──► CONFIRMING ──CONFIG matches──► CONFIRMED
                              │                             │ a CONFIG or sample that differs
                              └──differs / refused──► MISMATCH ◄┘   (the needle is hidden until confirmed again)

Before anything is confirmed the needle is drawn with the probe's own configuration, under a notice that the
setup is unconfirmed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from needletrack.protocol import Config

GUIDE_DETENTS_DEG = (20.0, 30.0, 45.0, 60.0)  # the clip's detents (hardware/ reference design)
# Dry needling needles (filiform, 0.16-0.30 mm): the lengths sold, 13 mm to 100 mm.
NEEDLE_LENGTHS_MM = (13.0, 15.0, 25.0, 30.0, 40.0, 50.0, 60.0, 75.0, 90.0, 100.0)
ANGLE_TOLERANCE_DEG = 0.005  # the wire carries 0.01 deg: anything more is a different detent
LENGTH_TOLERANCE_MM = 0.05  # the wire carries 0.1 mm


@dataclass(frozen=True)
class Procedure:
    guide_angle_deg: float
    needle_length_mm: float

    @staticmethod
    def of(config: Config) -> Procedure:
        return Procedure(config.guide_angle_deg, config.needle_length_mm)

    def describe(self) -> str:
        return f"guide {self.guide_angle_deg:g}°, needle {self.needle_length_mm:g} mm"


class SetupState(enum.Enum):
    NOT_SET = "not confirmed"
    CONFIRMING = "confirming"
    CONFIRMED = "confirmed"
    MISMATCH = "mismatch"


@dataclass(frozen=True)
class SetupInfo:
    """What the window shows of the setup: the clinician's choice, the probe's, and where the two stand."""

    state: SetupState = SetupState.NOT_SET
    wanted: Procedure | None = None
    device: Procedure | None = None  # from the probe's last CONFIG record
    problem: str = ""  # why MISMATCH, in words

    @property
    def hides_needle(self) -> bool:
        return self.state is SetupState.MISMATCH


def differences(wanted: Procedure, device: Procedure) -> list[str]:
    """What differs between the two, in words (empty when they agree)."""
    out = []
    if abs(wanted.guide_angle_deg - device.guide_angle_deg) > ANGLE_TOLERANCE_DEG:
        out.append(f"the probe's guide detent is {device.guide_angle_deg:g}°, the procedure's "
                   f"{wanted.guide_angle_deg:g}°")
    if abs(wanted.needle_length_mm - device.needle_length_mm) > LENGTH_TOLERANCE_MM:
        out.append(f"the probe's needle length is {device.needle_length_mm:g} mm, the procedure's "
                   f"{wanted.needle_length_mm:g} mm")
    return out


def check_config(wanted: Procedure | None, config: Config) -> SetupInfo:
    """The setup after a CONFIG record."""
    device = Procedure.of(config)
    if wanted is None:
        return SetupInfo(SetupState.NOT_SET, None, device)
    diff = differences(wanted, device)
    if diff:
        return SetupInfo(SetupState.MISMATCH, wanted, device, "; ".join(diff))
    return SetupInfo(SetupState.CONFIRMED, wanted, device)


def check_sample_detent(info: SetupInfo, guide_angle_deg: float | None) -> SetupInfo:
    """The setup after a sample: a confirmed setup whose samples come with another detent is a mismatch (the
    probe was reconfigured from elsewhere, or restarted with other settings)."""
    if info.state is not SetupState.CONFIRMED or info.wanted is None or guide_angle_deg is None:
        return info
    if abs(guide_angle_deg - info.wanted.guide_angle_deg) <= ANGLE_TOLERANCE_DEG:
        return info
    return SetupInfo(SetupState.MISMATCH, info.wanted, info.device,
                     f"the probe measures with a {guide_angle_deg:g}° detent, the procedure's is "
                     f"{info.wanted.guide_angle_deg:g}°")
