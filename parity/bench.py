"""`parity bench`: where the time of a parity run goes, measured in one process and one run so
the figures compare (docs/design.md §12).

Measured: the import time of each framework (the first import in this process), per backend ×
case the build time, per backend × case × dtype the median forward (≥ 5 after a warm-up), one
loss-and-gradients call and one Adam step, the harness's own work per case (summaries,
comparison, arbitration, checkpoints, dump, golden), then `pytest -k parity` cold in a
subprocess with the runner setting the project uses by default, and peak RSS. The *bare cost*
is what the parity tests cannot avoid: the imports plus, per backend × case × dtype, one build
and one training forward (and, with the training tests, one gradient and their Adam steps).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

SCHEMA = 1
BACKENDS = ("tensorflow", "torch")  # reference first; numpy stands in for TensorFlow where it is missing
DTYPES = ("float32", "float64")
TRAIN_STEPS = 10  # what test_parity_training_tracks runs per default case, float64


def _timed(fn: Callable) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def _median(fn: Callable, repeat: int) -> float:
    fn()  # warm-up: first-call allocation, TF's first trace of each shape
    return statistics.median(_timed(fn)[0] for _ in range(repeat))


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident set size of this process (or of its waited-for children), in MB."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return usage.ru_maxrss * scale / 1e6


def bench_backends() -> tuple[str, ...]:
    """The backends timed here: the reference first. Without TensorFlow (a torch-only machine)
    the numpy backend is the reference, as `--ref numpy` makes it for the checks."""
    from parity.backends import get_backend

    return BACKENDS if get_backend(BACKENDS[0]).missing() is None else ("numpy", *BACKENDS[1:])


def import_times() -> dict[str, float]:
    """Seconds for the first import of each installed framework in this process (0 if already
    imported)."""
    from parity.backends import get_backend

    out = {}
    for module in [get_backend(b).framework for b in bench_backends() if b != "numpy"]:
        already = module in sys.modules
        seconds, _ = _timed(lambda: __import__(module))
        out[module] = 0.0 if already else seconds
    return out


def backend_times(case_names: Sequence[str], repeat: int, progress: Callable[[str], None]) -> list[dict]:
    """Per backend × case × dtype: build, median forward, one gradient, one Adam step (seconds)."""
    from parity.backends import get_backend
    from parity.cases import get_case
    from parity.engine import _trainable
    from parity.training import AdamConfig

    rows = []
    for name in case_names:
        case = get_case(name)
        for dtype in DTYPES:
            cfg, weights, batch = case.inputs(dtype)
            for backend in bench_backends():
                progress(f"  {name} {dtype} {backend}")
                build, model = _timed(lambda: get_backend(backend).build(cfg, weights))
                forward = _median(lambda: model.forward_train(batch), repeat)
                gradient = step = None  # numpy has no autograd: nothing to time
                if _trainable(model):
                    gradient = _median(lambda: model.loss_and_gradients(batch), max(1, repeat // 2))
                    fresh = get_backend(backend).build(cfg, weights)
                    step = _median(lambda: list(fresh.train_steps(batch, 1, AdamConfig())), max(1, repeat // 2))
                rows.append({"case": name, "dtype": dtype, "backend": backend, "build_s": build,
                             "forward_s": forward, "gradient_s": gradient, "adam_step_s": step})
    return rows


def harness_times(case_names: Sequence[str], progress: Callable[[str], None]) -> list[dict]:
    """Per case (float64): what the harness adds on top of the backends' compute."""
    from parity import dump, goldens
    from parity.backends import get_backend
    from parity.cases import get_case
    from parity.compare import compare_traces
    from parity.engine import run_case
    from parity.pipeline import CheckpointRoundTrip, CrossCheckpoint, RunContext, run_pipeline
    from parity.oracle import arbitrate
    from parity.stages import TRAIN_STAGES
    from parity.summaries import summarise
    from parity.tolerances import load_profile

    rows = []
    ref, cand = bench_backends()
    profile = load_profile("cpu", "float64")
    for name in case_names:
        progress(f"  harness {name}")
        case = get_case(name)
        cfg, weights, batch = case.inputs("float64")
        models = {b: get_backend(b).build(cfg, weights) for b in (ref, cand)}
        train = {b: m.forward_train(batch) for b, m in models.items()}
        row = {"case": name}
        row["summaries_s"] = _timed(lambda: [summarise(t, cfg) for t in train.values()])[0]
        row["comparison_s"] = _timed(lambda: compare_traces(train[ref], train[cand], profile))[0]
        # arbitration runs only on a divergence; timed here on the last stage as if it diverged
        row["arbitration_s"] = _timed(lambda: arbitrate(TRAIN_STAGES[-1], train[ref], train[cand], cfg,
                                                        batch, 1e-12, ref, cand, weights=weights))[0]
        ctx = RunContext(case=case, cfg=cfg, weights=weights, batch=batch, dtype="float64", ref=ref,
                         candidates=[cand], devices={b: "cpu" for b in models}, profiles={b: profile for b in models},
                         models=models, train=train)
        row["checkpoints_s"] = _timed(lambda: run_pipeline(ctx, (CheckpointRoundTrip(), CrossCheckpoint())))[0]
        with tempfile.TemporaryDirectory(prefix="parity-bench-") as tmp:
            result = run_case(case, dtype="float64", checkpoints=False, ref=ref, candidates=[cand])
            row["dump_s"] = _timed(lambda: dump.dump_case(result, Path(tmp)))[0]
        golden = goldens.load_golden(goldens.golden_path(name))
        golden_profile = goldens.load_golden_profile("cpu", "float64")
        summaries = summarise(train[cand], cfg)
        row["golden_s"] = _timed(lambda: goldens.compare_golden(golden, summaries, result.digests, "float64",
                                                                golden_profile))[0]
        rows.append(row)
    return rows


