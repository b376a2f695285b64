"""Training parity (docs/design.md §11): the loss, the gradient of every trainable tensor and K Adam
steps agree between the TensorFlow reference and the torch port, per case; the loss formulas are
what the README states; the port's Adam is Keras' Adam."""

import numpy as np
import pytest

from parity.inputs.cases import get_case
from parity.goldens.store import compare_golden, golden_path, load_golden, load_golden_profile
from parity.run.tolerances import load_profile
from parity.run.adam_steps import compare_training
from parity.run.training import (LOSS_TERMS, AdamConfig, compare_gradients, gradient_summary,
                                 trainable_names)


pytestmark = pytest.mark.parity

STEPS = 10  # float64 must track over 10 Adam steps on every default case (train.* in fixtures/tolerances.toml)
# The extended cases train 8: their float64 training turns chaotic after that. Measured with one
# thread per framework, gs2-big-probemask's weights part in norm by 1.3e-9, 1.5e-7, 4.8e-6 at
# steps 8, 9, 10 (×30–100 a step, the loss by 1.8e-8 at step 10): rounding, amplified, not a bug.
EXTENDED_STEPS = 8


def trainer(sides) -> tuple[str, str]:
    """(backend, device) the port's gradients and steps are compared with: the reference where it
    trains; where it cannot (numpy), the port itself on the CPU when the port runs elsewhere (the
    gradient goldens, made by TensorFlow, judge the port on the CPU); else the test is skipped."""
    if sides.ref != "numpy":
        return sides.ref, sides.ref_device
    if sides.port_device == "cpu":
        pytest.skip("the numpy reference computes no gradients; with the port on the CPU the gradient goldens "
                    "judge it (test_parity_gradients_match_golden)")
    return "torch", "cpu"


def test_parity_gradients_agree(parity_case, parity_dtype, parity_sides, parity_record):
    """Judged by the route `parity check --grad` takes (the pipeline's gradient check, against the
    reference or, where it cannot train, the port on the CPU), on the cached runs' gradients."""
    trainer(parity_sides)  # skips where nothing can judge the port's gradients here
    cfg = get_case(parity_case).config
    record = parity_record(parity_case, parity_dtype, checks=("gradients",))
    (result,) = record.of("gradients")
    assert record.passed and result.status == "passed", f"{record.report()}\n{result.detail.describe()}"
    stages = [s.stage for s in result.detail.comparison.stages]
    assert stages[:4] == [*LOSS_TERMS, "grad.log_scale"]  # backward order
    assert set(stages[3:]) == {f"grad.{t}" for t in trainable_names(cfg)}  # log_scale and every weight
    for name in (parity_sides.ref, "torch"):  # the loss reaches every tensor
        norms = record.summaries[name]["train"].get("gradients", {}).get("grad_norm", {})
        assert all(v > 0 for v in norms.values()) and (norms or name == "numpy"), name


def test_parity_gradients_match_golden(parity_case, parity_dtype, parity_sides, parity_gradients, parity_run):
    """Loss terms and gradient norms of the port and of a reference that trains against the float64
    reference's golden (each under the golden profile of its device), so a change that alters both
    sides alike is caught too."""
    if parity_run.data is not None:
        pytest.skip("goldens hold the shipped fixture's results")
    golden = load_golden(golden_path(parity_case))
    assert "gradients" in golden["summaries"], "golden without gradients: run `parity refresh --all`"
    for backend in [b for b in dict.fromkeys([parity_sides.ref, "torch"]) if b != "numpy"]:  # numpy: no gradients
        run = parity_run(parity_case, backend, parity_dtype)
        profile = load_golden_profile(run.device, parity_dtype)
        summaries = dict(run.summaries, gradients=gradient_summary(*parity_gradients(parity_case, backend, parity_dtype)))
        result = compare_golden(golden, summaries, run.digests, parity_dtype, profile, run=run.label)
        assert result.passed, result.message(golden_path(parity_case))


@pytest.mark.full
def test_parity_training_tracks(parity_case, parity_sides, parity_record):
    """10 Adam steps (8 on an extended case) from identical weights on the case's batch, float64:
    the loss before each step and every trainable tensor after it agree."""
    case = get_case(parity_case)
    _training_tracks(case, STEPS if case.case_set == "default" else EXTENDED_STEPS, parity_sides, parity_record)


