"""What the firmware costs each board, measured by the virtual probe with the board's CPU, bus and flash charged.

For each firmware (this checkout's, and with --before REV the firmware of an earlier revision, taken from git)
and each board: does it boot, and at each output rate the CPU it needs per second of sensor data (over 1: it
cannot keep up), the share of device time busy computing and on the I2C bus, FIFO overruns, the IMU samples it
processed, its lowest free heap. Then the sampling loop alone, scaled to the RP2040 beside the figures the RP2040
emulator measured for it (shared/mcu/README.md), per IMU sample and per part (board_loop_mpy.py). Last, the check
that `--cpu ideal` is the probe as it was before the board model: the revision's own virtual probe and today's,
both with compute free, give byte-identical samples.

    python bench/bench_board_load.py [--before 1e5177a] [--seconds 20] [--rates 200,1000]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from needletrack import paths
from needletrack.sim import runner, scenario

REPO = Path(__file__).resolve().parents[1]
console = Console(width=170)


def export(rev: str, dest: Path) -> Path:
    """The tree of revision rev (firmware/ and host_tools/) into dest."""
    dest.mkdir(parents=True, exist_ok=True)
    tar = subprocess.run(["git", "-C", str(REPO), "archive", rev, "firmware", "host_tools"], check=True,
                         capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
    return dest


def scenario_for(seconds: float) -> scenario.Scenario:
    sc = scenario.load("dry_needling")
    return dataclasses.replace(sc, duration_s=min(seconds, sc.duration_s))


def load_row(label: str, board: str, rate: int, sc: scenario.Scenario, work: Path, firmware: Path | None) -> list[str]:
    try:
        s = runner.run(sc, work, board=board, cpu="board", rate_hz=rate, firmware=firmware)
    except runner.VirtualProbeError as e:
        last = [x for x in str(e).splitlines() if x.strip()][-1]
        return [label, board, str(rate), "[red]stops at boot[/]", last, "", "", "", "", ""]
    d = s.device_load
    need = d["cpu_fraction"]
    style = "red" if need + d["bus_fraction"] >= 1 else ("yellow" if need + d["bus_fraction"] > 0.5 else "green")
    return [label, board, str(rate), "boots", f"[{style}]{need:.2f}[/]", f"{d['cpu_busy_fraction']:.2f}",
            f"{d['bus_fraction']:.2f}", str(d["fifo_overruns"]), f"{d['imu_samples_processed_fraction'] * 100:.0f} %",
            f"{d['heap_free_min_bytes']:,}"]


# What the RP2040 emulator measured for the firmware at 1e5177a (shared/mcu/README.md), us on an RP2040 at 125 MHz
RP2040_LOOP_PER_IMU_SAMPLE = "1343-1495"
RP2040_PARTS = {"Attitude.update": "34", "needle_angle_mdeg": "163-211", "pitch_mdeg": "142", "roll_mdeg": "120",
                "DepthEstimator.update": "424", "packet.pack_sample": "92"}


def loop_figures(board: str) -> dict:
    """bench/board_loop_mpy.py on this machine's MicroPython: the loop and its parts, scaled to the RP2040."""
    import json

    env = dict(os.environ, MICROPYPATH=str(paths.VIRTUAL_BOARD))
    out = subprocess.run([paths.micropython(), "-X", "heapsize=4M", str(REPO / "bench" / "board_loop_mpy.py"),
                          str(REPO), board], env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("{")))


def loop_tables() -> None:
    figs = {board: loop_figures(board) for board in ("pico_w", "xiao_esp32s3")}
    t = Table("per IMU sample (833 Hz), RP2040 us", *figs, "RP2040 emulator",
              title="The sampling loop on an RP2040 at 125 MHz, scaled from this machine (compute only)")
    for key, label in (("loop", "sampling loop alone"), ("device", "with its links and feedback")):
        cells = [f"{figs[b]['per_imu_sample_us'][key]:.0f} ({figs[b]['per_imu_sample_us'][key] / 1200:.2f} s/s)"
                 for b in figs]
        t.add_row(label, *cells, f"{RP2040_LOOP_PER_IMU_SAMPLE} (1.12-1.25 s/s)" if key == "loop" else "")
    console.print(t)
    parts = Table("part, per call", "scaled, us", "RP2040 emulator, us", title="Parts")
    for name, ref in RP2040_PARTS.items():
        parts.add_row(name, f"{figs['pico_w']['per_call_us'][name]:.0f}", ref)
    console.print(parts)


def ideal_matches(before: Path, work: Path) -> tuple[bool, str]:
    """The revision's own probe and today's with --cpu ideal, on the revision's firmware: the same samples?"""
    sc_name = "still_probe"
    old = work / "old"
    code = ("import sys; from pathlib import Path; from needletrack.sim import runner, scenario; "
            f"runner.run(scenario.load({sc_name!r}), Path(sys.argv[1]), record=Path(sys.argv[2]))")
    env = dict(os.environ, PYTHONPATH=str(before / "host_tools"))
    subprocess.run([sys.executable, "-c", code, str(old / "work"), str(old / "rec")], env=env, check=True,
                   capture_output=True)
    runner.run(scenario.load(sc_name), work / "new" / "work", record=work / "new" / "rec", cpu="ideal",
               firmware=before / "firmware")
    a = (old / "rec" / "samples.csv").read_bytes()
    b = (work / "new" / "rec" / "samples.csv").read_bytes()
    return a == b, f"{len(a.splitlines()) - 1} samples"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default="1e5177a", help="an earlier revision to measure too ('' for none)")
    ap.add_argument("--seconds", type=float, default=20.0, help="device seconds per run")
    ap.add_argument("--rates", default="200,1000", help="output rates, samples/s")
    args = ap.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    sc = scenario_for(args.seconds)
    with tempfile.TemporaryDirectory(prefix="nt-board-load-") as tmp:
        work = Path(tmp)
        firmwares: list[tuple[str, Path | None]] = [("this checkout", None)]
        before = None
        if args.before:
            before = export(args.before, work / "before")
            firmwares.insert(0, (f"firmware at {args.before}", before / "firmware"))
        table = Table("firmware", "board", "rate/s", "boot", "CPU needed s/s", "CPU busy", "I2C busy", "overruns",
                      "IMU processed", "free heap min B",
                      title=f"Firmware load on each board ({args.seconds:g} s of dry_needling per row, cpu board)")
        with console.status("running the virtual probe") as status:
            for label, fw in firmwares:
                for board in ("pico_w", "xiao_esp32s3"):
                    for rate in rates:
                        status.update(f"{label} on {board} at {rate}/s")
                        table.add_row(*load_row(label, board, rate, sc, work / f"{board}-{rate}", fw))
        console.print(table)
        console.print("CPU needed: CPU seconds per second of sensor data processed (over 1, the board cannot keep "
                      "up); busy: share of device time. Compute is scaled from this machine by kernel.py's 'call' "
                      "part against its RP2040 figures (ESP32-S3: RP2040 / 2.4, an assumption).")
        with console.status("the sampling loop alone"):
            loop_tables()
        if before is not None:
            same, what = ideal_matches(before, work / "ideal")
            verdict = "[green]byte-identical[/]" if same else "[red]DIFFERENT[/]"
            console.print(f"--cpu ideal vs the virtual probe at {args.before} (still_probe, {what}): {verdict}")


if __name__ == "__main__":
    main()
