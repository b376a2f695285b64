"""The parity pytest plugin, registered through the `pytest11` entry point `ptycho_parity`, so it
is active in any project that installs the package.

Options (group "ptycho-parity"):
  --parity-device cpu|cuda|auto   device of the port (auto: cuda when torch sees one)
  --parity-ref tensorflow|numpy|… the reference backend (numpy needs no TensorFlow)
  --parity-ref-device cpu|cuda    device of the reference (default: cpu, whatever --parity-device says)
  --require-reference             fail, never skip, a test whose reference framework is not installed
  --parity-dtype float32|float64|all
  --parity-cases default|extended|all
  --parity-data PATH              a fly001-format NPZ instead of the shipped fixtures
  --parity-dump DIR               write what failing golden checks obtained, and why, here
  --parity-goldens DIR            golden folder (default: the package's fixtures/goldens)
  --require-cuda                  fail, never skip, when CUDA cannot run
  --parity-no-cache               compute the reference afresh (default: replay its numbers from
                                  .parity-cache/ where its sources, versions and inputs are unchanged)
  --parity-cache-dir DIR          the reference cache's folder (default: .parity-cache in the rootdir)
  --parity-ref-in-process         the TensorFlow reference in the test processes (default: a process of its own)
Goldens go through pytest-regressions (`--force-regen`, `--regen-all`).

Parametrisation: an argument named `parity_case` runs once per case of the chosen set (id: the
case name), `parity_dtype` once per chosen dtype, `parity_target` once per case × backend (the
reference and torch) × dtype, each backend on its own device (id: `gs2-big-torch-cuda-float32`),
and `parity_sides` once, its id saying where each side runs (`tensorflow-cpu-vs-torch-cuda`).

Ordering (fail fast): the default cases' tests first, case by case, those marked `parity_first`
at the head of their case (float64 first); then tests of no case; then the extended cases. Under
`-n N` (the default `--dist load`) all tests of a case go to one worker, so a case is computed by
one worker. Each worker gets its share of the cores, and glibc allocator settings that keep the
buffers a float64 convolution frees for its next call (parity.plugin.workers).

Fixtures: `parity_run(case, backend, dtype)` → a cached `parity.run.backend_run.BackendRun` (each
(case, backend, device, dtype) computed once per test process while its case's tests run), and
`parity_golden(run)`, which checks a run against its case's golden. A test that asks for a
backend whose framework is not installed (TensorFlow on a torch-only GPU runner) is skipped with
one line naming the package, or failed under `--require-reference`.
"""

from __future__ import annotations

import pytest

from parity.plugin.devices import PORT, REQUIRE_REFERENCE, backend_device, cuda_problem, parity_sides_of
from parity.plugin.scheduling import keep_a_worker_for_tensorflow, tell_the_controller
from parity.plugin.workers import (hand_back_freed_heap, is_xdist_controller, share_blas_threads_with_workers,
                                   share_cores_between_workers, tune_allocator_for_workers)

