"""The parity engine: run one case on both backends and judge it (docs/design.md §1).

`run_case` builds the models once, each on its own device, runs both paths and the pipeline of
checks (`parity.pipeline`) for every backend, and returns the results (`parity.results`). The backends are imported lazily, never at module
top level."""

from __future__ import annotations

import datetime
import functools
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from parity import __version__
from parity.backends import configure_all, get_backend
from parity.cache import cached_run
from parity.cases import Case
from parity.config import ForwardConfig
from parity.data import digests
from parity.summaries import summarise
from parity.tolerances import TOLERANCE_PATH, load_profile
from parity.checks import REF, CheckpointCheck, _trainable  # noqa: F401
from parity.checks.base import summarise_trace
from parity.pipeline import PIPELINE, Check, RunContext, run_pipeline
from parity.results import CaseResult, CheckResult  # noqa: F401 (the engine's result types)
from parity.training import AdamConfig, gradient_summary
from parity.weights import digest as weights_digest

OTHER = "torch"  # the default candidate (the default reference, REF, is parity.checks')


class DeviceUnavailable(ValueError):
    """The run asked for a device this machine does not have."""


def backend_devices(ref: str, candidates: Sequence[str], device: str = "cpu",
                    ref_device: Optional[str] = None) -> dict[str, str]:
    """Where each backend of a run computes: the candidates on `device`, the reference on
    `ref_device` (default: the CPU, the usual setup being the reference on the CPU and the port on
    the GPU). A CPU-only candidate (numpy) stays on the CPU; a `ref_device` is taken as named
    (configuring a CPU-only reference for CUDA then says it cannot)."""
    return {ref: ref_device or "cpu",
            **{name: get_backend(name).device_for(device) for name in candidates if name != ref}}


def require_device(devices: Mapping[str, str]) -> dict[str, object]:
    """Check each backend's device (name -> device) and apply its determinism flags
    (docs/design.md §9); a framework that is not installed is BackendUnavailable."""
    try:
        return configure_all(devices)
    except RuntimeError as exc:  # each backend's DeviceError
        raise DeviceUnavailable(str(exc)) from None


@functools.lru_cache(maxsize=1)
def _git_commit() -> Optional[str]:  # one `git` call per process, not one per run
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None  # not a git checkout (an installed copy)
    return done.stdout.strip() or None


