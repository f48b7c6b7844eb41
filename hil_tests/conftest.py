"""QA's hardware-in-the-loop suite: the same tests on the virtual probe (default) or a board on a serial port.

    pytest hil_tests                                   # the virtual probe
    pytest hil_tests --board /dev/ttyACM0 [--ble os]   # a board running the NeedleTrack firmware
    pytest hil_tests --jig jig.json                    # with a depth jig's known positions

Fixtures the tests use:
  dut          the device under test (dut.kind "sim" or "board"; dut.serial for mpremote; dut.ble, the BLE
               transport; dut.served, the virtual probe's handles, None on a board)
  session      a boot and a stretch of streamed samples (with the scenario's truth on the virtual probe)
  truth        that truth; the test is skipped on a board, with the reason
  run_scenario a scenario run through the virtual probe in virtual time (faults, tick wrap); skipped on a board
  report       figures and plots for the suite's HTML report
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from hil_tests import probes

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


def pytest_addoption(parser):
    parser.addoption("--board", default="sim", help="'sim' for the virtual probe, or a serial port of a board")
    parser.addoption("--ble", default=None, help="BLE transport on a board (default: os, this computer's adapter)")
    parser.addoption("--jig", default=None, help="a depth jig's known positions (JSON), for accuracy on a board")


@dataclass
class DeviceUnderTest:
    kind: str  # "sim" or "board"
    serial: str  # the serial console: a board's port, or the virtual probe's pseudo-terminal
    ble: str  # the BLE transport a host connects with
    served: Any = None  # needletrack.sim.serve.ServedProbe on the virtual probe, else None

    def require_sim(self, why: str) -> None:
        """Skip on a board, saying why the test needs the virtual probe."""
        if self.kind != "sim":
            pytest.skip(f"virtual probe only: {why}")


@pytest.fixture(scope="session")
def board(request) -> str:
    return request.config.getoption("--board")


@pytest.fixture(scope="session")
def dut(request, board, tmp_path_factory) -> Iterator[DeviceUnderTest]:
    if board != "sim":
        yield DeviceUnderTest("board", board, request.config.getoption("--ble") or "os")
        return
    from needletrack.sim import scenario, serve

    with serve.served(scenario.parse(SERVED), tmp_path_factory.mktemp("hil-served")) as probe:
        yield DeviceUnderTest("sim", probe.serial, probe.transport, probe)


@pytest.fixture(scope="session")
def session(board, tmp_path_factory) -> probes.Session:
    if board == "sim":
        return probes.from_virtual_probe(SCENARIO, tmp_path_factory.mktemp("hil"))
    return probes.from_serial_port(board)


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
    """What a test adds to the HTML report: figures (name, value, unit, target) and plots (PNG bytes)."""

    def __init__(self, item: pytest.Item) -> None:
        self.item = item

    def figure(self, name: str, value: float | str, unit: str = "", target: str = "") -> None:
        self.item.user_properties.append(("figure", {"name": name, "value": value, "unit": unit,
                                                      "target": target}))

    def plot(self, title: str, fig: Any) -> None:
        """A matplotlib figure, stored as PNG bytes."""
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        self.item.user_properties.append(("plot", {"title": title, "png": buf.getvalue()}))


@pytest.fixture
def report(request) -> Report:
    return Report(request.node)


def pytest_configure(config):
    config.addinivalue_line("markers", "soak: long streaming soak, run with --soak or from make bench")


