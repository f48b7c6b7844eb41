"""Renders the overlay's main states on a real ultrasound DICOM and on synthetic frames, 640x480 and
1920x1080.

    .venv/bin/python bench/render_overlays.py [--out docs/images] [--only clear near ...]

The real frame is gdcm-US-ALOKA-16.dcm from pydicom-data (left view, calibrated by its Sequence of Ultrasound
Regions; the guide exit put at the region's left edge). The synthetic frames are the dry_needling scenario's,
each state shown on the frame whose true depth is the state's. At 1920x1080 the real frame is scaled to the
screen height and letterboxed, its calibration moved along (Calibration.resized); the synthetic probe renders
natively at each size.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from pydicom.data import get_testdata_file

from needletrack import overlay
from needletrack.frames.dicom import DicomSource
from needletrack.frames.synthetic import SyntheticSource
from needletrack.geometry import Calibration, from_region
from needletrack.needle_state import NeedleState
from needletrack.protocol import Flag
from needletrack.sim import scenario

SIZES = ((640, 480), (1920, 1080))
# Full-HD PNGs of speckle weigh about 1 MB each: by default only these states are kept at that size.
FULL_HD_STATES = ("near", "no_signal")
DICOM_FILE = "gdcm-US-ALOKA-16.dcm"
DICOM_GUIDE_DEG = 40.0
DICOM_NOGO_MM = 45.0


def letterbox(image: np.ndarray, cal: Calibration, size: tuple[int, int]) -> tuple[np.ndarray, Calibration]:
    """The image scaled to fit ``size`` and centred on black, and its calibration moved the same way."""
    w, h = size
    k = min(w / image.shape[1], h / image.shape[0])
    sw, sh = round(image.shape[1] * k), round(image.shape[0] * k)
    ox, oy = (w - sw) // 2, (h - sh) // 2
    canvas = np.zeros((h, w, *image.shape[2:]), np.uint8)
    canvas[oy:oy + sh, ox:ox + sw] = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_LINEAR)
    return canvas, cal.resized(size, offset=(ox, oy), scale=k)


def _state(depth: float, guide: float, nogo: float, **kw: object) -> NeedleState:
    tip = depth * math.sin(math.radians(guide))
    base = NeedleState(depth, tip, guide - 0.6, guide, Flag(0), 0.04, nogo, 5.0)
    return replace(base, **kw)  # type: ignore[arg-type]


def states(depth_for_tip: Callable[[float], float], guide: float, nogo: float) -> dict[str, NeedleState]:
    """The overlay states worth a picture, with the tip placed relative to the no-go depth."""
    clear = _state(depth_for_tip(nogo - 9.0), guide, nogo)
    near = _state(depth_for_tip(nogo - 2.5), guide, nogo, flags=Flag.NOGO_NEAR)
    reached = _state(depth_for_tip(nogo + 0.8), guide, nogo, flags=Flag.NOGO_REACHED)
    return {
        "clear": clear,
        "near": near,
        "reached": reached,
        "twitch": replace(near, flags=Flag.NOGO_NEAR | Flag.TWITCH, twitch_age_s=0.1),
        "no_signal": replace(near, age_s=1.4),
        "faults": replace(clear, depth_mm=None, tip_depth_mm=None, flags=Flag.HALL_FAULT | Flag.UNCALIBRATED),
    }


def _write(path: Path, image: np.ndarray) -> None:
    cv2.imwrite(str(path), image, [cv2.IMWRITE_PNG_COMPRESSION, 9])


def render(out: Path, names: tuple[str, ...] | None = None, every_size: bool = False) -> list[Path]:
    """Writes overlay_{dicom,synthetic}_{WxH}_{state}.png into ``out``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []

    path = get_testdata_file(DICOM_FILE, download=False)
    if not isinstance(path, str):
        raise SystemExit(f"{DICOM_FILE} is not installed: pip install pydicom-data")
    dcm = DicomSource(path)
    dframe = dcm.frame(0)
    assert dcm.region is not None
    dcal = from_region(dcm.region, probe_model="ALOKA (pydicom-data)", image_size=dframe.size)
    sin_g = math.sin(math.radians(DICOM_GUIDE_DEG))
    real = states(lambda tip: (tip - dcal.exit_depth_mm) / sin_g, DICOM_GUIDE_DEG, DICOM_NOGO_MM)

    sc = scenario.load("dry_needling")
    assert sc.nogo_depth_mm is not None
    g = sc.guide_angle_deg
    truth_depths = SyntheticSource(sc, size=(64, 48)).truth
    n = math.floor(sc.duration_s * 25.0) + 1
    reachable = np.array([truth_depths(i).depth_mm for i in range(n)])

    def scenario_depth(tip: float) -> float:
        # The scenario depth nearest the one that puts the tip there, so a scenario frame shows exactly it.
        return float(reachable[np.argmin(np.abs(reachable - tip / math.sin(math.radians(g))))])

    synthetic = states(scenario_depth, g, sc.nogo_depth_mm)

    for size in SIZES:
        tag = f"{size[0]}x{size[1]}"
        # Each state's frame is the scenario frame whose true depth is the state's: picture and readouts
        # agree.
        syn = SyntheticSource(sc, size=size)
        depths = np.array([syn.truth(i).depth_mm for i in range(syn.frame_count)])
        frames = {}
        for name, st in synthetic.items():
            want = st.depth_mm if st.depth_mm is not None else synthetic["clear"].depth_mm
            frames[name] = syn.frame(int(np.argmin(np.abs(depths - want))))
        if size == dframe.size:
            dimage, dcal_sized = dframe.image, dcal
        else:
            dimage, dcal_sized = letterbox(dframe.image, dcal, size)
        for name in synthetic:
            if names and name not in names:
                continue
            if size != SIZES[0] and not every_size and name not in FULL_HD_STATES:
                continue
            p = out / f"overlay_synthetic_{tag}_{name}.png"
            _write(p, overlay.draw(frames[name].image, syn.calibration, synthetic[name]))
            written.append(p)
            p = out / f"overlay_dicom_{tag}_{name}.png"
            cal = None if name == "faults" else dcal_sized  # also shows a missing image calibration
            _write(p, overlay.draw(dimage, cal, real[name]))
            written.append(p)
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "images")
    ap.add_argument("--only", nargs="*", help="state names (clear near reached twitch no_signal faults)")
    ap.add_argument("--all-sizes", action="store_true", help=f"every state at 1920x1080 too, not only "
                    f"{', '.join(FULL_HD_STATES)}")
    args = ap.parse_args()
    t0 = time.perf_counter()
    paths = render(args.out, tuple(args.only) if args.only else None, args.all_sizes)
    total = sum(p.stat().st_size for p in paths)
    for p in paths:
        print(f"{p}  {p.stat().st_size / 1024:.0f} KiB")
    print(f"{len(paths)} images, {total / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
