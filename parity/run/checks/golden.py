"""Each backend's summaries against the case's golden JSON."""

from __future__ import annotations

from pathlib import Path

from parity.backends import get_backend
from parity.run.checks.base import Check, _provided, _status
from parity.run.results import ERROR, CheckResult, input_failure


class GoldenCheck(Check):
    """Each backend's summaries against the case's golden, on the sections its stages allow."""

    name = "golden"
    after = ("gradients",)  # with --grad it compares the loss terms and gradient norms computed there

    def backends(self, ctx):
        return ctx.backends

    def run(self, ctx, name):
        from parity.goldens import store as goldens
        from parity.goldens.summaries import SECTION_STAGES

        if ctx.golden.error:  # one error, at the first backend; the others say why they were not compared
            if name != ctx.backends[0]:
                return [self.not_run(name, f"the golden cannot be read (see golden {ctx.backends[0]})")]
            return [CheckResult(self.name, name, ERROR, ctx.golden.error,
                                failure=input_failure(ctx.golden.error, "golden"))]
        if ctx.golden.golden is None:
            return [self.not_run(name, ctx.golden.why)]
        golden, path = ctx.golden.golden, ctx.golden.file
        provided = set(_provided(ctx, name, list(ctx[name].train)))
        sections = [s for s, stages in SECTION_STAGES.items() if all(st in provided for st in stages)]
        if not sections:
            return [self.not_run(name, f"{name} provides none of the stages a golden summarises")]
        summaries = {k: v for k, v in ctx.train_summary(name).items() if k in sections}
        skipped = [s for s in SECTION_STAGES if s not in sections]
        if ctx.request.grad and ctx[name].gradients is not None:
            from parity.run.training import gradient_summary

            summaries["gradients"] = gradient_summary(*ctx[name].gradients)
            if get_backend(name).can("partial_gradients"):  # an adapter's loss: the terms it gives
                golden, absent = _only_gradients_of(golden, summaries["gradients"])
                skipped += absent
        result = goldens.compare_golden(golden, summaries, ctx.inputs.digests, ctx.dtype, ctx.golden.profiles[name],
                                        run=f"{name} {ctx[name].device} {ctx.dtype}", sections=sections)
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
