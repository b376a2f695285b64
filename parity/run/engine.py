"""The parity engine: run one case on both backends and judge it (docs/design.md §1).

`run_case(case, request)` builds the case's inputs once, each backend's model once on its own
device, runs both paths and the pipeline of checks (`parity.run.pipeline`) on the run record
(`parity.run.record`), and returns the finished record, a `CaseResult` (`parity.run.results`).
The backends are imported lazily, never at module top level."""

from __future__ import annotations

import time
from dataclasses import replace

from parity.inputs.cases import Case, run_digests
from parity.run.backend_run import backend_devices, provenance, require_device
from parity.run.cache import cached_run
from parity.run.pipeline import PIPELINE, run_pipeline
from parity.run.record import OTHER, REF, BackendState, GoldenInputs, RunContext, RunInputs, RunRequest, summarise_trace
from parity.run.results import CaseResult
from parity.run.tolerances import load_profile
from parity.run.training import gradient_summary

__all__ = ["OTHER", "REF", "RunRequest", "run_case"]


def run_case(case: Case, request: RunRequest = RunRequest()) -> CaseResult:
    """Run `case` on the reference and every candidate backend of `request` and run every check
    of the pipeline (or the request's `checks`) for every backend its capabilities allow: forward
    agreement (the numpy backend arbitrates a divergence), train ↔ infer paths, checkpoint round
    trip, cross-backend checkpoint, golden (when the case has one and the run is on the shipped
    data), with `grad` the loss and every gradient, with `train_steps` K > 0 K Adam steps. A
    backend that raises or is mis-wired is an error result, never an exception."""
    candidates = tuple(c for c in dict.fromkeys(request.candidates) if c != request.ref)
    if not candidates:
        raise ValueError("give at least one candidate backend other than the reference")
    request = replace(request, candidates=candidates)
    start = time.perf_counter()
    devices = backend_devices(request.ref, candidates, request.device, request.ref_device)
    flags = require_device(devices)
    cfg, weights, batch = case.inputs(request.dtype, data=request.data)
    state = case.state(request.dtype)
    inputs = RunInputs(case, cfg, weights, batch, run_digests(case, request.dtype, request.data, weights, batch, state),
                       state)
    # each backend is judged by the profile of the device it computed on (the reference's own
    # only where it is compared with itself, after a checkpoint round trip)
    sides = {name: BackendState(name, dev, load_profile(dev, request.dtype, path=request.tolerance_path))
             for name, dev in devices.items()}
    ctx = RunContext(request, inputs, sides, golden=_golden(case, request, devices))

    def cached(name: str):
        if name not in request.reuse:
            return None
        run = cached_run(case, name, devices[name], request.dtype, request.data, inputs=(cfg, weights, batch))
        return run.model, run.train, (lambda: run.infer), (lambda: run.gradients)

    checks = PIPELINE if request.checks is None else request.checks
    ctx.prepare(cached, infer=any(c.needs_infer for c in checks if c.wanted(ctx)))
    run_pipeline(ctx, checks)
    return _finished(ctx, provenance(request.device, devices, request.dtype, flags), time.perf_counter() - start)


def _finished(ctx: RunContext, where: dict, seconds: float) -> CaseResult:
    """The run record as its consumers read it (console, report, summary.json, figures, fixtures)."""
    summaries = {}
    for name, side in ctx.sides.items():
        paths = {"train": dict(ctx.train_summary(name))} if side.train is not None else {}
        paths.update({path: summarise_trace(trace, ctx.cfg)
                      for path, trace in (("infer", side.infer), ("reloaded", side.reloaded)) if trace is not None})
        if side.gradients is not None:
            paths.setdefault("train", {})["gradients"] = gradient_summary(*side.gradients)
        summaries[name] = paths
    sides = ctx.sides.values()
    return CaseResult(
        case=ctx.inputs.case.name, dtype=ctx.dtype, device=ctx.request.device, config=ctx.cfg, ref=ctx.ref,
        candidates=ctx.candidates, devices={s.name: s.device for s in sides}, results=list(ctx.results),
        summaries=summaries, digests=ctx.inputs.digests, provenance=where, seconds=seconds,
        traces={s.name: s.train for s in sides if s.train is not None}, batch=ctx.batch,
        golden_file=ctx.golden.file, reloaded={s.name: s.reloaded for s in sides if s.reloaded is not None},
        local={s.name: s.forced for s in sides if s.forced}, output={s.name: s.output for s in sides if s.output})


def _golden(case: Case, request: RunRequest, devices: dict) -> GoldenInputs:
    """The case's golden, or why there is none, or why it cannot be read."""
    if not request.use_golden:
        return GoldenInputs(why="goldens are off for this run")
    if request.data is not None:
        return GoldenInputs(why="the goldens describe the shipped fixture, not --data")
    if case.case_set == "file" and request.goldens_dir is None:  # an override of gs1 is not the gs1 of its golden
        return GoldenInputs(why="the shipped goldens hold the built-in cases; a case file's case is compared "
                                "with the goldens of --goldens DIR")
    from parity.goldens import store as goldens

    path = goldens.golden_path(case.name, request.goldens_dir)
    if not path.exists():
        return GoldenInputs(why=f"no golden for {case.name} in {path.parent}")
    try:
        golden = goldens.load_golden(path)
    except goldens.GoldenError as exc:  # this case's error (its golden check), not the whole run's
        return GoldenInputs(file=str(path), error=str(exc))
    return GoldenInputs(golden, str(path), profiles={
        name: goldens.load_golden_profile(dev, request.dtype, request.tolerance_path) for name, dev in devices.items()})
