"""Setting up a procedure in the viewer against the virtual probe: guide and needle confirmed on the probe, a
mismatch hiding the needle, the no-go depth clicked on the image, the image calibrated by two clicks, the video
latency measured. The frames are the probe's own scenario in step with its clock (as the viewer plays a synthetic
source), arriving 80 ms late."""

from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np
import pytest
from PySide6.QtCore import Qt

from needletrack import geometry, recording
from needletrack.frames.synthetic import SyntheticSource
from needletrack.geometry import CalibrationStore
from needletrack.protocol import Opcode, ResultCode
from needletrack.sim import scenario, serve
from needletrack.viewer import theme as th
from needletrack.viewer.alerts import AlertKind
from needletrack.viewer.engine import SETUP_HIDDEN, LiveEngine
from needletrack.viewer.frame_feed import FrameFeed, open_feed, since_boot_s
from needletrack.viewer.main_window import MainWindow
from needletrack.viewer.procedure import Procedure, SetupState
from needletrack.viewer.procedure_panel import summary
from needletrack.viewer.snapshot import Phase
from tests.host import HOST_TEST_CPU
from tests.host.viewer_support import TRAJECTORY_BGR, colour_pixels, pump_until

DELAY_S = 0.080
# Pistoning 10 -> 40 mm and back every 3 s: movement for the latency, depths 10 mm apart for the image clicks.
PISTONING = {
    "name": "pistoning",
    "duration_s": 90.0,
    "seed": 4,
    "guide_angle_deg": 30.0,
    "needle_length_mm": 60.0,
    "attitude": [[0, 0, 0, 0]],
    "depth": [[t, 10.0 if i % 2 == 0 else 40.0] for i, t in enumerate(np.arange(0.0, 90.1, 1.5))],
}


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    sc = scenario.parse(PISTONING)
    with serve.served(sc, tmp_path_factory.mktemp("pistoning"), cpu=HOST_TEST_CPU) as served:
        yield sc, served


@pytest.fixture(scope="module")
def live(probe, qapp, tmp_path_factory):
    sc, served = probe
    source = SyntheticSource(sc, fps=25.0, size=(640, 480))
    # In step with the probe through the samples' clock mapping, as `view --frames synthetic:NAME` plays.
    feed = FrameFeed(source, source.calibration, fps=25.0, delay_s=DELAY_S, follows_probe_clock=True)
    engine = LiveEngine(served.transport, feed=feed, record_root=tmp_path_factory.mktemp("rec")).start()
    window = MainWindow(engine, theme=th.Theme(0.8))
    window.resize(1536, 864)
    window.show()
    engine.connect().result(15)
    pump_until(lambda: engine.setup.device is not None and window.last_snapshot is not None
               and window.last_snapshot.image is not None, 10.0, "streaming with frames and the probe's setup")
    try:
        yield engine, window, source
    finally:
        window.close()
        engine.close()
        window.deleteLater()
        qapp.processEvents()


def _key(qtbot, window, key):
    """A shortcut, as pressed with the window in front (a dialog may have had the focus)."""
    window.activateWindow()
    pump_until(window.isActiveWindow, 3.0, "the window active")
    qtbot.keyClick(window, key)


def _config(engine):
    assert engine.command(Opcode.READ_CONFIG).result(10).code is ResultCode.OK
    pump_until(lambda: engine.config is not None, 3.0, "a CONFIG record")
    return engine.config


def test_connecting_reads_the_probes_setup_and_asks_to_confirm_it(live, qtbot):
    engine, window, _ = live
    device = engine.setup.device
    assert device == Procedure(30.0, engine.config.needle_length_mm)
    assert engine.setup.state is SetupState.NOT_SET
    qtbot.waitUntil(lambda: bool(window.alerts) and window.alerts[0].kind is AlertKind.SETUP_UNCONFIRMED,
                    timeout=3000)
    assert "guide 30°" in window.alerts[0].detail
    qtbot.waitUntil(lambda: window.procedure.state_label.text() == "not confirmed", timeout=2000)


