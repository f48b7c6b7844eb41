"""Ultrasound frames and the needle tip as a PLUS sequence file, for 3D Slicer and the PLUS toolkit.

The file follows the conventions of PLUS (vtkPlusNrrdSequenceIO, vtkPlusMetaImageSequenceIO) and IGSIO: one
image of all frames, and per-frame fields in the header::

    Seq_Frame0000_NeedleTipToImageTransform = 1 0 0 12.5 0 1 0 30 0 0 1 0 0 0 0 1   (4x4, row-major, mm)
    Seq_Frame0000_NeedleTipToImageTransformStatus = OK                               (INVALID: no tip known)
    Seq_Frame0000_Timestamp = 1234.567890                                            (host seconds)
    Seq_Frame0000_ImageStatus = OK

Formats, chosen by the target's suffix:

- ``.seq.nrrd``: NRRD with the pixels attached. Grey frames: axes (x, y, 1, frame), kinds ``domain domain
  domain list`` (PLUS writes (x, y, frame), which 3D Slicer's volume-sequence reader does not load for grey
  images; PLUS reads both). Colour frames: (rgb, x, y, frame), kinds ``vector domain domain list``, as PLUS
  writes them. Key/value pairs as PLUS writes them in NRRD (``Seq_Frame0000_Timestamp:=...``,
  ``ultrasound image orientation:=MF``).
- ``.seq.nhdr``: the same NRRD header, detached; the pixels in ``<name>.seq.raw`` beside it.
- ``.seq.mha``: MetaImage as PLUS writes it (``DimSize = W H N``, ``UltrasoundImageOrientation = MF``, ...,
  ``ElementDataFile = LOCAL`` last), the format 3D Slicer's Sequence Metafile reader loads with its transforms.

Frames are uint8 grey (stored as is, ``BRIGHTNESS``) or BGR (stored as RGB, ``RGB_COLOR``), all of one size.
Spacing is the frames' mm per pixel (x along columns, y down the rows); the image frame of the transforms is
the file's own: origin at the centre of the top-left pixel, x along the columns, y down the rows, z out of the
image plane, mm. A transform is given per frame as a 4x4 array, or None where it is not known: it is then
written as the identity with status INVALID, the convention PLUS and Slicer share for "no value". Never a
guess: :func:`needle_tip_transform` gives None for a stale or incomplete needle state.

Writing is incremental and a crash never corrupts frames already written. Until :meth:`SequenceWriter.close`,
pixels are appended to ``<name>.partial.seq.raw`` (for a ``.seq.nhdr`` target: ``<name>.seq.raw``), and each
frame's fields to a detached NRRD header, ``<name>.partial.seq.nhdr`` (for ``.seq.nhdr``: the target), in one
write per frame; every ``flush_s`` the header's frame count is updated in place to the frames flushed. So from
the first update on, the pair is a detached sequence of those frames, which ITK (3D Slicer) opens as it is
(pynrrd wants the pixel file's exact size: :func:`recover` first). Closing
writes the target (the attached formats: header, then the pixels copied; written to a temporary name, then
renamed) and removes the pieces. After a crash, :func:`recover` does the same with every frame that reached
the disk whole. A recording that raises inside its ``with`` block is left as pieces, for :func:`recover`.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np

from needletrack.frames.base import Frame
from needletrack.geometry import Calibration, Point
from needletrack.needle_state import NeedleState
from needletrack.overlay import is_stale
from needletrack.protocol import Flag

NEEDLE_TIP = "NeedleTipToImage"
SUFFIXES = (".seq.nrrd", ".seq.nhdr", ".seq.mha")
IDENTITY_TEXT = "1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1"
_COUNT_WIDTH = 12  # digits kept for the frame count, so it can be rewritten in place
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*To[A-Za-z][A-Za-z0-9]*$")  # PLUS: FromToTo
_FIELD = re.compile(r"^Seq_Frame(\d+)_([A-Za-z0-9]+):=(.*)$")
_NO_TIP = Flag.DEPTH_INVALID | Flag.HALL_FAULT


class SequenceFileError(ValueError):
    """Input the sequence file cannot take, or pieces that cannot be made into one; nothing was written."""


@dataclass(frozen=True)
class _Layout:
    width: int
    height: int
    channels: int  # 1: grey, 3: RGB
    spacing: tuple[float, float]  # mm per pixel along x (columns) and y (rows)

    @property
    def frame_bytes(self) -> int:
        return self.width * self.height * self.channels

    @property
    def image_type(self) -> str:
        return "BRIGHTNESS" if self.channels == 1 else "RGB_COLOR"


def _num(v: float) -> str:
    text = f"{v:.9g}"
    return "0" if text == "-0" else text


def _matrix_text(m: np.ndarray) -> str:
    return " ".join(_num(float(v)) for v in m.reshape(16))


# ---------------------------------------------------------------------------------------------------- paths


def _pieces(target: Path) -> tuple[Path, Path]:
    """The detached header and the raw pixel file a recording into ``target`` writes as it goes."""
    name = target.name
    suffix = next((s for s in SUFFIXES if name.lower().endswith(s)), None)
    if suffix is None:
        raise SequenceFileError(f"{target}: a sequence file ends with one of {', '.join(SUFFIXES)}")
    stem = name[: -len(suffix)]
    if not stem:
        raise SequenceFileError(f"{target}: the file name has nothing before {suffix}")
    if suffix == ".seq.nhdr":
        return target, target.with_name(stem + ".seq.raw")
    return target.with_name(stem + ".partial.seq.nhdr"), target.with_name(stem + ".partial.seq.raw")


# --------------------------------------------------------------------------------------------------- headers


def _nrrd_header(layout: _Layout, frames: int, data_file: str | None) -> tuple[str, int]:
    """A NRRD header up to the per-frame fields, and the offset of the frame count in it (rewritten in place).

    Grey frames get axes (x, y, 1, frame): Slicer's volume-sequence reader loads scalar sequences of three
    spatial axes only. Colour frames get PLUS's (rgb, x, y, frame): PLUS reads four axes at most."""
    sx, sy = (_num(v) for v in layout.spacing)
    if layout.channels > 1:
        sizes = f"sizes: {layout.channels} {layout.width} {layout.height} "
        space = ["kinds: vector domain domain list", "space dimension: 2",
                 f"space directions: none ({sx},0) (0,{sy}) none", "space origin: (0,0)"]
    else:
        sizes = f"sizes: {layout.width} {layout.height} 1 "
        space = ["kinds: domain domain domain list", "space dimension: 3",
                 f"space directions: ({sx},0,0) (0,{sy},0) (0,0,1) none", "space origin: (0,0,0)"]
    head = "\n".join([
        "NRRD0004",
        "# NeedleTrack ultrasound sequence: frames, their times and the needle tip, as PLUS sequence files",
        "dimension: 4",
        "type: uint8",
        "encoding: raw",
        "endian: little",
        sizes,
    ])
    count_at = len(head.encode())
    rest = [
        *space,
        *([f"data file: {data_file}"] if data_file is not None else []),
        "ultrasound image orientation:=MF",
        f"ultrasound image type:={layout.image_type}",
    ]
    return head + f"{frames:>{_COUNT_WIDTH}}\n" + "\n".join(rest) + "\n", count_at


