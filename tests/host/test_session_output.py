"""Session output for 3D Slicer and PLUS: the sequence file read back by pynrrd and SimpleITK (ITK's NRRD and
MetaImage readers), its PLUS field names, crash recovery; the fused MP4 read back by OpenCV."""

from __future__ import annotations

import math
import os
import re
import shutil
from dataclasses import replace

import cv2
import nrrd
import numpy as np
import pytest
import SimpleITK as sitk

from needletrack import geometry
from needletrack.frames import Frame
from needletrack.fused_video import FusedVideoWriter, VideoWriterError
from needletrack.geometry import Calibration
from needletrack.needle_state import NeedleState
from needletrack.protocol import Flag
from needletrack.receiver import STALE_AFTER_S
from needletrack.sequence_file import (
    NEEDLE_TIP,
    SequenceFileError,
    SequenceWriter,
    needle_tip_to_image,
    needle_tip_transform,
    recover,
)

W, H, N = 64, 48, 20
SPACING = (0.4, 0.5)  # not square, so a swapped axis shows
T0 = 1000.0
CAL = Calibration("L12-5", (W, H), (-5.0, 2.0), 2.0, SPACING)
FIELDS = {f"{NEEDLE_TIP}Transform", f"{NEEDLE_TIP}TransformStatus", "Timestamp", "ImageStatus"}


def _images(n=N, colour=False, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (H, W, 3) if colour else (H, W), dtype=np.uint8) for _ in range(n)]


def _times(n=N):
    return [T0 + 0.04 * k + 0.001 * (k % 3) for k in range(n)]  # uneven, as real frames come


def _tips(n=N):
    """A known tip per frame; every fifth from the fourth on unknown (stale needle data)."""
    return [None if k % 5 == 3 else needle_tip_to_image(CAL, (1.5 * k, 4.0 + 0.75 * k), 30.0 + k)
            for k in range(n)]


def _write(path, images, times, tips, **kw):
    with SequenceWriter(path, SPACING, **kw) as w:
        for image, t, tip in zip(images, times, tips, strict=True):
            w.append(image, t, {NEEDLE_TIP: tip})
    return path


def _matrix(text):
    values = [float(v) for v in text.split()]
    assert len(values) == 16
    return np.array(values).reshape(4, 4)


def _check_fields(fields, times, tips):
    """Per-frame fields as a reader sees them: {'Seq_Frame0003_Timestamp': '...', ...}."""
    per_frame = {}
    for key, value in fields.items():
        m = re.fullmatch(r"Seq_Frame(\d{4})_(\w+)", key)
        if m:
            per_frame.setdefault(int(m.group(1)), {})[m.group(2)] = value.strip()
    assert sorted(per_frame) == list(range(len(times)))
    for k, (t, tip) in enumerate(zip(times, tips, strict=True)):
        f = per_frame[k]
        assert set(f) == FIELDS
        assert float(f["Timestamp"]) == pytest.approx(t, abs=1e-6)
        assert f["ImageStatus"] == "OK"
        m = _matrix(f[f"{NEEDLE_TIP}Transform"])
        if tip is None:
            assert f[f"{NEEDLE_TIP}TransformStatus"] == "INVALID"
            np.testing.assert_array_equal(m, np.eye(4))
        else:
            assert f[f"{NEEDLE_TIP}TransformStatus"] == "OK"
            np.testing.assert_allclose(m, tip, atol=1e-6)


def _sitk_frames(path):
    """Frames as (N, H, W) grey or (N, H, W, 3) RGB, spacing and metadata, as ITK reads the file."""
    img = sitk.ReadImage(str(path))
    a = sitk.GetArrayFromImage(img)
    fields = {k: img.GetMetaData(k) for k in img.GetMetaDataKeys()}
    if path.suffix == ".mha":
        return a, img.GetSpacing()[:2], fields  # (N, H, W[, 3])
    if img.GetNumberOfComponentsPerPixel() == 3:
        return a, img.GetSpacing()[:2], fields  # RGB pixels, the list axis the third: (N, H, W, 3)
    return np.moveaxis(a[0], -1, 0), img.GetSpacing()[:2], fields  # ITK makes the list axis the pixel: (1,H,W,N)


# ------------------------------------------------------------------------------------------ sequence file


@pytest.mark.parametrize("suffix, colour", [(".seq.nrrd", False), (".seq.nrrd", True), (".seq.nhdr", False),
                                            (".seq.mha", False), (".seq.mha", True)])
