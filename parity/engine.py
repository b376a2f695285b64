"""The parity engine: run one case on both backends and judge it (docs/design.md §1).

`run_case` builds the models once, each on its own device, runs both paths, computes summaries,
the stage-by-stage comparison, the numpy arbitration of the first divergence and the checks of
`parity.checks`. The backends are imported lazily, never at module top level."""

from __future__ import annotations

import datetime
import functools
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from parity import __version__
from parity.backends import configure_all, get_backend
from parity.cache import cached_run
from parity.cases import Case
from parity.compare import TraceComparison, compare_traces
from parity.config import ForwardConfig
from parity.data import Batch, digests
from parity.oracle import arbitrate
from parity.stages import OBJECT_STAGES
from parity.summaries import summarise
from parity.tolerances import TOLERANCE_PATH, load_profile
from parity.checks import (REF, CheckpointCheck, _trainable, checkpoint_checks, gradient_checks,  # noqa: F401
                           gradient_results, training_checks)
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


@dataclass
class CaseResult:
    case: str
    dtype: str
    device: str  # the candidates' device
    config: ForwardConfig
    comparison: TraceComparison
    path_checks: dict  # backend -> {stage: identical?} for forward_infer vs forward_train
    arbitration: Optional[dict]
    summaries: dict  # backend -> summaries
    digests: dict
    provenance: dict
    seconds: float
    traces: dict = field(default_factory=dict, repr=False)  # backend -> train trace (not serialised)
    batch: Optional[Batch] = field(default=None, repr=False)
    golden: dict = field(default_factory=dict)  # backend -> GoldenResult; empty without a golden
    golden_file: Optional[str] = None
    checkpoints: list = field(default_factory=list)  # CheckpointCheck per direction
    reloaded: dict = field(default_factory=dict, repr=False)  # backend -> reloaded infer trace
    ref: str = REF
    candidates: list = field(default_factory=lambda: [OTHER])
    comparisons: dict = field(default_factory=dict)  # candidate -> TraceComparison against ref
    arbitrations: dict = field(default_factory=dict)  # candidate -> arbitration of its divergence
    gradients: dict = field(default_factory=dict)  # candidate -> GradientCheck (with --grad)
    training: dict = field(default_factory=dict)  # candidate -> TrainingCheck (with --train-steps)
    devices: dict = field(default_factory=dict)  # backend -> the device it computed on

    def __post_init__(self) -> None:
        if not self.comparisons:
            self.comparisons = {self.candidates[0]: self.comparison}
            self.arbitrations = {self.candidates[0]: self.arbitration}
        if not self.devices:
            self.devices = {name: self.device for name in (self.ref, *self.candidates)}

    def where(self) -> str:
        """Where each side ran, e.g. `tensorflow on cpu, torch on cuda`."""
        return ", ".join(f"{name} on {device}" for name, device in self.devices.items())

    @property
    def paths_consistent(self) -> bool:
        return all(all(v.values()) for v in self.path_checks.values())

    @property
    def golden_passed(self) -> bool:
        return all(g.passed for g in self.golden.values())

    @property
    def checkpoints_passed(self) -> bool:
        return all(c.passed for c in self.checkpoints)

    @property
    def comparisons_passed(self) -> bool:
        return all(c.passed for c in self.comparisons.values())

    @property
    def gradients_passed(self) -> bool:
        return all(g.passed for g in self.gradients.values())

    @property
    def training_passed(self) -> bool:
        return all(t.passed for t in self.training.values())

    @property
    def passed(self) -> bool:
        return (self.comparisons_passed and self.paths_consistent and self.golden_passed and self.checkpoints_passed
                and self.gradients_passed and self.training_passed)

    def verdict(self) -> str:
        if self.passed:
            return "PASS" if self.golden_file else "PASS (no golden)"
        if not self.comparisons_passed:
            return "DIVERGED"
        if not self.paths_consistent:
            return "PATHS DIFFER"
        if not self.checkpoints_passed:
            return "CHECKPOINT DIFFERS"
        if not self.gradients_passed:
            return "GRADIENTS DIFFER"
        return "TRAINING DIFFERS" if not self.training_passed else "GOLDEN DIFFERS"

    def golden_messages(self) -> list[str]:
        return [g.message(self.golden_file) for g in self.golden.values() if not g.passed]

    def to_dict(self) -> dict:
        worst = self.comparison.worst
        first = self.comparison.first_divergence
        return {
            "case": self.case, "dtype": self.dtype, "device": self.device, "devices": dict(self.devices),
            "verdict": self.verdict(),
            "passed": self.passed, "config": self.config.to_dict(),
            "worst_stage": worst.stage if worst else None,
            "worst_rel_error": worst.rel_error if worst else None,
            "worst_budget_used": worst.budget_used if worst else None,
            "first_divergence": first.stage if first else None,
            "arbitration": self.arbitration, "comparison": self.comparison.to_dict(),
            "path_checks": self.path_checks, "summaries": self.summaries, "digests": self.digests,
            "checkpoints": [c.to_dict() for c in self.checkpoints],
            "ref": self.ref, "candidates": list(self.candidates),
            "per_candidate": {name: {"comparison": comp.to_dict(), "arbitration": self.arbitrations.get(name)}
                              for name, comp in self.comparisons.items()},
            "golden": {"file": self.golden_file,
                       "passed": self.golden_passed if self.golden_file else None,
                       "messages": self.golden_messages()},
            "gradients": {name: g.to_dict() for name, g in self.gradients.items()},
            "training": {name: t.to_dict() for name, t in self.training.items()},
            "provenance": self.provenance, "seconds": self.seconds,
        }


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
             reuse: Sequence[str] = ()) -> CaseResult:
    """Run `case` on the reference and every candidate backend (the candidates on `device`, the
    reference on `ref_device`, by default the CPU), compare each candidate with the
    reference stage by stage (the numpy backend arbitrates a divergence), save and reload every
    model and, when the case has a golden (and the run is on the shipped data), compare each
    backend's summaries with it. `grad`: also the loss and every gradient (numpy's loss arbitrates);
    `train_steps` K > 0: also K Adam steps from the same weights, compared after each step.
    `reuse`: backends whose model and traces may come from this process's cache (`parity.cache`)
    instead of a fresh build — only for backends nothing patches (the fault catalogue patches the
    port and reuses the reference)."""
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
    models, train, infer = {}, {}, {}
    for name in names:
        if name in reuse:
            run = cached_run(case, name, devices[name], dtype, data)
            models[name], train[name], infer[name] = run.model, run.train, run.infer
        else:
            models[name] = model = get_backend(name).build(cfg, weights, device=devices[name])
            train[name], infer[name] = model.forward_train(batch), model.forward_infer(batch)
    comparisons, arbitrations = {}, {}
    for cand in candidates:
        comparisons[cand] = comparison = compare_traces(train[ref], train[cand], profiles[cand], ref, cand,
                                                        not_provided=get_backend(cand).not_provided())
        first = comparison.first_divergence
        arbitrations[cand] = (arbitrate(first.stage, train[ref], train[cand], cfg, batch, first.tolerance, ref,
                                        cand, weights=weights) if first is not None else None)
    path_checks = {name: {s: bool(np.array_equal(infer[name].get(s), train[name].get(s), equal_nan=True))
                          for s in OBJECT_STAGES if s in train[name] or s in infer[name]} for name in models}
    checks, reloaded = [], {}
    if checkpoints:
        with tempfile.TemporaryDirectory(prefix="parity-ckpt-") as workdir:
            with_checkpoints = {n: m for n, m in models.items() if get_backend(n).checkpoints}
            checks, reloaded = checkpoint_checks(with_checkpoints, train, batch, profiles, devices, Path(workdir),
                                                 ref=ref)
    summaries = {name: {"train": summarise(train[name], cfg), "infer": summarise(infer[name], cfg),
                        **({"reloaded": summarise(reloaded[name], cfg)} if name in reloaded else {})}
                 for name in models}
    gradients, training = {}, {}
    if grad:
        results = gradient_results(models, batch)
        gradients = gradient_checks(models, results, batch, profiles, ref, candidates, weights, devices)
        for name, (losses, grads) in results.items():
            summaries[name]["train"]["gradients"] = gradient_summary(losses, grads)
    if train_steps:
        training = training_checks(cfg, weights, batch, profiles, devices, ref, candidates, train_steps, adam)
    run_digests = {"inputs": digests(batch), "weights": weights_digest(weights)}
    golden, golden_file = {}, None
    if use_golden and data is None:
        from parity import goldens

        path = goldens.golden_path(case.name, goldens_dir)
        if path.exists():
            reference = goldens.load_golden(path)  # corrupt: GoldenError, one line
            golden_file = str(path)
            golden = {name: goldens.compare_golden(reference, summaries[name]["train"], run_digests, dtype,
                                                   goldens.load_golden_profile(devices[name], dtype, tolerance_path),
                                                   run=f"{name} {devices[name]} {dtype}")
                      for name in models if get_backend(name).stages is None}  # partial backends: stages only
    return CaseResult(
        case=case.name, dtype=dtype, device=device, config=cfg, comparison=comparisons[candidates[0]],
        path_checks=path_checks, arbitration=arbitrations[candidates[0]], summaries=summaries,
        digests=run_digests, provenance=_provenance(device, devices, dtype, flags),
        seconds=time.perf_counter() - start, traces=train, batch=batch,
        golden=golden, golden_file=golden_file, checkpoints=checks, reloaded=reloaded,
        ref=ref, candidates=candidates, comparisons=comparisons, arbitrations=arbitrations,
        gradients=gradients, training=training, devices=devices)


