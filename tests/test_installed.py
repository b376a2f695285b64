"""The package works installed from its wheel, away from the checkout: the wheel carries the
fixtures, the tolerance file and the goldens, and the pytest plugin loads from its entry point.

The fresh venv reuses this venv's frameworks through a .pth line (no multi-GB reinstall); the
wheel itself is installed with --no-deps, so `parity` is imported from the wheel."""

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from parity.plugin.devices import require_backend

pytestmark = [pytest.mark.full, pytest.mark.processes]  # builds a wheel into a fresh venv: minutes

ROOT = Path(__file__).resolve().parent.parent

USER_TEST = '''
import pytest

pytestmark = pytest.mark.parity


def test_parity_golden(parity_target, parity_run, parity_golden):
    case, backend, device, dtype = parity_target
    parity_golden(parity_run(case, backend, dtype, device))
'''


def _run(args, cwd, timeout=600):
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    base = tmp_path_factory.mktemp("installed")
    built = _run([sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps", "--no-build-isolation", "-q",
                  "-w", base / "dist"], cwd=base)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((base / "dist").glob("ptycho_parity-*.whl"))
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], base).stdout.strip())
    (site / "reuse_project_frameworks.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = _run([py, "-m", "pip", "install", "--no-deps", "-q", wheel], cwd=base)
    assert done.returncode == 0, done.stderr[-2000:]
    work = base / "elsewhere"
    work.mkdir()
    return env_dir / "bin", work


def test_installed_package_imports_from_the_wheel(installed):
    bindir, work = installed
    where = _run([bindir / "python", "-c", "import parity.resources as r; print(r.__file__, r.INSTALLED)"], work)
    assert where.returncode == 0, where.stderr
    path, flag = where.stdout.split()
    assert str(bindir.parent) in path and flag == "True"


def test_installed_cli_cases_and_check(installed):
    bindir, work = installed
    cases = _run([bindir / "parity", "cases"], work)
    assert cases.returncode == 0 and "gs2-big-n128" in cases.stdout, cases.stderr
    check = _run([bindir / "parity", "check", "--case", "gs1", "--dtype", "float64", "--out", work / "report"], work)
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
    assert "[1/1] gs1 float64 ... PASS" in check.stdout


def test_installed_refresh_writes_only_where_the_user_says(installed):
    bindir, work = installed
    refused = _run([bindir / "parity", "refresh", "--new", "--case", "gs1"], work)
    assert refused.returncode == 2 and "name a folder of yours with --goldens DIR" in refused.stderr
    mine = work / "my-goldens"
    done = _run([bindir / "parity", "refresh", "--new", "--case", "gs1", "--goldens", mine], work)
    assert done.returncode == 0, done.stderr
    assert (mine / "gs1.json").is_file()


def test_installed_plugin_runs_a_users_parity_tests(installed):
    require_backend("tensorflow")  # the user's tests compare with the TensorFlow reference
    bindir, work = installed
    project = work / "user-project"
    project.mkdir()
    (project / "test_user.py").write_text(USER_TEST)
    done = _run([bindir / "python", "-m", "pytest", "-p", "no:cacheprovider", "-k", "parity and gs1-",
                 "--parity-dtype", "float64", "-q"], project)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 passed" in done.stdout
