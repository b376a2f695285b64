"""Debug dumps of parity runs: JSON, PNG figures (`parity.report.figures`), the console lines and the
run's summary table (the markdown report that embeds them: `parity.report.markdown`).

Layout: `<out>/<case>/` holds `stats.json`, `canvas.json`, `offsets.json` (each keyed by dtype)
and the figures `<kind>_<dtype>.png`; `<out>/report.md` and `<out>/summary.json` cover the run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

from parity.report.figures import draw_case
from parity.files import plain, write_atomic
from parity.run.results import CaseResult


# -- JSON ---------------------------------------------------------------------------------------

def write_json(path: Path, payload) -> None:
    write_atomic(path, json.dumps(plain(payload), indent=2, sort_keys=True, allow_nan=False) + "\n")


def _merge_json(path: Path, dtype: str, payload, fresh: bool = False) -> None:
    """Add this dtype's entry to a per-case JSON keyed by dtype (`fresh`: start a new one)."""
    existing = json.loads(path.read_text()) if path.exists() and not fresh else {}
    existing[dtype] = payload
    write_json(path, existing)


# -- per case -----------------------------------------------------------------------------------

def dump_case(result: CaseResult, out: Path, figures: bool = True, fresh: bool = False) -> list[Path]:
    """Write the case's JSON files and (unless `figures` is False) its figures into `<out>/<case>/`;
    return the figure paths. `fresh`: the run's first dtype of the case, whose JSON files start
    anew (never merged with what an earlier, perhaps killed, run left)."""
    folder = Path(out) / result.case
    folder.mkdir(parents=True, exist_ok=True)
    full = result.to_dict()
    first = result.comparisons.get(result.candidates[0])
    _merge_json(folder / "stats.json", result.dtype, fresh=fresh, payload={
        "verdict": full["verdict"], "exit_code": full["exit_code"], "checks": full["checks"],
        "devices": full["devices"], "summaries": full["summaries"],
        "stages": first.to_dict()["stages"] if first else [], "per_candidate": full["per_candidate"],
        "first_divergence": full["first_divergence"], "arbitration": full["arbitration"],
        "path_checks": full["path_checks"], "checkpoints": full["checkpoints"], "golden": full["golden"],
        "gradients": full["gradients"], "training": full["training"], "digests": full["digests"],
        "output": full["output"], "provenance": full["provenance"],
    })
    _merge_json(folder / "canvas.json", result.dtype, fresh=fresh, payload=
                {name: s["train"]["canvas"] for name, s in result.summaries.items() if "canvas" in s.get("train", {})})
    _merge_json(folder / "offsets.json", result.dtype, fresh=fresh, payload=
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
            raised = next((r.backend for r in result.errors if r.check == "forward"), None)
            parts.append(f"{name}: " + (forward.status if forward is not None else
                                        f"not compared ({raised} raised)" if raised else "no comparison"))
            continue
        worst = comparison.worst
        why = "" if worst.rel_error is not None else f" ({worst.message})"
        parts.append(f"{name} worst {worst.stage}: {_fmt(worst.rel_error)}{why}")
    return "; ".join(parts)


# -- run-level summary --------------------------------------------------------------------------

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
               "verdict": r.verdict(), "headline": r.headline(), "exit_code": r.exit_code, "candidates": per,
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


def iter_dtypes(choice: str) -> Iterable[str]:
    return ("float32", "float64") if choice == "all" else (choice,)
