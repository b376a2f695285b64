"""Loss and gradients, and K Adam steps, of each candidate against the reference (or, where the
reference cannot train, against the candidate itself on the CPU) (docs/design.md §11)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Mapping, Optional, Sequence

from parity.backends import get_backend
from parity.run.checks.base import Check, _status
from parity.run.record import file_stem
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
    if get_backend(ref).recorded:
        how = "--grad" if what == "gradients" else "--train-steps K"
        return f"not run: the reference is recorded without {what} (parity record {how})"
    return (f"not run: the reference {ref} computes no {what} and {cand} runs on the CPU "
            f"(on another device it is compared with itself on the CPU)")


def gradient_checks(models: dict, results: dict, batch: Batch, profiles: Mapping, ref: str,
                    candidates: Sequence[str], weights, devices: Optional[Mapping[str, str]] = None,
                    state: Mapping = {}) -> dict:
    """Loss terms and gradients (`results`, from `gradient_results`) of each candidate against the
    reference (or, where the reference cannot train, against the candidate's `stand_in`), in
    backward order; the numpy backend's loss is the third opinion when a loss term differs."""
    devices = devices or {name: "cpu" for name in models}
    cfg = models[ref].cfg

    @functools.cache
    def numpy_losses() -> dict:  # asked only where a loss term differs (a numpy forward pass), once
        return (models.get("numpy") or get_backend("numpy").build(cfg, weights, **state)).losses(batch)

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
            base_model = get_backend(cand).build(cfg, weights, device="cpu", **state)
            results = {**results, base: base_model.loss_and_gradients(batch)}
        checks[cand] = compare_gradients(cfg, results[base], results[cand], profiles[cand], base, cand, numpy_losses,
                                         arbiter={"weights": weights, "batch": batch, **_state_of(base_model)},
                                         partial=get_backend(cand).can("partial_gradients"))
    return checks


def _state_of(model) -> dict:
    """The model state the numpy arbiter's loss is computed at: log_scale and probe (a trained case's)."""
    state = model.state()
    return {"log_scale": state["log_scale"], "probe": state.get("probe")}


def training_checks(cfg: ForwardConfig, weights, batch: Batch, profiles: Mapping, devices: Mapping[str, str],
                    ref: str, candidates: Sequence[str], steps: int, adam: AdamConfig, state: Mapping = {},
                    trained: Optional[dict] = None) -> dict:
    """`steps` Adam steps per backend, each on a freshly built model on its own device (the run's
    models stay as they are), compared after every step under the candidate's profile. The
    reference steps in lockstep with each candidate, so only one step of each is held; with
    several candidates it trains once per candidate. `trained`: filled with each backend's model
    as its steps left it (the reference's first), for `--save-trained`."""
    trained = {} if trained is None else trained

    def train(name: str, device: str):  # a fresh model per comparison; (None, None) where it cannot train
        if not get_backend(name).trains():
            return None, None
        model = get_backend(name).build(cfg, weights, device=device, **state)
        return model, model.train_steps(batch, steps, adam)

    checks = {}
    for cand in candidates:
        base, (ref_model, ref_records) = ref, train(ref, devices[ref])  # in lockstep: one step of each is held
        if ref_records is None and stand_in(cand, devices) is not None:
            base, (_, ref_records) = stand_in(cand, devices), train(cand, "cpu")
        model, records = train(cand, devices[cand])
        if records is None:
            checks[cand] = TrainingCheck(cand, base, steps=[_not_trainable(base, cand, "train")])
        elif ref_records is None:
            checks[cand] = TrainingCheck(cand, ref, steps=[_not_run(ref, cand, "train",
                                                                    _no_reference_why(ref, cand, "Adam steps"))])
        else:
            checks[cand] = compare_training(cfg, ref_records, records, profiles[cand], base, cand, initial=weights)
            trained.setdefault(cand, model)  # its steps taken (the records are read): what --save-trained saves
            if base == ref:
                trained.setdefault(ref, ref_model)
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
                         [cand], ctx.inputs.weights, devices, ctx.inputs.state)[cand]
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
        trained: dict = {}
        check = ctx.call(cand, "training", training_checks, ctx.cfg, ctx.inputs.weights, ctx.batch, profiles,
                         devices, ctx.ref, [cand], ctx.request.train_steps, ctx.request.adam, ctx.inputs.state,
                         trained)[cand]
        saved = self._save(ctx, cand, trained) if ctx.request.save_trained else {}
        status = _status(check.passed)
        if check.passed and all(not s.provided for step in check.steps for s in step.stages):
            status = NOT_RUN
        return [CheckResult(self.name, cand, status, check.describe(), check, extra={"saved": saved} if saved else {})]

    @staticmethod
    def _save(ctx, cand: str, trained: dict) -> dict:
        """`--save-trained DIR`: the candidate's trained model, and the reference's once per run,
        each in its own format, as `<case>-<backend>-<dtype>.ckpt` (a case file's `checkpoint` reads it)."""
        folder = Path(ctx.request.save_trained)
        folder.mkdir(parents=True, exist_ok=True)
        done = {name for r in ctx.results for name in r.extra.get("saved", {})}
        return {name: str(ctx.call(name, "save of the trained model", model.save,
                                   folder / f"{ctx.inputs.case.name}-{file_stem(name)}-{ctx.dtype}.ckpt"))
                for name, model in trained.items()
                if name not in done and name in (ctx.ref, cand) and not get_backend(name).recorded}
