"""The figures of a parity run (matplotlib, drawn to files only): patch amplitude and phase,
canvas and diffraction of the reference next to the first candidate, each origin and the error
distributions; the figures of the other checks (checkpoint, gradients, golden, training) are in
parity.report.figures_checks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from parity.report.drawing import finite, finish, panel, pyplot, save_png, centre_overlap
from parity.run.results import CaseResult

GROUPS_SHOWN = 4


def _patch_figure(result: CaseResult, part: str, path: Path) -> None:
    """Rows: reference, candidate, |ref − cand|, |ref − cand| / max|ref patch|; columns: groups
    (channel 0). The first candidate is drawn."""
    plt = pyplot()
    fn = np.abs if part == "amplitude" else np.angle
    ref, oth = (result.traces[n]["object.patches"] for n in (result.ref, result.candidates[0]))
    groups = min(GROUPS_SHOWN, ref.shape[0])
    fig, axes = plt.subplots(4, groups, figsize=(3.2 * groups, 11), squeeze=False)
    cmap = "viridis" if part == "amplitude" else "twilight"
    unit = "" if part == "amplitude" else "rad"
    for g in range(groups):
        ra, ob, note = centre_overlap(ref[g, :, :, 0], oth[g, :, :, 0])
        a, b = fn(ra).astype(np.float64), fn(ob).astype(np.float64)
        if part == "phase":  # the phase of a zero amplitude means nothing: leave those pixels blank
            a = np.where(np.abs(ra) > 0, a, np.nan)
            b = np.where(np.abs(ob) > 0, b, np.nan)
        both = finite(np.concatenate([a, b]))
        lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
        diff = np.abs(a - b)
        worst = float(finite(diff).max(initial=0.0))
        scale = float(finite(np.abs(a)).max(initial=0.0)) or 1.0
        R, O = result.ref, result.candidates[0]
        panel(fig, axes[0, g], a, f"{R} {part}\ngroup {g}", cmap, lo, hi, unit)
        panel(fig, axes[1, g], b, f"{O} {part}\ngroup {g}", cmap, lo, hi, unit)
        panel(fig, axes[2, g], diff, f"|{R} − {O}|\nmax {worst:.2e}", "magma", 0, None, unit)
        panel(fig, axes[3, g], diff / scale, f"|{R} − {O}| / max|{R}|\nmax {worst / scale:.2e}",
               "magma", 0, None, "relative")
    fig.suptitle(f"{result.case} · {result.dtype} · object.patches {part} (channel 0)"
                 + (f"\n{note}" if note else ""), fontsize=12)
    fig.tight_layout()
    save_png(fig, path)


def _canvas_figure(result: CaseResult, path: Path) -> None:
    """Group 0's canvas: amplitude and phase for both backends and the amplitude difference."""
    plt = pyplot()
    full_ref, full_oth = (result.traces[n]["object.canvas"][0, :, :, 0] for n in (result.ref, result.candidates[0]))
    ref, oth, note = centre_overlap(full_ref, full_oth)
    fig, axes = plt.subplots(2, 3, figsize=(12, 7.5))
    amp_hi = float(max(np.abs(full_ref).max(), np.abs(full_oth).max()))
    R, O = result.ref, result.candidates[0]
    for row, (name, c) in enumerate(((R, full_ref), (O, full_oth))):  # each side whole, the differences on the overlap
        panel(fig, axes[row, 0], np.abs(c), f"{name} canvas amplitude {c.shape[0]}×{c.shape[1]}", "viridis", 0, amp_hi)
        panel(fig, axes[row, 1], np.angle(c), f"{name} canvas phase", "twilight", -np.pi, np.pi, "rad")
    diff = np.abs(ref.astype(np.complex128) - oth.astype(np.complex128))
    where = f" on the {ref.shape[0]}×{ref.shape[1]} centre" if note else ""
    panel(fig, axes[0, 2], diff, f"|{R} − {O}|{where}, max {diff.max():.2e}", "magma", 0, None)
    rel = diff / (np.abs(ref).max() or 1.0)
    panel(fig, axes[1, 2], np.log10(rel + 1e-300).clip(-20, 0), f"log10 relative |{R} − {O}|{where}",
           "magma", -20, 0, "log10")
    finish(fig, f"{result.case} · {result.dtype} · object.canvas, group 0 (M = {result.config.padded_size})"
            + (f"\ndifferences on the {note}" if note else ""), path)


