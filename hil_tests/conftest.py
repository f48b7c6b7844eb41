"""QA's hardware-in-the-loop suite: the same tests on the virtual probe (default) or a board on a serial port.

    pytest hil_tests                                   # the virtual probe
    pytest hil_tests --board /dev/ttyACM0 [--ble os]   # a board: flashed with this checkout's firmware first
    pytest hil_tests --board /dev/ttyACM0 --no-flash   # a board, tested with the firmware it holds
    pytest hil_tests --jig jig.json                    # with a depth jig's known positions
    pytest hil_tests --soak                            # also the hour-long soak
    pytest hil_tests --hil-report out/hil              # out/hil/report.html and out/hil/junit.xml

Fixtures the tests use:
  dut          the device under test (dut.kind "sim" or "board"; dut.serial for mpremote; dut.ble, the BLE
               transport; dut.served, the virtual probe's handles, None on a board; dut.deploy, what
               `needletrack flash` reported, None with --no-flash; dut.boot, the boot banner after deploying)
  session      a boot and a stretch of streamed samples (with the scenario's truth on the virtual probe)
  truth        that truth; the test is skipped on a board, with the reason
  run_scenario a scenario run through the virtual probe in virtual time (faults, tick wrap); skipped on a board
  report       figures and plots for the suite's HTML report, and lines of the device's identity
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hil_tests import probes, report_plugin

# A short session: still, then a tilt and an insertion, so rate, continuity and accuracy are all exercised.
SCENARIO = {
    "name": "hil_boot",
    "duration_s": 8.0,
    "seed": 11,
    "guide_angle_deg": 30.0,
    "needle_length_mm": 60.0,
    "attitude": [[0, 0, 0, 0], [3, 0, 0, 0], [5, 0, 8, -4], [8, 0, 8, -4]],
    "depth": [[0, 2.0], [3, 2.0], [7, 50.0], [8, 50.0]],
    "imperfections": {"gyro_bias_dps": [0.5, -0.4, 0.3]},
}

# The probe kept up in real time for the tests that talk to it (BLE, control, memory, persistence).
SERVED = {
    "name": "hil_served",
    "duration_s": 30.0,
    "seed": 12,
    "guide_angle_deg": 30.0,
    "needle_length_mm": 60.0,
    "attitude": [[0, 0, 0, 0], [15, 0, 5, -3], [30, 0, 0, 0]],
    "depth": [[0, 10.0], [15, 40.0], [30, 10.0]],
}

HERE = Path(__file__).resolve().parent
VIRTUAL_PROBE = ("virtual probe: the firmware on the MicroPython unix port, with the board's pin map and "
                 "register-level emulations of its LSM6DSOX and two TMAG5273 (no hardware)")


def pytest_addoption(parser):
    parser.addoption("--board", default="sim",
                     help="'sim' for the virtual probe (a XIAO ESP32S3), 'pico_w' or 'xiao_esp32s3' for the virtual "
                          "probe as that board, or a serial port of a board")
    parser.addoption("--cpu", default="board", choices=("board", "ideal"),
                     help="the virtual probe: charge the board's compute, I2C and flash time (board), or not (ideal)")
    parser.addoption("--ble", default=None, help="BLE transport on a board (default: os, this computer's adapter)")
    parser.addoption("--jig", default=None, help="a depth jig's known positions (JSON), for accuracy on a board")
    parser.addoption("--no-flash", action="store_true",
                     help="do not deploy this checkout's firmware first: test what the device holds")
    parser.addoption("--soak", action="store_true", help="also run the soak family (an hour of streaming)")
    report_plugin.add_options(parser)


# --board values that mean the virtual probe, and the board it then is
SIM_BOARDS = {"sim": "xiao_esp32s3", "pico_w": "pico_w", "xiao_esp32s3": "xiao_esp32s3"}


def pytest_configure(config):
    sim_board = SIM_BOARDS.get(config.getoption("--board"))
    if sim_board is not None:
        probes.SIM["board"] = sim_board
        probes.SIM["cpu"] = config.getoption("--cpu")
    config.addinivalue_line("markers", "soak: an hour of streaming, run with --soak (needletrack hil --soak)")
    config.addinivalue_line("markers", "keeps_rate: needs a firmware that holds its output rate on the device")
    if config.getoption("--soak") and (config.option.markexpr or "").strip() == "not slow":
        config.option.markexpr = "not slow or soak"  # the soak is marked slow as well: select it anyway
    report_plugin.configure(config)


def pytest_collection_modifyitems(config, items):
    # The families run in the order they build on each other (deploy first); other tests keep their places.
    from hil_tests.report_html import FAMILIES

    order = list(FAMILIES)

    def rank(item: pytest.Item) -> int:
        if Path(str(item.fspath)).parent != HERE:
            return -1
        stem = Path(str(item.fspath)).stem
        return order.index(stem) if stem in order else len(order)

    items.sort(key=rank)
    _expect_failures_where_the_firmware_cannot_keep_up(config, items)
    # The hour-long soak is opt-in: --soak, or a -m that names it; `make bench` (-m slow) runs the shorter
    # slow tests, not an hour of streaming.
    asked = config.getoption("--soak") or re.search(r"(?<!not )\bsoak\b", config.option.markexpr or "")
    if asked:
        return
    skip = pytest.mark.skip(reason="soak: an hour of streaming, opt-in; run with --soak (needletrack hil --soak)")
    for item in items:
        if item.get_closest_marker("soak"):
            item.add_marker(skip)


def _keeps_up(board: str, rate_hz: int) -> tuple[bool, str]:
    """Whether the firmware holds rate_hz on the virtual board with its costs charged: 3 s of a still probe."""
    import tempfile

    from needletrack.sim import runner, scenario

    with tempfile.TemporaryDirectory(prefix="nt-hil-load-") as tmp:
        load = runner.run(scenario.load("still_probe"), Path(tmp), board=board, cpu="board",
                          rate_hz=rate_hz).device_load
    cpu, bus = float(load["cpu_fraction"]), float(load["bus_fraction"])
    ok = cpu + bus <= 1 and load["fifo_overruns"] == 0
    return ok, f"{cpu:.2f} CPU s + {bus:.2f} I2C s per second of data, {load['fifo_overruns']} FIFO overruns"


def _expect_failures_where_the_firmware_cannot_keep_up(config, items) -> None:
    # On a virtual board whose costs are charged, a firmware too slow for the board cannot pass what needs its
    # rate: those tests are expected failures, each saying why, until the firmware fits (issue 15). On a real
    # board, or with --cpu ideal, nothing is expected to fail.
    if config.getoption("--board") not in SIM_BOARDS or probes.SIM["cpu"] != "board":
        return
    bound = [it for it in items if it.get_closest_marker("keeps_rate")]
    if not bound:
        return
    verdicts = {rate: _keeps_up(probes.SIM["board"], rate) for rate in (200, 1000)}
    for item in bound:
        rate = 1000 if "1000" in item.name else 200
        ok, why = verdicts[rate]
        if not ok:
            item.add_marker(pytest.mark.xfail(
                reason=f"issue 15: the firmware does not keep {rate} samples/s on a {probes.SIM['board']} ({why})",
                strict=False))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    # Figures as text and plots by title in the JUnit XML, whether or not the HTML report is written (the HTML
    # report's own hook reads the item's full properties).
    report = yield
    if item.config.pluginmanager.get_plugin("hil-report") is None:
        report.user_properties = report_plugin.junit_properties(list(report.user_properties))
    return report


@dataclass
class DeviceUnderTest:
    kind: str  # "sim" or "board"
    serial: str  # the serial console: a board's port, or the virtual probe's pseudo-terminal
    ble: str  # the BLE transport a host connects with
    served: Any = None  # needletrack.sim.serve.ServedProbe on the virtual probe, else None
    deploy: Any = None  # needletrack.flashing.FlashReport of the deploy step, None with --no-flash
    boot: Any = None  # needletrack.board_repl.Boot: the banner of the boot after deploying

    def require_sim(self, why: str) -> None:
        """Skip on a board, saying why the test needs the virtual probe."""
        if self.kind != "sim":
            pytest.skip(f"virtual probe only: {why}")


def _identify(config: pytest.Config, banner: str, *, replace: bool) -> None:
    from needletrack.board_repl import parse_banner

    boot = parse_banner(banner) if banner else None
    if boot is None:
        return
    have = config.stash.get(report_plugin.IDENTITY, {})
    f = boot.fields
    lines = {
        "board": f.get("board", "?"),
        "firmware": boot.version,
        "MicroPython": f.get("micropython", "?"),
        "sensors": ", ".join(f"{k} {v}" for k, v in boot.sensors.items()),
        "calibration": ("factory table (not calibrated on this device)" if f.get("cal") == "factory"
                        else f"jig calibration {f.get('cal')}"),
        "configuration": f.get("config", "?"),
        "boot banner": boot.banner,
    }
    for k, v in lines.items():
        if replace or k not in have:
            report_plugin.note_identity(config, k, v)


def _deploy(request: pytest.FixtureRequest, port: str) -> tuple[Any, Any]:
    """`needletrack flash` onto the device (or, with --no-flash, a soft reset into what it holds)."""
    from needletrack import board_repl, flashing

    config = request.config
    if config.getoption("--no-flash"):
        with board_repl.Repl(port) as repl:
            return None, repl.restart()
    rep = flashing.flash(port)
    report_plugin.note_identity(config, "deployed", f"{rep.version} ({rep.revision}) into /{rep.slot} by "
                                f"needletrack flash, {rep.seconds:.1f} s; .mpy {rep.mpy}")
    return rep, rep.boot


@pytest.fixture(scope="session")
def board(request) -> str:
    """'sim' for the virtual probe (as whichever board probes.SIM says), else the board's serial port."""
    option = request.config.getoption("--board")
    return "sim" if option in SIM_BOARDS else option


