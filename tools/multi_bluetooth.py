"""MicroPython's two-instance BLE tests against the virtual probe's `bluetooth` stand-in.

    python tools/multi_bluetooth.py TESTS_DIR [--board pico_w|xiao_esp32s3 ...] [-k NAME] [--json OUT]

TESTS_DIR holds tests in MicroPython's multitest format (tests/multi_bluetooth of MicroPython's repository,
fetched separately: nothing of it is kept here). Each test has ``instance0()`` (a peripheral) and
``instance1()`` (a central), and a ``.exp`` file with the output both must print. For each test:

- instance0 runs on the MicroPython unix port with the virtual probe's modules first on MICROPYPATH
  (host_tools/needletrack/sim/mpy), its radio a fresh radio bridge (needletrack.sim.radio) emulating the
  board's stack: BTstack for pico_w, NimBLE for xiao_esp32s3. It connects as the virtual probe does,
  ``vradio.connect(port, pace=1)``, before the test's code runs.
- instance1 runs in CPython on tools/bumble_central.py: MicroPython's ``bluetooth`` API (central, GATT client,
  GATT server) on a Bumble host connected to the bridge's HCI transport.
- The two are synchronised by the multitest protocol (lines the instances print): ``NEXT`` ends an instance's
  set-up and lets the next one start, ``SET name = value`` passes a global to the instances started after it,
  ``BROADCAST msg`` is forwarded to the other instance's stdin (``multitest.wait``), ``SKIP`` skips the test,
  ``WAIT_FOR_REBOOT resume delay`` restarts instance0 in the named function after it resets, and
  ``OUTPUT_METRIC data`` is reported but not compared. An instance silent for 10 s gets a ``TIMEOUT`` line and
  ends the test, as in MicroPython's run-multitests.py.
- The output ("--- instance0 ---", its lines, "--- instance1 ---", its lines) must equal the .exp exactly;
  there are no wildcards. Lines MicroPython's runner ignores (host-stack noise such as "libusb: error") are
  dropped here too, and so are BROADCAST, SET, NEXT and OUTPUT_METRIC lines (BROADCAST and other lines printed
  before an instance's NEXT stay in its output, as there).

Prints PASS/FAIL/SKIP per test with a short reason, a table and "N passed, M failed, K skipped"; --json writes
every result with the full output. Exit status 0 unless a test failed (a missing TESTS_DIR is a skip).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import logging
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "host_tools"))

from needletrack.sim.radio import RadioBridgeThread, RadioConfig  # noqa: E402

MPY_MODULES = ROOT / "host_tools" / "needletrack" / "sim" / "mpy"
CENTRAL = ROOT / "tools" / "bumble_central.py"
BOARDS = {"pico_w": "btstack", "xiao_esp32s3": "nimble"}
# What MicroPython compiles into each board's `bluetooth` (ports/rp2/CMakeLists.txt, ports/esp32/mpconfigport.h):
# both have the central role and GATT client; only the ESP32's NimBLE build has pairing; neither has L2CAP
# channels. A test that skips for a missing method is compared with this to say whose the skip is.
BOARD_FEATURES = {"pico_w": {"pairing": False, "l2cap": False}, "xiao_esp32s3": {"pairing": True, "l2cap": False}}


def _feature(method: str) -> str | None:
    if method in ("gap_pair", "gap_passkey"):
        return "pairing"
    return "l2cap" if method.startswith("l2cap_") else None
SILENCE_S = 10.0  # an instance that prints nothing for this long has timed out (run-multitests.py's figure)
REBOOT_S = 5.0  # how long instance0 may take to reset after WAIT_FOR_REBOOT
IGNORED = ("libusb: error ", "hci_transport_h2_libusb.c", "USB Path: ", "hci_number_completed_packet",
           "lld_pdu_get_tx_flush_nb HCI packet count mismatch (", " ets_task(")

# The multitest helpers each instance gets after the test's code, followed by the globals set so far and the
# call of its instance function.
HELPERS = """
import sys


