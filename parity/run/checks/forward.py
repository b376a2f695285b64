"""Forward agreement (every stage against the reference, numpy arbitrating the first divergence)
and the train ↔ infer paths of each backend."""

from __future__ import annotations

import numpy as np

from parity.backends import get_backend
from parity.run.checks.base import Check, _status
from parity.run.compare import compare_traces
from parity.run.oracle import arbitrate
from parity.run.results import CheckResult
from parity.stages import OBJECT_STAGES


class ForwardAgreement(Check):
    """Every stage of the candidate's training path against the reference's; the numpy backend
    arbitrates the first divergence."""

    name = "forward"

    def run(self, ctx, cand):
        ref, port = ctx[ctx.ref].train, ctx[cand].train
        comparison = compare_traces(ref, port, ctx[cand].profile, ctx.ref, cand,
                                    not_provided=get_backend(cand).not_provided(ctx.cfg),
                                    ref_not_provided=get_backend(ctx.ref).not_provided(ctx.cfg))
        first = comparison.first_divergence
        arbitration = (arbitrate(first.stage, ref, port, ctx.cfg, ctx.batch, first.tolerance, ctx.ref, cand,
                                 weights=ctx.inputs.weights) if first is not None else None)
        worst = comparison.worst
        if first is None:
            summary = (f"every stage agrees (worst {worst.stage}: {worst.rel_error:.2e}{worst.in_noise()})"
                       if worst is not None and worst.rel_error is not None else "every provided stage agrees")
        else:
            summary = f"first divergence at {first.stage}: " + (arbitration or {}).get("verdict", first.message)
            if first.rel_error is None or first.overlap or "mismatch" in first.message:  # what differs, not only who
                summary += f" ({first.message})"
            elif arbitration and first.in_noise():  # how far over the honest ports' rounding
                summary += f"; relative error {first.rel_error:.2e}{first.in_noise()}"
        return [CheckResult(self.name, cand, _status(comparison.passed), summary, comparison,
                            extra={"arbitration": arbitration})]


class PathConsistency(Check):
    """forward_infer against forward_train of the same model: the object stages must be identical."""

    name = "paths"
    needs_infer = True

    def backends(self, ctx):
        return ctx.backends

    def run(self, ctx, name):
        train, infer = ctx[name].train, ctx[name].infer
        on_path = set(get_backend(name).infer_stages_for(ctx.cfg))
        # compared: what both paths give, and what the backend declares on its inference path
        # (absent there, it differs); listed with the reason: what it declares off that path
        compared = [s for s in OBJECT_STAGES if (s in train and s in infer) or (s in on_path and s in train)
                    or (s in infer and s not in train)]
        off = [s for s in OBJECT_STAGES if s in train and s not in infer and s not in on_path]
        same = {s: bool(np.array_equal(infer.get(s), train.get(s), equal_nan=True)) for s in compared}
        bad = [s for s, ok in same.items() if not ok]
        if not same:
            why = f"{name} provides no object stage" if not off else f"no object stage is on {name}'s inference path"
            return [self.not_run(name, why)]
        summary = "forward_infer equals forward_train" if not bad else f"forward_infer differs at {', '.join(bad)}"
        absent = [s for s in bad if s not in infer or s not in train]
        if absent:
            summary += f" ({', '.join(absent)}: on one path only)"
        if off:
            summary += f"; not compared: {', '.join(off)} (not on {name}'s inference path)"
        return [CheckResult(self.name, name, _status(not bad), summary, same)]
