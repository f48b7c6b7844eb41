"""Image geometry: where the needle is in an ultrasound image.

Pixel coordinates are ``(col, row)`` floats with integer values at pixel centres (numpy indexing and OpenCV
drawing agree on that). The image frame is the probe's: x lateral, z axial from the transducer face, in mm.

A :class:`Calibration` ties the two for one probe model at one image size and depth setting:

- ``exit_px``: the guide exit in pixels (it may lie outside the image: the clip sits beside the array);
- ``face_row``: the row of the transducer face (z = 0), so tip depths and the no-go depth become rows;
- ``mm_per_px``: ``(sx, sy)``, lateral mm per column and axial mm per row;
- ``lateral``: +1 when probe x (from the guide side across the image) runs to the right, -1 when mirrored.

The tip at insertion depth d along a guide at angle g is ``exit + d * (cos g, sin g)`` in mm, hence
``exit_px + d * (lateral * cos g / sx, sin g / sy)`` in pixels.

Calibrations come from a DICOM's Sequence of Ultrasound Regions (:func:`from_region`) or, where the images
carry none, from two clicked needle tips at two known depths (:func:`from_two_points`).
:class:`CalibrationStore` keeps one per probe model in a JSON file.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

Point = tuple[float, float]

# Plausible ultrasound pixel sizes: 5 um (a 1920 px image of a 10 mm field) to 1 mm (a 200 px image of 20 cm).
MM_PER_PX_RANGE = (0.005, 1.0)
MIN_DEPTH_SPAN_MM = 5.0  # two clicks closer than this along the needle give a scale worse than a few percent
MIN_POINT_SPAN_PX = 20.0


class CalibrationError(ValueError):
    """A calibration that cannot be made, loaded or used; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class Region:
    """A calibrated image area (DICOM Sequence of Ultrasound Regions item): pixel bounds, inclusive."""

    x0: int
    y0: int
    x1: int
    y1: int
    mm_per_px: tuple[float, float]  # (sx, sy)
    reference_px: Point | None = None  # absolute pixel of the region's reference point, if the file gives one
    reference_mm: Point | None = None  # physical (x, z) at the reference point, mm

    @property
    def width(self) -> int:
        return self.x1 - self.x0 + 1

    @property
    def height(self) -> int:
        return self.y1 - self.y0 + 1

    def face_row(self) -> float:
        """The transducer face's row: from the reference point when the file gives its depth, else the top."""
        if self.reference_px is not None and self.reference_mm is not None:
            return self.reference_px[1] - self.reference_mm[1] / self.mm_per_px[1]
        return float(self.y0)


@dataclass(frozen=True)
class Calibration:
    probe_model: str
    image_size: tuple[int, int]  # (width, height) px of the images this calibration belongs to
    exit_px: Point
    face_row: float
    mm_per_px: tuple[float, float]
    lateral: int = 1
    method: str = "manual"  # how it was made: dicom-region, two-point, synthetic, manual
    region: Region | None = None

    def __post_init__(self) -> None:
        _check_calibration(self)

    @property
    def exit_depth_mm(self) -> float:
        """The guide exit's depth below the transducer face (0 when the exit sits at the face)."""
        return (self.exit_px[1] - self.face_row) * self.mm_per_px[1]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(doc: Any) -> Calibration:
        if not isinstance(doc, dict):
            raise CalibrationError("a calibration is a JSON object")
        try:
            region = doc.get("region")
            return Calibration(
                probe_model=str(doc["probe_model"]),
                image_size=(int(doc["image_size"][0]), int(doc["image_size"][1])),
                exit_px=(float(doc["exit_px"][0]), float(doc["exit_px"][1])),
                face_row=float(doc["face_row"]),
                mm_per_px=(float(doc["mm_per_px"][0]), float(doc["mm_per_px"][1])),
                lateral=int(doc.get("lateral", 1)),
                method=str(doc.get("method", "manual")),
                region=None if region is None else _region_from_json(region),
            )
        except (KeyError, IndexError, TypeError, ValueError) as e:
            if isinstance(e, CalibrationError):
                raise
            raise CalibrationError(f"calibration JSON: missing or malformed field ({e!r})") from None

    def resized(self, size: tuple[int, int], offset: Point = (0.0, 0.0),
                scale: float | None = None) -> Calibration:
        """The same calibration on the image drawn at ``size``, scaled by ``scale`` (default: to fit the
        width) and shifted by ``offset`` px (letterboxing).

        Pixel centres map as c' = (c + 0.5) * scale - 0.5 + offset."""
        k = size[0] / self.image_size[0] if scale is None else scale

        def move(p: Point) -> Point:
            return ((p[0] + 0.5) * k - 0.5 + offset[0], (p[1] + 0.5) * k - 0.5 + offset[1])

        return replace(self, image_size=size, exit_px=move(self.exit_px),
                       face_row=move((0.0, self.face_row))[1],
                       mm_per_px=(self.mm_per_px[0] / k, self.mm_per_px[1] / k), region=None)


