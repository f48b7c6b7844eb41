"""Synthetic ultrasound frames from a scenario: the needle drawn where the scenario says it truly is.

The probe's image frame is mm, x lateral from the array's end on the guide side, z axial from the transducer
face; the guide exit sits at ``exit_mm`` (by default 2 mm beyond the array's end, at the face, as the clip
holds it). At scenario time t the tip is at ``exit + depth(t) * (cos g, sin g)`` for the scenario's guide
angle g, so the source knows the truth of every frame (:meth:`SyntheticSource.truth`) and its exact
:attr:`calibration`.

Frame k is at scenario time ``k / fps`` (the virtual device's clock reads scenario time) and host time
``start_s + k / fps``. With ``realtime``, ``start_s`` is a ``time.monotonic()`` instant and each frame is
delivered when the clock reaches its time, as a scanner delivers them; frames whose time had passed when
the iteration began are skipped, as a live scanner never shows the past.

The tissue is fixed per seed; each frame adds its own electronic noise, seeded by the seed and the frame index,
so any frame can be rebuilt alone and two runs give identical frames.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from needletrack.frames import bmode
from needletrack.frames.base import Frame, FrameSource
from needletrack.geometry import Calibration, Point, tip_px
from needletrack.sim.scenario import Scenario

NOISE_LEVEL = 0.003  # electronic noise amplitude (the pleura's echo is 1)


@dataclass(frozen=True)
class Truth:
    scenario_s: float
    depth_mm: float  # insertion beyond the guide exit
    guide_angle_deg: float
    tip_mm: Point  # (x, z) in the image frame
    tip_px: Point


class SyntheticSource(FrameSource):
    frame_count: int

    def __init__(self, scenario: Scenario, *, fps: float = 25.0, size: tuple[int, int] = (640, 480),
                 tissue: bmode.Tissue | None = None, exit_mm: Point = (-2.0, 0.0), start_s: float = 0.0,
                 realtime: bool = False) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.scenario = scenario
        self.fps = fps
        self.size = size
        if tissue is None:
            # The marked no-go structure is the pleura, a little deeper than the no-go depth.
            pleura = None if scenario.nogo_depth_mm is None else scenario.nogo_depth_mm + 3.0
            tissue = bmode.Tissue(pleura_mm=pleura if pleura is not None else 30.0)
        self.tissue = tissue
        self.exit_mm = exit_mm
        self.start_s = start_s
        self.realtime = realtime
        self.name = f"synthetic:{scenario.name}"
        self.frame_count = math.floor(scenario.duration_s * fps + 1e-9) + 1
        self.mm_per_px = bmode.spacing_mm(size, tissue)
        s = self.mm_per_px
        self.calibration = Calibration("synthetic", size, (exit_mm[0] / s, exit_mm[1] / s), 0.0, (s, s), 1,
                                       "synthetic")
        self._background = bmode.background(size, tissue, scenario.seed)

    def truth(self, index: int) -> Truth:
        t = index / self.fps
        depth = float(self.scenario.depth_at(t))
        g = self.scenario.guide_angle_deg
        rad = math.radians(g)
        tip_mm = (self.exit_mm[0] + depth * math.cos(rad), self.exit_mm[1] + depth * math.sin(rad))
        return Truth(t, depth, g, tip_mm, tip_px(self.calibration, depth, g))

    def frame(self, index: int) -> Frame:
        truth = self.truth(index)
        amp = self._background.copy()
        if truth.depth_mm > 0:
            bmode.add_needle(amp, self.calibration.exit_px, truth.tip_px, self.mm_per_px)
        rng = np.random.default_rng((self.scenario.seed, index))
        amp += NOISE_LEVEL * np.abs(rng.standard_normal(amp.shape, dtype=np.float32))
        image = bmode.compress(amp)
        spacing = (self.mm_per_px, self.mm_per_px)
        return Frame(image, self.start_s + truth.scenario_s, spacing, None, self.name, index)

    def frames(self) -> Iterator[Frame]:
        first = 0
        if self.realtime:
            first = max(0, math.ceil((time.monotonic() - self.start_s) * self.fps))
        for index in range(first, self.frame_count):
            if self.realtime:
                wait = self.start_s + index / self.fps - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            yield self.frame(index)
