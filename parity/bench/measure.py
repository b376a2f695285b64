"""`parity bench`: where the time of a parity run goes, measured in one process and one run so
the figures compare (docs/design.md §12).

Measured: the import time of each framework (the first import in this process), per backend ×
case the build time, per backend × case × dtype the median forward of each path (≥ 5 after a
warm-up), one loss-and-gradients call and one Adam step, the harness's own work per case
(summaries, comparison, arbitration, checkpoints, dump, golden), per extended case one cold build
and forward in float64, the rest of the gate's checks' compute (`parity.bench.checks`), then the
test tiers cold in subprocesses (the gate `pytest -k parity`, `make test`'s whole gate,
optionally the full tier unsharded and in shards): for each its wall time, the time to its first
test result and the peak RSS of every test process (`parity.bench.probe`).

The *bare cost* is what the tests cannot avoid. `bare_forward_s`: the imports plus, per backend ×
case × dtype, one build and one training forward; `bare_with_training_s` adds one gradient per
backend × case × dtype and the full tier's TRAIN_STEPS Adam steps in float64; `gate_bare_s` is the
gate's own: the imports, per backend × default case × dtype one build, forward and gradient, the
gate's GATE_TRAIN_STEPS Adam steps on GATE_TRAIN_CASE, and one build and forward of every
extended case in float64. `gate_checks_s` adds what the gate's checks compute besides
(`parity.bench.checks.gate_checks_cost`).
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence

from parity.bench.clock import timed

SCHEMA = 1
BACKENDS = ("tensorflow", "torch")  # reference first; numpy stands in for TensorFlow where it is missing
DTYPES = ("float32", "float64")
TRAIN_STEPS = 10  # what test_parity_training_tracks runs per default case, float64 (full tier)
GATE_TRAIN_STEPS, GATE_TRAIN_CASE = 2, "gs2-big"  # test_parity_two_adam_steps_track (the gate)


def _median(fn: Callable, repeat: int) -> float:
    fn()  # warm-up: first-call allocation, TF's first trace of each shape
    return statistics.median(timed(fn)[0] for _ in range(repeat))


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
        seconds, _ = timed(lambda: __import__(module))
        out[module] = 0.0 if already else seconds
    return out


def _cases(cases: Sequence) -> list:
    """Case objects from cases or built-in names (a case file's cases come as objects)."""
    from parity.inputs.cases import get_case

    return [get_case(c) if isinstance(c, str) else c for c in cases]


def backend_times(cases: Sequence, repeat: int, progress: Callable[[str], None]) -> list[dict]:
    """Per backend × case × dtype: build, median forward (training path, and inference path),
    one gradient, one Adam step (seconds)."""
    from parity.backends import get_backend
    from parity.run.training import AdamConfig

    rows = []
    for case in _cases(cases):
        name = case.name
        for dtype in DTYPES:
            cfg, weights, batch = case.inputs(dtype)
            state = case.state(dtype)  # a trained checkpoint's log_scale and probe
            for backend in bench_backends():
                progress(f"  {name} {dtype} {backend}")
                build, model = timed(lambda: get_backend(backend).build(cfg, weights, **state))
                forward = _median(lambda: model.forward_train(batch), repeat)
                infer = _median(lambda: model.forward_infer(batch), repeat)
                gradient = step = None  # numpy has no autograd: nothing to time
                if get_backend(backend).trains():
                    gradient = _median(lambda: model.loss_and_gradients(batch), max(1, repeat // 2))
                    fresh = get_backend(backend).build(cfg, weights, **state)
                    step = _median(lambda: list(fresh.train_steps(batch, 1, AdamConfig())), max(1, repeat // 2))
                rows.append({"case": name, "dtype": dtype, "backend": backend, "build_s": build,
                             "forward_s": forward, "infer_s": infer, "gradient_s": gradient, "adam_step_s": step})
    return rows


def extended_times(case_names: Sequence[str], progress: Callable[[str], None]) -> list[dict]:
    """Per extended case, float64, per backend: one build and one forward, cold (what the gate's
    test_parity_extended_case_forward_float64 does once per case)."""
    from parity.backends import get_backend
    from parity.inputs.cases import get_case

    rows = []
    for name in case_names:
        cfg, weights, batch = get_case(name).inputs("float64")
        for backend in bench_backends():
            progress(f"  {name} float64 {backend} (extended, cold)")
            build, model = timed(lambda: get_backend(backend).build(cfg, weights))
            forward, _ = timed(lambda: model.forward_train(batch))
            rows.append({"case": name, "dtype": "float64", "backend": backend, "build_s": build, "forward_s": forward})
    return rows


def harness_times(cases: Sequence, progress: Callable[[str], None]) -> list[dict]:
    """Per case (float64): what the harness adds on top of the backends' compute."""
    from parity.report import dump
    from parity.goldens import store as goldens
    from parity.backends import get_backend
    from parity.run.compare import compare_traces
    from parity.run.engine import RunRequest, run_case
    from parity.run.pipeline import CheckpointRoundTrip, CrossCheckpoint, run_pipeline
    from parity.run.record import BackendState, RunContext, RunInputs
    from parity.run.oracle import arbitrate
    from parity.stages import TRAIN_STAGES
    from parity.goldens.summaries import summarise
    from parity.run.tolerances import load_profile

    rows = []
    ref, cand = bench_backends()
    profile = load_profile("cpu", "float64")
    for case in _cases(cases):
        name = case.name
        progress(f"  harness {name}")
        cfg, weights, batch = case.inputs("float64")
        state = case.state("float64")
        models = {b: get_backend(b).build(cfg, weights, **state) for b in (ref, cand)}
        train = {b: m.forward_train(batch) for b, m in models.items()}
        row = {"case": name}
        row["summaries_s"] = timed(lambda: [summarise(t, cfg) for t in train.values()])[0]
        row["comparison_s"] = timed(lambda: compare_traces(train[ref], train[cand], profile))[0]
        # arbitration runs only on a divergence; timed here on the last stage as if it diverged
        row["arbitration_s"] = timed(lambda: arbitrate(TRAIN_STAGES[-1], train[ref], train[cand], cfg,
                                                       batch, 1e-12, ref, cand, weights=weights))[0]
        ctx = RunContext(RunRequest(dtype="float64", ref=ref, candidates=(cand,)),
                         RunInputs(case, cfg, weights, batch, {}, state),
                         {b: BackendState(b, "cpu", profile, model=models[b], train=train[b]) for b in (ref, cand)})
        row["checkpoints_s"] = timed(lambda: run_pipeline(ctx, (CheckpointRoundTrip(), CrossCheckpoint())))[0]
        with tempfile.TemporaryDirectory(prefix="parity-bench-") as tmp:
            result = run_case(case, RunRequest(dtype="float64", checkpoints=False, ref=ref, candidates=[cand]))
            row["dump_s"] = timed(lambda: dump.dump_case(result, Path(tmp)))[0]
        row["golden_s"] = None  # a case file's case has no shipped golden
        if goldens.golden_path(name).exists() and case.case_set != "file":
            golden = goldens.load_golden(goldens.golden_path(name))
            golden_profile = goldens.load_golden_profile("cpu", "float64")
            summaries = summarise(train[cand], cfg)
            row["golden_s"] = timed(lambda: goldens.compare_golden(golden, summaries, result.digests, "float64",
                                                                   golden_profile))[0]
        rows.append(row)
    return rows


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


def gate_bare_cost(imports: dict, rows: list[dict], extended: list[dict]) -> Optional[float]:
    """The gate's bare cost (module docstring); None unless the default cases and every extended
    case were timed."""
    from parity.inputs.cases import case_names

    timed = {r["case"] for r in rows}
    if not set(case_names("default")) <= timed or {r["case"] for r in extended} != set(case_names("extended")):
        return None
    total = sum(imports.values())
    for r in rows:
        if r["case"] in case_names("default"):
            total += r["build_s"] + r["forward_s"] + (r["gradient_s"] or 0.0)
            if (r["case"], r["dtype"]) == (GATE_TRAIN_CASE, "float64"):
                total += GATE_TRAIN_STEPS * (r["adam_step_s"] or 0.0)
    return total + sum(r["build_s"] + r["forward_s"] for r in extended)


def allocator() -> dict:
    """The allocator settings this process started with (parity.plugin.workers.ALLOCATOR_ENV: what
    the gate's workers get), as the table's header shows them."""
    from parity.plugin.workers import ALLOCATOR_ENV

    return {name: os.environ.get(name) for name in ALLOCATOR_ENV}


def restart_under_the_workers_allocator() -> None:
    """The console `parity bench`, started without the allocator settings the gate's workers get,
    starts again with them (glibc reads them when a process starts): its bare cost is then
    measured as the gate computes. Returns only where they are set already."""
    from parity.plugin.workers import tune_allocator

    environ = dict(os.environ)
    if tune_allocator(environ):
        os.execve(sys.executable, [sys.executable, "-m", "parity", *sys.argv[1:]], environ)


def run(cases: Sequence, repeat: int, progress: Callable[[str], None] = lambda line: None,
        extended: Sequence[str] = (), save: Callable[[dict], None] = lambda result: None) -> dict:
    """Everything but the pytest timings (`time_pytest_runs`, after this); `extended`: the
    extended cases whose cold float64 forward is timed (the gate's bare cost needs them all).
    `save(result)` is called after each part with what is measured so far (state "partial"), so
    that an interrupted bench keeps its numbers. `cases`: built-in names or Case objects (a case
    file's)."""
    cases = _cases(cases)
    case_names = [c.name for c in cases]
    result = {"schema": SCHEMA, "state": "partial",
              "machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "cpus": os.cpu_count(), "allocator": allocator()},
              "cases": list(case_names), "repeat": repeat}
    progress("imports")
    result["imports_s"] = imports = import_times()
    save(result)
    progress("backends (build, forward, gradient, Adam step)")
    result["backends"] = rows = backend_times(cases, repeat, progress)
    save(result)
    progress("extended cases (one cold build and forward, float64)")
    result["extended"] = ext = extended_times(extended, progress)
    save(result)
    progress("harness")
    result["harness"] = harness_times(cases, progress)
    result.update({"bare_forward_s": bare_cost(imports, rows, case_names, training=False),
                   "bare_with_training_s": bare_cost(imports, rows, case_names, training=True),
                   "gate_bare_s": gate_bare_cost(imports, rows, ext)})
    save(result)
    if result["gate_bare_s"] is not None:  # the default cases were timed: the rest of the gate's compute
        from parity.bench import checks
        from parity.inputs.cases import case_names as cases_of

        progress("the gate's checks besides the bare cost (numpy's third opinion, the faults)")
        result["oracle"] = checks.oracle_times(cases_of("default"), bench_backends()[0], progress)
        result["faults"] = checks.fault_times(bench_backends()[0], progress)
        result["gate_checks_s"] = checks.gate_checks_cost(result)
    result["peak_rss_mb"] = peak_rss_mb()
    save(result)
    return result
