"""The parity engine: run one case on both backends and judge it (docs/design.md §1).

`run_case` builds both models once, runs both paths, computes summaries, the stage-by-stage
comparison and the numpy arbitration of the first divergence. The backends are imported here,
lazily, never at module top level.
"""

from __future__ import annotations

import datetime
import functools
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from parity import __version__
from parity.backends import configure_all, get_backend
from parity.cache import cached_run
from parity.cases import Case
from parity.compare import StageComparison, TraceComparison, compare_traces
from parity.config import ForwardConfig
from parity.data import Batch, digests
from parity.oracle import arbitrate
from parity.stages import INFER_STAGES, OBJECT_STAGES
from parity.summaries import summarise
from parity.tolerances import TOLERANCE_PATH, load_profile
from parity.training import AdamConfig, GradientCheck, TrainingCheck, compare_gradients, compare_training, gradient_summary
from parity.weights import digest as weights_digest

REF, OTHER = "tensorflow", "torch"  # the default reference and candidate


class DeviceUnavailable(ValueError):
    """The run asked for a device this machine does not have."""


def require_device(device: str, backends: Sequence[str] = (OTHER, REF)) -> dict[str, object]:
    """Check `device` for each backend and apply its determinism flags (docs/design.md §8)."""
    try:
        return configure_all(backends, device)
    except RuntimeError as exc:  # each backend's DeviceError
        raise DeviceUnavailable(str(exc)) from None


@dataclass
class CheckpointCheck:
    """A model saved, loaded back into a fresh object (`saved` → `loaded_by`), its inference path
    compared stage by stage with the saved model's in-memory training path."""

    saved: str  # the backend whose checkpoint was written
    loaded_by: str  # the backend that loaded it (the same one, or the other through neutral weights)
    comparison: TraceComparison

    @property
    def direction(self) -> str:
        return f"{self.saved} → {self.loaded_by}"

    @property
    def passed(self) -> bool:
        return self.comparison.passed

    @property
    def first_stage(self) -> Optional[str]:
        first = self.comparison.first_divergence
        return first.stage if first else None

    def describe(self) -> str:
        if self.passed:
            return f"checkpoint {self.direction}: reloaded inference path matches the training path"
        return (f"checkpoint {self.direction}: the reloaded inference path parts from the in-memory "
                f"training path at {self.first_stage}")

    def to_dict(self) -> dict:
        worst = self.comparison.worst
        return {"saved": self.saved, "loaded_by": self.loaded_by, "direction": self.direction,
                "passed": self.passed, "first_divergence": self.first_stage,
                "worst_stage": worst.stage if worst else None,
                "worst_rel_error": worst.rel_error if worst else None,
                "stages": [st.to_dict() for st in self.comparison.stages]}


def checkpoint_checks(models: dict, train: dict, batch: Batch, profile, device: str,
                      workdir: Path, ref: str = REF) -> tuple[list[CheckpointCheck], dict]:
    """Save every model, load it back in a fresh object and compare its inference path with the
    in-memory training path; then hand the reference's checkpoint, as neutral weights + state, to
    each candidate and each candidate's to the reference, and compare the same way. Returns the
    checks and the reloaded infer traces."""
    loaded, infer = {}, {}
    checks = []
    train = {name: {stage: train[name][stage] for stage in INFER_STAGES} for name in models}
    for name, model in models.items():
        loaded[name] = get_backend(name).load(model.save(Path(workdir) / f"{name}.ckpt"), device=device)
        infer[name] = loaded[name].forward_infer(batch)
        checks.append(CheckpointCheck(name, name, compare_traces(
            train[name], infer[name], profile, f"{name} train", f"{name} reloaded", order=list(INFER_STAGES))))
    pairs = [(a, b) for c in models if c != ref for a, b in ((ref, c), (c, ref))]
    for saved, loaded_by in pairs:
        source = loaded[saved]
        state = source.state()
        port = get_backend(loaded_by).build(source.cfg, source.weights(), probe=state["probe"],
                                            log_scale=state["log_scale"], device=device)
        checks.append(CheckpointCheck(saved, loaded_by, compare_traces(
            train[saved], port.forward_infer(batch), profile, f"{saved} train", f"{loaded_by} from {saved}'s checkpoint",
            order=list(INFER_STAGES))))
    return checks, infer


