"""Adapters from the outside: a user's own torch port of the encoder (tests/adapter_example/myport.py,
an nn.Sequential with its own names, channels-first, a module-level input function) wrapped with
parity.adapters, compared in process, then installed through an entry point in a pytester project
that runs `pytest -k parity` and `parity check --candidate my-port` on it."""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from parity.adapters import Derived, Tap, map_weights
from parity.backends import register
from parity.inputs.cases import get_case
from parity.config import ForwardConfig
from parity.run.engine import RunRequest, run_case
from parity.plugin.devices import require_backend
from parity.inputs.weights import WeightError, init_weights
from tests.distributions import fake_distribution, run_user_tests

EXAMPLE = Path(__file__).resolve().parent / "adapter_example"
sys.path.insert(0, str(EXAMPLE))


def _myport():
    """The example port, imported on first use: it imports torch, which collection need not."""
    import myport

    return myport


@pytest.fixture
def my_port(monkeypatch):
    def make(bug=None):
        if bug:
            monkeypatch.setenv("MYPORT_BUG", bug)
        else:
            monkeypatch.delenv("MYPORT_BUG", raising=False)
        register(_myport().backend())
        return run_case(get_case("gs2-big"), RunRequest(dtype="float64", candidates=["my-port"], use_golden=False,
                                   checkpoints=False))
    return make


@pytest.fixture(autouse=True)
def _registry(clean_registry):  # backends registered here end with their test
    yield


def test_adapter_agrees_where_the_port_is_right_and_says_what_it_does_not_provide(my_port, tmp_path):
    from parity.report.markdown import write_report

    result = my_port()
    assert result.passed
    stages = {s.stage: s for s in result.comparisons["my-port"].stages}
    assert stages["encoder.out"].provided and stages["encoder.out"].rel_error < 1e-12
    assert stages["scaled_input"].rel_error < 1e-12 and stages["input.diffraction"].rel_error < 1e-12
    assert stages["decoder.amp"].provided is False and stages["decoder.amp"].message == "not provided by my-port"
    report = write_report([result], tmp_path, {}).read_text()
    row = next(line for line in report.splitlines() if line.startswith("| `decoder.amp`"))
    assert row.endswith("| *not provided by my-port* |")  # never "ok"
    checkpoint = next(r for r in result.results if r.check == "checkpoint" and r.backend == "my-port")
    assert checkpoint.status == "not run" and "checkpoints are off" in checkpoint.summary


def test_adapter_blames_a_deliberate_bug_on_the_port(my_port):
    result = my_port(bug="avgpool")
    assert not result.passed and result.comparisons["my-port"].first_divergence.stage == "encoder.out"
    assert result.arbitrations["my-port"]["blame"] == "my-port"
    assert result.arbitrations["my-port"]["verdict"] == "my-port disagrees with tensorflow and with numpy at encoder.out"
    # encoder.out fed the reference's scaled_input through the function tap's argument
    origins = next(r for r in result.results if r.check == "origins")
    assert origins.summary == "1 origin: encoder.out (my-port; numpy agrees with tensorflow)"
    stages = {s.stage: s for s in result.comparisons["my-port"].stages}
    assert stages["encoder.out"].mark == "origin" and stages["encoder.out"].local_error == pytest.approx(
        stages["encoder.out"].rel_error, rel=1e-6)  # its input agrees: local and end to end are one error


def test_map_weights_lists_every_problem():
    cfg = ForwardConfig()
    weights = {k: v for k, v in init_weights(cfg, 0, "float64").items() if k.startswith("encoder.")}
    mapping = _myport().weight_mapping(cfg)
    shapes = {k: tuple(v.shape) for k, v in _myport().MyEncoder(cfg).state_dict().items()}
    assert map_weights(weights, mapping, shapes).check().state.keys() == shapes.keys()
    mapping.pop("encoder.block0.conv0.bias")
    mapping["encoder.block1.conv1.kernel"] = ("features.7.weight", "same")  # no transposition
    shapes["extra.weight"] = (3,)
    with pytest.raises(WeightError) as info:
        map_weights(weights, mapping, shapes).check()
    text = str(info.value)
    assert "unmapped 1: encoder.block0.conv0.bias" in text
    assert "left over 2: extra.weight, features.0.bias" in text
    assert "mis-shaped 1: encoder.block1.conv1.kernel -> features.7.weight: (3, 3, 128, 128) vs (128, 128, 3, 3)" in text