# Runs pytest and then reports its own peak RSS (VmHWM: the high-water mark of this process's own
# memory since exec) and its children's. Measuring from the bench process instead would be wrong:
# a child forked from it starts with the bench's resident size in its ru_maxrss.
_PYTEST_WRAPPER = """
import resource, sys
import pytest
code = pytest.main(sys.argv[1:])
try:
    with open("/proc/self/status") as status:
        own = next((line.split()[1] for line in status if line.startswith("VmHWM:")), "")
except OSError:
    own = ""
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(f"\\n{MARKER} {own or -1} {children}")
sys.exit(int(code))
"""
MARKER = "parity-bench-peak-rss-kb"


def pytest_wall(args: Sequence[str], cwd: Path) -> dict:
    """`python -m pytest …` cold in a fresh subprocess: wall time, exit code, the last line pytest
    printed, and the peak RSS of the pytest process itself and of its largest child (MB; −1 where
    /proc is missing)."""
    cmd = [sys.executable, "-c", _PYTEST_WRAPPER.replace("{MARKER}", MARKER), "-q", "-p", "no:cacheprovider", *args]
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    seconds, done = _timed(lambda: subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env))
    lines = [line for line in done.stdout.strip().splitlines() if line.strip()]
    report = [line.split() for line in lines if line.startswith(MARKER)]
    own_kb, children_kb = (int(report[-1][1]), int(report[-1][2])) if report else (-1, -1)
    summary = next((line for line in reversed(lines) if not line.startswith(MARKER)), "")
    return {"command": " ".join(["pytest", *args]), "wall_s": seconds, "returncode": done.returncode,
            "summary": summary, "peak_rss_mb": own_kb / 1e3 if own_kb >= 0 else -1.0,
            "peak_rss_mb_children": children_kb / 1e3 if children_kb >= 0 else -1.0}


def time_pytest_runs(result: dict, runs: Sequence[Sequence[str]], cwd: Path,
                     progress: Callable[[str], None] = lambda line: None) -> None:
    """Time each pytest run cold (after `run`, so its imports are its own) into
    result["pytest_runs"], each with its ratio to the bare cost with training."""
    result["pytest_runs"] = []
    for args in runs:
        progress(f"pytest {' '.join(args)} (cold, in a subprocess)")
        timing = pytest_wall(args, cwd)
        timing["ratio_to_bare"] = timing["wall_s"] / result["bare_with_training_s"]
        result["pytest_runs"].append(timing)


