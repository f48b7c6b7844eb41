"""The viewer against the virtual probe, live over its radio, with synthetic frames fused live: the real engine and
the real window, driven by their keyboard shortcuts as a clinician would."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest
import SimpleITK as sitk
from PySide6.QtCore import Qt

from needletrack import recording
from needletrack.link.base import LinkError
from needletrack.protocol import Opcode, ResultCode
from needletrack.viewer import theme as th
from needletrack.viewer.engine import LiveEngine
from needletrack.viewer.frame_feed import open_feed
from needletrack.viewer.main_window import MainWindow
from needletrack.viewer.procedure import SetupState
from needletrack.viewer.snapshot import Phase
from tests.host.viewer_support import TRAJECTORY_BGR, colour_pixels, grabbed, pump_until


@pytest.fixture(scope="module")
def live(served_probe, qapp, tmp_path_factory):
    """One engine and window for the module, connected from the window with C."""
    engine = LiveEngine(served_probe.transport, feed=open_feed("synthetic:dry_needling"),
                        record_root=tmp_path_factory.mktemp("recordings")).start()
    window = MainWindow(engine, theme=th.Theme(0.8))
    window.resize(1536, 864)
    window.show()
    window.activateWindow()
    pump_until(window.isActiveWindow, 3.0, "the window active")
    try:
        yield engine, window
    finally:
        window.close()
        engine.close()
        window.deleteLater()
        qapp.processEvents()


@pytest.fixture
def streaming_live(live, qtbot):
    engine, window = live
    qtbot.waitUntil(lambda: window.last_snapshot is not None, timeout=2000)
    if window.last_snapshot.link.phase is not Phase.STREAMING:
        qtbot.keyClick(window, Qt.Key.Key_C)
        qtbot.waitUntil(lambda: window.last_snapshot.link.phase is Phase.STREAMING
                        and window.last_snapshot.state is not None, timeout=10000)
    if window.last_snapshot.setup.state is not SetupState.CONFIRMED:
        # The procedure the virtual probe is set up for, confirmed as a clinician would before starting.
        qtbot.waitUntil(lambda: engine.setup.device is not None, timeout=5000)
        engine.confirm_procedure(engine.setup.device).result(10)
    return engine, window


async def _drop(bridge) -> int:
    return int(await bridge.drop_links())


def test_connected_the_image_shows_the_needle_and_the_readouts_and_charts_follow_it(streaming_live, qtbot):
    engine, window = streaming_live
    shown = window.image.frames_shown
    qtbot.waitUntil(lambda: window.image.frames_shown >= shown + 10, timeout=3000)  # 25 frames/s
    snap = window.last_snapshot
    assert snap is not None and snap.image is not None and not snap.stale
    # The needle's trajectory is drawn on the fused frame (the served probe's needle is 10 to 40 mm in), and the
    # window shows that frame.
    assert colour_pixels(snap.image, TRAJECTORY_BGR) > 200
    qtbot.waitUntil(lambda: colour_pixels(grabbed(window.image), TRAJECTORY_BGR, 16) > 100, timeout=2000)
    depth0 = float(window.readouts.depth_tile.value.text())
    assert 9.0 <= depth0 <= 41.0
    # The scenario advances the needle 1 mm/s: within 1.5 s the readout has moved on.
    qtbot.waitUntil(lambda: abs(float(window.readouts.depth_tile.value.text()) - depth0) >= 0.5, timeout=3000)
    assert window.readouts.angle_tile.value.text() != "–"
    qtbot.waitUntil(lambda: len(window.charts.insertion.getData()[0]) > 150, timeout=3000)  # 100 points a second
    x, y = window.charts.insertion.getData()
    assert x.min() >= -20.0 and -0.2 < x.max() <= 0.0
    assert np.nanmax(y) - np.nanmin(y) > 0.5
    link = window.last_snapshot.link
    assert link.rate_hz == pytest.approx(200.0, rel=0.05) and link.lost == 0
    # Nothing piles up unread in the link's own notification queue (it would grow for as long as the session).
    queued = getattr(engine.link, "_queue", None)
    assert queued is None or queued.qsize() < 20
    assert window.connection.values["Sample rate"].text() == "200 /s"
    qtbot.waitUntil(lambda: window.banner.texts() == [], timeout=3000)  # a busy machine may delay a notification


def test_p_pairs_and_commands_are_answered_by_token(streaming_live, qtbot):
    engine, window = streaming_live
    qtbot.keyClick(window, Qt.Key.Key_P)
    qtbot.waitUntil(lambda: window.last_snapshot.link.paired, timeout=10000)
    assert window.connection.pair_button.text() == "Paired"
    result = engine.command(Opcode.READ_CONFIG).result(10)
    assert result.code is ResultCode.OK
    refused = engine.command(Opcode.SET_OUTPUT_RATE, 5).result(10)
    assert refused.code is ResultCode.OUT_OF_RANGE
    qtbot.waitUntil(lambda: "SET_OUTPUT_RATE: OUT_OF_RANGE" in window.statusBar().currentMessage(), timeout=2000)


def test_r_records_samples_the_fused_video_and_the_sequence(streaming_live, qtbot):
    engine, window = streaming_live
    qtbot.keyClick(window, Qt.Key.Key_R)
    qtbot.waitUntil(lambda: window.last_snapshot.recording is not None, timeout=3000)
    qtbot.waitUntil(lambda: window.last_snapshot.recording.frames >= 40, timeout=5000)
    assert window.record.elapsed.text().startswith("REC 0:00:0")
    assert "Stop" in window.record.button.text() and "REC" in window.windowTitle()
    directory = window.last_snapshot.recording.directory
    qtbot.keyClick(window, Qt.Key.Key_R)
    qtbot.waitUntil(lambda: window.last_snapshot.recording is None, timeout=5000)
    rec = recording.load(directory)
    assert rec.session["complete"] is True and rec.session["recorded_by"] == "needletrack view"
    seq = rec.samples["seq"].astype(int)
    assert len(seq) >= 300 and np.all(np.diff(seq) % 65536 == 1)
    video = cv2.VideoCapture(str(directory / "fused.mp4"))
    frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
    assert frames == rec.session["frames_fused"] >= 40
    assert sitk.ReadImage(str(directory / "ultrasound.seq.mha")).GetSize()[2] == frames
    assert json.loads((directory / "session.json").read_text())["transport"] == engine.transport


def test_no_signal_shows_when_the_link_drops_and_goes_when_it_is_back(streaming_live, served_probe, qtbot):
    _, window = streaming_live
    qtbot.waitUntil(lambda: window.last_snapshot.link.phase is Phase.STREAMING and not window.alerts, timeout=5000)
    reconnects = window.last_snapshot.link.reconnects
    assert served_probe.radio.call(_drop) == 1
    qtbot.waitUntil(lambda: "NO SIGNAL" in window.banner.texts(), timeout=2000)
    assert window.readouts.depth_tile.value.text() == "–"
    assert window.alerts[0].background == th.RED
    qtbot.waitUntil(lambda: "NO SIGNAL" not in window.banner.texts(), timeout=5000)
    snap = window.last_snapshot
    assert snap.link.phase is Phase.STREAMING and snap.link.reconnects == reconnects + 1
    assert snap.outage is not None and snap.outage.cause == "link" and snap.outage.end_s is not None
    assert window.readouts.depth_tile.value.text() != "–"


def test_mute_silences_the_sound_but_the_alert_stays(streaming_live, served_probe, qtbot):
    _, window = streaming_live
    qtbot.waitUntil(lambda: not window.alerts, timeout=5000)
    qtbot.keyClick(window, Qt.Key.Key_M)
    assert window.sound.muted and not window.banner.muted.isHidden()
    played, silenced = window.sound.played, window.sound.silenced
    assert served_probe.radio.call(_drop) == 1
    qtbot.waitUntil(lambda: "NO SIGNAL" in window.banner.texts(), timeout=2000)
    qtbot.waitUntil(lambda: window.sound.silenced > silenced, timeout=1000)
    assert window.sound.played == played  # muted: no sound ...
    assert "NO SIGNAL" in window.banner.texts()  # ... and the alert is there all the same
    qtbot.waitUntil(lambda: not window.alerts, timeout=5000)
    qtbot.keyClick(window, Qt.Key.Key_M)
    assert not window.sound.muted and window.banner.muted.isHidden()
    assert served_probe.radio.call(_drop) == 1
    qtbot.waitUntil(lambda: window.sound.played > played, timeout=2000)
    qtbot.waitUntil(lambda: not window.alerts, timeout=5000)


def test_c_disconnects_and_a_deliberate_disconnect_is_not_an_alarm(streaming_live, qtbot):
    _, window = streaming_live
    qtbot.keyClick(window, Qt.Key.Key_C)
    qtbot.waitUntil(lambda: window.last_snapshot.link.phase is Phase.IDLE, timeout=5000)
    time.sleep(0.2)  # the data is stale by now
    qtbot.wait(100)
    assert window.last_snapshot.stale and window.alerts == []
    assert "Not connected" in window.banner.idle.text()


def test_errors_become_messages_never_exceptions_in_the_gui(qtbot):
    engine = LiveEngine("tcp-client:127.0.0.1:9").start()  # nothing listens there
    try:
        with pytest.raises(LinkError):
            engine.pair().result(5)
        with pytest.raises(Exception):  # noqa: B017 - whatever the transport raises, it is reported
            engine.connect().result(10)
        snap = engine.snapshot()
        texts = [m.text for m in snap.messages]
        assert any(t.startswith("pair: connect to a probe") for t in texts)
        assert any(t.startswith("connect: ") for t in texts)
        assert snap.link.phase is Phase.IDLE and snap.image is None and not snap.watching
    finally:
        engine.close()
