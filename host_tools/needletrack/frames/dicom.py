"""Ultrasound frames from DICOM files: single images and multi-frame cines.

Decoding is pydicom's, so every transfer syntax it has a decoder for works: native, RLE (built in), JPEG
baseline / lossless and JPEG-LS through pylibjpeg-libjpeg, JPEG 2000 where a decoder is installed. Colour
comes out as BGR: YBR is converted to RGB by the decoder (``as_rgb``), palette colour through the file's
lookup tables.

Pixel spacing and the calibrated area come from the Sequence of Ultrasound Regions (0018,6011): the first item
with a 2D spatial format (RegionSpatialFormat 1) whose physical units are cm in both directions (units code
3); Physical Delta X/Y are cm per pixel. A file without one is refused with :class:`CalibrationMissingError`
unless an image calibration is supplied (or ``allow_uncalibrated`` asks for bare frames, e.g. to click a
calibration on).

Frame times, relative to the first frame: Frame Time Vector (0018,1065, increments in ms, the first 0), Frame
Time (0018,1063, ms), Cine Rate (0018,0040) or Recommended Display Frame Rate (0008,2144), in that order of
preference (the Frame Increment Pointer's target first). A multi-frame file with none of them needs
``frame_time_s``. ``start_s`` places frame 0 on the host clock.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, iter_pixels, pixel_array
from pydicom.tag import Tag

from needletrack.frames.base import (
    CalibrationMissingError,
    Frame,
    FrameSource,
    FrameSourceError,
    spacing_from,
)
from needletrack.geometry import Calibration, Region

CM = 3  # PhysicalUnitsX/YDirection code for cm
SPATIAL_2D = 1  # RegionSpatialFormat code for a 2D (B-mode / colour) area
FRAME_TIME = Tag(0x0018, 0x1063)
FRAME_TIME_VECTOR = Tag(0x0018, 0x1065)
SPACING_TOLERANCE = 0.02  # a supplied calibration may differ from the file's regions by this fraction at most


def ultrasound_regions(ds: Dataset) -> list[Region]:
    """The file's 2D regions calibrated in cm, as :class:`Region` in mm, in file order."""
    out = []
    for item in ds.get("SequenceOfUltrasoundRegions", []):
        if item.get("RegionSpatialFormat") != SPATIAL_2D:
            continue
        if item.get("PhysicalUnitsXDirection") != CM or item.get("PhysicalUnitsYDirection") != CM:
            continue
        sx, sy = float(item.get("PhysicalDeltaX", 0.0)) * 10.0, float(item.get("PhysicalDeltaY", 0.0)) * 10.0
        if not (sx > 0.0 and sy > 0.0):
            continue
        x0, y0 = int(item.RegionLocationMinX0), int(item.RegionLocationMinY0)
        ref_px = ref_mm = None
        if "ReferencePixelX0" in item and "ReferencePixelY0" in item:
            # Reference pixel coordinates count from the region's top-left corner.
            ref_px = (float(x0 + item.ReferencePixelX0), float(y0 + item.ReferencePixelY0))
            if "ReferencePixelPhysicalValueX" in item and "ReferencePixelPhysicalValueY" in item:
                ref_mm = (float(item.ReferencePixelPhysicalValueX) * 10.0,
                          float(item.ReferencePixelPhysicalValueY) * 10.0)
        out.append(Region(x0, y0, int(item.RegionLocationMaxX1), int(item.RegionLocationMaxY1), (sx, sy),
                          ref_px, ref_mm))
    return out


def _missing_calibration(ds: Dataset) -> str:
    if "SequenceOfUltrasoundRegions" not in ds:
        return "no Sequence of Ultrasound Regions (0018,6011) in the file"
    return ("the Sequence of Ultrasound Regions (0018,6011) has no 2D region with PhysicalUnitsX/YDirection "
            "3 (cm) and a positive PhysicalDeltaX/Y")


