"""Image calibration by two clicks: the needle tip on the image at two insertion depths the probe measured.

Each click is made on a frozen frame without the overlay (the raw echo, not a needle drawn from an earlier
calibration); the depth paired with it is the probe's at that frame's instant. ``geometry.from_two_points`` turns
the pair into a calibration and refuses clicks that cannot be right (the wrong echo, the wrong detent, points too
close). The result is stored for the probe model and used from the next frame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtWidgets import (
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from needletrack import geometry
from needletrack.geometry import Calibration, CalibrationError, CalibrationStore
from needletrack.needle_state import NeedleState
from needletrack.viewer import theme as th
from needletrack.viewer.snapshot import ViewerEngine

# (prompt, where the pick lands) -> the window freezes the raw frame and calls back with (column, row, state)
PickFn = Callable[[str, Callable[[float, float, NeedleState | None, tuple[int, int]], None]], object]


@dataclass(frozen=True)
class TipPoint:
    px: tuple[float, float]
    depth_mm: float
    guide_angle_deg: float
    image_size: tuple[int, int]


def tip_point(col: float, row: float, state: NeedleState | None, size: tuple[int, int]) -> TipPoint:
    """A clicked tip with the probe's depth at that frame; CalibrationError when the frame has none."""
    if state is None or state.depth_mm is None or state.guide_angle_deg is None:
        raise CalibrationError("no needle depth at this frame: the probe must be streaming while you click")
    if state.age_s > 0.1:
        raise CalibrationError(f"the needle depth at this frame is {state.age_s:.1f} s old: click again while "
                               "the probe streams")
    return TipPoint((col, row), state.depth_mm, state.guide_angle_deg, size)


def calibration_from(points: list[TipPoint], probe_model: str) -> Calibration:
    if not probe_model.strip():
        raise CalibrationError("name the probe model the calibration is for")
    a, b = points
    if a.image_size != b.image_size:
        raise CalibrationError("the two frames differ in size: the source changed between the clicks")
    guide = (a.guide_angle_deg + b.guide_angle_deg) / 2
    return geometry.from_two_points(a.px, a.depth_mm, b.px, b.depth_mm, guide_angle_deg=guide,
                                    image_size=a.image_size, probe_model=probe_model.strip())


class ImageCalibrationWizard(QDialog):
    def __init__(self, engine: ViewerEngine, theme: th.Theme, pick: PickFn, *, probe_model: str = "",
                 store: CalibrationStore | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        self.pick = pick
        self.store = store or CalibrationStore()
        self.points: list[TipPoint | None] = [None, None]
        self.calibration: Calibration | None = None
        self.setWindowTitle("Calibrate the image: two needle tips")
        self.setModal(False)
        theme.style_dialog(self)
        steps = QLabel("1. Insert the needle a little (5-10 mm) and hold it; pick its tip on the image.\n"
                       "2. Insert it at least 10 mm further and hold it; pick the tip again.\n"
                       "The probe's depth at each frame is paired with the click.")
        self.model = QLineEdit(probe_model)
        self.model.setPlaceholderText("e.g. L12-5 linear, 40 mm depth")
        self.pick_buttons = [QPushButton("Pick tip 1"), QPushButton("Pick tip 2")]
        self.point_labels = [QLabel("not picked"), QLabel("not picked")]
        form = QFormLayout()
        form.addRow("Probe model", self.model)
        for i in range(2):
            row = QHBoxLayout()
            row.addWidget(self.point_labels[i], 1)
            row.addWidget(self.pick_buttons[i])
            self.pick_buttons[i].clicked.connect(lambda _=False, k=i: self.start_pick(k))
            form.addRow(f"Tip {i + 1}", row)
        self.result_label = QLabel(" ")
        self.result_label.setWordWrap(True)
        self.save_button = QPushButton("Save and use")
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(self.save)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        buttons = theme.button_row(self.save_button, close)
        box = QVBoxLayout(self)
        box.addWidget(steps)
        box.addLayout(form)
        box.addWidget(self.result_label)
        box.addLayout(buttons)

    def start_pick(self, k: int) -> None:
        self.pick(f"Click the needle tip ({k + 1} of 2)",
                  lambda col, row, state, size: self.picked(k, col, row, state, size))

    def picked(self, k: int, col: float, row: float, state: NeedleState | None, size: tuple[int, int]) -> None:
        try:
            point = tip_point(col, row, state, size)
        except CalibrationError as e:
            self._show(str(e), th.RED_TEXT)
            return
        self.points[k] = point
        self.point_labels[k].setText(f"({col:.0f}, {row:.0f}) px at {point.depth_mm:.1f} mm")
        self._update()

    def _update(self) -> None:
        self.calibration = None
        self.save_button.setEnabled(False)
        a, b = self.points
        if a is None or b is None:
            self._show("pick the other tip", th.TEXT_DIM)
            return
        try:
            self.calibration = calibration_from([a, b], self.model.text() or "unnamed probe")
        except CalibrationError as e:
            self._show(f"Not usable: {e}", th.RED_TEXT)
            return
        c = self.calibration
        self._show(f"{c.mm_per_px[0]:.4f} mm/px, guide exit at ({c.exit_px[0]:.0f}, {c.exit_px[1]:.0f}) px, "
                   f"needle {'left to right' if c.lateral > 0 else 'right to left'}", th.GREEN)
        self.save_button.setEnabled(True)

    def save(self) -> None:
        a, b = self.points
        if a is None or b is None:
            return
        try:
            cal = calibration_from([a, b], self.model.text())
            self.store.save(cal)
        except (CalibrationError, OSError) as e:
            self._show(f"Not saved: {e}", th.RED_TEXT)
            return
        self.calibration = cal
        if self.engine.set_image_calibration(cal):
            self._show(f"Saved for {cal.probe_model} in {self.store.path} and in use.", th.GREEN)
        else:
            self._show(f"Saved for {cal.probe_model} in {self.store.path}; not in use yet: stop the recording and "
                       "choose it in the setup (U).", th.AMBER)

    def _show(self, text: str, colour: str) -> None:
        self.result_label.setStyleSheet(f"color: {colour};")
        self.result_label.setText(text)