def pytest_addoption(parser):
    group = parser.getgroup("ptycho-parity", "ptycho-parity: backend parity and golden checks")
    group.addoption("--parity-device", dest="parity_device", choices=("cpu", "cuda", "auto"), default="cpu",
                    help="device of the port (auto: cuda where torch sees one, else cpu; default: cpu)")
    group.addoption("--parity-ref", dest="parity_ref", metavar="BACKEND", default="tensorflow",
                    help="the reference backend (default: tensorflow; numpy needs no TensorFlow; recorded:DIR "
                         "replays a record made by `parity record`)")
    group.addoption("--parity-ref-device", dest="parity_ref_device", choices=("cpu", "cuda"), default="cpu",
                    help="device of the reference (default: cpu, whatever --parity-device says)")
    group.addoption("--require-reference", dest="require_reference", action="store_true", default=False,
                    help="fail, never skip, the tests whose reference framework is not installed")
    group.addoption("--parity-dtype", dest="parity_dtype", choices=("float32", "float64", "all"), default="all",
                    help="precision of the parity runs (default: all)")
    group.addoption("--parity-cases", dest="parity_cases", choices=("default", "extended", "all"),
                    default="default",
                    help="which cases: the fast default four, the extended set that covers every "
                         "config branch, or all (default: default)")
    group.addoption("--parity-data", dest="parity_data", metavar="PATH", default=None,
                    help="a fly001-format NPZ to run the cases on instead of the shipped fixtures")
    group.addoption("--parity-dump", dest="parity_dump", metavar="DIR", default=None,
                    help="write what failing golden checks obtained, with the mismatch table, here")
    group.addoption("--parity-goldens", dest="parity_goldens", metavar="DIR", default=None,
                    help="golden folder (default: the package's fixtures/goldens)")
    group.addoption("--require-cuda", dest="require_cuda", action="store_true", default=False,
                    help="fail, never skip, when the CUDA parity tests cannot run")
    group.addoption("--parity-case-file", dest="parity_case_file", action="append", default=[], metavar="FILE",
                    help="your own cases, from a TOML case file (repeatable): parity_check and parity_run "
                         "take their names as they take the built-ins'")
    group.addoption("--parity-no-cache", dest="parity_no_cache", action="store_true", default=False,
                    help="compute the reference afresh: no numbers replayed from the reference cache")
    group.addoption("--parity-ref-in-process", dest="parity_ref_in_process", action="store_true", default=False,
                    help="run the TensorFlow reference in the test processes, beside torch (default: in a "
                         "process of its own): faster on few cores, about 1 GB more per test process")
    group.addoption("--parity-cache-dir", dest="parity_cache_dir", metavar="DIR", default=None,
                    help="the reference cache's folder (default: .parity-cache in the rootdir); write it "
                         "--parity-cache-dir=DIR: pytest takes a bare existing path for a test path when it looks "
                         "for its ini file")
    parser.addini("parity_case_file", type="paths", default=[],
                  help="case files (relative to the ini file), as --parity-case-file")
    parser.addini("parity_goldens", type="paths", default=[],
                  help="your golden folder (relative to the ini file), as --parity-goldens")


# the plugin's markers (also listed in the documentation, from here)
MARKERS = {
    "parity": "backend-agreement and golden tests (`pytest -k parity`)",
    "parity_first": "runs first among its case's tests (the cheapest, most discriminating check, so a forward "
                    "bug fails within seconds)",
    "cuda": "needs a CUDA device; skipped where there is none (failed instead with --require-cuda)",
    "tensorflow": "imports TensorFlow into the test process; under `-n N`, while the reference runs in a process "
                  "of its own, it runs on one more worker kept for such tests, so no test process holds "
                  "TensorFlow and torch together",
}


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    """The built-in backends' framework_env before any conftest or test imports a framework: the
    reference computes as its goldens and cache did whoever imports TensorFlow first."""
    from parity.backends import BUILTIN, set_framework_env

    set_framework_env(BUILTIN.values())