def _diffraction_figure(result: CaseResult, path: Path) -> None:
    """Group 0, channel 0 on a log scale: the measured input and both predicted intensities."""
    plt = pyplot()
    t_ref, t_oth = result.traces[result.ref], result.traces[result.candidates[0]]
    measured = t_ref["input.diffraction"][0, :, :, 0].astype(np.float64) ** 2
    pred_ref = t_ref["diffraction.intensity"][0, :, :, 0].astype(np.float64)
    pred_oth = t_oth["diffraction.intensity"][0, :, :, 0].astype(np.float64)
    lo = max(1e-3, float(min(measured[measured > 0].min(initial=1.0), pred_ref[pred_ref > 0].min(initial=1.0))))
    hi = float(max(measured.max(), pred_ref.max(), pred_oth.max()))
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.4))
    for ax, img, title in ((axes[0], measured, "measured (input·s)²"),
                           (axes[1], pred_ref, f"{result.ref} diffraction.intensity"),
                           (axes[2], pred_oth, f"{result.candidates[0]} diffraction.intensity")):
        panel(fig, ax, np.log10(np.clip(img, lo, None)), title, "inferno", np.log10(lo), np.log10(hi), "log10")
    rel = np.abs(pred_ref - pred_oth) / (pred_ref.max() or 1.0)
    panel(fig, axes[3], np.log10(rel + 1e-300).clip(-20, 0),
           f"log10 relative |{result.ref} − {result.candidates[0]}|", "magma", -20, 0, "log10")
    fig.suptitle(f"{result.case} · {result.dtype} · diffraction, group 0 channel 0 (log scale)", fontsize=12)
    fig.tight_layout()
    save_png(fig, path)


def _origin_figure(result: CaseResult, cand: str, origin: dict, path: Path) -> None:
    """One origin at the worst element's group and channel: the reference's stage, the
    candidate's stage computed from the reference's inputs, and their local difference (a complex
    stage: amplitude above, phase below)."""
    plt = pyplot()
    stage = origin["stage"]
    ref_all = np.asarray(result.traces[result.ref][stage])
    local_all = np.asarray(result.local[cand][stage])
    at = next((s.worst_at for s in result.comparisons[cand].stages if s.stage == stage), None) or {}
    g, c = at.get("group", 0), at.get("channel", 0)
    ref, local = (x[g, :, :, min(c, x.shape[-1] - 1)] for x in (ref_all, local_all))
    ref, local, note = centre_overlap(ref, local)
    complex_stage = np.iscomplexobj(ref)
    floor = 1e-6 * float(np.abs(ref_all).max() or 1.0)  # no phase where there is no amplitude: blank there

    def phase(x):
        return np.where(np.abs(x) > floor, np.angle(x), np.nan)

    parts = [("amplitude", np.abs, "viridis", None), ("phase", phase, "twilight", (-np.pi, np.pi))] \
        if complex_stage else [("value", np.real, "viridis", None)]
    fig, axes = plt.subplots(len(parts), 3, figsize=(14, 4.4 * len(parts)), squeeze=False)
    R = result.ref
    for row, (part, take, cmap, span) in enumerate(parts):
        a, b = take(ref).astype(np.float64), take(local).astype(np.float64)
        lo, hi = span or (float(min(np.nanmin(a), np.nanmin(b))), float(max(np.nanmax(a), np.nanmax(b))))
        panel(fig, axes[row, 0], a, f"{R} {stage} ({part})", cmap, lo, hi)
        panel(fig, axes[row, 1], b, f"{cand} fed {R}'s inputs ({part})", cmap, lo, hi)
        if row == 0:
            rel = np.abs(ref.astype(np.complex128) - local.astype(np.complex128)) / (np.abs(ref_all).max() or 1.0)
            panel(fig, axes[0, 2], np.log10(rel + 1e-300).clip(-20, 1),
                   f"log10 |local difference| / max|{R}|, max {rel.max():.2e}", "magma", -20, 1, "log10")
        else:
            turn = np.angle(np.exp(1j * (b - a)))  # the phase difference, wrapped to (−π, π]
            panel(fig, axes[row, 2], turn, "phase difference (rad)", "twilight", -np.pi, np.pi, "rad")
    finish(fig, f"{result.case} · {result.dtype} · origin {stage} of {cand}: blamed on {origin['short']} "
                 f"(group {g}, channel {c})" + (f"\n{note}" if note else ""), path, 11)


