"""The prepared device check (scripts/gpu_check.py, `make gpu-check`): what it would run, from
which wheels, and its refusal where a package is neither installed nor carried as a wheel. The
real run needs a GPU machine; its dry run and its parts are checked here."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.processes
def test_dry_run_prints_the_gate_and_runs_nothing(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "missing here: nothing" in out and "gpu-check: dry run, nothing run" in out
    assert "-k parity --parity-ref numpy --parity-device cuda" in out and "--require-cuda" in out
    assert "-m parity check --device cuda --ref numpy --grad --train-steps 3" in out
    assert not (tmp_path / "out").exists()


def test_commands_load_the_plugin_only_where_it_is_not_installed(gpu_check, monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_check, "plugin_registered", lambda: False)
    pytest_cmd = gpu_check.commands("cuda", tmp_path)["pytest"]
    assert pytest_cmd[1:5] == ["-m", "pytest", "-p", "parity.plugin.pytest_plugin"]
    monkeypatch.setattr(gpu_check, "plugin_registered", lambda: True)
    rehearsal = gpu_check.commands("cpu", tmp_path)
    assert "parity.plugin.pytest_plugin" not in rehearsal["pytest"] and "--require-cuda" not in rehearsal["pytest"]
    assert rehearsal["check"][rehearsal["check"].index("--device") + 1] == "cpu"


def test_the_calibration_step_proposes_bounds_for_the_device_it_runs_on(gpu_check, tmp_path):
    """Against numpy: two weight seeds; against a record, which holds the cases' own weights: one.
    The proposal goes to a file of its own, never into the tolerance file (no --write)."""
    for ref, seeds in (("numpy", "2"), ("recorded:/r", "1")):
        cmd = gpu_check.commands("cuda", tmp_path, ref)["calibrate"]
        assert cmd[1:4] == ["-m", "parity", "calibrate"] and "--write" not in cmd
        assert [cmd[cmd.index(o) + 1] for o in ("--device", "--ref", "--seeds", "--out")] == [
            "cuda", ref, seeds, str(tmp_path / "calibration-cuda.toml")]


def test_wheels_are_found_by_distribution_name(gpu_check, tmp_path):
    for name in ("pytest_regressions-2.11.0-py3-none-any.whl", "pyyaml-6.0.4-cp312-cp312-manylinux2014_x86_64.whl"):
        (tmp_path / name).write_bytes(b"")
    found = gpu_check.wheels_for(["pytest-regressions", "PyYAML", "pytest-datadir"], tmp_path)
    assert found["pytest-regressions"].name.startswith("pytest_regressions-2.11.0")
    assert found["PyYAML"].name.startswith("pyyaml-6.0.4") and found["pytest-datadir"] is None


def test_a_missing_package_without_a_wheel_is_one_line_and_exit_2(gpu_check, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(gpu_check, "missing_modules", lambda: ["pytest_regressions", "pytest_datadir"])
    (tmp_path / "pytest_regressions-2.11.0-py3-none-any.whl").write_bytes(b"")
    assert gpu_check.main(["--dry-run", "--wheels", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert "pytest-regressions: from pytest_regressions-2.11.0-py3-none-any.whl" in captured.out
    assert captured.err.strip().splitlines() == [
        f"gpu-check: cannot run: pytest-datadir is not installed and has no wheel in {tmp_path} "
        "(fill it on a machine with a network: `make wheels`)"]


def test_worst_error_per_stage_reads_the_reports(gpu_check, tmp_path):
    import json

    def write(case, dtype, errors):  # what parity check writes: <case>/stats.json, one entry per dtype
        folder = tmp_path / case
        folder.mkdir(parents=True)
        stages = [{"stage": s, "rel_error": e, "tolerance": 1e-5} for s, e in errors.items()]
        (folder / "stats.json").write_text(json.dumps({dtype: {"provenance": {
            "devices": {"numpy": "cpu", "torch": "cuda"}, "flags": {"torch_tf32": False}},
            "per_candidate": {"torch": {"comparison": {"stages": stages}}}}}))

    write("gs1", "float32", {"encoder.out": 1e-6, "decoder.amp": None})
    write("gs2-big", "float32", {"encoder.out": 3e-6})
    worst = gpu_check.worst_per_stage(tmp_path)
    assert worst["float32"]["encoder.out"] == {"rel_error": 3e-6, "tolerance": 1e-5, "case": "gs2-big",
                                              "candidate": "torch"}
    assert "decoder.amp" not in worst["float32"]
    assert gpu_check.flags_of(tmp_path)["devices"] == {"numpy": "cpu", "torch": "cuda"}
