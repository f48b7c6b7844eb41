"""Needle depth accuracy of the reference geometry, end to end (docs/depth.md, "Accuracy").

An as-built clip (sensor positions, gaps, chip tilts, axis gain mismatch and offsets drawn once from the
tolerances below) is calibrated like on the production jig: the carriage is set to 8 known positions over
the 0-80 mm stroke (JIG_MM), the firmware records the field angles and fits its factory table to them
(depth.fit_calibration). Then the carriage sweeps the stroke in 0.05 mm steps and every position gets one
TMAG5273 reading with datasheet-order noise (CONV_AVG 32x) and 16-bit quantisation. The fixed-point
estimator runs on MicroPython (the unix port, in a subprocess); a float64 re-implementation of the same math
runs here on the same counts.

Prints: depth RMS and max error over 0-80 mm (target RMS <= 0.2 mm), fixed point vs float64 (target RMS
<= 0.02 mm), the error at the sensor hand-off, and the same under temperature, stray field and less
averaging.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from needletrack.sim import magnet as mg

ROOT = Path(__file__).resolve().parents[1]
SEED = 20240611
STEP_MM = 0.05
# Jig positions: the stroke ends, the seam's edges, and two more per sensor; each sensor gets five points.
JIG_MM = [0.0, 13.0, 26.0, 37.0, 43.0, 54.0, 67.0, 80.0]
JIG_AVERAGE = 32  # readings averaged per jig position
TARGET_RMS_MM = 0.2
TARGET_FIXED_VS_FLOAT_MM = 0.02
INVALID = -0x20000000

# 1-sigma assembly tolerances of the as-built clip.
TOL = {"x_mm": 0.3, "gap_mm": 0.3, "tilt_deg": 1.0, "gain": 0.003, "offset_mt": 0.02, "magnet_tilt_deg": 1.0}

RUNNER = r"""
import json, sys
import depth
job = json.load(open(sys.argv[1]))
results = []
for clip in job["clips"]:
    e = depth.DepthEstimator()
    e.load(job["base"])
    angles = []
    for xa, za, xb, zb in clip["jig"]:
        e.update(xa, za, xb, zb, job["temp_cdeg"])
        angles.append([None if a == depth.INVALID else a for a in (e.angle_a, e.angle_b)])
    cal, rms = depth.fit_calibration(job["base"], job["jig_um"], angles)
    e.load(cal)
    out = []
    for run in clip["runs"]:
        res = []
        for xa, za, xb, zb, t in run:
            res.append(e.update(xa, za, xb, zb, t))
        out.append(res)
    results.append({"cal": cal, "fit_rms_um": rms, "depth_um": out})
with open(sys.argv[2], "w") as f:
    json.dump(results, f)
"""
MONTE_CARLO_CLIPS = 20


def as_built(rng: np.random.Generator) -> mg.Geometry:
    sensors = []
    for s in mg.REFERENCE.sensors:
        g = 1.0 + rng.normal(0, TOL["gain"], 3)
        o = rng.normal(0, TOL["offset_mt"], 3)
        sensors.append(replace(
            s,
            x_mm=s.x_mm + rng.normal(0, TOL["x_mm"]),
            gap_mm=s.gap_mm + rng.normal(0, TOL["gap_mm"]),
            tilt_deg=float(rng.normal(0, TOL["tilt_deg"])),
            gain=(float(g[0]), float(g[1]), float(g[2])),
            offset_mt=(float(o[0]), float(o[1]), float(o[2])),
        ))
    magnet = replace(mg.REFERENCE.magnet, tilt_deg=float(rng.normal(0, TOL["magnet_tilt_deg"])))
    return replace(mg.REFERENCE, magnet=magnet, sensors=tuple(sensors))


def rows(counts: np.ndarray, temp_c: float | np.ndarray) -> list[list[int]]:
    t = np.broadcast_to(np.rint(np.asarray(temp_c) * 100).astype(int), counts.shape[:1])
    return [[int(c[0, 0]), int(c[0, 2]), int(c[1, 0]), int(c[1, 2]), int(tt)] for c, tt in zip(counts, t, strict=True)]


def float_depth(cal: dict, counts: np.ndarray, temp_c: float) -> np.ndarray:
    """The estimator's math in float64: same tables, validity rules, blend and compensation; NaN = invalid."""
    dt = float(np.clip(temp_c * 100, -4000, 12500)) - cal["cal_temp_cdeg"]
    per = []
    for i, s in enumerate(cal["sensors"]):
        x = counts[:, i, 0].astype(float)
        z = counts[:, i, 2].astype(float)
        c = s["min_field_ut"] * 32768 / (s["range_mt"] * 1000)
        ok = (np.abs(x) < 32000) & (np.abs(z) < 32000) & (x * x + z * z >= c * c)
        z = z * (1 - s["z_gain_tc_ppm"] * 1e-6 * dt / 100)
        ang = np.degrees(np.arctan2(z, -x)) * 1000
        a = np.array(s["angle_mdeg"], float)
        d = np.array(s["disp_um"], float)
        ok &= (ang >= a[0]) & (ang <= a[-1])
        per.append(np.where(ok, np.interp(ang, a, d), np.nan))
    da, db = per
    lo, hi = cal["blend_um"]
    w = np.clip(((da + db) / 2 - lo) / (hi - lo), 0, 1)
    both = da + w * (db - da)
    both = np.where(np.abs(db - da) > cal["disagree_um"], np.nan, both)
    disp = np.where(np.isnan(da), db, np.where(np.isnan(db), da, both))
    return disp * (1 + cal["disp_tc_ppm"] * 1e-6 * dt / 100) / 1000.0


