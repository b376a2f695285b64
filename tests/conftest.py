"""Shared test helpers."""

from pathlib import Path

import numpy as np
import pytest

from parity.fixture import FixtureSpec, simulate


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
