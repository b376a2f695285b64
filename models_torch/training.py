"""Gradients and Adam steps (PyTorch port), docs/design.md §11.

The trainable tensors are `log_scale` (a parameter, trainable as upstream) and every conv kernel
and bias, by canonical name; gradients come back in the neutral (Keras) layout.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from parity.inputs.data import Batch
from parity.run.training import LOG_SCALE, AdamConfig
from models_torch import losses, network


def variables(model) -> dict[str, torch.nn.Parameter]:
    """{"log_scale" | canonical weight name: parameter} of a models_torch.ForwardModel."""
    out = {LOG_SCALE: model.log_scale}
    for conv in network.conv_layers(model.encoder, model.decoder_amp, model.decoder_phase):
        out.update(conv.variables())
    return out


def to_keras_layout(name: str, value: torch.Tensor) -> np.ndarray:
    """A tensor in the neutral layout: kernels (out, in, kh, kw) → (kh, kw, in, out)."""
    array = value.detach().cpu().numpy()  # shares memory with the parameter: copied below
    return np.array(array.transpose(2, 3, 1, 0) if name.endswith(".kernel") else array, order="C", copy=True)


def _loss_and_autograd(model, batch: Batch, tracked: dict) -> tuple[dict, dict]:
    with torch.enable_grad():
        terms = losses.losses(model.trace(batch), model.cfg)
        params = [p for p in tracked.values() if p.requires_grad]
        grads = torch.autograd.grad(terms["loss"], params, allow_unused=True)
    by_param = dict(zip(map(id, params), grads))
    return terms, {name: by_param.get(id(p)) for name, p in tracked.items()}


def loss_and_gradients(model, batch: Batch) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """(loss terms as floats, d loss / d tensor for log_scale and every weight as numpy arrays in
    the neutral layout); a tensor the loss does not reach, or a frozen one, has gradient None."""
    terms, grads = _loss_and_autograd(model, batch, variables(model))
    return ({k: float(v.detach()) for k, v in terms.items()},
            {k: None if g is None else to_keras_layout(k, g) for k, g in grads.items()})


def _as_keras_scalar(x: float) -> float:
    """A hyper-parameter as Keras uses it: rounded to its floatx, float32 (see models_tf.training)."""
    return float(np.float32(x))


class Adam:
    """Keras' Adam update, written out (parity.run.training.AdamConfig states the formula):
        alpha_t = lr·sqrt(1 − beta_2^t) / (1 − beta_1^t)
        m ← m + (g − m)(1 − beta_1);  v ← v + (g² − v)(1 − beta_2);  w ← w − alpha_t·m / (sqrt(v) + eps)
    Not torch.optim.Adam: it adds eps to sqrt(v̂) after bias correction, which at step 1 is an
    epsilon √(1 − beta_2) ≈ 32× smaller than Keras' (and its default eps is 1e-8, not 1e-7).
    Like Keras, the learning rate (a float32 variable there) and the betas inside the bias
    correction (cast through float32 by `ops.cast`) are rounded to float32 even for float64 weights;
    1 − beta and eps stay exact. 0.999 becomes 0.99900001287, so the first step is 6.7e-6 shorter
    than with exact constants — far above the 1e-9 float64 training budget (measured against
    keras.optimizers.Adam: this form agrees to rounding, the exact-constant form does not).
    The interface is Keras': `apply_gradients([(gradient, parameter), ...])`, one call per step."""

    def __init__(self, cfg: AdamConfig):
        self.cfg, self.iterations = cfg, 0
        self.m: dict[int, torch.Tensor] = {}  # by id(parameter), created on its first step
        self.v: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def apply_gradients(self, pairs) -> None:
        self.iterations += 1
        c = self.cfg
        lr, beta_1, beta_2 = (_as_keras_scalar(x) for x in (c.learning_rate, c.beta_1, c.beta_2))
        keep_1, keep_2, eps = 1 - c.beta_1, 1 - c.beta_2, c.epsilon  # Python floats: exact in float64
        for g, param in pairs:
            scalar = lambda x: torch.tensor(x, dtype=param.dtype, device=param.device)  # noqa: E731
            step = scalar(self.iterations)
            alpha = scalar(lr) * torch.sqrt(1 - scalar(beta_2) ** step) / (1 - scalar(beta_1) ** step)
            m = self.m.setdefault(id(param), torch.zeros_like(param))
            v = self.v.setdefault(id(param), torch.zeros_like(param))
            m.add_((g - m) * keep_1)
            v.add_((torch.square(g) - v) * keep_2)
            param.sub_((m * alpha) / (torch.sqrt(v) + eps))


def optimizer(cfg: AdamConfig) -> Adam:
    """The port's optimizer: Keras' Adam with the reference's hyper-parameters."""
    return Adam(cfg)


def train_steps(model, batch: Batch, steps: int, adam: AdamConfig) -> Iterator[dict]:
    """`steps` Adam steps on `batch`, updating `model` in place, one at a time as the records are
    read. Record k: {"loss": the loss before step k, "tensors": every trainable tensor after it
    (numpy, neutral layout)}; lazily, so a step-by-step comparison holds one step per backend."""
    tracked = variables(model)
    adam_optimizer = optimizer(adam)
    for _ in range(steps):
        terms, grads = _loss_and_autograd(model, batch, tracked)
        # a frozen tensor, or one the loss does not reach, keeps its value
        adam_optimizer.apply_gradients([(grads[k], v) for k, v in tracked.items() if grads[k] is not None])
        yield {"loss": float(terms["loss"].detach()),
               "tensors": {k: to_keras_layout(k, p) for k, p in tracked.items()}}
