"""One pipeline of checks, the same for every backend (docs/design.md §10).

`RunContext` holds what every check reads (the case's inputs, each backend's model and traces,
the tolerance profiles). A check is a small class with a name, the backends it applies to and
`run(ctx, backend) -> CheckResult`; the engine runs each check for each of its backends, in
`PIPELINE` order. Whatever a backend raises while the harness calls it becomes an `error` result
naming the file:line in the backend's code; a check a backend lacks the capability for is `not
run`, with the reason. What a backend prints during a run is captured into `ctx.output`.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from parity.backends import get_backend
from parity.checks import CheckpointCheck, _trainable, gradient_checks, training_checks
from parity.compare import compare_traces
from parity.config import ForwardConfig
from parity.oracle import arbitrate
from parity.results import ERROR, FAILED, NOT_RUN, PASSED, WIRING, CheckResult, Failure, failure_from
from parity.stages import INFER_STAGES, OBJECT_STAGES
from parity.training import AdamConfig


class BackendRaised(Exception):
    """Carries the Failure of a backend call out of a check."""

    def __init__(self, failure: Failure):
        super().__init__(failure.line())
        self.failure = failure


@dataclass
class RunContext:
    case: Any
    cfg: ForwardConfig
    weights: Mapping[str, np.ndarray]
    batch: Any
    dtype: str
    ref: str
    candidates: list
    devices: Mapping[str, str]
    profiles: Mapping[str, Any]
    grad: bool = False
    train_steps: int = 0
    adam: AdamConfig = AdamConfig()
    checkpoints: bool = True
    golden: Optional[tuple] = None  # (golden dict, its file) or None
    golden_why: str = ""  # why there is no golden comparison, when there is none
    golden_profiles: Mapping[str, Any] = field(default_factory=dict)
    digests: Mapping = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    infer: dict = field(default_factory=dict)
    failed: dict = field(default_factory=dict)  # backend -> Failure of its build or forward
    reloaded: dict = field(default_factory=dict)  # backend -> the reloaded model's infer trace
    loaded: dict = field(default_factory=dict)  # backend -> the reloaded model
    output: dict = field(default_factory=dict)  # backend -> what it printed
    workdir: Optional[Path] = None
    _gradients: Optional[dict] = None

    @property
    def backends(self) -> list[str]:
        return [self.ref, *self.candidates]

    def call(self, backend: str, during: str, fn: Callable, *args, **kwargs):
        """Call into a backend's code: its stdout captured, what it raises a BackendRaised."""
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink):
                return fn(*args, **kwargs)
        except Exception as exc:
            raise BackendRaised(failure_from(exc, f"{backend} {during}")) from None
        finally:
            if sink.getvalue():
                self.output[backend] = self.output.get(backend, "") + sink.getvalue()

    def prepare(self, reuse: Callable[[str], Optional[Any]] = lambda name: None) -> None:
        """Build every backend's model and run both paths; a backend that raises is recorded in
        `failed` (its checks then read error or not run), never raised."""
        for name in self.backends:
            try:
                cached = reuse(name)
                if cached is not None:
                    self.models[name], self.train[name], self.infer[name] = cached
                    continue
                model = self.call(name, "build", get_backend(name).build, self.cfg, self.weights,
                                  device=self.devices[name])
                self.models[name] = model
                self.train[name] = self.call(name, "forward_train", model.forward_train, self.batch)
                self.infer[name] = self.call(name, "forward_infer", model.forward_infer, self.batch)
            except BackendRaised as exc:
                self.failed[name] = exc.failure

    def gradient_results(self) -> dict:
        """backend -> (loss terms, gradients), once per run, for every model that computes them."""
        if self._gradients is None:
            self._gradients = {name: self.call(name, "loss_and_gradients", model.loss_and_gradients, self.batch)
                               for name, model in self.models.items() if _has_gradients(model)}
        return self._gradients


def _has_gradients(model) -> bool:
    return callable(getattr(model, "loss_and_gradients", None))