def pytest_configure(config):
    share_cores_between_workers(config)
    share_blas_threads_with_workers(config)
    tune_allocator_for_workers(config)
    REQUIRE_REFERENCE.append(bool(config.getoption("require_reference")))
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    data = config.getoption("parity_data")
    if data:
        from parity.inputs.data import DataError, load_scan

        try:
            load_scan(data)  # a bad file is one line before any test runs
        except DataError as exc:
            raise pytest.UsageError(f"--parity-data: {exc}") from None
    from parity.backends import BackendError, get_backend, set_framework_env
    from parity.recorded.backend import register_reference
    from parity.recorded.store import RecordError

    try:
        register_reference(config.getoption("parity_ref"))  # recorded:DIR, a record as the reference
        reference = get_backend(config.getoption("parity_ref"))
    except (BackendError, RecordError) as exc:
        raise pytest.UsageError(f"--parity-ref: {exc}") from None
    if config.getoption("require_reference") and reference.missing():
        raise pytest.UsageError(f"--require-reference: {reference.missing()}")
    set_framework_env([reference])  # an entry point's reference: before any test module imports it
    cache_references(config, reference)
    if is_xdist_controller(config):
        keep_a_worker_for_tensorflow(config, reference_apart(reference.name))
    wants_cuda = (config.getoption("parity_device") == "cuda" or config.getoption("require_cuda")
                  or config.getoption("parity_ref_device") == "cuda")
    if wants_cuda and not is_xdist_controller(config):
        problem = cuda_problem(config)
        if problem:
            option = ("--require-cuda" if config.getoption("require_cuda") else
                      "--parity-device cuda" if config.getoption("parity_device") == "cuda" else
                      "--parity-ref-device cuda")
            raise pytest.UsageError(f"{option}: {problem}")


def cache_references(config, reference) -> None:
    """The reference, numpy (the third opinion) and the built-in port under their own names,
    their numbers replayed from the reference cache where their sources, versions and inputs
    are unchanged (parity.recorded.cache), unless --parity-no-cache. A backend whose sources
    this package does not know (a user's adapter) and a patched package (a fault injected) are
    always computed. A built-in reference whose framework is not the port's (TensorFlow) runs in
    a process of its own (parity.recorded.remote): no test process holds both frameworks."""
    from parity.backends import get_backend, register
    from parity.recorded.cache import caching_backend, live_backend
    from parity.recorded.remote import OutOfProcess, out_of_process, runs_apart

    fresh, apart = config.getoption("parity_no_cache"), not config.getoption("parity_ref_in_process")
    port = live_backend(get_backend(PORT))
    for backend in {reference.name: reference, "numpy": get_backend("numpy"), PORT: port}.values():
        live = live_backend(backend)
        if isinstance(live, OutOfProcess) and not apart:  # a session before this one ran it apart
            live = live.live
        if (apart and runs_apart(live) and not isinstance(live, OutOfProcess) and not live.missing()
                and live.framework not in ("numpy", port.framework)):
            live = out_of_process(live)
        cached = None if fresh or live.missing() else caching_backend(live, reference_cache_dir(config))
        register(cached or live)


def reference_apart(name: str) -> bool:
    """Whether the reference registered as `name` runs in a process of its own (parity.recorded.remote)."""
    from parity.backends import get_backend
    from parity.recorded.cache import live_backend
    from parity.recorded.remote import OutOfProcess

    return isinstance(live_backend(get_backend(name)), OutOfProcess)


def reference_cache_dir(config):
    return config.getoption("parity_cache_dir") or config.rootpath / ".parity-cache"


def pytest_unconfigure(config):
    if REQUIRE_REFERENCE:
        REQUIRE_REFERENCE.pop()


def pytest_report_header(config):
    from parity.backends import get_backend
    from parity.recorded.cache import CachingBackend

    ref = config.getoption("parity_ref")
    sides = {ref: f"reference {ref} on {backend_device(config, ref)}", PORT: f"port {PORT} on {backend_device(config, PORT)}"}
    fresh = [name for name in sides if not get_backend(name).recorded]
    cached = [name for name in fresh if isinstance(get_backend(name), CachingBackend)]
    where = f"replayed from {reference_cache_dir(config)} where unchanged"
    how = ("" if not fresh else f"; {where}" if cached == fresh else "; computed afresh" if not cached
           else f"; {' and '.join(cached)} {where}")
    return "ptycho-parity: " + ", ".join(sides.values()) + how


def pytest_runtest_setup(item):
    if item.get_closest_marker("cuda") is None:
        return
    problem = cuda_problem(item.config)
    if problem:
        if item.config.getoption("require_cuda"):
            pytest.fail(f"--require-cuda: {problem}", pytrace=False)
        pytest.skip(f"no CUDA: {problem}")