def test_the_setup_dialog_confirms_guide_and_needle_on_the_probe(live, qtbot):
    engine, window, _ = live
    _key(qtbot, window, Qt.Key.Key_U)
    dialog = window.setup_dialog
    assert dialog is not None and dialog.isVisible()
    dialog.guide.setCurrentIndex(dialog.guide.findText("30°"))
    dialog.needle.setCurrentIndex(dialog.needle.findText("50 mm"))
    dialog.confirm()
    qtbot.waitUntil(lambda: not dialog.busy, timeout=10000)
    assert dialog.result_label.text().startswith("Confirmed by the probe"), dialog.result_label.text()
    assert engine.setup.state is SetupState.CONFIRMED
    config = _config(engine)
    assert (config.guide_angle_deg, config.needle_length_mm) == (30.0, 50.0)  # read back from the probe
    qtbot.waitUntil(lambda: window.procedure.state_label.text() == "✓ confirmed", timeout=2000)
    assert "guide 30°, needle 50 mm" in window.procedure.text.text()
    qtbot.waitUntil(lambda: not any(a.kind is AlertKind.SETUP_UNCONFIRMED for a in window.alerts), timeout=2000)
    dialog.close()


def test_a_probe_set_up_for_another_detent_hides_the_needle_until_confirmed_again(live, qtbot):
    engine, window, _ = live
    engine.confirm_procedure(Procedure(30.0, 50.0)).result(10)
    qtbot.waitUntil(lambda: colour_pixels(window.last_snapshot.image, TRAJECTORY_BGR) > 200, timeout=3000)
    # Another host (or a probe restarted with other settings) puts the probe on the 45° detent.
    assert engine.command(Opcode.SET_GUIDE_ANGLE, 4500).result(10).code is ResultCode.OK
    qtbot.waitUntil(lambda: engine.setup.state is SetupState.MISMATCH, timeout=3000)
    assert "45°" in engine.setup.problem and "30°" in engine.setup.problem
    qtbot.waitUntil(lambda: bool(window.alerts) and window.alerts[0].kind is AlertKind.SETUP_MISMATCH, timeout=2000)
    assert window.banner.texts()[0] == "SETUP MISMATCH: NEEDLE HIDDEN"
    # No needle on the image, and what depends on the detent is not shown; the insertion depth still is.
    qtbot.waitUntil(lambda: colour_pixels(window.last_snapshot.image, TRAJECTORY_BGR) == 0, timeout=3000)
    assert engine.fuser.hidden == SETUP_HIDDEN
    qtbot.waitUntil(lambda: window.readouts.tip_tile.value.text() == "–", timeout=2000)
    assert window.readouts.angle_tile.value.text() == "–" and window.readouts.depth_tile.value.text() != "–"
    assert window.procedure.state_label.text() == "MISMATCH"
    # Confirming the procedure again sets the probe back to 30°: the needle returns.
    engine.confirm_procedure(Procedure(30.0, 50.0)).result(10)
    assert engine.setup.state is SetupState.CONFIRMED and _config(engine).guide_angle_deg == 30.0
    qtbot.waitUntil(lambda: colour_pixels(window.last_snapshot.image, TRAJECTORY_BGR) > 200, timeout=3000)
    assert not any(a.kind is AlertKind.SETUP_MISMATCH for a in window.alerts)


