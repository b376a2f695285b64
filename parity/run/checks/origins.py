"""Origins: where an error is born, not only where it is first seen (docs/design.md §12).

For each stage of a candidate that diverges, the stage is computed again by the candidate from the
*reference's* inputs to it (teacher forcing, `model.stage(name, inputs, batch)`): its local error.
A stage whose local error is over its tolerance is an **origin**; one over end to end but within
locally is **propagated** (it only carries or amplifies an error born upstream). Every origin is
arbitrated by numpy from the reference's inputs, so the blame does not depend on a polluted
upstream. The columns land on the forward check's stage comparisons (`local_error`,
`amplification`, `mark`), which the report and stats.json show.

Local errors are computed where the forward check found a divergence: a run that agrees end to
end has no origin to look for, and the gate stays within its time budget.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from parity.backends import get_backend
from parity.run.checks.base import Check, _status
from parity.run.compare import compare_stage, relative_error
from parity.run.record import BackendRaised
from parity.run.results import CannotForce, CheckResult
from parity.stages import STAGE_INPUTS

ORIGIN, PROPAGATED, OK = "origin", "propagated", "ok"


UNFORCED = "not forced"


def _stage_or_reason(model, name: str, inputs: dict, batch):
    """The model's stage from the given inputs, or the CannotForce that says why it has none."""
    try:
        return np.asarray(model.stage(name, inputs, batch))
    except CannotForce as exc:
        return exc


def _at_once(ctx, cand: str, model, wanted: dict) -> dict:
    """Every stage of `wanted` ({stage: the reference's inputs to it}) from one call, where the
    model computes several at once (`stages`: an adapter, for which each stage is a forward call of
    the user's model); {} where it does not, or where that call raised: each stage is then called
    on its own, so what raises is told of the stage that raised it."""
    if len(wanted) < 2 or not callable(getattr(model, "stages", None)):
        return {}
    try:
        return ctx.call(cand, f"{len(wanted)} stages from {ctx.ref}'s inputs, in one forward call", model.stages,
                        wanted, ctx.batch)
    except BackendRaised:
        return {}


class OriginsCheck(Check):
    """Stage-local errors of a diverging candidate, the origin/propagated marks and every origin,
    arbitrated by numpy from the reference's inputs."""

    name = "origins"
    after = ("forward",)  # reads the forward comparison of each candidate

    def wanted(self, ctx) -> bool:
        """Only where a candidate diverged (the forward check runs before this is asked)."""
        return any(r.detail is not None and not r.detail.passed for r in ctx.results if r.check == "forward")

    def run(self, ctx, cand):
        forward = ctx.result("forward", cand)
        comparison = None if forward is None else forward.detail
        if comparison is None:
            return [self.not_run(cand, "no forward comparison")]
        if comparison.passed:
            return [CheckResult(self.name, cand, _status(True), "every stage agrees end to end: no origin")]
        model = ctx[cand].model
        if not get_backend(cand).can("teacher_forcing"):  # a torch adapter may still decline one stage: CannotForce
            return [self.not_run(cand, f"{cand} cannot compute a stage from the reference's inputs (its model has "
                                       f"no stage(name, inputs, batch): a Keras adapter reads its layers through "
                                       f"one sub-model and cannot put the reference's values in)")]
        ref = ctx[ctx.ref].train
        # per stage that can have a local error: why the reference's inputs do not fit it, or ""
        unfit = {s.stage: _unfit_inputs(STAGE_INPUTS[s.stage], ref, ctx[cand].train, ctx.ref, cand)
                 for s in comparison.stages
                 if STAGE_INPUTS.get(s.stage) is not None and s.provided and s.stage in ref}
        given = {stage: {k: ref[k] for k in STAGE_INPUTS[stage]} for stage, why in unfit.items() if not why}
        at_once = _at_once(ctx, cand, model, {stage: inputs for stage, inputs in given.items() if inputs})
        origins, forced = [], {}  # forced: stage -> the candidate's output fed the reference's inputs
        for s in comparison.stages:
            if s.stage not in unfit:
                continue
            inputs, why = STAGE_INPUTS[s.stage], unfit[s.stage]
            if why:  # nothing of the reference's fits to feed: no local error, and why
                s.mark, s.local_note = UNFORCED, why
                continue
            if inputs:
                value = at_once[s.stage] if s.stage in at_once else ctx.call(
                    cand, f"stage {s.stage} from {ctx.ref}'s inputs", _stage_or_reason, model, s.stage,
                    given[s.stage], ctx.batch)
                if isinstance(value, CannotForce):
                    s.mark, s.local_note = UNFORCED, str(value)
                    continue
                forced[s.stage] = value
                local = compare_stage(s.stage, ref[s.stage], forced[s.stage], s.tolerance, ctx.ref, cand,
                                      statistic=s.statistic)
                s.local_error, local_passed = local.rel_error, local.passed
                if local.rel_error is None:  # no error to measure: the shapes differ
                    s.local_note = local.message
            else:  # read from the batch only: local is end to end
                s.local_error, local_passed = s.rel_error, s.passed
            upstream = [c.rel_error for c in comparison.stages if c.stage in inputs and c.rel_error is not None]
            if upstream and s.rel_error is not None and max(upstream) > 0:
                s.amplification = s.rel_error / max(upstream)
            s.mark = ORIGIN if not local_passed else PROPAGATED if not s.passed else OK
            if s.mark == ORIGIN:
                origins.append(_arbitrate(ctx, cand, s, forced.get(s.stage)))
        first = comparison.first_divergence
        if not origins and first is not None and first.mark == PROPAGATED:
            # born under its tolerance and amplified over it downstream: the origin is the stage
            # before the first divergence that used the most of its budget when fed the
            # reference's inputs
            before = comparison.stages[:comparison.stages.index(first)]
            born = max((s for s in before if s.local_error and s.tolerance), default=None,
                       key=lambda s: s.local_error / s.tolerance)
            if born is not None:
                born.mark = ORIGIN
                origins.append(dict(_arbitrate(ctx, cand, born, forced.get(born.stage), amplified=True),
                                    amplified_to=first.stage))
        ctx[cand].forced = {o["stage"]: forced[o["stage"]] for o in origins if o["stage"] in forced}
        if ctx.request.repro_dir is not None:
            for origin in origins:
                if get_backend(ctx.ref).can("teacher_forcing"):  # the script computes the stage on both sides
                    origin["repro"] = str(self._repro(ctx, comparison, cand, origin))
                else:
                    origin["repro_why"] = (f"no minimal reproduction: {ctx.ref} cannot compute {origin['stage']} "
                                           f"from given inputs")
        # a diverging stage that could not be forced may be an origin too: say which, and why
        unknown = [s for s in comparison.stages if s.mark == UNFORCED and not s.passed]
        if not origins and not unknown:
            summary = "no origin: every stage is within its tolerance when fed the reference's inputs"
        elif not origins:
            summary = "no origin found"
        else:
            summary = f"{len(origins)} origin{'s' if len(origins) > 1 else ''}: " + ", ".join(
                f"{o['stage']} ({o['short']}" + (f"; born under its tolerance at {o['local_error']:.1e}, "
                                                 f"amplified over it by {o['amplified_to']}" if "amplified_to" in o
                                                 else "") + ")" for o in origins)
        if unknown:
            summary += "; not forced, so possibly origins too: " + "; ".join(
                f"{s.stage} ({s.local_note})" for s in unknown)
        # the stage table with its new columns is the forward check's comparison
        return [CheckResult(self.name, cand, _status(not origins and not unknown), summary, origins,
                            extra={"origins": origins})]

    @staticmethod
    def _repro(ctx, comparison, cand: str, origin: dict):
        """A minimal reproduction of one origin (parity.report.repro); the script's path."""
        from parity.report.repro import write_repro

        stage = next(s for s in comparison.stages if s.stage == origin["stage"])
        case = ctx.inputs.case.name
        folder = Path(ctx.request.repro_dir) / f"{case}-{ctx.dtype}-{cand}-{stage.stage}"
        return ctx.call(cand, f"minimal reproduction of {stage.stage}", write_repro, folder, case=ctx.inputs.case,
                        dtype=ctx.dtype, stage=stage.stage, ref=ctx.ref, cand=cand, ref_model=ctx[ctx.ref].model,
                        cand_model=ctx[cand].model, ref_trace=ctx[ctx.ref].train, batch=ctx.batch,
                        tolerance=stage.tolerance, worst_at=stage.worst_at, statistic=stage.statistic)


