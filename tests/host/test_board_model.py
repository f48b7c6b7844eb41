"""What the virtual probe charges a firmware, end to end: the board's CPU, bus and heap, per board, as `sim run`
reports them ("device_load"), and a firmware tree of one's own run with --firmware as the flasher deploys it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from needletrack import paths, recording
from needletrack.cli import main
from needletrack.sim import boards, runner, scenario

KERNEL = paths.VIRTUAL_BOARD / "kernel.py"
RP2040 = json.loads((paths.VIRTUAL_BOARD / "kernel-rp2040.json").read_text())[0]["us"]

SHORT = {
    "name": "short_still",
    "duration_s": 3.0,
    "seed": 3,
    "guide_angle_deg": 30.0,
    "needle_length_mm": 60.0,
    "attitude": [[0, 0, 0, 0], [3, 0, 0, 0]],
    "depth": [[0, 20.0], [3, 20.0]],
}


def _kernel_firmware(tmp_path: Path) -> Path:
    # A firmware of one's own: it times the fixed kernel with the device's clock and prints what it took.
    fw = tmp_path / "fw"
    fw.mkdir()
    shutil.copyfile(KERNEL, fw / "kernel.py")
    (fw / "boot.py").write_text("")
    (fw / "device.py").write_text('VERSION = "0.0.1"\n')
    # It first runs 20 s of device time, so the probe's scale has followed this machine's speed of the moment,
    # then the kernel seven times: the median of each part.
    (fw / "main.py").write_text(
        "import sys, time\nsys.path.insert(0, '/app-a')\nimport kernel\n"
        "print('NeedleTrack kernel')\n"
        "while time.ticks_ms() < 20000:\n    kernel._call(100)\n"
        "runs = [kernel.run() for _ in range(7)]\n"
        "med = {k: sorted(r[k] for r in runs)[3] for k in runs[0]}\n"
        "print('KERNEL ' + repr(med).replace(\"'\", '\"'))\n")
    return fw


@pytest.mark.parametrize("board", ["pico_w", "xiao_esp32s3"])
def test_the_device_clock_times_the_kernel_as_the_board_would(board, tmp_path):
    # The kernel's "call" part is the scale's own yardstick: on the device's clock it takes what it took on an
    # RP2040 (kernel-rp2040.json), divided by the board's factor; the other parts show how far the one scale
    # carries to other code (viper scales apart). This machine's speed changes from one millisecond to the next
    # when the other core is busy, faster than the probe's scale follows it: hence the width of the bounds, which
    # still tell one board from the other (2.4x) and a charged loop from a free one.
    summary = runner.run(scenario.parse({**SHORT, "duration_s": 60.0}), tmp_path / "work", board=board,
                         cpu="board", firmware=_kernel_firmware(tmp_path))
    line = next(x for x in summary.log if x.startswith("KERNEL "))
    device_us = json.loads(line[len("KERNEL "):])
    factor = boards.profile(board).cpu_vs_rp2040
    assert device_us["call"] == pytest.approx(RP2040["call"] * factor, rel=0.4)
    for part in ("py", "pack"):
        assert device_us[part] == pytest.approx(RP2040[part] * factor, rel=0.5), part
    assert summary.device_load["board"] == board and summary.device_load["cpu"] == "board"
    # Deployed as `needletrack flash` deploys it: .mpy in a slot, the sources only at the root.
    flash = tmp_path / "work" / "flash"
    assert (flash / "nt_app").read_text() == "app-a"
    assert (flash / "app-a" / "kernel.mpy").is_file() and not (flash / "app-a" / "kernel.py").exists()


def test_ideal_compute_charges_nothing(tmp_path):
    summary = runner.run(scenario.parse(SHORT), tmp_path / "work", board="pico_w", cpu="ideal")
    load = summary.device_load
    assert load["cpu"] == "ideal" and load["cpu_fraction"] == 0 and load["bus_fraction"] == 0
    assert load["fifo_overruns"] == 0 and load["imu_samples_processed_fraction"] == 1.0
    assert summary.samples / summary.last_device_s == pytest.approx(200, rel=0.01)


def test_board_load_is_reported_and_consistent(tmp_path):
    # Whatever the firmware's speed, the report adds up: what was busy fits in the device's time, samples the
    # FIFO lost are missing from what it processed, and the recording keeps the report.
    summary = runner.run(scenario.parse(SHORT), tmp_path / "work", board="pico_w", cpu="board",
                         record=tmp_path / "rec")
    load = summary.device_load
    assert load["board"] == "pico_w"
    assert load["cpu_busy_fraction"] > 0 and load["cpu_busy_fraction"] + load["bus_fraction"] <= 1.01
    assert load["cpu_fraction"] == pytest.approx(load["cpu_busy_fraction"] / load["imu_samples_processed_fraction"])
    produced = load["device_s"] * 833.375
    lost = load["imu_samples_lost"]
    assert load["imu_samples_processed_fraction"] <= 1 - lost / produced + 0.02
    assert (lost > 0) == (load["fifo_overruns"] > 0)
    assert 0 < load["heap_free_min_bytes"] <= boards.profile("pico_w").heap_free_bytes
    assert recording.load(tmp_path / "rec").session["device_load"] == load


def test_cli_takes_board_cpu_and_firmware(tmp_path):
    res = CliRunner().invoke(main, ["sim", "run", "still_probe", "--board", "pico_w", "--cpu", "ideal",
                                    "--workdir", str(tmp_path / "w")])
    assert res.exit_code == 0, res.output
    assert "device load on pico_w (cpu ideal)" in res.output
    session = json.loads((tmp_path / "w" / "session.json").read_text())
    assert session["board"] == "pico_w" and session["board_profile"]["stack"] == "btstack"
    res = CliRunner().invoke(main, ["sim", "run", "still_probe", "--board", "nano"])
    assert res.exit_code != 0 and "nano" in res.output


def test_a_probe_reports_its_own_load_as_the_board_charges_it(tmp_path):
    # A served probe as a Pico W, its costs charged: the firmware's own measure of its loop (STATUS loop_load,
    # what a real board reports) shows a loop with no headroom, and `needletrack stream` shows it.
    from needletrack.sim import serve

    with serve.served(scenario.parse({**SHORT, "duration_s": 30.0}), tmp_path / "probe", board="pico_w",
                      cpu="board") as probe:
        res = CliRunner().invoke(main, ["stream", "-t", probe.transport, "--seconds", "5"])
    assert res.exit_code == 0, res.output
    row = next(line for line in res.output.splitlines() if "device loop" in line)
    load = int(row.split("device loop")[1].strip(" │|").split("%")[0])
    assert load >= 80, row


def test_a_firmware_that_stops_at_boot_on_a_board_says_so(tmp_path):
    # The rp2 port has only the soft timer, -1: a firmware that takes hardware timer 0 stops at boot on a Pico W
    # (and not on an ESP32-S3), and the engineer checking that build is told so in one line, before the
    # device's own output.
    fw = tmp_path / "fw"
    shutil.copytree(paths.firmware_dir(), fw)
    app = fw / "app.py"
    app.write_text(app.read_text().replace("def main():\n", "def main():\n    machine.Timer(0)\n", 1)
                   .replace("import log\n", "import log\nimport machine\n", 1))
    args = ["sim", "run", "still_probe", "--cpu", "ideal", "--firmware", str(fw), "--workdir", str(tmp_path / "w")]
    res = CliRunner().invoke(main, [*args, "--board", "pico_w"])
    assert res.exit_code != 0
    assert "the firmware stopped at boot on pico_w: ValueError: Timer doesn't exist" in res.output
    assert CliRunner().invoke(main, [*args, "--board", "xiao_esp32s3"]).exit_code == 0
    assert "Traceback" not in res.output.splitlines()[1]
