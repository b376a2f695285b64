"""The numpy forward model: `build`, `forward_train`, `forward_infer`, `save`, `load`.

Computes in float64 whatever the weights' dtype; a float32 model rounds every stage to float32
at the end (float64 arithmetic rounded once — a reference for float32 runs, not an imitation of
float32 arithmetic). `log_scale` and the probe are model state and travel with the checkpoint.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from parity.inputs.checkpoint import read_npz_checkpoint, write_npz_checkpoint
from parity.config import ForwardConfig
from parity.inputs.data import Batch, batch_problem, hard_probe_mask
from parity.stages import INFER_STAGES, STAGE_INPUTS, TRAIN_STAGES
from parity.inputs.weights import WeightError, validate_weights, weights_dtype
from parity.backends.effective import values_of
from models_numpy import device as np_device
from models_numpy import losses, network, physics

CHECKPOINT_FORMAT = "ptycho-parity/models_numpy/1"
_COMPLEX = {"float32": np.complex64, "float64": np.complex128}


class ModelError(ValueError):
    """The model cannot run this input (dtype or shape mismatch, bad checkpoint)."""


class ForwardModel:
    """PtychoPINN forward model: diffraction → object patches → canvas → diffraction."""

    backend = "numpy"

    def __init__(self, cfg: ForwardConfig, weights: Mapping[str, np.ndarray],
                 probe: Optional[np.ndarray] = None, dtype: Optional[str] = None,
                 device: str = "cpu", log_scale: Optional[float] = None):
        validate_weights(cfg, weights)
        wdtype = weights_dtype(weights)
        if dtype is not None and dtype != wdtype:
            raise ModelError(f"dtype={dtype!r} but the weights are {wdtype}; cast the weights "
                             f"explicitly (no silent down-casts)")
        self.cfg, self.dtype, self.device = cfg, wdtype, device
        self.flags = np_device.configure(device)
        self.encoder = network.Encoder(cfg, weights)
        self.decoder_amp = network.Decoder(cfg, weights, "decoder_amp", network.amp_activation(cfg.amp_activation))
        self.decoder_phase = network.Decoder(cfg, weights, "decoder_phase", network.phase_activation)
        self.log_scale = float(cfg.log_scale if log_scale is None else log_scale)
        self.probe = None
        if probe is not None:
            self._set_probe(probe)
        self.probe_mask = hard_probe_mask(cfg.N) if cfg.probe_mask else None

    # -- state ------------------------------------------------------------------------------
    def _set_probe(self, probe: np.ndarray) -> None:
        probe = np.asarray(probe)
        if probe.shape != (self.cfg.N, self.cfg.N):
            raise ModelError(f"probe must be ({self.cfg.N}, {self.cfg.N}), got {probe.shape}")
        if probe.dtype != _COMPLEX[self.dtype]:
            raise ModelError(f"probe is {probe.dtype} but the model is {self.dtype} "
                             f"(expects {np.dtype(_COMPLEX[self.dtype]).name})")
        self.probe = probe.copy()

    def effective_config(self) -> dict:
        """The settings this model computes with, in ForwardConfig names: the config it was built
        with, or, loaded, the one its checkpoint holds (the config check compares it with the run's)."""
        return values_of(self.cfg)

    def state(self) -> dict:
        """The model state beside the weights: {"log_scale": float, "probe": complex array | None}."""
        return {"log_scale": self.log_scale, "probe": None if self.probe is None else self.probe.copy()}

    def weights(self) -> dict[str, np.ndarray]:
        """The neutral weight dict, in the model's dtype."""
        out: dict[str, np.ndarray] = {}
        for conv in network.conv_layers(self.encoder, self.decoder_amp, self.decoder_phase):
            out.update({k: v.astype(self.dtype) for k, v in conv.state().items()})
        return out

    # -- forward ----------------------------------------------------------------------------
    def _object_path(self, batch: Batch) -> dict[str, np.ndarray]:
        """The stages up to `object.trimmed`, shared by both paths (so they cannot drift)."""
        t = {"input.diffraction": np.asarray(batch.diffraction, dtype=np.float64) * self.cfg.intensity_scale,
             "input.offsets": np.asarray(batch.offsets, dtype=np.float64)}
        for name in INFER_STAGES[2:]:
            t[name] = STAGES[name](self, t)
        return t

    def _run(self, batch: Batch, stages) -> dict[str, np.ndarray]:
        problem = batch_problem(batch, self.cfg, self.dtype)
        if problem:
            raise ModelError(problem)
        if self.probe is None:  # first batch initialises the probe state
            self._set_probe(batch.probe)
        t = self._object_path(batch)
        if len(stages) > len(INFER_STAGES):
            for name in TRAIN_STAGES[len(INFER_STAGES):]:
                t[name] = STAGES[name](self, t)
        return {name: _as(t[name], self.dtype) for name in stages}

    def stage(self, name: str, inputs: Mapping[str, np.ndarray], batch: Batch) -> np.ndarray:
        """One stage computed from the given arrays of the stages it reads (parity.stages.STAGE_INPUTS:
        the reference's, for the stage-local error), in float64 inside as every stage here; `batch`
        sets the probe state if no forward has yet."""
        if self.probe is None:
            self._set_probe(batch.probe)
        t = {k: _wide(inputs[k]) for k in STAGE_INPUTS[name]}
        return _as(STAGES[name](self, t), self.dtype)

    def forward_train(self, batch: Batch) -> dict[str, np.ndarray]:
        """Every stage of docs/design.md §2, as numpy arrays in the canonical layout."""
        return self._run(batch, TRAIN_STAGES)

    def forward_infer(self, batch: Batch) -> dict[str, np.ndarray]:
        """The inference path, diffraction → object, up to `object.trimmed`."""
        return self._run(batch, INFER_STAGES)

    # -- training -----------------------------------------------------------------------------
    def losses(self, batch: Batch) -> dict[str, float]:
        """The loss terms of `batch` (models_numpy.losses): the third opinion on the loss value.
        No gradients here; the numpy backend has no autodiff."""
        return losses.losses(self.forward_train(batch), self.cfg)

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """One .npz (parity.inputs.checkpoint): config, weights by canonical name, log_scale and probe state."""
        return write_npz_checkpoint(path, CHECKPOINT_FORMAT, self.cfg, self.dtype, self.weights(),
                                    self.log_scale, self.probe)


def _wide(array) -> np.ndarray:
    array = np.asarray(array)
    return array.astype(np.complex128) if np.iscomplexobj(array) else array.astype(np.float64)


# Each derived stage from the stages it reads (t) and the model's layers and state: the one
# definition the forward paths and the stage-local error (`ForwardModel.stage`) share.
STAGES = {
    "scaled_input": lambda m, t: t["input.diffraction"] / math.exp(m.log_scale),
    "encoder.out": lambda m, t: m.encoder(t["scaled_input"]),
    "decoder.amp": lambda m, t: m.decoder_amp(t["encoder.out"]),
    "decoder.phase": lambda m, t: m.decoder_phase(t["encoder.out"]),
    "object.patches": lambda m, t: physics.object_patches(t["decoder.amp"], t["decoder.phase"]),
    "object.canvas": lambda m, t: physics.object_canvas(t["object.patches"], t["input.offsets"], m.cfg),
    "object.trimmed": lambda m, t: physics.object_trimmed(t["object.canvas"], m.cfg),
    "object.extracted": lambda m, t: physics.object_extracted(t["object.canvas"], t["input.offsets"], m.cfg),
    "probe.illuminated": lambda m, t: physics.illuminate(t["object.extracted"], m.probe.astype(np.complex128),
                                                         m.probe_mask),
    "diffraction.amplitude": lambda m, t: physics.diffraction_amplitude(t["probe.illuminated"]),
    "diffraction.scaled": lambda m, t: physics.scale_diffraction(t["diffraction.amplitude"], m.log_scale),
    "diffraction.intensity": lambda m, t: physics.intensity(t["diffraction.scaled"]),
}


def _as(array: np.ndarray, dtype: str) -> np.ndarray:
    if np.iscomplexobj(array):
        return array.astype(_COMPLEX[dtype])
    return array.astype(dtype)


def build(cfg: ForwardConfig, weights: Mapping[str, np.ndarray], probe: Optional[np.ndarray] = None,
          dtype: Optional[str] = None, device: str = "cpu", log_scale: Optional[float] = None) -> ForwardModel:
    """Build the numpy model from a config and neutral weights (dtype taken from the weights)."""
    return ForwardModel(cfg, weights, probe=probe, dtype=dtype, device=device, log_scale=log_scale)


def load(path: str | Path, device: str = "cpu") -> ForwardModel:
    """Restore a model written by `ForwardModel.save`: config, weights, log_scale and probe."""
    ckpt = read_npz_checkpoint(path, CHECKPOINT_FORMAT, ModelError, "models_numpy")
    try:
        return ForwardModel(ckpt.config, ckpt.weights, probe=ckpt.probe, dtype=ckpt.dtype, device=device,
                            log_scale=ckpt.log_scale)
    except WeightError as exc:  # a missing or mis-shaped tensor: name the file too
        raise ModelError(f"{path}: {exc}") from None
