"""A bench result as people read it and as files keep it: the table, the new/old ratios against an
earlier result, and the JSON file (written atomically, after each part while the bench runs)."""

from __future__ import annotations

import json
from pathlib import Path

from parity.bench.measure import GATE_TRAIN_STEPS, SCHEMA


def _flat(result: dict) -> dict[str, float]:
    """The numbers of a bench result by a readable key, for tables and --compare."""
    out = {f"import {k}": v for k, v in result["imports_s"].items()}
    for r in result["backends"]:
        stem = f"{r['backend']} {r['case']} {r['dtype']}"
        for key in ("build_s", "forward_s", "gradient_s", "adam_step_s"):
            if r[key] is not None:
                out[f"{stem} {key[:-2]}"] = r[key]
    for h in result["harness"]:
        for key, value in h.items():
            if key != "case" and value is not None:  # a case file's case has no golden to time
                out[f"harness {h['case']} {key[:-2]}"] = value
    for r in result.get("extended", []):
        out[f"{r['backend']} {r['case']} float64 cold build + forward"] = r["build_s"] + r["forward_s"]
    out["bare forward"] = result["bare_forward_s"]
    out["bare with training"] = result["bare_with_training_s"]
    if result.get("gate_bare_s"):
        out["gate bare"] = result["gate_bare_s"]
    if result.get("gate_checks_s"):
        out["gate checks"] = result["gate_checks_s"]
    for r in result.get("faults", []):
        out[f"fault {r['fault']}"] = r["seconds"]
    for p in result.get("pytest_runs", []):
        name = p.get("label") or p["command"]
        out[f"{name} wall"] = p["wall_s"]
        for key in ("first_result_s", "first_run_s"):
            if p.get(key) is not None:
                out[f"{name} {key[:-2].replace('_', ' ')}"] = p[key]
    out["peak RSS MB"] = result["peak_rss_mb"]
    return out


def _seconds(value, width: int) -> str:
    return f"{value:{width}.3f}" if value is not None else "—".rjust(width)


def format_table(result: dict) -> str:
    lines = [f"machine: {result['machine']['platform']}, {result['machine']['cpus']} CPUs, "
             f"python {result['machine']['python']}"]
    alloc = result["machine"].get("allocator") or {}
    if alloc:  # as this process started; the gate's workers get parity.plugin.workers.ALLOCATOR_ENV
        lines.append("allocator: " + ", ".join(f"{k}={'unset' if v is None else v}" for k, v in alloc.items()))
    lines.append("")
    lines.append("imports: " + ", ".join(f"{k} {v:.2f} s" for k, v in result["imports_s"].items()))
    lines += ["", f"{'case':18s} {'dtype':8s} {'backend':11s} {'build':>8s} {'forward':>9s} {'gradient':>9s} {'adam step':>10s}"]
    for r in result["backends"]:
        lines.append(f"{r['case']:18s} {r['dtype']:8s} {r['backend']:11s} {r['build_s']:8.3f} {r['forward_s']:9.3f} "
                     f"{_seconds(r['gradient_s'], 9)} {_seconds(r['adam_step_s'], 10)}")
    keys = [k for k in result["harness"][0] if k != "case"] if result["harness"] else []
    lines += ["", "harness, float64, seconds: " + " ".join(f"{k[:-2]:>12s}" for k in keys)]
    for h in result["harness"]:
        lines.append(f"  {h['case']:24s} " + " ".join(_seconds(h.get(k), 12) for k in keys))
    if result.get("extended"):
        lines += ["", "extended cases, float64, one cold build + forward (s): " + ", ".join(
            f"{r['case']} {r['backend']} {r['build_s'] + r['forward_s']:.2f}" for r in result["extended"])]
    lines += ["", f"bare cost (imports + one build and forward per backend × case × dtype): {result['bare_forward_s']:.1f} s",
              f"bare cost with the gradient and training tests' compute:               {result['bare_with_training_s']:.1f} s"]
    if result.get("gate_bare_s"):
        lines.append(f"the gate's bare cost (default cases with gradients, {GATE_TRAIN_STEPS} Adam steps, "
                     f"one forward per extended case): {result['gate_bare_s']:.1f} s")
    if result.get("gate_checks_s"):
        faults = result.get("faults", [])
        lines.append(f"the gate's checks' compute (the bare cost, the inference paths, numpy's third opinion, the "
                     f"checkpoint checks, {len(faults)} faults in {sum(f['seconds'] for f in faults):.1f} s): "
                     f"{result['gate_checks_s']:.1f} s")
    runs = result.get("pytest_runs", [])
    if runs:
        lines += ["", "| run | wall | × gate bare | × gate checks | first result (first test that ran) "
                      "| CPU, all processes | peak RSS, largest process | processes | outcome |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for p in runs:
            ratio = " | ".join(f"{p[key]:.2f}×" if p.get(key) else "—"
                               for key in ("ratio_to_gate_bare", "ratio_to_gate_checks"))
            first = (f"{p['first_result_s']:.1f} s" if p.get("first_result_s") is not None else "—") + (
                f" ({p['first_run_s']:.1f} s)" if p.get("first_run_s") is not None else "")
            procs = p.get("peak_rss_mb_by_process", {})
            cpu = f"{p['cpu_s']:.1f} s" if p.get("cpu_s") is not None else "—"
            lines.append(f"| {p.get('label') or p['command']} | {p['wall_s']:.1f} s | {ratio} | {first} | {cpu} | "
                         f"{p.get('peak_rss_mb_max', -1):.0f} MB | {len(procs)} | exit {p['returncode']}: {p['summary']} |")
    lines.append(f"peak RSS of this process: {result['peak_rss_mb']:.0f} MB")
    return "\n".join(lines)


def compare(new: dict, old: dict) -> str:
    """new / old for every number both results hold."""
    a, b = _flat(new), _flat(old)
    common = [k for k in a if k in b]
    width = max((len(k) for k in common), default=10)
    lines = [f"{'':{width}}  {'old':>10s}  {'new':>10s}  {'new/old':>8s}"]
    for k in common:
        ratio = a[k] / b[k] if b[k] else float("inf")
        lines.append(f"{k:{width}}  {b[k]:10.3f}  {a[k]:10.3f}  {ratio:8.2f}")
    return "\n".join(lines)


def write(result: dict, path: Path) -> Path:
    """Write a bench result atomically (its folder created)."""
    from parity.files import write_atomic

    return write_atomic(path, json.dumps(result, indent=1, sort_keys=True) + "\n")


def is_result(path: Path) -> bool:
    """True where `path` holds a JSON object `parity bench` wrote (any schema, finished or not)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "schema" in data and "machine" in data


def load(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a bench result ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: key 'schema' must be {SCHEMA} (a file written by `parity bench`)")
    if data.get("state", "complete") != "complete":
        raise ValueError(f"{path}: key 'state' is {data.get('state')!r}: an unfinished bench, nothing to compare with")
    return data