def test_n_sets_the_no_go_depth_where_the_image_is_clicked_and_sends_it_to_the_probe(live, qtbot):
    engine, window, _ = live
    cal = window.last_snapshot.calibration
    _key(qtbot, window, Qt.Key.Key_N)
    assert window.image.picking
    row = geometry.depth_row(cal, 25.0)
    qtbot.mouseClick(window.image, Qt.MouseButton.LeftButton, pos=window.image.to_widget(300.0, row).toPoint())
    assert not window.image.picking
    qtbot.waitUntil(lambda: engine.nogo.depth_mm is not None, timeout=10000)
    assert engine.nogo.depth_mm == pytest.approx(25.0, abs=0.05 + cal.mm_per_px[1] * 2)  # a screen pixel
    assert _config(engine).nogo_depth_mm == pytest.approx(engine.nogo.depth_mm, abs=0.01)  # on the probe
    qtbot.waitUntil(lambda: window.readouts.nogo_tile.title.text().startswith("TO NO-GO"), timeout=2000)
    # Esc cancels a pick and changes nothing.
    _key(qtbot, window, Qt.Key.Key_N)
    _key(qtbot, window, Qt.Key.Key_Escape)
    assert not window.image.picking and engine.nogo.depth_mm is not None
    engine.set_nogo(None).result(10)
    assert _config(engine).nogo_depth_mm is None


def test_a_no_go_depth_out_of_range_is_refused_and_changes_nothing(live):
    engine, _, _ = live
    before = engine.nogo
    with pytest.raises(Exception, match="outside"):
        engine.set_nogo(250.0).result(10)
    assert engine.nogo == before


def test_the_image_is_calibrated_by_clicking_the_needle_tip_at_two_depths(live, qtbot, tmp_path):
    engine, window, source = live
    truth = source.calibration
    _key(qtbot, window, Qt.Key.Key_I)
    wizard = window.image_wizard
    assert wizard is not None
    wizard.store = CalibrationStore(tmp_path / "cal.json")
    wizard.model.setText("bench-probe")
    depths = []
    for k in range(2):
        if k == 1:  # the needle 10 mm or more away from the first click's depth
            qtbot.waitUntil(lambda: window.last_snapshot.frame_state is not None
                            and window.last_snapshot.frame_state.depth_mm is not None
                            and abs(window.last_snapshot.frame_state.depth_mm - depths[0]) > 12, timeout=5000)
        wizard.pick_buttons[k].click()
        assert window.image.picking
        state = window._pick[1]  # the frozen frame's needle state, as the clinician sees the frame
        tip = geometry.tip_px(truth, state.depth_mm, state.guide_angle_deg)
        qtbot.mouseClick(window.image, Qt.MouseButton.LeftButton, pos=window.image.to_widget(*tip).toPoint())
        depths.append(state.depth_mm)
    assert wizard.save_button.isEnabled(), wizard.result_label.text()
    wizard.save()
    cal = wizard.calibration
    # A click lands on a whole screen pixel (0.8 theme scale: about 1.6 frame px here).
    assert cal.mm_per_px[0] == pytest.approx(truth.mm_per_px[0], rel=0.03)
    assert math.dist(cal.exit_px, truth.exit_px) < 4.0
    assert CalibrationStore(tmp_path / "cal.json").load("bench-probe") == cal
    assert window.last_snapshot is not None
    qtbot.waitUntil(lambda: engine.snapshot().calibration == cal, timeout=1000)
    wizard.close()
    # The setup lists the source's own calibration and the stored one; choosing one places the needle with it.
    engine.set_image_calibration(truth)
    _key(qtbot, window, Qt.Key.Key_U)
    dialog = window.setup_dialog
    dialog.store = CalibrationStore(tmp_path / "cal.json")
    dialog.load(engine.snapshot())
    labels = [dialog.image_cal.itemText(i) for i in range(dialog.image_cal.count())]
    assert labels[0].startswith("the source's: synthetic") and labels[1].startswith("bench-probe (two-point")
    dialog.image_cal.setCurrentIndex(1)
    dialog.confirm()
    qtbot.waitUntil(lambda: not dialog.busy, timeout=10000)
    assert engine.snapshot().calibration == cal
    dialog.image_cal.setCurrentIndex(0)
    dialog.confirm()
    qtbot.waitUntil(lambda: not dialog.busy, timeout=10000)
    assert engine.snapshot().calibration == truth
    dialog.close()


