"""An installed-looking distribution on PYTHONPATH whose entry point registers a backend: how a
user's adapter package reaches the harness, without building or installing a wheel."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence


def fake_distribution(tmp_path: Path, name: str, entry_point: str, paths: Sequence[Path] = (),
                      files: Mapping[str, str] = {}, drop: Sequence[str] = ()) -> dict:
    """A `site` folder with `<name>-0.1.dist-info` declaring `entry_point` ("backend = module:attr")
    in the ptycho_parity.backends group and `files` (file name -> text); returns an environment
    with it and `paths` on PYTHONPATH, without the variables in `drop`."""
    site = tmp_path / "site"
    dist = site / f"{name.replace('-', '_')}-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[ptycho_parity.backends]\n{entry_point}\n")
    for file, text in files.items():
        (site / file).write_text(text)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), *map(str, paths), os.environ.get("PYTHONPATH", "")]))
    for var in drop:
        env.pop(var, None)
    return env


def use_environment(pytester, env: Mapping[str, str], drop: Sequence[str] = ()) -> None:
    """Run the pytester project's subprocesses in `env`, without the variables in `drop`."""
    for key, value in env.items():
        pytester._monkeypatch.setenv(key, value)
    for var in drop:
        pytester._monkeypatch.delenv(var, raising=False)


def run_user_tests(pytester, env: Mapping[str, str], source: str, passed: int, drop: Sequence[str] = ()) -> None:
    """The user's test file `source`, run with `pytest -k parity` in a fresh process in `env`:
    `passed` tests must pass."""
    pytester.makepyfile(test_user=source)
    use_environment(pytester, env, drop)
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "parity").assert_outcomes(passed=passed)