def test_sequence_reads_back_in_itk(tmp_path, suffix, colour):
    images, times, tips = _images(colour=colour), _times(), _tips()
    path = _write(tmp_path / f"ultrasound{suffix}", images, times, tips)
    expected = np.stack([im[:, :, ::-1] if colour else im for im in images])  # colour is stored as RGB
    frames, spacing, fields = _sitk_frames(path)
    np.testing.assert_array_equal(frames, expected)
    assert spacing == pytest.approx(SPACING)
    _check_fields(fields, times, tips)
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == (["ultrasound.seq.nhdr", "ultrasound.seq.raw"] if suffix == ".seq.nhdr" else [path.name])


@pytest.mark.parametrize("suffix, colour", [(".seq.nrrd", False), (".seq.nrrd", True), (".seq.nhdr", False)])
def test_nrrd_reads_back_in_pynrrd(tmp_path, suffix, colour):
    images, times, tips = _images(colour=colour), _times(), _tips()
    path = _write(tmp_path / f"ultrasound{suffix}", images, times, tips)
    data, header = nrrd.read(str(path), index_order="C")
    if colour:
        assert data.shape == (N, H, W, 3)
        np.testing.assert_array_equal(data[..., ::-1], np.stack(images))
        assert header["kinds"] == ["vector", "domain", "domain", "list"]
        assert header["ultrasound image type"] == "RGB_COLOR"
    else:
        assert data.shape == (N, 1, H, W)
        np.testing.assert_array_equal(data[:, 0], np.stack(images))
        assert header["kinds"] == ["domain", "domain", "domain", "list"]
        assert header["ultrasound image type"] == "BRIGHTNESS"
    assert header["dimension"] == 4  # PLUS reads at most four axes
    assert header["ultrasound image orientation"] == "MF"
    directions = header["space directions"]
    spatial = directions[~np.isnan(directions).any(axis=1)]
    np.testing.assert_allclose(spatial, np.diag(SPACING) if colour else np.diag([*SPACING, 1.0]))
    _check_fields(header, times, tips)


def test_header_follows_plus(tmp_path):
    """The header lines PLUS writes and reads, and that Slicer's sequence readers parse."""
    images, times, tips = _images(), _times(), _tips()
    nrrd_text = _write(tmp_path / "a.seq.nrrd", images, times, tips).read_bytes().split(b"\n\n", 1)[0].decode()
    mha = _write(tmp_path / "b.seq.mha", images, times, tips).read_bytes()
    mha_text = mha[: mha.index(b"ElementDataFile = LOCAL\n") + 24].decode()

    lines = nrrd_text.splitlines()
    assert lines[0] == "NRRD0004"
    for line in ("dimension: 4", "type: uint8", "encoding: raw", "kinds: domain domain domain list",
                 "space directions: (0.4,0,0) (0,0.5,0) (0,0,1) none", "ultrasound image orientation:=MF",
                 "ultrasound image type:=BRIGHTNESS",
                 f"Seq_Frame0003_{NEEDLE_TIP}Transform:=1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1",
                 f"Seq_Frame0003_{NEEDLE_TIP}TransformStatus:=INVALID",
                 f"Seq_Frame0004_{NEEDLE_TIP}TransformStatus:=OK",
                 "Seq_Frame0019_ImageStatus:=OK"):
        assert line in lines
    assert re.fullmatch(r"sizes: 64 48 1 +20", next(x for x in lines if x.startswith("sizes:")))
    assert f"Seq_Frame0001_Timestamp:={times[1]:.6f}" in lines

    lines = mha_text.splitlines()
    assert lines[:2] == ["ObjectType = Image", "NDims = 3"]
    assert lines[-1] == "ElementDataFile = LOCAL"
    for line in ("BinaryData = True", "CompressedData = False", "DimSize = 64 48 20", "ElementSpacing = 0.4 0.5 1",
                 "ElementNumberOfChannels = 1", "ElementType = MET_UCHAR", "Kinds = domain domain list",
                 "UltrasoundImageOrientation = MF", "UltrasoundImageType = BRIGHTNESS",
                 f"Seq_Frame0003_{NEEDLE_TIP}TransformStatus = INVALID", "Seq_Frame0000_ImageStatus = OK"):
        assert line in lines
    assert len(mha) == len(mha_text) + W * H * N
    # Slicer and PLUS read headers with fgets(line, 1000).
    assert max(len(x) for x in (nrrd_text + mha_text).splitlines()) < 1000


