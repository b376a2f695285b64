"""The parity pytest plugin from the outside, as a user's project sees it: pytester runs pytest
in a fresh folder where only the installed package's `pytest11` entry point provides the
options and fixtures. One small target (gs1, float64) keeps each run to a few seconds."""

import json
import os
import platform
import shutil
import subprocess
import sys

import pytest

from parity.goldens.store import golden_path
from parity.plugin.devices import require_backend


USER_TEST = '''
import pytest

pytestmark = pytest.mark.parity


def test_parity_golden(parity_target, parity_run, parity_golden):
    case, backend, device, dtype = parity_target
    parity_golden(parity_run(case, backend, dtype, device))
'''


@pytest.fixture(scope="session")
def frameworks_imported(parity_gradients):
    """A pytester run in this process forgets, afterwards, every module imported since the
    `pytester` fixture was made; TensorFlow aborts when imported twice in one process. So all
    the runs use is imported first, by a session fixture (set up before `pytester`)."""
    for backend in ("tensorflow", "torch"):
        parity_gradients("gs1", backend, "float64")


@pytest.fixture
def project(frameworks_imported, pytester, monkeypatch, pytestconfig):
    from parity.plugin.pytest_plugin import reference_cache_dir

    monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile(test_user=USER_TEST)
    goldens = pytester.path / "goldens"
    goldens.mkdir()
    # the numbers from this session's reference cache where it keeps one (these tests are about
    # goldens, not about computing them); under --parity-no-cache each run keeps its own
    cache = [] if pytestconfig.getoption("parity_no_cache") else [f"--parity-cache-dir={reference_cache_dir(pytestconfig)}"]

    def run(*args, xdist="0"):
        # serial runs in this process (the frameworks are imported once, not once per run; the
        # plugin still comes from the installed entry point); the xdist run starts its workers
        runner = pytester.runpytest if xdist == "0" else pytester.runpytest_subprocess
        return runner("-p", "no:cacheprovider", "-n", xdist, "--parity-dtype", "float64",
                      "--parity-goldens", str(goldens), "-k", "gs1-", *cache, *args)

    return goldens, run


@pytest.mark.full
@pytest.mark.processes
def test_plugin_passes_fails_on_a_tampered_golden_and_xdist_agrees(project):
    goldens, run = project
    shutil.copy(golden_path("gs1"), goldens / "gs1.json")
    result = run("-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_parity_golden?gs1-tensorflow-cpu-float64? PASSED*",
                                 "*test_parity_golden?gs1-torch-cpu-float64? PASSED*"])
    golden = json.loads((goldens / "gs1.json").read_text())
    golden["summaries"]["canvas"]["amplitude"]["std"] *= 1.5
    (goldens / "gs1.json").write_text(json.dumps(golden))
    dump = goldens.parent / "dump"
    serial = run("--parity-dump", str(dump))
    serial.assert_outcomes(failed=2)
    serial.stdout.fnmatch_lines(["*canvas.amplitude.std: golden * obtained * difference * allowed*"])
    table = (dump / "gs1" / "golden-torch-cpu-float64.mismatches.txt").read_text()
    assert "canvas.amplitude.std" in table
    assert json.loads((dump / "gs1" / "golden-torch-cpu-float64.obtained.json").read_text())["case"] == "gs1"
    parallel = run(xdist="2")
    parallel.assert_outcomes(failed=2)
    parallel.stdout.fnmatch_lines(["*canvas.amplitude.std: golden * obtained * difference * allowed*"])


def test_plugin_missing_golden_then_force_regen(project, monkeypatch):
    goldens, run = project
    monkeypatch.setenv("CI", "true")
    ci = run()
    ci.assert_outcomes(failed=2)
    ci.stdout.fnmatch_lines(["*golden missing: *gs1.json (CI is set: nothing written*"])
    assert list(goldens.iterdir()) == []
    monkeypatch.delenv("CI")
    missing = run()
    missing.assert_outcomes(failed=2)
    missing.stdout.fnmatch_lines(["*golden missing: *gs1.json; wrote what this run obtained to *gs1.obtained.json; "
                                  "accept it with `pytest -k parity --force-regen`*"])
    assert (goldens / "gs1.obtained.json").is_file() and not (goldens / "gs1.json").exists()
    regen = run("--force-regen")
    assert (goldens / "gs1.json").is_file()
    regen.stdout.fnmatch_lines(["*File not found in data directory, created:*"])
    run().assert_outcomes(passed=2)


