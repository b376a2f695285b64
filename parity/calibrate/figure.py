"""The measured noise per stage and its bound, drawn from a tolerance file's calibration block
(docs/tolerances-origin.md; `make docs-figures` draws the shipped one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def draw_noise(out: Path, device: str = "cpu", dtype: str = "float32", path=None) -> Path:
    """A bar per calibrated stage: its measured noise (the largest honest error; 0 written
    "exact") and its bound, on a log scale, in forward order."""
    from parity.report.drawing import finish, pyplot
    from parity.run.tolerances import TOLERANCE_PATH, load_profile

    profile = load_profile(device, dtype, path=path or TOLERANCE_PATH)
    stages = list(profile.noise or {})
    if not stages:
        raise ValueError(f"{path or TOLERANCE_PATH}: no [noise.{device}.{dtype}] (run `parity calibrate --write`)")
    noise = np.array([profile.noise[s] for s in stages])
    bounds = np.array([profile.for_stage(s) for s in stages])
    floor = 10.0 ** np.floor(np.log10(bounds.min()) - 1)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.2))
    x = np.arange(len(stages))
    ax.bar(x, np.maximum(noise, floor), color="tab:blue", label="measured noise: the largest error of an honest port")
    for i in np.flatnonzero(noise == 0):
        ax.text(i, floor * 1.5, "exact", ha="center", fontsize=8, color="tab:gray")
    ax.scatter(x, bounds, marker="_", s=600, color="tab:red", zorder=3, label="bound")
    ax.set_yscale("log")
    ax.set_ylim(floor, bounds.max() * 40)  # room for the legend above the bars
    ax.set_xticks(x, stages, rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("max|Δ| / max|reference|")
    ax.legend(fontsize=8, loc="upper left")
    out = Path(out)
    finish(fig, f"{device} {dtype}: measured noise and calibrated bound per stage ({profile.name})", out, 10)
    return out
