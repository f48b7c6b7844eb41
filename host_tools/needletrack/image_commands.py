"""`needletrack image ...`: frame sources, image calibration and the overlay, from the command line.

The group is added to the main command with ``main.add_command(image_commands.image_group)``.
"""

from __future__ import annotations

import math
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from needletrack import geometry
from needletrack.frames.base import FrameSourceError
from needletrack.geometry import Calibration, CalibrationError, CalibrationStore

console = Console()
STORE_OPTION = click.option("--store", "store_path", type=click.Path(path_type=Path), default=None,
                            help="Calibration store (default: the user's configuration directory).")


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected WIDTHxHEIGHT, e.g. 640x480") from None
    return w, h


def _point(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected COL,ROW in pixels, e.g. 212.5,140") from None
    return x, y


def _print_calibration(cal: Calibration, store: CalibrationStore | None = None) -> None:
    table = Table("probe model", "image", "guide exit px", "face row", "mm/px", "lateral", "method")
    table.add_row(cal.probe_model, f"{cal.image_size[0]}x{cal.image_size[1]}",
                  f"{cal.exit_px[0]:.1f}, {cal.exit_px[1]:.1f}", f"{cal.face_row:.1f}",
                  f"{cal.mm_per_px[0]:.4f} x {cal.mm_per_px[1]:.4f}", f"{cal.lateral:+d}", cal.method)
    console.print(table)
    if store is not None:
        console.print(f"saved in {store.path}")


@click.group("image")
def image_group() -> None:
    """Ultrasound frames: sources, image calibration, overlay."""


@image_group.command("info")
@click.argument("source")
@click.option("--probe-model", default=None, help="Use this probe model's stored image calibration.")
@STORE_OPTION
@click.option("--frames", "count", default=5, show_default=True, help="How many frames to list.")
def image_info(source: str, probe_model: str | None, store_path: Path | None, count: int) -> None:
    """What a frame source delivers: size, spacing, region, frame times.

    SOURCE: dicom:PATH, video:PATH, capture:N, igtl:HOST:PORT[/DEVICE], synthetic:SCENARIO, or a file path."""
    from needletrack.frames import open_source

    try:
        cal = CalibrationStore(store_path).load(probe_model) if probe_model else None
        src = open_source(source, calibration=cal)
        with src:
            length = "live" if src.frame_count is None else f"{src.frame_count} frames"
            console.print(f"[bold]{src.name}[/]: {length}")
            table = Table("frame", "time s", "size", "mm/px", "region")
            for frame in src:
                r = frame.region
                table.add_row(str(frame.index), f"{frame.time_s:.4f}", f"{frame.size[0]}x{frame.size[1]}",
                              "not calibrated" if frame.mm_per_px is None else
                              f"{frame.mm_per_px[0]:.4f} x {frame.mm_per_px[1]:.4f}",
                              "" if r is None else f"({r.x0},{r.y0})-({r.x1},{r.y1})")
                if frame.index + 1 >= count:
                    break
            console.print(table)
    except (FrameSourceError, CalibrationError) as e:
        raise click.ClickException(str(e)) from None


@image_group.command("calibrate")
@click.argument("probe_model")
@click.option("--size", "size_text", required=True, help="Size of the image clicked on, e.g. 1280x720.")
@click.option("--point", "points", type=(str, float), multiple=True, required=True,
              help="A needle tip as COL,ROW and the insertion depth the device read there (mm). Give two.")
@click.option("--guide-angle", type=float, required=True, help="The guide detent in use, deg.")
@click.option("--face-row", type=float, default=None, help="Transducer face row (default: the exit's).")
@STORE_OPTION
def image_calibrate(probe_model: str, size_text: str, points: tuple[tuple[str, float], ...],
                    guide_angle: float, face_row: float | None, store_path: Path | None) -> None:
    """Calibrate images without DICOM regions from two needle tips at two known depths, and store it."""
    if len(points) != 2:
        raise click.UsageError("give exactly two --point COL,ROW DEPTH_MM")
    (p1, d1), (p2, d2) = ((_point(p), d) for p, d in points)
    try:
        size = _size(size_text)
        cal = geometry.from_two_points(p1, d1, p2, d2, guide_angle_deg=guide_angle, image_size=size,
                                       probe_model=probe_model, face_row=face_row)
        store = CalibrationStore(store_path)
        store.save(cal)
    except CalibrationError as e:
        raise click.ClickException(str(e)) from None
    _print_calibration(cal, store)


@image_group.command("calibrate-dicom")
@click.argument("probe_model")
@click.argument("dicom_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--region", "region_index", default=0, show_default=True, help="Which 2D region of the file.")
@click.option("--exit-offset", type=(float, float), default=(0.0, 0.0), show_default=True,
              help="The guide exit beyond the array's end and below the face, mm.")
@click.option("--mirrored", is_flag=True, help="The guide is on the image's right-hand side.")
@STORE_OPTION
def image_calibrate_dicom(probe_model: str, dicom_file: Path, region_index: int,
                          exit_offset: tuple[float, float], mirrored: bool, store_path: Path | None) -> None:
    """Calibrate from a DICOM's Sequence of Ultrasound Regions, and store it."""
    from needletrack.frames.dicom import DicomSource

    try:
        src = DicomSource(dicom_file, region_index=region_index, frame_time_s=1.0)
        assert src.region is not None
        cal = geometry.from_region(src.region, probe_model=probe_model, image_size=src.size,
                                   lateral=-1 if mirrored else 1, exit_offset_mm=exit_offset)
        store = CalibrationStore(store_path)
        store.save(cal)
    except (FrameSourceError, CalibrationError) as e:
        raise click.ClickException(str(e)) from None
    _print_calibration(cal, store)


@image_group.command("calibrations")
@STORE_OPTION
def image_calibrations(store_path: Path | None) -> None:
    """The stored image calibrations."""
    store = CalibrationStore(store_path)
    try:
        models = store.models()
        if not models:
            console.print(f"no image calibrations in {store.path}")
        for model in models:
            _print_calibration(store.load(model))
    except CalibrationError as e:
        raise click.ClickException(str(e)) from None


@image_group.command("overlay")
@click.argument("source")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--probe-model", default=None, help="Stored calibration (synthetic sources have their own).")
@STORE_OPTION
@click.option("--every", default=1, show_default=True, help="Keep one frame in N.")
@click.option("--max-frames", default=50, show_default=True)
@click.option("--depth", type=float, default=20.0, show_default=True,
              help="Needle depth to draw (sources without truth).")
@click.option("--guide-angle", type=float, default=45.0, show_default=True)
@click.option("--nogo", type=float, default=None, help="No-go tip depth, mm.")
def image_overlay(source: str, out: Path, probe_model: str | None, store_path: Path | None, every: int,
                  max_frames: int, depth: float, guide_angle: float, nogo: float | None) -> None:
    """Overlay PNGs of a source's frames: the scenario's true needle for synthetic sources, else a fixed
    one."""
    import cv2

    from needletrack import overlay
    from needletrack.frames import open_source
    from needletrack.frames.synthetic import SyntheticSource
    from needletrack.needle_state import NeedleState

    try:
        cal = CalibrationStore(store_path).load(probe_model) if probe_model else None
        src = open_source(source, calibration=cal)
    except (FrameSourceError, CalibrationError) as e:
        raise click.ClickException(str(e)) from None
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    with src:
        for frame in src:
            if frame.index % every:
                continue
            if isinstance(src, SyntheticSource):
                cal = src.calibration
                t = src.truth(frame.index)
                d, g = t.depth_mm, t.guide_angle_deg
                nogo_mm = nogo if nogo is not None else src.scenario.nogo_depth_mm
            else:
                if cal is None and frame.region is not None:
                    cal = geometry.from_region(frame.region, probe_model="(from the file)",
                                               image_size=frame.size)
                d, g, nogo_mm = depth, guide_angle, nogo
            tip = d * math.sin(math.radians(g)) + (cal.exit_depth_mm if cal else 0.0)
            state = NeedleState(d, tip, g, g, nogo_depth_mm=nogo_mm)
            path = out / f"frame_{frame.index:05d}.png"
            cv2.imwrite(str(path), overlay.draw(frame.image, cal, state))
            written += 1
            if written >= max_frames:
                break
    console.print(f"{written} frames written to {out}")
