"""The virtual probe's serial console, driven by the real, stock mpremote as on a board's USB serial line."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from needletrack.link.serial_lines import parse_line
from needletrack.sim import scenario, serve
from needletrack.sim.console import Console, ConsoleError

MPREMOTE = Path(sys.executable).with_name("mpremote")
SENSOR_ADDRESSES = [0x22, 0x35, 0x6A]  # TMAG5273 B1, TMAG5273 A1, LSM6DSOX on the board's bus
SCENARIO = {
    "name": "console",
    "duration_s": 1.0,  # short: the console outlives it, the scenario repeats
    "seed": 3,
    "guide_angle_deg": 30.0,
    "needle_length_mm": 60.0,
    "attitude": [[0, 0, 0, 0], [1, 0, 5, 0]],
    "depth": [[0, 10.0], [1, 30.0]],
}

pytestmark = pytest.mark.skipif(not MPREMOTE.exists(), reason="mpremote is not installed beside this Python")


def _session(work: Path) -> Path:
    # The firmware as a plain copy of source files (what `ls` below expects to find), compute free: these check
    # the serial console, not what the board charges (tests/host/test_board_model.py).
    session, fresh = serve.prepare(scenario.parse(SCENARIO), work, cpu="ideal")
    assert fresh
    return session


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    work = tmp_path_factory.mktemp("console")
    con = Console(work, _session(work))
    con.start()
    yield con, work / "flash"
    con.stop()


def mpremote(con: Console, *args: str, timeout: float = 20) -> str:
    res = subprocess.run([str(MPREMOTE), "connect", str(con.path), *args], capture_output=True,
                         timeout=timeout)
    out = res.stdout.decode(errors="replace")
    assert res.returncode == 0, f"mpremote {' '.join(args)}: {out}\n{res.stderr.decode(errors='replace')}"
    return out


class Line:
    """The console as a terminal program sees it (opened like a serial port: raw bytes)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.seen = b""

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def expect(self, pattern: bytes, timeout: float = 10) -> bytes:
        end = time.monotonic() + timeout
        start = len(self.seen)
        while pattern not in self.seen[start:]:
            left = end - time.monotonic()
            assert left > 0, f"no {pattern!r} in {timeout} s; the line showed:\n{self.seen[start:][-1500:]!r}"
            if select.select([self.fd], [], [], min(left, 0.1))[0]:
                self.seen += os.read(self.fd, 65536)
        return self.seen[start:]

    def drain(self) -> None:
        # Forget what is waiting (its arrival time says nothing about when it was sent).
        while select.select([self.fd], [], [], 0)[0]:
            os.read(self.fd, 65536)

    def close(self) -> None:
        os.close(self.fd)


def _friendly_prompt(line: Line) -> None:
    # Whatever runs, stop it (Ctrl-C) and leave the raw REPL (Ctrl-B): a board's friendly prompt.
    line.send(b"\r\x03\x02")
    line.expect(b">>> ")


def _sample_line(line: Line) -> bytes:
    # Read until a whole sample line has come, check that it decodes; returns all that was shown.
    start = len(line.seen)
    while True:
        line.expect(b"\n")
        found = re.search(rb"NT1 [0-9a-f]+\n", line.seen[start:])
        if found:
            samples = parse_line(found.group())
            assert samples, found.group()
            return line.seen[start:]


def _stream(line: Line, seconds: float) -> list[tuple[float, int, float | None]]:
    # (arrival time, device time us, depth mm) of the first sample of each sample line for `seconds`.
    got: list[tuple[float, int, float | None]] = []
    end = time.monotonic() + seconds
    pending = b""
    while time.monotonic() < end:
        pending += line.expect(b"\n", timeout=2)
        *lines, pending = pending.split(b"\n")
        now = time.monotonic()
        for raw in lines:
            samples = parse_line(raw + b"\n")
            if samples:
                got.append((now, samples[0].device_time_us, samples[0].depth_mm))
    return got


def test_ls_shows_the_flash_directory(probe):
    con, flash = probe
    listed = {row.split()[-1] for row in mpremote(con, "ls", "/").splitlines()[1:] if row.strip()}
    on_flash = {p.name + ("/" if p.is_dir() else "") for p in flash.iterdir()}
    assert listed == on_flash
    assert {"main.py", "loop.py", "drivers/"} <= listed


def test_cp_writes_into_flash_and_reads_back(probe, tmp_path):
    con, flash = probe
    src = tmp_path / "note.txt"
    content = "line one\nsecond line, 42\n"
    src.write_text(content)
    out = mpremote(con, "cp", str(src), ":note.txt", "+", "ls", "+", "fs", "cat", ":note.txt")
    assert (flash / "note.txt").read_text() == content
    assert "note.txt" in out
    assert out.endswith(content)


def test_exec_and_run_reach_the_emulated_board(probe, tmp_path):
    con, _ = probe
    assert mpremote(con, "exec", "print(1+1)").strip() == "2"
    script = tmp_path / "probe_check.py"
    script.write_text("import machine\nprint('scan', machine.I2C(0).scan())\n")
    assert mpremote(con, "run", str(script)).strip() == f"scan {SENSOR_ADDRESSES}"


