"""Renders the depth-calibration wizard's residual page, offscreen: docs/images/viewer_depth_wizard.png.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/render_depth_wizard_screenshot.py [--out docs/images]

A virtual probe is served on a depth jig (needletrack.sim.depth_jig, 1.5 s at each stop), a live engine
connects to it, and the real wizard is driven as an operator would: Begin, Record at each stop of the factory
plan as the needle holds there, Fit and write. The dialog is grabbed once the residuals are in, and the figures
printed.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtWidgets import QApplication

from needletrack.sim import depth_jig, scenario, serve
from needletrack.viewer import refcount_guard
from needletrack.viewer import theme as th
from needletrack.viewer.depth_calibration import Stage, verdict
from needletrack.viewer.depth_wizard import open_depth_wizard
from needletrack.viewer.engine import LiveEngine
from needletrack.viewer.snapshot import Phase

CYCLE = depth_jig.JigCycle(hold_s=1.5, speed_mm_s=25.0, return_mm_s=75.0)
SIZE = (1280, 900)


def _pump(app: QApplication, cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {what}")
        app.processEvents()
        time.sleep(0.005)


async def _advertising_began(bridge: Any) -> float | None:
    return bridge.advertising_began()  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "images")
    args = ap.parse_args()
    refcount_guard.protect()
    app = QApplication.instance() or QApplication([])
    work = Path(tempfile.mkdtemp(prefix="needletrack-wizard-shot-"))
    with serve.served(scenario.parse(depth_jig.scenario(CYCLE, "wizard_screenshot")), work, cpu="ideal") as probe:
        _pump(app, lambda: probe.radio.call(_advertising_began) is not None, 15, "the probe advertising")
        engine = LiveEngine(probe.transport).start()
        try:
            engine.connect().result(20)
            _pump(app, lambda: engine.snapshot().link.phase is Phase.STREAMING, 10, "streaming")
            engine.pair().result(10)
            wizard = open_depth_wizard(engine, th.Theme(1.0))
            wizard.resize(*SIZE)

            def now() -> float:
                return depth_jig.scenario_time(probe.console, CYCLE.period_s)

            _pump(app, wizard.begin_button.isEnabled, 10, "Begin enabled")
            wizard.begin_button.click()
            _pump(app, lambda: wizard.flow.stage is Stage.RECORDING, 5, "recording")
            for i, (start, end) in enumerate(CYCLE.holds()):
                _pump(app, lambda start=start, end=end: start <= now() <= end - 0.25
                      and wizard.record_button.isEnabled(), CYCLE.period_s * 2, f"Record at stop {i}")
                wizard.record_button.click()
                _pump(app, lambda i=i: len(wizard.flow.points) == i + 1, 3, f"point {i}")
            wizard.commit_button.click()
            _pump(app, lambda: wizard.flow.stage is Stage.DONE, 10, "the residuals")
            _pump(app, lambda: wizard.verdict.text() != " ", 1, "the verdict shown")
            for _ in range(10):
                app.processEvents()
                time.sleep(0.02)
            args.out.mkdir(parents=True, exist_ok=True)
            path = args.out / "viewer_depth_wizard.png"
            wizard.grab().save(str(path))
            v = verdict(wizard.flow.residuals)
            print(f"{path}: calibration {wizard.flow.calibration_id:04x}, residual RMS {v.rms_mm:.3f} mm, "
                  f"largest {v.max_mm:.3f} mm; {v.text}")
            wizard.close()
        finally:
            engine.close()


if __name__ == "__main__":
    main()
