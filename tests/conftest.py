"""Shared test helpers."""

from pathlib import Path

import numpy as np
import pytest

from parity.inputs.fixture import FixtureSpec, simulate


@pytest.fixture(autouse=True)
def not_in_ci(monkeypatch):
    """The suite itself runs in CI (where `CI` is set and goldens are never written). Tests that
    write goldens into their own tmp folders must behave the same there as on a laptop, so `CI` is
    cleared for every test (subprocesses inherit it); the tests of the CI refusal set it themselves."""
    monkeypatch.delenv("CI", raising=False)


@pytest.fixture
def write_npz(tmp_path):
    """Write arrays to an NPZ in a tmp dir and return its path."""

    def _write(name="scan.npz", **arrays):
        path = Path(tmp_path) / name
        np.savez(path, **arrays)
        return path

    return _write


@pytest.fixture(scope="session")
def small_scan_arrays():
    """A valid fly001-format scan (16 points) from the fixture generator."""
    return simulate(FixtureSpec(rows=4, cols=4, seed=7))


@pytest.fixture
def clean_registry(monkeypatch):
    """Backends registered inside a test vanish after it (the registry is per process)."""
    from parity import backends

    monkeypatch.setattr(backends, "_DISCOVERED", dict(backends._DISCOVERED))


# -- tiers: the gate (`make test`, `pytest -k parity`) and the full tier (`make test-full`, CI) ------

def pytest_addoption(parser):
    parser.addoption("--tier", choices=("gate", "full"), default="gate",
                     help="gate (default): every kind of check on the default cases and one float64 forward of "
                          "every extended case, within a minute; full: everything, the tests marked `full` too")


def pytest_configure(config):
    config.addinivalue_line("markers", "full: runs only in the full tier (make test-full, CI): the long "
                                       "variants of a check the gate keeps in short form")
    config.addinivalue_line("markers", "processes: starts Python processes (a wheel, a pytester project, the "
                                       "CLI); runs after every other test")


@pytest.hookimpl(trylast=True)  # after the parity plugin has ordered the tests case by case
def pytest_collection_modifyitems(config, items):
    """The gate drops the `full` tests; in both tiers the tests that start processes run last, so
    the first failures come from the cheap in-process checks."""
    if config.getoption("tier") == "gate":
        dropped = [item for item in items if item.get_closest_marker("full")]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = [item for item in items if not item.get_closest_marker("full")]
    items.sort(key=lambda item: item.get_closest_marker("processes") is not None)  # stable: keeps the case order


@pytest.fixture(scope="session")
def tier(pytestconfig) -> str:
    return pytestconfig.getoption("tier")