def _mha_header(layout: _Layout, frames: int) -> str:
    sx, sy = (_num(v) for v in layout.spacing)
    fields = [
        ("ObjectType", "Image"),
        ("NDims", "3"),
        ("AnatomicalOrientation", "RAI"),
        ("BinaryData", "True"),
        ("BinaryDataByteOrderMSB", "False"),
        ("CenterOfRotation", "0 0 0"),
        ("CompressedData", "False"),
        ("DimSize", f"{layout.width} {layout.height} {frames}"),
        ("ElementNumberOfChannels", str(layout.channels)),
        ("ElementSpacing", f"{sx} {sy} 1"),
        ("ElementType", "MET_UCHAR"),
        ("Kinds", "domain domain list"),
        ("Offset", "0 0 0"),
        ("TransformMatrix", "1 0 0 0 1 0 0 0 1"),
        ("UltrasoundImageOrientation", "MF"),
        ("UltrasoundImageType", layout.image_type),
    ]
    return "".join(f"{k} = {v}\n" for k, v in fields)


def _layout_of(header: str, source: Path) -> _Layout:
    """The layout a NeedleTrack detached header describes."""
    fields: dict[str, str] = {}
    for line in header.splitlines():
        key, sep, value = line.partition(": ")
        if sep and not line.startswith("#"):
            fields[key] = value
    try:
        sizes = [int(v) for v in fields["sizes"].split()]
        vector = fields["kinds"].split()[0] == "vector"
        vectors = re.findall(r"\(([^)]*)\)", fields["space directions"])
        sx = float(vectors[0].split(",")[0])
        sy = float(vectors[1].split(",")[1])
        channels, width, height = (sizes[0], sizes[1], sizes[2]) if vector else (1, sizes[0], sizes[1])
    except (KeyError, IndexError, ValueError) as e:
        raise SequenceFileError(f"{source}: not a NeedleTrack sequence header ({e!r})") from None
    return _Layout(width, height, channels, (sx, sy))