def test_tap_conversions():
    tap = Tap("x", "m", pick=1, squeeze=(2,), layout="BCHW")
    value = (None, np.arange(2 * 3 * 1 * 4 * 5).reshape(2, 3, 1, 4, 5))
    assert tap.convert(value).shape == (2, 4, 5, 3)
    assert Derived("diffraction.intensity", lambda t, cfg: t["diffraction.scaled"] ** 2).fn(
        {"diffraction.scaled": np.array([3.0])}, None)[0] == 9.0


@pytest.mark.tensorflow
def test_keras_functional_model_through_the_adapter():
    """A Keras port of the first encoder block as a functional model with its own layer names."""
    import keras

    from parity.adapters import keras_backend

    def make_model(cfg, weights, device):
        x = keras.Input((cfg.N, cfg.N, cfg.C), name="diff", dtype="float64")
        h = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="first", dtype="float64")(x)
        h = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="second", dtype="float64")(h)
        model = keras.Model(x, keras.layers.MaxPooling2D(2, name="pool", dtype="float64")(h))
        model.get_layer("first").set_weights([weights["encoder.block0.conv0.kernel"], weights["encoder.block0.conv0.bias"]])
        model.get_layer("second").set_weights([weights["encoder.block0.conv1.kernel"], weights["encoder.block0.conv1.bias"]])
        return model

    def save(model, path):  # the user's own format: a .keras file
        model.save(f"{path}.keras")
        return f"{path}.keras"

    register(keras_backend("my-keras", make_model, inputs=lambda batch, cfg: batch.diffraction,
                           layers={"scaled_input": "diff"}, save=save,
                           load=lambda path, cfg, device: keras.models.load_model(path)))
    result = run_case(get_case("gs2-big"), RunRequest(dtype="float64", candidates=["my-keras"], use_golden=False))
    stages = {s.stage: s for s in result.comparisons["my-keras"].stages}
    assert result.passed and stages["scaled_input"].rel_error < 1e-12, result.report()
    states = {(r.check, r.label): (r.status, r.summary) for r in result.results if r.backend == "my-keras"}
    assert states[("checkpoint", "my-keras → my-keras")][0] == "passed"
    assert states[("cross-checkpoint", "my-keras → tensorflow")] == (
        "not run", "not run: my-keras gives no neutral weights out (no weight mapping)")


def _project(tmp_path: Path) -> dict:
    return fake_distribution(tmp_path, "myport", "my-port = myport:backend",
                             files={"myport.py": (EXAMPLE / "myport.py").read_text()}, drop=["MYPORT_BUG"])


USER_TEST = '''
import pytest

pytestmark = pytest.mark.parity


def test_parity_my_port_matches_the_reference(parity_check):
    result = parity_check("gs2-big", "my-port")
    assert result.passed, result.report()
'''


@pytest.mark.full
@pytest.mark.processes
def test_adapter_through_an_entry_point_with_pytest_and_parity_check(pytester, tmp_path):
    require_backend("tensorflow")  # the user's test and `parity check` use the default reference
    env = _project(tmp_path)
    run_user_tests(pytester, env, USER_TEST, passed=1, drop=["MYPORT_BUG"])
    parity = Path(sys.executable).with_name("parity")
    good = subprocess.run([str(parity), "check", "--candidate", "my-port", "--case", "gs2-big", "--dtype", "float64",
                           "--no-figures", "--out", str(tmp_path / "r1")], capture_output=True, text=True, env=env, timeout=600)
    assert good.returncode == 0, good.stdout[-2000:] + good.stderr[-2000:]
    assert "tensorflow on cpu (reference) vs my-port on cpu" in good.stdout
    bad = subprocess.run([str(parity), "check", "--candidate", "my-port", "--case", "gs2-big", "--dtype", "float64",
                          "--no-figures", "--out", str(tmp_path / "r2")], capture_output=True, text=True,
                         env=dict(env, MYPORT_BUG="avgpool"), timeout=600)
    assert bad.returncode == 1
    assert "my-port disagrees with tensorflow and with numpy at encoder.out" in bad.stdout


