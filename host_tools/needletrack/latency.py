"""Video latency: how late a frame grabber delivers ultrasound frames, measured from the needle itself.

A frame arrives some tens of ms after the scanner formed it, so its capture time is ``arrival - L``. L is found
by moving the needle in and out: the needle echo's insertion depth, read from each frame
(:func:`echo_depth`), must follow the device's depth samples, so ``image_depth(t) = sample_depth(t - L)``
for the right L (:func:`estimate_lag`), as PLUS does for tracker temporal calibration. docs/latency.md.

The match error at each candidate lag is robust: frames where no echo was found are skipped, a constant
depth offset between image and device is taken out (the median difference), and the worst ``trim`` of the
frames are left out of the RMS. A lag is reported only when it is well determined; otherwise the estimate
says why it refuses, and has no lag.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from needletrack.frames.base import Frame, FrameSource
from needletrack.geometry import Calibration, needle_direction_px

DEFAULT_SEARCH_S = (-0.1, 0.5)
STEP_S = 0.001
TRIM = 0.1  # fraction of frames left out of the RMS at each lag of the search: the worst-matching ones
OUTLIER_SIGMAS = 3.0  # in the refinement, frames further than this from the median difference are dropped
MIN_OUTLIER_MM = 0.1  # ... but never closer than this (noise-free data has a tiny spread)
MAX_SAMPLE_GAP_S = 0.05  # samples further apart than this (lost link) are not interpolated between
JACKKNIFE_BLOCKS = 8
T95 = 2.365  # Student's t, 95 % two-sided, JACKKNIFE_BLOCKS - 1 degrees of freedom
ZOOM_S = 0.015  # half-width of the plot's close-up of the minimum
SMOOTH_S = 0.010  # sigma of the zero-phase low-pass on the device depth before it is interpolated

# Refusal thresholds. Each criterion scores 0.5 exactly at its threshold, 1 when comfortably met; the
# confidence is the lowest score, and below 0.5 no lag is given.
MIN_FRAMES = 25
MIN_MOTION_MM = 3.0  # needle travel (5th to 95th percentile of depth) while the frames were taken
MAX_UNCERTAINTY_S = 0.005  # the lag's 95 % uncertainty (jackknife)
MAX_RMS_RATIO = 0.3  # match RMS at the lag over the spread of depth: image and samples must agree
AMBIGUOUS_RATIO = 1.5  # a second, separate minimum within this factor of the best one

# Echo detection.
BAND_MM = 1.0  # half-width across the needle line searched for the shaft: guide exit and angle errors
MIN_CONTRAST = 60.0  # grey levels (8-bit, log-compressed: ~15 dB) between needle shaft and tissue after the tip
MIN_VISIBLE_MM = 1.0  # needle that must be seen in the image, and tissue that must be seen beyond the tip
EDGE_LEVEL = 0.25  # of the way from shaft to tissue: the shaft's -6 dB end, not its reverberation tail
TRAIL_MM = 3.0  # the shaft's level is followed over this much of the run behind the point tested
SHAFT_SIDE_MM = 0.5  # tissue this far above a shaft's centre must be clearly darker: the echo is a thin line
BRIGHTEST_PERCENTILE = 98.0  # the shaft is among the image's brightest 2 %: a specular reflector
GAP_MM = 1.0  # a drop below the needle level shorter than this is a dropout along the shaft, not the tip


class LatencyError(RuntimeError):
    """No lag can be given: the message says why and what to do."""


# ---------------------------------------------------------------------------------------------------------
# Needle echo depth from one frame


def _grey(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return np.asarray(image, dtype=np.float32)


def _visible_span(cal: Calibration, guide_angle_deg: float, size: tuple[int, int]) -> tuple[float, float] | None:
    """Insertion depths (mm) between which the needle line is inside the image (or its calibrated region)."""
    w, h = size
    x0, y0, x1, y1 = (0, 0, w - 1, h - 1) if cal.region is None else (
        max(cal.region.x0, 0), max(cal.region.y0, 0), min(cal.region.x1, w - 1), min(cal.region.y1, h - 1))
    dx, dz = needle_direction_px(cal, guide_angle_deg)
    lo, hi = 0.0, math.inf
    for start, slope, a, b in ((cal.exit_px[0], dx, x0, x1), (cal.exit_px[1], dz, y0, y1)):
        if abs(slope) < 1e-12:
            if not a <= start <= b:
                return None
            continue
        t1, t2 = (a - start) / slope, (b - start) / slope
        lo, hi = max(lo, min(t1, t2)), min(hi, max(t1, t2))
    return (lo, hi) if hi > lo else None


def _sample(grey: np.ndarray, cal: Calibration, guide_angle_deg: float, along_mm: np.ndarray,
            across_mm: np.ndarray) -> np.ndarray:
    """Bilinear samples at insertion depths ``along_mm`` and offsets ``across_mm`` (mm, +: deeper side of the
    needle): shape (len(across), len(along)); ``across_mm`` may also be (len(across), len(along))."""
    dx, dz = needle_direction_px(cal, guide_angle_deg)
    g = math.radians(guide_angle_deg)
    px, pz = -cal.lateral * math.sin(g) / cal.mm_per_px[0], math.cos(g) / cal.mm_per_px[1]
    across = across_mm if across_mm.ndim == 2 else across_mm[:, None]
    mx = (cal.exit_px[0] + along_mm[None, :] * dx + across * px).astype(np.float32)
    my = (cal.exit_px[1] + along_mm[None, :] * dz + across * pz).astype(np.float32)
    return np.asarray(cv2.remap(grey, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))


def _box(v: np.ndarray, n: int) -> np.ndarray:
    """Moving average along the last axis over ``n`` samples, edges replicated."""
    if n <= 1:
        return v
    rows = v if v.ndim == 2 else v[None, :]
    out = cv2.blur(np.ascontiguousarray(rows, dtype=np.float32), (n, 1), borderType=cv2.BORDER_REPLICATE)
    return np.asarray(out if v.ndim == 2 else out[0])


def echo_depth(image: np.ndarray, cal: Calibration, guide_angle_deg: float, *, band_mm: float = BAND_MM,
               min_contrast: float = MIN_CONTRAST, min_visible_mm: float = MIN_VISIBLE_MM) -> float | None:
    """The needle's insertion depth (mm beyond the guide exit) read from its echo in one B-mode frame, or None
    when no needle echo is seen (none inserted, too faint, or its tip outside the image).

    The image is sampled (bilinear) along the needle line from the guide exit, in a band ``band_mm`` either
    side. The shaft is the bright run starting where the line enters the image; it ends where the brightest
    line in the band stays ``min_contrast / 2`` below the run's own recent level for ``GAP_MM`` (so a speckle
    dip does not end it, and bright structures further along, such as the pleura, cannot extend it). The run
    must be among the image's brightest echoes and stand ``min_contrast`` above the tissue beyond it. The end
    is then found to sub-pixel precision on the shaft's own ridge, where the profile falls EDGE_LEVEL of the
    way from shaft to tissue."""
    grey = _grey(image)
    size = (grey.shape[1], grey.shape[0])
    if size != cal.image_size:
        raise ValueError(f"the image is {size[0]}x{size[1]} px, the calibration for {cal.probe_model!r} is for "
                         f"{cal.image_size[0]}x{cal.image_size[1]} px images")
    span = _visible_span(cal, guide_angle_deg, size)
    if span is None:
        return None
    step = min(cal.mm_per_px) / 2
    along = np.arange(math.ceil(span[0] / step) * step, span[1], step)
    if len(along) * step < 2 * min_visible_mm:
        return None
    # The band reaches SHAFT_SIDE_MM further on the shallow side, to see the tissue above a shaft at its edge.
    side = max(1, round(SHAFT_SIDE_MM / step))
    across = np.arange(-band_mm - side * step, band_mm + step / 2, step)
    wide = _box(_sample(grey, cal, guide_angle_deg, along, across), max(1, round(0.3 / step)))
    band, across = wide[side:], across[side:]
    profile = band.max(axis=0)  # the brightest line in the band, wherever the shaft lies across it
    smooth = _box(profile, max(1, round(GAP_MM / step)))

    first = max(1, round(min_visible_mm / step))
    gap = max(1, round(GAP_MM / step))
    end = _run_end(smooth, first, gap, round(TRAIL_MM / step), 0.5 * min_contrast)
    if end is None or len(along) - end < first:
        return None  # no bright run from the line's entry, or it runs to the image's edge: no tip seen
    shaft = float(np.median(profile[max(0, end - 2 * gap):end]))
    tissue = float(np.median(profile[end:end + 2 * gap]))
    if shaft - tissue < min_contrast or shaft < np.percentile(grey[::2, ::2], BRIGHTEST_PERCENTILE):
        return None  # a weak edge, or a run no brighter than ordinary tissue
    if _shallow_side_contrast(wide[:, max(0, end - 2 * gap):end], side) < 0.5 * min_contrast:
        return None  # a bright layer the line runs along (skin, along a shallow guide), not a thin shaft
    ridge = _ridge_offsets(band[:, :end], across, along[:end])
    tip = _tip_on_ridge(grey, cal, guide_angle_deg, ridge, float(along[end]), step)
    return tip if tip - float(along[0]) >= min_visible_mm else None


def _run_end(smooth: np.ndarray, first: int, gap: int, trail: int, drop: float) -> int | None:
    """Index where the bright run from the line's entry ends: the first of ``gap`` samples in a row more than
    ``drop`` below the run's level over the ``trail`` samples before them, not before ``first``. The level
    follows the run, so a shaft that fades slowly with depth is followed. None when the run never ends."""
    n = len(smooth)
    c = np.concatenate([[0.0], np.cumsum(smooth, dtype=np.float64)])
    i = np.arange(n)
    hi = np.maximum(i - gap, 1)  # the trailing window ends gap samples back: all shaft until gap past the tip
    lo = np.maximum(hi - trail, 0)
    level = (c[hi] - c[lo]) / (hi - lo)
    below = (smooth < level - drop) & (i >= first)
    runs = np.convolve(below.astype(np.int32), np.ones(gap, np.int32), mode="valid")
    full = np.flatnonzero(runs == gap)
    # The smoothed profile falls through the drop within half a box of the raw end: near enough for the
    # search on the ridge (+-1 mm) to find the end itself.
    return int(full[0]) if len(full) else None


def _shallow_side_contrast(wide: np.ndarray, side: int) -> float:
    """How much brighter the band's brightest line is than the tissue ``side`` rows above it (on the shallow
    side, away from the reverberations below a needle), as a median along the band: a needle's shaft is a thin
    line, a tissue layer is not. ``wide``: the band with ``side`` extra rows on the shallow side."""
    peak = side + np.argmax(wide[side:], axis=0)
    cols = np.arange(wide.shape[1])
    contrast = wide[peak, cols] - wide[peak - side, cols]
    return float(np.median(contrast)) if len(contrast) else 0.0


def _ridge_offsets(band: np.ndarray, across: np.ndarray, along: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The shaft's offset across the line (mm) as a straight line in depth, fitted to the band's brightest
    offsets along the run: the shaft may sit beside the predicted line (exit or angle slightly off)."""
    peaks = across[np.argmax(band, axis=0)]
    if len(along) < 8 or float(along[-1] - along[0]) < 3.0:
        centre = float(np.median(peaks))
        return lambda s: np.full_like(s, centre)
    slope, intercept = np.polyfit(along, peaks, 1)
    keep = np.abs(peaks - (slope * along + intercept)) < 0.15
    if keep.sum() >= 8:
        slope, intercept = np.polyfit(along[keep], peaks[keep], 1)
    return lambda s: slope * s + intercept


