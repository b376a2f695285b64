"""The parity pytest plugin from the outside, as a user's project sees it: pytester runs pytest
in a fresh folder where only the installed package's `pytest11` entry point provides the
options and fixtures. One small target (gs1, float64) keeps each run to a few seconds."""

import json
import shutil

import pytest

from parity.goldens import golden_path


USER_TEST = '''
import pytest

pytestmark = pytest.mark.parity


def test_parity_golden(parity_target, parity_run, parity_golden):
    case, backend, device, dtype = parity_target
    parity_golden(parity_run(case, backend, dtype, device))
'''


@pytest.fixture
def project(pytester, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile(test_user=USER_TEST)
    goldens = pytester.path / "goldens"
    goldens.mkdir()

    def run(*args, xdist="0"):
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", xdist, "--parity-dtype", "float64",
                                             "--parity-goldens", str(goldens), "-k", "gs1-", *args)

    return goldens, run


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


def test_plugin_require_cuda_on_a_cpu_machine_is_one_line(pytester):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--require-cuda")
    assert result.ret != 0
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1 and "--require-cuda: CUDA was requested but" in errors[0]
    assert "Traceback" not in result.stderr.str()
    device = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--parity-device", "cuda")
    assert device.ret != 0 and "ERROR: --parity-device cuda: CUDA was requested but" in device.stderr.str()


def test_plugin_bad_data_and_corrupt_golden_are_one_line(pytester, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--parity-data", str(bad))
    assert result.ret != 0
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert errors == [f"ERROR: --parity-data: {bad}: not an NPZ file (no zip archive inside)"]
    goldens = tmp_path / "goldens"
    goldens.mkdir()
    (goldens / "gs1.json").write_text('{"schema": 1')
    corrupt = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--parity-goldens", str(goldens),
                                            "--parity-dtype", "float64", "-k", "gs1-torch")
    corrupt.assert_outcomes(failed=1)
    corrupt.stdout.fnmatch_lines([f"*{goldens / 'gs1.json'}: not valid JSON (line 1*"])
    assert "Traceback" not in corrupt.stdout.str()
    assert (goldens / "gs1.json").read_text() == '{"schema": 1'  # never rewritten
