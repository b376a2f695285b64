"""The run record (docs/design.md §10): what a run was asked for, its inputs, each backend's part,
the case's golden and the checks' results — one value that the checks read and add their results
to, and that `parity.run.engine` turns into the finished `CaseResult` every consumer reads.

- `RunRequest`: what was asked (devices, dtype, reference and candidates, which checks; frozen).
- `RunInputs`: the case's config, weights and batch, built once per run, and their digests.
- `BackendState`: one backend's part — its device and tolerance profile, its model, traces,
  reloaded model, gradients, what it printed, the failure of its build or forward.
- `GoldenInputs`: the case's golden, or why there is none, or why it cannot be read.
- `RunContext`: all of them, plus `results`, the checks' results in pipeline order.

The harness calls a backend only through `RunContext.call`, which captures what the backend prints
and turns what it raises into a `BackendRaised` carrying the `Failure`.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np

from parity.backends import get_backend
from parity.config import ForwardConfig
from parity.run.results import CheckResult, Failure, failure_from
from parity.run.tolerances import TOLERANCE_PATH
from parity.run.training import AdamConfig

REF, OTHER = "tensorflow", "torch"  # the default reference and candidate


@dataclass(frozen=True)
class RunRequest:
    """What a run is asked for. The candidates compute on `device`, the reference on
    `ref_device` (default: the CPU); `data` replaces the shipped fixture; `reuse`: backends whose
    model and traces may come from this process's cache (`parity.run.cache`), only for backends
    nothing patches; `checks`: the checks to run (None: the whole pipeline); `repro_dir`: where
    the origins check writes a minimal reproduction of each origin; `save_trained`: where the
    training check saves each backend's model after its Adam steps."""

    device: str = "cpu"
    dtype: str = "float32"
    ref_device: Optional[str] = None
    data: Optional[str | Path] = None
    tolerance_path: str | Path = TOLERANCE_PATH
    goldens_dir: Optional[str | Path] = None
    use_golden: bool = True
    checkpoints: bool = True
    ref: str = REF
    candidates: tuple = (OTHER,)
    grad: bool = False
    train_steps: int = 0
    adam: AdamConfig = AdamConfig()
    reuse: tuple = ()
    checks: Optional[tuple] = None
    repro_dir: Optional[str | Path] = None
    save_trained: Optional[str | Path] = None  # where the training check saves each backend's trained model


@dataclass(frozen=True)
class RunInputs:
    """The case and what every backend of the run computes from: built once per run."""

    case: Any
    cfg: ForwardConfig
    weights: Mapping[str, np.ndarray]
    batch: Any
    digests: Mapping
    state: Mapping = field(default_factory=dict)  # a trained checkpoint's log_scale and probe, every build's


@dataclass(frozen=True)
class GoldenInputs:
    """The case's golden and its file; else `why` there is no golden comparison, or `error`: the
    golden cannot be read (file: key: problem), that case's golden check's error."""

    golden: Optional[dict] = None
    file: Optional[str] = None
    why: str = ""
    error: str = ""
    profiles: Mapping[str, Any] = field(default_factory=dict)  # backend -> golden tolerance profile


@dataclass
class BackendState:
    """One backend's part of a run: where it computed, by which tolerances it is judged, and what
    it computed (filled in by `RunContext.prepare` and the checks)."""

    name: str
    device: str
    profile: Any  # the tolerance profile of its device and the run's dtype
    model: Any = None
    train: Optional[dict] = None  # stage -> array of its training path
    infer: Optional[dict] = None  # of its inference path, where a check reads it
    loaded: Any = None  # the model its own checkpoint loaded into
    load_failure: Optional[Failure] = None  # its save or load raised (RunContext.reload)
    reloaded: Optional[dict] = None  # the loaded model's inference path
    failure: Optional[Failure] = None  # its build or forward raised
    output: str = ""  # what it printed
    gradients: Optional[tuple] = None  # (loss terms, gradients), once computed
    cached_gradients: Optional[Callable] = None  # the cached run's (computed once per process)
    summary: Optional[dict] = None  # summaries of its training path, once computed
    forced: dict = field(default_factory=dict)  # origin stage -> its output fed the reference's inputs


class BackendRaised(Exception):
    """Carries the Failure of a backend call out of a check."""

    def __init__(self, failure: Failure):
        super().__init__(failure.line())
        self.failure = failure


