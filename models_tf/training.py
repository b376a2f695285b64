"""Gradients and Adam steps (TensorFlow reference), docs/design.md §11.

The trainable tensors are `log_scale` (trainable, as upstream) and every conv kernel and bias,
by canonical name; gradients come back in the neutral (Keras) layout.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import tensorflow as tf

from parity.inputs.data import Batch
from parity.run.training import LOG_SCALE, AdamConfig
from models_tf import losses, network


def variables(model) -> dict[str, tf.Variable]:
    """{"log_scale" | canonical weight name: variable} of a models_tf.ForwardModel."""
    out = {LOG_SCALE: model.log_scale}
    for conv in network.conv_layers(model.encoder, model.decoder_amp, model.decoder_phase):
        out.update(conv.variables())
    return out


def _loss_and_tape_gradients(model, batch: Batch, tracked: dict) -> tuple[dict, dict]:
    with tf.device(model.flags["tf_device"]):
        with tf.GradientTape() as tape:
            terms = losses.losses(model.trace(batch), model.cfg)
        grads = tape.gradient(terms["loss"], list(tracked.values()))
    return terms, dict(zip(tracked, grads))


def loss_and_gradients(model, batch: Batch) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """(loss terms as floats, d loss / d tensor for log_scale and every weight as numpy arrays);
    a tensor the loss does not reach has gradient None."""
    terms, grads = _loss_and_tape_gradients(model, batch, variables(model))
    return ({k: float(v.numpy()) for k, v in terms.items()},
            {k: None if g is None else np.asarray(g.numpy()) for k, g in grads.items()})


def optimizer(cfg: AdamConfig):
    """The reference trains with keras.optimizers.Adam itself (upstream's optimizer), with the
    hyper-parameters spelled out. Keras keeps the learning rate in a float32 variable and casts
    beta_1, beta_2 through float32 for the bias correction, so with float64 weights it still steps
    with float32-rounded lr and betas there (1 − beta and epsilon stay exact); the port copies that."""
    import keras

    return keras.optimizers.Adam(learning_rate=cfg.learning_rate, beta_1=cfg.beta_1, beta_2=cfg.beta_2,
                                 epsilon=cfg.epsilon, amsgrad=False)


def train_steps(model, batch: Batch, steps: int, adam: AdamConfig) -> Iterator[dict]:
    """`steps` Adam steps on `batch`, updating `model` in place, one at a time as the records are
    read. Record k: {"loss": the loss before step k, "tensors": every trainable tensor after it
    (numpy, neutral layout)}; lazily, so a step-by-step comparison holds one step per backend."""
    tracked = variables(model)
    adam_optimizer = optimizer(adam)
    for _ in range(steps):
        with tf.device(model.flags["tf_device"]):  # entered per step: never held across a yield
            terms, grads = _loss_and_tape_gradients(model, batch, tracked)
            # a tensor the loss does not reach keeps its value, as in Keras' fit
            adam_optimizer.apply_gradients([(grads[k], v) for k, v in tracked.items() if grads[k] is not None])
            record = {"loss": float(terms["loss"].numpy()),
                      "tensors": {k: np.asarray(v.numpy()) for k, v in tracked.items()}}
        yield record
