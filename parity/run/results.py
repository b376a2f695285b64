"""What a parity run found: one `CheckResult` per check and backend, and the `CaseResult` that
holds them (docs/design.md §10). Console, report, summary.json, the pytest fixtures and the exit
code all read these results, so they cannot tell different stories.

A check ends in one of four states: passed; failed (a divergence); not run (with the reason, e.g.
"my-port has no save/load"); error (a backend raised, or an adapter is mis-wired: the exception
and the file:line it came from). Exit codes: 0 every check passed or was not run, 1 a divergence,
2 bad input or adapter wiring, 3 a backend raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from parity.config import ForwardConfig
from parity.run.failures import (INPUT, RAISED, WIRING, CannotForce, Failure, WiringError,  # noqa: F401 - the
                                 failure_from, input_failure)  # names results' readers import from here

PASSED, FAILED, NOT_RUN, ERROR = "passed", "failed", "not run", "error"
EXIT_PASSED, EXIT_DIVERGED, EXIT_BAD_INPUT, EXIT_RAISED = 0, 1, 2, 3
EXIT_CODES_HELP = ("exit codes: 0 every check passed (or was not run, with its reason), 1 a divergence, "
                   "2 bad input or adapter wiring (a tap that never fired), 3 a backend raised")


@dataclass
class CheckResult:
    """One check of one backend. `detail` is the check's own record (a TraceComparison, a
    CheckpointCheck, a GoldenResult, a GradientCheck, a TrainingCheck) where it ran."""

    check: str  # config | forward | paths | checkpoint | cross-checkpoint | golden | gradients | training
    backend: str  # the candidate, or the backend whose own check it is (paths, checkpoint, golden)
    status: str
    summary: str  # one line, for the console
    detail: Any = field(default=None, repr=False)
    failure: Optional[Failure] = None
    label: str = ""  # what it checked, when the check name alone is not enough ("torch → tensorflow")
    extra: dict = field(default_factory=dict)  # e.g. the numpy arbitration of a divergence

    @property
    def ok(self) -> bool:
        return self.status in (PASSED, NOT_RUN)

    @property
    def title(self) -> str:
        return f"{self.check} {self.label or self.backend}"

    def to_dict(self) -> dict:
        detail = self.detail.to_dict() if hasattr(self.detail, "to_dict") else None
        return {"check": self.check, "backend": self.backend, "label": self.label or self.backend,
                "status": self.status, "summary": self.summary, "detail": detail,
                "failure": self.failure.to_dict() if self.failure else None, **self.extra}


def exit_code(results) -> int:
    """The run's exit code from its check results: bad input or wiring 2, a raise 3, a divergence
    1, else 0."""
    failures = [r.failure for r in results if r.status == ERROR and r.failure]
    if any(f.kind in (WIRING, INPUT) for f in failures):
        return EXIT_BAD_INPUT
    if failures:
        return EXIT_RAISED
    return EXIT_DIVERGED if any(r.status == FAILED for r in results) else EXIT_PASSED


VERDICTS = (("config", "CONFIG DIFFERS"), ("forward", "DIVERGED"), ("paths", "PATHS DIFFER"), ("checkpoint", "CHECKPOINT DIFFERS"),
            ("cross-checkpoint", "CHECKPOINT DIFFERS"), ("gradients", "GRADIENTS DIFFER"),
            ("training", "TRAINING DIFFERS"), ("golden", "GOLDEN DIFFERS"))


@dataclass
class CaseResult:
    """One case × dtype: every check's result for every backend, plus what the report draws from
    (summaries, traces). The per-kind views (`comparisons`, `checkpoints`, ...) read `results`."""

    case: str
    dtype: str
    device: str  # the candidates' device
    config: ForwardConfig
    ref: str
    candidates: list
    devices: dict  # backend -> the device it computed on
    results: list  # CheckResult, in pipeline order
    summaries: dict  # backend -> {"train", "infer", "reloaded"} summaries
    digests: dict
    provenance: dict
    seconds: float
    traces: dict = field(default_factory=dict, repr=False)  # backend -> train trace (not serialised)
    batch: Any = field(default=None, repr=False)
    golden_file: Optional[str] = None
    reloaded: dict = field(default_factory=dict, repr=False)  # backend -> reloaded infer trace
    local: dict = field(default_factory=dict, repr=False)  # candidate -> {origin stage: it fed the reference's inputs}
    output: dict = field(default_factory=dict)  # backend -> what it printed during the run

    def where(self) -> str:
        """Where each side ran, e.g. `tensorflow on cpu, torch on cuda`."""
        return ", ".join(f"{name} on {device}" for name, device in self.devices.items())

    def of(self, check: str) -> list[CheckResult]:
        return [r for r in self.results if r.check == check]

    def _details(self, check: str) -> dict:
        return {r.backend: r.detail for r in self.of(check) if r.detail is not None}

    @property
    def comparisons(self) -> dict:
        """candidate -> TraceComparison with the reference (where the forward check ran)."""
        return self._details("forward")

    @property
    def arbitrations(self) -> dict:
        return {r.backend: r.extra.get("arbitration") for r in self.of("forward") if r.detail is not None}

    @property
    def origins(self) -> dict:
        """candidate -> its origin stages in forward order (stage, local error, blame, numpy's
        errors from the reference's inputs), where the origins check ran on a divergence."""
        return {r.backend: r.extra.get("origins", []) for r in self.of("origins") if r.detail is not None}

    @property
    def path_checks(self) -> dict:
        return self._details("paths")

    @property
    def checkpoints(self) -> list:
        return [r.detail for r in self.results if r.check in ("checkpoint", "cross-checkpoint") and r.detail]

    @property
    def golden(self) -> dict:
        return self._details("golden")

    @property
    def gradients(self) -> dict:
        return self._details("gradients")

    @property
    def training(self) -> dict:
        return self._details("training")

    @property
    def errors(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == ERROR]

    @property
    def passed(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def exit_code(self) -> int:
        return exit_code(self.results)

    def verdict(self) -> str:
        if self.errors:
            kinds = {r.failure.kind for r in self.errors if r.failure}
            if INPUT in kinds:
                return "BAD INPUT"
            return "WIRING ERROR" if self.exit_code == EXIT_BAD_INPUT else "BACKEND RAISED"
        for check, verdict in VERDICTS:
            if any(r.status == FAILED for r in self.of(check)):
                return verdict
        return "PASS" if self.golden_file else "PASS (no golden)"

    def finding(self) -> Optional[CheckResult]:
        """The result the verdict rests on: the first error of the kind the exit code names (bad
        input or wiring before a raise), else the first failure in the order of VERDICTS (a
        drifted config first: the divergences after it are its consequence; the golden last); None when every check passed or was not run."""
        code = self.exit_code
        for r in self.errors:
            if r.failure is None or (r.failure.kind in (WIRING, INPUT)) == (code == EXIT_BAD_INPUT):
                return r
        for check, _ in VERDICTS:
            failed = [r for r in self.of(check) if r.status == FAILED]
            if failed:
                return failed[0]
        return None

    def headline(self) -> str:
        """The verdict and, where something is wrong, the finding it rests on — what a reader sees
        first (e.g. `CHECKPOINT DIFFERS: checkpoint torch → torch: the reloaded inference path
        parts from the in-memory training path at scaled_input`)."""
        finding = self.finding()
        return self.verdict() if finding is None else f"{self.verdict()}: {finding.title}: {finding.summary}"

    def check_lines(self, every: bool = True) -> list[str]:
        """One line per check with its state and why; `every=False`: the passed ones in one line."""
        lines, passed = [], []
        for r in self.results:
            if r.status == PASSED and not every:
                passed.append(r.title)
            else:
                lines.append(f"{r.status:8s} {r.title}: {r.summary}")
                lines += [f"{'':8s}   {more}" for more in (r.failure.more() if r.failure else [])]
        if passed:
            lines.append(f"passed   {', '.join(passed)}")
        for name, text in self.output.items():
            lines.append(f"{name} printed {len(text.splitlines())} line(s) during the run (stdout, stderr, warnings; "
                         f"in report.md)")
        return lines

    def report(self) -> str:
        """The verdict and every check's state: what a failing test should show."""
        return "\n".join([f"{self.case} {self.dtype} ({self.where()}): {self.headline()}", *self.check_lines()])

    def __str__(self) -> str:
        return self.report()

    def golden_messages(self) -> list[str]:
        return [g.message(self.golden_file) for g in self.golden.values() if not g.passed]

    def to_dict(self) -> dict:
        first_cand = self.candidates[0]
        comparison = self.comparisons.get(first_cand)
        worst = comparison.worst if comparison else None
        first = comparison.first_divergence if comparison else None
        return {
            "case": self.case, "dtype": self.dtype, "device": self.device, "devices": dict(self.devices),
            "verdict": self.verdict(), "headline": self.headline(), "passed": self.passed, "exit_code": self.exit_code,
            "config": self.config.to_dict(),
            "worst_stage": worst.stage if worst else None,
            "worst_rel_error": worst.rel_error if worst else None,
            "worst_budget_used": worst.budget_used if worst else None,
            "first_divergence": first.stage if first else None,
            "arbitration": self.arbitrations.get(first_cand),
            "checks": [r.to_dict() for r in self.results],
            "path_checks": self.path_checks, "summaries": self.summaries, "digests": self.digests,
            "checkpoints": [c.to_dict() for c in self.checkpoints],
            "ref": self.ref, "candidates": list(self.candidates),
            "per_candidate": {name: {"comparison": comp.to_dict(), "arbitration": self.arbitrations.get(name)}
                              for name, comp in self.comparisons.items()},
            "golden": {"file": self.golden_file,
                       "passed": all(g.passed for g in self.golden.values()) if self.golden_file else None,
                       "messages": self.golden_messages()},
            "gradients": {name: g.to_dict() for name, g in self.gradients.items()},
            "training": {name: t.to_dict() for name, t in self.training.items()},
            "output": self.output, "provenance": self.provenance, "seconds": self.seconds,
        }