def _status(passed: bool) -> str:
    return PASSED if passed else FAILED


class Check:
    """One kind of check. `backends(ctx)`: whom it applies to; `run(ctx, name)`: the result."""

    name = ""

    def backends(self, ctx: RunContext) -> list[str]:
        return list(ctx.candidates)

    def wanted(self, ctx: RunContext) -> bool:
        """Whether the run asked for this check (gradients and training are asked for)."""
        return True

    def run(self, ctx: RunContext, name: str) -> list[CheckResult]:
        raise NotImplementedError

    def not_run(self, name: str, why: str, label: str = "") -> CheckResult:
        return CheckResult(self.name, name, NOT_RUN, f"not run: {why}", label=label)


class ForwardAgreement(Check):
    """Every stage of the candidate's training path against the reference's; the numpy backend
    arbitrates the first divergence."""

    name = "forward"

    def run(self, ctx, cand):
        comparison = compare_traces(ctx.train[ctx.ref], ctx.train[cand], ctx.profiles[cand], ctx.ref, cand,
                                    not_provided=get_backend(cand).not_provided(ctx.cfg))
        first = comparison.first_divergence
        arbitration = (arbitrate(first.stage, ctx.train[ctx.ref], ctx.train[cand], ctx.cfg, ctx.batch,
                                 first.tolerance, ctx.ref, cand, weights=ctx.weights) if first is not None else None)
        worst = comparison.worst
        if first is None:
            summary = (f"every stage agrees (worst {worst.stage}: {worst.rel_error:.2e})"
                       if worst is not None and worst.rel_error is not None else "every provided stage agrees")
        else:
            summary = f"first divergence at {first.stage}: " + (arbitration or {}).get("verdict", first.message)
            if first.rel_error is None or first.overlap or "mismatch" in first.message:  # what differs, not only who
                summary += f" ({first.message})"
        return [CheckResult(self.name, cand, _status(comparison.passed), summary, comparison,
                            extra={"arbitration": arbitration})]


class PathConsistency(Check):
    """forward_infer against forward_train of the same model: the object stages must be identical."""

    name = "paths"

    def backends(self, ctx):
        return ctx.backends

    def run(self, ctx, name):
        train, infer = ctx.train[name], ctx.infer[name]
        same = {s: bool(np.array_equal(infer.get(s), train.get(s), equal_nan=True))
                for s in OBJECT_STAGES if s in train or s in infer}
        bad = [s for s, ok in same.items() if not ok]
        if not same:
            return [self.not_run(name, f"{name} provides no object stage")]
        summary = "forward_infer equals forward_train" if not bad else f"forward_infer differs at {', '.join(bad)}"
        return [CheckResult(self.name, name, _status(not bad), summary, same)]


def _provided(ctx, name: str, stages: Sequence[str]) -> list[str]:
    missing = set(get_backend(name).not_provided(ctx.cfg))
    return [s for s in stages if s not in missing]


class CheckpointRoundTrip(Check):
    """Save, load into a fresh model on the same device, compare its inference path with the
    in-memory training path (the seed's bug: a checkpoint that loses the intensity scale)."""

    name = "checkpoint"

    def backends(self, ctx):
        return ctx.backends

    def run(self, ctx, name):
        backend = get_backend(name)
        if not ctx.checkpoints:
            return [self.not_run(name, "checkpoints are off for this run", f"{name} → {name}")]
        if not backend.checkpoints:
            return [self.not_run(name, f"{name} has no save/load", f"{name} → {name}")]
        model = ctx.models[name]
        path = ctx.call(name, "save", model.save, Path(ctx.workdir) / f"{name}.ckpt")
        loaded = ctx.call(name, "load", backend.load, path, cfg=ctx.cfg, device=ctx.devices[name])
        ctx.loaded[name] = loaded
        ctx.reloaded[name] = infer = ctx.call(name, "forward_infer after load", loaded.forward_infer, ctx.batch)
        order = list(backend.infer_stages_for(ctx.cfg))
        check = CheckpointCheck(name, name, compare_traces(
            {s: ctx.train[name][s] for s in order if s in ctx.train[name]}, infer, ctx.profiles[name],
            f"{name} train", f"{name} reloaded", order=order))
        return [CheckResult(self.name, name, _status(check.passed), check.describe(prefix=False), check, label=check.direction)]


