"""The needle as the overlay shows it at one frame: what the device measured, and how old that is.

The state at a frame comes from the device's samples interpolated at the frame's capture time; ``age_s`` is
how far the frame is past the newest sample behind it, so a stream that stopped shows as old, never as a
needle frozen in place. Values are None where the device sent NA (docs/protocol.md): the overlay never invents
them.
"""

from __future__ import annotations

from dataclasses import dataclass

from needletrack.protocol import Flag, Sample

DEFAULT_NOGO_MARGIN_MM = 5.0  # the firmware's default warning margin (firmware/store.py)
NO_FLAGS = Flag(0)


@dataclass(frozen=True)
class NeedleState:
    depth_mm: float | None  # insertion length beyond the guide exit, along the needle
    tip_depth_mm: float | None  # the tip below the transducer face
    needle_angle_deg: float | None  # elevation below horizontal, world frame
    guide_angle_deg: float | None  # the guide's angle to the transducer face: the needle's angle in the image
    flags: Flag = NO_FLAGS
    age_s: float = 0.0  # frame time minus the time of the newest sample used
    nogo_depth_mm: float | None = None  # tip depth the clinician marked as no-go; None: none set
    nogo_margin_mm: float = DEFAULT_NOGO_MARGIN_MM
    twitch_age_s: float | None = None  # time since the last twitch; None: none seen

    @staticmethod
    def from_sample(s: Sample, *, age_s: float = 0.0, nogo_depth_mm: float | None = None,
                    nogo_margin_mm: float = DEFAULT_NOGO_MARGIN_MM,
                    twitch_age_s: float | None = None) -> NeedleState:
        if Flag.TWITCH in s.flags:
            twitch_age_s = 0.0
        return NeedleState(s.depth_mm, s.tip_depth_mm, s.needle_angle_deg, s.guide_angle_deg, s.flags, age_s,
                           nogo_depth_mm, nogo_margin_mm, twitch_age_s)
