"""The `needletrack` command line."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.table import Table

from needletrack import __version__, protocol

console = Console()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="needletrack")
def main() -> None:
    """NeedleTrack host tools: needle angle and depth from the clip-on accessory, fused with ultrasound."""


@main.group("protocol")
def protocol_group() -> None:
    """Inspect protocol v1 bytes (docs/protocol.md)."""


@protocol_group.command("decode")
@click.argument("hex_values", nargs=-1, required=True)
@click.option("--record", is_flag=True, help="Decode status-characteristic records instead of samples.")
def protocol_decode(hex_values: tuple[str, ...], record: bool) -> None:
    """Decode measurement notifications (or status records) given as hex strings."""
    failed = False
    for text in hex_values:
        try:
            data = bytes.fromhex(text)
            if record:
                console.print(protocol.decode_record(data))
            else:
                _print_samples(protocol.decode_notification(data))
        except ValueError as e:  # ProtocolError, and hex that is not hex
            console.print(f"[bold red]{text[:48]}: {e}[/]")
            failed = True
    if failed:
        sys.exit(1)


def _fmt(v: float | None, unit: str) -> str:
    return "NA" if v is None else f"{v:.2f} {unit}"


def _print_samples(samples: list[protocol.Sample]) -> None:
    table = Table("seq", "device time", "needle", "guide", "depth", "tip depth", "pitch", "roll", "flags")
    for s in samples:
        table.add_row(str(s.seq), f"{s.device_time_us} us", _fmt(s.needle_angle_deg, "deg"),
                      _fmt(s.guide_angle_deg, "deg"), _fmt(s.depth_mm, "mm"), _fmt(s.tip_depth_mm, "mm"),
                      _fmt(s.pitch_deg, "deg"), _fmt(s.roll_deg, "deg"), " ".join(s.flag_names))
    console.print(table)


if __name__ == "__main__":
    main()
