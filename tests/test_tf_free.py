"""TensorFlow is optional (a torch-only GPU runner): in a Python where TensorFlow is not
installed (tests/tf_free.py), the torch-vs-numpy check runs and passes, the pytest gate runs with
`--parity-ref numpy` and catches a fault of the catalogue, the tests that need TensorFlow skip
with one line naming it (or fail under --require-reference), and asking for the TensorFlow
reference is one clear line, exit code 2."""

import json

import pytest

from tests import tf_free

pytestmark = [pytest.mark.full, pytest.mark.processes]  # a Python without TensorFlow, several processes

MISSING = "backend 'tensorflow' needs the 'tensorflow' package, which is not installed"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return tf_free.make(tmp_path_factory.mktemp("tf-free") / "site")


def test_tensorflow_is_really_absent(env):
    done = tf_free.run(env, "-c", "import importlib.metadata as m, importlib.util as u; "
                                  "print(u.find_spec('tensorflow'), u.find_spec('keras'), "
                                  "sorted(d.metadata['Name'] for d in m.distributions() if 'tensorflow' in "
                                  "d.metadata['Name'].lower()), u.find_spec('torch') is not None)")
    assert done.stdout.split() == ["None", "None", "[]", "True"], done.stderr


def test_check_torch_against_numpy_without_tensorflow(env, tmp_path):
    out = tmp_path / "report"
    done = tf_free.run(env, "-m", "parity", "check", "--ref", "numpy", "--candidate", "torch", "--case", "gs1",
                       "--dtype", "float64", "--no-figures", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "numpy on cpu (reference) vs torch on cpu" in done.stdout
    run = json.loads((out / "summary.json").read_text())["runs"][0]
    assert run["verdict"] == "PASS" and run["devices"] == {"numpy": "cpu", "torch": "cpu"}
    stats = json.loads((out / "gs1" / "stats.json").read_text())["float64"]
    assert stats["golden"]["passed"] is True  # the TensorFlow-made golden judges both sides
    assert "tensorflow" not in stats["provenance"]


def test_tensorflow_reference_without_tensorflow_is_one_line(env, tmp_path):
    done = tf_free.run(env, "-m", "parity", "check", "--case", "gs1", "--out", str(tmp_path / "r"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"parity: error: {MISSING} (install the package with its 'cpu' "
                                                "or 'cuda' extra, or use --ref numpy)"]
    refuse = tf_free.run(env, "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests/test_parity_goldens.py",
                         "--require-reference")
    assert refuse.returncode != 0 and f"ERROR: --require-reference: {MISSING}" in refuse.stderr


def test_gate_with_the_numpy_reference_runs_skips_and_catches_a_fault(env):
    done = tf_free.run(env, "-m", "pytest", "-p", "no:cacheprovider", "-v", "-rs", "-n", "0",
                       "tests/test_parity_agreement.py", "tests/test_parity_faults.py", "--parity-ref", "numpy",
                       "--parity-dtype", "float64", "-k", "gs1 or merge-translation-sign")
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-2000:]
    assert "ptycho-parity: reference numpy on cpu, port torch on cpu; replayed from " in out
    for passed in ("test_parity_torch_matches_reference_every_stage[gs1-float64-numpy-cpu-vs-torch-cpu]",
                   "test_parity_infer_path_matches_train_path_across_backends[gs1-float64-numpy-cpu-vs-torch-cpu]",
                   # a fault of the catalogue, caught and blamed on torch against the numpy reference
                   "test_parity_fault_is_caught_and_blamed[merge-translation-sign]"):
        assert f"{passed} PASSED" in out, passed
    # the test that compares numpy with TensorFlow itself is skipped, naming the missing package
    assert "test_parity_numpy_matches_tensorflow_every_stage[gs1] SKIPPED" in out
    assert MISSING in out
    summary = out.strip().splitlines()[-1]
    assert "failed" not in summary and "error" not in summary and "passed" in summary, summary


def test_refresh_dry_run_and_bench_without_tensorflow(env, tmp_path):
    done = tf_free.run(env, "-m", "parity", "refresh", "--dry-run", "--case", "gs1")
    assert done.returncode == 0, done.stderr
    assert "gs1: unchecked — kept" in done.stdout and MISSING in done.stdout
    assert "nothing written" in done.stdout
    write = tf_free.run(env, "-m", "parity", "refresh", "--all", "--case", "gs1", "--goldens", str(tmp_path))
    assert write.returncode == 2 and MISSING in write.stderr and "Traceback" not in write.stderr
    bench = tf_free.run(env, "-m", "parity", "bench", "--case", "gs1", "--repeat", "1", "--no-pytest",
                        "--out", str(tmp_path / "bench.json"))
    assert bench.returncode == 0, bench.stderr[-3000:]
    result = json.loads((tmp_path / "bench.json").read_text())
    assert set(result["imports_s"]) == {"torch"}
    assert {r["backend"] for r in result["backends"]} == {"numpy", "torch"}