# ---------------------------------------------------------------------------------------------------- writer


class SequenceWriter:
    """Writes frames, their times and their transforms into a sequence file as they come. A context manager.

    ``spacing_mm`` is the frames' (x, y) mm per pixel; None where the image is not calibrated (the file then
    says 1 mm per pixel, and every transform must be None: a tip in mm on an image in pixels would not line
    up). ``transforms`` names the per-frame transforms (PLUS style, ``FromToTo``); each frame gives a 4x4
    matrix or None for each, missing ones being None."""

    def __init__(self, path: str | Path, spacing_mm: tuple[float, float] | None, *,
                 transforms: Sequence[str] = (NEEDLE_TIP,), flush_s: float = 0.5) -> None:
        self.path = Path(path)
        self._header_path, self._raw_path = _pieces(self.path)
        for p in {self.path, self._header_path, self._raw_path}:
            if p.exists():
                raise FileExistsError(f"{p} exists: a sequence is never overwritten (an interrupted recording "
                                      "leaves its pieces: recover() makes them into the file)")
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"{self.path.parent}: no such directory")
        if spacing_mm is not None:
            if len(spacing_mm) != 2 or not all(math.isfinite(v) and v > 0 for v in spacing_mm):
                raise SequenceFileError(f"spacing {spacing_mm} mm: two positive, finite values expected")
            spacing_mm = (float(spacing_mm[0]), float(spacing_mm[1]))
        self.spacing_mm = spacing_mm
        names = tuple(transforms)
        bad = [n for n in names if not _NAME.match(n)]
        if bad or len(set(names)) != len(names):
            raise SequenceFileError(f"transform names {list(names)}: each once, named FromToTo (e.g. "
                                    f"{NEEDLE_TIP})")
        self.transforms = names
        self.flush_s = flush_s
        self.frames_written = 0
        self._layout: _Layout | None = None
        self._raw: BinaryIO | None = None
        self._header: BinaryIO | None = None  # unbuffered: one write is one system call
        self._count_at = 0
        self._last_time: float | None = None
        self._last_flush = time.monotonic()
        self._failed: BaseException | None = None
        self._closed = False

    # -- input checks: everything is checked before anything is written

    def _check_image(self, image: np.ndarray) -> np.ndarray:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise SequenceFileError(f"frame {self.frames_written}: images are uint8 arrays, got "
                                    f"{getattr(image, 'dtype', type(image).__name__)}")
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)) or image.size == 0:
            raise SequenceFileError(f"frame {self.frames_written}: an image is (H, W) grey or (H, W, 3) BGR, "
                                    f"got shape {image.shape}")
        channels = 1 if image.ndim == 2 else 3
        h, w = image.shape[:2]
        if self._layout is not None and (w, h, channels) != (self._layout.width, self._layout.height,
                                                              self._layout.channels):
            was = self._layout
            raise SequenceFileError(
                f"frame {self.frames_written} is {w}x{h} px with {channels} channel(s), the sequence's frames are "
                f"{was.width}x{was.height} px with {was.channels}: every frame of a sequence has the same size")
        # Colour is stored as RGB, the order PLUS and Slicer read.
        return np.ascontiguousarray(image if channels == 1 else image[:, :, ::-1])

    def _check_transforms(self, given: Mapping[str, np.ndarray | None] | None) -> list[np.ndarray | None]:
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.transforms))
        if unknown:
            raise SequenceFileError(f"frame {self.frames_written}: transforms {unknown} were not declared when "
                                    f"the sequence was opened ({list(self.transforms)})")
        out: list[np.ndarray | None] = []
        for name in self.transforms:
            value = given.get(name)
            if value is None:
                out.append(None)
                continue
            m = np.asarray(value, dtype=float)
            if (m.shape != (4, 4) or not np.all(np.isfinite(m))
                    or not np.allclose(m[3], (0.0, 0.0, 0.0, 1.0), atol=1e-9)):
                raise SequenceFileError(f"frame {self.frames_written}: {name} must be a finite 4x4 homogeneous "
                                        "matrix, or None where it is not known")
            if self.spacing_mm is None:
                raise SequenceFileError(f"frame {self.frames_written}: {name} is in mm but the image has no pixel "
                                        "spacing; give the sequence the calibration's spacing")
            out.append(m)
        return out

    def _check_time(self, time_s: float) -> float:
        t = float(time_s)
        if not math.isfinite(t):
            raise SequenceFileError(f"frame {self.frames_written}: timestamp {time_s} is not finite")
        if self._last_time is not None and not t > self._last_time:
            raise SequenceFileError(f"frame {self.frames_written}: timestamp {t:.6f} s is not after the previous "
                                    f"frame's {self._last_time:.6f} s")
        return t

    # -- writing

    def append(self, image: np.ndarray, time_s: float,
               transforms: Mapping[str, np.ndarray | None] | None = None) -> int:
        """Adds one frame: its image, its time (host seconds, increasing) and its transforms. Returns its
        index. Bad input raises :class:`SequenceFileError` and writes nothing."""
        if self._closed:
            raise RuntimeError(f"{self.path}: the sequence is closed")
        if self._failed is not None:
            raise RuntimeError(f"{self.path}: writing failed earlier ({self._failed}); the frames before it are "
                               "kept, recover() makes them into the file")
        pixels = self._check_image(image)
        t = self._check_time(time_s)
        matrices = self._check_transforms(transforms)
        i = self.frames_written
        lines = []
        for name, m in zip(self.transforms, matrices, strict=True):
            lines.append(f"Seq_Frame{i:04d}_{name}Transform:={IDENTITY_TEXT if m is None else _matrix_text(m)}")
            lines.append(f"Seq_Frame{i:04d}_{name}TransformStatus:={'INVALID' if m is None else 'OK'}")
        # ImageStatus comes last: a frame whose ImageStatus line is on disk has all its fields there.
        lines += [f"Seq_Frame{i:04d}_Timestamp:={t:.6f}", f"Seq_Frame{i:04d}_ImageStatus:=OK"]
        block = ("\n".join(lines) + "\n").encode()
        try:
            if self._raw is None:
                self._start(pixels)
            assert self._raw is not None and self._header is not None
            self._raw.write(pixels.tobytes())
            # One write per frame: a crash leaves whole frames' fields, never half a line.
            self._header.write(block)
        except BaseException as e:
            self._failed = e
            raise
        self.frames_written += 1
        self._last_time = t
        if time.monotonic() - self._last_flush >= self.flush_s:
            self.flush()
        return i

    def append_frame(self, frame: Frame, transforms: Mapping[str, np.ndarray | None] | None = None) -> int:
        """:meth:`append` for a frame source's frame; a frame whose own spacing differs from the sequence's is
        refused."""
        if frame.mm_per_px is not None and self.spacing_mm is not None and not all(
                math.isclose(a, b, rel_tol=1e-6) for a, b in zip(frame.mm_per_px, self.spacing_mm, strict=True)):
            raise SequenceFileError(f"frame {self.frames_written} ({frame.source} #{frame.index}) has "
                                    f"{frame.mm_per_px} mm per pixel, the sequence {self.spacing_mm}")
        return self.append(frame.image, frame.time_s, transforms)

    def _start(self, pixels: np.ndarray) -> None:
        h, w = pixels.shape[:2]
        layout = _Layout(w, h, 1 if pixels.ndim == 2 else 3, self.spacing_mm or (1.0, 1.0))
        header, self._count_at = _nrrd_header(layout, 0, self._raw_path.name)
        # Both stay open for the whole recording and are closed in _release().
        self._raw = open(self._raw_path, "xb")  # noqa: SIM115
        self._header = open(self._header_path, "xb", buffering=0)  # noqa: SIM115
        self._header.write(header.encode())
        self._layout = layout

    def flush(self) -> None:
        """Pushes the frames written so far to the OS, then makes the header's frame count say so."""
        if self._raw is None or self._header is None or self._failed is not None:
            return
        self._raw.flush()
        self._header.seek(self._count_at)
        self._header.write(f"{self.frames_written:>{_COUNT_WIDTH}}".encode())
        self._header.seek(0, os.SEEK_END)
        self._last_flush = time.monotonic()

    def _release(self, sync: bool) -> None:
        try:
            self.flush()
            if sync and self._raw is not None and self._header is not None:
                os.fsync(self._raw.fileno())
                os.fsync(self._header.fileno())
        finally:
            for f in (self._raw, self._header):
                if f is not None:
                    f.close()
            self._raw, self._header = None, None
            self._closed = True

    def close(self) -> Path | None:
        """Writes the sequence file and removes the pieces. Returns its path, or None when no frame came (then
        nothing was written)."""
        if self._closed:
            return self.path if self.path.exists() else None
        started = self._layout is not None
        self._release(sync=True)
        if not started:
            return None
        if self._failed is not None:
            raise RuntimeError(f"{self.path}: writing failed ({self._failed}); the frames before it are in "
                               f"{self._header_path.name}, recover() makes them into the file")
        return _finalise(self.path)

    def __enter__(self) -> SequenceWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        elif not self._closed:
            # Keep what was written as a readable detached pair; recover() finishes it.
            self._release(sync=False)


