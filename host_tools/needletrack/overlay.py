"""The needle drawn on an ultrasound frame: path, tip, readouts, no-go line, warnings.

- trajectory: solid from the guide exit to the tip (the needle that is in), dashed from the tip to the image
  border (where it goes if advanced);
- tip marker: a filled disc in the no-go state's colour (green, amber within the margin, red at or past it);
- no-go line across the image at the no-go tip depth: blue dashed while clear, amber solid within the margin,
  red and thick with the zone below it tinted once reached;
- readout box: depth, tip depth, needle angle, distance to the no-go depth;
- a magenta frame flashing for a twitch, fading over ``twitch_flash_s``;
- banners: NO SIGNAL when the needle state is stale (the needle is then not drawn at all: a frozen needle
  would be a lie), IMAGE NOT CALIBRATED, sensor faults, depth calibration missing, low battery.

Sizes follow the image height (unit = height / 480 px), so the same overlay reads at 640x480 and 1920x1080.
Colours are BGR. The input frame is never modified.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import cv2
import numpy as np

from needletrack.geometry import Calibration, Point, depth_row, trajectory
from needletrack.needle_state import NeedleState
from needletrack.protocol import Flag
from needletrack.receiver import STALE_AFTER_S

Colour = tuple[int, int, int]
FONT = cv2.FONT_HERSHEY_SIMPLEX
SHIFT = 4  # sub-pixel bits for OpenCV drawing
ONE = 1 << SHIFT


@dataclass(frozen=True)
class Style:
    trajectory: Colour = (255, 220, 40)  # light blue: no warning colour, and clear on grey
    tip_clear: Colour = (60, 235, 60)
    amber: Colour = (0, 180, 255)
    red: Colour = (30, 30, 240)
    nogo_clear: Colour = (235, 235, 235)  # neutral while clear: amber and red are kept for warnings
    twitch: Colour = (255, 60, 255)
    text: Colour = (255, 255, 255)
    panel: Colour = (20, 20, 20)
    panel_alpha: float = 0.75
    max_age_s: float = STALE_AFTER_S  # older needle data is stale: NO SIGNAL
    twitch_flash_s: float = 0.6


class NogoLevel(enum.Enum):
    NONE = "none"  # no no-go depth set
    UNKNOWN = "unknown"  # set, but the tip depth is not known (stale, NA)
    CLEAR = "clear"
    NEAR = "near"
    REACHED = "reached"


@dataclass(frozen=True)
class Banner:
    text: str
    colour: Colour


def is_stale(state: NeedleState | None, max_age_s: float = Style.max_age_s) -> bool:
    return state is None or Flag.STALE in state.flags or not state.age_s <= max_age_s


def nogo_level(state: NeedleState | None, max_age_s: float = Style.max_age_s) -> NogoLevel:
    """The no-go state from the device's flags or the host's own comparison, whichever is worse."""
    if state is None or state.nogo_depth_mm is None:
        return NogoLevel.NONE
    if is_stale(state, max_age_s):
        return NogoLevel.UNKNOWN
    tip = state.tip_depth_mm
    if Flag.NOGO_REACHED in state.flags or (tip is not None and tip >= state.nogo_depth_mm):
        return NogoLevel.REACHED
    near = tip is not None and tip >= state.nogo_depth_mm - state.nogo_margin_mm
    if Flag.NOGO_NEAR in state.flags or near:
        return NogoLevel.NEAR
    return NogoLevel.CLEAR if tip is not None else NogoLevel.UNKNOWN


def banners(state: NeedleState | None, cal: Calibration | None, style: Style = Style()) -> list[Banner]:
    """The warnings to show, red ones first (NO SIGNAL has its own, larger banner)."""
    out = []
    if cal is None:
        out.append(Banner("IMAGE NOT CALIBRATED", style.amber))
    if state is None:
        return out
    f = state.flags
    if Flag.IMU_FAULT in f:
        out.append(Banner("IMU FAULT", style.red))
    if Flag.HALL_FAULT in f:
        out.append(Banner("NEEDLE SENSOR FAULT", style.red))
    if not is_stale(state, style.max_age_s):
        if nogo_level(state, style.max_age_s) is NogoLevel.REACHED:
            out.append(Banner("NO-GO DEPTH REACHED", style.red))
        if Flag.DEPTH_INVALID in f:
            out.append(Banner("DEPTH INVALID", style.amber))
    if Flag.UNCALIBRATED in f:
        out.append(Banner("DEPTH UNCALIBRATED", style.amber))
    if Flag.LOW_BATTERY in f:
        out.append(Banner("LOW BATTERY", style.amber))
    return sorted(out, key=lambda b: b.colour != style.red)


@dataclass(frozen=True)
class Scale:
    unit: float  # px per 480th of the image height

    @staticmethod
    def of(image: np.ndarray) -> Scale:
        return Scale(image.shape[0] / 480.0)

    def px(self, v: float) -> int:
        return max(1, round(v * self.unit))

    @property
    def font(self) -> float:
        return 0.55 * self.unit

    @property
    def stroke(self) -> int:
        return self.px(1.4)


def _fixed(p: Point) -> tuple[int, int]:
    # Far-away points would overflow OpenCV's fixed-point coordinates; the drawing clips at the border anyway.
    lim = 1 << 20
    return (round(min(max(p[0], -lim), lim) * ONE), round(min(max(p[1], -lim), lim) * ONE))


def _line(img: np.ndarray, a: Point, b: Point, colour: Colour, thickness: int) -> None:
    cv2.line(img, _fixed(a), _fixed(b), colour, thickness, cv2.LINE_AA, SHIFT)


def _dashed(img: np.ndarray, a: Point, b: Point, colour: Colour, thickness: int, dash: float,
            gap: float) -> None:
    length = math.hypot(b[0] - a[0], b[1] - a[1])
    if length < 1e-6:
        return
    ux, uy = (b[0] - a[0]) / length, (b[1] - a[1]) / length
    t = 0.0
    while t < length:
        e = min(t + dash, length)
        _line(img, (a[0] + ux * t, a[1] + uy * t), (a[0] + ux * e, a[1] + uy * e), colour, thickness)
        t = e + gap


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, colour: Colour,
          thickness: int) -> None:
    """Text with a dark outline, legible on any background. The outline is the same text shifted around: a
    thicker stroke would not do, as some OpenCV fonts widen their glyphs with the thickness."""
    d = max(1, round(thickness * 0.8))
    for dx, dy in ((-d, 0), (d, 0), (0, -d), (0, d), (-d, -d), (d, d), (-d, d), (d, -d)):
        cv2.putText(img, text, (org[0] + dx, org[1] + dy), FONT, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    cv2.putText(img, text, org, FONT, scale, colour, thickness, cv2.LINE_AA)


def _panel(img: np.ndarray, x0: int, y0: int, x1: int, y1: int, colour: Colour, alpha: float) -> None:
    h, w = img.shape[:2]
    x0, x1, y0, y1 = max(x0, 0), min(x1, w), max(y0, 0), min(y1, h)
    if x0 >= x1 or y0 >= y1:
        return
    roi = img[y0:y1, x0:x1]
    # In uint8 with OpenCV: a float blend of a large panel (the no-go tint at 1080p) took 30 ms, this under 1 ms.
    solid = np.empty_like(roi)
    solid[:] = colour
    cv2.addWeighted(roi, 1.0 - alpha, solid, alpha, 0.0, dst=roi)


def _text_size(text: str, scale: float, thickness: int) -> tuple[int, int, int]:
    (w, h), base = cv2.getTextSize(text, FONT, scale, thickness)
    return w, h, base


def _nogo_colour(level: NogoLevel, style: Style) -> Colour:
    return {NogoLevel.NEAR: style.amber, NogoLevel.REACHED: style.red}.get(level, style.nogo_clear)


def _draw_nogo(img: np.ndarray, cal: Calibration, state: NeedleState, level: NogoLevel, s: Scale,
               style: Style) -> tuple[int, int] | None:
    """Draws the no-go line and its label; returns the rows they take up."""
    assert state.nogo_depth_mm is not None
    h, w = img.shape[:2]
    row = depth_row(cal, state.nogo_depth_mm)
    if not -h <= row <= 2 * h:
        return None
    colour = _nogo_colour(level, style)
    if level is NogoLevel.REACHED:
        top = round(row)
        if top < h:
            _panel(img, 0, max(top, 0), w, h, style.red, 0.18)
        _line(img, (0, row), (w - 1, row), colour, s.px(4))
    elif level is NogoLevel.NEAR:
        _line(img, (0, row), (w - 1, row), colour, s.px(3))
    else:
        _dashed(img, (0, row), (w - 1, row), colour, s.px(2), 14 * s.unit, 9 * s.unit)
    label = f"NO-GO {state.nogo_depth_mm:.1f} mm"
    tw, th, base = _text_size(label, s.font, s.stroke)
    pad, clearance = s.px(4), s.px(5)
    box_h = th + base + 2 * pad
    x = w - tw - pad - s.px(8)
    top = round(row) - clearance - box_h
    if top < 0:  # no room above the line: the label goes below it
        top = round(row) + clearance
    _panel(img, x - pad, top, x + tw + pad, top + box_h, style.panel, style.panel_alpha)
    _text(img, label, (x, top + pad + th), s.font, colour, s.stroke)
    return min(top, round(row) - s.px(4)), max(top + box_h, round(row) + s.px(4))


def _draw_needle(img: np.ndarray, cal: Calibration, state: NeedleState, level: NogoLevel, s: Scale,
                 style: Style) -> None:
    assert state.depth_mm is not None and state.guide_angle_deg is not None
    h, w = img.shape[:2]
    depth = max(state.depth_mm, 0.0)  # a tip still inside the guide is drawn at the exit
    path = trajectory(cal, depth, state.guide_angle_deg, (w, h))
    _dashed(img, path.tip_px, path.end_px, style.trajectory, s.px(2), 11 * s.unit, 8 * s.unit)
    if depth > 0:
        _line(img, path.exit_px, path.tip_px, (0, 0, 0), s.px(3) + 2 * s.px(1))
        _line(img, path.exit_px, path.tip_px, style.trajectory, s.px(3))
    tip_colour = {NogoLevel.NEAR: style.amber, NogoLevel.REACHED: style.red}.get(level, style.tip_clear)
    r = 7 * s.unit
    centre = _fixed(path.tip_px)
    cv2.circle(img, centre, round((r + s.px(1.5)) * ONE), (0, 0, 0), -1, cv2.LINE_AA, SHIFT)
    cv2.circle(img, centre, round(r * ONE), tip_colour, -1, cv2.LINE_AA, SHIFT)


def _fmt(v: float | None, unit: str, digits: int = 1) -> str:
    return "--" if v is None else f"{v:.{digits}f} {unit}"


def _draw_readouts(img: np.ndarray, cal: Calibration | None, state: NeedleState | None, stale: bool,
                   level: NogoLevel, s: Scale, style: Style) -> None:
    h, w = img.shape[:2]
    live = state if state is not None and not stale else None
    rows: list[tuple[str, str, Colour]] = [
        ("Depth", _fmt(None if live is None else live.depth_mm, "mm"), style.text),
        ("Tip depth", _fmt(None if live is None else live.tip_depth_mm, "mm"), style.text),
        ("Angle", _fmt(None if live is None else live.needle_angle_deg, "deg"), style.text),
    ]
    if state is not None and state.nogo_depth_mm is not None:
        to_go = None if live is None or live.tip_depth_mm is None else state.nogo_depth_mm - live.tip_depth_mm
        by_level = {NogoLevel.CLEAR: style.tip_clear, NogoLevel.NEAR: style.amber,
                    NogoLevel.REACHED: style.red}
        rows.append(("To no-go", _fmt(to_go, "mm"), by_level.get(level, style.text)))
    scale = s.font * 1.1
    label_w = max(_text_size(r[0], scale, s.stroke)[0] for r in rows)
    # Sized for the widest plausible value, so the box does not change size as the numbers do.
    value_w = max(_text_size(v, scale, s.stroke)[0] for v in [r[1] for r in rows] + ["-888.8 mm", "88.8 deg"])
    line_h = _text_size("Ag", scale, s.stroke)[1]
    gap, pad = s.px(9), s.px(8)
    box_w = label_w + value_w + gap + 2 * pad
    box_h = len(rows) * line_h + (len(rows) - 1) * gap + 2 * pad
    margin = s.px(8)
    # The corner below the guide exit: the needle runs away from it, towards the far side and down.
    lateral = cal.lateral if cal is not None else 1
    x0 = margin if lateral == 1 else w - margin - box_w
    y0 = h - margin - box_h
    _panel(img, x0, y0, x0 + box_w, y0 + box_h, style.panel, style.panel_alpha)
    y = y0 + pad + line_h
    for label, value, colour in rows:
        _text(img, label, (x0 + pad, y), scale, (200, 200, 200), s.stroke)
        vw = _text_size(value, scale, s.stroke)[0]
        _text(img, value, (x0 + box_w - pad - vw, y), scale, colour, s.stroke)
        y += line_h + gap


def _draw_banners(img: np.ndarray, items: list[Banner], s: Scale, style: Style) -> None:
    w = img.shape[1]
    y = s.px(8)
    scale = s.font * 1.25
    for b in items:
        tw, th, base = _text_size(b.text, scale, s.stroke + 1)
        pad = s.px(6)
        x = (w - tw) // 2
        _panel(img, x - 2 * pad, y, x + tw + 2 * pad, y + th + base + 2 * pad, b.colour, 0.85)
        _text(img, b.text, (x, y + pad + th), scale, style.text, s.stroke + 1)
        y += th + base + 2 * pad + s.px(4)


def _draw_no_signal(img: np.ndarray, state: NeedleState | None, s: Scale, style: Style,
                    keep_clear: tuple[int, int] | None) -> None:
    h, w = img.shape[:2]
    title = "NO SIGNAL"
    if state is None:
        detail = "no needle data"
    elif Flag.STALE in state.flags and state.age_s <= style.max_age_s:
        detail = "device reports stale data"
    else:
        detail = f"needle data {state.age_s:.1f} s old" if math.isfinite(state.age_s) else "needle data lost"
    big, small = s.font * 3.0, s.font * 1.2
    tw, th, _ = _text_size(title, big, s.px(4))
    dw, dh, _ = _text_size(detail, small, s.stroke)
    pad = s.px(14)
    box_h = th + dh + 3 * pad
    y0 = (h - box_h) // 2
    if keep_clear is not None:
        # Centred, unless that hides the no-go line: then just below it, or else just above it.
        gap = s.px(6)
        for y in (y0, keep_clear[1] + gap, keep_clear[0] - gap - box_h):
            if 0 <= y <= h - box_h and (y + box_h <= keep_clear[0] or y >= keep_clear[1]):
                y0 = y
                break
    _panel(img, 0, y0, w, y0 + box_h, style.red, 0.9)
    _text(img, title, ((w - tw) // 2, y0 + pad + th), big, style.text, s.px(4))
    _text(img, detail, ((w - dw) // 2, y0 + 2 * pad + th + dh), small, style.text, s.stroke)


def _draw_twitch(img: np.ndarray, age_s: float, s: Scale, style: Style) -> None:
    h, w = img.shape[:2]
    fade = 1.0 - age_s / style.twitch_flash_s
    border = s.px(10)
    edges = ((0, 0, w, border), (0, h - border, w, h), (0, 0, border, h), (w - border, 0, w, h))
    for x0, y0, x1, y1 in edges:
        _panel(img, x0, y0, x1, y1, style.twitch, 0.9 * fade)
    label = "TWITCH"
    scale = s.font * 1.4
    tw, th, base = _text_size(label, scale, s.stroke + 1)
    pad = s.px(6)
    x1, y0 = w - border - s.px(6), border + s.px(6)
    _panel(img, x1 - tw - 2 * pad, y0, x1, y0 + th + base + 2 * pad, style.twitch, 0.9 * fade)
    _text(img, label, (x1 - tw - pad, y0 + pad + th), scale, style.text, s.stroke + 1)


def draw(image: np.ndarray, cal: Calibration | None, state: NeedleState | None,
         style: Style = Style(), hidden: str | None = None) -> np.ndarray:
    """The frame with the overlay, as a new BGR image of the same size. ``hidden``: a reason the needle must not
    be drawn although it is measured (the probe set up for another procedure): shown as a red banner instead
    of the needle and its readouts; the no-go depth stays."""
    # cvtColor, not np.repeat: a fifth of the time on a 1080p frame, and this copy is most of the overlay's cost.
    img = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image[:, :, :3].copy()
    if cal is not None and (img.shape[1], img.shape[0]) != cal.image_size:
        raise ValueError(f"the image is {img.shape[1]}x{img.shape[0]} px, the calibration is for "
                         f"{cal.image_size[0]}x{cal.image_size[1]} px (use Calibration.resized)")
    s = Scale.of(img)
    stale = is_stale(state, style.max_age_s)
    level = nogo_level(state, style.max_age_s)
    nogo_rows = None
    if cal is not None and state is not None and state.nogo_depth_mm is not None:
        nogo_rows = _draw_nogo(img, cal, state, level, s, style)
    drawable = (cal is not None and state is not None and not stale and state.depth_mm is not None
                and state.guide_angle_deg is not None and hidden is None)
    if drawable:
        assert cal is not None and state is not None
        _draw_needle(img, cal, state, level, s, style)
    if hidden is None:
        _draw_readouts(img, cal, state, stale, level, s, style)
        if not stale and state is not None and state.twitch_age_s is not None \
                and 0.0 <= state.twitch_age_s < style.twitch_flash_s:
            _draw_twitch(img, state.twitch_age_s, s, style)
    shown = banners(state, cal, style)
    if hidden is not None and not stale:
        shown.insert(0, Banner(hidden, style.red))
    _draw_banners(img, shown, s, style)
    if stale:
        _draw_no_signal(img, state, s, style, nogo_rows)
    return img
