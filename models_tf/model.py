"""The TensorFlow reference forward model: `build`, `forward_train`, `forward_infer`, `save`, `load`.

`log_scale` and the probe are model state (tf.Variables): `save` writes them with the config and
the weights read back from the layers, and `load` restores all of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

import numpy as np
import tensorflow as tf

from parity.inputs.checkpoint import read_npz_checkpoint, write_npz_checkpoint
from parity.config import ForwardConfig
from parity.inputs.data import Batch, batch_problem, hard_probe_mask
from parity.stages import INFER_STAGES, STAGE_INPUTS, TRAIN_STAGES
from parity.inputs.weights import WeightError, validate_weights, weights_dtype
from parity.backends.effective import values_of
from models_tf import device as tf_device
from models_tf import losses, network, physics, training

CHECKPOINT_FORMAT = "ptycho-parity/models_tf/1"


class ModelError(ValueError):
    """The model cannot run this input (dtype or shape mismatch, bad checkpoint)."""


class ForwardModel:
    """PtychoPINN forward model: diffraction → object patches → canvas → diffraction."""

    backend = "tensorflow"

    def __init__(self, cfg: ForwardConfig, weights: Mapping[str, np.ndarray],
                 probe: Optional[np.ndarray] = None, dtype: Optional[str] = None,
                 device: str = "cpu", log_scale: Optional[float] = None):
        validate_weights(cfg, weights)
        wdtype = weights_dtype(weights)
        if dtype is not None and dtype != wdtype:
            raise ModelError(f"dtype={dtype!r} but the weights are {wdtype}; cast the weights "
                             f"explicitly (no silent down-casts)")
        self.cfg, self.dtype, self.device = cfg, wdtype, device
        self.complex_dtype = tf.complex64 if wdtype == "float32" else tf.complex128
        self.flags = tf_device.configure(device)
        with tf.device(self.flags["tf_device"]):
            self.encoder = network.Encoder(cfg, weights, wdtype)
            self.decoder_amp = network.Decoder(cfg, weights, "decoder_amp",
                                               network.amp_activation(cfg.amp_activation), wdtype)
            self.decoder_phase = network.Decoder(cfg, weights, "decoder_phase",
                                                 network.phase_activation, wdtype)
            self.log_scale = tf.Variable(cfg.log_scale if log_scale is None else log_scale,
                                         dtype=wdtype, trainable=True, name="log_scale")
            self.probe = None
            if probe is not None:
                self._set_probe(probe)
            self.probe_mask = (tf.constant(hard_probe_mask(cfg.N), dtype=wdtype)
                               if cfg.probe_mask else None)

    # -- state ------------------------------------------------------------------------------
    def _set_probe(self, probe: np.ndarray) -> None:
        probe = np.asarray(probe)
        if probe.shape != (self.cfg.N, self.cfg.N):
            raise ModelError(f"probe must be ({self.cfg.N}, {self.cfg.N}), got {probe.shape}")
        if probe.dtype != self.complex_dtype.as_numpy_dtype:
            raise ModelError(f"probe is {probe.dtype} but the model is {self.dtype} "
                             f"(expects {self.complex_dtype.name})")
        self.probe = tf.Variable(probe, trainable=False, name="probe")

    def effective_config(self) -> dict:
        """The settings this model computes with, in ForwardConfig names: the config it was built
        with, or, loaded, the one its checkpoint holds (the config check compares it with the run's)."""
        return values_of(self.cfg)

    def state(self) -> dict:
        """The model state beside the weights: {"log_scale": float, "probe": complex array | None}."""
        return {"log_scale": float(self.log_scale.numpy()),
                "probe": None if self.probe is None else self.probe.numpy()}

    def weights(self) -> dict[str, np.ndarray]:
        """The neutral weight dict, read back from the layers."""
        out: dict[str, np.ndarray] = {}
        for conv in network.conv_layers(self.encoder, self.decoder_amp, self.decoder_phase):
            out.update(conv.state())
        return out

    # -- forward ----------------------------------------------------------------------------
    def _check_batch(self, batch: Batch) -> None:
        problem = batch_problem(batch, self.cfg, self.dtype)
        if problem:
            raise ModelError(problem)

    def _object_path(self, batch: Batch) -> dict[str, tf.Tensor]:
        """The stages up to `object.trimmed`, shared by both paths (so they cannot drift)."""
        t = {"input.diffraction": tf.constant(batch.diffraction) * tf.constant(self.cfg.intensity_scale,
                                                                                dtype=self.dtype),
             "input.offsets": tf.constant(batch.offsets)}
        for name in INFER_STAGES[2:]:
            t[name] = STAGES[name](self, t)
        return t

    def trace(self, batch: Batch, stages=TRAIN_STAGES) -> dict[str, tf.Tensor]:
        """The stages as tensors (differentiable: the training code runs it under a GradientTape)."""
        self._check_batch(batch)
        with tf.device(self.flags["tf_device"]):
            if self.probe is None:  # first batch initialises the probe state
                self._set_probe(batch.probe)
            t = self._object_path(batch)
            if len(stages) > len(INFER_STAGES):
                for name in TRAIN_STAGES[len(INFER_STAGES):]:
                    t[name] = STAGES[name](self, t)
        return t

    def stage(self, name: str, inputs: Mapping[str, np.ndarray], batch: Batch) -> np.ndarray:
        """One stage computed from the given arrays of the stages it reads (parity.stages.STAGE_INPUTS:
        the reference's, for the stage-local error), with this model's layers and state; `batch`
        sets the probe state if no forward has yet."""
        with tf.device(self.flags["tf_device"]):
            if self.probe is None:
                self._set_probe(batch.probe)
            t = {k: tf.constant(np.asarray(inputs[k])) for k in STAGE_INPUTS[name]}
            return STAGES[name](self, t).numpy()

    def _run(self, batch: Batch, stages) -> dict[str, np.ndarray]:
        t = self.trace(batch, stages)
        return {name: t[name].numpy() for name in stages}

    def forward_train(self, batch: Batch) -> dict[str, np.ndarray]:
        """Every stage of docs/design.md §2, as numpy arrays in the canonical layout."""
        return self._run(batch, TRAIN_STAGES)

    def forward_infer(self, batch: Batch) -> dict[str, np.ndarray]:
        """The inference path, diffraction → object, up to `object.trimmed`."""
        return self._run(batch, INFER_STAGES)

    # -- training (models_tf.training) ------------------------------------------------------
    def losses(self, batch: Batch) -> dict[str, float]:
        """The loss terms of `batch` (models_tf.losses), as floats."""
        return {k: float(v.numpy()) for k, v in losses.losses(self.trace(batch), self.cfg).items()}

    def loss_and_gradients(self, batch: Batch):
        """(loss terms, gradient of the loss w.r.t. log_scale and every weight, neutral layout)."""
        return training.loss_and_gradients(self, batch)

    def train_steps(self, batch: Batch, steps: int, adam):
        """`steps` Adam steps on `batch`, in place, as the records are read: an iterator of one
        record per step (models_tf.training)."""
        return training.train_steps(self, batch, steps, adam)

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """One .npz (parity.inputs.checkpoint): config, weights by canonical name, log_scale and probe state."""
        return write_npz_checkpoint(path, CHECKPOINT_FORMAT, self.cfg, self.dtype, self.weights(),
                                    float(self.log_scale.numpy()), None if self.probe is None else self.probe.numpy())


# Each derived stage from the stages it reads (t) and the model's layers and state: the one
# definition the forward paths and the stage-local error (`ForwardModel.stage`) share.
STAGES = {
    "scaled_input": lambda m, t: t["input.diffraction"] / tf.exp(m.log_scale),
    "encoder.out": lambda m, t: m.encoder(t["scaled_input"]),
    "decoder.amp": lambda m, t: m.decoder_amp(t["encoder.out"]),
    "decoder.phase": lambda m, t: m.decoder_phase(t["encoder.out"]),
    "object.patches": lambda m, t: physics.object_patches(t["decoder.amp"], t["decoder.phase"]),
    "object.canvas": lambda m, t: physics.object_canvas(t["object.patches"], t["input.offsets"], m.cfg),
    "object.trimmed": lambda m, t: physics.object_trimmed(t["object.canvas"], m.cfg),
    "object.extracted": lambda m, t: physics.object_extracted(t["object.canvas"], t["input.offsets"], m.cfg),
    "probe.illuminated": lambda m, t: physics.illuminate(t["object.extracted"], m.probe, m.probe_mask),
    "diffraction.amplitude": lambda m, t: physics.diffraction_amplitude(t["probe.illuminated"]),
    "diffraction.scaled": lambda m, t: physics.scale_diffraction(t["diffraction.amplitude"], m.log_scale),
    "diffraction.intensity": lambda m, t: physics.intensity(t["diffraction.scaled"]),
}


def build(cfg: ForwardConfig, weights: Mapping[str, np.ndarray], probe: Optional[np.ndarray] = None,
          dtype: Optional[str] = None, device: str = "cpu", log_scale: Optional[float] = None) -> ForwardModel:
    """Build the reference model from a config and neutral weights (dtype taken from the weights);
    `log_scale` restores that state (default: log of the config's intensity scale)."""
    return ForwardModel(cfg, weights, probe=probe, dtype=dtype, device=device, log_scale=log_scale)


def load(path: str | Path, device: str = "cpu") -> ForwardModel:
    """Restore a model written by `ForwardModel.save`: config, weights, log_scale and probe."""
    ckpt = read_npz_checkpoint(path, CHECKPOINT_FORMAT, ModelError, "models_tf")
    try:
        return ForwardModel(ckpt.config, ckpt.weights, probe=ckpt.probe, dtype=ckpt.dtype, device=device,
                            log_scale=ckpt.log_scale)
    except WeightError as exc:  # a missing or mis-shaped tensor: name the file too
        raise ModelError(f"{path}: {exc}") from None
