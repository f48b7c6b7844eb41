"""`needletrack hil` and the HIL suite's report: the command runs pytest on the suite and writes one
self-contained HTML report and the JUnit XML; the report shows outcomes, reasons, figures and plots; the depth
jig file is read and compared as documented."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hil_tests import jig
from needletrack.hil_cli import hil_command, hil_tests_dir, pytest_command

REPO = Path(__file__).resolve().parents[2]

SYNTHETIC = '''
import pytest
from matplotlib.figure import Figure


def test_measures(report):
    """Attaches a figure and a plot."""
    report.figure("depth error, RMS", 0.0712, "mm", "< 0.2")
    fig = Figure(figsize=(3, 2))
    fig.subplots().plot([0, 1], [1, 0])
    report.plot("a line", fig)
    report.identity("board", "bench board 7")


def test_breaks(report):
    report.figure("angle error", 4.51, "deg", "< 0.3")
    assert 4.51 < 0.3, "needle angle RMS error 4.510 deg"


def test_needs_a_jig():
    pytest.skip("no --jig FILE given")


@pytest.mark.xfail(strict=True, reason="a known defect")
def test_known_defect():
    assert False
'''


def test_the_suite_is_found_beside_the_package():
    assert hil_tests_dir() == REPO / "hil_tests"


def test_the_pytest_command_carries_every_option(tmp_path):
    cmd = pytest_command(REPO / "hil_tests", tmp_path, board="/dev/ttyACM0", ble="usb:0", jig=tmp_path / "j.json",
                         soak=True, no_flash=True, extra=("-k", "timing"), cpu="ideal")
    text = " ".join(cmd)
    for part in ("--board /dev/ttyACM0", "--cpu ideal", "--ble usb:0", f"--jig {tmp_path / 'j.json'}", "--soak",
                 "--no-flash", f"--hil-report {tmp_path}", f"--junitxml {tmp_path / 'junit.xml'}", "-k timing"):
        assert part in text, part


def _run_synthetic(tmp_path: Path, monkeypatch) -> tuple[object, Path]:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text("from hil_tests.conftest import *  # noqa: F403\n")
    (suite / "test_synthetic.py").write_text(SYNTHETIC)
    monkeypatch.setenv("NEEDLETRACK_HIL_TESTS", str(suite))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    out = tmp_path / "out"
    res = CliRunner().invoke(hil_command, ["--out", str(out), "--", "-p", "no:cacheprovider"])
    return res, out


def test_the_report_shows_outcomes_reasons_figures_and_plots(tmp_path, monkeypatch):
    res, out = _run_synthetic(tmp_path, monkeypatch)
    assert res.exit_code == 1, res.output  # one test failed
    assert "test_breaks FAILED" in res.output  # pytest's progress went through
    assert f"Report: {out / 'report.html'}" in res.output
    page = (out / "report.html").read_text()
    assert "verdict fail" in page
    assert "needle angle RMS error 4.510 deg" in page  # the failure, said in its own words
    assert "no --jig FILE given" in page and "a known defect" in page  # skip and expected-failure reasons
    assert "depth error, RMS" in page and "0.0712" in page and "bench board 7" in page
    pngs = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(pngs) == 1 and len(pngs[0]) > 1000
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", page), "the report must not fetch anything"
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1"
    props = [p.get("value") for p in suite.iter("property")]
    assert "depth error, RMS = 0.0712 mm (target < 0.2)" in props
    assert "a line" in props  # the plot by its title; its PNG stays out of the XML
    assert all(len(v or "") < 200 for v in props)


def test_the_hil_command_on_the_virtual_probe_passes_and_writes_its_report(tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(hil_command, ["--out", str(out), "--", "-k", "banner_names or jitter_from_device",
                                           "-p", "no:cacheprovider"])
    assert res.exit_code == 0, res.output
    page = (out / "report.html").read_text()
    assert "verdict pass" in page
    assert "virtual probe" in page and "micropython" in page.lower() and "calibration" in page
    assert "data:image/png;base64," in page  # the interval histogram
    assert (out / "junit.xml").is_file()


def _jig_file(tmp_path: Path, doc: object) -> Path:
    p = tmp_path / "jig.json"
    p.write_text(json.dumps(doc))
    return p


def test_a_jig_file_is_read_and_the_depth_compared_over_each_window(tmp_path):
    j = jig.load(_jig_file(tmp_path, {"tolerance_mm": 0.3, "positions": [
        {"depth_mm": 10.0, "measured_at": [1.0, 3.0]},
        {"depth_mm": 40.0, "measured_at": [4.0, 5.0]},
        {"depth_mm": 60.0}]}))
    assert j.tolerance_mm == 0.3 and len(j.positions) == 3 and len(j.timed) == 2
    assert j.stream_s == pytest.approx(5.5)
    t = np.arange(0, 5.5, 0.005)
    depth = np.where(t < 3.5, 10.0, 40.2)
    depth[(t > 1.0) & (t < 2.0)] = 25.0  # still moving early in the window: outside its last second
    depth[(t > 4.5) & (t < 4.6)] = np.nan  # no depth sent for a moment
    a, b = jig.compare(j, t, depth)
    assert a.device_mm == pytest.approx(10.0) and a.samples in (200, 201)  # both ends of 1 s
    assert b.device_mm == pytest.approx(40.2) and b.error_mm == pytest.approx(0.2)
    assert b.samples < 200


@pytest.mark.parametrize("doc, says", [
    ({"positions": []}, "a list of positions"),
    ([{"depth": 3}], "positions[0]: needs a number depth_mm"),
    ([{"depth_mm": 3, "measured_at": [5, 2]}], "positions[0]: measured_at must be"),
    ({"tolerance_mm": -1, "positions": [1.0]}, "tolerance_mm must be a positive number"),
])
def test_a_bad_jig_file_is_refused_with_what_is_wrong(tmp_path, doc, says):
    with pytest.raises(jig.JigError, match=re.escape(says)):
        jig.load(_jig_file(tmp_path, doc))
