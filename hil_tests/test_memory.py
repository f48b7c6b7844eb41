"""Memory: on the device itself, the main loop allocates nothing, and free RAM stays flat while it runs.

A script sent through the serial console's raw REPL (hil_tests/device/loop_memory.py, as `mpremote exec`
would) builds the device as app.py does and runs its own main loop, Device.run(), unchanged: first under
micropython.heap_lock(), where any allocation raises MemoryError, then unlocked with gc.mem_free() sampled
every 100 ms. Afterwards the device is soft-reset into its firmware. The same script runs on a board's port
and on the virtual probe's pseudo-terminal.

The BLE link's own code is checked the same way on a stand-in radio stack that allocates nothing (the virtual
probe's radio stack is an emulator written in Python, whose allocations say nothing about a board's)."""

from __future__ import annotations

import numpy as np
import pytest

from hil_tests import plots, probes

# Every test here needs a firmware that keeps its output rate (conftest: keeps_rate).
pytestmark = pytest.mark.keeps_rate

LOCKED_S = 2.0
FREE_S = 4.0
EVERY_MS = 100
RAM_DRIFT_BYTES = 256  # what the free heap may move over the run without a leak: a timer or IRQ's small change

RUNS = [
    {"links": ["serial"], "warm_s": 1.0, "locked_s": LOCKED_S, "free_s": FREE_S, "every_ms": EVERY_MS},
    # The BLE link refreshes its STATUS value every 2 s: the locked phase spans one refresh.
    {"links": ["serial", "ble-stub"], "warm_s": 0.5, "locked_s": 2.5, "free_s": 0},
]


@pytest.fixture(scope="module")
def loop_memory(dut) -> dict:
    runs, banner = probes.run_on_device(dut.serial, "loop_memory.py", {"RUNS": RUNS}, timeout_s=60.0)
    assert "imu=ok hall_a=ok hall_b=ok" in banner, f"the firmware restarted with: {banner}"
    return {"serial": runs[0], "ble": runs[1]}


def _check_locked(run: dict, report) -> None:
    locked = run["locked"]
    made = locked["samples"]
    expected = run["rate_hz"] * locked["seconds"]
    report.figure("links serviced", ", ".join(run["links"]))
    report.figure("samples made with the heap locked", made, target=f"~{expected:.0f}")
    report.figure("loop iterations with the heap locked", locked["batches"])
    assert "error" not in locked, locked.get("error")
    assert made >= 0.95 * expected, f"the loop made {made} samples in {locked['seconds']} s, not ~{expected:.0f}"


def test_the_main_loop_allocates_nothing(loop_memory, report):
    """Device.run() with the serial link, as app.py runs it, under micropython.heap_lock()."""
    _check_locked(loop_memory["serial"], report)


def test_free_ram_stays_flat_while_the_loop_runs(loop_memory, report):
    run = loop_memory["serial"]
    phase = run["free"]
    t = np.array(phase["t_ms"]) / 1000.0
    free = np.array(phase["free"], dtype=float)
    assert len(free) >= FREE_S * 1000 / EVERY_MS * 0.8, f"{len(free)} readings"
    drop = float(free[0] - free.min())
    slope = float(np.polyfit(t, free, 1)[0]) if len(t) > 1 else 0.0
    report.figure("free heap at start", int(free[0]), "B")
    report.figure("free heap, lowest", int(free.min()), "B")
    report.figure("largest drop", int(drop), "B", f"<= {RAM_DRIFT_BYTES}")
    report.figure("trend", round(slope, 1), "B/s", "0")
    report.figure("free heap after gc.collect() at the end", run["free_after_collect"], "B")
    report.figure("samples made", phase["samples"])
    report.figure("FIFO overruns", run["overruns"], target="0")
    report.plot(f"Free RAM over {FREE_S:g} s of the main loop (gc.mem_free(), every {EVERY_MS} ms)",
                plots.free_ram(t, free, "Free heap while Device.run() streams on the serial link"))
    assert drop <= RAM_DRIFT_BYTES, f"free RAM fell by {drop:.0f} B in {t[-1]:.1f} s ({slope:.0f} B/s)"
    assert run["overruns"] == 0, "the IMU FIFO overflowed while the loop ran"


def test_the_ble_link_allocates_nothing(loop_memory, report):
    """Device.run() with the serial and BLE links (the BLE link on a stand-in stack that allocates nothing),
    under micropython.heap_lock(), across one of the BLE link's STATUS refreshes."""
    _check_locked(loop_memory["ble"], report)