def test_bad_input_is_refused_and_changes_nothing(tmp_path):
    path = tmp_path / "u.seq.nrrd"
    w = SequenceWriter(path, SPACING)
    grey = _images(1)[0]
    w.append(grey, T0, {NEEDLE_TIP: None})
    with pytest.raises(SequenceFileError, match=r"frame 1 is 65x48 px .* frames are 64x48 px"):
        w.append(np.zeros((H, W + 1), np.uint8), T0 + 1)
    with pytest.raises(SequenceFileError, match="3 channel"):
        w.append(np.zeros((H, W, 3), np.uint8), T0 + 1)
    with pytest.raises(SequenceFileError, match="uint8"):
        w.append(grey.astype(np.uint16), T0 + 1)
    with pytest.raises(SequenceFileError, match="not after the previous"):
        w.append(grey, T0)
    with pytest.raises(SequenceFileError, match="not finite"):
        w.append(grey, math.nan)
    bad = needle_tip_to_image(CAL, (1.0, 2.0), 30.0)
    bad[0, 3] = math.nan
    with pytest.raises(SequenceFileError, match="finite 4x4"):
        w.append(grey, T0 + 1, {NEEDLE_TIP: bad})
    with pytest.raises(SequenceFileError, match="finite 4x4"):
        w.append(grey, T0 + 1, {NEEDLE_TIP: np.eye(3)})
    with pytest.raises(SequenceFileError, match="not declared"):
        w.append(grey, T0 + 1, {"ProbeToTracker": np.eye(4)})
    assert w.frames_written == 1
    w.append(grey, T0 + 1)  # a transform not given is unknown
    assert w.close() == path
    data, header = nrrd.read(str(path), index_order="C")
    assert data.shape == (2, 1, H, W)
    assert header[f"Seq_Frame0001_{NEEDLE_TIP}TransformStatus"] == "INVALID"

    with pytest.raises(FileExistsError):
        SequenceWriter(path, SPACING)
    with pytest.raises(SequenceFileError, match="ends with one of"):
        SequenceWriter(tmp_path / "u.nii", SPACING)
    with pytest.raises(SequenceFileError, match="FromToTo"):
        SequenceWriter(tmp_path / "v.seq.nrrd", SPACING, transforms=("Tip",))
    uncalibrated = SequenceWriter(tmp_path / "v.seq.nrrd", None)
    with pytest.raises(SequenceFileError, match="no pixel spacing"):
        uncalibrated.append(grey, T0, {NEEDLE_TIP: np.eye(4)})
    assert uncalibrated.close() is None  # no frame: no file
    assert not any(p.name.startswith("v.") for p in tmp_path.iterdir())


def test_frames_from_a_source(tmp_path):
    images, times = _images(3), _times(3)
    frames = [Frame(im, t, SPACING, None, "synthetic:test", k)
              for k, (im, t) in enumerate(zip(images, times, strict=True))]
    with SequenceWriter(tmp_path / "u.seq.nrrd", SPACING) as w:
        for f in frames:
            w.append_frame(f, {NEEDLE_TIP: None})
        with pytest.raises(SequenceFileError, match=r"\(0\.5, 0\.5\) mm per pixel"):
            w.append_frame(replace(frames[0], time_s=T0 + 9, mm_per_px=(0.5, 0.5)))
    data, _ = nrrd.read(str(tmp_path / "u.seq.nrrd"), index_order="C")
    np.testing.assert_array_equal(data[:, 0], np.stack(images))


def _crash_copy(tmp_path, target):
    """What a killed recorder leaves: the pieces as they are on disk now."""
    out = tmp_path / "crashed"
    out.mkdir()
    stem = target.name.split(".")[0]
    for p in tmp_path.iterdir():
        if p.is_file() and p.name.startswith(stem + "."):
            shutil.copy(p, out / p.name)
    return out / target.name