def _trainable(model) -> bool:
    return callable(getattr(model, "loss_and_gradients", None)) and callable(getattr(model, "train_steps", None))


def gradient_results(models: dict, batch: Batch) -> dict:
    """backend -> (loss terms, gradients) for every model that can compute them."""
    return {name: model.loss_and_gradients(batch) for name, model in models.items() if _trainable(model)}


def _not_trainable(ref: str, cand: str, what: str) -> TraceComparison:
    return TraceComparison(ref, cand, [StageComparison(what, True, f"not provided by {cand}", provided=False)])


def gradient_checks(models: dict, results: dict, batch: Batch, profile, ref: str, candidates: Sequence[str],
                    weights) -> dict:
    """Loss terms and gradients (`results`, from `gradient_results`) of each candidate against the
    reference, in backward order; the numpy backend's loss is the third opinion when a loss term
    differs."""
    if ref not in results:
        raise ValueError(f"the reference {ref!r} computes no gradients (no loss_and_gradients / train_steps)")
    cfg = models[ref].cfg
    numpy_model = models.get("numpy") or get_backend("numpy").build(cfg, weights)
    numpy_losses = numpy_model.losses(batch)
    checks = {}
    for cand in candidates:
        if cand not in results:
            checks[cand] = GradientCheck(cand, _not_trainable(ref, cand, "grad"))
            continue
        checks[cand] = compare_gradients(cfg, results[ref], results[cand], profile, ref, cand, numpy_losses,
                                         arbiter={"weights": weights, "batch": batch,
                                                  "log_scale": models[ref].state()["log_scale"]})
    return checks


def training_checks(cfg: ForwardConfig, weights, batch: Batch, profile, device: str, ref: str,
                    candidates: Sequence[str], steps: int, adam: AdamConfig) -> dict:
    """`steps` Adam steps per backend, each on a freshly built model (the run's models stay as
    they are), compared after every step. The reference steps in lockstep with each candidate,
    so only one step of each is held; with several candidates it trains once per candidate."""
    def train(name: str):  # a fresh model per comparison; None where the backend cannot train
        model = get_backend(name).build(cfg, weights, device=device)
        return model.train_steps(batch, steps, adam) if _trainable(model) else None

    checks = {}
    for cand in candidates:
        ref_records, records = train(ref), train(cand)  # stepped in lockstep: one step of each is held
        if ref_records is None:
            raise ValueError(f"the reference {ref!r} cannot train (no train_steps)")
        checks[cand] = (compare_training(cfg, ref_records, records, profile, ref, cand) if records is not None
                        else TrainingCheck(cand, ref, steps=[_not_trainable(ref, cand, "train")]))
    return checks


@dataclass
class CaseResult:
    case: str
    dtype: str
    device: str
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

    def __post_init__(self) -> None:
        if not self.comparisons:
            self.comparisons = {self.candidates[0]: self.comparison}
            self.arbitrations = {self.candidates[0]: self.arbitration}

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
            "case": self.case, "dtype": self.dtype, "device": self.device, "verdict": self.verdict(),
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


