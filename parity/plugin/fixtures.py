"""The parity plugin's fixtures (registered by `parity.plugin.pytest_plugin`, which imports them):
the port's device and the reference's name, the per-process run cache, `parity_run`,
`parity_gradients` and `parity_check` (a whole case through the pipeline `parity check` runs)."""

from __future__ import annotations

import pytest

from parity.plugin.devices import backend_device, parity_device, require_backend


def session_case(config, name: str):
    """The case named `name`: from a case file of the session (--parity-case-file, ini
    parity_case_file) or built in; an unknown name or a bad case file fails the test in one line."""
    from parity.errors import UsageError
    from parity.inputs.casefile import chosen_cases

    __tracebackhide__ = True
    files = [*config.getoption("parity_case_file"), *config.getini("parity_case_file")]
    try:
        return chosen_cases([name], None, files)[0]
    except UsageError as exc:
        pytest.fail(str(exc), pytrace=False)


def goldens_dir(config):
    """The session's golden folder: --parity-goldens, else the ini's parity_goldens (relative to
    the ini file), else None (the shipped goldens)."""
    given = config.getoption("parity_goldens") or next(iter(config.getini("parity_goldens")), None)
    return None if given is None else str(given)


class RunCache:
    """Each (case, backend, device, dtype, data) is run once per test process while its case's
    tests run (the tests are ordered by case); the runs live in `parity.run.cache`, shared with
    `run_case(reuse=...)`, which keeps the latest few."""

    def __init__(self, config):
        self.config, self.data = config, config.getoption("parity_data")

    def get(self, case: str, backend: str, dtype: str, device: str):
        from parity.run.cache import cached_run

        return cached_run(session_case(self.config, case), backend, device, dtype, data=self.data)


@pytest.fixture(scope="session")
def parity_device_name(pytestconfig) -> str:
    """The port's device (--parity-device, with auto resolved): it chooses the tolerance profile."""
    return parity_device(pytestconfig)


@pytest.fixture(scope="session")
def parity_ref(pytestconfig) -> str:
    """The reference backend's name (--parity-ref)."""
    return pytestconfig.getoption("parity_ref")


@pytest.fixture(scope="session")
def parity_run_cache(pytestconfig) -> RunCache:
    return RunCache(pytestconfig)


@pytest.fixture(scope="session")
def parity_run(pytestconfig, parity_run_cache):
    """`parity_run(case, backend, dtype, device=None)` → a cached BackendRun (train and infer
    traces, summaries, digests, provenance); the device defaults to --parity-device."""

    def run(case: str, backend: str, dtype: str = "float64", device: str | None = None):
        __tracebackhide__ = True
        require_backend(backend)
        return parity_run_cache.get(case, backend, dtype, device or backend_device(pytestconfig, backend))

    run.data = parity_run_cache.data  # the --parity-data scan, or None for the shipped fixture
    return run


@pytest.fixture(scope="session")
def parity_gradients(parity_run):
    """`parity_gradients(case, backend, dtype, device=None)` → (loss terms, gradients by tensor
    name, neutral layout) of the cached run's model; computed once per process and kept with the
    run (`BackendRun.gradients`, which the golden of a reference run reads too; device: the
    backend's own in this session, as for `parity_run`)."""

    def gradients(case: str, backend: str, dtype: str = "float64", device: str | None = None):
        return parity_run(case, backend, dtype, device).gradients

    return gradients


@pytest.fixture(scope="session")
def parity_check(pytestconfig):
    """`parity_check(case, candidate, dtype="float64", ref=None, grad=False, train_steps=0,
    goldens=True, checkpoints=True)` → a CaseResult: the candidate (any registered backend, your
    own adapter included) on --parity-device against the reference (default: --parity-ref) on
    --parity-ref-device, through every check its capabilities allow (forward agreement arbitrated
    by numpy, train/infer paths, checkpoint round trip and across backends, golden; gradients and
    Adam steps when asked). The dtype is float64 unless given: the precision at which a port's
    stages are judged most strictly. `.passed`, `.verdict()`, `.results` (every check: passed,
    failed, not run with why, or error with the file:line), `.comparisons[candidate]`; `.report()` (also `str(result)`)
    is the message to assert with: `assert result.passed, result.report()`."""
    def check(case: str, candidate: str, dtype: str = "float64", ref: str | None = None, grad: bool = False,
              train_steps: int = 0, goldens: bool = True, checkpoints: bool = True):
        __tracebackhide__ = True
        return _run_case(pytestconfig, case, candidate, dtype, ref, use_golden=goldens, checkpoints=checkpoints,
                         grad=grad, train_steps=train_steps)

    return check


def _run_case(config, case: str, candidate: str, dtype: str, ref: str | None, **options):
    """`run_case` of this session: the candidate on --parity-device, the reference (default:
    --parity-ref) on --parity-ref-device, on --parity-data or the shipped fixture."""
    __tracebackhide__ = True
    from parity.run.engine import RunRequest, run_case

    ref = ref or config.getoption("parity_ref")
    require_backend(ref)
    request = RunRequest(device=parity_device(config), dtype=dtype, ref_device=config.getoption("parity_ref_device"),
                         data=config.getoption("parity_data"), goldens_dir=goldens_dir(config), ref=ref,
                         candidates=(candidate,), **options)
    return run_case(session_case(config, case), request)


@pytest.fixture(scope="session")
def parity_record(pytestconfig):
    """`parity_record(case, dtype="float64", candidate="torch", checks=("forward",), train_steps=0)` → the run
    record (a CaseResult) of the case through the very pipeline `parity check` runs — the same
    tolerance profiles, comparisons and verdicts — with only the named checks, and each side's
    model, traces and gradients from this process's run cache (what `parity_run` and
    `parity_gradients` hand out: nothing is computed twice). The candidate on --parity-device, the reference (--parity-ref) on
    --parity-ref-device."""
    from parity.run.pipeline import PIPELINE

    def record(case: str, dtype: str = "float64", candidate: str = "torch", checks=("forward",), train_steps: int = 0):
        __tracebackhide__ = True
        ref = pytestconfig.getoption("parity_ref")
        require_backend(candidate)
        return _run_case(pytestconfig, case, candidate, dtype, ref, use_golden=False, checkpoints=False,
                         reuse=(ref, candidate), checks=tuple(c for c in PIPELINE if c.name in checks),
                         grad="gradients" in checks, train_steps=train_steps)

    return record