class multitest:
    @staticmethod
    def flush():
        try:
            sys.stdout.flush()
        except AttributeError:
            pass

    @staticmethod
    def skip():
        print("SKIP")
        multitest.flush()
        raise SystemExit

    @staticmethod
    def next():
        print("NEXT")
        multitest.flush()

    @staticmethod
    def broadcast(msg):
        print("BROADCAST", msg)
        multitest.flush()

    @staticmethod
    def wait(msg):
        want = "BROADCAST " + msg
        while True:
            line = sys.stdin.readline()
            if not line:
                raise OSError("multitest.wait: the runner went away")
            if line.rstrip() == want:
                return

    @staticmethod
    def globals(**gs):
        for name in gs:
            print("SET {} = {!r}".format(name, gs[name]))
        multitest.flush()

    @staticmethod
    def get_network_ip():
        return "127.0.0.1"

    @staticmethod
    def expect_reboot(resume, delay_ms=0):
        print("WAIT_FOR_REBOOT", resume, delay_ms)

    @staticmethod
    def output_metric(data):
        print("OUTPUT_METRIC", data)
"""


def micropython() -> str:
    beside = Path(sys.executable).with_name("micropython")
    if beside.exists():
        return str(beside)
    found = next((str(Path(p) / "micropython") for p in os.environ.get("PATH", "").split(os.pathsep)
                  if (Path(p) / "micropython").exists()), None)
    if found is None:
        raise SystemExit("micropython (the unix port) not found: install the dev extra")
    return found


class Instance:
    """One instance's process: its lines as they come, its stdin for BROADCAST lines."""

    EOF = object()

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=env, cwd=cwd, start_new_session=True)
        self.lines: queue.Queue[Any] = queue.Queue()
        self.finished = False
        self.last_output = time.monotonic()
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self.lines.put(raw.decode("ascii", "backslashreplace").rstrip())
        self.lines.put(self.EOF)

    def get(self, timeout: float) -> Any:
        """The next line, None if there is none within timeout, or Instance.EOF when the process is done."""
        if self.finished:
            return self.EOF
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        if line is self.EOF:
            self.finished = True
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(2)
        else:
            self.last_output = time.monotonic()
        return line

    def silent_for(self) -> float:
        return time.monotonic() - self.last_output

    def write(self, line: str) -> None:
        if self.finished or self.proc.stdin is None:
            return
        with contextlib.suppress(OSError):
            self.proc.stdin.write(line.encode() + b"\r\n")
            self.proc.stdin.flush()

    def stop(self) -> None:
        # Only this instance's own process group: it was started in a session of its own.
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, 9)
                self.proc.wait(3)
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()


@dataclass
class Result:
    test: str
    board: str
    result: str  # PASS, FAIL, SKIP
    reason: str = ""
    seconds: float = 0.0
    output: str = ""
    expected: str = ""
    metrics: list[str] = field(default_factory=list)
    bridge: list[str] = field(default_factory=list)  # what the radio bridge warned of during the test
    runs: int = 1  # how many times it ran (--repeat); a FAIL failed at least once
    passes: int = 0


def instance_count(source: str) -> int:
    found = [int(m.group(1)) for m in re.finditer(r"^def instance([0-9]+)\(\):", source, re.MULTILINE)]
    return max(found) + 1 if found else 0


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


logging.getLogger("bumble").setLevel(logging.CRITICAL)
_BRIDGE_LOG = logging.getLogger("needletrack.sim.radio")
_BRIDGE_LOG.propagate = False


