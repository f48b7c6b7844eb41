"""`needletrack demo`, shortened: every output is there, readable by independent readers, and the drawn tip
agrees with the true tip."""

from __future__ import annotations

import cv2
import pytest
import SimpleITK as sitk

from needletrack import demo, recording
from tests.host import HOST_TEST_CPU


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return demo.run(tmp_path_factory.mktemp("demo"), seconds=5.0, cpu=HOST_TEST_CPU)


def test_the_demo_writes_every_output(result):
    for name in ("fused_synthetic.mp4", "fused_dicom.mp4", "synthetic.seq.mha", "dicom.seq.mha",
                 "screenshot_synthetic.png", "screenshot_dicom.png", "recording"):
        assert name in result.files, name
    video = cv2.VideoCapture(str(result.files["fused_synthetic.mp4"]))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == result.frames["synthetic"] >= 5 * 25 - 2
    assert cv2.imread(str(result.files["screenshot_dicom.png"])).shape == (480, 640, 3)
    rec = recording.load(result.files["recording"])
    assert len(rec.samples["seq"]) >= 5 * 200 * 0.9 and rec.session["complete"] is True


def test_the_sequence_file_has_the_frames_and_their_tips(result):
    img = sitk.ReadImage(str(result.files["synthetic.seq.mha"]))
    assert img.GetSize()[:2] == (640, 480) and img.GetSize()[2] == result.frames["synthetic"]
    keys = set(img.GetMetaDataKeys())
    assert "Seq_Frame0000_NeedleTipToImageTransform" in keys and "Seq_Frame0000_Timestamp" in keys
    ok = sum(img.GetMetaData(f"Seq_Frame{i:04d}_NeedleTipToImageTransformStatus") == "OK"
             for i in range(img.GetSize()[2]))
    assert ok >= 0.9 * img.GetSize()[2]


def test_the_drawn_tip_is_where_the_needle_truly_is(result):
    tip = result.tip
    assert len(tip.errors_mm) >= 0.9 * result.frames["synthetic"]
    assert tip.rms() <= 0.5 and max(tip.errors_mm) <= 1.5