def test_plugin_require_cuda_on_a_cpu_machine_is_one_line(frameworks_imported, pytester):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider", "--require-cuda")
    assert result.ret != 0
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1 and "--require-cuda: CUDA was requested but" in errors[0]
    assert "Traceback" not in result.stderr.str()
    device = pytester.runpytest("-p", "no:cacheprovider", "--parity-device", "cuda")
    assert device.ret != 0 and "ERROR: --parity-device cuda: CUDA was requested but" in device.stderr.str()


def test_plugin_bad_data_and_corrupt_golden_are_one_line(frameworks_imported, pytester, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider", "--parity-data", str(bad))
    assert result.ret != 0
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert errors == [f"ERROR: --parity-data: {bad}: not an NPZ file (no zip archive inside)"]
    goldens = tmp_path / "goldens"
    goldens.mkdir()
    (goldens / "gs1.json").write_text('{"schema": 1')
    corrupt = pytester.runpytest("-p", "no:cacheprovider", "--parity-goldens", str(goldens),
                                 "--parity-dtype", "float64", "-k", "gs1-torch")
    corrupt.assert_outcomes(failed=1)
    corrupt.stdout.fnmatch_lines([f"*{goldens / 'gs1.json'}: not valid JSON (line 1*"])
    assert "Traceback" not in corrupt.stdout.str()
    assert (goldens / "gs1.json").read_text() == '{"schema": 1'  # never rewritten


ORDER_TEST = '''
import pytest


def test_plain():
    pass


def test_by_case(parity_case, parity_dtype):
    pass


@pytest.mark.parity_first
def test_first(parity_case, parity_dtype):
    pass


def test_by_target(parity_target):
    pass


def test_later_plain():
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):  # each of the two workers: half the cores, both frameworks
        share = str(max(1, os.cpu_count() // 2))
        assert os.environ["PARITY_NUM_THREADS"] == os.environ["TF_NUM_INTRAOP_THREADS"] == share
        # numpy's BLAS threads, and the allocator settings, the controller set before it started them
        assert os.environ["OPENBLAS_NUM_THREADS"] == share
        from parity.plugin.workers import ALLOCATOR_ENV

        assert {name: os.environ.get(name) for name in ALLOCATOR_ENV} == ALLOCATOR_ENV
'''


@pytest.mark.processes
def test_plugin_runs_each_cases_tests_together_on_one_worker(pytester, monkeypatch):
    from parity.inputs.cases import case_names
    from parity.plugin.pytest_plugin import case_in_nodeid as _case_in

    pytester.makepyfile(test_order=ORDER_TEST)
    collected = pytester.runpytest("-p", "no:cacheprovider", "--collect-only", "-q")
    ids = [line for line in collected.stdout.lines if "::" in line]
    assert len(ids) == 2 + 4 * (2 + 2 + 4)  # per case: test_by_case and test_first in two dtypes, four targets
    # fail fast: the cases first, each case's tests one block, in the case table's order ...
    cases = [_case_in(i) for i in ids[:-2]]
    assert [c for i, c in enumerate(cases) if i == 0 or c != cases[i - 1]] == case_names("default")
    # ... each opening with its parity_first test, float64 first; the tests of no case after them
    heads = [ids[i:i + 2] for i, c in enumerate(cases) if i == 0 or c != cases[i - 1]]
    assert heads == [[f"test_order.py::test_first[{c}-float64]", f"test_order.py::test_first[{c}-float32]"]
                     for c in case_names("default")]
    assert ids[-2:] == ["test_order.py::test_plain", "test_order.py::test_later_plain"]
    # and under xdist each case runs on one worker, whichever it is (the thread shares of the
    # workers of this run, not of the run around it)
    from parity.plugin.workers import ALLOCATOR_ENV

    for variable in ("PARITY_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OPENBLAS_NUM_THREADS",
                     *ALLOCATOR_ENV):
        monkeypatch.delenv(variable, raising=False)
    run = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "-v", "--parity-dtype", "float64")
    run.assert_outcomes(passed=2 + 4 * 4)
    workers: dict[str, set] = {}
    for line in run.stdout.lines:
        if " PASSED " in line and _case_in(line.split()[-1]):
            worker, test_id = line.split()[0], line.split()[-1]
            workers.setdefault(_case_in(test_id), set()).add(worker)
    assert set(workers) == set(case_names("default")) and all(len(w) == 1 for w in workers.values()), workers


