"""Debug dumps of parity runs: JSON, PNG figures (`parity.figures`) and a markdown report.

Layout: `<out>/<case>/` holds `stats.json`, `canvas.json`, `offsets.json` (each keyed by dtype)
and the figures `<kind>_<dtype>.png`; `<out>/report.md` and `<out>/summary.json` cover the run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from parity.figures import draw_case
from parity.results import ERROR, FAILED, NOT_RUN, PASSED, CaseResult


# -- JSON ---------------------------------------------------------------------------------------

def _jsonable(value):
    """Plain JSON: non-finite floats become strings so the files stay strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    return value


def write_json(path: Path, payload) -> None:
    path.write_text(json.dumps(_jsonable(payload), indent=2, sort_keys=True, allow_nan=False) + "\n")


def _merge_json(path: Path, dtype: str, payload) -> None:
    """Add this dtype's entry to a per-case JSON keyed by dtype."""
    existing = json.loads(path.read_text()) if path.exists() else {}
    existing[dtype] = payload
    write_json(path, existing)


# -- per case -----------------------------------------------------------------------------------

def dump_case(result: CaseResult, out: Path, figures: bool = True) -> list[Path]:
    """Write the case's JSON files and (unless `figures` is False) its figures into `<out>/<case>/`;
    return the figure paths."""
    folder = Path(out) / result.case
    folder.mkdir(parents=True, exist_ok=True)
    full = result.to_dict()
    first = result.comparisons.get(result.candidates[0])
    _merge_json(folder / "stats.json", result.dtype, {
        "verdict": full["verdict"], "exit_code": full["exit_code"], "checks": full["checks"],
        "devices": full["devices"], "summaries": full["summaries"],
        "stages": first.to_dict()["stages"] if first else [], "per_candidate": full["per_candidate"],
        "first_divergence": full["first_divergence"], "arbitration": full["arbitration"],
        "path_checks": full["path_checks"], "checkpoints": full["checkpoints"], "golden": full["golden"],
        "gradients": full["gradients"], "training": full["training"], "digests": full["digests"],
        "output": full["output"], "provenance": full["provenance"],
    })
    _merge_json(folder / "canvas.json", result.dtype,
                {name: s["train"]["canvas"] for name, s in result.summaries.items() if "canvas" in s.get("train", {})})
    _merge_json(folder / "offsets.json", result.dtype,
                {name: s["train"]["offsets"] for name, s in result.summaries.items() if "offsets" in s.get("train", {})})
    return draw_case(result, folder) if figures else []


# -- console ------------------------------------------------------------------------------------

def worst_line(result: CaseResult) -> str:
    """Per candidate its worst stage and error, or why there is none (`shape mismatch: ...`)."""
    parts = []
    for name in result.candidates:
        comparison = result.comparisons.get(name)
        if comparison is None or comparison.worst is None:
            forward = next((r for r in result.of("forward") if r.backend == name), None)
            parts.append(f"{name}: {'no comparison' if forward is None else forward.status}")
            continue
        worst = comparison.worst
        why = "" if worst.rel_error is not None else f" ({worst.message})"
        parts.append(f"{name} worst {worst.stage}: {_fmt(worst.rel_error)}{why}")
    return "; ".join(parts)


# -- run-level report ---------------------------------------------------------------------------

def _fmt(x) -> str:
    if x is None:
        return "—"
    return f"{x:.2e}" if isinstance(x, float) else str(x)


def _worst(comparison) -> dict:
    worst = comparison.worst
    return {"worst_stage": worst.stage if worst else None, "rel_error": worst.rel_error if worst else None,
            "budget_used": worst.budget_used if worst else None}


def summary_rows(results: Sequence[CaseResult]) -> list[dict]:
    """One row per case × dtype; the first candidate's figures at the top level (as before) and
    every candidate's under "candidates"; every check's state under "checks"."""
    rows = []
    for r in results:
        empty = {"worst_stage": None, "rel_error": None, "budget_used": None}
        per = {name: {**(_worst(r.comparisons[name]) if name in r.comparisons else empty),
                      "blame": (r.arbitrations.get(name) or {}).get("verdict")} for name in r.candidates}
        first = per[r.candidates[0]]
        row = {"case": r.case, "dtype": r.dtype, "device": r.device, "devices": dict(r.devices), "ref": r.ref, **first,
               "verdict": r.verdict(), "exit_code": r.exit_code, "candidates": per,
               "checks": [{"check": c.check, "backend": c.backend, "label": c.label or c.backend,
                           "status": c.status, "summary": c.summary} for c in r.results],
               "seconds": round(r.seconds, 2)}
        for name, g in r.gradients.items():
            worst = g.comparison.worst
            per[name]["gradients"] = {"passed": g.passed, "first_divergence": g.to_dict()["first_divergence"],
                                      "worst_tensor": worst.stage if worst else None,
                                      "rel_error": worst.rel_error if worst else None}
        for name, t in r.training.items():
            per[name]["training"] = {k: v for k, v in t.to_dict().items() if k not in ("loss", "per_step")}
        rows.append(row)
    return rows


def _candidates(results: Sequence[CaseResult]) -> list[str]:
    return list(dict.fromkeys(c for r in results for c in r.candidates))