@dataclass
class RunContext:
    """The run record while the checks run: they read it and add their results."""

    request: RunRequest
    inputs: RunInputs
    sides: dict  # backend -> BackendState, the reference first
    golden: GoldenInputs = GoldenInputs()
    results: list = field(default_factory=list)  # CheckResult, in pipeline order
    workdir: Optional[Path] = None  # a scratch folder for checkpoints, while the pipeline runs

    def __getitem__(self, name: str) -> BackendState:
        return self.sides[name]

    @property
    def ref(self) -> str:
        return self.request.ref

    @property
    def candidates(self) -> list[str]:
        return [name for name in self.sides if name != self.ref]

    @property
    def backends(self) -> list[str]:
        return list(self.sides)

    @property
    def cfg(self) -> ForwardConfig:
        return self.inputs.cfg

    @property
    def batch(self):
        return self.inputs.batch

    @property
    def dtype(self) -> str:
        return self.request.dtype

    def result(self, check: str, name: str) -> Optional[CheckResult]:
        """The result `check` gave for `name`, where it ran (a later check reading an earlier one)."""
        return next((r for r in self.results if r.check == check and r.backend == name), None)

    def call(self, backend: str, during: str, fn: Callable, *args, **kwargs):
        """Call into a backend's code: what it prints (stdout, stderr) and the warnings it emits
        captured into its `output` (the report shows them; they never interleave with the
        progress), what it raises a BackendRaised."""
        sink, caught = io.StringIO(), []
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), _native_stderr(sink), \
                    warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                return fn(*args, **kwargs)
        except (Exception, SystemExit) as exc:  # a port's sys.exit() is its failure, not the run's end
            raise BackendRaised(failure_from(exc, f"{backend} {during}")) from None
        finally:
            shown = dict.fromkeys(warnings.formatwarning(w.message, w.category, w.filename, w.lineno)
                                  for w in caught)  # once each, as Python's default filter shows them
            self.sides[backend].output += sink.getvalue() + "".join(shown)

    def prepare(self, reuse: Callable[[str], Optional[Any]] = lambda name: None, infer: bool = True) -> None:
        """Build every backend's model and run its training path, and its inference path where
        `infer` (a check of the run reads it); a backend that raises gets its `failure` (its
        checks then read error or not run), never raised. `reuse(name)`: (model, train trace, a
        callable giving the infer trace, one giving the loss terms and gradients) from a cache, or
        None to build."""
        for name, side in self.sides.items():
            try:
                cached = reuse(name)
                if cached is not None:
                    side.model, side.train, cached_infer, side.cached_gradients = cached
                    if infer:
                        side.infer = cached_infer()
                    continue
                side.model = self.call(name, "build", get_backend(name).build, self.cfg, self.inputs.weights,
                                       device=side.device, **self.inputs.state)
                side.train = self.call(name, "forward_train", side.model.forward_train, self.batch)
                if infer:
                    side.infer = self.call(name, "forward_infer", side.model.forward_infer, self.batch)
            except BackendRaised as exc:
                side.failure = exc.failure

    def reload(self, name: str):
        """`name`'s model saved and loaded back into a fresh one, once per run (the config and
        checkpoint checks read it); a save or load that raised raises the same failure again."""
        side = self.sides[name]
        if side.load_failure is not None:
            raise BackendRaised(side.load_failure)
        if side.loaded is None:
            try:
                path = self.call(name, "save", side.model.save, Path(self.workdir) / f"{file_stem(name)}.ckpt")
                side.loaded = self.call(name, "load", get_backend(name).load, path, cfg=self.cfg, device=side.device)
            except BackendRaised as exc:
                side.load_failure = exc.failure
                raise
        return side.loaded

    def train_summary(self, name: str) -> dict:
        """The summaries of `name`'s training path, computed once per run."""
        side = self.sides[name]
        if side.summary is None:
            side.summary = summarise_trace(side.train, self.cfg)
        return side.summary

    def gradient_results(self) -> dict:
        """backend -> (loss terms, gradients), once per run, for every model that computes them."""
        for name, side in self.sides.items():
            if side.gradients is None and side.model is not None and get_backend(name).can("gradients"):
                side.gradients = self.call(name, "loss_and_gradients", side.cached_gradients
                                           or (lambda m=side.model: m.loss_and_gradients(self.batch)))
        return {name: side.gradients for name, side in self.sides.items() if side.gradients is not None}


def file_stem(name: str) -> str:
    """A backend's name as a file name (`recorded:/data/rec` holds a path)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "backend"


@contextlib.contextmanager
def _native_stderr(sink: io.StringIO):
    """What native code (TensorFlow's C++ log) writes to file descriptor 2 meanwhile, into `sink`
    (Python's own stderr is redirected apart): it never lands between the progress lines."""
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 to borrow
        yield
        return
    with tempfile.TemporaryFile() as spill:
        os.dup2(spill.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            spill.seek(0)
            sink.write(spill.read().decode(errors="replace"))


def summarise_trace(trace, cfg) -> dict:
    """The summaries of a trace; a port's arrays that cannot be summarised (a canvas of another
    shape) say why instead of ending the run."""
    from parity.goldens.summaries import summarise

    try:
        return summarise(trace, cfg)
    except Exception as exc:  # noqa: BLE001 - the report shows it; the checks have judged the stages
        return {"error": f"cannot summarise: {exc.__class__.__name__}: {exc}"}