def _error_histograms(result: CaseResult, path: Path) -> None:
    """Per failing stage of the first candidate (forward order, at most 8) the distribution of
    log10 |Δ| / max|ref| over the elements, the tolerance and the p99 marked."""
    plt = pyplot()
    cand = result.candidates[0]
    failing = [s for s in result.comparisons[cand].stages if not s.passed and s.quantiles is not None][:8]
    cols = min(4, len(failing))
    rows = -(-len(failing) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    ref, oth = result.traces[result.ref], result.traces[cand]
    for ax, s in zip(axes.flat, failing):
        a, b = np.asarray(ref[s.stage]), np.asarray(oth[s.stage])
        wide = np.complex128 if np.iscomplexobj(a) else np.float64
        delta = np.abs(b.astype(wide) - a.astype(wide)).ravel()
        rel = delta[np.isfinite(delta)] / (np.abs(a).max() or 1.0)
        ax.hist(np.log10(rel + 1e-300).clip(-20, 2), bins=60, range=(-20, 2), color="tab:blue")
        if s.noise:  # a calibrated stage: what honest ports reach
            ax.axvspan(-20, np.log10(s.noise), color="tab:green", alpha=0.15, label=f"measured noise ≤ {s.noise:.1e}")
        ax.axvline(np.log10(s.tolerance), color="tab:red", label=f"tolerance {s.tolerance:.0e}")
        ax.axvline(np.log10(s.quantiles["p99"] + 1e-300), color="tab:orange", ls="--",
                   label=f"p99 {s.quantiles['p99']:.1e}")
        mark = f" ({s.mark})" if s.mark else ""
        ax.set_title(f"{s.stage}{mark}: {s.n_over} of {s.n_elements} over", fontsize=9)
        ax.set_xlabel("log10 |Δ| / max|ref|  (exactly equal: at −20)", fontsize=8)
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(failing):]:
        ax.axis("off")
    finish(fig, f"{result.case} · {result.dtype} · {result.ref} vs {cand}: error distribution of each failing stage",
            path, 11)


FIGURES = {
    "patches_amplitude": lambda r, p: _patch_figure(r, "amplitude", p),
    "patches_phase": lambda r, p: _patch_figure(r, "phase", p),
    "canvas": _canvas_figure,
    "diffraction": _diffraction_figure,
}
# the stages each figure draws from both the reference and the first candidate
FIGURE_STAGES = {
    "patches_amplitude": ("object.patches",), "patches_phase": ("object.patches",),
    "canvas": ("object.canvas",),
    "diffraction": ("input.diffraction", "diffraction.intensity"),
}


def draw_case(result: CaseResult, folder: Path) -> list[Path | str]:
    """Draw the figures of one case and dtype into `folder` (`<kind>_<dtype>.png`): their paths,
    and for a figure that could not be drawn a line saying why (a figure never ends a run)."""
    from parity.report.figures_checks import check_figures

    drawn: list[Path | str] = []
    todo = check_figures(result)
    sides = (result.ref, result.candidates[0])
    if all(name in result.traces for name in sides):
        pair = [result.traces[name] for name in sides]
        todo += [(kind, draw) for kind, draw in FIGURES.items()
                 # a candidate that does not provide these stages gets no such figure
                 if all(stage in trace for stage in FIGURE_STAGES[kind] for trace in pair)]
    first = result.comparisons.get(result.candidates[0])
    if first is not None and any(not s.passed and s.quantiles for s in first.stages) \
            and all(name in result.traces for name in sides):
        todo.append(("errors", _error_histograms))
    for cand, origins in result.origins.items():
        for origin in origins:
            if origin["stage"] in result.local.get(cand, {}):
                todo.append((f"origin_{cand}_{origin['stage'].replace('.', '_')}",
                             lambda r, p, c=cand, o=origin: _origin_figure(r, c, o, p)))
    for kind, draw in todo:
        path = folder / f"{kind}_{result.dtype}.png"
        try:
            draw(result, path)
        except Exception as exc:  # noqa: BLE001 - the report says which figure and why
            pyplot().close("all")
            drawn.append(f"figure {path.name} could not be drawn: {exc.__class__.__name__}: {exc}")
            continue
        drawn.append(path)
    return drawn
