"""Setting up a procedure: guide detent, needle, image calibration, video latency, no-go depth.

Guide and needle come from lists (the clip's detents, the needle lengths sold) and are confirmed on the probe:
sent, read back, compared (``engine.confirm_procedure``). The image calibration is the frame source's own or one
stored for a probe model (``needletrack image calibrate``, or the two-click wizard, I). The no-go depth can be
typed or picked on the image (N). The dialog is not modal: the image stays live beside it, and a pick on it lands
in the dialog's no-go field.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from needletrack.geometry import Calibration, CalibrationError, CalibrationStore
from needletrack.viewer import theme as th
from needletrack.viewer.procedure import GUIDE_DETENTS_DEG, NEEDLE_LENGTHS_MM, Procedure
from needletrack.viewer.snapshot import Snapshot, ViewerEngine


@dataclass(frozen=True)
class CalibrationChoice:
    label: str
    calibration: Calibration | None
    usable: bool = True


def calibration_choices(source: Calibration | None, frame_size: tuple[int, int] | None,
                        store: CalibrationStore) -> list[CalibrationChoice]:
    """The frame source's own calibration, then every stored one; those made for another image size are listed
    but cannot be chosen (the needle would be drawn in the wrong place)."""
    out = []
    if source is not None:
        out.append(CalibrationChoice(f"the source's: {source.probe_model} ({source.method})", source))
    try:
        models = store.models()
    except CalibrationError:
        models = []
    for model in models:
        try:
            cal = store.load(model)
        except CalibrationError as e:
            out.append(CalibrationChoice(f"{model}: unreadable ({e})", None, usable=False))
            continue
        if source is not None and cal == source:
            continue
        fits = frame_size is None or cal.image_size == frame_size
        size = f"{cal.image_size[0]}x{cal.image_size[1]}"
        label = f"{model} ({cal.method}, {size})" if fits else f"{model}: for {size} images, not these"
        out.append(CalibrationChoice(label, cal, usable=fits))
    return out


def _pick_index(values: tuple[float, ...], wanted: float | None, default: float) -> int:
    target = default if wanted is None else wanted
    return min(range(len(values)), key=lambda i: abs(values[i] - target))


class SetupDialog(QDialog):
    """``pick_nogo``: starts a pick on the image whose depth is handed to :meth:`set_nogo_depth`."""

    def __init__(self, engine: ViewerEngine, theme: th.Theme, *, source_calibration: Calibration | None,
                 store: CalibrationStore | None = None, pick_nogo: Callable[[], None] | None = None,
                 measure_latency: Callable[[], None] | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        self.theme = theme
        self.source_calibration = source_calibration
        self.store = store or CalibrationStore()
        self.setWindowTitle("Set up the procedure")
        self.setModal(False)
        theme.style_dialog(self)
        self.guide = QComboBox()
        self.guide.addItems([f"{g:g}°" for g in GUIDE_DETENTS_DEG])
        self.needle = QComboBox()
        self.needle.addItems([f"{n:g} mm" for n in NEEDLE_LENGTHS_MM])
        self.image_cal = QComboBox()
        self.latency_ms = QDoubleSpinBox()
        self.latency_ms.setRange(0.0, 1000.0)
        self.latency_ms.setDecimals(1)
        self.latency_ms.setSuffix(" ms")
        self.nogo_on = QCheckBox("no-go depth")
        self.nogo_mm = QDoubleSpinBox()
        self.nogo_mm.setRange(1.0, 200.0)
        self.nogo_mm.setDecimals(1)
        self.nogo_mm.setSuffix(" mm")
        self.margin_mm = QDoubleSpinBox()
        self.margin_mm.setRange(0.0, 20.0)
        self.margin_mm.setDecimals(1)
        self.margin_mm.setSuffix(" mm before")
        self.nogo_on.toggled.connect(self._nogo_enabled)
        pick = QPushButton("Pick on image (N)")
        pick.setEnabled(pick_nogo is not None)
        if pick_nogo is not None:
            pick.clicked.connect(pick_nogo)
        measure = QPushButton("Measure… (L)")
        measure.setEnabled(measure_latency is not None)
        if measure_latency is not None:
            measure.clicked.connect(measure_latency)
        self.result_label = QLabel(" ")
        self.result_label.setWordWrap(True)
        self.confirm_button = QPushButton("Confirm on the probe")
        self.confirm_button.setDefault(True)
        self.confirm_button.clicked.connect(self.confirm)
        close = QPushButton("Close")
        close.clicked.connect(self.close)

        form = QFormLayout()
        form.addRow("Guide detent", self.guide)
        form.addRow("Needle length", self.needle)
        form.addRow("Image calibration", self.image_cal)
        latency_row = QHBoxLayout()
        latency_row.addWidget(self.latency_ms, 1)
        latency_row.addWidget(measure)
        form.addRow("Video latency", latency_row)
        nogo_row = QHBoxLayout()
        nogo_row.addWidget(self.nogo_mm, 1)
        nogo_row.addWidget(QLabel("warn"))
        nogo_row.addWidget(self.margin_mm, 1)
        nogo_row.addWidget(pick)
        form.addRow(self.nogo_on, nogo_row)
        buttons = theme.button_row(self.confirm_button, close)
        box = QVBoxLayout(self)
        box.addLayout(form)
        box.addWidget(self.result_label)
        box.addLayout(buttons)
        self._choices: list[CalibrationChoice] = []
        self._pending: list[tuple[str, Future[Any]]] = []
        self._errors: list[str] = []
        self._poll = QTimer(self)
        self._poll.setInterval(50)
        self._poll.timeout.connect(self._check_pending)

    # -- filling from what the viewer uses now
    def load(self, snap: Snapshot) -> None:
        setup = snap.setup
        shown = None if setup is None else (setup.wanted or setup.device)
        self.guide.setCurrentIndex(_pick_index(GUIDE_DETENTS_DEG, None if shown is None else shown.guide_angle_deg,
                                               30.0))
        self.needle.setCurrentIndex(_pick_index(NEEDLE_LENGTHS_MM,
                                                None if shown is None else shown.needle_length_mm, 50.0))
        size = None if snap.image is None else (int(snap.image.shape[1]), int(snap.image.shape[0]))
        self._choices = calibration_choices(self.source_calibration, size, self.store)
        self.image_cal.clear()
        current = 0
        for i, c in enumerate(self._choices):
            self.image_cal.addItem(c.label)
            if not c.usable:
                item = self.image_cal.model().item(i)  # type: ignore[attr-defined]
                item.setEnabled(False)
            if snap.calibration is not None and c.calibration == snap.calibration:
                current = i
        if not self._choices:
            self.image_cal.addItem("none stored: calibrate the image (I)")
        self.image_cal.setCurrentIndex(current)
        self.image_cal.setEnabled(snap.frame_source is not None and bool(self._choices))
        self.latency_ms.setValue(snap.video_latency_s * 1000.0)
        self.latency_ms.setEnabled(snap.frame_source is not None)
        self.nogo_on.setChecked(snap.nogo_depth_mm is not None)
        self.nogo_mm.setValue(snap.nogo_depth_mm if snap.nogo_depth_mm is not None else 20.0)
        self.margin_mm.setValue(snap.nogo_margin_mm)
        self._nogo_enabled(self.nogo_on.isChecked())
        self.result_label.setText(" ")

    def _nogo_enabled(self, on: bool) -> None:
        self.nogo_mm.setEnabled(on)
        self.margin_mm.setEnabled(on)

    def set_nogo_depth(self, depth_mm: float) -> None:
        self.nogo_on.setChecked(True)
        self.nogo_mm.setValue(depth_mm)

    def procedure(self) -> Procedure:
        return Procedure(GUIDE_DETENTS_DEG[self.guide.currentIndex()], NEEDLE_LENGTHS_MM[self.needle.currentIndex()])

    def chosen_calibration(self) -> CalibrationChoice | None:
        i = self.image_cal.currentIndex()
        return self._choices[i] if 0 <= i < len(self._choices) else None

    # -- applying
    def confirm(self) -> None:
        """Everything to the engine; the probe's answers show in the result line as they come."""
        snap = self.engine.snapshot()
        choice = self.chosen_calibration()
        if choice is not None and choice.usable and choice.calibration != snap.calibration:
            self.engine.set_image_calibration(choice.calibration)
        latency = self.latency_ms.value() / 1000.0
        if snap.frame_source is not None and abs(latency - snap.video_latency_s) > 1e-6:
            self.engine.set_video_latency(latency)
        self._errors = []
        self._pending = [("setup", self.engine.confirm_procedure(self.procedure()))]
        nogo = self.nogo_mm.value() if self.nogo_on.isChecked() else None
        if nogo != snap.nogo_depth_mm or abs(self.margin_mm.value() - snap.nogo_margin_mm) > 1e-6:
            self._pending.append(("no-go depth", self.engine.set_nogo(nogo, self.margin_mm.value())))
        self.confirm_button.setEnabled(False)
        self._show("sending to the probe…", th.TEXT_DIM)
        self._poll.start()

    def _check_pending(self) -> None:
        still = []
        for what, future in self._pending:
            if not future.done():
                still.append((what, future))
                continue
            e = future.exception()
            if e is not None:
                self._errors.append(f"{what}: {e}")
        self._pending = still
        if still:
            return
        self._poll.stop()
        self.confirm_button.setEnabled(True)
        if self._errors:
            self._show("Not confirmed. " + "  ".join(self._errors), th.RED_TEXT)
            return
        setup = self.engine.snapshot().setup
        if setup is not None and setup.problem:
            self._show(f"Not confirmed: {setup.problem}", th.RED_TEXT)
        else:
            self._show(f"Confirmed by the probe: {self.procedure().describe()}", th.GREEN)

    @property
    def busy(self) -> bool:
        return bool(self._pending)

    def _show(self, text: str, colour: str) -> None:
        self.result_label.setStyleSheet(f"color: {colour};")
        self.result_label.setText(text)