@pytest.mark.parametrize("suffix", [".seq.nrrd", ".seq.mha", ".seq.nhdr"])
@pytest.mark.parametrize("torn", ["pixels", "fields"])
def test_a_crash_keeps_every_whole_frame(tmp_path, suffix, torn):
    images, times, tips = _images(), _times(), _tips()
    target = tmp_path / f"u{suffix}"
    w = SequenceWriter(target, SPACING, flush_s=3600.0)  # no checkpoint after the first frame
    for k in range(12):
        w.append(images[k], times[k], {NEEDLE_TIP: tips[k]})
    w.flush()  # the OS has every frame
    crashed = _crash_copy(tmp_path, target)
    w.close()
    if suffix == ".seq.nhdr":
        header, raw = crashed, crashed.with_name("u.seq.raw")
    else:
        header, raw = crashed.with_name("u.partial.seq.nhdr"), crashed.with_name("u.partial.seq.raw")
        assert not crashed.exists()
    assert raw.stat().st_size == 12 * W * H
    if torn == "pixels":  # killed half-way through frame 9's pixels
        n = 9
        os.truncate(raw, 9 * W * H + W * H // 2)
    else:  # killed half-way through frame 7's fields
        n = 7
        text = header.read_bytes()
        os.truncate(header, text.index(b"Seq_Frame0007_Timestamp") + 20)
    recover(crashed)
    frames, _, fields = _sitk_frames(crashed)
    np.testing.assert_array_equal(frames, np.stack(images[:n]))
    _check_fields(fields, times[:n], tips[:n])
    if suffix == ".seq.nhdr":
        assert sorted(p.name for p in crashed.parent.iterdir()) == [crashed.name, raw.name]
        assert raw.stat().st_size == n * W * H  # frames without their fields, or torn, are cut off
        recover(crashed)  # a finished detached file stays as it is
        np.testing.assert_array_equal(_sitk_frames(crashed)[0], np.stack(images[:n]))
    else:
        assert [p.name for p in crashed.parent.iterdir()] == [crashed.name]
        with pytest.raises(FileNotFoundError, match="no interrupted recording"):
            recover(crashed)


def test_between_checkpoints_the_pieces_are_a_readable_sequence(tmp_path):
    """With a checkpoint after each frame, the pieces open in ITK as they are: Slicer can load them."""
    images, times, tips = _images(), _times(), _tips()
    target = tmp_path / "u.seq.nrrd"
    with SequenceWriter(target, SPACING, flush_s=0.0) as w:
        for k in range(7):
            w.append(images[k], times[k], {NEEDLE_TIP: tips[k]})
        frames, spacing, fields = _sitk_frames(tmp_path / "u.partial.seq.nhdr")
        assert spacing == pytest.approx(SPACING)
        np.testing.assert_array_equal(frames, np.stack(images[:7]))
        _check_fields(fields, times[:7], tips[:7])
    assert not (tmp_path / "u.partial.seq.nhdr").exists()


def test_an_error_inside_the_block_leaves_recoverable_pieces(tmp_path):
    images, times, tips = _images(), _times(), _tips()
    target = tmp_path / "u.seq.nrrd"
    with pytest.raises(KeyboardInterrupt), SequenceWriter(target, SPACING) as w:
        for k in range(5):
            w.append(images[k], times[k], {NEEDLE_TIP: tips[k]})
        raise KeyboardInterrupt
    assert not target.exists()
    data, _ = nrrd.read(str(tmp_path / "u.partial.seq.nhdr"), index_order="C")  # checkpointed on the way out
    np.testing.assert_array_equal(data[:, 0], np.stack(images[:5]))
    recover(target)
    data, header = nrrd.read(str(target), index_order="C")
    np.testing.assert_array_equal(data[:, 0], np.stack(images[:5]))
    _check_fields(header, times[:5], tips[:5])


# ---------------------------------------------------------------------------------------------- needle tip


@pytest.mark.parametrize("lateral", [1, -1])
def test_needle_tip_is_where_the_overlay_draws_it(lateral):
    cal = Calibration("L12-5", (640, 480), (-20.0 if lateral == 1 else 660.0, 10.0), 4.0, (0.06, 0.08), lateral)
    state = NeedleState(25.0, 14.0, 33.0, 33.0, Flag(0), 0.02)
    m = needle_tip_transform(cal, state)
    assert m is not None
    col, row = geometry.tip_px(cal, 25.0, 33.0)
    np.testing.assert_allclose(m[:3, 3], (col * 0.06, row * 0.08, 0.0), atol=1e-9)
    # +x along the needle, as drawn: from the exit towards the tip
    exit_mm = np.array([cal.exit_px[0] * 0.06, cal.exit_px[1] * 0.08, 0.0])
    along = (m[:3, 3] - exit_mm) / np.linalg.norm(m[:3, 3] - exit_mm)
    np.testing.assert_allclose(m[:3, 0], along, atol=1e-9)
    np.testing.assert_allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-12)
    assert np.linalg.det(m[:3, :3]) == pytest.approx(1.0)
    np.testing.assert_allclose(m[:3, 2], (0, 0, 1))
    np.testing.assert_array_equal(m[3], (0, 0, 0, 1))


