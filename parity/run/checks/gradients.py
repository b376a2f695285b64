"""Loss and gradients, and K Adam steps, of each candidate against the reference (or, where the
reference cannot train, against the candidate itself on the CPU) (docs/design.md §11)."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from parity.backends import get_backend
from parity.run.checks.base import Check, _status
from parity.run.compare import StageComparison, TraceComparison
from parity.config import ForwardConfig
from parity.inputs.data import Batch
from parity.run.results import NOT_RUN, CheckResult
from parity.run.adam_steps import TrainingCheck, compare_training
from parity.run.training import AdamConfig, GradientCheck, compare_gradients


def _not_run(ref: str, cand: str, what: str, why: str) -> TraceComparison:
    return TraceComparison(ref, cand, [StageComparison(what, True, why, provided=False)])


def _not_trainable(ref: str, cand: str, what: str) -> TraceComparison:
    return _not_run(ref, cand, what, f"not provided by {cand}")


def stand_in(cand: str, devices: Mapping[str, str]) -> Optional[str]:
    """What a candidate's gradients and Adam steps are compared with where the reference cannot
    train (numpy): the candidate itself on the CPU, when it runs elsewhere — the port on the GPU
    against the port on the CPU, whose gradient norms the goldens check. None where there is no
    such stand-in (the candidate is on the CPU already)."""
    return None if devices[cand] == "cpu" else f"{cand} on cpu"


def _no_reference_why(ref: str, cand: str, what: str) -> str:
    return (f"not run: the reference {ref} computes no {what} and {cand} runs on the CPU "
            f"(on another device it is compared with itself on the CPU)")


def gradient_checks(models: dict, results: dict, batch: Batch, profiles: Mapping, ref: str,
                    candidates: Sequence[str], weights, devices: Optional[Mapping[str, str]] = None) -> dict:
    """Loss terms and gradients (`results`, from `gradient_results`) of each candidate against the
    reference (or, where the reference cannot train, against the candidate's `stand_in`), in
    backward order; the numpy backend's loss is the third opinion when a loss term differs."""
    devices = devices or {name: "cpu" for name in models}
    cfg = models[ref].cfg
    numpy_model = models.get("numpy") or get_backend("numpy").build(cfg, weights)
    numpy_losses = numpy_model.losses(batch)
    checks = {}
    for cand in candidates:
        if cand not in results:
            checks[cand] = GradientCheck(cand, _not_trainable(ref, cand, "grad"))
            continue
        base, base_model = ref, models[ref]
        if ref not in results:
            base = stand_in(cand, devices)
            if base is None:
                checks[cand] = GradientCheck(cand, _not_run(ref, cand, "grad", _no_reference_why(ref, cand, "gradients")))
                continue
            base_model = get_backend(cand).build(cfg, weights, device="cpu")
            results = {**results, base: base_model.loss_and_gradients(batch)}
        checks[cand] = compare_gradients(cfg, results[base], results[cand], profiles[cand], base, cand, numpy_losses,
                                         arbiter={"weights": weights, "batch": batch,
                                                  "log_scale": base_model.state()["log_scale"]},
                                         partial=get_backend(cand).can("partial_gradients"))
    return checks


def training_checks(cfg: ForwardConfig, weights, batch: Batch, profiles: Mapping, devices: Mapping[str, str],
                    ref: str, candidates: Sequence[str], steps: int, adam: AdamConfig) -> dict:
    """`steps` Adam steps per backend, each on a freshly built model on its own device (the run's
    models stay as they are), compared after every step under the candidate's profile. The
    reference steps in lockstep with each candidate, so only one step of each is held; with
    several candidates it trains once per candidate."""
    def train(name: str, device: str):  # a fresh model per comparison; None where the backend cannot train
        model = get_backend(name).build(cfg, weights, device=device)
        return model.train_steps(batch, steps, adam) if get_backend(name).trains() else None

    checks = {}
    for cand in candidates:
        base, ref_records = ref, train(ref, devices[ref])  # stepped in lockstep: one step of each is held
        if ref_records is None and stand_in(cand, devices) is not None:
            base, ref_records = stand_in(cand, devices), train(cand, "cpu")
        records = train(cand, devices[cand])
        if records is None:
            checks[cand] = TrainingCheck(cand, base, steps=[_not_trainable(base, cand, "train")])
        elif ref_records is None:
            checks[cand] = TrainingCheck(cand, ref, steps=[_not_run(ref, cand, "train",
                                                                    _no_reference_why(ref, cand, "Adam steps"))])
        else:
            checks[cand] = compare_training(cfg, ref_records, records, profiles[cand], base, cand, initial=weights)
    return checks


class GradientAgreement(Check):
    name = "gradients"
    requires = ("gradients",)

    def lacking(self, name, capability):
        return f"{name} computes no loss and gradients (an adapter: give loss=)"

    def wanted(self, ctx):
        return ctx.request.grad

    def run(self, ctx, cand):
        results = ctx.gradient_results()
        models = {name: side.model for name, side in ctx.sides.items() if side.model is not None}
        profiles = {name: side.profile for name, side in ctx.sides.items()}
        devices = {name: side.device for name, side in ctx.sides.items()}
        check = ctx.call(cand, "gradients", gradient_checks, models, results, ctx.batch, profiles, ctx.ref,
                         [cand], ctx.inputs.weights, devices)[cand]
        status = _status(check.passed)
        if check.passed and all(not s.provided for s in check.comparison.stages):
            status = NOT_RUN
        return [CheckResult(self.name, cand, status, check.describe(), check)]


class TrainingAgreement(Check):
    name = "training"
    requires = ("gradients", "adam_steps")

    def lacking(self, name, capability):
        return f"{name} takes no optimizer steps (adapters do not train)"

    def wanted(self, ctx):
        return bool(ctx.request.train_steps)

    def run(self, ctx, cand):
        profiles = {name: side.profile for name, side in ctx.sides.items()}
        devices = {name: side.device for name, side in ctx.sides.items()}
        check = ctx.call(cand, "training", training_checks, ctx.cfg, ctx.inputs.weights, ctx.batch, profiles,
                         devices, ctx.ref, [cand], ctx.request.train_steps, ctx.request.adam)[cand]
        status = _status(check.passed)
        if check.passed and all(not s.provided for step in check.steps for s in step.stages):
            status = NOT_RUN
        return [CheckResult(self.name, cand, status, check.describe(), check)]
