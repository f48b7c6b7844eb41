"""QA's hardware-in-the-loop suite: the same tests on the virtual probe (default) or a board on a serial port.

    pytest hil_tests                       # virtual probe
    pytest hil_tests --board /dev/ttyACM0  # a board running the NeedleTrack firmware
"""

from __future__ import annotations

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


def pytest_addoption(parser):
    parser.addoption("--board", default="sim", help="'sim' for the virtual probe, or a serial port of a board")


@pytest.fixture(scope="session")
def board(request) -> str:
    return request.config.getoption("--board")


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