def _provenance(device: str, devices: Mapping[str, str], dtype: str, flags: dict) -> dict:
    """Where a result came from; recorded, never compared. Framework versions of the backends and
    the device of each (`device`: the run's, the candidates' in a comparison)."""
    versions = {get_backend(name).framework: get_backend(name).version() for name in devices}
    return {"ptycho_parity": __version__, "python": platform.python_version(),
            "numpy": np.__version__, **versions,
            "device": device, "devices": dict(devices), "dtype": dtype, "flags": flags,
            "machine": platform.machine(),
            "git_commit": _git_commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def run_case(case: Case, device: str = "cpu", dtype: str = "float32", ref_device: Optional[str] = None,
             data: Optional[str | Path] = None,
             tolerance_path: str | Path = TOLERANCE_PATH,
             goldens_dir: Optional[str | Path] = None, use_golden: bool = True,
             checkpoints: bool = True, ref: str = REF, candidates: Sequence[str] = (OTHER,),
             grad: bool = False, train_steps: int = 0, adam: AdamConfig = AdamConfig(),
             reuse: Sequence[str] = (), checks: Sequence[Check] = PIPELINE,
             repro_dir: Optional[str | Path] = None) -> CaseResult:
    """Run `case` on the reference and every candidate backend (the candidates on `device`, the
    reference on `ref_device`, by default the CPU) and run every check of `parity.pipeline` for
    every backend its capabilities allow: forward agreement (the numpy backend arbitrates a
    divergence), train ↔ infer paths, checkpoint round trip, cross-backend checkpoint, golden
    (when the case has one and the run is on the shipped data), with `grad` the loss and every
    gradient, with `train_steps` K > 0 K Adam steps. A backend that raises or is mis-wired is an
    error result, never an exception. `reuse`: backends whose model and traces may come from this
    process's cache (`parity.cache`) instead of a fresh build — only for backends nothing patches
    (the fault catalogue patches the port and reuses the reference). `repro_dir`: where a minimal
    reproduction of each origin is written (parity.repro), when the run diverges."""
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
    run_digests = {"inputs": digests(batch), "weights": weights_digest(weights)}
    ctx = RunContext(case=case, cfg=cfg, weights=weights, batch=batch, dtype=dtype, ref=ref, candidates=candidates,
                     devices=devices, profiles=profiles, grad=grad, train_steps=train_steps, adam=adam,
                     checkpoints=checkpoints, digests=run_digests,
                     repro_dir=None if repro_dir is None else Path(repro_dir))
    golden_file = _golden(ctx, case, use_golden, data, goldens_dir, tolerance_path)

    def cached(name: str):
        if name not in reuse:
            return None
        run = cached_run(case, name, devices[name], dtype, data)
        return run.model, run.train, (lambda: run.infer)

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
        provenance=_provenance(device, devices, dtype, flags), seconds=time.perf_counter() - start,
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
    from parity import goldens

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


@dataclass
class BackendRun:
    """One backend's run of one case: both paths, their summaries and the input digests. The
    inference path runs on first use of `infer` (a test that compares only the training path,
    such as the gate's forward of each extended case, does not pay for a second forward)."""

    case: str
    backend: str
    device: str
    dtype: str
    config: ForwardConfig
    train: dict = field(repr=False)
    summaries: dict  # the train path's summaries (the golden content)
    digests: dict  # {"inputs": {array: sha256}, "weights": sha256}
    provenance: dict
    model: object = field(default=None, repr=False)  # the built model, for checkpoints
    batch: object = field(default=None, repr=False)  # what `infer` and `gradients` run the model on
    _infer: Optional[dict] = field(default=None, repr=False)
    _gradients: Optional[tuple] = field(default=None, repr=False)

    @property
    def infer(self) -> dict:
        if self._infer is None:
            self._infer = self.model.forward_infer(self.batch)
        return self._infer

    @property
    def gradients(self) -> tuple:
        """(loss terms, gradients by tensor name) of the model at its weights, computed on first
        use and kept with the run (the gradient test and the golden read the same)."""
        if self._gradients is None:
            self._gradients = self.model.loss_and_gradients(self.batch)
        return self._gradients

    @property
    def label(self) -> str:
        return f"{self.backend} {self.device} {self.dtype}"


def case_digests(case: Case, dtype: str, data: Optional[str | Path] = None) -> dict:
    """sha256 of every input array and of the weights of `case` in `dtype` (numpy only)."""
    _, weights, batch = case.inputs(dtype, data=data)
    return {"inputs": digests(batch), "weights": weights_digest(weights)}


def run_backend(case: Case, backend: str, device: str = "cpu", dtype: str = "float64",
                data: Optional[str | Path] = None) -> BackendRun:
    """Build `backend`'s model for `case` and run its training path (the inference path on first
    use of `BackendRun.infer`)."""
    flags = require_device({backend: device})
    cfg, weights, batch = case.inputs(dtype, data=data)
    model = get_backend(backend).build(cfg, weights, device=device)
    train = model.forward_train(batch)
    return BackendRun(case=case.name, backend=backend, device=device, dtype=dtype, config=cfg,
                      train=train, batch=batch, summaries=summarise(train, cfg),
                      digests={"inputs": digests(batch), "weights": weights_digest(weights)},
                      provenance=_provenance(device, {backend: device}, dtype, flags), model=model)


def reference_golden(case: Case, data: Optional[str | Path] = None) -> dict:
    """The golden of `case`: the float64 CPU TensorFlow run's summaries, digests of both dtypes."""
    from parity.goldens import REFERENCE

    backend, device, dtype = REFERENCE
    return golden_of(run_backend(case, backend, device, dtype, data=data), case, data)


def golden_of(run: BackendRun, case: Case, data: Optional[str | Path] = None, gradients: bool = True) -> dict:
    """The golden a run would write: its summaries plus (with `gradients`) the loss terms and
    gradient norms of its model, the digests of both dtypes and its provenance (with, for the
    reference run, the fingerprint `parity.fingerprint` checks)."""
    from parity.goldens import REFERENCE, build_golden

    summaries = dict(run.summaries)
    if gradients and _trainable(run.model):
        summaries["gradients"] = gradient_summary(*run.gradients)
    all_digests = {d: case_digests(case, d, data) for d in ("float32", "float64")}
    golden = build_golden(case.name, case.config.to_dict(), all_digests, summaries,
                          dict(run.provenance, backend=run.backend))
    if (run.backend, run.device, run.dtype) == REFERENCE and gradients:  # what `parity refresh` may trust
        from parity.fingerprint import fingerprint, inputs_key

        golden["provenance"]["fingerprint"] = fingerprint(golden, inputs_key(case, data, all_digests))
    return golden