def test_no_tip_is_made_up():
    good = NeedleState(25.0, 14.0, 33.0, 33.0, Flag(0), 0.02)
    assert needle_tip_transform(CAL, good) is not None
    for state in (None, NeedleState(25.0, 14.0, 33.0, 33.0, Flag(0), STALE_AFTER_S + 0.01),
                  NeedleState(25.0, 14.0, 33.0, 33.0, Flag.STALE, 0.0),
                  NeedleState(None, None, 33.0, 33.0, Flag(0), 0.0),
                  NeedleState(25.0, 14.0, 33.0, None, Flag(0), 0.0),
                  NeedleState(25.0, 14.0, 33.0, 33.0, Flag.DEPTH_INVALID, 0.0),
                  NeedleState(25.0, 14.0, 33.0, 33.0, Flag.HALL_FAULT, 0.0)):
        assert needle_tip_transform(CAL, state) is None


# -------------------------------------------------------------------------------------------------- video


def _video_frames(n, size):
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for k in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 0] = (xx * 255 // w).astype(np.uint8)
        img[..., 1] = (yy * 255 // h).astype(np.uint8)
        img[..., 2] = 60
        x0 = 8 + 5 * k
        img[20:50, x0:x0 + 30] = (255, 255, 255)  # a square moving right, frame by frame
        out.append(img)
    return out


def _read_video(path):
    cap = cv2.VideoCapture(str(path))
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return size, frames


def test_fused_video_reads_back(tmp_path):
    size = (160, 120)
    frames = _video_frames(N, size)
    path = tmp_path / "fused.mp4"
    with FusedVideoWriter(path, size, 25.0) as v:
        assert v.codec == "mp4v"
        for f in frames:
            v.write(f)
    assert v.frames_written == N
    got_size, got = _read_video(path)
    assert got_size == size and len(got) == N
    for k, g in enumerate(got):
        errors = [np.abs(g.astype(int) - f.astype(int)).mean() for f in frames]
        assert errors[k] < 6.0  # lossy, but close
        assert int(np.argmin(errors)) == k  # and in order
    cap = cv2.VideoCapture(str(path))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0)
    cap.release()


def test_odd_sizes_are_padded_not_cropped(tmp_path):
    size = (161, 121)
    frames = _video_frames(5, size)
    with FusedVideoWriter(tmp_path / "fused.mp4", size, 10.0) as v:
        assert v.video_size == (162, 122)
        for f in frames:
            v.write(f)
    got_size, got = _read_video(tmp_path / "fused.mp4")
    assert got_size == (162, 122) and len(got) == 5
    assert np.abs(got[2][:121, :161].astype(int) - frames[2].astype(int)).mean() < 6.0


def test_video_errors(tmp_path):
    path = tmp_path / "fused.mp4"
    with pytest.raises(VideoWriterError, match="choose from"):
        FusedVideoWriter(path, (64, 48), 25.0, codecs=("MJPG",))
    with pytest.raises(VideoWriterError, match="fps"):
        FusedVideoWriter(path, (64, 48), 0.0)
    with pytest.raises(VideoWriterError, match=r"\.mp4"):
        FusedVideoWriter(tmp_path / "fused.avi", (64, 48), 25.0)
    with pytest.raises(FileNotFoundError):
        FusedVideoWriter(tmp_path / "no" / "fused.mp4", (64, 48), 25.0)
    v = FusedVideoWriter(path, (64, 48), 25.0)
    with pytest.raises(VideoWriterError, match=r"expected a 64x48 BGR uint8 image"):
        v.write(np.zeros((48, 64), np.uint8))
    with pytest.raises(VideoWriterError, match=r"expected a 64x48"):
        v.write(np.zeros((48, 65, 3), np.uint8))
    v.write(np.zeros((48, 64, 3), np.uint8))
    v.close()
    v.close()
    with pytest.raises(VideoWriterError, match="closed"):
        v.write(np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(FileExistsError):
        FusedVideoWriter(path, (64, 48), 25.0)


def test_an_unavailable_codec_is_a_clear_error(tmp_path):
    path = tmp_path / "h264.mp4"
    try:
        v = FusedVideoWriter(path, (64, 48), 25.0, codecs=("avc1",))
    except VideoWriterError as e:
        assert "no MP4 encoder for avc1" in str(e)
        assert not path.exists()
    else:
        v.close()
        pytest.skip("this OpenCV build has an H.264 encoder")
