"""Ultrasound frame sources: DICOM, video files, capture devices, OpenIGTLink, and the synthetic probe.

Every source is a :class:`FrameSource` yielding :class:`Frame` objects. :func:`open_source` opens one from a
command-line spec; each source module is imported only when used, so a missing optional dependency only
matters to the source that needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from needletrack.frames.base import CalibrationMissingError, Frame, FrameSource, FrameSourceError
from needletrack.geometry import Calibration

__all__ = ["CalibrationMissingError", "Frame", "FrameSource", "FrameSourceError", "open_source"]

VIDEO_SUFFIXES = {".avi", ".mp4", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm"}
SPECS = ("dicom:PATH, video:PATH, capture:N|DEVICE, igtl:HOST:PORT[/DEVICE], synthetic:SCENARIO "
         "(or a .dcm or video path)")


def open_source(spec: str, *, calibration: Calibration | None = None, **options: Any) -> FrameSource:
    """A frame source from a spec such as ``dicom:cine.dcm``, ``capture:0``, ``igtl:127.0.0.1:18944/Image``,
    ``synthetic:dry_needling``; a bare path goes by its suffix. ``options`` go to the source's constructor."""
    kind, _, rest = spec.partition(":")
    if not rest or len(kind) == 1:  # a bare path (a Windows drive letter is not a kind)
        suffix = Path(spec).suffix.lower()
        kind, rest = ("dicom" if suffix in (".dcm", ".dicom", "") else "video" if suffix in VIDEO_SUFFIXES
                      else "?"), spec
    if kind == "dicom":
        from needletrack.frames.dicom import DicomSource

        return DicomSource(rest, calibration=calibration, **options)
    if kind == "video":
        from needletrack.frames.video import VideoFileSource

        return VideoFileSource(rest, calibration=calibration, **options)
    if kind in ("capture", "uvc"):
        from needletrack.frames.video import CaptureDeviceSource

        return CaptureDeviceSource(int(rest) if rest.isdigit() else rest, calibration=calibration, **options)
    if kind == "igtl":
        from needletrack.frames.igtl import IgtlSource

        address, _, device = rest.partition("/")
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise FrameSourceError(f"{spec}: expected igtl:HOST:PORT[/DEVICE]")
        if device:
            options["device_name"] = device
        return IgtlSource(host, int(port), calibration=calibration, **options)
    if kind == "synthetic":
        from needletrack.frames.synthetic import SyntheticSource
        from needletrack.sim import scenario

        return SyntheticSource(scenario.load(rest), **options)
    raise FrameSourceError(f"{spec}: not a frame source; expected one of {SPECS}")