@pytest.fixture(scope="session")
def dut(request, board, tmp_path_factory) -> Iterator[DeviceUnderTest]:
    config = request.config
    if board != "sim":
        report_plugin.note_identity(config, "device", f"board on {board}")
        deploy, boot = _deploy(request, board)
        _identify(config, boot.banner, replace=True)
        yield DeviceUnderTest("board", board, request.config.getoption("--ble") or "os", None, deploy, boot)
        return
    from needletrack.sim import scenario, serve

    report_plugin.note_identity(config, "device", VIRTUAL_PROBE)
    with serve.served(scenario.parse(SERVED), tmp_path_factory.mktemp("hil-served"), **probes.SIM) as probe:
        deploy, boot = _deploy(request, probe.serial)
        _identify(config, boot.banner, replace=True)
        yield DeviceUnderTest("sim", probe.serial, probe.transport, probe, deploy, boot)


@pytest.fixture(scope="session")
def session(request, board, tmp_path_factory) -> probes.Session:
    if board == "sim":
        report_plugin.note_identity(request.config, "device", VIRTUAL_PROBE)
        got = probes.from_virtual_probe(SCENARIO, tmp_path_factory.mktemp("hil"))
    else:
        request.getfixturevalue("dut")  # deployed first
        got = probes.from_serial_port(board)
    _identify(request.config, got.banner, replace=False)
    return got