@dataclass
class BackendRun:
    """One backend's run of one case: both paths, their summaries and the input digests."""

    case: str
    backend: str
    device: str
    dtype: str
    config: ForwardConfig
    train: dict = field(repr=False)
    infer: dict = field(repr=False)
    summaries: dict  # the train path's summaries (the golden content)
    digests: dict  # {"inputs": {array: sha256}, "weights": sha256}
    provenance: dict
    model: object = field(default=None, repr=False)  # the built model, for checkpoints

    @property
    def label(self) -> str:
        return f"{self.backend} {self.device} {self.dtype}"


def case_digests(case: Case, dtype: str, data: Optional[str | Path] = None) -> dict:
    """sha256 of every input array and of the weights of `case` in `dtype` (numpy only)."""
    _, weights, batch = case.inputs(dtype, data=data)
    return {"inputs": digests(batch), "weights": weights_digest(weights)}


def run_backend(case: Case, backend: str, device: str = "cpu", dtype: str = "float64",
                data: Optional[str | Path] = None) -> BackendRun:
    """Build `backend`'s model for `case` and run both paths once."""
    flags = require_device({backend: device})
    cfg, weights, batch = case.inputs(dtype, data=data)
    model = get_backend(backend).build(cfg, weights, device=device)
    train, infer = model.forward_train(batch), model.forward_infer(batch)
    return BackendRun(case=case.name, backend=backend, device=device, dtype=dtype, config=cfg,
                      train=train, infer=infer, summaries=summarise(train, cfg),
                      digests={"inputs": digests(batch), "weights": weights_digest(weights)},
                      provenance=_provenance(device, {backend: device}, dtype, flags), model=model)