# ------------------------------------------------------------------------------------------ finishing a file


def _complete_frames(lines: list[str], source: Path) -> list[list[tuple[str, str]]]:
    """Per frame, its (field, value) pairs, for the frames from 0 whose fields are all there."""
    frames: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    for line in lines:
        m = _FIELD.match(line)
        if m is None:
            raise SequenceFileError(f"{source}: unexpected line among the frame fields: {line[:80]!r}")
        index, field, value = int(m.group(1)), m.group(2), m.group(3)
        if index != len(frames):
            break
        current.append((field, value))
        if field == "ImageStatus":
            frames.append(current)
            current = []
    return frames


def _finalise(target: Path) -> Path:
    header_path, raw_path = _pieces(target)
    text = header_path.read_bytes().decode()
    text = text[: text.rfind("\n") + 1]  # a torn last line, if any, is dropped
    start = text.find("\nSeq_Frame")
    preamble, body = (text, "") if start < 0 else (text[: start + 1], text[start + 1:])
    layout = _layout_of(preamble, header_path)
    fields = _complete_frames(body.splitlines(), header_path)
    n = min(len(fields), raw_path.stat().st_size // layout.frame_bytes)
    if n == 0:
        raise SequenceFileError(f"{header_path}: no complete frame to keep")
    fields = fields[:n]
    size = n * layout.frame_bytes
    suffix = next(s for s in SUFFIXES if target.name.lower().endswith(s))
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "wb") as out:
        if suffix == ".seq.mha":
            out.write(_mha_header(layout, n).encode())
            out.write("".join(f"Seq_Frame{i:04d}_{k} = {v}\n"
                              for i, frame in enumerate(fields) for k, v in frame).encode())
            out.write(b"ElementDataFile = LOCAL\n")
        else:
            data_file = raw_path.name if suffix == ".seq.nhdr" else None
            out.write(_nrrd_header(layout, n, data_file)[0].encode())
            out.write("".join(f"Seq_Frame{i:04d}_{k}:={v}\n"
                              for i, frame in enumerate(fields) for k, v in frame).encode())
        if suffix == ".seq.nrrd":
            out.write(b"\n")  # an attached NRRD's header ends with a blank line
        if suffix != ".seq.nhdr":
            _copy(raw_path, out, size)
        out.flush()
        os.fsync(out.fileno())
    if suffix == ".seq.nhdr":
        os.truncate(raw_path, size)  # drops a torn last frame
    os.replace(tmp, target)
    if suffix != ".seq.nhdr":
        header_path.unlink()
        raw_path.unlink()
    return target


