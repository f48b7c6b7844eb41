"""The suite's report as one self-contained HTML page: inline CSS, plots as base64 PNG, nothing fetched.

Order of the page, for a QA engineer reading it after a run: the verdict, the device under test, the summary
(counts per family, what failed, what was skipped and why), every measured figure in one table, then one
section per family with each test's outcome, duration, figures, plots and failure text.
"""

from __future__ import annotations

import base64
import html
import re
from collections import Counter

from hil_tests.report_plugin import RunSummary, TestResult, format_value

# Families in the order a run builds on them; titles for the section headings.
FAMILIES = {
    "test_boot": "Deploy and boot",
    "test_timing": "Timing",
    "test_memory": "Memory",
    "test_accuracy": "Accuracy",
    "test_ble": "BLE",
    "test_control": "Control",
    "test_persistence": "Persistence",
    "test_faults": "Faults",
    "test_time": "Time: device tick wrap",
    "test_soak": "Soak",
}
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
_LABEL = {"passed": "PASSED", "failed": "FAILED", "error": "ERROR", "skipped": "SKIPPED",
          "xfailed": "EXPECTED FAIL", "xpassed": "UNEXPECTED PASS"}

CSS = """
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1d2329;
       background: #f4f6f8; margin: 0; }
main { max-width: 1240px; margin: 0 auto; padding: 0 24px 48px; }
header { background: #1f2d3d; color: #fff; padding: 20px 24px; margin-bottom: 20px; }
header .inner { max-width: 1240px; margin: 0 auto; display: flex; align-items: center; gap: 24px; }
header h1 { font-size: 22px; margin: 0; font-weight: 600; }
header .meta { color: #c4cfdb; font-size: 13px; }
.verdict { font-size: 20px; font-weight: 700; padding: 8px 18px; border-radius: 6px; letter-spacing: .04em; }
.verdict.pass { background: #1e8e3e; } .verdict.fail { background: #c5221f; }
section.card { background: #fff; border: 1px solid #dde3ea; border-radius: 8px; padding: 16px 20px;
               margin-bottom: 18px; }
h2 { font-size: 18px; margin: 0 0 10px; } h3 { font-size: 15px; margin: 0; }
.lead { color: #4a5560; margin: 0 0 12px; max-width: 980px; } .lead p { margin: 0 0 6px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 5px 10px; border-bottom: 1px solid #e8ecf0; vertical-align: top; }
th { background: #f0f3f6; font-weight: 600; font-size: 13px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.figs { table-layout: fixed; } table.figs td { overflow-wrap: anywhere; }
td.val { font-variant-numeric: tabular-nums; font-weight: 600; }
td.group { background: #fafbfc; border-right: 1px solid #e8ecf0; }
table.kv th { width: 220px; background: none; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 700;
         color: #fff; white-space: nowrap; }
.passed { background: #1e8e3e; } .failed, .error { background: #c5221f; } .skipped { background: #8a939c; }
.xfailed { background: #b06000; } .xpassed { background: #6a4fb3; }
.counts span { margin-right: 8px; }
.test { border-top: 1px solid #e8ecf0; padding: 12px 0; }
.test:first-of-type { border-top: none; }
.test .head { display: flex; align-items: baseline; gap: 10px; }
.test .dur { margin-left: auto; color: #66717c; font-size: 13px; white-space: nowrap; }
.test .id { color: #8a939c; font-size: 12px; font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
.test .doc { color: #4a5560; margin: 4px 0 8px; max-width: 980px; } .test .doc p { margin: 0 0 4px; }
.reason { background: #fff8e1; border-left: 4px solid #f2b400; padding: 6px 10px; margin: 6px 0; }
pre { background: #1f2428; color: #e8eaed; padding: 10px 12px; border-radius: 6px; overflow-x: auto;
      font: 12px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; white-space: pre-wrap; max-height: 520px; }
details summary { cursor: pointer; color: #1a5fb4; margin: 6px 0; }
figure { margin: 10px 0; } figure img { max-width: 100%; border: 1px solid #e8ecf0; border-radius: 4px; }
figcaption { color: #4a5560; font-size: 13px; }
.figs { margin: 6px 0 8px; } .figs td, .figs th { font-size: 13px; }
.ok { color: #1e8e3e; font-weight: 600; } .bad { color: #c5221f; font-weight: 600; }
a { color: #1a5fb4; text-decoration: none; } a:hover { text-decoration: underline; }
footer { color: #66717c; font-size: 12px; margin-top: 24px; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def family_of(module: str) -> str:
    return FAMILIES.get(module, module.removeprefix("test_").replace("_", " ").capitalize())


def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


_ACRONYMS = {"na": "NA", "ble": "BLE", "fifo": "FIFO", "ram": "RAM", "imu": "IMU", "mtu": "MTU", "i2c": "I2C",
             "rms": "RMS", "cli": "CLI", "gatt": "GATT", "uuid": "UUID", "nvs": "NVS"}


def _title(name: str) -> str:
    base, _, params = name.partition("[")
    words = " ".join(_ACRONYMS.get(w, w) for w in base.removeprefix("test_").split("_"))
    words = words[:1].upper() + words[1:]
    return words + (f" [{params}" if params else "")


def _families(results: list[TestResult]) -> list[tuple[str, str, list[TestResult]]]:
    by: dict[str, list[TestResult]] = {}
    for r in results:
        by.setdefault(r.module, []).append(r)
    order = [m for m in FAMILIES if m in by] + sorted(m for m in by if m not in FAMILIES)
    return [(m, by[m][0].module_doc, by[m]) for m in order]


def _prose(doc: str) -> str:
    """A docstring as HTML paragraphs: its lines joined, blank lines kept as paragraph breaks."""
    paras = [" ".join(line.strip() for line in p.splitlines()) for p in re.split(r"\n\s*\n", doc.strip())]
    return "".join(f"<p>{_e(p)}</p>" for p in paras if p)


def _badge(outcome: str) -> str:
    return f'<span class="badge {outcome}">{_LABEL.get(outcome, outcome.upper())}</span>'


def _counts(results: list[TestResult]) -> str:
    c = Counter(r.outcome for r in results)
    return "".join(f"<span>{_badge(o)} {c[o]}</span>" for o in OUTCOMES if c[o])


def _first_line(text: str) -> str:
    lines = [x for x in text.strip().splitlines() if x.strip()]
    for x in lines:  # pytest's "E   AssertionError: ..." lines say what went wrong
        if x.lstrip().startswith("E "):
            return x.strip()[1:].strip()
    return lines[-1].strip() if lines else ""


_FIG_COLS = "<col style='width:34%'><col style='width:36%'><col style='width:12%'><col style='width:18%'>"


def _figure_cells(f: dict[str, object]) -> str:
    return (f"<td>{_e(f.get('name', ''))}</td><td class='val'>{_e(format_value(f.get('value')))}</td>"
            f"<td>{_e(f.get('unit') or '')}</td><td>{_e(f.get('target') or '')}</td>")


def _figures_table(figures: list[dict[str, object]]) -> str:
    if not figures:
        return ""
    rows = "".join(f"<tr>{_figure_cells(f)}</tr>" for f in figures)
    return (f"<table class='figs'>{_FIG_COLS}<tr><th>figure</th><th>value</th><th>unit</th><th>target</th></tr>"
            f"{rows}</table>")


def _all_figures(fams: list[tuple[str, str, list[TestResult]]]) -> str:
    """Every figure of the run, grouped by test."""
    rows = []
    for module, _doc, rs in fams:
        for r in rs:
            for i, f in enumerate(r.figures):
                lead = ""
                if i == 0:
                    lead = (f"<td class='group' rowspan='{len(r.figures)}'>{_badge(r.outcome)} "
                            f"<a href='#{_anchor(r.nodeid)}'>{_e(family_of(module))}: {_e(_title(r.name))}</a></td>")
                rows.append(f"<tr>{lead}{_figure_cells(f)}</tr>")
    if not rows:
        return ""
    cols = ("<col style='width:28%'><col style='width:26%'><col style='width:24%'><col style='width:9%'>"
            "<col style='width:13%'>")
    return (f"<section class='card'><h2>Measured figures</h2><table class='figs'>{cols}<tr><th>test</th>"
            f"<th>figure</th><th>value</th><th>unit</th><th>target</th></tr>{''.join(rows)}</table></section>")


def _plot(p: dict[str, object]) -> str:
    png = p.get("png")
    if not isinstance(png, bytes | bytearray):
        return ""
    data = base64.b64encode(bytes(png)).decode("ascii")
    return (f"<figure><img alt='{_e(p.get('title', 'plot'))}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{_e(p.get('title', ''))}</figcaption></figure>")


def _test(r: TestResult) -> str:
    parts = [f"<div class='test' id='{_anchor(r.nodeid)}'><div class='head'>{_badge(r.outcome)}"
             f"<h3>{_e(_title(r.name))}</h3><span class='dur'>{r.duration_s:.2f} s</span></div>"
             f"<div class='id'>{_e(r.nodeid)}</div>"]
    if r.doc:
        parts.append(f"<div class='doc'>{_prose(r.doc)}</div>")
    if r.reason:
        label = {"skipped": "Skipped", "xpassed": "Passed, though known to fail at times"}.get(
            r.outcome, "Expected to fail")
        parts.append(f"<div class='reason'><b>{label}:</b> {_e(r.reason)}</div>")
    parts.append(_figures_table(r.figures))
    parts.extend(_plot(p) for p in r.plots)
    if r.longrepr:
        parts.append(f"<div class='reason'><b>Why it failed:</b> {_e(_first_line(r.longrepr))}</div>"
                     f"<details open><summary>failure details</summary><pre>{_e(r.longrepr)}</pre></details>")
    if r.captured and r.outcome in ("failed", "error"):
        parts.append(f"<details><summary>captured output</summary><pre>{_e(r.captured)}</pre></details>")
    parts.append("</div>")
    return "".join(parts)


def render(run: RunSummary) -> str:
    results = run.results
    bad = [r for r in results if r.outcome in ("failed", "error")]
    passed = run.exit_status in (0, 5) and not bad
    verdict = "<div class='verdict pass'>PASS</div>" if passed else "<div class='verdict fail'>FAIL</div>"
    fams = _families(results)

    identity = run.identity or {"device": "not identified (no test reached the device)"}
    ident_rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in identity.items())

    fam_rows = []
    for module, _doc, rs in fams:
        title = family_of(module)
        secs = sum(r.duration_s for r in rs)
        fam_rows.append(f"<tr><td><a href='#{_anchor(module)}'>{_e(title)}</a></td><td>{len(rs)}</td>"
                        f"<td class='counts'>{_counts(rs)}</td><td class='num'>{secs:.1f} s</td></tr>")

    problems = "".join(
        f"<tr><td>{_badge(r.outcome)}</td><td><a href='#{_anchor(r.nodeid)}'>{_e(family_of(r.module))}: "
        f"{_e(_title(r.name))}</a></td><td>{_e(_first_line(r.longrepr) or r.reason)}</td></tr>" for r in bad)
    skipped = "".join(
        f"<tr><td>{_badge(r.outcome)}</td><td><a href='#{_anchor(r.nodeid)}'>{_e(family_of(r.module))}: "
        f"{_e(_title(r.name))}</a></td><td>{_e(r.reason)}</td></tr>"
        for r in results if r.outcome in ("skipped", "xfailed", "xpassed"))


    sections = []
    for module, doc, rs in fams:
        sections.append(f"<section class='card' id='{_anchor(module)}'><h2>{_e(family_of(module))} "
                        f"<span class='counts'>{_counts(rs)}</span></h2>"
                        + (f"<div class='lead'>{_prose(doc)}</div>" if doc else "")
                        + "".join(_test(r) for r in rs) + "</section>")

    total = len(results)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>NeedleTrack HIL report: {"PASS" if passed else "FAIL"}, {_e(run.started)}</title>
<style>{CSS}</style></head>
<body>
<header><div class="inner">{verdict}<div><h1>NeedleTrack hardware-in-the-loop report</h1>
<div class="meta">{_e(run.target)} &middot; {_e(run.started)} &middot; {run.seconds:.1f} s &middot; {total} tests
&middot; pytest exit status {run.exit_status}</div></div></div></header>
<main>
<section class="card"><h2>Device under test</h2><table class="kv">{ident_rows}</table></section>
<section class="card"><h2>Summary <span class="counts">{_counts(results)}</span></h2>
<table><tr><th>family</th><th>tests</th><th>outcomes</th><th>time</th></tr>{"".join(fam_rows)}</table>
{"<h3 style='margin-top:14px'>Failures</h3><table>" + problems + "</table>" if problems else
 "<p class='ok' style='margin-top:12px'>Nothing failed.</p>"}
{"<h3 style='margin-top:14px'>Skipped or known to fail, with the reason</h3><table>" + skipped + "</table>"
 if skipped else ""}
</section>
{_all_figures(fams)}
{"".join(sections)}
<footer>Run on {_e(run.host)}. Command: <code>{_e(run.command)}</code>.
{("JUnit XML: " + _e(run.junit) + ".") if run.junit else ""}</footer>
</main></body></html>
"""