def test_unconvert_undoes_convert_into_the_ports_own_value():
    import torch

    from parity.adapters.pytorch import _torch_like
    from parity.run.results import CannotForce

    own = (torch.zeros(1), torch.arange(2 * 3 * 1 * 4 * 5, dtype=torch.float32).reshape(2, 3, 1, 4, 5))
    tap = Tap("x", "m", pick=1, squeeze=(2,), layout="BCHW")
    canonical = tap.convert(own)
    back = tap.unconvert(canonical + 0.5, own, _torch_like)
    assert isinstance(back, tuple) and back[0] is own[0]
    assert back[1].dtype == torch.float32 and torch.equal(back[1], own[1] + 0.5)
    canvas = Tap("object.canvas", "m:f", function=True, transform=lambda a: a[..., None])
    assert "has a transform and no inverse=" in canvas.force_problem()
    canvas = replace(canvas, inverse=lambda a: a[..., 0])
    assert canvas.force_problem() is None
    assert canvas.unconvert(np.ones((2, 5, 5, 1)), torch.zeros(2, 5, 5), _torch_like).shape == (2, 5, 5)
    with pytest.raises(CannotForce, match=r"converts to shape \(2, 4, 4\), the port's is \(2, 5, 5\)"):
        canvas.unconvert(np.ones((2, 4, 4, 1)), torch.zeros(2, 5, 5), _torch_like)
    with pytest.raises(CannotForce, match="the reference's value is complex"):
        canvas.unconvert(np.ones((2, 5, 5, 1), complex), torch.zeros(2, 5, 5), _torch_like)
    assert Tap("x", "m", calls=None, occurrence=-1).force_problem().endswith("(give calls=)")
    assert Tap("x", "m", calls=3, occurrence=-1).forced_call() == 2


def test_tap_transform_when_and_calls():
    canvas = Tap("object.canvas", "m:f", function=True, transform=lambda a: a[..., None],
                 when=lambda cfg: cfg.gridsize > 1)
    assert canvas.convert(np.zeros((2, 5, 5))).shape == (2, 5, 5, 1)
    assert canvas.active(ForwardConfig(gridsize=2)) and not canvas.active(ForwardConfig(gridsize=1))
    from parity.adapters.taps import _check_fired
    from parity.run.results import WiringError

    _check_fired(canvas, 1, "p")
    with pytest.raises(WiringError, match="tap 'object.canvas' on function 'm:f' fired 2 times, declared calls=1"):
        _check_fired(canvas, 2, "p")
    with pytest.raises(WiringError, match="never fired during the forward call"):
        _check_fired(canvas, 0, "p")
    _check_fired(Tap("x", "m", calls=None), 3, "p")  # at least once


def test_a_derived_stage_without_its_inputs_is_a_wiring_error(clean_registry):
    import torch

    from parity.adapters import torch_backend
    from parity.run.results import WiringError

    backend = torch_backend("lone", lambda cfg, w, device: torch.nn.Identity(),
                            run=lambda m, batch, cfg: m(torch.zeros(1)), taps=[],
                            derived=[Derived("diffraction.intensity", lambda t, cfg: t["diffraction.scaled"] ** 2)])
    cfg, weights, batch = get_case("gs1").inputs("float64")
    with pytest.raises(WiringError, match="derived stage 'diffraction.intensity' needs 'diffraction.scaled'"):
        backend.build(cfg, weights).forward_train(batch)