class CrossCheckpoint(Check):
    """The reference's checkpoint handed, as neutral weights + state, to the candidate, and the
    candidate's to the reference; each loaded side's inference path against the saving side's
    training path."""

    name = "cross-checkpoint"

    def run(self, ctx, cand):
        out = []
        for saved, loaded_by in ((ctx.ref, cand), (cand, ctx.ref)):
            label = f"{saved} → {loaded_by}"
            why = self._why_not(ctx, saved, loaded_by)
            if why:
                out.append(self.not_run(cand, why, label))
                continue
            source = ctx.loaded[saved]
            weights = ctx.call(saved, "weights() of the loaded model", source.weights)
            state = ctx.call(saved, "state() of the loaded model", source.state)
            port = ctx.call(loaded_by, f"build from {saved}'s checkpoint", get_backend(loaded_by).build, ctx.cfg,
                            weights, probe=state.get("probe"), log_scale=state["log_scale"],
                            device=ctx.devices[loaded_by])
            infer = ctx.call(loaded_by, f"forward_infer from {saved}'s checkpoint", port.forward_infer, ctx.batch)
            order = [s for s in _provided(ctx, saved, INFER_STAGES)
                     if s in get_backend(loaded_by).infer_stages_for(ctx.cfg)]
            check = CheckpointCheck(saved, loaded_by, compare_traces(
                {s: ctx.train[saved][s] for s in order}, {s: infer[s] for s in order if s in infer},
                ctx.profiles[cand], f"{saved} train", f"{loaded_by} from {saved}'s checkpoint", order=order))
            out.append(CheckResult(self.name, cand, _status(check.passed), check.describe(prefix=False), check, label=label))
        return out

    @staticmethod
    def _why_not(ctx, saved: str, loaded_by: str) -> str:
        if not ctx.checkpoints:
            return "checkpoints are off for this run"
        if saved not in ctx.loaded:
            return f"{saved} has no save/load"
        if not get_backend(saved).neutral_out:
            return f"{saved} gives no neutral weights out (no weight mapping)"
        if not get_backend(loaded_by).builds_from_state:
            return f"{loaded_by} cannot be built from another backend's state (no set_state)"
        return ""


class GoldenCheck(Check):
    """Each backend's summaries against the case's golden, on the sections its stages allow."""

    name = "golden"

    def backends(self, ctx):
        return ctx.backends

    def run(self, ctx, name):
        from parity import goldens
        from parity.summaries import SECTION_STAGES, summarise

        if ctx.golden is None:
            return [self.not_run(name, ctx.golden_why)]
        golden, path = ctx.golden
        provided = set(_provided(ctx, name, list(ctx.train[name])))
        sections = [s for s, stages in SECTION_STAGES.items() if all(st in provided for st in stages)]
        if not sections:
            return [self.not_run(name, f"{name} provides none of the stages a golden summarises")]
        summaries = summarise({s: ctx.train[name][s] for s in provided}, ctx.cfg)
        skipped = [s for s in SECTION_STAGES if s not in sections]
        if ctx.grad and name in (ctx._gradients or {}):
            from parity.training import gradient_summary

            summaries["gradients"] = gradient_summary(*ctx._gradients[name])
            if getattr(ctx.models[name], "partial_gradients", False):  # an adapter's loss: the terms it gives
                golden, absent = _only_gradients_of(golden, summaries["gradients"])
                skipped += absent
        result = goldens.compare_golden(golden, summaries, ctx.digests, ctx.dtype, ctx.golden_profiles[name],
                                        run=f"{name} {ctx.devices[name]} {ctx.dtype}", sections=sections)
        summary = (f"matches {Path(path).name}" if result.passed else
                   f"{len(result.mismatches)} of {result.compared} keys out of tolerance or inputs changed")
        if skipped:
            summary += f" (not compared: {', '.join(skipped)} — {name} does not provide them)"
        return [CheckResult(self.name, name, _status(result.passed), summary, result)]