def _rate_hz(ds: Dataset) -> float | None:
    for key in ("CineRate", "RecommendedDisplayFrameRate"):
        v = ds.get(key)
        if v is not None and float(v) > 0:
            return float(v)
    return None


def frame_times_s(ds: Dataset, count: int, source: str, frame_time_s: float | None = None) -> np.ndarray:
    """Each frame's time in seconds after the first frame's, from the file's timing attributes."""
    pointer = ds.get("FrameIncrementPointer")  # one tag, or several (a MultiValue)
    pointers = [] if pointer is None else list(pointer) if isinstance(pointer, Sequence) else [pointer]
    order = [FRAME_TIME_VECTOR, FRAME_TIME]
    order.sort(key=lambda t: 0 if t in pointers else 1)
    for tag in order:
        if tag not in ds or ds[tag].value in (None, ""):
            continue
        if tag == FRAME_TIME_VECTOR:
            vec = np.asarray(ds[tag].value, dtype=float).ravel()
            if len(vec) != count:
                raise FrameSourceError(f"{source}: Frame Time Vector has {len(vec)} entries for {count} "
                                       "frames")
            t = np.cumsum(vec) / 1000.0
            return t - t[0]
        step = float(ds[tag].value)
        if step > 0:
            return np.arange(count) * step / 1000.0
    rate = _rate_hz(ds)
    if rate is not None:
        return np.arange(count) / rate
    if count == 1:
        return np.zeros(1)
    if frame_time_s is not None and frame_time_s > 0:
        return np.arange(count) * frame_time_s
    raise FrameSourceError(f"{source}: {count} frames but no Frame Time (0018,1063), Frame Time Vector "
                           "(0018,1065), Cine Rate or Recommended Display Frame Rate: give the frame "
                           "interval (frame_time_s)")


def palette_table(ds: Dataset) -> tuple[int, np.ndarray]:
    """The palette as (first mapped index, (n, 3) uint8 BGR table). Entries wider than 8 bits are scaled down,
    unless the writer declared 16 bits but stored 8-bit values, which some do."""
    desc = ds.RedPaletteColorLookupTableDescriptor
    n, first, bits = int(desc[0]) or 65536, int(desc[1]), int(desc[2])
    index = np.arange(first, first + n, dtype=np.uint8 if int(ds.get("BitsAllocated", 8)) <= 8 else np.uint16)
    rgb = apply_color_lut(index, ds).astype(np.int64)
    if bits > 8 and int(rgb.max()) > 255:
        rgb >>= bits - 8
    return first, np.ascontiguousarray(rgb.clip(0, 255).astype(np.uint8)[:, ::-1])


def to_display(arr: np.ndarray, ds: Dataset, palette: tuple[int, np.ndarray] | None = None) -> np.ndarray:
    """A decoded frame as uint8 grey (H, W) or BGR (H, W, 3)."""
    pi = str(ds.PhotometricInterpretation)
    if pi == "PALETTE COLOR":
        first, table = palette if palette is not None else palette_table(ds)
        # Indices below the first entry take the first colour, above the last the last (PS3.3 C.7.6.3.1.5).
        return table[np.clip(arr.astype(np.int64) - first, 0, len(table) - 1)]
    if arr.ndim == 3:
        if arr.dtype != np.uint8:
            arr = (arr >> max(int(ds.get("BitsStored", 8)) - 8, 0)).clip(0, 255).astype(np.uint8)
        # RGB, and YBR after the decoder's conversion to RGB (or a JPEG 2000 decoder's own colour transform).
        return np.ascontiguousarray(arr[..., ::-1])
    if pi not in ("MONOCHROME1", "MONOCHROME2"):
        raise FrameSourceError(f"photometric interpretation {pi} is not supported")
    if arr.dtype != np.uint8:
        shift = max(int(ds.get("BitsStored", 8)) - 8, 0)
        arr = (np.maximum(arr.astype(np.int64), 0) >> shift).clip(0, 255).astype(np.uint8)
    return 255 - arr if pi == "MONOCHROME1" else arr