def _region_from_json(doc: dict[str, Any]) -> Region:
    ref_px, ref_mm = doc.get("reference_px"), doc.get("reference_mm")
    return Region(int(doc["x0"]), int(doc["y0"]), int(doc["x1"]), int(doc["y1"]),
                  (float(doc["mm_per_px"][0]), float(doc["mm_per_px"][1])),
                  None if ref_px is None else (float(ref_px[0]), float(ref_px[1])),
                  None if ref_mm is None else (float(ref_mm[0]), float(ref_mm[1])))


def _check_calibration(c: Calibration) -> None:
    w, h = c.image_size
    if w < 16 or h < 16:
        raise CalibrationError(f"image size {w}x{h} px is too small for an ultrasound image")
    lo, hi = MM_PER_PX_RANGE
    for axis, v in zip("xy", c.mm_per_px, strict=True):
        if not math.isfinite(v) or not lo <= v <= hi:
            raise CalibrationError(f"mm_per_px {axis} = {v}: outside the plausible {lo} .. {hi} mm/px")
    if c.lateral not in (1, -1):
        raise CalibrationError(f"lateral must be +1 or -1, got {c.lateral}")
    if not all(math.isfinite(v) for v in (*c.exit_px, c.face_row)):
        raise CalibrationError("exit_px and face_row must be finite")
    # The exit sits beside the array, never far from the image: a clip more than an image away is an error.
    if not (-w <= c.exit_px[0] <= 2 * w and -h <= c.exit_px[1] <= 2 * h):
        raise CalibrationError(f"guide exit {c.exit_px} px is more than an image away from the {w}x{h} image")


def needle_direction_px(cal: Calibration, guide_angle_deg: float) -> Point:
    """Pixels per mm of insertion along a guide at ``guide_angle_deg`` to the transducer face."""
    g = math.radians(guide_angle_deg)
    return (cal.lateral * math.cos(g) / cal.mm_per_px[0], math.sin(g) / cal.mm_per_px[1])


def tip_px(cal: Calibration, depth_mm: float, guide_angle_deg: float) -> Point:
    """The needle tip's pixel at insertion depth ``depth_mm`` beyond the guide exit."""
    dx, dz = needle_direction_px(cal, guide_angle_deg)
    return (cal.exit_px[0] + depth_mm * dx, cal.exit_px[1] + depth_mm * dz)


def depth_row(cal: Calibration, z_mm: float) -> float:
    """The row at ``z_mm`` below the transducer face (a tip depth, the no-go depth)."""
    return cal.face_row + z_mm / cal.mm_per_px[1]


def px_to_mm(cal: Calibration, p: Point) -> Point:
    """Image-frame (x from the guide exit, z from the face) in mm of a pixel."""
    return ((p[0] - cal.exit_px[0]) * cal.lateral * cal.mm_per_px[0],
            (p[1] - cal.face_row) * cal.mm_per_px[1])


@dataclass(frozen=True)
class Trajectory:
    exit_px: Point
    tip_px: Point
    end_px: Point  # where the straight-ahead path leaves the image (the tip itself if it is already outside)


def trajectory(cal: Calibration, depth_mm: float, guide_angle_deg: float,
               image_size: tuple[int, int] | None = None) -> Trajectory:
    """The needle's path in pixels: exit to tip (inserted) and tip to the image border (ahead)."""
    w, h = image_size or cal.image_size
    dx, dz = needle_direction_px(cal, guide_angle_deg)
    ex, ez = cal.exit_px
    # Insertion length at which the ray from the exit crosses the last image border it meets.
    exits = []
    for d, e, limit in ((dx, ex, w - 1), (dz, ez, h - 1)):
        if d > 0:
            exits.append((limit - e) / d)
        elif d < 0:
            exits.append(-e / d)
    far = max(min(exits), depth_mm) if exits else depth_mm
    tip = tip_px(cal, depth_mm, guide_angle_deg)
    return Trajectory(cal.exit_px, tip, (ex + far * dx, ez + far * dz))


def from_region(region: Region, *, probe_model: str, image_size: tuple[int, int], lateral: int = 1,
                exit_offset_mm: Point = (0.0, 0.0)) -> Calibration:
    """Calibration from a DICOM ultrasound region: its spacing and face row, and the guide exit at the
    region's edge on the guide side, moved by the clip's ``exit_offset_mm`` (beyond the array's end, below
    the face)."""
    sx, sy = region.mm_per_px
    face = region.face_row()
    edge = region.x0 if lateral == 1 else region.x1
    exit_col = edge - lateral * exit_offset_mm[0] / sx
    exit_px = (exit_col, face + exit_offset_mm[1] / sy)
    return Calibration(probe_model, image_size, exit_px, face, (sx, sy), lateral, "dicom-region", region)


