"""The markdown report of a parity run (`<out>/report.md`, with `<out>/summary.json`): per case
and dtype the checks table, the errors, the stage table (with local errors and origin marks where
the run diverged), the origins and their reproductions, checkpoints, gradients, training, patch
statistics and the figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from parity.report.dump import _fmt, summary_markdown, summary_rows, write_json
from parity.files import write_atomic
from parity.run.results import ERROR, FAILED, NOT_RUN, PASSED, CaseResult


_ORIGIN_MARKS = {"origin": "**origin**", "propagated": "propagated", "ok": "ok", "not forced": "*not forced*"}


def _stage_table(comparison) -> list[str]:
    """The stage table; where the origins check ran (a divergence), with each stage's error
    end to end, its local error (computed from the reference's inputs), the amplification over its
    inputs and its mark."""
    local = any(s.mark for s in comparison.stages)
    head = ["stage", "max abs Δ", "rel. error (end to end)"]
    head += ["local error", "amplification", "mark"] if local else []
    noise = any(s.noise is not None for s in comparison.stages)  # a calibrated profile (parity calibrate)
    head += ["tolerance", "budget"] + (["× noise"] if noise else []) + ["worst at (group, ch, row, col)", ""]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in comparison.stages:
        at = s.worst_at or {}
        where = (f"({at['group']}, {at['channel']}, {at['row']}, {at['col']})" if "group" in at
                 else str(at.get("index", "—")))
        budget = "—" if s.budget_used is None else f"{100 * s.budget_used:.1f}%"
        verdict = ("ok" if s.passed and s.provided else f"*{s.message}*" if s.passed else f"**FAIL** {s.message}")
        cells = [f"`{s.stage}`", _fmt(s.max_abs), _fmt(s.rel_error)]
        if local:
            amp = "—" if s.amplification is None else f"×{s.amplification:.3g}"
            cells += [_fmt(s.local_error), amp, _ORIGIN_MARKS.get(s.mark, "—")]
        cells += [_fmt(s.tolerance), budget]
        if noise:
            cells.append("—" if s.noise is None else "exact" if s.noise == 0 and not s.rel_error
                         else "over an exact stage" if s.noise == 0 else f"{s.noise_ratio:.2g}×")
        cells += [where, verdict]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- `{s.stage}` not forced: {s.local_note}" for s in comparison.stages if s.local_note]
    return lines + ([""] + notes if notes else [])


_MARKS = {PASSED: "passed", FAILED: "**failed**", NOT_RUN: "*not run*", ERROR: "**error**"}


def _checks_table(r: CaseResult) -> list[str]:
    """Every check of the run: what, for whom, its state and why."""
    lines = ["| check | backend | state | |", "|---|---|---|---|"]
    for c in r.results:
        lines.append(f"| {c.check} | {c.label or c.backend} | {_MARKS[c.status]} | {c.summary.replace('|', '/')} |")
    return lines


def _error_sections(r: CaseResult) -> list[str]:
    lines = []
    for c in r.errors:
        f = c.failure
        lines += [f"**{c.title}: {f.line()}**", ""]
        lines += ["```", f.traceback.rstrip(), "```", ""] if f.traceback else []
    for name, text in r.output.items():
        lines += [f"What {name} printed during the run (stdout, stderr and warnings):", "",
                  "```", text.rstrip(), "```", ""]
    return lines


def _patch_stats_table(r: CaseResult) -> list[str]:
    lines = ["| backend · path | global_mean | global_std | var_zero_mean | amplitude range |",
             "|---|---|---|---|---|"]
    for name, summ in r.summaries.items():
        for path in (p for p in ("train", "infer", "reloaded") if "patch_stats" in summ.get(p, {})):
            p = summ[path]["patch_stats"]
            lo, hi = p["amplitude_range"]
            lines.append(f"| {name} · {path} | {p['global_mean']:.6g} | {p['global_std']:.6g} "
                         f"| {p['var_zero_mean']:.4g} | [{lo:.4g}, {hi:.4g}] |")
    return lines


def _checkpoint_table(r: CaseResult) -> list[str]:
    """One row per checkpoint direction: saved → loaded by, worst stage, verdict."""
    lines = ["| checkpoint | worst stage | rel. error | verdict |", "|---|---|---|---|"]
    for c in r.checkpoints:
        worst = c.comparison.worst
        verdict = "ok" if c.passed else f"**FAIL** first divergence at `{c.first_stage}`"
        lines.append(f"| {c.direction} | `{worst.stage if worst else '—'}` | "
                     f"{_fmt(worst.rel_error if worst else None)} | {verdict} |")
    return lines


def _gradient_table(check) -> list[str]:
    """Every loss term and gradient, the worst first (share of the tolerance used)."""
    lines = ["| tensor | max abs Δ | rel. error | tolerance | budget | |", "|---|---|---|---|---|---|"]
    for s in sorted(check.comparison.stages, key=lambda s: -(s.budget_used if s.budget_used is not None else np.inf)):
        budget = "—" if s.budget_used is None else f"{100 * s.budget_used:.1f}%"
        mark = "ok" if s.passed and s.provided else s.message if s.passed else f"**FAIL** {s.message}"
        lines.append(f"| `{s.stage}` | {_fmt(s.max_abs)} | {_fmt(s.rel_error)} | {_fmt(s.tolerance)} | {budget} | {mark} |")
    return lines


def _training_table(check) -> list[str]:
    """One row per Adam step: both losses, the worst tensor after the step, pass or fail."""
    lines = [f"| step | {check.ref_name} loss | {check.candidate} loss | worst tensor after the step | rel. error | |",
             "|---|---|---|---|---|---|"]
    for k, step in enumerate(check.steps, start=1):
        worst = max(step.stages, key=lambda s: s.rel_error or 0.0) if step.stages else None
        first = step.first_divergence
        ref = check.ref_losses[k - 1] if k <= len(check.ref_losses) else None
        cand = check.cand_losses[k - 1] if k <= len(check.cand_losses) else None
        lines.append(f"| {k} | {_fmt(ref)} | {_fmt(cand)} | `{worst.stage if worst else '—'}` | "
                     f"{_fmt(worst.rel_error if worst else None)} | "
                     f"{'ok' if first is None else f'**FAIL** at `{first.stage}`'} |")
    return lines


def _origin_lines(r: CaseResult, name: str, out: Path) -> list[str]:
    """Each origin of `name`'s divergence: numpy's opinion from the reference's inputs and the
    minimal reproduction, linked."""
    origins = r.origins.get(name) or []
    if not origins:
        return []
    lines = [f"**{len(origins)} origin{'s' if len(origins) > 1 else ''} of {name}'s divergence** (each stage fed "
             f"{r.ref}'s inputs; numpy recomputes it from the same inputs):", ""]
    for o in origins:
        numpy = "" if not o.get("numpy") else " — numpy's relative error against " + ", ".join(
            f"{side} {err:.2e}" for side, err in o["numpy"].items())
        repro = ""
        if o.get("repro"):
            path = Path(o["repro"])
            shown = path.relative_to(out).as_posix() if path.is_relative_to(out) else str(path)
            repro = f"; minimal reproduction: [`{shown}`]({shown})"
        elif o.get("repro_why"):
            repro = f"; {o['repro_why']}"
        lines.append(f"- `{o['stage']}`: local error {_fmt(o['local_error'])}, blamed on {o['short']}{numpy}{repro}")
    return lines + [""]


_STATES = {
    "running": "**Unfinished run**: {done} of {planned} runs done so far. This report is rewritten after each "
               "run and says so when the run is complete; until then a case that is not here has not been checked.",
    "interrupted": "**Interrupted run**: {done} of {planned} runs done; the rest were not run. "
                   "This is no verdict on them.",
    "failed": "**Run ended by an error**: {done} of {planned} runs done; the rest were not run. "
              "This is no verdict on them.",
}


def write_report(results: Sequence[CaseResult], out: Path, figures: dict[tuple[str, str], list[Path]],
                 state: str = "complete", planned: int | None = None) -> Path:
    """`<out>/report.md` (tables and embedded figures) and `<out>/summary.json`, each written
    atomically. `state`: running (written after each run), complete, interrupted or failed; an
    unfinished report says so at its top and its summary never reads `passed`."""
    out = Path(out)
    planned = len(results) if planned is None else planned
    banner = ["> " + _STATES[state].format(done=len(results), planned=planned), ""] if state in _STATES else []
    lines = ["# ptycho-parity report", "", *banner,
             f"{results[0].ref if results else 'reference'} (reference) vs "
             f"{', '.join(results[0].candidates) if results else 'candidates'}, stage by stage; "
             "relative error = max|Δ| / max|reference|.",
             "", summary_markdown(results)]
    by_case: dict[str, list[CaseResult]] = {}
    for r in results:
        by_case.setdefault(r.case, []).append(r)
    for case, runs in by_case.items():
        lines += [f"## {case}", ""]
        for r in runs:
            lines += [f"### {case} · {r.dtype} · {r.where()} — {r.verdict()}", ""]
            finding = r.finding()
            if finding is not None:
                lines += [f"**{finding.title}**: {finding.summary}", ""]
            lines += _checks_table(r) + [""] + _error_sections(r)
            for name, arbitration in r.arbitrations.items():
                if arbitration:
                    lines += [f"**First divergence of {name}: `{arbitration['stage']}`** — "
                              f"{arbitration['verdict']}", ""]
            for message in r.golden_messages():
                lines += ["**Golden differs**:", "", "```", message, "```", ""]
            bad = {n: [s for s, ok in c.items() if not ok] for n, c in r.path_checks.items()}
            if any(bad.values()):
                lines += [f"**forward_infer differs from forward_train**: {bad}", ""]
            for name, comparison in r.comparisons.items():
                lines += [f"{r.ref} vs {name}:", ""] + _stage_table(comparison) + [""]
                lines += _origin_lines(r, name, out)
            if r.checkpoints:
                lines += ["", "Checkpoints (saved, loaded into a fresh model, inference path vs "
                              "the in-memory training path):", ""] + _checkpoint_table(r)
            for name, g in r.gradients.items():
                lines += ["", f"Gradients (loss terms and d loss / d tensor, worst first; the first divergence "
                              f"is reported in backward order, from the loss towards the input) — {g.describe()}", ""]
                lines += _gradient_table(g)
            for name, t in r.training.items():
                lines += ["", f"Training — {t.describe()}", ""] + _training_table(t)
            lines += ["", "Patch statistics (|object.patches|):", ""] + _patch_stats_table(r) + [""]
            for fig in figures.get((r.case, r.dtype), []):
                if isinstance(fig, str):  # a figure that could not be drawn
                    lines += [f"*{fig}*", ""]
                    continue
                rel = fig.relative_to(out).as_posix()
                lines += [f"![{fig.stem}]({rel})", ""]
    report = out / "report.md"
    write_atomic(report, "\n".join(lines))
    write_json(out / "summary.json", {"state": state, "runs_done": len(results), "runs_planned": planned,
                                      "passed": state == "complete" and all(r.passed for r in results),
                                      "runs": summary_rows(results)})
    return report
