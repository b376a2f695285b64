"""The training losses (TensorFlow reference), docs/design.md §11.

Both compare the model's predicted diffraction with the observed one, s·X = `input.diffraction`:
  loss.nll  = mean(pred − obs·log pred), pred = `diffraction.intensity`, obs = (s·X)²
  loss.mae  = mean|`diffraction.scaled` − s·X|
  loss      = nll_weight·loss.nll + mae_weight·loss.mae
Means run over every element (B, N, N, C): Keras' "sum over batch size" reduction of an
element-wise loss. Each term is a scalar tensor of the model's dtype.
"""

from __future__ import annotations

import tensorflow as tf

from parity.config import ForwardConfig


def poisson_nll(pred: tf.Tensor, obs: tf.Tensor) -> tf.Tensor:
    """mean(pred − obs·log pred): upstream's `tf.nn.log_poisson_loss(obs, log pred)`, which
    leaves out the Stirling term. (B,N,N,C) ×2 → scalar."""
    return tf.reduce_mean(tf.nn.log_poisson_loss(obs, tf.math.log(pred)))


def mae(pred: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """mean|pred − target|: (B,N,N,C) ×2 → scalar."""
    return tf.reduce_mean(tf.abs(pred - target))


def losses(trace: dict, cfg: ForwardConfig) -> dict[str, tf.Tensor]:
    """{"loss", "loss.nll", "loss.mae"} from a training-path trace of tensors."""
    observed = trace["input.diffraction"]
    nll = poisson_nll(trace["diffraction.intensity"], tf.square(observed))
    mean_abs = mae(trace["diffraction.scaled"], observed)
    return {"loss": cfg.nll_weight * nll + cfg.mae_weight * mean_abs, "loss.nll": nll, "loss.mae": mean_abs}
