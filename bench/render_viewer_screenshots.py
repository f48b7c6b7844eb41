"""Renders the viewer's main states offscreen at 1920x1080: docs/images/viewer_*.png.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/render_viewer_screenshots.py [--out docs/images]

Each state is one snapshot, made as the live engine would make it, shown by the real window (the same widgets,
alerts and layout as `needletrack view`) and grabbed with QWidget.grab(). The image is the dry_needling
scenario's synthetic B-mode at 800x600, on the frame whose true needle depth is the state's, with the overlay
drawn; the strip charts hold the scenario's last 20 s.

States: clear (needle in, no-go far), near (within the 5 mm margin), reached (tip past the no-go depth, while
recording), no_signal (the link lost 1.4 s ago, reconnecting), sensor_fault (needle sensor fault, and a low
battery), setup_mismatch (the probe on another detent than the procedure's: needle hidden), setup (the setup
dialog over the window, the no-go depth being picked on the image).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import cv2
import numpy as np
from PySide6.QtGui import QPainter
from PySide6.QtWidgets import QApplication

from needletrack import overlay
from needletrack.frames.synthetic import SyntheticSource
from needletrack.link.base import Found
from needletrack.needle_state import NO_FLAGS, NeedleState
from needletrack.protocol import Flag
from needletrack.sim import scenario
from needletrack.sim.scenario import Scenario
from needletrack.viewer import theme as th
from needletrack.viewer.engine import SETUP_HIDDEN
from needletrack.viewer.main_window import MainWindow
from needletrack.viewer.procedure import Procedure, SetupInfo, SetupState
from needletrack.viewer.snapshot import ChartData, Level, LinkInfo, Message, Outage, Phase, RecordingInfo, Snapshot

SIZE = (1920, 1080)
FRAME_SIZE = (800, 600)
NOGO_MM = 17.0
NOW = 1000.25  # host time of every snapshot; chosen so a flashing border is in its "on" phase
PROBE = Found("F4:12:FA:00:00:01/P", "NeedleTrack-0001", -58, ())
STATES = ("clear", "near", "reached", "no_signal", "sensor_fault", "setup_mismatch", "setup")
PROCEDURE = Procedure(30.0, 50.0)
CONFIRMED = SetupInfo(SetupState.CONFIRMED, PROCEDURE, PROCEDURE)


class StaticEngine:
    """One fixed snapshot, and actions that do nothing: enough to drive the window for a picture."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.source_calibration = snap.calibration

    def snapshot(self) -> Snapshot:
        return self.snap

    def _nothing(self, *_: object) -> object:
        from concurrent.futures import Future

        f: Future[None] = Future()
        f.set_result(None)
        return f

    scan = connect = disconnect = pair = toggle_recording = confirm_procedure = set_nogo = measure_latency = \
        command = set_image_calibration = set_video_latency = _nothing


def needle_angle(sc: Scenario, t: np.ndarray) -> np.ndarray:
    """asin((R d).z) for the scenario's attitude at t: the needle angle the device reports."""
    ypr = np.radians(sc.attitude_at(t))
    g = math.radians(sc.guide_angle_deg)
    _, th_, ph = ypr[..., 0], ypr[..., 1], ypr[..., 2]
    # (R d).z with R = Rz Ry Rx and d = (cos g, 0, sin g): -sin(theta) cos g + cos(theta) cos(phi) sin g.
    z = -np.sin(th_) * math.cos(g) + np.cos(th_) * np.cos(ph) * math.sin(g)
    return np.degrees(np.arcsin(np.clip(z, -1.0, 1.0)))


def charts(sc: Scenario, scenario_s: float, window_s: float = 20.0, gap_s: float = 0.0,
           no_depth_s: float = 0.0) -> ChartData:
    """The scenario's last ``window_s`` up to ``scenario_s`` (repeating, as the served probe does), as chart data
    ending at NOW; nothing for the last ``gap_s``, no depth for the last ``no_depth_s``."""
    rel = np.arange(-window_s, -gap_s + 1e-9, 0.01)
    st = np.mod(scenario_s + rel, sc.duration_s)
    depth = sc.depth_at(st)
    tip = depth * math.sin(math.radians(sc.guide_angle_deg))
    angle = needle_angle(sc, st)
    depth[rel > -no_depth_s] = np.nan
    tip[rel > -no_depth_s] = np.nan
    twitches = [NOW + dt for dt in rel[::1] if any(abs(((scenario_s + dt) % sc.duration_s) - tw) < 0.005
                                                   for tw in sc.twitches[:, 0])]
    k = sc.depth[:, 1]
    peaks = [sc.depth[i, 0] for i in range(1, len(k) - 1) if k[i] > k[i - 1] and k[i] > k[i + 1]]
    passes = [NOW + dt for dt in rel if any(abs(((scenario_s + dt) % sc.duration_s) - p) < 0.005 for p in peaks)]
    return ChartData(NOW + rel, depth, tip, angle, np.array(twitches), np.array(passes))


def frame_for_depth(src: SyntheticSource, depth_mm: float) -> int:
    depths = np.array([src.truth(i).depth_mm for i in range(src.frame_count)])
    return int(np.argmin(np.abs(depths - depth_mm)))