def run_micropython(job: dict) -> list[dict]:
    exe = Path(sys.executable).with_name("micropython")
    with tempfile.TemporaryDirectory() as td:
        src, inp, out = Path(td, "runner.py"), Path(td, "in.json"), Path(td, "out.json")
        src.write_text(RUNNER)
        inp.write_text(json.dumps(job))
        env = dict(os.environ, MICROPYPATH=str(ROOT / "firmware"))
        subprocess.run([str(exe), "-X", "heapsize=64M", str(src), str(inp), str(out)], check=True, env=env,
                       cwd=ROOT)
        return json.loads(out.read_text())


def stats(err: np.ndarray) -> tuple[float, float]:
    e = err[~np.isnan(err)]
    return float(np.sqrt(np.mean(e * e))), float(np.abs(e).max())


def main() -> int:
    con = Console()
    rng = np.random.default_rng(SEED)
    geom = as_built(rng)
    p = np.round(np.arange(0.0, 80.0 + STEP_MM / 2, STEP_MM), 6)
    base = mg.factory_calibration()
    earth = (0.03, 0.02, -0.04)  # ~0.05 mT: the earth's field, constant during the sweep

    def jig_rows(g: mg.Geometry) -> list[list[int]]:
        out = []
        for pj in JIG_MM:
            c = np.rint(mg.sample_counts(g, np.full(JIG_AVERAGE, pj), rng, 32, 20.0, earth).mean(axis=0))
            out.append([int(c[0, 0]), int(c[0, 2]), int(c[1, 0]), int(c[1, 2])])
        return out

    runs: dict[str, tuple[np.ndarray, float]] = {}
    with Progress(console=con, transient=True) as prog:
        task = prog.add_task("simulating fields", total=7 + MONTE_CARLO_CLIPS)
        jig = jig_rows(geom)
        prog.advance(task)
        runs["noise 32x, 20 C"] = (mg.sample_counts(geom, p, rng, 32, 20.0, earth), 20.0)
        prog.advance(task)
        runs["no noise, 20 C"] = (mg.sample_counts(geom, p, None, 32, 20.0, earth), 20.0)
        prog.advance(task)
        runs["noise 32x, 40 C"] = (mg.sample_counts(geom, p, rng, 32, 40.0, earth), 40.0)
        prog.advance(task)
        runs["noise 32x, +0.2 mT stray"] = (mg.sample_counts(geom, p, rng, 32, 20.0, (0.15, 0.05, 0.12)), 20.0)
        prog.advance(task)
        runs["noise 8x, 20 C"] = (mg.sample_counts(geom, p, rng, 8, 20.0, earth), 20.0)
        prog.advance(task)
        clips = [{"jig": jig, "runs": [rows(c, t) for c, t in runs.values()]}]
        for _ in range(MONTE_CARLO_CLIPS):
            g = as_built(rng)
            clips.append({"jig": jig_rows(g), "runs": [rows(mg.sample_counts(g, p, rng, 32, 20.0, earth), 20.0)]})
            prog.advance(task)
        job = {"base": base, "temp_cdeg": 2000, "jig_um": [round(v * 1000) for v in JIG_MM], "clips": clips}
        prog.update(task, description="fixed point on MicroPython")
        results = run_micropython(job)
        prog.advance(task)

    res = results[0]
    cal = res["cal"]
    fixed = {name: np.array(d, float) for name, d in zip(runs, res["depth_um"], strict=True)}
    for v in fixed.values():
        v[v == INVALID] = np.nan
        v /= 1000.0

    con.print("[bold]Needle depth, reference geometry[/] (6x10 mm N42 magnet, TMAG5273 A1/B1 at 20/60 mm, "
              "12 mm gap; factory table fitted to 8 jig points)")
    con.print("as built: " + ", ".join(
        f"{s.name} x {s.x_mm:.2f} mm gap {s.gap_mm:.2f} mm tilt {s.tilt_deg:+.2f} deg "
        f"gain z/x {s.gain[2] / s.gain[0]:.4f}" for s in geom.sensors)
        + f", magnet tilt {geom.magnet.tilt_deg:+.2f} deg")
    con.print("jig fit residual RMS per sensor: " + ", ".join(f"{v:.0f} um" for v in res["fit_rms_um"]))
    con.print(f"noise per axis: {mg.noise_mt(32) * 1000:.1f} uT at CONV_AVG 32x "
              f"({mg.NOISE_1X_MT * 1000:.0f} uT at 1x, assumed), quantisation {40 / 32768 * 1000:.2f} uT/LSB")

    tab = Table(title="depth error over 0-80 mm (mm)")
    for col in ("run", "valid", "RMS", "max", "hand-off RMS", "hand-off max"):
        tab.add_column(col, justify="right" if col != "run" else "left")
    lo, hi = (v / 1000 for v in cal["blend_um"])
    seam = (p >= lo) & (p <= hi)
    for name, d in fixed.items():
        err = d - p
        rms, mx = stats(err)
        hrms, hmx = stats(err[seam])
        tab.add_row(name, f"{np.mean(~np.isnan(d)) * 100:.1f} %", f"{rms:.3f}", f"{mx:.3f}", f"{hrms:.3f}",
                    f"{hmx:.3f}")
    con.print(tab)

    main_name = "noise 32x, 20 C"
    counts, t = runs[main_name]
    ref = float_depth(cal, counts, t)
    fx = fixed[main_name]
    both = ~np.isnan(ref) & ~np.isnan(fx)
    mismatch = int(np.sum(np.isnan(ref) != np.isnan(fx)))
    fvf_rms, fvf_max = stats((fx - ref)[both])
    ref_rms, ref_max = stats(ref - p)
    rms, mx = stats(fx - p)

    clean = fixed["no noise, 20 C"]
    span = (p >= 30) & (p <= 50)
    steps = np.diff(clean[span]) - STEP_MM
    con.print(f"float64 reference vs truth: RMS {ref_rms:.3f} mm, max {ref_max:.3f} mm")
    con.print(f"fixed point vs float64: RMS {fvf_rms * 1000:.2f} um, max {fvf_max * 1000:.2f} um "
              f"({mismatch} validity mismatches of {len(p)})")
    worst_step = np.nanmax(np.abs(steps)) * 1000
    con.print(f"hand-off {lo:.0f}-{hi:.0f} mm, no noise: largest step deviation {worst_step:.1f} um "
              f"per {STEP_MM * 1000:.0f} um step")
    mc = []
    for r in results[1:]:
        d = np.array(r["depth_um"][0], float)
        d[d == INVALID] = np.nan
        mc.append(stats(d / 1000.0 - p))
    mc_rms = np.array([v[0] for v in mc])
    mc_max = np.array([v[1] for v in mc])
    con.print(f"{MONTE_CARLO_CLIPS} more as-built clips, each jig-calibrated (noise 32x, 20 C): depth RMS median "
              f"{np.median(mc_rms):.3f} mm, worst {mc_rms.max():.3f} mm; max error median {np.median(mc_max):.3f} mm, "
              f"worst {mc_max.max():.3f} mm; {int(np.sum(mc_rms <= TARGET_RMS_MM))}/{len(mc)} meet the RMS target")
    ok1 = rms <= TARGET_RMS_MM
    ok2 = fvf_rms <= TARGET_FIXED_VS_FLOAT_MM
    con.print(f"[bold]depth RMS {rms:.3f} mm (max {mx:.3f} mm): "
              + ("[green]meets[/]" if ok1 else f"[red]misses by {rms - TARGET_RMS_MM:.3f} mm[/]")
              + f" the {TARGET_RMS_MM} mm target")
    con.print(f"[bold]fixed vs float64 RMS {fvf_rms:.4f} mm: "
              + ("[green]meets[/]" if ok2 else f"[red]misses by {fvf_rms - TARGET_FIXED_VS_FLOAT_MM:.4f} mm[/]")
              + f" the {TARGET_FIXED_VS_FLOAT_MM} mm target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
