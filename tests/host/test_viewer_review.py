"""Session review: a recording written by the viewer's own recorder (samples, events, fused MP4, PLUS sequence)
from synthetic samples and frames whose contents are known, opened in the review window and driven as a
clinician would (keys, clicks on the charts and the events list, playback)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication, QMessageBox

from needletrack.frames.base import Frame
from needletrack.fused_stream import FusedFrame
from needletrack.geometry import Calibration
from needletrack.needle_state import NeedleState
from needletrack.protocol import Flag, Sample
from needletrack.receiver import Timed
from needletrack.viewer import theme as th
from needletrack.viewer.recorder import Recorder
from needletrack.viewer.review_cli import review_command
from needletrack.viewer.review_data import Review, ReviewError, load_review
from needletrack.viewer.review_window import ReviewWindow, open_review
from tests.host.viewer_support import grabbed

SIZE = (320, 240)
RATE_HZ = 200
FPS = 25.0
SECONDS = 3.0
HOST_EPOCH = 500.0  # host time of device time 0
FIRST_FRAME_S = 0.1  # device time of frame 0's capture
GAP = (500, 510)  # sample numbers never sent: a link drop
TWITCH_AT, PASS_AT = 200, 400  # sample numbers with the flag
BLOCK = 24  # px: each bit of the frame number burnt into the frame is a block this wide


def depth_at(device_s: float) -> float:
    return 10.0 + 4.0 * device_s


def frame_image(k: int) -> np.ndarray:
    """Frame k: its number as eight white-or-black blocks along the top, on grey."""
    image = np.full((SIZE[1], SIZE[0], 3), 70, np.uint8)
    for bit in range(8):
        x = 16 + bit * (BLOCK + 8)
        image[16:16 + BLOCK, x:x + BLOCK] = 255 if (k >> bit) & 1 else 0
    return image


def frame_number(at: Callable[[int, int], np.ndarray]) -> int:
    """The number burnt into a frame, read at ``at(col, row)`` -> pixel."""
    n = 0
    for bit in range(8):
        x = 16 + bit * (BLOCK + 8) + BLOCK // 2
        if at(x, 16 + BLOCK // 2).mean() > 160:
            n |= 1 << bit
    return n


def make_recording(directory: Path, *, frames: bool = True, crash_copy: Path | None = None) -> None:
    cal = Calibration("review test", SIZE, exit_px=(10.0, 10.0), face_row=0.0, mm_per_px=(0.2, 0.2))
    session = {"device": "test", "transport": "test", "host_clock": "time.monotonic", "recorded_by": "test",
               "nogo_depth_mm": 20.0}
    rec = Recorder(directory, session, cal if frames else None, FPS)
    batch = []
    for n in range(int(SECONDS * RATE_HZ)):
        if GAP[0] <= n < GAP[1]:
            continue
        d = n / RATE_HZ
        flags = Flag(0)
        if n == TWITCH_AT:
            flags |= Flag.TWITCH
        if n == PASS_AT:
            flags |= Flag.PASS
        if depth_at(d) >= 15.0:  # within the 5 mm margin of the 20 mm no-go
            flags |= Flag.NOGO_NEAR
        s = Sample(n, round(d * 1e6), 30.0 + d, 30.0, depth_at(d), depth_at(d) / 2, 1.0, -1.0, flags)
        batch.append(Timed(s, d, HOST_EPOCH + d))
    rec.add_samples(batch[:GAP[0]])
    rec.add_event(batch[GAP[0] - 1].device_s, "link", "reconnected")
    rec.add_samples(batch[GAP[0]:])
    if frames:
        for k in range(int((SECONDS - FIRST_FRAME_S) * FPS)):
            d = FIRST_FRAME_S + k / FPS
            image = frame_image(k)
            state = NeedleState(depth_at(d), depth_at(d) / 2, 30.0 + d, 30.0)
            frame = Frame(image, HOST_EPOCH + d, cal.mm_per_px, None, "test", k)
            rec.write(FusedFrame(frame, HOST_EPOCH + d, state, image, HOST_EPOCH + d + 0.01))
    if crash_copy is not None:
        # The directory as a recorder killed now leaves it: rows and frames flushed, nothing closed.
        rec.writer.flush()
        for sink in rec.sinks:
            flush = getattr(getattr(sink, "writer", None), "flush", None)
            if flush is not None:
                flush()
        shutil.copytree(directory, crash_copy)
    rec.close()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("review") / "session"
    make_recording(d)
    return d


@pytest.fixture(scope="module")
def samples_only(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("review") / "samples-only"
    make_recording(d, frames=False)
    return d


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def frame_times() -> np.ndarray:
    """Session times of the frames: the session starts at the first sample, device time 0."""
    return FIRST_FRAME_S + np.arange(int((SECONDS - FIRST_FRAME_S) * FPS)) / FPS


def nearest_frame(t: float) -> int:
    return int(np.argmin(np.abs(frame_times() - t)))


def shown_frame(window: ReviewWindow) -> int:
    """The number burnt into the frame the window shows, read from its pixels."""
    pixels = grabbed(window.image)

    def at(col: int, row: int) -> np.ndarray:
        p = window.image.to_widget(col, row)
        return pixels[round(p.y()), round(p.x())]

    return frame_number(at)


@pytest.fixture
def window(qtbot) -> Callable[[Review], ReviewWindow]:
    def make(review: Review) -> ReviewWindow:
        w = ReviewWindow(review, theme=th.Theme(0.6))
        qtbot.addWidget(w)
        w.resize(1280, 800)
        w.show()
        w.activateWindow()
        qtbot.waitUntil(w.isActiveWindow, timeout=3000)
        return w

    return make


def test_one_seek_shows_the_nearest_frame_the_sample_at_or_before_and_the_cursor(recorded, window):
    before = _files(recorded)
    review = load_review(recorded)
    assert review.problems == [] and review.frame_count == len(frame_times())
    assert review.duration_s == pytest.approx(SECONDS - 1 / RATE_HZ, abs=1e-6)
    # A frame stands for the instants around it only: not 0.3 s before the first one.
    assert review.frame_near(FIRST_FRAME_S - 0.05) == 0 and review.frame_near(FIRST_FRAME_S - 0.3) is None
    w = window(review)
    for t in (0.0, 0.512, 1.0049, 1.7321, 2.531, 2.9733):  # none on a sample's instant
        w.seek(t)
        assert shown_frame(w) == nearest_frame(t) == w.frame_index
        n = int(np.floor(t * RATE_HZ + 1e-9))
        n = GAP[0] - 1 if GAP[0] <= n < GAP[1] else n  # in the gap: the last sample before it
        assert f"#{n} at" in w.details.values["Sample"].text()
        assert w.readouts.depth_tile.value.text() == f"{depth_at(n / RATE_HZ):.1f}"
        assert w.readouts.angle_tile.value.text() == f"{30.0 + n / RATE_HZ:.1f}"
        for chart in w.charts.charts:
            assert chart.cursor_s == pytest.approx(t)
        assert w.slider.value() == round(t * 1000)
        assert w.clock.text().startswith(f"0:{t:05.2f}")
    # The no-go depth is the session's (20 mm); the sample's NOGO_NEAR flag shows in the readout and the flags.
    w.seek(2.0)
    assert w.readouts.nogo_tile.value.text() == f"{20.0 - depth_at(2.0) / 2:.1f}"
    assert "NOGO_NEAR" in w.details.values["Flags"].text()
    w.close()
    assert _files(recorded) == before  # reviewing never writes


def test_the_slider_and_a_click_or_drag_on_a_chart_seek(recorded, window, qtbot):
    w = window(load_review(recorded))
    w.slider.setValue(1500)
    assert w.t == pytest.approx(1.5) and shown_frame(w) == nearest_frame(1.5)
    chart = w.charts.depth_chart
    qtbot.mouseClick(chart.viewport(), Qt.MouseButton.LeftButton, pos=chart.point_for(0.8))
    assert w.t == pytest.approx(0.8, abs=0.02)
    assert w.charts.angle_chart.cursor_s == w.t and w.slider.value() == round(w.t * 1000)
    assert shown_frame(w) == nearest_frame(w.t)
    p = QPointF(chart.point_for(2.3))
    drag = QMouseEvent(QMouseEvent.Type.MouseMove, p, chart.viewport().mapToGlobal(p), Qt.MouseButton.NoButton,
                       Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(chart.viewport(), drag)
    assert w.t == pytest.approx(2.3, abs=0.02) and shown_frame(w) == nearest_frame(w.t)


def test_the_events_are_listed_and_a_click_goes_to_one(recorded, window, qtbot):
    review = load_review(recorded)
    kinds = [(e.kind, round(e.t, 3)) for e in review.events]
    assert kinds == [("twitch", 1.0), ("nogo_near", 1.25), ("pass", 2.0), ("link", 2.495), ("gap", 2.55)]
    assert review.events[-1].detail.startswith("10 sample")
    w = window(review)
    assert [w.events.item(r, 1).text() for r in range(w.events.rowCount())] == [e.label for e in review.events]
    w.seek(0.0)
    assert w.highlighted_events == []
    row = 2
    item = w.events.item(row, 0)
    qtbot.mouseClick(w.events.viewport(), Qt.MouseButton.LeftButton, pos=w.events.visualItemRect(item).center())
    assert w.t == pytest.approx(2.0)
    assert w.charts.depth_chart.cursor_s == pytest.approx(2.0)
    assert shown_frame(w) == w.frame_index and abs(frame_times()[w.frame_index] - 2.0) <= 0.5 / FPS + 1e-9
    assert w.highlighted_events == [2, 3]  # the pass and the link event 0.495 s after it; not the twitch at 1 s
    assert w.events.item(2, 0).background().color().name() != w.events.item(0, 0).background().color().name()
    w.seek(2.6)
    assert w.highlighted_events == [3, 4]
    # Twitches and passes are marked on the charts at their times.
    assert list(w.charts.depth_chart.twitches.getData()[0]) == pytest.approx([1.0, 1.0])
    assert list(w.charts.angle_chart.passes.getData()[0]) == pytest.approx([2.0, 2.0])


def test_play_keeps_real_pace_and_skips_frames_when_decoding_is_slow(recorded, window, qtbot):
    review = load_review(recorded)
    w = window(review)
    for speed, slow_s in ((1.0, 0.0), (2.0, 0.0), (1.0, 0.06)):
        if slow_s:
            decode = review.pixels.frame

            def slow(i: int, decode=decode, pause=slow_s) -> np.ndarray:
                time.sleep(pause)
                return decode(i)

            review.pixels.frame = slow  # a machine that decodes 16 frames a second, for 25 frames/s
        w.set_speed(speed)
        w.seek(0.2)
        shown = w.frames_shown
        qtbot.keyClick(w, Qt.Key.Key_Space)
        start = time.monotonic()
        assert w.playing
        qtbot.wait(500)
        elapsed = time.monotonic() - start
        qtbot.keyClick(w, Qt.Key.Key_Space)
        assert not w.playing
        advanced = w.t - 0.2
        assert advanced == pytest.approx(speed * elapsed, abs=0.12 * speed), (speed, slow_s)
        assert shown_frame(w) == nearest_frame(w.t)
        passed = advanced * FPS
        if slow_s:
            assert w.frames_shown - shown < 0.8 * passed  # frames skipped, the pace kept
        else:
            assert w.frames_shown - shown >= 0.6 * passed
    # Playing to the end stops there.
    w.set_speed(2.0)
    w.seek(review.duration_s - 0.2)
    w.play()
    qtbot.waitUntil(lambda: not w.playing, timeout=2000)
    assert w.t == pytest.approx(review.duration_s)


def test_keys_step_frames_seconds_and_to_either_end(recorded, window, qtbot):
    w = window(load_review(recorded))
    times = frame_times()
    w.seek(1.0)
    at = nearest_frame(1.0)
    qtbot.keyClick(w, Qt.Key.Key_Right)
    assert w.t == pytest.approx(times[at + 1]) and shown_frame(w) == at + 1
    qtbot.keyClick(w, Qt.Key.Key_Right)
    qtbot.keyClick(w, Qt.Key.Key_Left)
    assert w.t == pytest.approx(times[at + 1]) and shown_frame(w) == at + 1
    qtbot.keyClick(w, Qt.Key.Key_Right, Qt.KeyboardModifier.ShiftModifier)
    assert w.t == pytest.approx(times[at + 1] + 1.0) and shown_frame(w) == nearest_frame(w.t)
    qtbot.keyClick(w, Qt.Key.Key_Left, Qt.KeyboardModifier.ShiftModifier)
    assert w.t == pytest.approx(times[at + 1])
    qtbot.keyClick(w, Qt.Key.Key_End)
    assert w.t == pytest.approx(w.review.duration_s) and shown_frame(w) == len(times) - 1
    qtbot.keyClick(w, Qt.Key.Key_Home)
    assert w.t == 0.0 and shown_frame(w) == 0
    qtbot.keyClick(w, Qt.Key.Key_Left)
    assert w.t == 0.0


def test_a_recording_without_frames_is_reviewed_without_an_image(samples_only, window, qtbot):
    review = load_review(samples_only)
    assert review.frame_count == 0 and review.image_note == "no frames in this recording"
    w = window(review)
    assert w.image.placeholder == "No frames in this recording" and w.image.frame_size is None
    assert len(w.charts.insertion.getData()[0]) > 0
    w.seek(1.5)
    assert w.readouts.depth_tile.value.text() == f"{depth_at(1.5):.1f}"
    qtbot.keyClick(w, Qt.Key.Key_Right)  # without frames, a step is 0.1 s
    assert w.t == pytest.approx(1.6)
    assert w.readouts.depth_tile.value.text() == f"{depth_at(1.6):.1f}"


def test_a_truncated_samples_file_is_read_as_far_as_it_goes(recorded, tmp_path, window):
    d = tmp_path / "cut"
    shutil.copytree(recorded, d)
    data = (d / "samples.csv").read_bytes()
    rows = data.split(b"\n")
    keep = b"\n".join(rows[:301]) + b"\n" + rows[301][:20]  # the header, 300 rows, and a piece of the next
    (d / "samples.csv").write_bytes(keep)
    review = load_review(d)
    assert review.sample_count == 300
    assert any("truncated" in p and "300 samples of the 590" in p for p in review.problems), review.problems
    w = window(review)
    assert w.problems.isVisible() and "truncated" in w.problems.text()
    w.seek(2.0)  # past the last sample (1.495 s): no signal, and the frame of that time still shows
    assert w.readouts.depth_tile.value.text() == "–" and "NO SIGNAL" in w.details.values["Sample"].text()
    assert shown_frame(w) == nearest_frame(2.0)


def test_an_interrupted_recording_shows_the_frames_that_reached_the_disk(tmp_path, window):
    crashed = tmp_path / "crashed"
    make_recording(tmp_path / "session", crash_copy=crashed)
    assert (crashed / "ultrasound.partial.seq.nhdr").exists() and not (crashed / "ultrasound.seq.mha").exists()
    before = _files(crashed)
    review = load_review(crashed)
    text = " ".join(review.problems)
    assert "not closed cleanly" in text and "fused.mp4" in text and "without the overlay" in text
    assert review.frame_count == len(frame_times())
    w = window(review)
    w.seek(1.3)
    assert shown_frame(w) == nearest_frame(1.3)
    w.close()
    assert _files(crashed) == before  # read where they are, never recovered in place


def test_a_directory_that_is_not_a_recording_is_refused_with_the_reason(recorded, tmp_path, window, monkeypatch):
    (tmp_path / "notes.txt").write_text("not a recording")
    with pytest.raises(ReviewError, match=r"is not a recording: it has no samples\.csv"):
        load_review(tmp_path)
    with pytest.raises(ReviewError, match="no such directory"):
        load_review(tmp_path / "absent")
    shown: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda parent, title, text: shown.append(text))
    assert open_review(tmp_path, None) is None
    assert shown and "is not a recording" in shown[0]
    # A window showing a recording keeps it when asked to open something else that is not one.
    w = window(load_review(recorded))
    assert not w.open_path(tmp_path)
    assert w.review is not None and w.review.directory == recorded and len(shown) == 2
    assert "Cannot open" in w.statusBar().currentMessage()
    # `needletrack review DIR` refuses it before any window opens.
    result = CliRunner().invoke(review_command, [str(tmp_path)])
    assert result.exit_code == 1 and "is not a recording" in result.output
