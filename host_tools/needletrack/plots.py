"""Plots of recordings: what the device sent against the scenario's truth, with the session's events."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from needletrack.protocol import Flag
from needletrack.recording import Recording

_EVENT_STYLE = {"twitch": ("tab:red", "twitch"), "pass": ("tab:green", "pass"), "gap": ("black", "gap")}


def session_overview(rec: Recording, out: Path, title: str = "") -> Path:
    """Needle angle, depth and tip depth over time, device against truth, events marked; error panels below."""
    s = rec.samples
    t = s["device_time_s"]
    fig, axes = plt.subplots(4, 1, figsize=(12, 10), sharex=True,
                             gridspec_kw={"height_ratios": [3, 3, 1.4, 1.4]})
    ax_angle, ax_depth, ax_angle_err, ax_depth_err = axes
    truth = rec.truth
    ax_angle.plot(t, s["needle_angle_deg"], color="tab:blue", lw=1.2, label="needle angle (device)")
    ax_angle.plot(t, s["pitch_deg"], color="tab:purple", lw=0.8, alpha=0.7, label="probe pitch (device)")
    ax_depth.plot(t, s["depth_mm"], color="tab:orange", lw=1.2, label="depth (device)")
    ax_depth.plot(t, s["tip_depth_mm"], color="tab:brown", lw=1.0, label="tip depth (device)")
    if truth is not None:
        tt = truth["device_time_s"]
        ax_angle.plot(tt, truth["needle_angle_deg"], "k--", lw=0.8, label="truth")
        ax_depth.plot(tt, truth["depth_mm"], "k--", lw=0.8, label="truth")
        ax_angle_err.plot(t, s["needle_angle_deg"] - np.interp(t, tt, truth["needle_angle_deg"]), color="tab:blue",
                          lw=0.8)
        ax_depth_err.plot(t, s["depth_mm"] - np.interp(t, tt, truth["depth_mm"]), color="tab:orange", lw=0.8)
    nogo = rec.session.get("scenario", {}).get("nogo_depth_mm")
    if nogo is not None:
        ax_depth.axhline(nogo, color="red", lw=1.5, ls=":", label=f"no-go tip depth {nogo:g} mm")
    # Time ranges where the device said its values were not there (NA): shaded, never interpolated across.
    for ax, col in ((ax_angle, "needle_angle_deg"), (ax_depth, "depth_mm")):
        missing = np.isnan(s[col])
        if missing.any():
            ax.fill_between(t, 0, 1, where=missing, transform=ax.get_xaxis_transform(), color="0.85",
                            label="no measurement (flagged)")
    # What the device said about the no-go depth, sample by sample: amber within the margin, red at or past it.
    for flag, colour, label in ((Flag.NOGO_NEAR, "orange", "no-go near (device)"),
                                (Flag.NOGO_REACHED, "red", "no-go reached (device)")):
        on = np.array([flag in f for f in rec.flags])
        if on.any():
            ax_depth.fill_between(t, 0, 1, where=on, transform=ax_depth.get_xaxis_transform(), color=colour,
                                  alpha=0.18, label=label)
    seen: set[str] = set()
    for when, kind, _ in rec.events:
        if kind in _EVENT_STYLE:
            colour, label = _EVENT_STYLE[kind]
            for ax in (ax_angle, ax_depth):
                ax.axvline(when, color=colour, lw=0.8, alpha=0.6, label=label if label not in seen else None)
            seen.add(label)
    ax_angle.set_ylabel("deg")
    ax_depth.set_ylabel("mm")
    ax_depth.invert_yaxis()  # deeper is lower, as on the ultrasound image
    ax_angle_err.set_ylabel("angle err (deg)")
    ax_depth_err.set_ylabel("depth err (mm)")
    ax_depth_err.set_xlabel("device time (s)")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    ax_angle.legend(loc="upper right", fontsize=8, ncol=3)
    ax_depth.legend(loc="lower right", fontsize=8, ncol=3)
    import textwrap

    fig.suptitle("\n".join(textwrap.wrap(title or "NeedleTrack session", 110)))
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
