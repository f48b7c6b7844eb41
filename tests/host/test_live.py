"""scan, stream and record against the virtual probe, over its radio and over its serial console."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from needletrack import recording
from needletrack.cli import main
from needletrack.link.base import Notification
from needletrack.protocol import SAMPLE_SIZE
from needletrack.receiver import Receiver


def test_scan_finds_the_probe(served_probe):
    res = CliRunner().invoke(main, ["scan", "-t", served_probe.transport, "--timeout", "2"])
    assert res.exit_code == 0, res.output
    assert "NeedleTrack-" in res.output


@pytest.mark.parametrize("way", ["radio", "console"])
def test_record_writes_a_complete_gapless_session(served_probe, tmp_path, way):
    transport = served_probe.transport if way == "radio" else "console:" + served_probe.serial
    out = tmp_path / "rec"
    res = CliRunner().invoke(main, ["record", "-t", transport, str(out), "--seconds", "2"])
    assert res.exit_code == 0, res.output
    rec = recording.load(out)
    assert rec.session["complete"] is True
    seq = rec.samples["seq"].astype(int)
    assert len(seq) > 250
    assert np.all(np.diff(seq) % 65536 == 1)
    host = rec.samples["host_time_s"]
    assert np.all(np.diff(host) > 0)
    # Host times follow the device's sample clock, not the bursty arrivals (several samples per notification):
    # nearly every step between samples is the device's own step.
    dev = rec.samples["device_time_s"]
    same_step = np.abs(np.diff(host) - np.diff(dev)) < 0.0005
    assert same_step[len(same_step) // 2:].mean() > 0.95  # once the mapping has its first windows


def test_stream_shows_the_needle(served_probe):
    res = CliRunner().invoke(main, ["stream", "-t", served_probe.transport, "--seconds", "1"])
    assert res.exit_code == 0, res.output
    assert "needle angle" in res.output and "samples" in res.output
    assert "device loop" in res.output and "IMU FIFO overruns since boot" in res.output


def test_an_unknown_transport_is_a_clear_error():
    res = CliRunner().invoke(main, ["stream", "-t", "console:/dev/no-such-port", "--seconds", "1"])
    assert res.exit_code != 0
    assert "cannot open" in res.output


def _note(t, *samples):
    import struct

    return Notification(t, b"".join(struct.pack("<HIhhhhhhH", seq, tick, 100, 3000, 500, 250, 0, 0, 0x1000)
                                    for seq, tick in samples))


def test_receiver_counts_losses_and_rejects_malformed_notifications():
    rx = Receiver()
    assert len(rx.feed(_note(10.0, (1, 1000), (2, 6000)))) == 2
    assert rx.feed(Notification(10.1, b"\x00" * (SAMPLE_SIZE - 1))) == []
    got = rx.feed(_note(10.2, (5, 21000)))
    assert rx.lost == 2 and rx.malformed == 1 and rx.samples == 3
    assert got[0].device_s == pytest.approx(0.021)
    assert got[0].host_s - got[0].device_s == pytest.approx(10.0 - 0.001, abs=0.2)


def test_device_commands_over_ble_answer_and_refuse(served_probe):
    t = served_probe.transport
    runner = CliRunner()
    res = runner.invoke(main, ["device", "command", "set-guide-angle", "40", "-t", t])
    assert res.exit_code == 0 and "OK" in res.output, res.output
    res = runner.invoke(main, ["device", "command", "set-rate", "5", "-t", t])
    assert res.exit_code == 1 and "OUT_OF_RANGE" in res.output, res.output
    res = runner.invoke(main, ["device", "command", "set-nogo", "none", "0", "-t", t])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["device", "config", "-t", t])
    assert res.exit_code == 0, res.output
    assert "guide angle deg" in res.output and "40.0" in res.output
    assert "RUNNING" in res.output or "CALIBRATING" in res.output
    res = runner.invoke(main, ["device", "command", "set-nogo", "deep", "1", "-t", t])
    assert res.exit_code != 0 and "not a number" in res.output


def test_record_with_frames_writes_the_fused_video_and_the_sequence_and_serves_openigtlink(served_probe, tmp_path):
    import json
    import socket
    import subprocess
    import sys
    import threading
    from pathlib import Path

    import cv2
    import SimpleITK as sitk

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client_out: list[str] = []

    def client() -> None:
        # stdin stays open: the client takes commands there and ends at its end
        with subprocess.Popen([sys.executable, str(Path(__file__).with_name("igtl_client.py")), "127.0.0.1",
                               str(port), "5"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
            assert proc.stdout is not None
            client_out.extend(proc.stdout.read().splitlines())

    out = tmp_path / "fused"
    threading.Timer(1.0, client).start()  # connects once the server is up; retries until then
    res = CliRunner().invoke(main, ["record", "-t", served_probe.transport, str(out), "--seconds", "4",
                                    "--frames", "synthetic:dry_needling", "--nogo", "17", "--igtl-port", str(port)])
    assert res.exit_code == 0, res.output
    video = cv2.VideoCapture(str(out / "fused.mp4"))
    n = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
    assert n >= 3 * 25
    seq = sitk.ReadImage(str(out / "ultrasound.seq.mha"))
    assert seq.GetSize()[2] == n
    rec = recording.load(out)
    assert rec.session["frames_fused"] == n and rec.session["complete"] is True
    for _ in range(100):  # the client ends 5 s after it started
        if client_out:
            break
        threading.Event().wait(0.1)
    got = [json.loads(line) for line in client_out]
    kinds = {(m.get("type"), m.get("name")) for m in got if "type" in m}
    assert {("IMAGE", "Image"), ("STRING", "NeedleStatus"), ("TRANSFORM", "NeedleTipToProbe")} <= kinds, kinds


def test_frames_without_an_image_calibration_are_refused_before_the_probe_is_touched(tmp_path):
    video = tmp_path / "clip.avi"
    import cv2

    w = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 10, (64, 48))
    for _ in range(3):
        w.write(np.zeros((48, 64, 3), np.uint8))
    w.release()
    res = CliRunner().invoke(main, ["record", "-t", "tcp-client:127.0.0.1:9", str(tmp_path / "r"),
                                    "--frames", f"video:{video}"])
    assert res.exit_code != 0
    assert "calibrat" in res.output and not (tmp_path / "r").exists()


def test_calibrate_latency_refuses_frames_that_do_not_show_the_probes_needle(served_probe, tmp_path):
    # Synthetic frames of another session than the probe's: the needle moves, but not as the probe's does. The
    # calibration must say so, not print a lag.
    png = tmp_path / "latency.png"
    res = CliRunner().invoke(main, ["calibrate", "latency", "-t", served_probe.transport, "--frames",
                                    "synthetic:dry_needling", "--seconds", "3", "--plot", str(png)])
    assert res.exit_code == 1, res.output
    assert "no latency:" in res.output and "video latency" not in res.output