def _only_gradients_of(golden: dict, obtained: dict) -> tuple[dict, list[str]]:
    """The golden with only the gradient keys a partial backend computed; the others' names."""
    want = golden["summaries"].get("gradients", {})
    kept = {group: {k: v for k, v in values.items() if k in obtained.get(group, {})} for group, values in want.items()}
    absent = [f"gradients.{g}.{k}" for g, values in want.items() for k in values if k not in kept[g]]
    return {**golden, "summaries": {**golden["summaries"], "gradients": kept}}, absent


class GradientAgreement(Check):
    name = "gradients"

    def wanted(self, ctx):
        return ctx.grad

    def run(self, ctx, cand):
        if not _has_gradients(ctx.models[cand]):
            return [self.not_run(cand, f"{cand} computes no loss and gradients (an adapter: give loss=)")]
        results = ctx.gradient_results()
        check = ctx.call(cand, "gradients", gradient_checks, ctx.models, results, ctx.batch, ctx.profiles, ctx.ref,
                         [cand], ctx.weights, ctx.devices)[cand]
        status = _status(check.passed)
        if check.passed and all(not s.provided for s in check.comparison.stages):
            status = NOT_RUN
        return [CheckResult(self.name, cand, status, check.describe(), check)]


class TrainingAgreement(Check):
    name = "training"

    def wanted(self, ctx):
        return bool(ctx.train_steps)

    def run(self, ctx, cand):
        if not _trainable(ctx.models[cand]):
            return [self.not_run(cand, f"{cand} takes no optimizer steps (adapters do not train)")]
        check = ctx.call(cand, "training", training_checks, ctx.cfg, ctx.weights, ctx.batch, ctx.profiles,
                         ctx.devices, ctx.ref, [cand], ctx.train_steps, ctx.adam)[cand]
        status = _status(check.passed)
        if check.passed and all(not s.provided for step in check.steps for s in step.stages):
            status = NOT_RUN
        return [CheckResult(self.name, cand, status, check.describe(), check)]


# the golden check last: with --grad it compares the loss terms and gradient norms the gradient
# check computed (once per run)
PIPELINE: tuple[Check, ...] = (ForwardAgreement(), PathConsistency(), CheckpointRoundTrip(), CrossCheckpoint(),
                               GradientAgreement(), TrainingAgreement(), GoldenCheck())


def run_pipeline(ctx: RunContext, checks: Sequence[Check] = PIPELINE) -> list[CheckResult]:
    """Every check for each of its backends, in order. A backend whose build or forward raised
    gets an error result at the forward check and `not run` for the rest."""
    results: list[CheckResult] = []
    with tempfile.TemporaryDirectory(prefix="parity-ckpt-") as workdir:
        ctx.workdir = Path(workdir)
        for check in (c for c in checks if c.wanted(ctx)):
            for name in check.backends(ctx):
                results += _run_one(check, ctx, name)
    return results


def _run_one(check: Check, ctx: RunContext, name: str) -> list[CheckResult]:
    broken = [b for b in dict.fromkeys([name, ctx.ref]) if b in ctx.failed]
    if broken:  # the error once, at the forward check; the checks that needed the model say why not
        failure = ctx.failed[broken[0]]
        if check.name == "forward":
            return [CheckResult(check.name, name, ERROR, failure.line(), failure=failure)]
        how = "is mis-wired (found in" if failure.kind == WIRING else "raised (in"
        return [check.not_run(name, f"{broken[0]} {how} {failure.during.removeprefix(broken[0] + ' ')}; "
                                    f"see the forward check)")]
    try:
        return check.run(ctx, name)
    except BackendRaised as exc:
        return [CheckResult(check.name, name, ERROR, exc.failure.line(), failure=exc.failure)]