def test_parity_two_adam_steps_track(parity_sides, parity_record):
    """The gate's training check: 2 Adam steps on gs2-big (the full tier: 10 on every case)."""
    _training_tracks(get_case("gs2-big"), 2, parity_sides, parity_record)


def _training_tracks(case, steps_run: int, parity_sides, parity_record) -> None:
    """Judged by the route `parity check --train-steps K` takes (the pipeline's training check:
    fresh models on their devices, against the reference or, where it cannot train, the port on
    the CPU)."""
    trainer(parity_sides)  # skips where nothing can judge the port's steps here
    record = parity_record(case.name, "float64", checks=("training",), train_steps=steps_run)
    (result,) = record.of("training")
    check = result.detail
    assert result.status == "passed" and len(check.steps) == steps_run, f"{record.report()}\n{check.describe()}"
    # the steps really train: the loss moves and every tensor changed
    assert check.ref_losses[-1] != check.ref_losses[0]
    assert check.unchanged == [], check.describe()


def test_loss_formulas_are_the_documented_ones(parity_run):
    """loss.nll = mean(pred − obs·log pred) with pred = diffraction.intensity, obs = input.diffraction²;
    loss.mae = mean|diffraction.scaled − input.diffraction|; written out here from the trace."""
    from models_numpy.losses import losses as numpy_losses

    run = parity_run("gs2-big", "numpy", "float64")
    t = run.train
    pred, obs = t["diffraction.intensity"], t["input.diffraction"] ** 2
    nll = np.sum(pred - obs * np.log(pred)) / pred.size
    mae = np.sum(np.abs(t["diffraction.scaled"] - t["input.diffraction"])) / pred.size
    cfg = run.config.replace(nll_weight=0.5, mae_weight=2.0)
    got = numpy_losses(t, cfg)
    assert got["loss.nll"] == pytest.approx(nll, rel=1e-13)
    assert got["loss.mae"] == pytest.approx(mae, rel=1e-13)
    assert got["loss"] == pytest.approx(0.5 * nll + 2.0 * mae, rel=1e-13)


@pytest.mark.parametrize("backend", ["tensorflow", "torch"], ids=["gs2-big-mae-tensorflow", "gs2-big-mae-torch"])
def test_backend_losses_agree_with_numpy(backend, parity_run):  # the ids: with gs2-big-mae's tests, on its runs
    """Each framework's loss, on the mae case (both terms weighted), against numpy's from its own trace."""
    from models_numpy.losses import losses as numpy_losses

    run = parity_run("gs2-big-mae", backend, "float64")
    _, _, batch = get_case("gs2-big-mae").inputs("float64")
    got, want = run.model.losses(batch), numpy_losses(run.train, run.config)
    assert set(got) == set(LOSS_TERMS)
    for term in LOSS_TERMS:
        assert got[term] == pytest.approx(want[term], rel=1e-12), term
    assert got["loss.mae"] > 0 and got["loss"] == pytest.approx(got["loss.nll"] + got["loss.mae"], rel=1e-14)


@pytest.mark.tensorflow
def test_port_adam_is_keras_adam():
    """The port's written-out Adam against keras.optimizers.Adam (what the reference trains with):
    the same gradient sequence, 5 steps, float64, a kernel-shaped and a scalar variable, gradients
    spanning 1e-9..1e3 so that epsilon matters for some elements."""
    from parity.plugin.devices import require_backend

    require_backend("tensorflow")
    import keras
    import tensorflow as tf
    import torch

    from models_torch import training as torch_training

    rng = np.random.default_rng(0)
    start = {"kernel": rng.normal(size=(3, 3, 4, 8)), "scalar": np.array(6.9)}
    grads = [{k: rng.normal(size=v.shape) * 10.0 ** rng.uniform(-9, 3, size=v.shape) for k, v in start.items()}
             for _ in range(5)]
    adam = AdamConfig()
    ours = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in start.items()}
    optimizer = torch_training.optimizer(adam)
    theirs = {k: keras.Variable(v, dtype="float64") for k, v in start.items()}
    keras_adam = keras.optimizers.Adam(learning_rate=adam.learning_rate, beta_1=adam.beta_1, beta_2=adam.beta_2,
                                       epsilon=adam.epsilon)
    for g in grads:
        optimizer.apply_gradients([(torch.tensor(g[k]), ours[k]) for k in start])
        keras_adam.apply_gradients([(tf.constant(g[k]), theirs[k]) for k in start])
    for k in start:
        assert not np.allclose(ours[k].detach().numpy(), start[k])  # it moved
        np.testing.assert_allclose(ours[k].detach().numpy(), np.asarray(theirs[k].numpy()), rtol=1e-14, atol=1e-15,
                                   err_msg=k)