class TestRun:
    """One test on one board: bridge, both instances, the protocol, the comparison."""

    def __init__(self, path: Path, board: str, timeout: float, work: Path, silence: float = SILENCE_S) -> None:
        self.path = path
        self.silence = silence
        self.board = board
        self.timeout = timeout
        self.work = work
        self.source = path.read_text()
        self.injected = ""
        self.output: list[list[str]] = [[], []]
        self.metrics: list[str] = []
        self.instances: list[Instance | None] = [None, None]
        self.error = False
        self.skip = False
        self.stuck: list[str] = []  # where a silent instance was when interrupted
        self.prelude_lines = 0

    # -- starting the instances
    def _script(self, function: str) -> str:
        return f"{self.source}\n{HELPERS}\n{self.injected}\n{function}()\nmultitest.flush()\n"

    def _start(self, idx: int, function: str, radio: RadioBridgeThread) -> Instance:
        if idx == 0:
            prelude = (f"import sys\ntry:\n    sys.path.remove('')\nexcept ValueError:\n    pass\n"
                       f"import vradio\nvradio.connect({radio.shim_port}, pace=1)\n")
            self.prelude_lines = prelude.count("\n")
            argv = [micropython(), "-c", prelude + self._script(function)]
            env = {**os.environ, "MICROPYPATH": str(MPY_MODULES)}
        else:
            script = self.work / f"{self.path.stem}.instance1.py"
            script.write_text(self._script(function))
            argv = [sys.executable, str(CENTRAL), radio.transport, str(script)]
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        inst = Instance(argv, env, self.path.parent)
        self.instances[idx] = inst
        return inst

    # -- the protocol
    def _setup_phase(self, idx: int, inst: Instance, deadline: float) -> None:
        # Until NEXT: SET lines become globals for the instances started later; SKIP skips the test.
        while True:
            if time.monotonic() > deadline:
                self.output[idx].append(f"TIMEOUT (the test ran past {self.timeout:.0f} s)")
                self.error = True
                return
            line = inst.get(0.1)
            if line is Instance.EOF:
                return
            if line is None:
                if inst.silent_for() > self.silence:
                    self._timeout(idx, inst)
                    return
                continue
            if any(m in line for m in IGNORED):
                continue
            if line.startswith("SET "):
                self.injected += line[4:] + "\n"
            elif line == "SKIP":
                self.skip = True
                return
            elif line == "NEXT":
                return
            else:
                self.output[idx].append(line)

    def _run_phase(self, radio: RadioBridgeThread, deadline: float) -> None:
        while not self.error:
            running = [(i, inst) for i, inst in enumerate(self.instances) if inst is not None and not inst.finished]
            if not running:
                return
            if time.monotonic() > deadline:
                for i, _ in running:
                    self.output[i].append(f"TIMEOUT (the test ran past {self.timeout:.0f} s)")
                self.error = True
                return
            got = False
            for idx, inst in running:
                line = inst.get(0)
                if line is Instance.EOF:
                    continue
                if line is None:
                    if inst.silent_for() > self.silence:
                        self._timeout(idx, inst)
                    continue
                got = True
                if any(m in line for m in IGNORED):
                    continue
                if line.startswith("WAIT_FOR_REBOOT"):
                    self._reboot(idx, inst, line, radio)
                if line.startswith("BROADCAST "):
                    for other in self.instances:
                        if other is not None and other is not inst:
                            other.write(line)
                elif line.startswith("OUTPUT_METRIC "):
                    self.metrics.append(line.split(" ", 1)[1])
                else:
                    self.output[idx].append(line)
            if not got:
                time.sleep(0.002)

    def _timeout(self, idx: int, inst: Instance) -> None:
        # As run-multitests.py: a TIMEOUT line and the end of the test. To say where the instance was stuck, it
        # gets a Ctrl-C (SIGINT, its own process only) and its traceback is kept for the reason, not the output.
        self.output[idx].append("TIMEOUT")
        self.error = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(inst.proc.pid, 2)
        lines: list[str] = []
        limit = time.monotonic() + 2.0
        while time.monotonic() < limit:
            line = inst.get(0.1)
            if line is Instance.EOF:
                break
            if isinstance(line, str):
                lines.append(line)
        frames = [m for m in (re.match(r'\s*File "([^"]*)", line (\d+), in (\S+)', x) for x in lines) if m]
        frames = [f for f in frames if f.group(1) == "<stdin>" or f.group(1).endswith(".instance1.py")]
        if frames:
            where, number, function = frames[-1].groups()
            n = int(number) - (self.prelude_lines if where == "<stdin>" else 0)
            source_lines = self.source.splitlines()
            text = f" (line {n}: {source_lines[n - 1].strip()})" if 0 < n <= len(source_lines) else ""
            self.stuck.append(f"instance{idx} silent {self.silence:g} s, interrupted in {function}{text}")

    def _reboot(self, idx: int, inst: Instance, line: str, radio: RadioBridgeThread) -> None:
        # multitest.expect_reboot(resume, delay_ms): the board resets (machine.deepsleep/reset end the probe's
        # process) and the runner starts `resume` on it.
        _, resume, delay_ms = line.split(" ")
        if idx != 0 or not resume.startswith(f"instance{idx}"):
            self.output[idx].append(f"(runner) cannot resume {resume} on instance{idx}")
            self.error = True
            return
        limit = time.monotonic() + REBOOT_S + float(delay_ms) / 1000
        while not inst.finished and time.monotonic() < limit:
            extra = inst.get(0.1)
            if isinstance(extra, str) and not any(m in extra for m in IGNORED):
                self.output[idx].append(extra)
        if not inst.finished:
            self.output[idx].append("(runner) instance0 did not reset")
            self.error = True
            return
        self._start(idx, resume, radio)

    def run(self) -> Result:
        t0 = time.monotonic()
        expected_path = self.path.with_name(self.path.name + ".exp")
        if instance_count(self.source) != 2:
            return Result(self.path.stem, self.board, "SKIP", "not a two-instance test", 0.0)
        if not expected_path.exists():
            return Result(self.path.stem, self.board, "SKIP", "no .exp file (MicroPython would run CPython)", 0.0)
        expected = expected_path.read_text()
        collect = _Collect()
        _BRIDGE_LOG.addHandler(collect)
        try:
            result = self._run(t0, expected)
        finally:
            _BRIDGE_LOG.removeHandler(collect)
        result.bridge = collect.messages
        if result.result == "FAIL" and collect.messages:
            result.reason += "; bridge: " + collect.messages[0]
        return result

    def _run(self, t0: float, expected: str) -> Result:
        with RadioBridgeThread(RadioConfig(stack=BOARDS[self.board])) as radio:
            try:
                for idx in (0, 1):
                    inst = self._start(idx, f"instance{idx}", radio)
                    self._setup_phase(idx, inst, t0 + self.timeout)
                    if self.error or self.skip:
                        break
                if not self.error and not self.skip:
                    self._run_phase(radio, t0 + self.timeout)
            finally:
                for started in self.instances:
                    if started is not None:
                        started.stop()
        output = "".join(f"--- instance{i} ---\n" + "\n".join(lines) + "\n" for i, lines in enumerate(self.output))
        seconds = time.monotonic() - t0
        if self.skip:
            return Result(self.path.stem, self.board, "SKIP", self._skip_reason(), seconds, output, expected,
                          self.metrics)
        if output == expected:
            return Result(self.path.stem, self.board, "PASS", "", seconds, output, expected, self.metrics)
        return Result(self.path.stem, self.board, "FAIL", self._fail_reason(output, expected), seconds, output,
                      expected, self.metrics)

    # -- reasons
    def _skip_reason(self) -> str:
        needs = sorted(set(re.findall(r"hasattr\(bluetooth\.BLE,\s*[\"'](\w+)[\"']\)", self.source)))
        if not needs:
            return "the test skipped itself"
        have = stand_in_methods(self.board)
        on_objects = [n for n in needs if n in have]
        if on_objects:
            # The test asks the class; the stand-in's BLE() returns an object of a per-stack subclass.
            return (f"bluetooth.BLE (the class) has no {', '.join(on_objects)}, though the stand-in's BLE() "
                    f"object has it: the test checks the class")
        reason = "the stand-in's BLE has no " + ", ".join(needs)
        features = {f for f in map(_feature, needs) if f}
        if features and not any(BOARD_FEATURES[self.board][f] for f in features):
            reason += f", as on a real {self.board}: MicroPython builds no {', '.join(sorted(features))} for it"
        elif features:
            reason += f"; a real {self.board} has it"
        return reason

    def _fail_reason(self, output: str, expected: str) -> str:
        parts = []
        got_sections = _sections(output)
        want_sections = _sections(expected)
        for i in range(max(len(got_sections), len(want_sections))):
            got = got_sections[i] if i < len(got_sections) else []
            want = want_sections[i] if i < len(want_sections) else []
            if got == want:
                continue
            n = next((k for k in range(min(len(got), len(want))) if got[k] != want[k]), min(len(got), len(want)))
            exp_line = want[n] if n < len(want) else "(end)"
            got_line = got[n] if n < len(got) else "(end)"
            parts.append(f"instance{i} line {n + 1}: expected {exp_line!r}, got {got_line!r}")
            error = _error_line(got)
            if error and error != got_line:
                parts.append(f"instance{i}: {error}")
            break
        parts.extend(self.stuck)
        missing = missing_methods(self.source, 0, self.board)
        if missing:
            parts.append("instance0 calls what the stand-in lacks: " + ", ".join(missing))
        return "; ".join(parts) or "output differs"