def _copy(src: Path, out: BinaryIO, size: int, chunk: int = 8 << 20) -> None:
    with open(src, "rb") as f:
        left = size
        while left:
            block = f.read(min(chunk, left))
            if not block:
                raise SequenceFileError(f"{src}: ended {left} bytes early")
            out.write(block)
            left -= len(block)


def recover(path: str | Path) -> Path:
    """Makes the sequence file ``path`` from the pieces an interrupted recording into it left, keeping every
    frame whose pixels and fields reached the disk whole. Returns ``path``."""
    target = Path(path)
    header_path, raw_path = _pieces(target)
    if not (header_path.exists() and raw_path.exists()):
        raise FileNotFoundError(f"{target}: no interrupted recording to recover ({header_path.name} and "
                                f"{raw_path.name} are not both there)")
    if target.exists() and target != header_path:
        raise FileExistsError(f"{target} exists already; {header_path.name} and {raw_path.name} are leftovers")
    return _finalise(target)


# ------------------------------------------------------------------------------------------ the needle tip


def needle_tip_to_image(cal: Calibration, tip_mm: Point, guide_angle_deg: float) -> np.ndarray:
    """NeedleTipToImage for a tip at ``tip_mm`` = (x, z) in the probe's image frame (x from the guide exit
    along the calibration's lateral direction, z below the transducer face, as
    :func:`needletrack.geometry.px_to_mm` measures) on a guide at ``guide_angle_deg``.

    Translation: the tip in the sequence's image frame (origin at the centre of pixel (0, 0), x along the
    columns, y down the rows, mm). Rotation: +x along the needle towards its tip, +z out of the image plane,
    +y = z cross x."""
    x, z = (float(v) for v in tip_mm)
    if not (math.isfinite(x) and math.isfinite(z) and math.isfinite(guide_angle_deg)):
        raise ValueError(f"tip {tip_mm} mm and guide angle {guide_angle_deg} deg must be finite")
    sx, sy = cal.mm_per_px
    g = math.radians(guide_angle_deg)
    along = np.array([cal.lateral * math.cos(g), math.sin(g), 0.0])
    normal = np.array([0.0, 0.0, 1.0])
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2] = along, np.cross(normal, along), normal
    m[:3, 3] = (cal.exit_px[0] * sx + cal.lateral * x, cal.face_row * sy + z, 0.0)
    return m


def needle_tip_transform(cal: Calibration, state: NeedleState | None) -> np.ndarray | None:
    """NeedleTipToImage for the needle state at a frame, or None where there is no tip to give: no state, a
    stale one, no depth or guide angle, depth invalid, Hall sensor fault. The tip is where the overlay draws
    it: ``depth`` along the guide from its exit."""
    if (state is None or is_stale(state) or state.depth_mm is None or state.guide_angle_deg is None
            or state.flags & _NO_TIP):
        return None
    g = math.radians(state.guide_angle_deg)
    tip = (state.depth_mm * math.cos(g), cal.exit_depth_mm + state.depth_mm * math.sin(g))
    return needle_tip_to_image(cal, tip, state.guide_angle_deg)
