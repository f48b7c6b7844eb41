"""A session recording opened for review (docs/session-review.md): samples, events and frames on one time axis.

The axis is the host clock (``time.monotonic`` of the recorder), in seconds from the session's start: the
samples' ``host_time_s`` and the frames' timestamps are on it already; events, stamped with device time, are
placed at the host time of the sample they were written with (each event's ``device_time_s`` is that of a
recorded sample), or by the device-to-host mapping of the samples around them where no sample matches. A
sample with no host time (no clock mapping yet) gets one from the nearest sample that has one.

``state_at(t)`` is what the readouts show at ``t``: the newest sample at or before ``t``, as the live viewer
shows the newest sample; more than :data:`SIGNAL_LOST_S` old, it counts as no signal, as it does live.
``frame_index_at(t)`` is the frame whose capture time is nearest ``t``.

Nothing here writes: a damaged or interrupted recording is read as far as it goes, and what is missing is said in
``problems``. A directory that holds no recording at all raises :class:`ReviewError`.
"""

from __future__ import annotations

import csv
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from needletrack.live_fusion import FUSED_VIDEO, SEQUENCE
from needletrack.needle_state import DEFAULT_NOGO_MARGIN_MM, NeedleState
from needletrack.protocol import Flag
from needletrack.recording import EVENT_COLUMNS, SAMPLE_COLUMNS, flags_text, parse_flags
from needletrack.viewer.review_frames import FramePixels, FramesError, SequencePixels, VideoPixels, read_sequence

SIGNAL_LOST_S = 0.1  # the live viewer's NO SIGNAL: no needle data for 100 ms
MIN_FRAME_REACH_S = 0.25  # a frame is shown this far from its capture time at least (more for slow sources)
NEAR_EVENT_S = 0.5  # events this close to the cursor are highlighted
# `needletrack demo` writes its samples into session-*/recording/ and the synthetic stream's frames beside it.
DEMO_FRAMES = (("fused_synthetic.mp4", "synthetic.seq.mha"), ("fused_dicom.mp4", "dicom.seq.mha"))

_NUMERIC = tuple(c for c in SAMPLE_COLUMNS if c != "flags")
_STATE_KINDS = {"nogo_near": "near no-go", "nogo_reached": "no-go reached", "imu_fault": "IMU fault",
                "hall_fault": "needle sensor fault", "depth_invalid": "depth invalid", "stale": "stale data",
                "low_battery": "low battery"}


class ReviewError(Exception):
    """The directory cannot be reviewed; the message says what is wrong."""


@dataclass(frozen=True)
class ReviewEvent:
    t: float  # session seconds
    device_s: float
    kind: str  # as in events.csv
    value: str
    label: str  # the kind, as the events list shows it
    detail: str


@dataclass(frozen=True)
class SampleAt:
    """The sample the readouts show at a cursor time."""

    index: int
    t: float  # the sample's session time
    age_s: float  # cursor time minus the sample's
    seq: int
    device_s: float
    needle_angle_deg: float | None
    guide_angle_deg: float | None
    depth_mm: float | None
    tip_depth_mm: float | None
    pitch_deg: float | None
    roll_deg: float | None
    flags: Flag
    nogo_depth_mm: float | None

    @property
    def signal_lost(self) -> bool:
        return self.age_s > SIGNAL_LOST_S

    @property
    def flags_text(self) -> str:
        return flags_text(self.flags)

    def needle_state(self) -> NeedleState:
        return NeedleState(self.depth_mm, self.tip_depth_mm, self.needle_angle_deg, self.guide_angle_deg,
                           self.flags, self.age_s, self.nogo_depth_mm, DEFAULT_NOGO_MARGIN_MM)


