"""The cases' weights make the network informative: its output varies inside the object window,
depends on the input, every bias is live and no relu layer is dead (float64, default cases).

Measured on the torch port (whose agreement with the reference is the parity tests' business),
with forward hooks on its relu convs; thresholds from the issue that introduced the scheme.
"""

import numpy as np
import pytest

from parity.inputs.cases import case_names, get_case
from parity.inputs.weights import is_head_conv
from tests.backends import backend

DEFAULT = case_names("default")
OUTPUT_RANGE = {"sigmoid": 1.0}  # the amplitude activation's output range (bounded ones)


def _inside_window(stage: np.ndarray, cfg) -> np.ndarray:
    """The object window: the central N/2 square with pad_object, else the whole patch."""
    if not cfg.pad_object:
        return stage
    q = cfg.N // 4
    return stage[:, q:q + cfg.N // 2, q:q + cfg.N // 2, :]


def _run_with_relu_outputs(case_name: str):
    import torch

    from models_torch.network import Conv3x3

    cfg, weights, batch = get_case(case_name).inputs("float64")
    model = backend("torch").build(cfg, weights)
    outputs: dict[str, np.ndarray] = {}
    hooks = [m.register_forward_hook(lambda mod, _, out: outputs.__setitem__(mod.name, out.detach().numpy()))
             for m in model.modules() if isinstance(m, Conv3x3) and m.relu]
    try:
        with torch.no_grad():
            trace = model.forward_train(batch)
    finally:
        for h in hooks:
            h.remove()
    return cfg, weights, trace, outputs


@pytest.fixture(scope="module", params=DEFAULT)
def run(request):
    return (request.param, *_run_with_relu_outputs(request.param))


def test_amplitude_and_phase_vary_inside_the_object_window(run):
    name, cfg, _, trace, _ = run
    amp = _inside_window(trace["decoder.amp"], cfg)
    phase = _inside_window(trace["decoder.phase"], cfg)
    span = OUTPUT_RANGE[cfg.amp_activation]
    assert amp.max() - amp.min() >= 0.5 * span, f"{name}: amplitude spans only [{amp.min():.3f}, {amp.max():.3f}]"
    assert phase.max() - phase.min() >= 2.0, f"{name}: phase spans only {phase.max() - phase.min():.3f} rad"


def test_output_depends_on_the_input(run):
    name, _, _, trace, _ = run
    means = np.abs(trace["object.patches"][:4]).mean(axis=(1, 2, 3))
    spread = (means.max() - means.min()) / means.mean()
    assert spread >= 0.01, f"{name}: per-patch means of the first four groups {means} differ by {spread:.2%}"


def test_every_bias_is_live(run):
    name, _, weights, _, _ = run
    dead = [k for k, v in weights.items() if k.endswith(".bias") and not np.any(v)]
    assert not dead, f"{name}: all-zero biases {dead}"


def test_no_relu_layer_is_dead_and_activations_keep_their_scale(run):
    """A unit (output channel) is dead when it is 0 at every pixel of every group of the batch.
    The RMS of every relu layer stays within a factor 4 of 1: nothing vanishes or explodes."""
    name, cfg, weights, _, outputs = run
    relu_convs = [k[:-len(".kernel")] for k in weights if k.endswith(".kernel") and not is_head_conv(k)]
    assert sorted(outputs) == sorted(relu_convs)  # every relu conv was observed
    for layer, out in outputs.items():  # (B, F, H, W)
        dead = float(np.mean(out.max(axis=(0, 2, 3)) <= 0))
        assert dead <= 0.10, f"{name}: {layer} has {dead:.0%} dead units"
        rms = float(np.sqrt(np.mean(out ** 2)))
        assert 0.25 <= rms <= 4.0, f"{name}: {layer} RMS {rms:.3g}"


def test_glorot_is_what_made_this_necessary():
    """The upstream-faithful scheme fails the input-dependence check on the same case: the
    reason the cases default to the informative scheme."""
    import dataclasses

    case = dataclasses.replace(get_case("gs2-big"), weight_scheme="glorot")
    cfg, weights, batch = case.inputs("float64")
    trace = backend("torch").build(cfg, weights).forward_infer(batch)
    phase = _inside_window(trace["decoder.phase"], cfg)
    assert phase.max() - phase.min() < 2.0
    assert not any(np.any(v) for k, v in weights.items() if k.endswith(".bias"))
