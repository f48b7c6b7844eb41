"""A second virtual probe, on a depth jig: for what the session's probe must not be put through.

TARE and a new calibration cannot be undone by a command, and power cuts leave the flash as they find it, so
they run on this probe, with its own flash, radio and console, not on the one the session shares. Its needle
steps through the jig's stops (the positions the factory calibrates at) and holds at each, so a host knows
the true depth whenever it sends CAL_POINT or TARE: the scenario time of a served probe is known on the host
(the device clock's epoch on the host's monotonic clock, plus the scenario time the boot began at).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hil_tests import probes
from hil_tests.central import Central
from needletrack.protocol import Opcode, Result

STOPS_MM = (0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 75.0)  # needletrack.sim.feed.JIG_MM: both sensors' spans
HOLD_S = 0.3  # at each stop
MOVE_S = 0.08  # between stops
# After the last stop, one more hold (at SATURATED_MM) with both needle sensors saturated: no usable field.
# Then the needle rests at the first stop while the sensors come back (a re-probe, if the firmware took the
# saturation for a fault), before the cycle begins again.
SATURATED_MM = 30.0
SATURATED_AT_S = len(STOPS_MM) * (HOLD_S + MOVE_S)
REST_S = 0.7
PERIOD_S = SATURATED_AT_S + HOLD_S + MOVE_S + REST_S


def scenario() -> dict[str, Any]:
    depth: list[list[float]] = []
    t = 0.0
    for d in (*STOPS_MM, SATURATED_MM):
        depth += [[round(t, 3), d], [round(t + HOLD_S, 3), d]]
        t += HOLD_S + MOVE_S
    depth.append([round(t, 3), STOPS_MM[0]])  # resting at the first stop: the cycle repeats without a jump
    saturated = [{"kind": "saturate", "sensor": s, "t_s": SATURATED_AT_S, "until_s": SATURATED_AT_S + HOLD_S}
                 for s in ("hall_a", "hall_b")]
    return {
        "name": "hil_jig",
        "description": "The needle steps through the depth jig's stops and holds at each.",
        "duration_s": PERIOD_S,
        "seed": 31,
        "guide_angle_deg": 30.0,
        "needle_length_mm": 100.0,
        "attitude": [[0, 0, 0, 0]],
        "depth": depth,
        "faults": saturated,
    }


@contextlib.contextmanager
def served(work: Path) -> Iterator[Any]:
    """The jig probe, up in real time like the session's: a needletrack.sim.serve.ServedProbe."""
    from needletrack.sim import scenario as sim_scenario
    from needletrack.sim import serve

    with serve.served(sim_scenario.parse(scenario()), work, **probes.SIM) as probe:
        wait_advertising(probe)
        yield probe


async def _advertising_began(bridge: Any) -> float | None:
    return bridge.advertising_began()  # type: ignore[no-any-return]


def wait_advertising(probe: Any, timeout_s: float = 15.0) -> None:
    """Wait until the served probe's firmware advertises on its radio; fail with what its console showed."""
    deadline = time.monotonic() + timeout_s
    while probe.radio.call(_advertising_began) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"the virtual probe did not advertise within {timeout_s:g} s; its console "
                                 f"showed:\n{probe.console.output_tail(1500)}")
        time.sleep(0.05)


def scenario_time(console: Any) -> float:
    """Where the served probe is in its (repeating) scenario now, in seconds since the cycle began."""
    boot = json.loads((console.work / "boot.json").read_text())
    epoch = console.device_epoch()
    if epoch is None:
        raise AssertionError("the probe has not started its clock yet")
    return (time.monotonic() - epoch + (boot["world_us"] - boot["uptime_us"]) / 1e6) % PERIOD_S


def hold_centre_s(i: int) -> float:
    return i * (HOLD_S + MOVE_S) + HOLD_S / 2


async def at_stop(console: Any, i: int, lead_s: float = 0.05) -> None:
    """Wait until the needle is at stop i, `lead_s` before the middle of its hold (a command's way there)."""
    wait = (hold_centre_s(i) - lead_s - scenario_time(console)) % PERIOD_S
    await asyncio.sleep(wait)


async def at_saturation(console: Any, lead_s: float = 0.05) -> None:
    """Wait until both needle sensors are saturated (the extra hold after the last stop)."""
    wait = (SATURATED_AT_S + HOLD_S / 2 - lead_s - scenario_time(console)) % PERIOD_S
    await asyncio.sleep(wait)


def stops_in_passing_order(console: Any, margin_s: float = 0.1) -> list[int]:
    """Every stop, in the order the needle reaches them from now."""
    now = scenario_time(console)
    return sorted(range(len(STOPS_MM)), key=lambda i: (hold_centre_s(i) - now - margin_s) % PERIOD_S)


async def calibrate(central: Central, console: Any) -> tuple[list[Result], Result]:
    """CAL_BEGIN, a CAL_POINT at every stop as the needle holds there, CAL_COMMIT: the points' and the commit's
    RESULTs (the commit's value is the new calibration id)."""
    result, _ = await central.command(Opcode.CAL_BEGIN)
    assert result.code == 0, result
    points = []
    for i in stops_in_passing_order(console):
        await at_stop(console, i)
        result, _ = await central.command(Opcode.CAL_POINT, round(STOPS_MM[i] * 100))
        points.append(result)
    commit, _ = await central.command(Opcode.CAL_COMMIT)
    return points, commit