def _sections(text: str) -> list[list[str]]:
    sections: list[list[str]] = []
    for line in text.rstrip("\n").split("\n"):
        if re.fullmatch(r"--- instance\d+ ---", line):
            sections.append([])
        elif sections:
            sections[-1].append(line)
    return [[line for line in s if line != ""] for s in sections]


def _error_line(lines: list[str]) -> str:
    # The exception a traceback ends with, or the IRQ handler's failure.
    for k, line in enumerate(lines):
        if line.startswith("Traceback"):
            for tail in lines[k + 1:]:
                if not tail.startswith(" "):
                    return tail
        if line.startswith("Unhandled exception in IRQ callback handler"):
            after = [t for t in lines[k + 1:] if not t.startswith(" ") and not t.startswith("Traceback")]
            return "IRQ handler: " + (after[0] if after else "exception")
    return ""


_METHODS: dict[str, set[str]] = {}


def stand_in_methods(board: str) -> set[str]:
    """What the stand-in's BLE object offers on this board profile: dir() of it, asked of MicroPython itself."""
    if board not in _METHODS:
        with RadioBridgeThread(RadioConfig(stack=BOARDS[board])) as radio:
            script = (f"import vradio\nvradio.connect({radio.shim_port})\nimport bluetooth\n"
                      "print(' '.join(dir(bluetooth.BLE())))\n")
            run = subprocess.run([micropython(), "-c", script], env={**os.environ, "MICROPYPATH": str(MPY_MODULES)},
                                 capture_output=True, text=True, timeout=20)
        lines = run.stdout.strip().splitlines()
        _METHODS[board] = set(lines[-1].split()) if run.returncode == 0 and lines else set()
    return _METHODS[board]


