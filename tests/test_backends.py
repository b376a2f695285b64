"""The backend registry and the engine's one-reference / many-candidates comparison."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from parity import backends
from parity.backends import Backend, BackendError, discover, get_backend, register
from parity.cli import main


@pytest.fixture(autouse=True)
def _registry(clean_registry):  # backends registered here end with their test
    yield


def test_builtins_are_registered(monkeypatch):
    monkeypatch.setattr(backends, "_entry_points", lambda: [])
    monkeypatch.setattr(backends, "_DISCOVERED", {})
    monkeypatch.setattr(backends, "_SCANNED", False)
    assert {"tensorflow", "torch", "numpy"} <= set(discover())
    assert get_backend("numpy").devices == ("cpu",)
    with pytest.raises(BackendError, match="unknown backend 'jax'; installed: numpy, tensorflow, torch"):
        get_backend("jax")


def test_third_party_backends_come_from_the_entry_point_group(monkeypatch):
    numpy_twin = Backend("numpy-twin", "numpy", ("cpu",), package="models_numpy")
    eps = [SimpleNamespace(name="numpy-twin", value="pkg:make", load=lambda: (lambda: numpy_twin)),
           SimpleNamespace(name="broken", value="pkg:oops", load=lambda: 42)]
    monkeypatch.setattr(backends, "_entry_points", lambda: eps)
    monkeypatch.setattr(backends, "_DISCOVERED", {})
    monkeypatch.setattr(backends, "_SCANNED", False)
    assert get_backend("numpy-twin") is numpy_twin  # the broken one next to it hides nothing
    assert backends.broken() == {"broken": "pkg:oops is not a parity.backends.Backend"}
    with pytest.raises(BackendError, match="backend 'broken': pkg:oops is not a parity.backends.Backend"):
        get_backend("broken")


def test_a_broken_entry_point_fails_only_the_run_that_asks_for_it(monkeypatch, tmp_path, capsys):
    def explode():
        raise ImportError("No module named 'their_framework'")

    eps = [SimpleNamespace(name="theirs", value="theirpkg:backend", load=explode)]
    monkeypatch.setattr(backends, "_entry_points", lambda: eps)
    # the backends registered in this process (the session's cached ones) stay: only the scan is new
    monkeypatch.setattr(backends, "_DISCOVERED", dict(backends._DISCOVERED))
    monkeypatch.setattr(backends, "_SCANNED", False)
    assert main(["backends"]) == 0
    listing = capsys.readouterr().out
    assert "theirs" in listing and "cannot be loaded: ImportError: No module named 'their_framework'" in listing
    # nothing but the entry points is patched: both runs may come from the process's cache
    assert main(["check", "--case", "gs1", "--dtype", "float64", "--ref", "numpy", "--no-figures",
                 "--out", str(tmp_path / "ok")], reuse=("numpy", "torch")) == 0
    capsys.readouterr()
    assert main(["check", "--case", "gs1", "--dtype", "float64", "--ref", "numpy", "--candidate", "theirs",
                 "--no-figures", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["parity: error: backend 'theirs': theirpkg:backend cannot be loaded: "
                   "ImportError: No module named 'their_framework'"]


@pytest.mark.full
def test_check_with_two_candidates_prints_both_columns(tmp_path, capsys):
    code = main(["check", "--case", "gs1", "--dtype", "float64", "--candidate", "torch", "--candidate", "numpy",
                 "--no-figures", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    header = [line for line in out.splitlines() if line.startswith("case")][0]
    for column in ("worst stage (torch)", "rel. error (torch)", "worst stage (numpy)", "rel. error (numpy)"):
        assert column in header
    summary = json.loads((tmp_path / "summary.json").read_text())["runs"][0]
    assert set(summary["candidates"]) == {"torch", "numpy"} and summary["ref"] == "tensorflow"
    stats = json.loads((tmp_path / "gs1" / "stats.json").read_text())["float64"]
    directions = {c["direction"] for c in stats["checkpoints"]}
    assert {"numpy → numpy", "tensorflow → numpy", "numpy → tensorflow"} <= directions


@pytest.mark.full
def test_check_with_numpy_as_the_reference(tmp_path, capsys):
    assert main(["check", "--case", "gs1", "--dtype", "float64", "--ref", "numpy", "--candidate", "tensorflow",
                 "--no-figures", "--out", str(tmp_path)]) == 0
    assert "numpy on cpu (reference) vs tensorflow on cpu" in capsys.readouterr().out


def test_unknown_backend_is_one_line(tmp_path, capsys):
    assert main(["check", "--candidate", "jax", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown backend 'jax'" in err


@pytest.mark.full  # the gate catches this fault in process (test_parity_faults); here through the CLI
def test_network_stage_bug_in_torch_is_blamed_on_torch(tmp_path, capsys):
    from parity.faults.catalogue import get_fault

    with get_fault("avg-pool-for-max-pool").inject():
        code = main(["check", "--case", "gs2-big", "--dtype", "float64", "--no-figures", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1
    assert "first divergence at encoder.out: torch disagrees with tensorflow and with numpy at encoder.out" in out


def test_a_backend_without_a_stage_is_reported_not_provided(tmp_path):
    """A candidate whose model does not produce `diffraction.intensity` fails that stage with
    'not provided by <backend>', never a silent pass."""
    import models_numpy

    class Partial:
        def __init__(self, model):
            self.model = model

        def forward_train(self, batch):
            trace = self.model.forward_train(batch)
            trace.pop("diffraction.intensity")
            return trace

        def __getattr__(self, name):
            return getattr(self.model, name)

    register(Backend("numpy-partial", "numpy", ("cpu",),
                     build_fn=lambda cfg, w, device="cpu", **kw: Partial(models_numpy.build(cfg, w, device=device, **kw)),
                     load_fn=lambda path, device="cpu", cfg=None: models_numpy.load(path, device=device),
                     configure_fn=lambda device: {}))
    from parity.inputs.cases import get_case
    from parity.run.engine import RunRequest, run_case

    result = run_case(get_case("gs1"), RunRequest(dtype="float64", candidates=["numpy-partial"], use_golden=False,
                                 checkpoints=False))
    failing = [s for s in result.comparisons["numpy-partial"].stages if not s.passed]
    assert [s.stage for s in failing] == ["diffraction.intensity"]
    assert "not provided by numpy-partial" in failing[0].message
    assert np.isfinite(result.comparisons["numpy-partial"].stages[0].rel_error)


def test_exit_codes_follow_the_worst_kind_of_result():
    from parity.run.results import CheckResult, Failure, exit_code

    def result(status, kind=None):
        failure = Failure(kind, "E", "m", None, "x", "") if kind else None
        return CheckResult("forward", "x", status, "", failure=failure)

    assert exit_code([result("passed"), result("not run")]) == 0
    assert exit_code([result("passed"), result("failed")]) == 1
    assert exit_code([result("failed"), result("error", "raised")]) == 3
    assert exit_code([result("error", "raised"), result("error", "wiring")]) == 2  # fix the wiring first


def test_a_frameworks_environment_is_set_before_its_import_and_only_then():
    """set_framework_env: what a framework reads at import is set where it is not imported yet,
    the user's own value stands, and a framework imported already is left as it is (it read what
    the process had: setting it now would make the environment say what it did not get)."""
    from parity.backends import set_framework_env

    later = Backend("later", "a_framework_nobody_imported", ("cpu",),
                    framework_env=(("PARITY_T_A", "0"), ("PARITY_T_B", "0")))
    imported = Backend("imported", "json", ("cpu",), framework_env=(("PARITY_T_C", "0"),))
    environ = {"PARITY_T_B": "1"}
    set_framework_env([later, imported], environ)
    assert environ == {"PARITY_T_A": "0", "PARITY_T_B": "1"}
