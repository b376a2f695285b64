"""The interface each check implements (docs/design.md §10).

A `Check` has a name, the backends it applies to, whether the run asked for it, the capabilities
it `requires` and the checks it comes `after`, and `run(ctx, name) -> [CheckResult]`: it reads
the run record (`parity.run.record.RunContext`) and returns its results, which the pipeline adds
to the record.
"""

from __future__ import annotations

from typing import Sequence

from parity.backends import get_backend
from parity.run.record import RunContext
from parity.run.results import FAILED, NOT_RUN, PASSED, CheckResult


def _status(passed: bool) -> str:
    return PASSED if passed else FAILED


class Check:
    """One kind of check. `backends(ctx)`: whom it applies to; `run(ctx, name)`: the result."""

    name = ""
    needs_infer = False  # reads each backend's inference path, which then runs (BackendState.infer)
    requires: tuple[str, ...] = ()  # capabilities (parity.backends.CAPABILITIES) a backend must declare
    after: tuple[str, ...] = ()  # checks whose results this one reads: the pipeline runs them first

    def lacking(self, name: str, capability: str) -> str:
        """Why `name` is not checked: it does not declare `capability`."""
        return f"{name} has no {capability.replace('_', ' ')}"

    def backends(self, ctx: RunContext) -> list[str]:
        return list(ctx.candidates)

    def wanted(self, ctx: RunContext) -> bool:
        """Whether the run asked for this check (gradients and training are asked for)."""
        return True

    def run(self, ctx: RunContext, name: str) -> list[CheckResult]:
        raise NotImplementedError

    def not_run(self, name: str, why: str, label: str = "") -> CheckResult:
        return CheckResult(self.name, name, NOT_RUN, f"not run: {why}", label=label)


def _provided(ctx, name: str, stages: Sequence[str]) -> list[str]:
    missing = set(get_backend(name).not_provided(ctx.cfg))
    return [s for s in stages if s not in missing]