def from_two_points(p1: Point, depth1_mm: float, p2: Point, depth2_mm: float, *, guide_angle_deg: float,
                    image_size: tuple[int, int], probe_model: str, face_row: float | None = None,
                    angle_tolerance_deg: float = 5.0) -> Calibration:
    """Calibration from the needle tip clicked at two insertion depths (mm beyond the guide exit, as the
    device reads them). Pixels are taken as square; the needle's angle in the image must match the guide angle
    within ``angle_tolerance_deg``, which catches a click on the wrong echo or the wrong detent. ``face_row``
    defaults to the exit's row (the guide exit at the transducer face)."""
    w, h = image_size
    for name, p in (("first point", p1), ("second point", p2)):
        if not all(math.isfinite(v) for v in p) or not (0 <= p[0] <= w - 1 and 0 <= p[1] <= h - 1):
            raise CalibrationError(f"{name} {p} is not inside the {w}x{h} image")
    for name, d in (("first depth", depth1_mm), ("second depth", depth2_mm)):
        if not math.isfinite(d) or not 0.0 <= d <= 200.0:
            raise CalibrationError(f"{name} {d} mm is outside 0 .. 200 mm")
    if not 10.0 <= guide_angle_deg <= 80.0:
        raise CalibrationError(f"guide angle {guide_angle_deg} deg is outside the guide's 10 .. 80 deg")
    if abs(depth2_mm - depth1_mm) < MIN_DEPTH_SPAN_MM:
        raise CalibrationError(f"the two depths ({depth1_mm} and {depth2_mm} mm) must differ by at least "
                               f"{MIN_DEPTH_SPAN_MM} mm")
    if depth2_mm < depth1_mm:
        p1, depth1_mm, p2, depth2_mm = p2, depth2_mm, p1, depth1_mm
    vx, vz = p2[0] - p1[0], p2[1] - p1[1]
    span = math.hypot(vx, vz)
    if span < MIN_POINT_SPAN_PX:
        raise CalibrationError(f"the two points are {span:.1f} px apart: at least {MIN_POINT_SPAN_PX:.0f} px "
                               "needed")
    if vz <= 0:
        raise CalibrationError("the deeper needle point is not lower in the image than the shallower one")
    seen = math.degrees(math.atan2(vz, abs(vx)))
    if abs(seen - guide_angle_deg) > angle_tolerance_deg:
        raise CalibrationError(f"the points put the needle at {seen:.1f} deg to the transducer face, the "
                               f"guide is at {guide_angle_deg:.1f} deg: check the clicks and the detent")
    scale = (depth2_mm - depth1_mm) / span
    lo, hi = MM_PER_PX_RANGE
    if not lo <= scale <= hi:
        raise CalibrationError(f"the points give {scale:.4f} mm/px, outside the plausible {lo} .. {hi} mm/px")
    back = depth1_mm / scale / span
    exit_px = (p1[0] - back * vx, p1[1] - back * vz)
    return Calibration(probe_model, image_size, exit_px, exit_px[1] if face_row is None else face_row,
                       (scale, scale), 1 if vx > 0 else -1, "two-point")


def default_store_path() -> Path:
    """``$NEEDLETRACK_CONFIG/image_calibrations.json``, else the user's configuration directory."""
    env = os.environ.get("NEEDLETRACK_CONFIG")
    if env:
        base = Path(env)
    elif sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home())) / "needletrack"
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support" / "needletrack"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "needletrack"
    return base / "image_calibrations.json"


class CalibrationStore:
    """Image calibrations per probe model in one JSON file, replaced atomically on every save."""

    VERSION = 1

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_store_path()

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CalibrationError(f"{self.path}: unreadable calibration store ({e})") from None
        if (not isinstance(doc, dict) or doc.get("version") != self.VERSION
                or not isinstance(doc.get("probes"), dict)):
            raise CalibrationError(f"{self.path}: not a version {self.VERSION} calibration store")
        probes: dict[str, Any] = doc["probes"]
        return probes

    def models(self) -> list[str]:
        return sorted(self._read())

    def load(self, probe_model: str) -> Calibration:
        probes = self._read()
        if probe_model not in probes:
            known = ", ".join(sorted(probes)) or "none"
            raise CalibrationError(f"no image calibration for probe model {probe_model!r} in {self.path} "
                                   f"(stored: {known}); calibrate the image first")
        return Calibration.from_json(probes[probe_model])

    def save(self, cal: Calibration) -> None:
        probes = self._read()
        probes[cal.probe_model] = cal.to_json()
        self._write(probes)

    def remove(self, probe_model: str) -> bool:
        probes = self._read()
        if probes.pop(probe_model, None) is None:
            return False
        self._write(probes)
        return True

    def _write(self, probes: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        with open(tmp, "w") as f:
            json.dump({"version": self.VERSION, "probes": probes}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