def test_soft_reset_then_ctrl_d_runs_the_copied_boot_py_and_the_firmware(probe, tmp_path):
    con, _ = probe
    boot_py = tmp_path / "boot.py"
    boot_py.write_text("print('boot.py ran')\n")
    boots = len(con.boots)
    mpremote(con, "cp", str(boot_py), ":boot.py", "+", "soft-reset")
    try:
        # As on a board: a soft reset from the raw REPL runs boot.py, not main.py (one for connecting, one
        # for the command); mpremote leaves the friendly REPL behind.
        assert [b.script for b in con.boots[boots:]] == ["raw", "raw"]
        line = Line(con.path)
        try:
            _friendly_prompt(line)
            line.send(b"\x04")  # Ctrl-D at the friendly prompt: soft reboot, boot.py then main.py
            shown = _sample_line(line)
        finally:
            line.close()
        reboot = shown.index(b"MPY: soft reboot\r\n")
        ran = shown.index(b"boot.py ran")
        banner = shown.index(b"NeedleTrack ")
        assert reboot < ran < banner
        assert b"imu=ok hall_a=ok hall_b=ok" in shown[banner:]
        assert con.boots[-1].kind == "soft" and con.boots[-1].script == "main"
    finally:
        mpremote(con, "rm", ":boot.py")


def test_reset_restarts_the_probe_and_the_firmware_streams_in_real_time(probe):
    con, _ = probe
    before = con.pid
    mpremote(con, "reset")
    deadline = time.monotonic() + 10
    while (con.pid == before or con.boots[-1].kind != "hard") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert con.boots[-1].kind == "hard" and con.pid != before
    line = Line(con.path)
    try:
        assert b"soft reboot" not in _sample_line(line)  # main.py runs after a hard reset
        # Past the scenario's end in this boot too (its device clock restarted at the reset).
        time.sleep(max(0.0, con.boots[-1].t_s + SCENARIO["duration_s"] + 0.3 - time.monotonic()))
        line.drain()
        stream = _stream(line, 1.0)
    finally:
        line.close()
    # Real time: device time advances with the wall clock (lines come every ~10 ms; allow the relay's jitter).
    (w0, d0, _), (w1, d1, _) = stream[0], stream[-1]
    assert abs((d1 - d0) / 1e6 - (w1 - w0)) < 0.2, stream
    # The scenario (depth 10 -> 30 mm in 1 s) has ended and repeats: the needle still moves.
    depths = [d for _, _, d in stream if d is not None and d == d]
    assert min(depths) < 15 and max(depths) > 25, depths
    # resume: no soft reboot on connecting, so this is still the boot that followed the reset
    assert mpremote(con, "resume", "exec", "import machine; print(machine.reset_cause())").strip() == "2"


def test_power_cycle_cuts_the_probe_mid_write_and_boots_it_as_after_power_on(probe):
    con, flash = probe
    line = Line(con.path)
    try:
        _friendly_prompt(line)
        # A file written a line every 10 ms, for a second: the power goes a third of the way through.
        line.send(b"import time; f = open('half.txt', 'w')\r")
        line.expect(b">>> ")
        line.send(b"for i in range(100): f.write('%03d\\n' % i); f.flush(); time.sleep_ms(10)\r\r")
        line.expect(b"for i in range")
        before_pid, before_epoch = con.pid, con.device_epoch()
        t0 = time.monotonic()
        boot = con.power_cycle(after_s=0.3, off_s=0.2)
        assert time.monotonic() - t0 >= 0.5
        shown = _sample_line(line)  # main.py runs and streams, as after power-on
    finally:
        line.close()
    assert (boot.kind, boot.script, boot.cause) == ("power-on", "main", 1)
    assert boot.pid != before_pid and not Path(f"/proc/{before_pid}").exists()
    assert b"soft reboot" not in shown and b"NeedleTrack " in shown
    written = (flash / "half.txt").read_text()
    (flash / "half.txt").unlink()
    assert 0 < len(written) < 400, written  # stopped where the power went, not closed and finished
    assert written.splitlines()[:3] == ["000", "001", "002"]
    epoch = con.device_epoch()
    assert before_epoch is not None and epoch is not None and epoch > before_epoch + 0.4  # the clock restarted
    assert mpremote(con, "resume", "exec", "import machine; print(machine.reset_cause())").strip() == "1"


def test_stop_leaves_no_process_and_closes_the_terminal(tmp_path):
    con = Console(tmp_path, _session(tmp_path))
    path = con.start()
    mpremote(con, "exec", "print('x')")
    pids = [b.pid for b in con.boots]
    assert len(pids) == 2  # power-on, and the soft reboot mpremote asked for
    con.stop()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"probe process {pid} left behind"
    assert not os.path.exists(path)
    con.stop()  # twice is harmless


def test_a_probe_that_cannot_boot_is_reported(tmp_path):
    session = _session(tmp_path)
    (tmp_path / "feed" / "imu.bin").unlink()
    con = Console(tmp_path, session, boot_timeout_s=15)
    with pytest.raises(ConsoleError, match="failed to boot"):
        con.start()
    assert all(not Path(f"/proc/{b.pid}").exists() for b in con.boots)


def test_serve_prints_the_serial_line_and_stops_on_sigterm(tmp_path):
    code = ("import sys; from pathlib import Path; from needletrack.sim import scenario, serve; "
            f"serve.serve(scenario.parse({SCENARIO!r}), Path(sys.argv[1]))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        ready = select.select([proc.stdout], [], [], 30)[0]
        assert ready, "serve printed nothing in 30 s"
        first = proc.stdout.readline().decode()
        assert first.startswith("serial: "), first
        path = first.split(": ", 1)[1].strip()
        res = subprocess.run([str(MPREMOTE), "connect", path, "exec", "print(6*7)"], capture_output=True,
                             timeout=20)
        assert res.stdout.decode().strip() == "42", res.stderr.decode()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, proc.stderr.read().decode() if proc.stderr else ""
        assert not os.path.exists(path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
