"""The report's plots, as matplotlib figures made without pyplot (no display, no global state)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure


def interval_histogram(intervals_ms: np.ndarray, nominal_ms: float, title: str) -> Figure:
    """Sample intervals from device timestamps, with the nominal period marked."""
    fig = Figure(figsize=(9, 3.2))
    ax = fig.subplots()
    lo, hi = float(np.min(intervals_ms)), float(np.max(intervals_ms))
    bins = np.linspace(min(lo, nominal_ms) - 0.05 * nominal_ms, max(hi, nominal_ms) + 0.05 * nominal_ms, 80).tolist()
    ax.hist(intervals_ms, bins=bins, color="tab:blue", alpha=0.85)
    ax.axvline(nominal_ms, color="k", ls="--", lw=1, label=f"nominal {nominal_ms:g} ms")
    ax.axvline(float(np.mean(intervals_ms)), color="tab:red", lw=1, label=f"mean {np.mean(intervals_ms):.4f} ms")
    ax.set_yscale("log")
    ax.set_xlabel("interval between consecutive samples, device time (ms)")
    ax.set_ylabel("samples")
    ax.set_title(title)
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    return fig


def against_truth(t_s: np.ndarray, rows: list[tuple[str, str, np.ndarray, np.ndarray]], title: str) -> Figure:
    """Per quantity (label, unit, device, truth): the device against the truth, and the error below it."""
    fig = Figure(figsize=(10, 2.6 * 2 * len(rows)))
    axes = fig.subplots(2 * len(rows), 1, sharex=True,
                        gridspec_kw={"height_ratios": [3, 1.4] * len(rows)})
    for i, (label, unit, device, truth) in enumerate(rows):
        ax, err = axes[2 * i], axes[2 * i + 1]
        ax.plot(t_s, truth, "k--", lw=1, label="truth")
        ax.plot(t_s, device, color="tab:blue" if i % 2 == 0 else "tab:orange", lw=1.1, label="device")
        ax.set_ylabel(f"{label} ({unit})")
        ax.legend(loc="best")
        ax.grid(alpha=0.3)
        err.plot(t_s, device - truth, color="tab:red", lw=0.8)
        err.axhline(0, color="k", lw=0.5)
        err.set_ylabel(f"error ({unit})")
        err.grid(alpha=0.3)
    axes[0].set_title(title)
    axes[-1].set_xlabel("device time (s)")
    fig.tight_layout()
    return fig


def free_ram(t_s: np.ndarray, free_bytes: np.ndarray, title: str) -> Figure:
    fig = Figure(figsize=(9, 3))
    ax = fig.subplots()
    ax.plot(t_s, free_bytes / 1024.0, "o-", ms=3, color="tab:green")
    span = max(float(np.ptp(free_bytes)) / 1024.0, 1.0)
    mid = float(np.mean(free_bytes)) / 1024.0
    ax.set_ylim(mid - 2 * span, mid + 2 * span)
    ax.set_xlabel("time since the phase started (s)")
    ax.set_ylabel("free heap (KiB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig


def jig_positions(known_mm: np.ndarray, measured_mm: np.ndarray, title: str) -> Figure:
    fig = Figure(figsize=(9, 3.4))
    ax = fig.subplots()
    ax.bar(known_mm, measured_mm - known_mm, width=1.5, color="tab:orange")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("jig position (mm)")
    ax.set_ylabel("device - jig (mm)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig
