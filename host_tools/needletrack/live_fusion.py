"""Live frames for `needletrack stream` and `record`: a frame source fused with the probe's samples as they come.

The image calibration comes from the probe model's stored calibration (``needletrack image calibrate``), or
from the DICOM's own ultrasound regions; a source with neither is refused before anything starts: the overlay
never guesses mm per pixel. A recording gets ``fused.mp4`` (what the clinician saw) and ``ultrasound.seq.mha``
(the images as acquired, the needle tip per frame, for 3D Slicer); ``--igtl-port`` serves the needle and the
fused image to OpenIGTLink clients.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from needletrack.frames import FrameSource, open_source
from needletrack.frames.dicom import DicomSource
from needletrack.frames.playback import Playback
from needletrack.frames.synthetic import SyntheticSource
from needletrack.fused_stream import Fuser, Sink
from needletrack.fusion import NoGo, SampleHistory
from needletrack.geometry import Calibration, CalibrationError, CalibrationStore, from_region
from needletrack.igtl_server import IgtlServer
from needletrack.sinks import IgtlSink, SequenceSink, VideoSink

FUSED_VIDEO = "fused.mp4"
SEQUENCE = "ultrasound.seq.mha"


@dataclass(frozen=True)
class FusionOptions:
    frames: str  # a frame source spec (needletrack.frames.open_source)
    probe_model: str | None = None  # the stored image calibration to use
    store: Path | None = None  # the calibration store (default: the user's)
    video_latency_s: float = 0.0
    nogo_mm: float | None = None  # tip depth of the marked structure
    igtl_port: int | None = None  # serve OpenIGTLink on this port (0: any free one)
    fps: float = 30.0  # the fused video's playback rate
    uncalibrated_ok: bool = False  # open a source without a calibration (the needle is not drawn until one is set)


@dataclass
class LiveFusion:
    source: FrameSource
    fuser: Fuser
    sinks: list[Sink]
    igtl: IgtlServer | None

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
        if self.igtl is not None:
            self.igtl.stop()
        self.source.close()


def _calibration(opts: FusionOptions) -> Calibration | None:
    if opts.probe_model is None:
        return None
    return CalibrationStore(opts.store).load(opts.probe_model)


def open_fusion(opts: FusionOptions, history: SampleHistory, record: Path | None) -> LiveFusion:
    """The source, the fuser and the sinks; raises CalibrationError (or FrameSourceError) before anything runs
    when the images cannot be placed in mm."""
    cal = _calibration(opts)
    source = open_source(opts.frames, calibration=cal)
    if isinstance(source, SyntheticSource):
        source.realtime, source.start_s = True, time.monotonic()
    if cal is None:
        if isinstance(source, DicomSource) and source.region is not None:
            cal = from_region(source.region, probe_model=source.path.name, image_size=source.size)
        elif isinstance(source, SyntheticSource):
            cal = source.calibration
        elif not opts.uncalibrated_ok or record is not None or opts.igtl_port is not None:
            source.close()
            raise CalibrationError(f"{opts.frames}: no image calibration; calibrate this probe's images "
                                   "(needletrack image calibrate) and pass --probe-model")
    if source.frame_count is not None and not isinstance(source, SyntheticSource):
        source = Playback(source)  # a recorded file, delivered at its pace as a grabber would
    fuser = Fuser(history, cal, nogo=NoGo(opts.nogo_mm), video_latency_s=opts.video_latency_s)
    sinks: list[Sink] = []
    igtl = None
    try:
        if record is not None:
            assert cal is not None  # refused above: a recording's images need their calibration
            record.mkdir(parents=True, exist_ok=True)
            sinks.append(VideoSink(record / FUSED_VIDEO, cal.image_size, opts.fps))
            sinks.append(SequenceSink(record / SEQUENCE, cal))
        if opts.igtl_port is not None:
            assert cal is not None
            igtl = IgtlServer(opts.igtl_port)
            igtl.start()
            sinks.append(IgtlSink(igtl, cal))
    except BaseException:
        for sink in sinks:
            sink.close()
        source.close()
        raise
    return LiveFusion(source, fuser, sinks, igtl)