def _opt(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


@dataclass
class Review:
    directory: Path
    session: dict[str, Any]
    t0_host_s: float  # host seconds at session time 0
    duration_s: float
    t: np.ndarray  # per sample, session seconds, in recorded order
    columns: dict[str, np.ndarray]  # samples.csv's numeric columns, NaN where empty
    flags: np.ndarray  # per sample, the Flag bits
    events: list[ReviewEvent]
    frame_times: np.ndarray  # per frame, session seconds (empty: no frames)
    pixels: FramePixels | None
    problems: list[str] = field(default_factory=list)
    image_note: str = ""  # what the image shows, or why there is none
    nogo_changes: list[tuple[float, float | None]] = field(default_factory=list)  # (t, depth), from t on

    def __post_init__(self) -> None:
        # Host times from a clock mapping can step back by a fraction of a millisecond when the mapping is
        # updated: searches use the running maximum, so "at or before t" stays well defined.
        self._search = np.maximum.accumulate(self.t) if len(self.t) else self.t
        self._event_t = np.array([e.t for e in self.events], dtype=float)

    # -- samples
    @property
    def sample_count(self) -> int:
        return len(self.t)

    def sample_index_at(self, t: float) -> int | None:
        i = int(np.searchsorted(self._search, t, side="right")) - 1
        return None if i < 0 else i

    def state_at(self, t: float) -> SampleAt | None:
        """The newest sample at or before ``t`` (None before the first), with the no-go depth then in force."""
        i = self.sample_index_at(t)
        if i is None:
            return None
        c = self.columns
        return SampleAt(i, float(self.t[i]), float(t - self.t[i]), int(c["seq"][i]), float(c["device_time_s"][i]),
                        _opt(c["needle_angle_deg"][i]), _opt(c["guide_angle_deg"][i]), _opt(c["depth_mm"][i]),
                        _opt(c["tip_depth_mm"][i]), _opt(c["pitch_deg"][i]), _opt(c["roll_deg"][i]),
                        Flag(int(self.flags[i])), self.nogo_at(t))

    def nogo_at(self, t: float) -> float | None:
        depth: float | None = None
        for at, value in self.nogo_changes:
            if at > t:
                break
            depth = value
        return depth

    # -- frames
    @property
    def frame_count(self) -> int:
        return 0 if self.pixels is None else len(self.frame_times)

    def frame_index_at(self, t: float) -> int | None:
        """The frame whose capture time is nearest ``t``; None without frames."""
        n = self.frame_count
        if n == 0:
            return None
        i = int(np.searchsorted(self.frame_times, t))
        if i >= n:
            return n - 1
        if i > 0 and t - self.frame_times[i - 1] <= self.frame_times[i] - t:
            return i - 1
        return i

    @cached_property
    def frame_reach_s(self) -> float:
        """How far from its capture time a frame stands for the instant: 1.5 median frame intervals, at least
        :data:`MIN_FRAME_REACH_S`. Beyond it (before the first frame, after the last, in a stall of the source)
        there is no image of that instant."""
        if self.frame_count < 2:
            return MIN_FRAME_REACH_S
        return max(MIN_FRAME_REACH_S, 1.5 * float(np.median(np.diff(self.frame_times))))

    def frame_near(self, t: float) -> int | None:
        """The nearest frame when it is within :attr:`frame_reach_s` of ``t``, else None."""
        i = self.frame_index_at(t)
        if i is None or abs(float(self.frame_times[i]) - t) > self.frame_reach_s:
            return None
        return i

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i``'s image; raises FramesError when it cannot be decoded."""
        if self.pixels is None:
            raise FramesError("no frames in this recording")
        return self.pixels.frame(i)

    # -- events
    def event_times(self, kind: str) -> np.ndarray:
        return np.array([e.t for e in self.events if e.kind == kind], dtype=float)

    def events_near(self, t: float, within_s: float = NEAR_EVENT_S) -> range:
        """Indices into ``events`` of those within ``within_s`` of ``t``."""
        lo = int(np.searchsorted(self._event_t, t - within_s, side="left"))
        hi = int(np.searchsorted(self._event_t, t + within_s, side="right"))
        return range(lo, hi)

    def close(self) -> None:
        if self.pixels is not None:
            self.pixels.close()


# ------------------------------------------------------------------------------------------------- loading


def _find(directory: Path) -> Path:
    if not directory.exists():
        raise ReviewError(f"{directory}: no such directory")
    if not directory.is_dir():
        raise ReviewError(f"{directory} is a file; a recording is a directory holding samples.csv")
    if (directory / "samples.csv").is_file():
        return directory
    if (directory / "recording" / "samples.csv").is_file():  # a `needletrack demo` session
        return directory / "recording"
    raise ReviewError(f"{directory} is not a recording: it has no samples.csv (a recording holds samples.csv, "
                      "events.csv and session.json, with fused.mp4 and ultrasound.seq.mha when frames were fused)")


def _session(d: Path, problems: list[str]) -> dict[str, Any]:
    path = d / "session.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        problems.append("no session.json: the device and settings of this session are not known")
        return {}
    except (OSError, ValueError) as e:
        problems.append(f"session.json cannot be read ({e}): the device and settings are not known")
        return {}
    if not isinstance(doc, dict):
        problems.append("session.json is not a JSON object: ignored")
        return {}
    if doc.get("complete") is False:
        problems.append("the recording was not closed cleanly (session.json: complete false): it may end early")
    return doc


_EMPTY_FIELD = re.compile(r",(?=,)")


def _parse_fast(numbers: list[str]) -> np.ndarray | None:
    """The numeric parts of well-formed rows as an (n, 9) array in one pass of NumPy's parser (about ten times
    faster than a float() per field: an hour at 1000 samples/s is 3.6 million rows); None when some field is not
    a number, for the row-by-row path to find it."""
    joined = _EMPTY_FIELD.sub(",nan", ",".join(numbers))
    if joined.startswith(","):
        joined = "nan" + joined
    if joined.endswith(","):
        joined += "nan"
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # NumPy's word for "stopped at a bad field"
        try:
            values = np.fromstring(joined, sep=",")
        except (DeprecationWarning, ValueError):
            return None
    if values.size != len(numbers) * len(_NUMERIC):
        return None
    return values.reshape(len(numbers), len(_NUMERIC))


def _parse_slow(numbers: list[str]) -> tuple[np.ndarray, list[int]]:
    rows: list[list[float]] = []
    bad: list[int] = []
    for i, text in enumerate(numbers):
        try:
            rows.append([float(v) if v else math.nan for v in text.split(",")])
        except ValueError:
            bad.append(i)
    return np.array(rows, dtype=float).reshape(len(rows), len(_NUMERIC)), bad


def _parse_rows(body: list[str]) -> tuple[np.ndarray, list[str], list[int]]:
    """The rows' numbers, their flags, and the (1-based file) row numbers of the rows that are not samples."""
    commas = len(SAMPLE_COLUMNS) - 1
    kept = [i for i, line in enumerate(body) if line.count(",") == commas]
    bad = sorted(set(range(len(body))) - set(kept)) if len(kept) != len(body) else []
    split = [body[i].rstrip("\r").rpartition(",") for i in kept]
    numbers = [p[0] for p in split]
    values = _parse_fast(numbers)
    if values is None:
        values, unparsed = _parse_slow(numbers)
        gone = set(unparsed)
        bad = sorted(bad + [kept[i] for i in unparsed])
        kept = [k for i, k in enumerate(kept) if i not in gone]
        split = [p for i, p in enumerate(split) if i not in gone]
    # Sequence number and device time are always written: a row without them is not a sample.
    whole = ~(np.isnan(values[:, 0]) | np.isnan(values[:, 1]))
    if not whole.all():
        bad = sorted(bad + [kept[i] for i in np.flatnonzero(~whole)])
        values = values[whole]
        split = [p for p, w in zip(split, whole, strict=True) if w]
    return values, [p[2] for p in split], [i + 2 for i in bad]


def _samples(d: Path, session: dict[str, Any], problems: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    path = d / "samples.csv"
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise ReviewError(f"{path}: cannot be read ({e.strerror or e})") from None
    lines = text.split("\n")
    # The writer ends every row with a newline: a last line without one was cut, whatever it looks like (a
    # number cut short still parses).
    torn = lines.pop() != ""
    if not lines:
        raise ReviewError(f"{path} is empty: not a recording, or one cut off before its first row")
    header = lines[0].rstrip("\r").split(",")
    if tuple(header) != SAMPLE_COLUMNS:
        raise ReviewError(f"{path}: its columns are not a NeedleTrack recording's (expected "
                          f"{','.join(SAMPLE_COLUMNS)}, got {lines[0][:120]!r})")
    body = lines[1:]
    values, flag_text, bad = _parse_rows(body)
    n = len(flag_text)
    if n == 0:
        cut = " (it was cut off in its first row)" if torn and not body else ""
        raise ReviewError(f"{path} holds no complete sample{cut}")
    expected = session.get("samples")
    of = f" of the {expected} the session recorded" if isinstance(expected, int) and expected > n else ""
    if torn:
        problems.append(f"samples.csv is truncated: it ends in the middle of a row; {n} samples{of} were read")
    elif of and not bad:
        problems.append(f"samples.csv holds {n} samples{of}: the rest are missing")
    if bad:
        problems.append(f"samples.csv: {len(bad)} damaged row(s) skipped (first: row {bad[0]})")
    columns = {name: values[:, i].copy() for i, name in enumerate(_NUMERIC)}
    cache: dict[str, int] = {}
    flags = np.empty(n, dtype=np.int64)
    for i, t in enumerate(flag_text):
        bits = cache.get(t)
        if bits is None:
            try:
                bits = int(parse_flags(t))
            except KeyError:
                bits = 0
                problems.append(f"samples.csv: unknown flag in {t!r}: taken as no flags")
            cache[t] = bits
        flags[i] = bits
    return columns, flags


def _host_times(device: np.ndarray, host: np.ndarray, problems: list[str]) -> tuple[np.ndarray, bool]:
    """Host seconds for every sample, and whether they are host times (False: device times, no mapping)."""
    known = np.flatnonzero(~np.isnan(host))
    if len(known) == 0:
        problems.append("no sample has a host time (no clock mapping was made): the time axis is the device's")
        return device.copy(), False
    out = host.copy()
    missing = np.flatnonzero(np.isnan(host))
    if len(missing):
        # Each sample without a host time takes the device-to-host offset of the nearest sample with one.
        j = np.clip(np.searchsorted(known, missing), 0, len(known) - 1)
        before = np.clip(j - 1, 0, len(known) - 1)
        nearer = np.where(np.abs(known[before] - missing) < np.abs(known[j] - missing), known[before], known[j])
        out[missing] = device[missing] + (host[nearer] - device[nearer])
    return out, True


def _event_detail(kind: str, value: str, tip_mm: float | None) -> tuple[str, str]:
    at_tip = "" if tip_mm is None else f"tip {tip_mm:.1f} mm"
    if kind in ("twitch", "pass"):
        return kind, at_tip
    if kind in _STATE_KINDS:
        what = {"1": "start", "0": "end"}.get(value, value)
        return _STATE_KINDS[kind], what + (f", {at_tip}" if at_tip and what == "start" else "")
    if kind == "gap":
        return "samples lost", f"{value} sample(s) missing from the stream"
    if kind == "link":
        return "link", value
    if kind == "nogo":
        return "no-go depth", "cleared" if value == "cleared" else f"set to {value}"
    return kind, value


def _events(d: Path, device: np.ndarray, host_axis: np.ndarray, tip: np.ndarray, t0: float,
            problems: list[str]) -> list[ReviewEvent]:
    path = d / "events.csv"
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        problems.append("no events.csv: no events to list")
        return []
    except OSError as e:
        problems.append(f"events.csv cannot be read ({e.strerror or e}): no events to list")
        return []
    if not rows or tuple(rows[0]) != EVENT_COLUMNS:
        problems.append("events.csv's columns are not a recording's: no events to list")
        return []
    # Each event is written with the device time of a recorded sample: the event takes that sample's host
    # time. Device time restarts with the device, so the match is searched for in order, from the last one.
    monotonic = len(device) < 2 or bool(np.all(np.diff(device) >= 0))
    by_time: dict[float, list[int]] = {}
    if not monotonic:
        for i, v in enumerate(device):
            by_time.setdefault(float(v), []).append(i)
    out: list[ReviewEvent] = []
    at = 0
    skipped = 0
    for row in rows[1:]:
        try:
            device_s, kind, value = float(row[0]), row[1], row[2]
        except (IndexError, ValueError):
            skipped += 1
            continue
        if monotonic:
            i = int(np.searchsorted(device, device_s))
            candidates = [i] if i < len(device) and device[i] == device_s else []
        else:
            candidates = by_time.get(device_s, [])
        if candidates:
            i = next((c for c in candidates if c >= at), candidates[-1])
            at, host = i, float(host_axis[i])
            tip_mm = _opt(tip[i])
        elif monotonic and len(device):
            host = float(np.interp(device_s, device, host_axis))
            if device_s < device[0] or device_s > device[-1]:
                host = device_s + float(host_axis[0] - device[0] if device_s < device[0]
                                        else host_axis[-1] - device[-1])
            tip_mm = None
        else:
            host, tip_mm = float(host_axis[at]), None
        label, detail = _event_detail(kind, value, tip_mm)
        out.append(ReviewEvent(host - t0, device_s, kind, value, label, detail))
    if skipped:
        problems.append(f"events.csv: {skipped} damaged row(s) skipped")
    out.sort(key=lambda e: e.t)
    return out


def _nogo_changes(session: dict[str, Any], events: list[ReviewEvent]) -> list[tuple[float, float | None]]:
    scenario = session.get("scenario")
    initial = session.get("nogo_depth_mm")
    if initial is None and isinstance(scenario, dict):
        initial = scenario.get("nogo_depth_mm")
    changes: list[tuple[float, float | None]] = [(-math.inf, float(initial) if isinstance(initial, int | float)
                                                  else None)]
    for e in events:
        if e.kind == "nogo":
            try:
                changes.append((e.t, None if e.value == "cleared" else float(e.value.split()[0])))
            except (ValueError, IndexError):
                continue
    return changes


def _frame_files(d: Path) -> tuple[Path, Path]:
    video, sequence = d / FUSED_VIDEO, d / SEQUENCE
    if d.name == "recording" and not (sequence.exists() or sequence.with_name("ultrasound.partial.seq.nhdr")
                                      .exists()):
        for v, s in DEMO_FRAMES:
            if (d.parent / s).exists():
                return d.parent / v, d.parent / s
    return video, sequence


def _frames(d: Path, problems: list[str]) -> tuple[np.ndarray, FramePixels | None, str]:
    """Frame times (host seconds), their pixels, and what the image shows (or why it shows nothing)."""
    video, sequence = _frame_files(d)
    try:
        info = read_sequence(sequence)
    except FileNotFoundError:
        if video.exists():
            problems.append(f"{video.name} has no frame times ({sequence.name} is missing): it is not shown")
            return np.zeros(0), None, f"{sequence.name} missing: the video cannot be placed in time"
        return np.zeros(0), None, "no frames in this recording"
    except (FramesError, OSError) as e:
        problems.append(f"{sequence.name} cannot be read ({e}): no image")
        return np.zeros(0), None, f"{sequence.name} cannot be read"
    if len(info.times_s) == 0:
        return np.zeros(0), None, "no frames in this recording"
    if info.partial:
        problems.append(f"{sequence.name} was not finished (the recording was interrupted): {len(info.times_s)} "
                        f"frames read from {info.path.name}")
    pixels: FramePixels
    try:
        if not video.exists():
            raise FramesError(f"{video.name} is missing")
        pixels = VideoPixels(video, (info.width, info.height), len(info.times_s))
        if pixels.count < len(info.times_s):
            problems.append(f"{video.name} has {pixels.count} of the {len(info.times_s)} frames: the rest not shown")
        note = f"{pixels.count} frames from {video.name}, the overlay as shown"
    except (FramesError, OSError, cv2.error) as e:
        pixels = SequencePixels(info)
        problems.append(f"{e}: showing the frames of {sequence.name}, without the overlay")
        note = f"{pixels.count} frames from {sequence.name}, without the overlay"
    return info.times_s[:pixels.count], pixels, note


def load_review(directory: str | Path) -> Review:
    """Opens a recording for review. Raises ReviewError when ``directory`` holds no recording; a damaged or
    incomplete one is read as far as it goes, with ``problems`` saying what is missing."""
    d = _find(Path(directory))
    problems: list[str] = []
    session = _session(d, problems)
    columns, flags = _samples(d, session, problems)
    device = columns["device_time_s"]
    host, on_host = _host_times(device, columns["host_time_s"], problems)
    frame_host, pixels, note = _frames(d, problems)
    if pixels is not None and not on_host:
        pixels.close()
        problems.append("the frames are on the host clock and the samples have no host time: no image")
        frame_host, pixels, note = np.zeros(0), None, "the frames cannot be placed in time (no clock mapping)"
    starts = [float(np.min(host))] + ([float(frame_host[0])] if len(frame_host) else [])
    ends = [float(np.max(host))] + ([float(frame_host[-1])] if len(frame_host) else [])
    t0 = min(starts)
    events = _events(d, device, host, columns["tip_depth_mm"], t0, problems)
    review = Review(d, session, t0, max(ends) - t0, host - t0, columns, flags, events, frame_host - t0, pixels,
                    problems, note)
    review.nogo_changes = _nogo_changes(session, events)
    return review