def _tip_on_ridge(grey: np.ndarray, cal: Calibration, guide_angle_deg: float,
                  ridge: Callable[[np.ndarray], np.ndarray], coarse_mm: float, step: float) -> float:
    """Sub-pixel tip: where the profile on the shaft's ridge falls EDGE_LEVEL of the way from the shaft before
    the coarse end to the tissue after it; of such crossings, the one nearest the coarse end."""
    s = np.arange(coarse_mm - 2.0, coarse_mm + 2.0, step / 2)
    taps = np.array([-step, 0.0, step])
    offsets = ridge(s)[None, :] + taps[:, None]
    profile = _sample(grey, cal, guide_angle_deg, s, offsets).mean(axis=0)
    before = profile[(s > coarse_mm - 1.5) & (s < coarse_mm - 0.4)]
    after = profile[(s > coarse_mm + 0.4) & (s < coarse_mm + 1.5)]
    if not len(before) or not len(after):
        return coarse_mm
    shaft, tissue = float(np.median(before)), float(np.median(after))
    mid = shaft - EDGE_LEVEL * (shaft - tissue)
    down = np.flatnonzero((profile[:-1] >= mid) & (profile[1:] < mid))
    down = down[np.abs(s[down] - coarse_mm) <= 1.0]
    if not len(down):
        return coarse_mm
    i = int(down[np.argmin(np.abs(s[down] - coarse_mm))])
    frac = (profile[i] - mid) / (profile[i] - profile[i + 1])
    return float(s[i] + frac * (s[i + 1] - s[i]))