def reference_golden(case: Case, data: Optional[str | Path] = None) -> dict:
    """The golden of `case`: the float64 CPU TensorFlow run's summaries, digests of both dtypes."""
    from parity.goldens import REFERENCE

    backend, device, dtype = REFERENCE
    return golden_of(run_backend(case, backend, device, dtype, data=data), case, data)


def golden_of(run: BackendRun, case: Case, data: Optional[str | Path] = None) -> dict:
    """The golden a run would write: its summaries plus the loss terms and gradient norms of its
    model, the digests of both dtypes and its provenance (with, for the reference run, the
    fingerprint `parity.fingerprint` checks)."""
    from parity.goldens import REFERENCE, build_golden

    _, _, batch = case.inputs(run.dtype, data=data)
    summaries = dict(run.summaries)
    if _trainable(run.model):
        summaries["gradients"] = gradient_summary(*run.model.loss_and_gradients(batch))
    all_digests = {d: case_digests(case, d, data) for d in ("float32", "float64")}
    golden = build_golden(case.name, case.config.to_dict(), all_digests, summaries,
                          dict(run.provenance, backend=run.backend))
    if (run.backend, run.device, run.dtype) == REFERENCE:  # what `parity refresh` may trust without a re-run
        from parity.fingerprint import fingerprint, inputs_key

        golden["provenance"]["fingerprint"] = fingerprint(golden, inputs_key(case, data, all_digests))
    return golden