def test_the_workers_blas_threads_are_their_share_unless_the_user_chose(monkeypatch):
    import os
    from types import SimpleNamespace

    from parity.plugin.workers import share_blas_threads_with_workers

    controller = SimpleNamespace(option=SimpleNamespace(numprocesses=2, tx=["popen", "popen"]))
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    share_blas_threads_with_workers(SimpleNamespace(option=controller.option, workerinput={}))  # a worker: too late
    assert "OPENBLAS_NUM_THREADS" not in os.environ
    share_blas_threads_with_workers(controller)
    assert os.environ["OPENBLAS_NUM_THREADS"] == "4"  # 8 cores, 2 workers
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")  # the user's choice stands
    share_blas_threads_with_workers(controller)
    assert os.environ["OPENBLAS_NUM_THREADS"] == "3"


def test_the_workers_allocator_settings_leave_a_users_own_alone():
    from parity.plugin.workers import ALLOCATOR_ENV, tune_allocator

    environ = {"PATH": "/bin"}
    assert tune_allocator(environ) and environ == {"PATH": "/bin", **ALLOCATOR_ENV}
    mine = {"MALLOC_TRIM_THRESHOLD_": "0"}  # the user's choice: neither name added
    assert not tune_allocator(mine) and mine == {"MALLOC_TRIM_THRESHOLD_": "0"}


HEAP_SCRIPT = """
import json, sys
import numpy as np
from parity.plugin.workers import hand_back_freed_heap, resident_mb
blocks = [np.ones(40 << 17) for _ in range(20)]  # 40 MiB each: below the workers' mmap threshold (64 MiB),
# from the heap; above the largest glibc picks by itself (32 MiB), mapped without the settings
idle = resident_mb()
trimmed_early = hand_back_freed_heap()  # held, not freed: nothing to hand back
del blocks  # freed, and kept mapped under the workers' trim threshold
freed = resident_mb()
trimmed = hand_back_freed_heap()
print(json.dumps([idle, trimmed_early, freed, trimmed, resident_mb()]))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
@pytest.mark.parametrize("workers_allocator", [True, False])
def test_a_worker_hands_the_heap_a_test_freed_back(workers_allocator):
    """Under the workers' allocator settings twenty freed 40 MiB arrays stay resident until the
    worker hands it back between tests; a process started without them (`-n 0`, a user's own
    settings) is left to its allocator."""
    from parity.plugin.workers import ALLOCATOR_ENV

    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
    if workers_allocator:
        env.update(ALLOCATOR_ENV)
    done = subprocess.run([sys.executable, "-c", HEAP_SCRIPT], env=env, capture_output=True, text=True, check=True)
    idle, trimmed_early, freed, trimmed, after = json.loads(done.stdout)
    assert idle > 600 and trimmed_early is workers_allocator  # above TRIM_ABOVE_MB: trimmed, to no effect
    if workers_allocator:
        assert freed > 600 and trimmed and after < freed - 500, (idle, freed, after)
    else:  # glibc's defaults unmap blocks that large when they are freed; nothing trimmed
        assert freed < idle - 500 and not trimmed


def test_case_of_a_test_id():
    from parity.plugin.pytest_plugin import case_in_nodeid

    assert case_in_nodeid("t.py::test_x[gs2-big-float32]") == "gs2-big"
    assert case_in_nodeid("t.py::test_x[gs2-big-probebig-torch-cpu-float64]") == "gs2-big-probebig"
    assert case_in_nodeid("t.py::test_x[gs1]") == "gs1"
    assert case_in_nodeid("t.py::test_x[tensorflow-cpu-vs-torch-cpu-gs2-big-n128]") == "gs2-big-n128"
    assert case_in_nodeid("t.py::test_x[gs2-big-b16-torch]") == "gs2-big-b16"
    assert case_in_nodeid("t.py::test_x[log-scale-not-restored]") is None
    assert case_in_nodeid("t.py::test_x[tensorflow]") is None and case_in_nodeid("t.py::test_x") is None


def test_run_cache_keeps_the_latest_runs_only():
    from parity.run.cache import LruCache

    cache, computed = LruCache(2), []

    def value(key):
        return lambda: computed.append(key) or key

    assert [cache.get((k,), value(k)) for k in "abab"] == list("abab")
    assert computed == ["a", "b"]  # hits are not recomputed
    cache.get(("c",), value("c"))  # evicts "a", the least recently used
    assert len(cache) == 2
    cache.get(("b",), value("b"))
    cache.get(("a",), value("a"))
    assert computed == ["a", "b", "c", "a"]


def test_runs_of_a_backend_no_longer_registered_are_dropped(clean_registry, monkeypatch):
    """A backend a test registers leaves with the test: its runs (models, traces) are not kept
    until newer runs push them out, and a backend registered anew under the name is run anew."""
    import dataclasses

    from parity import backends
    from parity.inputs.cases import get_case
    from parity.run import cache

    monkeypatch.setattr(cache, "_RUNS", cache.LruCache(cache.RUNS_KEPT))
    case = get_case("gs1")
    first = dataclasses.replace(backends.BUILTIN["numpy"], name="numpy-again")
    backends.register(first)
    run = cache.cached_run(case, "numpy-again", "cpu", "float64")
    assert cache.cached_run(case, "numpy-again", "cpu", "float64") is run and len(cache._RUNS) == 1
    backends.register(dataclasses.replace(first))  # another object under the same name
    again = cache.cached_run(case, "numpy-again", "cpu", "float64")
    assert again is not run and len(cache._RUNS) == 1  # the first object's run dropped
    del backends._DISCOVERED["numpy-again"]  # the test that registered it has ended
    cache.cached_run(case, "numpy", "cpu", "float64")
    assert len(cache._RUNS) == 1  # only numpy's: the unregistered backend's run is gone


def test_the_tensorflow_reference_runs_apart_unless_asked_in_the_test_process(clean_registry, tmp_path):
    from types import SimpleNamespace

    from parity.backends import BUILTIN, get_backend
    from parity.plugin.devices import require_backend
    from parity.plugin.pytest_plugin import cache_references, reference_apart
    from parity.recorded.cache import live_backend
    from parity.recorded.remote import OutOfProcess

    require_backend("tensorflow")

    def configure(in_process: bool, reference):
        options = {"parity_no_cache": False, "parity_ref_in_process": in_process, "parity_cache_dir": tmp_path}
        cache_references(SimpleNamespace(getoption=options.__getitem__, rootpath=tmp_path), reference)

    configure(False, BUILTIN["tensorflow"])
    assert reference_apart("tensorflow")
    assert not any(isinstance(live_backend(get_backend(n)), OutOfProcess) for n in ("torch", "numpy"))
    configure(True, get_backend("tensorflow"))  # from a registry that holds it apart
    assert not reference_apart("tensorflow") and live_backend(get_backend("tensorflow")) is BUILTIN["tensorflow"]


KERAS_FIRST_CONFTEST = """
import tensorflow  # a user's Keras reference, registered in the conftest: TensorFlow imported first
"""

KERAS_FIRST_TEST = """
import os


