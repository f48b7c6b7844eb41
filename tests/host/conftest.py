"""Fixtures shared by the host tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from needletrack.sim import scenario, serve
from tests.host import HOST_TEST_CPU

SERVED = {
    "name": "served",
    "duration_s": 30.0,
    "seed": 2,
    "guide_angle_deg": 30.0,
    "needle_length_mm": 60.0,
    "attitude": [[0, 0, 0, 0]],
    "depth": [[0, 10.0], [30, 40.0]],
}


@pytest.fixture(scope="session")
def served_probe(tmp_path_factory) -> Iterator[serve.ServedProbe]:
    """A virtual probe up in real time with its radio and serial console, as `needletrack sim serve` keeps one."""
    work: Path = tmp_path_factory.mktemp("served")
    with serve.served(scenario.parse(SERVED), work, cpu=HOST_TEST_CPU) as probe:
        yield probe
