"""One pipeline of checks, the same for every backend (docs/design.md §10).

The run record (`parity.run.record.RunContext`) holds what every check reads (the case's inputs,
each backend's model, traces and tolerance profile). A check is a small class with a name, the
backends it applies to and `run(ctx, backend) -> [CheckResult]`; `run_pipeline` runs each check for
each of its backends, in `PIPELINE` order, and adds the results to the record. Whatever a
backend raises while the harness calls it becomes an `error` result naming the file:line in the
backend's code; a check a backend lacks the capability for is `not run`, with the reason. What a
backend prints during a run is captured into its `BackendState.output`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

from parity.run.checks import (Check, CheckpointRoundTrip, ConfigAgreement, CrossCheckpoint, ForwardAgreement, GoldenCheck,
                           GradientAgreement, OriginsCheck, PathConsistency, RunContext, TrainingAgreement)
from parity.backends import get_backend
from parity.run.record import BackendRaised
from parity.run.results import ERROR, WIRING, CheckResult

__all__ = ["PIPELINE", "Check", "RunContext", "run_pipeline"]


def ordered(checks: Sequence[Check]) -> tuple[Check, ...]:
    """The checks in an order that runs each after the checks it reads (`Check.after`); otherwise
    as listed (fail fast: the forward comparison first)."""
    pending, done, out = list(checks), set(), []
    names = {c.name for c in checks}
    while pending:
        ready = next((c for c in pending if all(a in done or a not in names for a in c.after)), None)
        if ready is None:
            raise ValueError(f"checks wait on each other: {[c.name for c in pending]}")
        pending.remove(ready)
        done.add(ready.name)
        out.append(ready)
    return tuple(out)


# the config check first: a drifted setting is the root cause of every divergence after it
PIPELINE: tuple[Check, ...] = ordered((ConfigAgreement(), ForwardAgreement(), OriginsCheck(), PathConsistency(),
                                       CheckpointRoundTrip(), CrossCheckpoint(), GradientAgreement(),
                                       TrainingAgreement(), GoldenCheck()))


def run_pipeline(ctx: RunContext, checks: Sequence[Check] = PIPELINE) -> list[CheckResult]:
    """Every check for each of its backends, in order, each result added to `ctx.results` as it
    comes (a later check reads an earlier one's); returns them. A backend whose build or forward
    raised gets an error result at the forward check and `not run` for the rest."""
    with tempfile.TemporaryDirectory(prefix="parity-ckpt-") as workdir:
        ctx.workdir = Path(workdir)
        for check in (c for c in checks if c.wanted(ctx)):
            for name in check.backends(ctx):
                ctx.results += _run_one(check, ctx, name)
        ctx.workdir = None
    return ctx.results


def _run_one(check: Check, ctx: RunContext, name: str) -> list[CheckResult]:
    broken = [b for b in dict.fromkeys([name, ctx.ref]) if ctx[b].failure is not None]
    if broken:  # the error once, at the forward check, under the side whose code raised; the checks
        failure = ctx[broken[0]].failure  # that needed the model say why not
        first = not any(r.failure is failure for r in ctx.results)
        if check.name == "forward" and first:
            return [CheckResult(check.name, broken[0], ERROR, failure.line(), failure=failure)]
        how = "is mis-wired (found in" if failure.kind == WIRING else "raised (in"
        return [check.not_run(name, f"{broken[0]} {how} {failure.during.removeprefix(broken[0] + ' ')}; "
                                    f"see the forward check)")]
    lacking = next((cap for cap in check.requires if not get_backend(name).can(cap)), None)
    if lacking:  # declared, never probed: every "not run" of a missing capability comes from here
        return [check.not_run(name, check.lacking(name, lacking))]
    try:
        return check.run(ctx, name)
    except BackendRaised as exc:
        return [CheckResult(check.name, name, ERROR, exc.failure.line(), failure=exc.failure)]
