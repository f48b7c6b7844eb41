"""tools/multi_bluetooth.py, the runner of MicroPython's two-instance BLE tests, on a test of our own.

tests/host/multitest/gatt_read_write.py is written in MicroPython's multitest format: instance0 (the virtual
probe's `bluetooth` stand-in, on the MicroPython unix port) advertises and serves a characteristic, instance1
(tools/bumble_central.py, a Bumble central behind MicroPython's `bluetooth` API) connects, reads, writes and
disconnects. The runner must pass it on both board profiles, fail it against a wrong expectation, and skip what
cannot run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "tools" / "multi_bluetooth.py"
TEST = ROOT / "tests" / "host" / "multitest" / "gatt_read_write.py"


def run_runner(tests_dir: Path, *args: str, timeout: float = 120) -> tuple[int, str, dict[str, Any]]:
    out = tests_dir.parent / f"{tests_dir.name}.json"
    proc = subprocess.run([sys.executable, str(RUNNER), str(tests_dir), "--json", str(out), *args],
                          capture_output=True, text=True, timeout=timeout)
    report = json.loads(out.read_text()) if out.exists() else {}
    return proc.returncode, proc.stdout + proc.stderr, report


def copy_test(dest: Path, expected: str | None = None) -> Path:
    dest.mkdir()
    shutil.copy(TEST, dest / TEST.name)
    (dest / f"{TEST.name}.exp").write_text(expected if expected is not None else Path(f"{TEST}.exp").read_text())
    return dest


@pytest.mark.parametrize("board", ["xiao_esp32s3", "pico_w"])
def test_our_two_instance_test_passes_on_the_stand_in(tmp_path, board):
    code, text, report = run_runner(copy_test(tmp_path / "tests"), "--board", board)
    assert code == 0, text
    (result,) = report["results"]
    assert (result["test"], result["board"], result["result"]) == ("gatt_read_write", board, "PASS"), text
    assert result["output"] == Path(f"{TEST}.exp").read_text()
    assert result["metrics"] == ["instance0 done"]  # OUTPUT_METRIC is reported, not compared
    assert report["summary"] == {"passed": 1, "failed": 0, "skipped": 0}
    assert "1 passed, 0 failed, 0 skipped" in text


def test_an_expectation_the_instances_do_not_meet_fails_with_the_line(tmp_path):
    wrong = Path(f"{TEST}.exp").read_text().replace("read b'hello'", "read b'HELLO'")
    code, text, report = run_runner(copy_test(tmp_path / "tests", wrong), "--repeat", "2")
    assert code == 1, text
    (result,) = report["results"]
    assert (result["result"], result["runs"], result["passes"]) == ("FAIL", 2, 0)
    assert result["reason"].startswith("passed 0 of 2 runs; ")
    assert "instance1 line 3: expected \"read b'HELLO'\", got \"read b'hello'\"" in result["reason"]
    assert "0 passed, 1 failed, 0 skipped" in text


def test_a_test_that_skips_itself_and_a_missing_directory_are_skips(tmp_path):
    tests = copy_test(tmp_path / "tests")
    source = (tests / TEST.name).read_text()
    (tests / TEST.name).write_text(source.replace('def instance0():\n', 'def instance0():\n    multitest.skip()\n'))
    code, text, report = run_runner(tests)
    assert code == 0, text
    assert [r["result"] for r in report["results"]] == ["SKIP"]

    code, text, report = run_runner(tmp_path / "absent")
    assert code == 0 and "SKIP" in text and "0 passed, 0 failed, 0 skipped" in text


def test_a_silent_instance_times_out_and_the_reason_says_where_it_waited(tmp_path):
    tests = copy_test(tmp_path / "tests")
    source = (tests / TEST.name).read_text()
    (tests / TEST.name).write_text(source.replace('multitest.wait("served")', 'multitest.wait("never sent")'))
    code, text, report = run_runner(tests, "--silence", "2")
    assert code == 1, text
    (result,) = report["results"]
    assert result["result"] == "FAIL"
    assert result["output"].endswith("--- instance1 ---\nTIMEOUT\n")
    assert "instance1 silent 2 s, interrupted in wait" in result["reason"], result["reason"]
