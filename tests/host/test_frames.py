"""Frame sources: real ultrasound DICOMs, video files, a capture device, OpenIGTLink, the synthetic probe."""

from __future__ import annotations

import math
import signal
import socket
import threading
import time

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_color_lut, convert_color_space

from needletrack.frames import bmode
from needletrack.frames.base import CalibrationMissingError, FrameSourceError
from needletrack.frames.dicom import DicomSource
from needletrack.frames.synthetic import SyntheticSource
from needletrack.frames.video import CaptureDeviceSource, VideoFileSource
from needletrack.geometry import Calibration
from needletrack.sim import scenario


def _dcm(name: str) -> str:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not in the installed pydicom-data")
    return str(path)


# (columns, rows, frames, PhysicalDeltaX in cm, region x0 y0 x1 y1) as the files state them.
REAL = {
    "gdcm-US-ALOKA-16.dcm": (640, 480, 1, 0.03826530650258064, (32, 24, 335, 415)),
    "OBXXXX1A.dcm": (800, 600, 1, 0.02622878766196998, (120, 60, 800, 518)),
    "OBXXXX1A_rle_2frame.dcm": (800, 600, 2, 0.02622878766196998, (120, 60, 800, 518)),
    "OBXXXX1A_expb_2frame.dcm": (800, 600, 2, 0.02622878766196998, (120, 60, 800, 518)),
    "JPGLosslessP14SV1_1s_1f_8b.dcm": (1024, 768, 1, 0.025476696592378157, (14, 38, 1010, 758)),
    "color3d_jpeg_baseline.dcm": (640, 480, 120, 0.05104970559477806, (84, 31, 595, 414)),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_dicoms_load_with_the_spacing_of_their_region_sequence(name):
    cols, rows, count, delta_cm, bounds = REAL[name]
    path = _dcm(name)
    src = DicomSource(path, frame_time_s=0.05)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    item = ds.SequenceOfUltrasoundRegions[0]
    assert item.PhysicalUnitsXDirection == 3 and item.PhysicalUnitsYDirection == 3  # cm
    assert src.mm_per_px == pytest.approx((float(item.PhysicalDeltaX) * 10, float(item.PhysicalDeltaY) * 10))
    assert src.mm_per_px == pytest.approx((delta_cm * 10, delta_cm * 10))
    assert src.region is not None
    assert (src.region.x0, src.region.y0, src.region.x1, src.region.y1) == bounds
    assert src.frame_count == count
    first = next(iter(src))
    assert first.size == (cols, rows) and first.image.dtype == np.uint8
    assert first.mm_per_px == src.mm_per_px and first.index == 0 and first.time_s == 0.0
    last = src.frame(count - 1)
    assert last.index == count - 1 and last.image.shape == first.image.shape


def test_cine_frame_times_come_from_frame_time():
    path = _dcm("color3d_jpeg_baseline.dcm")
    assert float(pydicom.dcmread(path, stop_before_pixels=True).FrameTime) == pytest.approx(33.333)
    src = DicomSource(path, start_s=100.0)
    head = []
    for f in src:
        head.append(f)
        if len(head) == 3:
            break
    assert [f.time_s for f in head] == pytest.approx([100.0, 100.033333, 100.066666])
    assert src.frame(119).time_s == pytest.approx(100.0 + 119 * 0.033333)


def test_frame_time_vector_and_missing_timing(tmp_path):
    ds = pydicom.dcmread(_dcm("OBXXXX1A_2frame.dcm"))
    for tag in ("FrameTime", "FrameTimeVector", "CineRate", "RecommendedDisplayFrameRate"):
        assert tag not in ds
    with pytest.raises(FrameSourceError, match="frame_time_s"):
        DicomSource(_dcm("OBXXXX1A_2frame.dcm"))
    assert list(DicomSource(_dcm("OBXXXX1A_2frame.dcm"), frame_time_s=0.1).times_s) == pytest.approx([0, 0.1])
    # Three frames at uneven intervals: the vector holds the increments, the first one 0.
    frame_bytes = len(ds.PixelData) // 2
    ds.PixelData = ds.PixelData + ds.PixelData[:frame_bytes]
    ds.NumberOfFrames = 3
    ds.FrameTimeVector = [0.0, 42.5, 30.0]
    ds.FrameIncrementPointer = pydicom.tag.Tag(0x0018, 0x1065)
    ds.save_as(tmp_path / "ftv.dcm")
    assert [f.time_s for f in DicomSource(tmp_path / "ftv.dcm")] == pytest.approx([0.0, 0.0425, 0.0725])
    ds.FrameTimeVector = [0.0, 40.0]
    ds.save_as(tmp_path / "bad.dcm")
    with pytest.raises(FrameSourceError, match="2 entries for 3 frames"):
        DicomSource(tmp_path / "bad.dcm")


def test_palette_colour_is_converted_to_bgr_the_same_for_every_transfer_syntax():
    explicit = DicomSource(_dcm("OBXXXX1A.dcm")).frame(0).image
    rle = DicomSource(_dcm("OBXXXX1A_rle.dcm")).frame(0).image
    big = DicomSource(_dcm("OBXXXX1A_expb.dcm")).frame(0).image
    np.testing.assert_array_equal(explicit, rle)
    np.testing.assert_array_equal(explicit, big)
    ds = pydicom.dcmread(_dcm("OBXXXX1A.dcm"))
    rgb = apply_color_lut(ds.pixel_array, ds)  # 16-bit palette entries
    for r, c in ((5, 400), (300, 400), (100, 450)):
        assert tuple(explicit[r, c]) == tuple(int(v) >> 8 for v in rgb[r, c][::-1])
    blue, _, red = (int(v) for v in explicit[5, 400])
    assert blue > red + 30  # the Philips header band is blue: BGR order, not RGB


def test_sixteen_bit_palette():
    img = DicomSource(_dcm("gdcm-US-ALOKA-16.dcm")).frame(0).image
    assert img.shape == (480, 640, 3)
    green = (img[:, :, 1] > 200) & (img[:, :, 0] < 60) & (img[:, :, 2] < 60)
    assert green.sum() > 50  # the scanner's green depth markers survive the 16 -> 8 bit scaling
    tissue = img[100:400, 60:300].astype(int)
    assert 10 < tissue.mean() < 200 and np.abs(tissue[..., 0] - tissue[..., 2]).mean() < 3  # grey B-mode


def test_ybr_is_converted(tmp_path):
    rgb_src = DicomSource(_dcm("US1_UNCR.dcm"), allow_uncalibrated=True)
    reference = rgb_src.frame(0).image
    j2k = DicomSource(_dcm("US1_J2KR.dcm"), allow_uncalibrated=True).frame(0).image  # YBR_RCT, lossless
    np.testing.assert_array_equal(reference, j2k)
    ds = pydicom.dcmread(_dcm("US1_UNCR.dcm"))
    ybr = convert_color_space(ds.pixel_array, "RGB", "YBR_FULL")
    ds.PixelData = ybr.tobytes()
    ds.PhotometricInterpretation = "YBR_FULL"
    ds.save_as(tmp_path / "ybr.dcm")
    back = DicomSource(tmp_path / "ybr.dcm", allow_uncalibrated=True).frame(0).image
    assert np.abs(back.astype(int) - reference.astype(int)).max() <= 2
    # A JPEG baseline YBR_FULL_422 cine of grey B-mode: converted, its channels agree; left as YBR they would
    # not.
    cine = next(iter(DicomSource(_dcm("color3d_jpeg_baseline.dcm")))).image.astype(int)
    bright = cine.sum(axis=2) > 60
    assert np.median(np.abs(cine[..., 0] - cine[..., 2])[bright]) <= 2  # unconverted: ~90


def test_dicom_without_regions_asks_for_a_calibration():
    path = _dcm("US1_UNCR.dcm")
    with pytest.raises(CalibrationMissingError) as err:
        DicomSource(path)
    assert "US1_UNCR.dcm" in str(err.value) and "(0018,6011)" in str(err.value)
    assert "calibrat" in str(err.value)
    assert err.value.source.endswith("US1_UNCR.dcm") and "Ultrasound Regions" in err.value.missing
    cal = Calibration("L12", (640, 480), (-10.0, 30.0), 30.0, (0.1, 0.1))
    src = DicomSource(path, calibration=cal)
    assert src.frame(0).mm_per_px == (0.1, 0.1) and src.region is None
    with pytest.raises(FrameSourceError, match="800x600"):
        DicomSource(path, calibration=Calibration("L12", (800, 600), (0.0, 0.0), 0.0, (0.1, 0.1)))
    bare = DicomSource(path, allow_uncalibrated=True)
    assert bare.frame(0).mm_per_px is None


def test_a_calibration_that_disagrees_with_the_file_is_refused():
    path = _dcm("gdcm-US-ALOKA-16.dcm")
    wrong = Calibration("C5", (640, 480), (32.0, 45.0), 45.0, (0.30, 0.30))
    with pytest.raises(FrameSourceError, match="disagree"):
        DicomSource(path, calibration=wrong)


def _write_video(path, frames, fps=25.0):
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()


def _test_frames(n=6, size=(160, 120)):
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) for _ in range(n)]