def _provenance(device: str, dtype: str, flags: dict, backends: Sequence[str] = (REF, OTHER)) -> dict:
    """Where a result came from; recorded, never compared. Framework versions of `backends`."""
    versions = {get_backend(name).framework: get_backend(name).version() for name in backends}
    return {"ptycho_parity": __version__, "python": platform.python_version(),
            "numpy": np.__version__, **versions,
            "device": device, "dtype": dtype, "flags": flags, "machine": platform.machine(),
            "git_commit": _git_commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def run_case(case: Case, device: str = "cpu", dtype: str = "float32",
             data: Optional[str | Path] = None,
             tolerance_path: str | Path = TOLERANCE_PATH,
             goldens_dir: Optional[str | Path] = None, use_golden: bool = True,
             checkpoints: bool = True, ref: str = REF, candidates: Sequence[str] = (OTHER,),
             grad: bool = False, train_steps: int = 0, adam: AdamConfig = AdamConfig(),
             reuse: Sequence[str] = ()) -> CaseResult:
    """Run `case` on the reference and every candidate backend, compare each candidate with the
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
    flags = require_device(device, names)
    profile = load_profile(device, dtype, path=tolerance_path)
    cfg, weights, batch = case.inputs(dtype, data=data)
    models, train, infer = {}, {}, {}
    for name in names:
        if name in reuse:
            run = cached_run(case, name, device, dtype, data)
            models[name], train[name], infer[name] = run.model, run.train, run.infer
        else:
            models[name] = model = get_backend(name).build(cfg, weights, device=device)
            train[name], infer[name] = model.forward_train(batch), model.forward_infer(batch)
    comparisons, arbitrations = {}, {}
    for cand in candidates:
        comparisons[cand] = comparison = compare_traces(train[ref], train[cand], profile, ref, cand,
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
            checks, reloaded = checkpoint_checks(with_checkpoints, train, batch, profile, device, Path(workdir),
                                                 ref=ref)
    summaries = {name: {"train": summarise(train[name], cfg), "infer": summarise(infer[name], cfg),
                        **({"reloaded": summarise(reloaded[name], cfg)} if name in reloaded else {})}
                 for name in models}
    gradients, training = {}, {}
    if grad:
        results = gradient_results(models, batch)
        gradients = gradient_checks(models, results, batch, profile, ref, candidates, weights)
        for name, (losses, grads) in results.items():
            summaries[name]["train"]["gradients"] = gradient_summary(losses, grads)
    if train_steps:
        training = training_checks(cfg, weights, batch, profile, device, ref, candidates, train_steps, adam)
    run_digests = {"inputs": digests(batch), "weights": weights_digest(weights)}
    golden, golden_file = {}, None
    if use_golden and data is None:
        from parity import goldens

        path = goldens.golden_path(case.name, goldens_dir)
        if path.exists():
            reference = goldens.load_golden(path)  # corrupt: GoldenError, one line
            golden_profile = goldens.load_golden_profile(device, dtype, tolerance_path)
            golden_file = str(path)
            golden = {name: goldens.compare_golden(reference, summaries[name]["train"], run_digests, dtype,
                                                   golden_profile, run=f"{name} {device} {dtype}")
                      for name in models if get_backend(name).stages is None}  # partial backends: stages only
    return CaseResult(
        case=case.name, dtype=dtype, device=device, config=cfg, comparison=comparisons[candidates[0]],
        path_checks=path_checks, arbitration=arbitrations[candidates[0]], summaries=summaries,
        digests=run_digests, provenance=_provenance(device, dtype, flags, names),
        seconds=time.perf_counter() - start, traces=train, batch=batch,
        golden=golden, golden_file=golden_file, checkpoints=checks, reloaded=reloaded,
        ref=ref, candidates=candidates, comparisons=comparisons, arbitrations=arbitrations,
        gradients=gradients, training=training)


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
    flags = require_device(device, (backend,))
    cfg, weights, batch = case.inputs(dtype, data=data)
    model = get_backend(backend).build(cfg, weights, device=device)
    train, infer = model.forward_train(batch), model.forward_infer(batch)
    return BackendRun(case=case.name, backend=backend, device=device, dtype=dtype, config=cfg,
                      train=train, infer=infer, summaries=summarise(train, cfg),
                      digests={"inputs": digests(batch), "weights": weights_digest(weights)},
                      provenance=_provenance(device, dtype, flags, (backend,)), model=model)


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