def echo_depths(frames: Iterable[Frame], cal: Calibration, guide_angle_deg: float,
                on_frame: Callable[[Frame, float | None], object] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's time and echo depth (NaN where no echo was found)."""
    times, depths = [], []
    for frame in frames:
        d = echo_depth(frame.image, cal, guide_angle_deg)
        times.append(frame.time_s)
        depths.append(math.nan if d is None else d)
        if on_frame is not None:
            on_frame(frame, d)
    return np.asarray(times, float), np.asarray(depths, float)


# ---------------------------------------------------------------------------------------------------------
# Lag estimation


@dataclass(frozen=True)
class LatencyEstimate:
    """The video latency found, or why none is given.

    ``lag_s``: frames arrive this late (capture time = frame time - lag); None when refused, with ``refusal``
    saying why. ``confidence``: 0 .. 1, the lowest of the criteria's scores; each is 0.5 at its threshold, so
    below 0.5 there is no lag. ``rms_mm``: trimmed RMS of image minus device depth at the lag, after the
    constant ``offset_mm`` (image deeper than device) is taken out. ``uncertainty_s``: the lag's 95 %
    half-width (jackknife and least-squares standard errors, the larger). ``lags_s``/``cost_mm``: the match
    error curve."""

    lag_s: float | None
    confidence: float
    rms_mm: float
    offset_mm: float
    uncertainty_s: float
    motion_mm: float
    frames_used: int
    frames_total: int
    refusal: str | None
    lags_s: np.ndarray
    cost_mm: np.ndarray
    scores: dict[str, float] = field(default_factory=dict)
    frame_times_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    image_depths_mm: np.ndarray = field(default_factory=lambda: np.zeros(0))  # NaN: no echo found
    sample_times_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sample_depths_mm: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def ok(self) -> bool:
        return self.lag_s is not None

    def require(self) -> float:
        """The lag, or LatencyError with the reason it was refused."""
        if self.lag_s is None:
            raise LatencyError(self.refusal or "no lag estimated")
        return self.lag_s

    def summary(self) -> str:
        frames = f"{self.frames_used} of {self.frames_total} frames"
        if self.lag_s is None:
            return f"no latency: {self.refusal} (confidence {self.confidence:.2f}, {frames})"
        return (f"video latency {self.lag_s * 1e3:.1f} ms ± {self.uncertainty_s * 1e3:.1f} ms, confidence "
                f"{self.confidence:.2f}; match {self.rms_mm:.2f} mm RMS over {self.motion_mm:.0f} mm of needle "
                f"travel, image {self.offset_mm:+.2f} mm from device; {frames}")


def _clean_samples(t: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if t.shape != d.shape or t.ndim != 1:
        raise ValueError(f"sample times and depths must be 1-D and the same length, got {t.shape} and {d.shape}")
    keep = np.isfinite(t) & np.isfinite(d)
    t, d = t[keep], d[keep]
    order = np.argsort(t, kind="stable")
    t, d = t[order], d[order]
    if len(t) > 1:
        fresh = np.concatenate([[True], np.diff(t) > 0])
        t, d = t[fresh], d[fresh]
    return t, d


def _smoothing_sigma(t: np.ndarray) -> float:
    return max(SMOOTH_S, float(np.median(np.diff(t)))) if len(t) > 1 else SMOOTH_S


def _smoothed(t: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The depth series resampled on a uniform grid and low-passed by a centred Gaussian (zero phase: no lag).
    Interpolating raw noisy samples would make the match error depend on where a frame falls between two
    samples (midway, their noise averages out), which pulls the minimum half a sample off the true lag."""
    spacing = float(np.median(np.diff(t)))
    sigma = _smoothing_sigma(t)
    dt = min(spacing, sigma / 4)
    grid = t[0] + dt * np.arange(int((t[-1] - t[0]) / dt) + 1)
    values = np.interp(grid, t, d)
    x = dt * np.arange(-math.ceil(3 * sigma / dt), math.ceil(3 * sigma / dt) + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    weight = np.convolve(np.ones_like(values), kernel, mode="same")
    return grid, np.convolve(values, kernel, mode="same") / weight


def _covered(frame_t: np.ndarray, st: np.ndarray, lo_lag: float, hi_lag: float, max_gap_s: float) -> np.ndarray:
    """Frames whose samples exist, without a gap, at every lag searched."""
    if len(st) < 2:
        return np.zeros(len(frame_t), bool)
    lo, hi = frame_t - hi_lag, frame_t - lo_lag
    inside = (lo >= st[0]) & (hi <= st[-1])
    gaps = np.concatenate([[0], np.cumsum(np.diff(st) > max_gap_s)])
    i0 = np.clip(np.searchsorted(st, lo, "right") - 1, 0, len(st) - 1)
    i1 = np.clip(np.searchsorted(st, hi, "left"), 0, len(st) - 1)
    return np.asarray(inside & (gaps[i1] == gaps[i0]))


def _costs(lags: np.ndarray, ft: np.ndarray, fd: np.ndarray, st: np.ndarray, sd: np.ndarray,
           trim: float) -> np.ndarray:
    """Trimmed RMS (mm) of image depth minus shifted sample depth, median offset removed, per lag."""
    predicted = np.interp(ft[None, :] - lags[:, None], st, sd)
    r = fd[None, :] - predicted
    r = np.abs(r - np.median(r, axis=1, keepdims=True))
    keep = max(1, math.ceil((1.0 - trim) * len(ft)))
    r = np.partition(r, keep - 1, axis=1)[:, :keep]
    return np.asarray(np.sqrt(np.mean(r * r, axis=1)))


def _inliers(lag: float, ft: np.ndarray, fd: np.ndarray, st: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Frames within OUTLIER_SIGMAS robust standard deviations (from the median absolute deviation) of the
    median difference at ``lag``: a wrong echo now and then is dropped, ordinary noise is all kept."""
    r = fd - np.interp(ft - lag, st, sd)
    a = np.abs(r - np.median(r))
    return np.asarray(a <= max(OUTLIER_SIGMAS * 1.4826 * float(np.median(a)), MIN_OUTLIER_MM))


def _refine(best: float, step: float, ft: np.ndarray, fd: np.ndarray, st: np.ndarray,
            sd: np.ndarray) -> tuple[float, np.ndarray]:
    """The lag to a fraction of a step, and the inlier frames: with the inliers at the grid's best fixed, the
    least-squares lag (offset fitted) on a fine grid, with a parabola through its lowest three points. Least
    squares over all but the outliers wastes none of the frames, as the trimmed error of the search would."""
    keep = _inliers(best, ft, fd, st, sd)
    fine = best + np.arange(-3.0, 3.0001, 0.05) * step
    resid = fd[keep][None, :] - np.interp(ft[keep][None, :] - fine[:, None], st, sd)
    mse = np.var(resid, axis=1)  # the offset is the mean here: variance is the mean square after it
    i = int(np.argmin(mse))
    if 0 < i < len(fine) - 1:
        a, b, c = mse[i - 1], mse[i], mse[i + 1]
        curve = a - 2 * b + c
        if curve > 0:
            return float(fine[i] + 0.5 * (a - c) / curve * (fine[1] - fine[0])), keep
    return float(fine[i]), keep


def _best_lag(lags: np.ndarray, ft: np.ndarray, fd: np.ndarray, st: np.ndarray, sd: np.ndarray,
              trim: float) -> float:
    cost = _costs(lags, ft, fd, st, sd, trim)
    return _refine(float(lags[int(np.argmin(cost))]), float(lags[1] - lags[0]), ft, fd, st, sd)[0]


def _second_minimum(cost: np.ndarray, best: int, step_s: float) -> float | None:
    """The lowest local minimum separated from the best one by a real rise (a second candidate lag)."""
    w = max(1, round(0.010 / step_s))
    lowest: float | None = None
    for i in range(len(cost)):
        if abs(i - best) * step_s <= 0.020:
            continue
        window = cost[max(0, i - w):i + w + 1]
        if cost[i] > window.min():
            continue
        between = cost[min(i, best):max(i, best) + 1]
        if between.max() >= 1.1 * cost[i] and (lowest is None or cost[i] < lowest):
            lowest = float(cost[i])
    return lowest


def _refused(reason: str, confidence: float, total: int, used: int, lags: np.ndarray, cost: np.ndarray,
             scores: dict[str, float], series: tuple[np.ndarray, ...], rms: float = math.nan,
             motion: float = math.nan) -> LatencyEstimate:
    return LatencyEstimate(None, confidence, rms, math.nan, math.nan, motion, used, total, reason, lags, cost,
                           scores, *series)


def estimate_lag(frame_times_s: Sequence[float] | np.ndarray, image_depths_mm: Sequence[float] | np.ndarray,
                 sample_times_s: Sequence[float] | np.ndarray, sample_depths_mm: Sequence[float] | np.ndarray, *,
                 search_s: tuple[float, float] = DEFAULT_SEARCH_S, step_s: float = STEP_S, trim: float = TRIM,
                 max_gap_s: float = MAX_SAMPLE_GAP_S) -> LatencyEstimate:
    """The lag L for which the echo depths at the frames' times t match the device's depth at t - L.

    Image depths that are NaN (no echo found) are skipped, and so are frames whose samples do not cover every
    lag searched. L is searched over ``search_s`` in ``step_s`` steps and refined below a step. The estimate
    refuses (``lag_s`` None, ``refusal`` saying why) when there are too few frames, the needle barely moved,
    image and samples do not agree, the best lag is at the edge of the search, a second minimum competes with
    it, or the lag is uncertain by more than MAX_UNCERTAINTY_S."""
    lo, hi = search_s
    if not (math.isfinite(lo) and math.isfinite(hi) and hi - lo >= 10 * step_s and step_s > 0):
        raise ValueError(f"search range {search_s} s with {step_s} s steps: need lo < hi, at least 10 steps")
    if not 0.0 <= trim < 0.5:
        raise ValueError(f"trim must be in 0 .. 0.5, got {trim}")
    ft_all = np.asarray(frame_times_s, float)
    fd_all = np.asarray(image_depths_mm, float)
    if ft_all.shape != fd_all.shape or ft_all.ndim != 1:
        raise ValueError(f"frame times and image depths must be 1-D and the same length, got {ft_all.shape} "
                         f"and {fd_all.shape}")
    st, sd = _clean_samples(np.asarray(sample_times_s, float), np.asarray(sample_depths_mm, float))
    series = (ft_all, fd_all, st, sd)
    lags = lo + step_s * np.arange(round((hi - lo) / step_s) + 1)
    total = len(ft_all)
    seen = np.isfinite(fd_all) & np.isfinite(ft_all)
    reach = 3 * _smoothing_sigma(st)  # the low-pass reads this far either side: no gap may lie within it either
    use = seen & _covered(ft_all, st, lo - reach, hi + reach, max_gap_s)
    n = int(use.sum())
    empty = np.zeros(0)
    scores = {"frames": min(1.0, n / (2 * MIN_FRAMES))}
    if n < MIN_FRAMES:
        why = (f"the needle echo was found in {int(seen.sum())} of {total} frames" if seen.sum() < MIN_FRAMES else
               f"only {n} frames with the needle echo have device samples around them (samples lost or ending "
               "early)")
        return _refused(f"{why}; at least {MIN_FRAMES} are needed", scores["frames"], total, n, empty, empty,
                        scores, series)
    order = np.argsort(ft_all[use], kind="stable")
    ft, fd = ft_all[use][order], fd_all[use][order]
    raw_st, raw_sd = st, sd
    st, sd = _smoothed(st, sd)

    # How far the needle travelled while the frames were taken: without motion there is nothing to match.
    during = (raw_st >= ft[0] - hi) & (raw_st <= ft[-1] - lo)
    p5, p95 = np.percentile(raw_sd[during], [5, 95])
    motion = float(p95 - p5)
    scores["motion"] = min(1.0, motion / (2 * MIN_MOTION_MM))

    cost = _costs(lags, ft, fd, st, sd, trim)
    best_i = int(np.argmin(cost))
    lag, inliers = _refine(float(lags[best_i]), step_s, ft, fd, st, sd)
    rms = float(_costs(np.array([lag]), ft, fd, st, sd, trim)[0])
    offset = float(np.median(fd - np.interp(ft - lag, st, sd)))
    spread = float(np.std(np.interp(ft - lag, st, sd)))
    scores["match"] = max(0.0, 1.0 - rms / max(spread, 1e-9) / (2 * MAX_RMS_RATIO))
    edge = min(best_i, len(lags) - 1 - best_i) <= 2
    scores["edge"] = 0.0 if edge else 1.0
    second = _second_minimum(cost, best_i, step_s)
    scores["distinct"] = 1.0 if second is None else min(1.0, second / max(float(cost[best_i]), 1e-9)
                                                         / (2 * AMBIGUOUS_RATIO))

    # Jackknife over contiguous blocks of frames: how much the lag moves when any one stretch is left out.
    blocks = np.array_split(np.arange(n), JACKKNIFE_BLOCKS)
    picks = []
    for b in blocks:
        keep = np.ones(n, bool)
        keep[b] = False
        picks.append(_best_lag(lags, ft[keep], fd[keep], st, sd, trim))
    k = len(picks)
    se_jackknife = math.sqrt((k - 1) / k * float(np.sum((np.array(picks) - np.mean(picks)) ** 2)))
    # And the least-squares standard error of a lag fitted with an offset: residual noise over the needle's
    # speed at the frames. The jackknife sees errors that persist over stretches, this one plain noise; a
    # jackknife over few blocks can come out small by chance, so the larger of the two counts.
    speed = np.interp(ft[inliers] - lag, st, np.gradient(sd, st))
    spread_v = float(np.sum((speed - speed.mean()) ** 2))
    noise = float(np.std(fd[inliers] - np.interp(ft[inliers] - lag, st, sd)))
    se_noise = noise / math.sqrt(spread_v) if spread_v > 0 else math.inf
    uncertainty = T95 * max(se_jackknife, se_noise)
    scores["precision"] = max(0.0, 1.0 - uncertainty / (2 * MAX_UNCERTAINTY_S))

    confidence = min(scores.values())
    if confidence >= 0.5:
        return LatencyEstimate(lag, confidence, rms, offset, uncertainty, motion, n, total, None, lags, cost,
                               scores, *series)
    reasons = {
        "motion": f"the needle barely moved ({motion:.1f} mm of travel, at least {MIN_MOTION_MM:g} mm needed): move "
                  "it in and out by 10 mm or more, several times",
        "match": f"the echo depths do not follow the device's ({rms:.2f} mm RMS for {spread:.2f} mm of motion): "
                 "check the image calibration and the guide angle",
        "edge": f"the best match is at the edge of the search range ({lags[best_i] * 1e3:.0f} ms): widen the "
                "range",
        "distinct": f"ambiguous: another lag matches almost as well (error {second or 0:.2f} mm against "
                    f"{cost[best_i]:.2f} mm); move the needle irregularly, not at a steady rhythm",
        "precision": f"the lag is uncertain by ±{uncertainty * 1e3:.1f} ms (at most "
                     f"{MAX_UNCERTAINTY_S * 1e3:g} ms allowed): move the needle faster or for longer",
    }
    # Without motion nothing else can be judged: that alone is the reason. Otherwise every failed criterion.
    failed = [reasons[name] for name in reasons if scores[name] < 0.5]
    if scores["motion"] < 0.5:
        failed = failed[:1]
    return _refused("; ".join(failed), confidence, total, n, lags, cost, scores, series, rms, motion)


# ---------------------------------------------------------------------------------------------------------
# Plot


def plot_latency(est: LatencyEstimate, out: str | Path, title: str = "") -> Path:
    """Match error against lag, the chosen lag marked; and echo depth against the device's depth shifted by
    that lag (unshifted, dashed, for comparison), over time. Written to ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    fig, (ax_cost, ax_depth) = plt.subplots(2, 1, figsize=(11, 8), gridspec_kw={"height_ratios": [2, 3]})
    if len(est.lags_s):
        ax_cost.plot(est.lags_s * 1e3, est.cost_mm, color="tab:blue", lw=1.2, label="match error (trimmed RMS)")
        if est.lag_s is not None:
            ax_cost.axvline(est.lag_s * 1e3, color="tab:red", lw=1.2,
                            label=f"lag {est.lag_s * 1e3:.1f} ms ± {est.uncertainty_s * 1e3:.1f} ms")
            ax_cost.axvspan((est.lag_s - est.uncertainty_s) * 1e3, (est.lag_s + est.uncertainty_s) * 1e3,
                            color="tab:red", alpha=0.15)
        else:
            i = int(np.argmin(est.cost_mm))
            ax_cost.plot(est.lags_s[i] * 1e3, est.cost_mm[i], "x", color="0.4", label="lowest error (refused)")
        ax_cost.legend(loc="upper left", fontsize=9)
        if est.lag_s is not None:  # the minimum close up: how sharp it is
            near = np.abs(est.lags_s - est.lag_s) <= ZOOM_S
            inset = ax_cost.inset_axes((0.62, 0.3, 0.36, 0.55))
            inset.plot(est.lags_s[near] * 1e3, est.cost_mm[near], ".-", color="tab:blue", lw=0.8, ms=3)
            inset.axvline(est.lag_s * 1e3, color="tab:red", lw=1.0)
            inset.axvspan((est.lag_s - est.uncertainty_s) * 1e3, (est.lag_s + est.uncertainty_s) * 1e3,
                          color="tab:red", alpha=0.15)
            inset.set_title(f"close-up, ±{ZOOM_S * 1e3:.0f} ms", fontsize=8, pad=2)
            inset.tick_params(labelsize=7)
            inset.grid(True, alpha=0.3)
    ax_cost.set_xlabel("lag (ms): frame time - capture time")
    ax_cost.set_ylabel("match error (mm)")
    ax_cost.grid(True, alpha=0.3)

    t0 = float(est.frame_times_s[0]) if len(est.frame_times_s) else 0.0
    if len(est.sample_times_s):
        ax_depth.plot(est.sample_times_s - t0, est.sample_depths_mm, color="0.6", lw=0.8, ls="--",
                      label="device depth, unshifted")
        if est.lag_s is not None:
            ax_depth.plot(est.sample_times_s + est.lag_s - t0, est.sample_depths_mm + est.offset_mm,
                          color="tab:orange", lw=1.2, label=f"device depth, {est.lag_s * 1e3:.1f} ms later"
                          + (f", {est.offset_mm:+.2f} mm" if abs(est.offset_mm) >= 0.005 else ""))
    found = np.isfinite(est.image_depths_mm)
    ax_depth.plot(est.frame_times_s[found] - t0, est.image_depths_mm[found], ".", color="tab:blue", ms=4,
                  label="needle echo depth (frames)")
    if len(est.frame_times_s):
        missed = est.frame_times_s[~found] - t0
        ax_depth.plot(missed, np.zeros_like(missed), "|", color="tab:red", ms=8,
                      label="no echo found" if len(missed) else None)
        ax_depth.set_xlim(-0.2, float(est.frame_times_s[-1]) - t0 + 0.2)
    ax_depth.set_xlabel("frame time (s)")
    ax_depth.set_ylabel("insertion depth (mm)")
    ax_depth.invert_yaxis()
    ax_depth.grid(True, alpha=0.3)
    ax_depth.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4, fontsize=9)
    heading = title or "video latency calibration"
    fig.suptitle("\n".join(textwrap.wrap(f"{heading}: {est.summary()}", 120)), fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------------------------
# The whole calibration


def calibrate_latency(frames: FrameSource | Iterable[Frame], samples: Sequence[tuple[float, float]],
                      cal: Calibration, guide_angle_deg: float, *, seconds: float | None = None,
                      search_s: tuple[float, float] = DEFAULT_SEARCH_S, plot: str | Path | None = None,
                      console: Console | None = None, progress: bool = True) -> LatencyEstimate:
    """Video latency from frames and the device's (host time s, depth mm) samples of the same moments.

    Frames are read until the source ends or ``seconds`` of frame time have passed, with a progress bar
    (rich) counting frames and echoes found. ``samples`` is read after the last frame, so a live caller may
    hand over the list its link is still appending to. The frame source is not closed here."""
    if seconds is not None and not seconds > 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    source = frames if isinstance(frames, FrameSource) else None
    stream: Iterable[Frame] = frames.frames() if isinstance(frames, FrameSource) else frames
    count = None if source is None else source.frame_count
    con = console if console is not None else Console(stderr=True)
    times: list[float] = []
    depths: list[float] = []
    found = 0
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[done]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=con, transient=True, disable=not progress) as bar:
        total = seconds if seconds is not None else count
        task = bar.add_task("reading the needle echo", total=total, done="")
        start: float | None = None
        for frame in stream:
            if start is None:
                start = frame.time_s
            if seconds is not None and frame.time_s - start > seconds:
                break
            d = echo_depth(frame.image, cal, guide_angle_deg)
            times.append(frame.time_s)
            depths.append(math.nan if d is None else d)
            found += d is not None
            done = frame.time_s - start if seconds is not None else len(times)
            bar.update(task, completed=done, done=f"{len(times)} frames, echo in {found}")
        bar.update(task, description="matching echo and device depth")
        taken = list(samples)  # one snapshot: a live link may still be appending
        st = np.array([s[0] for s in taken], float)
        sd = np.array([s[1] for s in taken], float)
        est = estimate_lag(times, depths, st, sd, search_s=search_s)
    if plot is not None:
        plot_latency(est, plot, getattr(source, "name", ""))
    return est