@pytest.fixture
def truth(session, board):
    if session.truth is None:
        pytest.skip(f"needs the scenario's truth, which a real board ({board}) cannot give; use a depth jig")
    return session.truth


@pytest.fixture
def run_scenario(board, tmp_path) -> Callable[..., probes.Session]:
    """run_scenario(doc) -> Session: the scenario through the virtual probe in virtual time, with its truth."""
    if board != "sim":
        pytest.skip(f"virtual probe only: injects faults and scenarios a board on the bench ({board}) cannot")

    def run(doc: dict[str, Any], name: str = "run") -> probes.Session:
        return probes.from_virtual_probe(doc, tmp_path / name)

    return run


class Report:
    """What a test adds to the HTML report: figures (name, value, unit, target), plots (PNG bytes), and lines of
    the device's identity."""

    def __init__(self, item: pytest.Item) -> None:
        self.item = item

    def figure(self, name: str, value: float | str, unit: str = "", target: str = "") -> None:
        self.item.user_properties.append(("figure", {"name": name, "value": value, "unit": unit,
                                                      "target": target}))

    def plot(self, title: str, fig: Any) -> None:
        """A matplotlib figure, stored as PNG bytes (and closed, if pyplot made it)."""
        import io
        import sys

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close(fig)
        self.item.user_properties.append(("plot", {"title": title, "png": buf.getvalue()}))

    def identity(self, name: str, value: object) -> None:
        """A line of the device-under-test table (e.g. what a CONFIG record read over BLE says)."""
        report_plugin.note_identity(self.item.config, name, value)


@pytest.fixture
def report(request) -> Report:
    return Report(request.node)