def _unfit_inputs(inputs, ref: dict, own: dict, ref_name: str, cand: str) -> str:
    """Why the reference's values of a stage's inputs cannot be fed to the candidate (one it does
    not give, one of another shape than the candidate's own), or ""."""
    absent = [k for k in inputs if k not in ref]
    if absent:
        return f"its input {', '.join(absent)} is not provided by {ref_name}"
    for k in inputs:
        theirs, mine = np.shape(ref[k]), np.shape(own[k]) if k in own else None
        if mine is not None and theirs != mine:
            return f"its input {k} has shape {theirs} in {ref_name}, {mine} in {cand}"
    return ""


def _arbitrate(ctx, cand: str, stage, forced: Optional[np.ndarray], amplified: bool = False) -> dict:
    """numpy's opinion on an origin stage, computed from the reference's inputs: which side it
    agrees with (`amplified`: an error born under the tolerance, judged against the local error
    itself instead of the tolerance)."""
    from parity.run.oracle import INPUT_STAGES, numpy_oracle, recompute

    ref_name, ref = ctx.ref, ctx[ctx.ref].train
    out = {"stage": stage.stage, "local_error": stage.local_error, "blame": cand, "short": cand,
           "numpy": None}
    if stage.stage in INPUT_STAGES or forced is None:  # an input stage: both sides read the same batch
        return out
    want = recompute(stage.stage, ref, ctx.cfg, ctx.batch, numpy_oracle(ctx.cfg, ctx.batch, ctx.inputs.weights))
    forced, theirs = np.asarray(forced), np.asarray(ref[stage.stage])
    if theirs.shape != want.shape:  # the reference's own layout there: numpy cannot side with anyone
        out["short"] = (f"{cand}; numpy gives no opinion ({ref_name}'s {stage.stage} has shape {theirs.shape}, "
                        f"numpy's {want.shape})")
        return out
    errors = {ref_name: relative_error(want, theirs),
              cand: relative_error(want, forced) if forced.shape == want.shape else float("inf")}
    # an error born under the tolerance: numpy sides with whoever it is closer to than the error
    bar = stage.local_error / 10 if amplified and stage.local_error else stage.tolerance
    ok = {name: err <= bar for name, err in errors.items()}
    if ok[ref_name] and not ok[cand]:
        blame, words = cand, f"numpy agrees with {ref_name}"
    elif ok[cand] and not ok[ref_name]:
        blame, words = ref_name, f"numpy agrees with {cand}"
    elif not ok[cand]:
        blame, words = "both", "numpy agrees with neither"
    else:
        blame, words = None, "numpy agrees with both within the tolerance"
    out.update(blame=blame, numpy=errors, short=f"{blame or 'neither'}; {words}")
    return out
