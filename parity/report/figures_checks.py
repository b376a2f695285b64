"""The figures of the checks beyond the forward stages (matplotlib, files only): the checkpoint
round trip (the training path's object beside the reloaded inference path's), the budget each
gradient or golden key used, and the training loss curves. `check_figures` says which a run gets:
a checkpoint or a golden figure only where that check failed, gradients and training wherever
they ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from parity.report.drawing import finish, panel, pyplot, centre_overlap
from parity.run.results import CaseResult

BARS_SHOWN = 20


def _checkpoint_figure(result: CaseResult, path: Path) -> None:
    """The first backend whose own checkpoint round trip failed: object.trimmed amplitude of its
    in-memory training path, of its saved → loaded inference path, and their difference."""
    plt = pyplot()
    check = next(c for c in result.checkpoints if not c.passed and c.saved == c.loaded_by)
    name = check.saved
    train = np.asarray(result.traces[name]["object.trimmed"])[0, :, :, 0]
    loaded = np.asarray(result.reloaded[name]["object.trimmed"])[0, :, :, 0]
    train, loaded, note = centre_overlap(train, loaded)
    a, b = np.abs(train).astype(np.float64), np.abs(loaded).astype(np.float64)
    hi = float(max(a.max(), b.max())) or 1.0
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.6), squeeze=False)
    panel(fig, axes[0, 0], a, f"training path, in memory\nvariance {a.var():.3g}", "viridis", 0, hi)
    panel(fig, axes[0, 1], b, f"saved → loaded, inference path\nvariance {b.var():.3g}", "viridis", 0, hi)
    panel(fig, axes[0, 2], np.abs(a - b), f"|difference|\nmax {np.abs(a - b).max():.2e}", "magma", 0, None)
    finish(fig, f"{result.case} · {result.dtype} · checkpoint {check.direction}: object.trimmed amplitude, group 0\n"
                 f"the reloaded inference path parts from the training path at {check.first_stage}"
                 + (f"; {note}" if note else ""), path, 11)


def _budget_figure(rows: list[tuple[str, float]], title: str, path: Path, what: str) -> None:
    """Horizontal bars: the share of its tolerance each item used (log scale; over 1 fails), the
    worst BARS_SHOWN first."""
    plt = pyplot()
    rows = sorted(rows, key=lambda r: -r[1])[:BARS_SHOWN]
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(rows) + 1.6))
    used = np.maximum(np.array([r[1] for r in rows], dtype=np.float64), 1e-12)
    colours = ["tab:red" if u > 1 else "tab:green" for u in used]
    ax.barh(np.arange(len(rows)), used, color=colours)
    ax.set_yticks(np.arange(len(rows)), [r[0] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", lw=1)
    ax.set_xlabel(f"{what} ÷ its tolerance (over 1: fails; 0 drawn at 1e-12)", fontsize=8)
    finish(fig, title, path, 10)


def _gradients_figure(result: CaseResult, path: Path) -> None:
    name, check = next(iter(result.gradients.items()))
    rows = [(s.stage, s.budget_used) for s in check.comparison.stages if s.budget_used is not None]
    failing = sum(u > 1 for _, u in rows)
    _budget_figure(rows, f"{result.case} · {result.dtype} · {name} vs {result.ref}: loss terms and gradients, "
                         f"{failing} of {len(rows)} over their tolerance", path, "relative error")


def _golden_figure(result: CaseResult, path: Path) -> None:
    name, golden = next((n, g) for n, g in result.golden.items() if not g.passed)
    rows = [(m.key, m.difference / m.allowed) for m in golden.mismatches if m.difference is not None and m.allowed]
    inputs = f"; inputs changed: {', '.join(golden.inputs_changed)}" if golden.inputs_changed else ""
    _budget_figure(rows, f"{result.case} · {result.dtype} · {name} against its golden: {len(golden.mismatches)} of "
                         f"{golden.compared} keys out of tolerance{inputs}", path, "difference")


def _training_figure(result: CaseResult, path: Path) -> None:
    """The loss curves of the reference and every candidate over the Adam steps, and their
    relative difference on a log scale."""
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    first = next(iter(result.training.values()))
    steps = np.arange(len(first.ref_losses))
    top.plot(steps, first.ref_losses, "o-", color="black", label=f"{result.ref} (reference)")
    for name, check in result.training.items():
        cand = np.asarray(check.cand_losses, dtype=np.float64)
        ref = np.asarray(check.ref_losses, dtype=np.float64)
        top.plot(np.arange(cand.size), cand, "x--", label=name)
        rel = np.abs(cand - ref[:cand.size]) / np.maximum(np.abs(ref[:cand.size]), np.finfo(float).tiny)
        bottom.semilogy(np.arange(cand.size), np.maximum(rel, 1e-17), "x-", label=f"|{name} − {result.ref}| / |{result.ref}|")
    top.set_ylabel("loss before the step")
    top.legend(fontsize=8)
    bottom.set_ylabel("relative difference (0 drawn at 1e-17)")
    bottom.set_xlabel("Adam step")
    bottom.legend(fontsize=8)
    finish(fig, f"{result.case} · {result.dtype} · training loss, {len(steps)} Adam steps", path)



def check_figures(result: CaseResult) -> list[tuple[str, Callable[[CaseResult, Path], None]]]:
    """(kind, draw) for each check figure this run gets."""
    todo = []
    if any(not c.passed and c.saved == c.loaded_by and c.saved in result.reloaded and c.saved in result.traces
           for c in result.checkpoints):
        todo.append(("checkpoint", _checkpoint_figure))
    if result.gradients and any(s.budget_used is not None
                                for s in next(iter(result.gradients.values())).comparison.stages):
        todo.append(("gradients", _gradients_figure))
    if any(not g.passed and any(m.difference is not None and m.allowed for m in g.mismatches)
           for g in result.golden.values()):
        todo.append(("golden", _golden_figure))
    if result.training and any(c.cand_losses for c in result.training.values()):
        todo.append(("training", _training_figure))
    return todo
