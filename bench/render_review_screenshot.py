"""Renders the review window on a real recording, offscreen at 1920x1080: docs/images/viewer_review.png.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/render_review_screenshot.py [--out docs/images]
        [--recording DIR]

Without ``--recording``, the recording is made first, into a temporary directory, as ``needletrack view``
makes one: the virtual probe serving the dry_needling scenario in real time over its radio, its synthetic B-mode
fused live by the viewer's engine with a 17 mm no-go depth, and R pressed for one pass of the scenario (about
21 s, plus the probe's boot). The window is then opened on it at the deepest tip of the session (a pass at the
no-go depth, twitches around it) and grabbed with QWidget.grab().
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
from PySide6.QtWidgets import QApplication

from needletrack.fusion import NoGo
from needletrack.sim import scenario, serve
from needletrack.viewer import refcount_guard
from needletrack.viewer import theme as th
from needletrack.viewer.engine import LiveEngine
from needletrack.viewer.frame_feed import open_feed
from needletrack.viewer.review_data import load_review
from needletrack.viewer.review_window import ReviewWindow

SIZE = (1920, 1080)
SCENARIO = "dry_needling"
NOGO_MM = 17.0


def record(work: Path, seconds: float) -> Path:
    """A recording made by the viewer's engine against the virtual probe, with its frames fused live."""
    sc = scenario.load(SCENARIO)
    with serve.served(sc, work / "probe", cpu="ideal") as probe:
        engine = LiveEngine(probe.transport, feed=open_feed(f"synthetic:{SCENARIO}"), nogo=NoGo(NOGO_MM),
                            record_root=work / "recordings").start()
        try:
            engine.connect().result(30)
            deadline = time.monotonic() + 20
            while engine.snapshot().image is None:
                if time.monotonic() > deadline:
                    raise TimeoutError("no fused frame within 20 s of connecting")
                time.sleep(0.1)
            path = engine.start_recording().result(10)
            print(f"recording {seconds:.0f} s to {path}", file=sys.stderr)
            time.sleep(seconds)
            saved = engine.stop_recording().result(60)
        finally:
            engine.close()
    assert saved is not None
    return saved


def render(directory: Path, out: Path) -> Path:
    refcount_guard.protect()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    review = load_review(directory)
    window = ReviewWindow(review, theme=th.Theme.for_height(SIZE[1]))
    window.resize(*SIZE)
    window.show()
    tip = review.columns["tip_depth_mm"]
    at = float(review.t[int(np.nanargmax(tip))]) if np.isfinite(tip).any() else review.duration_s / 2
    window.seek(at)
    for _ in range(5):
        app.processEvents()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "viewer_review.png"
    if not window.grab().toImage().save(str(path)):
        raise OSError(f"{path}: not written")
    print(f"{path}: {review.sample_count} samples, {review.frame_count} frames, {len(review.events)} events, "
          f"cursor at {at:.2f} s; problems: {review.problems or 'none'}", file=sys.stderr)
    window.close()
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("docs/images"))
    ap.add_argument("--recording", type=Path, default=None, help="an existing recording (default: make one)")
    ap.add_argument("--seconds", type=float, default=scenario.load(SCENARIO).duration_s + 0.5)
    args = ap.parse_args()
    if args.recording is not None:
        render(args.recording, args.out)
        return
    with tempfile.TemporaryDirectory(prefix="needletrack-review-") as tmp:
        render(record(Path(tmp), args.seconds), args.out)


if __name__ == "__main__":
    main()