class DicomSource(FrameSource):
    frame_count: int

    def __init__(self, path: str | Path, *, start_s: float = 0.0, frame_time_s: float | None = None,
                 region_index: int = 0, calibration: Calibration | None = None,
                 allow_uncalibrated: bool = False) -> None:
        self.path = Path(path)
        self.name = f"dicom:{self.path.name}"
        try:
            ds = pydicom.dcmread(self.path, stop_before_pixels=True)
        except (InvalidDicomError, OSError) as e:
            raise FrameSourceError(f"{self.path}: not a readable DICOM file ({e})") from None
        if "Rows" not in ds or "Columns" not in ds or "PhotometricInterpretation" not in ds:
            raise FrameSourceError(f"{self.path}: no image (Rows, Columns or Photometric Interpretation "
                                   "missing)")
        self.header = ds
        self.size = (int(ds.Columns), int(ds.Rows))
        self.frame_count = int(ds.get("NumberOfFrames") or 1)
        self.regions = ultrasound_regions(ds)
        self.region: Region | None = None
        self.mm_per_px: tuple[float, float] | None = None
        if self.regions:
            if not 0 <= region_index < len(self.regions):
                raise FrameSourceError(f"{self.path}: region {region_index} asked for, the file has "
                                       f"{len(self.regions)}")
            self.region = self.regions[region_index]
            self.mm_per_px = self.region.mm_per_px
            if calibration is not None:
                self._agree(calibration)
        elif calibration is not None:
            self.mm_per_px = spacing_from(calibration, self.size, self.name)
        elif not allow_uncalibrated:
            raise CalibrationMissingError(self.path, _missing_calibration(ds))
        self.times_s = start_s + frame_times_s(ds, self.frame_count, str(self.path), frame_time_s)
        self._palette = palette_table(ds) if ds.PhotometricInterpretation == "PALETTE COLOR" else None

    def _agree(self, cal: Calibration) -> None:
        assert self.mm_per_px is not None
        for mine, theirs in zip(self.mm_per_px, cal.mm_per_px, strict=True):
            if abs(theirs - mine) > SPACING_TOLERANCE * mine:
                raise FrameSourceError(f"{self.path}: the file's regions give {self.mm_per_px} mm/px, the "
                                       f"calibration for {cal.probe_model!r} {cal.mm_per_px}: they disagree")

    def _frame(self, index: int, arr: np.ndarray) -> Frame:
        try:
            image = to_display(arr, self.header, self._palette)
        except FrameSourceError as e:
            raise FrameSourceError(f"{self.path}: {e}") from None
        return Frame(image, float(self.times_s[index]), self.mm_per_px, self.region, self.name, index)

    def frames(self) -> Iterator[Frame]:
        # iter_pixels decodes one frame at a time from the file: a long cine never sits in memory whole.
        frames = iter_pixels(self.path, as_rgb=True)
        for i in range(self.frame_count):
            try:
                arr = next(frames)
            except StopIteration:
                return
            except (NotImplementedError, RuntimeError, ValueError) as e:
                raise self._decode_error(e) from None
            yield self._frame(i, arr)

    def frame(self, index: int) -> Frame:
        """One frame by index, without decoding the others."""
        if not 0 <= index < self.frame_count:
            raise IndexError(f"{self.path}: frame {index} of {self.frame_count}")
        try:
            arr = pixel_array(self.path, index=index, as_rgb=True)
        except (NotImplementedError, RuntimeError, ValueError) as e:
            raise self._decode_error(e) from None
        return self._frame(index, arr)

    def _decode_error(self, e: Exception) -> FrameSourceError:
        ts = self.header.file_meta.get("TransferSyntaxUID")
        return FrameSourceError(f"{self.path}: cannot decode the pixel data ({getattr(ts, 'name', ts)}): {e}")