def pytest_runtest_logfinish(nodeid, location):
    hand_back_freed_heap()


def _dtypes(config) -> list[str]:
    choice = config.getoption("parity_dtype")
    return ["float32", "float64"] if choice == "all" else [choice]


def pytest_generate_tests(metafunc):
    from parity.inputs.cases import case_names

    config = metafunc.config
    if "parity_case" in metafunc.fixturenames:
        names = case_names(config.getoption("parity_cases"))
        metafunc.parametrize("parity_case", names, ids=names)
    if "parity_dtype" in metafunc.fixturenames:
        metafunc.parametrize("parity_dtype", _dtypes(config))
    if "parity_target" in metafunc.fixturenames:
        backends = dict.fromkeys([config.getoption("parity_ref"), PORT])
        targets = [(case, backend, backend_device(config, backend), dtype)
                   for case in case_names(config.getoption("parity_cases"))
                   for backend in backends for dtype in _dtypes(config)]
        metafunc.parametrize("parity_target", targets, ids=["-".join(t) for t in targets])
    if "parity_sides" in metafunc.fixturenames:
        sides = parity_sides_of(config)
        metafunc.parametrize("parity_sides", [sides], ids=[sides.id])


def case_in_nodeid(nodeid: str) -> str | None:
    """The case a test id is parametrised with: a case name is a whole part of its parameter id
    (`test_x[gs2-big-float32]`, `test_golden[gs1-torch-cpu-float64]`,
    `test_y[tensorflow-cpu-vs-torch-cpu-gs2-big-n128]`), the longest such; None for other tests."""
    from parity.inputs.cases import case_names

    if not nodeid.endswith("]") or "[" not in nodeid:
        return None
    param = f"-{nodeid[nodeid.index('[') + 1:-1]}-"
    found = [c for c in case_names("all") if f"-{c}-" in param]
    return max(found, key=len) if found else None


def pytest_collection_modifyitems(config, items):
    """Fail fast, one case at a time: the tests of the default cases first, case by case, each
    case's tests marked `parity_first` at its head (float64 before float32); then the tests of no
    case; then the extended cases' tests. A case's tests run one after the other, so its models
    and traces are computed once and dropped when the next case starts (RunCache keeps only the
    latest few)."""
    from parity.inputs.cases import case_names

    default = set(case_names("default"))
    rank = {name: i for i, name in enumerate(case_names("all"))}
    cases = {item.nodeid: case_in_nodeid(item.nodeid) for item in items}  # what the xdist scheduler sees

    def order(item):
        case = cases[item.nodeid]
        bucket = 1 if case is None else 0 if case in default else 2
        params = getattr(getattr(item, "callspec", None), "params", {})
        return (bucket, rank.get(case, -1), item.get_closest_marker("parity_first") is None,
                params.get("parity_dtype", "float64") != "float64")

    items[:] = sorted(items, key=order)
    tell_the_controller(config, items)


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: only called where xdist runs
def pytest_xdist_make_scheduler(config, log):
    """Under `-n N` with the default `--dist load`: the same load balancing, except that all
    tests of one parity case go to one worker as one unit, so each case's models, traces and
    gradients are computed by one worker, not by every worker, and the tests marked `tensorflow`
    go to the worker kept for them (parity.plugin.scheduling; other `--dist` modes are left as asked)."""
    if config.getvalue("dist") != "load":
        return None
    from parity.plugin.scheduling import case_scheduling

    return case_scheduling(config, log, case_in_nodeid)


# the fixtures live in their own modules; imported here, they are this plugin's fixtures
from parity.plugin.fixtures import (parity_check, parity_device_name, parity_gradients, parity_record,  # noqa: E402,F401
                                    parity_ref, parity_run, parity_run_cache)
from parity.plugin.goldens import parity_golden  # noqa: E402,F401
