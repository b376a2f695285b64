"""What every check reads and the interface each implements (docs/design.md §10).

`RunContext` holds a run's inputs, each backend's model and traces and the tolerance profiles; the
harness calls a backend only through `RunContext.call`, which captures what the backend prints
and turns what it raises into a `BackendRaised` carrying the `Failure`. A `Check` has a name, the
backends it applies to, whether the run asked for it, and `run(ctx, name) -> [CheckResult]`.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from parity.backends import get_backend
from parity.config import ForwardConfig
from parity.run.results import FAILED, NOT_RUN, PASSED, CheckResult, Failure, failure_from
from parity.run.training import AdamConfig

REF = "tensorflow"  # the default reference


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
    golden_error: str = ""  # the case's golden cannot be read (file: key: problem): its golden check's error
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
    gradients: Optional[dict] = None  # backend -> (loss terms, gradients), once computed
    reused_gradients: dict = field(default_factory=dict)  # backend -> its cached run's gradients (computed once per process)
    summaries: dict = field(default_factory=dict)  # backend -> summaries of its training path, once
    comparisons: dict = field(default_factory=dict)  # candidate -> its forward TraceComparison
    local: dict = field(default_factory=dict)  # candidate -> {origin stage: its output fed the reference's inputs}
    repro_dir: Optional[Path] = None  # where the origins check writes a minimal reproduction of each origin

    @property
    def backends(self) -> list[str]:
        return [self.ref, *self.candidates]

    def call(self, backend: str, during: str, fn: Callable, *args, **kwargs):
        """Call into a backend's code: its stdout captured, what it raises a BackendRaised."""
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink):
                return fn(*args, **kwargs)
        except (Exception, SystemExit) as exc:  # a port's sys.exit() is its failure, not the run's end
            raise BackendRaised(failure_from(exc, f"{backend} {during}")) from None
        finally:
            if sink.getvalue():
                self.output[backend] = self.output.get(backend, "") + sink.getvalue()

    def prepare(self, reuse: Callable[[str], Optional[Any]] = lambda name: None, infer: bool = True) -> None:
        """Build every backend's model and run its training path, and its inference path where
        `infer` (a check of the run reads it); a backend that raises is recorded in `failed` (its
        checks then read error or not run), never raised. `reuse(name)`: (model, train trace, a
        callable giving the infer trace, one giving the loss terms and gradients) from a cache, or
        None to build."""
        for name in self.backends:
            try:
                cached = reuse(name)
                if cached is not None:
                    self.models[name], self.train[name], cached_infer, self.reused_gradients[name] = cached
                    if infer:
                        self.infer[name] = cached_infer()
                    continue
                model = self.call(name, "build", get_backend(name).build, self.cfg, self.weights,
                                  device=self.devices[name])
                self.models[name] = model
                self.train[name] = self.call(name, "forward_train", model.forward_train, self.batch)
                if infer:
                    self.infer[name] = self.call(name, "forward_infer", model.forward_infer, self.batch)
            except BackendRaised as exc:
                self.failed[name] = exc.failure

    def train_summary(self, name: str) -> dict:
        """The summaries of `name`'s training path, computed once per run (the golden check and
        the engine's result both read them)."""
        if name not in self.summaries:
            self.summaries[name] = summarise_trace(self.train[name], self.cfg)
        return self.summaries[name]

    def gradient_results(self) -> dict:
        """backend -> (loss terms, gradients), once per run, for every model that computes them."""
        if self.gradients is None:
            self.gradients = {name: self.call(name, "loss_and_gradients",
                                              self.reused_gradients.get(name, lambda m=model: m.loss_and_gradients(self.batch)))
                              for name, model in self.models.items() if get_backend(name).can("gradients")}
        return self.gradients


def summarise_trace(trace, cfg) -> dict:
    """The summaries of a trace; a port's arrays that cannot be summarised (a canvas of another
    shape) say why instead of ending the run."""
    from parity.goldens.summaries import summarise

    try:
        return summarise(trace, cfg)
    except Exception as exc:  # noqa: BLE001 - the report shows it; the checks have judged the stages
        return {"error": f"cannot summarise: {exc.__class__.__name__}: {exc}"}


def _status(passed: bool) -> str:
    return PASSED if passed else FAILED


class Check:
    """One kind of check. `backends(ctx)`: whom it applies to; `run(ctx, name)`: the result."""

    name = ""
    needs_infer = False  # reads each backend's inference path (ctx.infer), which then runs
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
