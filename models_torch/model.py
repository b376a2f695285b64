"""The PyTorch port of the forward model: `build`, `forward_train`, `forward_infer`, `save`, `load`.

`log_scale` and the probe are registered buffers, so `state_dict` carries them; `save` writes
the state_dict with the config and `load` restores all of it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
import torch
from torch import nn

from parity.config import ForwardConfig
from parity.inputs.data import Batch, batch_problem, hard_probe_mask
from parity.stages import INFER_STAGES, STAGE_INPUTS, TRAIN_STAGES
from parity.inputs.weights import init_weights, validate_weights, weights_dtype
from parity.backends.effective import values_of
from models_torch import device as torch_device
from models_torch import losses, network, physics, training

CHECKPOINT_FORMAT = "ptycho-parity/models_torch/1"
_REAL = {"float32": torch.float32, "float64": torch.float64}
_COMPLEX = {"float32": torch.complex64, "float64": torch.complex128}


class ModelError(ValueError):
    """The model cannot run this input (dtype or shape mismatch, bad checkpoint)."""


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


def _channels_first(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)


class ForwardModel(nn.Module):
    """PtychoPINN forward model: diffraction → object patches → canvas → diffraction."""

    backend = "torch"

    def __init__(self, cfg: ForwardConfig, weights: Mapping[str, np.ndarray],
                 probe: Optional[np.ndarray] = None, dtype: Optional[str] = None,
                 device: str = "cpu", log_scale: Optional[float] = None):
        super().__init__()
        validate_weights(cfg, weights)
        wdtype = weights_dtype(weights)
        if dtype is not None and dtype != wdtype:
            raise ModelError(f"dtype={dtype!r} but the weights are {wdtype}; cast the weights "
                             f"explicitly (no silent down-casts)")
        self.cfg, self.dtype = cfg, wdtype
        self.flags = torch_device.configure(device)
        self.encoder = network.Encoder(cfg, weights, wdtype)
        self.decoder_amp = network.Decoder(cfg, weights, "decoder_amp",
                                           network.amp_activation(cfg.amp_activation), wdtype)
        self.decoder_phase = network.Decoder(cfg, weights, "decoder_phase",
                                             network.phase_activation, wdtype)
        # a parameter (trainable, as upstream); state_dict carries it under the same key
        self.log_scale = nn.Parameter(torch.tensor(cfg.log_scale if log_scale is None else log_scale,
                                                   dtype=_REAL[wdtype]))
        self.register_buffer("probe", None)
        if probe is not None:
            self._set_probe(probe)
        self.probe_mask = (torch.tensor(hard_probe_mask(cfg.N), dtype=_REAL[wdtype])
                           if cfg.probe_mask else None)
        self.to(device)
        self.device = torch.device(device)

    # -- state ------------------------------------------------------------------------------
    def _set_probe(self, probe) -> None:
        probe = torch.as_tensor(np.asarray(probe)) if not isinstance(probe, torch.Tensor) else probe
        if tuple(probe.shape) != (self.cfg.N, self.cfg.N):
            raise ModelError(f"probe must be ({self.cfg.N}, {self.cfg.N}), got {tuple(probe.shape)}")
        if probe.dtype != _COMPLEX[self.dtype]:
            # numpy's dtype names, as the reference words it
            raise ModelError(f"probe is {str(probe.dtype).removeprefix('torch.')} but the model is "
                             f"{self.dtype} (expects {str(_COMPLEX[self.dtype]).removeprefix('torch.')})")
        self.probe = probe.to(self.log_scale.device)

    def effective_config(self) -> dict:
        """The settings this model computes with, in ForwardConfig names: the config it was built
        with, or, loaded, the one its checkpoint holds (the config check compares it with the run's)."""
        return values_of(self.cfg)

    def state(self) -> dict:
        """The model state beside the weights: {"log_scale": float, "probe": complex array | None}."""
        return {"log_scale": float(self.log_scale.detach()),
                "probe": None if self.probe is None else self.probe.detach().cpu().numpy()}

    def weights(self) -> dict[str, np.ndarray]:
        """The neutral weight dict, read back from the layers (kernels in Keras layout)."""
        out: dict[str, np.ndarray] = {}
        for conv in network.conv_layers(self.encoder, self.decoder_amp, self.decoder_phase):
            out.update(conv.state())
        return out

    # -- forward ----------------------------------------------------------------------------
    def _check_batch(self, batch: Batch) -> None:
        problem = batch_problem(batch, self.cfg, self.dtype)
        if problem:
            raise ModelError(problem)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.log_scale.device)

    def _object_path(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The stages up to `object.trimmed`, shared by both paths (so they cannot drift)."""
        t = {"input.diffraction": self._tensor(batch.diffraction) * torch.tensor(
                 self.cfg.intensity_scale, dtype=_REAL[self.dtype]),
             "input.offsets": self._tensor(batch.offsets)}
        for name in INFER_STAGES[2:]:
            t[name] = STAGES[name](self, t)
        return t

    def trace(self, batch: Batch, stages=TRAIN_STAGES) -> dict[str, torch.Tensor]:
        """The stages as tensors (differentiable: the training code runs it with autograd on)."""
        self._check_batch(batch)
        if self.probe is None:  # first batch initialises the probe state
            self._set_probe(batch.probe)
        t = self._object_path(batch)
        if len(stages) > len(INFER_STAGES):
            for name in TRAIN_STAGES[len(INFER_STAGES):]:
                t[name] = STAGES[name](self, t)
        return t

    @torch.no_grad()
    def stage(self, name: str, inputs: Mapping[str, np.ndarray], batch: Batch) -> np.ndarray:
        """One stage computed from the given arrays of the stages it reads (parity.stages.STAGE_INPUTS:
        the reference's, for the stage-local error), with this model's layers and state; `batch`
        sets the probe state if no forward has yet."""
        if self.probe is None:
            self._set_probe(batch.probe)
        t = {k: self._tensor(np.asarray(inputs[k])) for k in STAGE_INPUTS[name]}
        return STAGES[name](self, t).detach().cpu().contiguous().numpy()

    def _mask(self):
        return None if self.probe_mask is None else self.probe_mask.to(self.probe.device)

    @torch.no_grad()
    def _run(self, batch: Batch, stages) -> dict[str, np.ndarray]:
        t = self.trace(batch, stages)
        return {name: t[name].detach().cpu().contiguous().numpy() for name in stages}

    def forward_train(self, batch: Batch) -> dict[str, np.ndarray]:
        """Every stage of docs/design.md §2, as numpy arrays in the canonical layout."""
        return self._run(batch, TRAIN_STAGES)

    def forward_infer(self, batch: Batch) -> dict[str, np.ndarray]:
        """The inference path, diffraction → object, up to `object.trimmed`."""
        return self._run(batch, INFER_STAGES)

    # -- training (models_torch.training) ---------------------------------------------------
    @torch.no_grad()
    def losses(self, batch: Batch) -> dict[str, float]:
        """The loss terms of `batch` (models_torch.losses), as floats."""
        return {k: float(v) for k, v in losses.losses(self.trace(batch), self.cfg).items()}

    def loss_and_gradients(self, batch: Batch):
        """(loss terms, gradient of the loss w.r.t. log_scale and every weight, neutral layout)."""
        return training.loss_and_gradients(self, batch)

    def train_steps(self, batch: Batch, steps: int, adam):
        """`steps` Adam steps on `batch`, in place, as the records are read: an iterator of one
        record per step (models_torch.training)."""
        return training.train_steps(self, batch, steps, adam)

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """torch.save of {format, config, dtype, state_dict}; state_dict holds log_scale and probe."""
        path = Path(path)
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        torch.save({"format": CHECKPOINT_FORMAT, "config": self.cfg.to_dict(), "dtype": self.dtype,
                    "state_dict": state}, path)
        return path


# Each derived stage from the stages it reads (t) and the model's layers and state: the one
# definition the forward paths and the stage-local error (`ForwardModel.stage`) share. The
# network runs channels-first inside; every stage is returned channels-last (docs/design.md §4).
STAGES = {
    "scaled_input": lambda m, t: t["input.diffraction"] / torch.exp(m.log_scale),
    "encoder.out": lambda m, t: _channels_last(m.encoder(_channels_first(t["scaled_input"]))),
    "decoder.amp": lambda m, t: _channels_last(m.decoder_amp(_channels_first(t["encoder.out"]))),
    "decoder.phase": lambda m, t: _channels_last(m.decoder_phase(_channels_first(t["encoder.out"]))),
    "object.patches": lambda m, t: physics.object_patches(t["decoder.amp"], t["decoder.phase"]),
    "object.canvas": lambda m, t: physics.object_canvas(t["object.patches"], t["input.offsets"], m.cfg),
    "object.trimmed": lambda m, t: physics.object_trimmed(t["object.canvas"], m.cfg),
    "object.extracted": lambda m, t: physics.object_extracted(t["object.canvas"], t["input.offsets"], m.cfg),
    "probe.illuminated": lambda m, t: physics.illuminate(t["object.extracted"], m.probe, m._mask()),
    "diffraction.amplitude": lambda m, t: physics.diffraction_amplitude(t["probe.illuminated"]),
    "diffraction.scaled": lambda m, t: physics.scale_diffraction(t["diffraction.amplitude"], m.log_scale),
    "diffraction.intensity": lambda m, t: physics.intensity(t["diffraction.scaled"]),
}


def build(cfg: ForwardConfig, weights: Mapping[str, np.ndarray], probe: Optional[np.ndarray] = None,
          dtype: Optional[str] = None, device: str = "cpu", log_scale: Optional[float] = None) -> ForwardModel:
    """Build the torch port from a config and neutral weights (dtype taken from the weights);
    `log_scale` restores that state (default: log of the config's intensity scale)."""
    return ForwardModel(cfg, weights, probe=probe, dtype=dtype, device=device, log_scale=log_scale)


def load(path: str | Path, device: str = "cpu") -> ForwardModel:
    """Restore a model written by `ForwardModel.save`: config, weights, log_scale and probe."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        fmt, cfg_dict, dtype, state = blob["format"], blob["config"], blob["dtype"], blob["state_dict"]
    except Exception as exc:  # torch.load raises many kinds for a corrupt file
        raise ModelError(f"{path}: not a models_torch checkpoint ({exc.__class__.__name__}: {exc})") from None
    if fmt != CHECKPOINT_FORMAT:
        raise ModelError(f"{path}: checkpoint format {fmt!r}, expected {CHECKPOINT_FORMAT!r}")
    cfg = ForwardConfig.from_dict(cfg_dict)
    # Build with placeholder weights of the right shapes, then restore the saved state by name.
    model = ForwardModel(cfg, init_weights(cfg, 0, dtype), probe=state.get("probe"), dtype=dtype,
                         device=device)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())  # torch words it over several lines; one line here
        raise ModelError(f"{path}: state_dict does not match the saved config: {detail}") from None
    if not math.isfinite(float(model.log_scale.detach())):
        raise ModelError(f"{path}: key 'log_scale' is not finite")
    return model
