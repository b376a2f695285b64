"""A Keras model from the outside, wrapped with `keras_backend` only, as the reference.

tests/keras_port/kport is a PtychoPINN-style Keras model written without the harness in mind (see
its docstring: Keras-numbered layers whose names change with N, flat patch stacks the taps
reshape, the probe a layer weight, the stitching of an inference outside the model, a .keras
checkpoint, a loss summed where the reference averages). tests/keras_port/_kport().py wraps
it. In process here, against the built-in torch port and against tests/real_port's ptyport; through
entry points, `parity check` and pytest in a pytester project in the last test.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from parity.backends import register
from parity.inputs.cases import get_case
from parity.plugin.devices import require_backend
from parity.run.engine import RunRequest, run_case
from parity.run.results import EXIT_DIVERGED, EXIT_PASSED, FAILED, NOT_RUN, PASSED
from tests.distributions import fake_distribution, run_user_tests

HERE = Path(__file__).resolve().parent
KPORT, PTYPORT = HERE / "keras_port", HERE / "real_port"
for folder in (KPORT, PTYPORT):
    sys.path.insert(0, str(folder))


def _kport():
    """tests/keras_port's wrapper, imported when a test runs: it imports Keras and TensorFlow, which
    collecting this file must not (a session whose reference is replayed from the cache never
    imports TensorFlow)."""
    import kport_parity

    return kport_parity


@pytest.fixture
def kport_ref(monkeypatch, clean_registry):
    """kport as the reference of a run against `candidate` (ptyport with the named bug, or torch)."""
    require_backend("tensorflow")  # kport computes with TensorFlow

    def run(candidate="torch", case="gs2-big", bug=None, **kwargs):
        if bug:
            monkeypatch.setenv("PTYPORT_BUG", bug)
        else:
            monkeypatch.delenv("PTYPORT_BUG", raising=False)
        register(_kport().backend())
        import ptyport_parity  # imports torch: when a test runs, not when this file is collected

        register(ptyport_parity.backend())
        request = RunRequest(dtype="float64", ref="kport", candidates=(candidate,), **kwargs)
        return run_case(get_case(case), request)

    return run


def _states(result, backend) -> dict:
    return {(r.check, r.label or r.backend): (r.status, r.summary) for r in result.results if r.backend == backend}


@pytest.mark.tensorflow
@pytest.mark.parametrize("candidate", ["torch", pytest.param("ptyport", marks=pytest.mark.full)])
def test_a_keras_reference_agrees_with_both_ports_and_gets_every_check(kport_ref, candidate):
    result = kport_ref(candidate)
    assert result.passed and result.exit_code == EXIT_PASSED, result.report()
    forward = result.comparisons[candidate]
    assert all(s.provided for s in forward.stages) and max(s.rel_error for s in forward.stages) < 1e-12
    kport = _states(result, "kport")
    assert kport[("paths", "kport")] == (PASSED, "forward_infer equals forward_train; not compared: object.canvas, "
                                                 "object.trimmed (not on kport's inference path)")
    assert kport[("checkpoint", "kport → kport")][0] == PASSED  # its own .keras file, through its own load
    # read from its layers, on both the built model and the one its .keras file loaded into
    assert kport[("config", "kport")] == (PASSED, "the training model and the reloaded inference model compute with "
                                                  "the asked config (9 field(s) not read: amp_activation, "
                                                  "intensity_scale, mae_weight, max_position_jitter, nll_weight, "
                                                  "nphotons, offset, probe_mask, probe_scale)")
    theirs = _states(result, candidate)
    assert theirs[("cross-checkpoint", f"kport → {candidate}")][0] == PASSED
    assert theirs[("cross-checkpoint", f"{candidate} → kport")][0] == PASSED
    assert kport[("golden", "kport")][0] == PASSED  # the shipped golden, made by the built-in reference
    assert all(status in (PASSED, NOT_RUN) for status, _ in {**kport, **theirs}.values())


@pytest.mark.full
def test_the_keras_model_as_a_candidate_gets_the_same_checks(clean_registry):
    require_backend("tensorflow")
    register(_kport().backend())
    result = run_case(get_case("gs1"), RunRequest(dtype="float64", candidates=("kport",), reuse=("tensorflow",)))
    assert result.passed and result.exit_code == EXIT_PASSED, result.report()
    states = {key: status for key, (status, _) in _states(result, "kport").items()}
    for key in [("forward", "kport"), ("paths", "kport"), ("checkpoint", "kport → kport"),
                ("cross-checkpoint", "tensorflow → kport"), ("cross-checkpoint", "kport → tensorflow"),
                ("golden", "kport")]:
        assert states[key] == PASSED, (key, result.report())


@pytest.mark.full  # the gate finds origins against a reference with gaps: tests/test_parity_origins.py
def test_a_canvas_bug_against_a_keras_reference_is_blamed_on_the_port_with_origins(kport_ref, tmp_path):
    result = kport_ref("ptyport", bug="canvas", repro_dir=tmp_path)
    assert result.exit_code == EXIT_DIVERGED and not result.errors, result.report()
    first = result.comparisons["ptyport"].first_divergence
    assert first.stage == "object.canvas" and "shape mismatch: kport (8, 78, 78, 1) vs ptyport (8, 68, 68, 1)" \
        in first.message
    [origin] = result.origins["ptyport"]
    assert origin["stage"] == "object.canvas" and origin["blame"] == "ptyport"
    assert (tmp_path / "gs2-big-float64-ptyport-object.canvas" / "repro.py").exists()  # kport computes the stage too
    assert result.headline().startswith("DIVERGED: forward ptyport: first divergence at object.canvas")


@pytest.mark.full  # the gate sees a common factor on ptyport (tests/test_real_port.py)
def test_a_loss_normalised_differently_reads_as_one_factor_on_every_gradient(kport_ref):
    result = kport_ref("torch", grad=True, checkpoints=False)
    assert result.exit_code == EXIT_DIVERGED, result.report()
    check = result.gradients["torch"]
    assert check.first_divergence.stage == "loss"
    n = get_case("gs2-big").config.N
    # kport sums the Poisson terms over the N·N·C pixels where the reference averages them
    assert check.common_factor["factor"] == pytest.approx(1 / (n * n * 4), rel=1e-9)
    assert check.common_factor["tensors"] == 33 and check.common_factor["spread"] < 1e-9
    assert "every gradient of torch is kport's × 6.104e-05" in check.describe()
    gradients = next(r for r in result.results if r.check == "gradients")
    assert gradients.status == FAILED


@pytest.mark.full
@pytest.mark.processes
def test_the_keras_reference_through_its_entry_point_with_pytest_and_parity_check(pytester, tmp_path):
    require_backend("tensorflow")
    env = fake_distribution(tmp_path, "kport-parity", "kport = kport_parity:backend\nptyport = ptyport_parity:backend",
                            paths=[KPORT, PTYPORT], drop=["PTYPORT_BUG", "PTYPORT_TAP"])
    run_user_tests(pytester, env, USER_TEST, passed=1)
    parity = Path(sys.executable).with_name("parity")

    def check(out: str, *args, **variables):
        return subprocess.run([str(parity), "check", "--ref", "kport", "--dtype", "float64", "--no-figures",
                               "--out", str(tmp_path / out), *args], capture_output=True, text=True,
                              env=dict(env, **variables), timeout=600)

    canvas = check("canvas", "--candidate", "ptyport", "--case", "gs2-big", PTYPORT_BUG="canvas")
    assert canvas.returncode == 1 and "Traceback" not in canvas.stdout + canvas.stderr, canvas.stdout[-3000:]
    assert "kport on cpu (reference) vs ptyport on cpu" in canvas.stdout
    assert "[1/1] gs2-big float64 ... DIVERGED: forward ptyport: first divergence at object.canvas" in canvas.stdout
    summary = json.loads((tmp_path / "canvas" / "summary.json").read_text())
    assert summary["runs"][0]["headline"].startswith("DIVERGED: forward ptyport")


USER_TEST = '''
import pytest

pytestmark = pytest.mark.parity


def test_parity_kport_is_a_reference_for_torch(parity_check):
    result = parity_check("gs1", "torch", ref="kport")
    assert result.passed, result.report()
'''