def test_video_file_round_trip(tmp_path):
    frames = _test_frames()
    _write_video(tmp_path / "clip.avi", frames)
    cal = Calibration("L12", (160, 120), (-5.0, 0.0), 0.0, (0.2, 0.2))
    with VideoFileSource(tmp_path / "clip.avi", calibration=cal, start_s=10.0) as src:
        got = list(src)
    assert src.frame_count == 6 and len(got) == 6
    assert [f.time_s for f in got] == pytest.approx([10.0 + i / 25.0 for i in range(6)])
    for want, f in zip(frames, got, strict=True):
        np.testing.assert_array_equal(want, f.image)  # FFV1 is lossless
        assert f.mm_per_px == (0.2, 0.2)
    grey = list(VideoFileSource(tmp_path / "clip.avi", grey=True))
    assert grey[0].image.shape == (120, 160) and grey[0].mm_per_px is None
    with pytest.raises(FrameSourceError, match="no such video"):
        VideoFileSource(tmp_path / "missing.avi")


def test_capture_device_stamps_frames_with_the_host_clock_at_grab(tmp_path):
    _write_video(tmp_path / "dev.avi", _test_frames(n=3))
    ticks = iter([50.0, 50.04, 50.08])
    with CaptureDeviceSource(str(tmp_path / "dev.avi"), clock=lambda: next(ticks), latency_s=0.01) as src:
        got = list(src)
    assert [f.time_s for f in got] == pytest.approx([49.99, 50.03, 50.07])
    assert src.frame_count is None and [f.index for f in got] == [0, 1, 2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_openigtlink_image_messages_from_a_server():
    pyigtl = pytest.importorskip("pyigtl")
    from needletrack.frames.igtl import IgtlSource

    port = _free_port()
    server = pyigtl.OpenIGTLinkServer(port=port, local_server=True)
    src = IgtlSource("127.0.0.1", port, device_name="Image_Reference", timeout_s=2.0,
                     use_message_spacing=True)
    try:
        deadline = time.monotonic() + 5.0
        while not (server.is_connected() and src.connected) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.is_connected()
        rng = np.random.default_rng(5)
        grey = rng.integers(0, 256, (1, 48, 64), dtype=np.uint8)
        colour = rng.integers(0, 256, (1, 48, 64, 3), dtype=np.uint8)
        matrix = np.diag([0.15, 0.2, 1.0, 1.0])
        sent = [(grey, 1700000000.25), (colour, 1700000000.29), (grey, 1700000000.33)]
        got = []
        for i, (img, stamp) in enumerate(sent):
            server.send_message(pyigtl.ImageMessage(img, ijk_to_world_matrix=matrix, timestamp=stamp,
                                                    device_name="Image_Reference"), wait=True)
            frame = src.next_frame(i, timeout_s=2.0)
            assert frame is not None
            got.append(frame)
        np.testing.assert_array_equal(got[0].image, grey[0])
        np.testing.assert_array_equal(got[1].image, colour[0][:, :, ::-1])  # RGB components -> BGR
        # The sender's Unix times, on the monotonic clock the needle samples are stamped with.
        unix_to_monotonic = time.time() - time.monotonic()
        assert [f.time_s for f in got] == pytest.approx([s - unix_to_monotonic for _, s in sent], abs=0.01)
        assert got[2].time_s - got[0].time_s == pytest.approx(sent[2][1] - sent[0][1], abs=1e-3)
        assert got[0].mm_per_px == pytest.approx((0.15, 0.2), rel=1e-6)
        assert [f.index for f in got] == [0, 1, 2]
        assert src.next_frame(3, timeout_s=0.1) is None
        # Another device's messages are not frames of this source.
        server.send_message(pyigtl.ImageMessage(grey, device_name="Other"), wait=True)
        assert src.next_frame(3, timeout_s=0.2) is None
    finally:
        src.close()
        threading.Thread(target=server.stop, daemon=True).start()
        for sig, handler in server._previous_signal_handlers.items():  # the server took SIGINT and SIGTERM
            signal.signal(sig, handler)


def test_openigtlink_spacing_comes_from_a_calibration_unless_asked():
    pyigtl = pytest.importorskip("pyigtl")
    from needletrack.frames.igtl import message_image, message_spacing

    msg = pyigtl.ImageMessage(np.zeros((1, 30, 40), np.uint16) + 0x1234,
                              ijk_to_world_matrix=np.diag([1, 1, 1, 1]))
    assert message_spacing(msg) == (1.0, 1.0)  # what an uncalibrated sender sends: not a spacing to trust
    img = message_image(msg)
    assert img.dtype == np.uint8 and img.shape == (30, 40) and int(img[0, 0]) == 0x12


SC = scenario.load("dry_needling")


@pytest.fixture(scope="module")
def synthetic() -> SyntheticSource:
    return SyntheticSource(SC, fps=25.0, size=(640, 480))


@pytest.mark.parametrize(("size", "guide_deg", "index"), [((640, 480), 45.0, 113), ((960, 540), 30.0, 300)])
def test_synthetic_needle_echo_is_where_the_geometry_puts_it(synthetic, size, guide_deg, index):
    sc = scenario.parse({**SC.to_json(), "guide_angle_deg": guide_deg})
    synthetic = synthetic if size == (640, 480) else SyntheticSource(sc, fps=25.0, size=size)
    s = 40.0 / size[1]  # the default 40 mm imaging depth over the image height
    depth = float(np.interp(index / 25, sc.depth[:, 0], sc.depth[:, 1]))
    g = math.radians(guide_deg)
    exit_mm = (-2.0, 0.0)
    tip = ((exit_mm[0] + depth * math.cos(g)) / s, (exit_mm[1] + depth * math.sin(g)) / s)
    truth = synthetic.truth(index)
    assert truth.depth_mm == pytest.approx(depth)
    assert truth.tip_px == pytest.approx(tip)

    raw = synthetic.frame(index).image.astype(np.float32)
    ex, ez = exit_mm[0] / s, exit_mm[1] / s
    cols = np.arange(max(int(ex) + 8, 4), int(tip[0]) - 8)
    rows = []
    for c in cols:  # the brightest row of each column, refined to a sub-pixel peak by a parabola
        r = int(np.argmax(raw[: int(tip[1]) + 20, c]))
        a, b, d = raw[r - 1, c], raw[r, c], raw[r + 1, c]
        rows.append(r + 0.5 * (a - d) / (a - 2 * b + d) if a - 2 * b + d < 0 else r)
    rows = np.array(rows)
    expected = ez + (cols - ex) * math.tan(g)
    assert np.abs(rows - expected).max() <= 1.0 and np.abs(rows - expected).mean() <= 0.5
    slope, icpt = np.polyfit(cols, rows, 1)
    assert math.degrees(math.atan(slope)) == pytest.approx(guide_deg, abs=1.0)
    # The tip: where the echo along the fitted line falls to half its amplitude. The display is logarithmic,
    # so half the shaft's amplitude is 6 dB below the shaft's grey level, not half of it.
    u = np.array([1.0, slope]) / math.hypot(1.0, slope)
    start = np.array([cols[0], icpt + slope * cols[0]])
    t = np.arange(0.0, 400.0, 0.1)
    pts = start[None, :] + t[:, None] * u[None, :]
    pts = pts[(pts[:, 0] < size[0] - 1) & (pts[:, 1] < size[1] - 1)].astype(np.float32)
    profile = cv2.remap(raw, pts[None, :, 0], pts[None, :, 1], cv2.INTER_LINEAR)[0]
    grey_per_db = 255.0 / (bmode.DB_HIGH - bmode.DB_LOW)
    half = float(np.median(profile[:100])) - 20 * math.log10(2) * grey_per_db
    end = pts[np.nonzero(profile < half)[0].min()]  # the first fall below half amplitude, past the shaft
    assert math.hypot(end[0] - tip[0], end[1] - tip[1]) <= 1.5


def test_synthetic_frames_have_the_pleura_and_no_needle_before_insertion(synthetic):
    img = synthetic.frame(25).image.astype(float)  # t = 1 s: the needle is not in yet
    pleura_mm = SC.nogo_depth_mm + 3.0
    rows = img.mean(axis=1)
    row = int(np.argmax(rows[100:])) + 100
    assert abs(row - pleura_mm / (40.0 / 480)) <= 2
    assert img[row + 20 :].mean() < 0.25 * img[row - 60 : row - 10].mean()  # the shadow under the pleura
    with_needle = synthetic.frame(113).image.astype(float)
    near_exit = (slice(5, 60), slice(5, 60))
    assert with_needle[near_exit].max() >= 240 and img[near_exit].max() < 200


def test_synthetic_frames_are_deterministic_and_timed(synthetic):
    assert synthetic.frame_count == math.floor(SC.duration_s * 25) + 1
    again = SyntheticSource(SC, fps=25.0, size=(640, 480), start_s=3.0)
    frames = again.frames()
    for _ in range(3):
        f = next(frames)
    np.testing.assert_array_equal(f.image, synthetic.frame(2).image)
    assert f.time_s == pytest.approx(3.0 + 2 / 25) and f.mm_per_px == pytest.approx((40 / 480, 40 / 480))
    other = SyntheticSource(scenario.parse({**SC.to_json(), "seed": SC.seed + 1}), size=(640, 480))
    assert np.abs(other.frame(2).image.astype(int) - f.image.astype(int)).mean() > 5
    assert not np.array_equal(synthetic.frame(2).image, synthetic.frame(3).image)  # per-frame noise
