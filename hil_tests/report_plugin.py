"""The suite's report: ``--hil-report DIR`` writes DIR/report.html (one self-contained file) and DIR/junit.xml.

Registered by conftest.py. It keeps, per test: the outcome of its phases, its duration, the failure or skip text,
and what the test attached through the ``report`` fixture (``item.user_properties`` entries ``("figure", {...})``
and ``("plot", {"title", "png"})``); and, for the whole run, the identity of the device under test
(``note_identity``). The HTML is rendered by ``report_html``.

The JUnit XML gets each figure as a readable property (``name = value unit``) and each plot by its title: the PNG
bytes stay in the HTML.
"""

from __future__ import annotations

import datetime as dt
import platform
import sys
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

IDENTITY = pytest.StashKey[dict[str, str]]()


def add_options(parser: pytest.Parser) -> None:
    parser.addoption("--hil-report", default=None, metavar="DIR",
                     help="write DIR/report.html (self-contained) and, unless --junitxml is given, DIR/junit.xml")


def configure(config: pytest.Config) -> None:
    config.stash[IDENTITY] = {}
    out = config.getoption("--hil-report")
    if out is None:
        return
    out_dir = Path(out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if not getattr(config.option, "xmlpath", None):
        config.option.xmlpath = str(out_dir / "junit.xml")  # read by pytest's junitxml plugin, configured after
    config.pluginmanager.register(HilReport(config, out_dir), "hil-report")


def note_identity(config: pytest.Config, name: str, value: object) -> None:
    """One line of the report's device identity (board, firmware, MicroPython, sensors, calibration, ...)."""
    config.stash.setdefault(IDENTITY, {})[name] = str(value)


def _figure_text(v: dict[str, Any]) -> str:
    text = f"{v.get('name')} = {format_value(v.get('value'))} {v.get('unit') or ''}".rstrip()
    return text + (f" (target {v['target']})" if v.get("target") else "")


def format_value(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    if f.is_integer() and abs(f) < 1e9:
        return str(int(f))
    return f"{f:.4g}"


def junit_properties(props: list[tuple[str, object]]) -> list[tuple[str, object]]:
    """user_properties as the JUnit XML shows them: figures as text, plots by title."""
    out: list[tuple[str, object]] = []
    for name, value in props:
        if name == "figure" and isinstance(value, dict):
            out.append(("figure", _figure_text(value)))
        elif name == "plot" and isinstance(value, dict):
            out.append(("plot", str(value.get("title", ""))))
        else:
            out.append((name, value))
    return out


# -- what the report holds -----------------------------------------------------------------------------


@dataclass
class TestResult:
    nodeid: str
    module: str  # the family's module name, e.g. "test_timing"
    module_doc: str
    name: str  # the test's name with its parameters
    doc: str
    outcome: str = "passed"  # passed, failed, error, skipped, xfailed, xpassed
    duration_s: float = 0.0
    longrepr: str = ""  # failure or error text
    reason: str = ""  # why skipped, or the expected failure's reason
    figures: list[dict[str, Any]] = field(default_factory=list)
    plots: list[dict[str, Any]] = field(default_factory=list)
    captured: str = ""


@dataclass
class RunSummary:
    started: str
    seconds: float
    exit_status: int
    target: str
    command: str
    host: str
    identity: dict[str, str]
    results: list[TestResult]
    junit: str | None


def _skip_reason(report: pytest.TestReport) -> str:
    lr = report.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:
        return str(lr[2]).removeprefix("Skipped: ")
    return str(lr or "")


class HilReport:
    """The pytest plugin: collects each test's phases and writes the report when the session ends."""

    def __init__(self, config: pytest.Config, out_dir: Path) -> None:
        self.config = config
        self.out_dir = out_dir
        self.results: dict[str, TestResult] = {}
        self.t0 = time.monotonic()
        self.started = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")

    def _result(self, item: pytest.Item) -> TestResult:
        res = self.results.get(item.nodeid)
        if res is None:
            module = getattr(item, "module", None)
            func = getattr(item, "function", None)
            res = TestResult(
                nodeid=item.nodeid,
                module=Path(str(item.fspath)).stem,
                module_doc=(getattr(module, "__doc__", None) or "").strip(),
                name=item.name,
                doc=(getattr(func, "__doc__", None) or "").strip(),
            )
            self.results[item.nodeid] = res
        return res

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]
                                  ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        res = self._result(item)
        res.duration_s += report.duration
        res.figures = [v for k, v in item.user_properties if k == "figure" and isinstance(v, dict)]
        res.plots = [v for k, v in item.user_properties if k == "plot" and isinstance(v, dict)]
        xfail = getattr(report, "wasxfail", None)
        if report.when == "call":
            if xfail is not None:
                res.outcome = "xfailed" if report.skipped else "xpassed"
                res.reason = xfail
            elif report.skipped:
                res.outcome = "skipped"
                res.reason = _skip_reason(report)
            else:
                res.outcome = report.outcome
        elif report.when == "setup" and not report.passed:
            res.outcome = "skipped" if report.skipped else "error"
            if report.skipped:
                res.reason = xfail if xfail is not None else _skip_reason(report)
                if xfail is not None:
                    res.outcome = "xfailed"
        elif report.when == "teardown" and report.failed and res.outcome != "failed":
            res.outcome = "error"
        if report.failed:
            res.longrepr += ("\n\n" if res.longrepr else "") + (
                f"[{report.when}] " if report.when != "call" else "") + str(report.longrepr)
        if report.when == "teardown" or not report.passed:
            out = "".join(f"----- {title} -----\n{text}\n" for title, text in report.sections
                          if text.strip() and ("stdout" in title or "stderr" in title or "log" in title))
            if out:
                res.captured = out
        report.user_properties = junit_properties(list(report.user_properties))
        return report

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        from hil_tests import report_html

        cfg = self.config
        identity: dict[str, str] = cfg.stash.get(IDENTITY, {})
        from hil_tests.probes import SIM

        board = cfg.getoption("--board", default="sim")
        target = (f"the virtual probe as a {SIM['board']} (cpu {SIM['cpu']})" if board in ("sim", SIM["board"])
                  else f"a board on {board}")
        summary = RunSummary(
            started=self.started,
            seconds=time.monotonic() - self.t0,
            exit_status=int(exitstatus),
            target=target,
            command="pytest " + " ".join(cfg.invocation_params.args),
            host=f"{platform.node()} ({platform.system()} {platform.machine()}, Python {sys.version.split()[0]})",
            identity=dict(identity),
            results=list(self.results.values()),
            junit=getattr(cfg.option, "xmlpath", None),
        )
        path = self.out_dir / "report.html"
        path.write_text(report_html.render(summary), encoding="utf-8")
        self.path = path

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        path = getattr(self, "path", None)
        if path is not None:
            terminalreporter.write_sep("-", f"HIL report: {path}")