def test_the_built_in_reference_runs_tensorflows_plain_kernels():
    import models_tf

    assert os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0"
    assert models_tf.ONEDNN_OPTS == "0", models_tf.ONEDNN_OPTS
"""


def test_tensorflow_imported_first_by_a_users_conftest_still_gets_the_references_settings(pytester, monkeypatch):
    """TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, when imported. Where a user's conftest (or a
    test, or a Keras reference) imports it before models_tf, the plugin has already set what the
    reference needs: the built-in reference then computes as its goldens and the reference cache's
    entries were computed (oneDNN's kernels gave its float32 encoder a relative 1e-4 off the
    cached training path's, and the paths check a difference). Without it, models_tf records
    "unknown: tensorflow was imported before models_tf"."""
    require_backend("tensorflow")
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)  # this process's, which the plugin set
    pytester.makeconftest(KERAS_FIRST_CONFTEST)
    pytester.makepyfile(test_keras_first=KERAS_FIRST_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "0")
    result.assert_outcomes(passed=1)


def test_the_kept_workers_units_go_longest_first_and_the_others_keep_their_order(tmp_path):
    from collections import OrderedDict

    from parity.plugin.scheduling import MARKER, marked_longest_first, recorded_durations

    (tmp_path / ".test_durations").write_text(json.dumps({"t.py::a": 9.0, "t.py::k1": 1.0, "t.py::k2": 4.0,
                                                          "t.py::b": 0.1, "t.py::k3": 2.0}))
    durations = recorded_durations(tmp_path)
    marked = {f"{MARKER} t.py::{k}": {f"t.py::{k}": False} for k in ("k1", "k2", "k3", "k4")}  # k4: never timed
    units = OrderedDict([("t.py::b", {"t.py::b": False}), *marked.items(), ("t.py::a", {"t.py::a": False})])
    ordered = marked_longest_first(units, durations)
    # k4 counts as the mean, (9 + 1 + 4 + 0.1 + 2) / 5 = 3.22: after k2 (4), before k3 (2)
    assert [s for s in ordered if s in marked] == [f"{MARKER} t.py::{k}" for k in ("k2", "k4", "k3", "k1")]
    assert [s for s in ordered if s not in marked] == ["t.py::b", "t.py::a"]  # xdist's order
    assert all(ordered[s] is units[s] for s in units)
    (tmp_path / ".test_durations").write_text("{not json")
    assert recorded_durations(tmp_path) == {} and marked_longest_first(units, {}) is units