def bare_cost(imports: dict, rows: list[dict], case_names: Sequence[str], training: bool) -> float:
    """Imports + per backend × case × dtype one build and one forward (+ one gradient per dtype
    and TRAIN_STEPS Adam steps in float64 when the suite runs the training tests)."""
    total = sum(imports.values())
    for r in rows:
        if r["case"] not in case_names:
            continue
        total += r["build_s"] + r["forward_s"]
        if training:
            total += (r["gradient_s"] or 0.0) + (TRAIN_STEPS * (r["adam_step_s"] or 0.0)
                                                 if r["dtype"] == "float64" else 0.0)
    return total


def run(case_names: Sequence[str], repeat: int, progress: Callable[[str], None] = lambda line: None) -> dict:
    """Everything but the pytest timings (`time_pytest_runs`, after this)."""
    progress("imports")
    imports = import_times()
    progress("backends (build, forward, gradient, Adam step)")
    rows = backend_times(case_names, repeat, progress)
    progress("harness")
    harness = harness_times(case_names, progress)
    result = {"schema": SCHEMA, "machine": {"platform": platform.platform(), "python": platform.python_version(),
                                            "cpus": os.cpu_count()},
              "cases": list(case_names), "repeat": repeat, "imports_s": imports, "backends": rows,
              "harness": harness,
              "bare_forward_s": bare_cost(imports, rows, case_names, training=False),
              "bare_with_training_s": bare_cost(imports, rows, case_names, training=True),
              "peak_rss_mb": peak_rss_mb()}
    return result


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
            if key != "case":
                out[f"harness {h['case']} {key[:-2]}"] = value
    out["bare forward"] = result["bare_forward_s"]
    out["bare with training"] = result["bare_with_training_s"]
    for p in result.get("pytest_runs", []):
        out[f"{p['command']} wall"] = p["wall_s"]
    out["peak RSS MB"] = result["peak_rss_mb"]
    return out


def _seconds(value, width: int) -> str:
    return f"{value:{width}.3f}" if value is not None else "—".rjust(width)


def format_table(result: dict) -> str:
    lines = [f"machine: {result['machine']['platform']}, {result['machine']['cpus']} CPUs, "
             f"python {result['machine']['python']}", ""]
    lines.append("imports: " + ", ".join(f"{k} {v:.2f} s" for k, v in result["imports_s"].items()))
    lines += ["", f"{'case':18s} {'dtype':8s} {'backend':11s} {'build':>8s} {'forward':>9s} {'gradient':>9s} {'adam step':>10s}"]
    for r in result["backends"]:
        lines.append(f"{r['case']:18s} {r['dtype']:8s} {r['backend']:11s} {r['build_s']:8.3f} {r['forward_s']:9.3f} "
                     f"{_seconds(r['gradient_s'], 9)} {_seconds(r['adam_step_s'], 10)}")
    keys = [k for k in result["harness"][0] if k != "case"] if result["harness"] else []
    lines += ["", "harness, float64, seconds: " + " ".join(f"{k[:-2]:>12s}" for k in keys)]
    for h in result["harness"]:
        lines.append(f"  {h['case']:24s} " + " ".join(f"{h[k]:12.3f}" for k in keys))
    lines += ["", f"bare cost (imports + one build and forward per backend × case × dtype): {result['bare_forward_s']:.1f} s",
              f"bare cost with the gradient and training tests' compute:               {result['bare_with_training_s']:.1f} s"]
    for p in result.get("pytest_runs", []):
        lines.append(f"{p['command']} (cold): {p['wall_s']:.1f} s = {p['ratio_to_bare']:.2f}× bare "
                     f"(exit {p['returncode']}: {p['summary']}); peak RSS: pytest process {p['peak_rss_mb']:.0f} MB, "
                     f"largest child {p['peak_rss_mb_children']:.0f} MB")
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
    path = Path(path)
    path.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    return path


def load(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a bench result ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: key 'schema' must be {SCHEMA} (a file written by `parity bench`)")
    return data