def missing_methods(source: str, idx: int, board: str) -> list[str]:
    """BLE methods the test's instance{idx} (and what it calls) uses that the stand-in's BLE does not define."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    functions = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    seen: set[str] = set()
    todo = [f"instance{idx}"]
    used: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        for node in ast.walk(functions[name]):
            if isinstance(node, ast.Call):
                f = node.func
                if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "ble":
                    used.add(f.attr)
                elif isinstance(f, ast.Name):
                    todo.append(f.id)
    have = stand_in_methods(board)
    if not have:
        return []
    return sorted(m for m in used if m not in have)


def discover(tests_dir: Path, pattern: str | None) -> list[Path]:
    tests = sorted(p for p in tests_dir.glob("*.py") if p.with_name(p.name + ".exp").exists()
                   or instance_count(p.read_text()) == 2)
    if pattern:
        tests = [p for p in tests if pattern in p.stem]
    return tests


def _repeated(path: Path, board: str, timeout: float, budget: float, started: float, work: Path, silence: float,
              repeat: int) -> Result:
    # The test `repeat` times (while the budget lasts): PASS if every run passed, else the first failing run,
    # whose reason says how many of the runs passed.
    results: list[Result] = []
    for _ in range(max(1, repeat)):
        left = budget - (time.monotonic() - started)
        if results and left < 5:
            break
        results.append(TestRun(path, board, min(timeout, left), work, silence).run())
        if results[-1].result == "SKIP":
            break
    passes = sum(1 for r in results if r.result == "PASS")
    failed = [r for r in results if r.result == "FAIL"]
    result = failed[0] if failed else results[0]
    result.runs, result.passes = len(results), passes
    result.seconds = sum(r.seconds for r in results)
    if failed and len(results) > 1:
        result.reason = f"passed {passes} of {len(results)} runs; {result.reason}"
    return result


def run(tests_dir: Path, boards: list[str], pattern: str | None, timeout: float, budget: float,
        verbose: bool, console: Any, silence: float = SILENCE_S, repeat: int = 1) -> list[Result]:
    results: list[Result] = []
    tests = discover(tests_dir, pattern)
    styles = {"PASS": "bold green", "FAIL": "bold red", "SKIP": "yellow"}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="multi-bluetooth-") as work:
        for board in boards:
            console.print(f"[bold]{len(tests)} tests on the stand-in as {board} ({BOARDS[board]})[/bold]")
            for path in tests:
                left = budget - (time.monotonic() - started)
                if left < 5:
                    result = Result(path.stem, board, "SKIP", f"the run's budget of {budget:.0f} s is spent")
                else:
                    result = _repeated(path, board, timeout, budget, started, Path(work), silence, repeat)
                results.append(result)
                reason = f"  {result.reason}" if result.reason else ""
                console.print(f"[{styles[result.result]}]{result.result:4}[/] {board:13} {result.test:32} "
                              f"{result.seconds:5.1f} s{reason}", highlight=False, markup=True, soft_wrap=True)
                for metric in result.metrics:
                    console.print(f"     metric: {metric}", highlight=False)
                if verbose and result.result == "FAIL":
                    console.print(_diff(result.expected, result.output), highlight=False, markup=False)
    return results


def _diff(expected: str, output: str) -> str:
    import difflib

    return "".join(difflib.unified_diff(expected.splitlines(True), output.splitlines(True), "expected", "got"))


def _runs(r: Result) -> str:
    return f" {r.passes}/{r.runs}" if r.runs > 1 else ""


def summary(results: list[Result], console: Any) -> None:
    from rich.table import Table

    boards = list(dict.fromkeys(r.board for r in results))
    table = Table(title="tests/multi_bluetooth on the bluetooth stand-in")
    table.add_column("test")
    for b in boards:
        table.add_column(b)
    table.add_column("reason (first failure or skip)", overflow="fold")
    by_test: dict[str, dict[str, Result]] = {}
    for r in results:
        by_test.setdefault(r.test, {})[r.board] = r
    colours = {"PASS": "green", "FAIL": "red", "SKIP": "yellow"}
    for test, per_board in by_test.items():
        cells = [f"[{colours[per_board[b].result]}]{per_board[b].result}[/]{_runs(per_board[b])}" if b in per_board
                 else "" for b in boards]
        reasons = [f"{b}: {per_board[b].reason}" for b in boards if b in per_board and per_board[b].reason]
        table.add_row(test, *cells, "\n".join(reasons))
    console.print(table)
    for b in boards:
        mine = [r for r in results if r.board == b]
        counts = {k: sum(1 for r in mine if r.result == k) for k in ("PASS", "FAIL", "SKIP")}
        console.print(f"{b}: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    parser = argparse.ArgumentParser(prog="python tools/multi_bluetooth.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tests_dir", type=Path, help="a directory of multitest files with their .exp")
    parser.add_argument("--board", action="append", choices=sorted(BOARDS),
                        help="the board whose BLE stack the bridge emulates (repeat for both; default xiao_esp32s3)")
    parser.add_argument("-k", dest="pattern", help="only tests whose name contains this")
    parser.add_argument("--json", type=Path, help="write every result, with the full outputs, here")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds one test may take (default 60)")
    parser.add_argument("--budget", type=float, default=480.0,
                        help="seconds for the whole run; tests left when it is spent are skipped (default 480)")
    parser.add_argument("--silence", type=float, default=SILENCE_S,
                        help="seconds an instance may stay silent before it times out (default 10, as MicroPython's)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each test this many times; it passes only if every run passes (finds races)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the diff of each failure")
    args = parser.parse_args(argv)
    console = Console(highlight=False)
    boards = args.board or ["xiao_esp32s3"]
    if not args.tests_dir.is_dir():
        console.print(f"[yellow]SKIP[/] {args.tests_dir} is not a directory: nothing to run (fetch MicroPython's "
                      "tests/multi_bluetooth there)")
        results: list[Result] = []
    else:
        results = run(args.tests_dir, boards, args.pattern, args.timeout, args.budget, args.verbose, console,
                      args.silence, args.repeat)
        summary(results, console)
    passed = sum(1 for r in results if r.result == "PASS")
    failed = sum(1 for r in results if r.result == "FAIL")
    skipped = sum(1 for r in results if r.result == "SKIP")
    console.print(f"[bold]{passed} passed, {failed} failed, {skipped} skipped[/bold]")
    if args.json:
        args.json.write_text(json.dumps({"tests_dir": str(args.tests_dir), "boards": boards,
                                         "summary": {"passed": passed, "failed": failed, "skipped": skipped},
                                         "results": [asdict(r) for r in results]}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