def test_a_click_where_there_is_no_needle_depth_is_refused(live):
    _, window, _ = live
    window.show_image_calibration()
    wizard = window.image_wizard
    before = list(wizard.points)
    wizard.picked(0, 100.0, 100.0, None, (640, 480))
    assert "no needle depth" in wizard.result_label.text() and wizard.points == before


def test_the_latency_wizard_measures_the_frames_delay_and_uses_it(live, qtbot):
    engine, window, _ = live
    assert engine.snapshot().link.phase is Phase.STREAMING
    _key(qtbot, window, Qt.Key.Key_L)
    wizard = window.latency_wizard
    wizard.seconds.setValue(8.0)
    wizard.start()
    qtbot.waitUntil(lambda: wizard.progress.value() > 0, timeout=5000)
    qtbot.waitUntil(lambda: not wizard.running, timeout=20000)
    est = wizard.estimate
    assert est is not None and est.ok, wizard.result_label.text()
    assert est.lag_s == pytest.approx(DELAY_S, abs=0.005)
    assert wizard.plot.pixmap() is not None and not wizard.plot.pixmap().isNull()
    wizard.use()
    assert engine.snapshot().video_latency_s == pytest.approx(est.lag_s)
    shown = f"latency {est.lag_s * 1000:.0f} ms"
    qtbot.waitUntil(lambda: shown in window.procedure.text.text(), timeout=2000)
    wizard.close()


def test_a_source_without_an_image_calibration_opens_uncalibrated_until_one_is_chosen(tmp_path):
    path = tmp_path / "scanner.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (640, 480))
    for k in range(50):
        writer.write(np.full((480, 640, 3), 40 + k, np.uint8))
    writer.release()
    feed = open_feed(f"video:{path}", store=tmp_path / "none.json")
    assert feed.calibration is None
    with LiveEngine("tcp-client:127.0.0.1:9", feed=feed, record_root=tmp_path) as engine:
        pump_until(lambda: engine.snapshot().image is not None, 5.0, "a frame")
        snap = engine.snapshot()
        assert snap.calibration is None and "image not calibrated" in summary(snap)
        cal = SyntheticSource(scenario.parse(PISTONING), size=(640, 480)).calibration
        assert engine.set_image_calibration(cal)
        assert engine.snapshot().calibration == cal and feed.calibration == cal


def test_settings_changed_while_recording_are_in_its_events_and_the_image_calibration_is_kept(live):
    engine, _, source = live
    directory = engine.start_recording().result(10)
    try:
        engine.set_nogo(22.0).result(10)
        engine.set_video_latency(0.05)
        other = replace(source.calibration, probe_model="other")
        assert not engine.set_image_calibration(other)  # the recording's needle poses use one calibration
        assert engine.snapshot().calibration == source.calibration
    finally:
        engine.stop_recording().result(30)
        engine.set_video_latency(0.0)
        engine.set_nogo(None).result(10)
    kinds = {(kind, value) for _, kind, value in recording.load(directory).events}
    assert ("nogo", "22.00 mm") in kinds and ("video_latency", "50.0 ms") in kinds


def test_a_probe_up_longer_than_one_tick_wrap_is_followed_from_its_boot():
    wrap = 2**30 / 1e6
    assert since_boot_s(12.5, None) == 12.5  # no status yet: the receiver's own count
    assert since_boot_s(12.5, 14) == 12.5  # within the first wrap (the status read a second or two later)
    assert since_boot_s(12.5, 2 * wrap + 11) == pytest.approx(12.5 + 2 * wrap)  # up for two wraps and more
    assert since_boot_s(wrap - 0.2, round(wrap) + 1) == pytest.approx(wrap - 0.2)  # the status just past a wrap
