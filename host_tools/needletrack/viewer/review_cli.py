"""`needletrack review [DIR]`: a recorded session played back in the review window (docs/session-review.md)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("review")
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@click.option("--fullscreen", is_flag=True, help="Start in full screen.")
def review_command(directory: Path | None, fullscreen: bool) -> None:
    """Review a recording: the fused image, the readouts, the charts and the events, played back in step.

    DIRECTORY: a recording (samples.csv, events.csv, session.json, and fused.mp4 with ultrasound.seq.mha when
    frames were fused); without it, a dialog asks for one.
    """
    from needletrack.viewer.app import application
    from needletrack.viewer.review_data import ReviewError, load_review
    from needletrack.viewer.review_window import ReviewWindow, choose_recording

    review = None
    if directory is not None:
        # Refused before any window opens, with the reason.
        try:
            review = load_review(directory)
        except ReviewError as e:
            raise click.ClickException(str(e)) from None
    app = application()
    if review is None:
        chosen = choose_recording(None)
        if chosen is None:
            return
        try:
            review = load_review(chosen)
        except ReviewError as e:
            raise click.ClickException(str(e)) from None
    window = ReviewWindow(review)
    if fullscreen:
        window.showFullScreen()
    else:
        window.showMaximized()
    raise SystemExit(app.exec())