@pytest.mark.full  # why the port writes Adam out; the gate checks the port's Adam (above) and 2 steps
def test_torch_optim_adam_is_not_keras_adam():
    """Why the port writes Adam out: torch.optim.Adam with the same hyper-parameters puts epsilon
    after the bias correction and parts from the reference at the first step."""
    import torch

    case = get_case("gs1")
    cfg, weights, batch = case.inputs("float64")
    from models_torch import model as torch_model
    from models_torch import training as torch_training

    ref = list(torch_model.build(cfg, weights).train_steps(batch, 1, AdamConfig()))
    model = torch_model.build(cfg, weights)
    tracked = torch_training.variables(model)
    optimizer = torch.optim.Adam(list(tracked.values()), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
    _, grads = torch_training._loss_and_autograd(model, batch, tracked)
    for name, p in tracked.items():
        p.grad = grads[name]
    optimizer.step()
    after = {k: torch_training.to_keras_layout(k, p) for k, p in tracked.items()}
    check = compare_training(cfg, ref, [{"loss": ref[0]["loss"], "tensors": after}],
                             load_profile("cpu", "float64"), "keras-adam", "torch.optim.Adam")
    assert not check.passed


@pytest.mark.full
def test_training_leaves_the_runs_models_alone(parity_run):
    """`run_case(train_steps=K)` trains fresh models: the cached forward models keep their weights."""
    from parity.run.engine import RunRequest, run_case
    from parity.plugin.devices import require_backend

    require_backend("tensorflow")  # the reference that trains

    result = run_case(get_case("gs2-small"), RunRequest(dtype="float64", use_golden=False, checkpoints=False,
                                 grad=True, train_steps=2))
    assert result.passed, result.verdict()
    assert set(result.gradients) == set(result.training) == {"torch"}
    assert len(result.training["torch"].steps) == 2
    assert "gradients" in result.summaries["tensorflow"]["train"]


@pytest.mark.full
def test_parity_gradient_divergence_is_blamed_by_central_differences(parity_gradients):
    """A gradient wrong on the reference side is blamed on the reference: numpy's central
    difference of the loss along the two gradients' difference sides with the port."""
    case = get_case("gs1")
    cfg, weights, batch = case.inputs("float64")
    losses, grads = parity_gradients("gs1", "tensorflow", "float64")
    tensor = "encoder.block2.conv1.bias"
    wrong = (losses, dict(grads, **{tensor: grads[tensor] * 1.5}))
    right = parity_gradients("gs1", "torch", "float64")
    check = compare_gradients(cfg, wrong, right, load_profile("cpu", "float64"), "tensorflow", "torch",
                              arbiter={"weights": weights, "batch": batch, "log_scale": cfg.log_scale})
    assert check.first_divergence.stage == f"grad.{tensor}"
    assert check.blame["blame"] == "tensorflow", check.blame["verdict"]
    assert "tensorflow is wrong" in check.describe()


@pytest.mark.parametrize("case_name", ["gs1"])  # the id puts it on the worker that computes gs1's gradients
def test_parity_numpy_is_asked_for_the_loss_only_where_a_loss_term_differs(case_name, parity_gradients):
    """The third opinion on a loss term costs a numpy forward pass: a gradient check that agrees
    never asks for it; one whose loss differs asks once, and numpy's terms blame the wrong side."""
    case = get_case(case_name)
    cfg, weights, batch = case.inputs("float64")
    ref, cand = parity_gradients(case_name, "tensorflow", "float64"), parity_gradients(case_name, "torch", "float64")
    asked = []

    def numpy_losses():
        from parity.backends import get_backend

        asked.append(1)
        return get_backend("numpy").build(cfg, weights).losses(batch)

    profile = load_profile("cpu", "float64")
    agree = compare_gradients(cfg, ref, cand, profile, "tensorflow", "torch", numpy_losses)
    assert agree.passed and not asked and agree.numpy_losses is None
    wrong = ({**cand[0], "loss": cand[0]["loss"] * 1.01}, cand[1])
    differs = compare_gradients(cfg, ref, wrong, profile, "tensorflow", "torch", numpy_losses)
    assert differs.first_divergence.stage == "loss" and len(asked) == 1
    assert differs.blame["blame"] == "torch" and differs.numpy_losses["loss"] == pytest.approx(ref[0]["loss"], rel=1e-9)


def test_training_records_are_read_in_lockstep_and_a_short_run_fails():
    """compare_training reads both backends' records one step at a time (a step is taken as its
    record is read), and a backend that stops early fails with both step counts."""
    cfg = get_case("gs1").config
    weights = get_case("gs1").weights("float64")
    read = []

    def records(name, n, scale=1.0):
        for k in range(n):
            read.append((name, k))
            yield {"loss": 1.0 - 0.1 * k, "tensors": {"log_scale": np.asarray(0.5 * scale),
                                                      **{w: v * scale for w, v in weights.items()}}}

    profile = load_profile("cpu", "float64")
    check = compare_training(cfg, records("a", 3), records("b", 3), profile, "a", "b")
    assert check.passed and len(check.steps) == 3 and check.ref_losses == check.cand_losses
    assert read == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    short = compare_training(cfg, records("a", 3), records("b", 2), profile, "a", "b")
    assert not short.passed and short.first_divergence[0] == 3
    assert short.first_divergence[1].message == "a ran 3 steps, b 2"
    parted = compare_training(cfg, records("a", 2), records("b", 2, scale=1.001), profile, "a", "b")
    assert not parted.passed and parted.first_divergence[0] == 1


def test_a_common_factor_is_named_only_where_every_gradient_shares_it():
    from parity.run.training import FACTOR_SPREAD, common_factor

    rng = np.random.default_rng(0)
    ref = {name: rng.normal(size=shape) for name, shape in (("a", (3, 3, 2)), ("b", (4,)), ("c", (2, 5)))}
    scaled = {k: 2.5e4 * v for k, v in ref.items()}
    found = common_factor(ref, scaled)
    assert found["factor"] == pytest.approx(2.5e4, rel=1e-12) and found["tensors"] == 3 and found["spread"] < 1e-12
    assert common_factor(ref, dict(ref)) is None  # the same gradients: no factor to name
    assert common_factor(ref, {**scaled, "b": 2.5e4 * ref["b"] * (1 + 10 * FACTOR_SPREAD)}) is None  # one apart
    noisy = {**scaled, "c": scaled["c"] + 0.1 * np.abs(scaled["c"]).max() * rng.normal(size=(2, 5))}
    assert common_factor(ref, noisy) is None  # not a multiple, whatever its least-squares factor
    assert common_factor({"a": ref["a"]}, {"a": scaled["a"]}) is None  # one tensor is no pattern


def test_a_training_check_names_the_tensors_the_steps_left_unchanged():
    """Steps that do not move a tensor track trivially on both sides: the check lists them."""
    cfg = get_case("gs1").config
    initial = {"a": np.zeros(3), "b": np.ones(2)}
    records = [{"loss": 1.0, "tensors": {"a": np.zeros(3), "b": np.full(2, 1.5)}}]
    check = compare_training(cfg, iter(records), iter(records), load_profile("cpu", "float64"), "ref", "port",
                             initial=initial)
    assert check.unchanged == ["a"]
    assert compare_training(cfg, iter(records), iter(records), load_profile("cpu", "float64"), "ref",
                            "port").unchanged == []  # nothing to compare with: nothing claimed


def test_the_gradient_arbiter_differentiates_at_the_models_own_probe():
    """A trained checkpoint's probe is model state, not the batch's: numpy's central difference
    is taken at it (the same number as a numpy model built with that probe gives), not at the
    batch's probe."""
    from parity.backends import get_backend
    from parity.run.training import directional_derivative

    cfg, weights, batch = get_case("gs1").inputs("float64")
    probe = batch.probe * 1.3  # a probe whose amplitude training changed
    direction, h = np.array(1.0), 1e-5

    def loss(ls, with_probe):
        return get_backend("numpy").build(cfg, weights, probe=with_probe, log_scale=ls).losses(batch)["loss"]

    by_hand = (loss(cfg.log_scale + h, probe) - loss(cfg.log_scale - h, probe)) / (2 * h)
    at_state = directional_derivative(cfg, weights, cfg.log_scale, batch, "log_scale", direction, h, probe)
    at_batch = directional_derivative(cfg, weights, cfg.log_scale, batch, "log_scale", direction, h)
    assert at_state == pytest.approx(by_hand, rel=1e-9)
    assert abs(at_state - at_batch) > 1e-3 * abs(at_batch)