def _cells(row: dict, candidates: list[str]) -> list[str]:
    cells = []
    for name in candidates:
        c = row["candidates"].get(name)
        if c is None:
            cells += ["—", "—", "—"]
            continue
        cells += [_fmt(c["worst_stage"]), _fmt(c["rel_error"]),
                  "—" if c["budget_used"] is None else f"{100 * c['budget_used']:.1f}%"]
    return cells


def _headers(candidates: list[str]) -> list[str]:
    if len(candidates) == 1:
        return ["worst stage", "rel. error", "budget used"]
    return [h for c in candidates for h in (f"worst stage ({c})", f"rel. error ({c})", f"budget ({c})")]


def summary_markdown(results: Sequence[CaseResult]) -> str:
    """Markdown summary: one group of columns per candidate against the reference."""
    cands = _candidates(results)
    header = ["case", "dtype", *_headers(cands), "verdict"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary_rows(results):
        blames = [c["blame"] for c in row["candidates"].values() if c["blame"]]
        verdict = row["verdict"] + (f" — {'; '.join(blames)}" if blames else "")
        lines.append("| " + " | ".join([row["case"], row["dtype"], *_cells(row, cands), verdict]) + " |")
    return "\n".join(lines) + "\n"


def summary_table(results: Sequence[CaseResult]) -> str:
    """The final console table: case × dtype, per candidate its worst stage, relative error and
    budget used, then the verdict."""
    cands = _candidates(results)
    header = ("case", "dtype", *[h.replace("budget used", "budget") for h in _headers(cands)], "verdict")
    rows = [(r["case"], r["dtype"], *_cells(r, cands), r["verdict"]) for r in summary_rows(results)]
    widths = [max(len(x[i]) for x in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(header), fmt(tuple("-" * w for w in widths)), *map(fmt, rows)])


_ORIGIN_MARKS = {"origin": "**origin**", "propagated": "propagated", "ok": "ok"}


def _stage_table(comparison) -> list[str]:
    """The stage table; where the origins check ran (a divergence), with each stage's error
    end to end, its local error (computed from the reference's inputs), the amplification over its
    inputs and its mark."""
    local = any(s.mark for s in comparison.stages)
    head = ["stage", "max abs Δ", "rel. error (end to end)"]
    head += ["local error", "amplification", "mark"] if local else []
    head += ["tolerance", "budget", "worst at (group, ch, row, col)", ""]
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
        cells += [_fmt(s.tolerance), budget, where, verdict]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


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
        lines += [f"**{c.title}: {f.line()}**", "", "```", f.traceback.rstrip(), "```", ""]
    for name, text in r.output.items():
        lines += [f"What {name} printed during the run:", "", "```", text.rstrip(), "```", ""]
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


def compare_paths_text(r: CaseResult) -> str:
    """Per backend, as in the report that started the project: the training path in memory next
    to the saved → loaded inference path, and the first stage where they part."""
    def rng(pair) -> str:
        return f"[{pair[0]:.4g}, {pair[1]:.4g}]"

    rows = [("global_mean", lambda s: f"{s['patch_stats']['global_mean']:.6g}"),
            ("global_std", lambda s: f"{s['patch_stats']['global_std']:.6g}"),
            ("var_zero_mean", lambda s: f"{s['patch_stats']['var_zero_mean']:.4g}"),
            ("amplitude range", lambda s: rng(s["patch_stats"]["amplitude_range"])),
            ("phase range", lambda s: rng(s["patch_stats"]["phase_range"])),
            ("canvas amplitude mean / max", lambda s: f"{s['canvas']['amplitude']['mean']:.4g} / "
                                                      f"{s['canvas']['amplitude']['max']:.4g}"),
            ("canvas covered fraction", lambda s: f"{s['canvas']['covered_fraction']:.4g}"),
            ("offsets unique / std", lambda s: f"{s['offsets']['unique_count']} / {s['offsets']['std']:.4g}")]
    out = []
    for check in r.checkpoints:
        if check.saved != check.loaded_by:
            continue
        name = check.saved
        train, reloaded = r.summaries[name]["train"], r.summaries[name]["reloaded"]
        width = max(len(label) for label, _ in rows)
        out.append(f"{r.case} · {r.dtype} · {name}: training path (in memory) vs saved → loaded inference path")
        out.append(f"  {'':{width}}  {'train':>24}  {'reloaded':>24}")
        for label, cell in rows:
            out.append(f"  {label:{width}}  {cell(train):>24}  {cell(reloaded):>24}")
        parted = check.first_stage
        out.append(f"  first stage where they part: {parted}" if parted
                   else "  the paths agree at every stage (within the tolerance profile)")
    return "\n".join(out)


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
        lines.append(f"- `{o['stage']}`: local error {_fmt(o['local_error'])}, blamed on {o['short']}{numpy}{repro}")
    return lines + [""]


def write_report(results: Sequence[CaseResult], out: Path, figures: dict[tuple[str, str], list[Path]]) -> Path:
    """`<out>/report.md` (tables and embedded figures) and `<out>/summary.json`."""
    out = Path(out)
    lines = ["# ptycho-parity report", "",
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
    report.write_text("\n".join(lines))
    write_json(out / "summary.json", {"passed": all(r.passed for r in results), "runs": summary_rows(results)})
    return report


def iter_dtypes(choice: str) -> Iterable[str]:
    return ("float32", "float64") if choice == "all" else (choice,)
