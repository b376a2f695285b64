"""The parity engine: run one case on both backends and judge it (docs/design.md §1).

`run_case` builds the models once, each on its own device, runs both paths and the pipeline of
checks (`parity.run.pipeline`) for every backend, and returns the results (`parity.run.results`).
The backends are imported lazily, never at module top level."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Sequence

from parity.inputs.cases import Case, digests_of
from parity.run.backend_run import backend_devices, provenance, require_device
from parity.run.cache import cached_run
from parity.run.checks.base import REF, summarise_trace
from parity.run.pipeline import PIPELINE, Check, RunContext, run_pipeline
from parity.run.results import CaseResult
from parity.run.tolerances import TOLERANCE_PATH, load_profile
from parity.run.training import AdamConfig, gradient_summary

OTHER = "torch"  # the default candidate (the default reference, REF, is parity.run.checks')


def run_case(case: Case, device: str = "cpu", dtype: str = "float32", ref_device: Optional[str] = None,
             data: Optional[str | Path] = None,
             tolerance_path: str | Path = TOLERANCE_PATH,
             goldens_dir: Optional[str | Path] = None, use_golden: bool = True,
             checkpoints: bool = True, ref: str = REF, candidates: Sequence[str] = (OTHER,),
             grad: bool = False, train_steps: int = 0, adam: AdamConfig = AdamConfig(),
             reuse: Sequence[str] = (), checks: Sequence[Check] = PIPELINE,
             repro_dir: Optional[str | Path] = None) -> CaseResult:
    """Run `case` on the reference and every candidate backend (the candidates on `device`, the
    reference on `ref_device`, by default the CPU) and run every check of `parity.run.pipeline` for
    every backend its capabilities allow: forward agreement (the numpy backend arbitrates a
    divergence), train ↔ infer paths, checkpoint round trip, cross-backend checkpoint, golden
    (when the case has one and the run is on the shipped data), with `grad` the loss and every
    gradient, with `train_steps` K > 0 K Adam steps. A backend that raises or is mis-wired is an
    error result, never an exception. `reuse`: backends whose model and traces may come from this
    process's cache (`parity.run.cache`) instead of a fresh build — only for backends nothing patches
    (the fault catalogue patches the port and reuses the reference). `repro_dir`: where a minimal
    reproduction of each origin is written (parity.report.repro), when the run diverges."""
    candidates = [c for c in dict.fromkeys(candidates) if c != ref]
    if not candidates:
        raise ValueError("give at least one candidate backend other than the reference")
    names = [ref, *candidates]
    start = time.perf_counter()
    devices = backend_devices(ref, candidates, device, ref_device)
    flags = require_device(devices)
    # each backend is judged by the profile of the device it computed on (the reference's own
    # only where it is compared with itself, after a checkpoint round trip)
    profiles = {name: load_profile(dev, dtype, path=tolerance_path) for name, dev in devices.items()}
    cfg, weights, batch = case.inputs(dtype, data=data)
    run_digests = digests_of(weights, batch)
    ctx = RunContext(case=case, cfg=cfg, weights=weights, batch=batch, dtype=dtype, ref=ref, candidates=candidates,
                     devices=devices, profiles=profiles, grad=grad, train_steps=train_steps, adam=adam,
                     checkpoints=checkpoints, digests=run_digests,
                     repro_dir=None if repro_dir is None else Path(repro_dir))
    golden_file = _golden(ctx, case, use_golden, data, goldens_dir, tolerance_path)

    def cached(name: str):
        if name not in reuse:
            return None
        run = cached_run(case, name, devices[name], dtype, data)
        return run.model, run.train, (lambda: run.infer), (lambda: run.gradients)

    ctx.prepare(cached, infer=any(c.needs_infer for c in checks if c.wanted(ctx)))
    results = run_pipeline(ctx, checks)
    summaries = {name: {path: dict(ctx.train_summary(name)) if path == "train" else summarise_trace(traces[name], cfg)
                        for path, traces in (("train", ctx.train), ("infer", ctx.infer), ("reloaded", ctx.reloaded))
                        if name in traces}
                 for name in names}
    for name, (losses, grads) in (ctx.gradients or {}).items():
        summaries[name].setdefault("train", {})["gradients"] = gradient_summary(losses, grads)
    return CaseResult(
        case=case.name, dtype=dtype, device=device, config=cfg, ref=ref, candidates=candidates, devices=devices,
        results=results, summaries=summaries, digests=run_digests,
        provenance=provenance(device, devices, dtype, flags), seconds=time.perf_counter() - start,
        traces=dict(ctx.train), batch=batch, golden_file=golden_file, reloaded=dict(ctx.reloaded),
        local=dict(ctx.local),
        output=dict(ctx.output))


def _golden(ctx: RunContext, case: Case, use_golden: bool, data, goldens_dir, tolerance_path) -> Optional[str]:
    """Load the case's golden into `ctx` (or say why there is none); its file, or None."""
    if not use_golden:
        ctx.golden_why = "goldens are off for this run"
        return None
    if data is not None:
        ctx.golden_why = "the goldens describe the shipped fixture, not --data"
        return None
    from parity.goldens import store as goldens

    path = goldens.golden_path(case.name, goldens_dir)
    if not path.exists():
        ctx.golden_why = f"no golden for {case.name} in {path.parent}"
        return None
    try:
        ctx.golden = (goldens.load_golden(path), str(path))
    except goldens.GoldenError as exc:  # this case's error (its golden check), not the whole run's
        ctx.golden_error = str(exc)
        return str(path)
    ctx.golden_profiles = {name: goldens.load_golden_profile(dev, ctx.dtype, tolerance_path)
                           for name, dev in ctx.devices.items()}
    return str(path)
