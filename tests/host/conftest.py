"""Fixtures shared by the host tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from needletrack.sim import scenario, serve
from needletrack.sim.console import Console
from needletrack.sim.radio import RadioBridgeThread

SERVED = {
    "name": "served",
    "duration_s": 30.0,
    "seed": 2,
    "guide_angle_deg": 30.0,
    "needle_length_mm": 60.0,
    "attitude": [[0, 0, 0, 0]],
    "depth": [[0, 10.0], [30, 40.0]],
}


@dataclass(frozen=True)
class ServedProbe:
    transport: str  # the radio, for a Bumble host
    serial: str  # the console's pseudo-terminal
    radio: RadioBridgeThread  # to act on the radio itself: drop the link, see when the probe advertises


@pytest.fixture(scope="session")
def served_probe(tmp_path_factory) -> Iterator[ServedProbe]:
    """A virtual probe up in real time with its radio and serial console, as `needletrack sim serve` keeps one."""
    work: Path = tmp_path_factory.mktemp("served")
    session, fresh = serve.prepare(scenario.parse(SERVED), work)
    with RadioBridgeThread() as radio:
        doc = json.loads(session.read_text())
        doc["radio"] = {"port": radio.shim_port, "pace": 1}
        session.write_text(json.dumps(doc))
        with Console(work, session, provision=fresh) as console:
            yield ServedProbe(radio.transport, str(console.path), radio)