def link(**kw: object) -> LinkInfo:
    base = LinkInfo(transport="os", phase=Phase.STREAMING, address=PROBE.address, name=PROBE.name, paired=True,
                    rate_hz=200.0, samples=48213, lost=0, quality=1.0, rssi_dbm=PROBE.rssi, age_s=0.004,
                    battery_pct=78, battery_mv=3975, device_state="RUNNING")
    return replace(base, **kw)  # type: ignore[arg-type]


def snapshots(sc: Scenario, src: SyntheticSource) -> dict[str, Snapshot]:
    g = sc.guide_angle_deg
    s = math.sin(math.radians(g))
    cal = src.calibration

    def at(tip_mm: float, flags: Flag = NO_FLAGS, **kw: object) -> tuple[NeedleState, int]:
        depth = tip_mm / s
        index = frame_for_depth(src, depth)
        state = NeedleState(depth, tip_mm, g + 1.2, g, flags, 0.004, NOGO_MM, 5.0, None)
        return replace(state, **kw), index  # type: ignore[arg-type]

    def snap(state: NeedleState, index: int, hidden: str | None = None, **kw: object) -> Snapshot:
        image = overlay.draw(src.frame(index).image, cal, state, hidden=hidden)
        stale = not state.age_s <= 0.1
        gap = state.age_s if stale else 0.0
        base = Snapshot(t=NOW, link=link(), state=state, stale=stale, signal_lost=stale, watching=True,
                        flags=state.flags, image=image, frame_index=index, frame_time_s=NOW - 0.03,
                        frame_ready_s=NOW - 0.025, frame_source=src.name, frames_per_s=25.0,
                        nogo_depth_mm=NOGO_MM, free_disk_bytes=412 * 1024**3, record_root=Path("recordings"),
                        charts=charts(sc, index / src.fps, gap_s=gap), found=(PROBE,),
                        messages=(Message(NOW - 30, Level.INFO, f"connected to {PROBE.address}"),),
                        nogo_margin_mm=5.0, setup=CONFIRMED, calibration=cal, frame_state=state,
                        raw_image=src.frame(index).image, video_latency_s=0.080)
        return replace(base, **kw)  # type: ignore[arg-type]

    clear, i_clear = at(NOGO_MM - 9.0)
    near, i_near = at(NOGO_MM - 2.5, Flag.NOGO_NEAR)
    reached, i_reached = at(NOGO_MM + 0.8, Flag.NOGO_REACHED)
    lost = replace(near, age_s=1.4)
    fault, i_fault = at(NOGO_MM - 9.0, Flag.HALL_FAULT | Flag.LOW_BATTERY, depth_mm=None, tip_depth_mm=None)
    recording = RecordingInfo(Path("recordings/20260312-101500"), 754.0, 150812, 18851)
    return {
        "clear": snap(clear, i_clear),
        "near": snap(near, i_near),
        "reached": snap(reached, i_reached, recording=recording),
        "no_signal": snap(lost, i_near, link=link(phase=Phase.RECONNECTING, reconnect_attempt=3, reconnects=1,
                                                  age_s=1.4, quality=0.72),
                          outage=Outage(NOW - 1.3, None, "link")),
        "sensor_fault": snap(fault, i_fault, link=link(battery_pct=12, battery_mv=3640),
                             charts=charts(sc, i_fault / src.fps, no_depth_s=3.0)),
        "setup_mismatch": snap(replace(clear, guide_angle_deg=45.0), i_clear, hidden=SETUP_HIDDEN,
                               setup=SetupInfo(SetupState.MISMATCH, PROCEDURE, Procedure(45.0, 50.0),
                                               "the probe measures with a 45° detent, the procedure's is 30°")),
        "setup": snap(clear, i_clear),
    }


def render(out: Path, names: tuple[str, ...] = STATES) -> list[Path]:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    sc = scenario.load("dry_needling")
    src = SyntheticSource(sc, size=FRAME_SIZE)
    snaps = snapshots(sc, src)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        engine = StaticEngine(snaps[name])
        window = MainWindow(engine, theme=th.Theme(1.0), start_timer=False)
        window.resize(*SIZE)
        window.show()
        window.refresh()  # the first refresh draws everything, charts and readouts included
        app.processEvents()
        if name == "setup":
            window.show_setup()
            window.pick_nogo()
            app.processEvents()
        image = window.grab().toImage()
        if name == "setup" and window.setup_dialog is not None:
            dialog = window.setup_dialog.grab().toImage()  # a window of its own: drawn where it would open
            painter = QPainter(image)
            painter.drawImage(image.width() - dialog.width() - 600, image.height() - dialog.height() - 340, dialog)
            painter.end()
            window.setup_dialog.close()
        path = out / f"viewer_{name}.png"
        # Through OpenCV for its strongest PNG compression: the speckle makes these large otherwise.
        bgr = image.convertToFormat(image.Format.Format_BGR888)
        rows = np.array(bgr.constBits()).reshape(bgr.height(), bgr.bytesPerLine())
        buf = rows[:, :bgr.width() * 3].reshape(bgr.height(), bgr.width(), 3)
        cv2.imwrite(str(path), buf, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        window.close()
        window.deleteLater()
        app.processEvents()
        paths.append(path)
        print(f"{path}  {path.stat().st_size / 1024:.0f} KiB  alerts: {[a.title for a in window.alerts]}")
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "images")
    ap.add_argument("--only", nargs="*", choices=STATES, default=list(STATES))
    args = ap.parse_args()
    render(args.out, tuple(args.only))


if __name__ == "__main__":
    main()
