"""The viewer's window on fixed snapshots (no probe): shortcuts, full screen, the help dialog, alerts that stay,
readouts, the image keeping its aspect, and the sound that never fails offscreen."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QAbstractButton

from needletrack.needle_state import NO_FLAGS, NeedleState
from needletrack.protocol import Flag
from needletrack.viewer import actions
from needletrack.viewer import theme as th
from needletrack.viewer.alerts import Priority
from needletrack.viewer.main_window import CHART_EVERY, MainWindow
from needletrack.viewer.readouts import DASH
from needletrack.viewer.snapshot import Snapshot
from needletrack.viewer.sound import AlertSound
from tests.host.viewer_support import StaticEngine, colour_pixels, grabbed, streaming


@pytest.fixture
def window(qtbot):
    engine = StaticEngine()
    w = MainWindow(engine, theme=th.Theme(0.8), start_timer=False)
    qtbot.addWidget(w)
    w.resize(1536, 864)
    w.show()
    qtbot.waitExposed(w)
    w.activateWindow()
    qtbot.waitUntil(lambda: w.isActiveWindow(), timeout=2000)
    return w, engine


def _snap(**kw) -> Snapshot:
    return Snapshot(t=time.monotonic(), link=streaming(), **kw)


def settle(w: MainWindow) -> None:
    """Refreshes enough for the readouts and charts, which are redrawn on every CHART_EVERY-th only."""
    for _ in range(CHART_EVERY):
        w.refresh()


def _state(tip: float, flags: Flag = NO_FLAGS) -> NeedleState:
    return NeedleState(tip * 2, tip, 30.4, 30.0, flags, 0.01, 17.0, 5.0)


def test_single_key_shortcuts_reach_the_engine(window, qtbot):
    w, engine = window
    for key, call in ((Qt.Key.Key_C, "connect"), (Qt.Key.Key_P, "pair"), (Qt.Key.Key_R, "record"),
                      (Qt.Key.Key_S, "scan")):
        qtbot.keyClick(w, key)
        assert engine.calls[-1] == call
    engine.snap = _snap()  # streaming now: C disconnects
    w.refresh()
    qtbot.keyClick(w, Qt.Key.Key_C)
    assert engine.calls[-1] == "disconnect"


def test_f11_toggles_full_screen_and_escape_leaves_it(window, qtbot):
    w, _ = window
    qtbot.keyClick(w, Qt.Key.Key_F11)
    qtbot.waitUntil(w.isFullScreen, timeout=2000)
    assert w.actions_by_key["fullscreen"].isChecked()
    qtbot.keyClick(w, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not w.isFullScreen(), timeout=2000)
    assert not w.actions_by_key["fullscreen"].isChecked()


def test_the_help_dialog_and_the_menus_list_every_shortcut(window, qtbot):
    w, _ = window
    qtbot.keyClick(w, Qt.Key.Key_F1)
    qtbot.waitUntil(w.help_dialog.isVisible, timeout=2000)
    html = actions.shortcuts_html()
    for spec in actions.ACTIONS:
        assert spec.shortcuts[0] in html and spec.text in html
        action = w.actions_by_key[spec.key]
        assert action.shortcut().toString() and action in w.actions()
    menus = {m.title() for m in w.menuBar().findChildren(type(w.menuBar().addMenu("x")))}
    assert set(actions.MENUS) <= menus


def test_an_alert_stays_while_its_condition_holds_and_cannot_be_dismissed(window, qtbot):
    w, engine = window
    engine.snap = _snap(state=_state(17.8, Flag.NOGO_REACHED), stale=False, signal_lost=False, watching=True,
                        nogo_depth_mm=17.0)
    for _ in range(5):
        w.refresh()
        qtbot.keyClick(w, Qt.Key.Key_Escape)
        qtbot.keyClick(w, Qt.Key.Key_M)  # muting is the only thing a key does to an alert
        assert w.banner.texts() == ["NO-GO DEPTH REACHED"]
    assert not w.banner.findChildren(QAbstractButton)  # nothing to click away
    engine.snap = _snap(state=_state(8.0), stale=False, signal_lost=False, watching=True, nogo_depth_mm=17.0)
    w.refresh()
    assert w.banner.texts() == [] and "no alerts" in w.banner.idle.text()


def test_the_readouts_show_the_no_go_colours_and_dashes_when_the_signal_is_lost(window):
    w, engine = window
    r = w.readouts
    engine.snap = _snap(state=_state(14.5, Flag.NOGO_NEAR), stale=False, signal_lost=False, nogo_depth_mm=17.0)
    settle(w)
    assert (r.depth_tile.value.text(), r.tip_tile.value.text(), r.nogo_tile.value.text()) == ("29.0", "14.5", "2.5")
    assert r.angle_tile.value.text() == "30.4"
    assert th.AMBER in r.nogo_tile.styleSheet()
    engine.snap = replace(engine.snap, state=_state(17.8, Flag.NOGO_REACHED))
    settle(w)
    assert r.nogo_tile.value.text() == "-0.8" and th.RED in r.nogo_tile.styleSheet()
    engine.snap = replace(engine.snap, stale=True, signal_lost=True, watching=True)
    settle(w)
    assert {t.value.text() for t in (r.angle_tile, r.depth_tile, r.tip_tile, r.nogo_tile)} == {DASH}
    assert w.banner.texts() == ["NO SIGNAL"]


def test_the_image_keeps_its_aspect_and_is_framed_in_the_alert_colour(window, qtbot):
    w, engine = window
    frame = np.full((480, 640, 3), 90, np.uint8)
    # t = 1000.1: a flashing frame is in its "on" part (FLASH_HZ 2: on for the first 0.35 s of each 0.5 s)
    engine.snap = replace(_snap(image=frame, frame_index=0, frame_time_s=time.monotonic(), stale=True,
                                signal_lost=True, watching=True), t=1000.1)
    w.refresh()
    qtbot.waitUntil(lambda: w.image.frames_shown == 1, timeout=2000)
    rect = w.image.image_rect
    assert rect.width() / rect.height() == pytest.approx(640 / 480, abs=0.01)
    view = w.image.rect()
    assert abs((rect.left() - view.left()) - (view.right() - rect.right())) <= 2  # centred
    pixels = grabbed(w.image)
    red = tuple(int(th.RED[i:i + 2], 16) for i in (5, 3, 1))  # #rrggbb to BGR
    assert colour_pixels(pixels[:8], red, 4) > 0.9 * 8 * pixels.shape[1]
    engine.snap = replace(engine.snap, t=1000.45)  # the "off" part: no frame
    w.refresh()
    assert w.image._border is None
    assert colour_pixels(pixels[rect.top() + 5:rect.bottom() - 5, rect.left() + 5:rect.right() - 5],
                         (90, 90, 90), 2) > 0.95 * (rect.width() - 10) * (rect.height() - 10)


def test_the_sound_never_fails_offscreen_and_mute_silences_it_only(qtbot):
    sound = AlertSound()
    assert sound.backend in ("qtmultimedia", "beep")
    sound.play(Priority.HIGH)
    sound.muted = True
    sound.play(Priority.MEDIUM)
    assert (sound.played, sound.silenced) == (1, 1)
    sound.close()


def test_the_view_command_refuses_a_calibration_it_cannot_find_before_opening_a_window(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from needletrack.viewer.cli import view_command

    res = CliRunner().invoke(view_command, ["--help"])
    assert res.exit_code == 0
    for option in ("--transport", "--frames", "--probe-model", "--latency", "--nogo", "--fullscreen", "DEVICE"):
        assert option in res.output
    video = tmp_path / "clip.avi"
    import cv2

    w = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 10, (64, 48))
    for _ in range(3):
        w.write(np.zeros((48, 64, 3), np.uint8))
    w.release()
    # (Without --probe-model the source opens uncalibrated, to be calibrated in the window.)
    monkeypatch.setenv("NEEDLETRACK_CONFIG", str(tmp_path / "config"))
    res = CliRunner().invoke(view_command, ["-t", "tcp-client:127.0.0.1:9", "--frames", f"video:{video}",
                                            "--probe-model", "L12-5"])
    assert res.exit_code != 0 and "no image calibration for probe model 'L12-5'" in res.output
    res = CliRunner().invoke(view_command, ["--frames", "synthetic:dry_needling", "--nogo-margin", "-1"])
    assert res.exit_code != 0 and "margin" in res.output


def test_qt_calls_that_return_nothing_cannot_use_up_none(qtbot):
    import sys

    from PySide6.QtWidgets import QLabel

    from needletrack.viewer import refcount_guard

    guarded = refcount_guard.protect()
    assert guarded or sys.version_info >= (3, 12) or not refcount_guard.leaks_none()
    label = QLabel()
    qtbot.addWidget(label)
    for _ in range(200000):  # without the guard, on PySide6 6.12 and Python 3.11, this aborts the interpreter
        label.setText("x")
    if guarded:
        assert sys.getrefcount(None) > refcount_guard.MARGIN // 2


def test_the_charts_mark_twitches_and_passes_in_their_window(window):
    from needletrack.viewer.snapshot import ChartData

    w, engine = window
    now = 500.0
    t = np.arange(now - 20.0, now, 0.01)
    depth = 15.0 + 5.0 * np.sin(t)
    twitches, passes = np.array([now - 4.0]), np.array([now - 9.0, now - 2.0])
    data = ChartData(t, depth, depth / 2, np.full_like(t, 30.0), twitches, passes)
    engine.snap = replace(_snap(charts=data, nogo_depth_mm=17.0), t=now)
    settle(w)
    for chart in (w.charts.depth_chart, w.charts.angle_chart):
        assert chart.marker_count == 3
    x, y = w.charts.insertion.getData()
    assert x[0] == pytest.approx(-20.0) and x[-1] == pytest.approx(-0.01) and np.allclose(y, depth)
    assert w.charts.nogo_line.isVisible() and w.charts.nogo_line.value() == 17.0
    lo, hi = w.charts.depth_chart.getViewBox().viewRange()[1]
    assert lo <= 0.0 and hi >= 20.0
