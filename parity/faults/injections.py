"""The injections of the fault catalogue (`parity.faults.catalogue`): each a context manager
that patches the torch port (or, for the data fault, the fixture's reading) from outside for the
duration of a `with`; the models themselves have no switch."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, ContextManager, Iterator

import numpy as np


@contextlib.contextmanager
def patched(target, name: str, value) -> Iterator[None]:
    """setattr for the duration of the block, restored whatever happens."""
    original = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, original)


# -- injections (all into the torch port, the side under test; fault 13 is on the data side) ----

def _torch():
    import models_torch
    import models_torch.model as model
    import models_torch.network as network
    import models_torch.physics as physics

    return models_torch, model, network, physics


def _wrap(module, name: str, make: Callable[[Callable], Callable]) -> ContextManager:
    return patched(module, name, make(getattr(module, name)))


def merge_translation_sign():
    _, _, _, physics = _torch()
    return _wrap(physics, "object_canvas", lambda f: lambda patches, offsets, cfg: f(patches, -offsets, cfg))


def offsets_xy_swapped():
    _, model, _, _ = _torch()
    return _wrap(model.ForwardModel, "_object_path", lambda f: lambda self, batch: f(
        self, dataclasses.replace(batch, offsets=np.ascontiguousarray(batch.offsets[:, :, ::-1, :]))))


def canvas_without_jitter_buffer():
    _, _, _, physics = _torch()
    return _wrap(physics, "object_canvas", lambda f: lambda patches, offsets, cfg: f(
        patches, offsets, cfg.replace(max_position_jitter=0)))


def merge_without_epsilon():
    _, _, _, physics = _torch()
    return patched(physics, "MERGE_EPS", 0.0)


def merge_without_centre_mask():
    import torch

    _, _, _, physics = _torch()
    return patched(physics, "centre_window_mask",
                   lambda N, dtype, device=None: torch.ones((N, N), dtype=dtype, device=device))


def missing_fftshift():
    import torch

    _, _, _, physics = _torch()
    return _wrap(physics, "diffraction_amplitude", lambda f: lambda psi: torch.fft.ifftshift(f(psi), dim=(1, 2)))


def fft_norm_backward():
    _, _, _, physics = _torch()
    return _wrap(physics, "diffraction_amplitude", lambda f: lambda psi: f(psi) * float(np.sqrt(psi.shape[1] * psi.shape[2])))


def intensity_scale_inverted():
    _, _, _, physics = _torch()
    return _wrap(physics, "scale_diffraction", lambda f: lambda amplitude, log_scale: f(amplitude, -log_scale))


def log_scale_not_restored():
    package, _, _, _ = _torch()

    def make(load):
        def forgetful(path, device="cpu"):
            import torch

            loaded = load(path, device=device)
            with torch.no_grad():  # log_scale is a trainable parameter
                loaded.log_scale.fill_(0.0)
            return loaded
        return forgetful

    return _wrap(package, "load", make)


def amp_activation_silu():
    import torch.nn.functional as F

    _, _, network, _ = _torch()
    return _wrap(network, "amp_activation", lambda f: lambda name: F.silu if name == "sigmoid" else f(name))


def kernel_axes_swapped():
    import torch

    _, _, network, _ = _torch()

    def make(init):
        def init_swapped(self, weights, name, relu, dtype):
            init(self, weights, name, relu, dtype)
            with torch.no_grad():  # (out, in, kw, kh): the kernel's two spatial axes swapped
                self.conv.weight.copy_(self.conv.weight.transpose(2, 3).clone())
        return init_swapped

    return _wrap(network.Conv3x3, "__init__", make)


def avg_pool_for_max_pool():
    import torch.nn.functional as F

    _, _, network, _ = _torch()

    def forward(self, x):
        for conv in self.convs:
            x = conv(x)
        return F.avg_pool2d(x, 2)

    return patched(network.ConvPoolBlock, "forward", forward)


def channels_axes_confused():
    _, model, _, _ = _torch()
    return patched(model, "_channels_first", lambda x: x.permute(0, 3, 2, 1))  # (B,C,W,H), rows ↔ columns


def probe_conjugated():
    _, _, _, physics = _torch()
    return _wrap(physics, "illuminate", lambda f: lambda extracted, probe, mask: f(extracted, probe.conj(), mask))


def probe_mask_on():
    import torch

    from parity.inputs.data import hard_probe_mask

    _, _, _, physics = _torch()

    def make(illuminate):
        def masked(extracted, probe, mask):
            if mask is None:
                mask = torch.tensor(hard_probe_mask(probe.shape[0]), dtype=probe.real.dtype, device=probe.device)
            return illuminate(extracted, probe, mask)
        return masked

    return _wrap(physics, "illuminate", make)


def object_big_flipped():
    package, _, _, _ = _torch()
    return _wrap(package, "build", lambda f: lambda cfg, weights, **kw: f(
        cfg.replace(object_big=not cfg.object_big), weights, **kw))


def heads_swapped():
    package, _, _, _ = _torch()

    def make(build):
        def swapped(cfg, weights, **kw):
            model = build(cfg, weights, **kw)
            model.decoder_amp.head, model.decoder_phase.head = model.decoder_phase.head, model.decoder_amp.head
            return model
        return swapped

    return _wrap(package, "build", make)


@contextlib.contextmanager
def uint16_squared_before_cast():
    """The loader squares raw uint16 counts in their own dtype (wrapping above 255) before the
    float64 cast. Data side: both backends read the same wrong inputs."""
    from parity.inputs import cases, data

    def loader(path, key, raw):
        if np.issubdtype(raw.dtype, np.integer):
            squared = (raw * raw).astype(np.float64)  # the bug: raw * raw overflows in uint16
            return np.sqrt(np.sqrt(squared)), True
        return honest(path, key, raw)

    honest = data._diffraction_amplitude
    cases._load.cache_clear()
    try:
        with patched(data, "_diffraction_amplitude", loader):
            yield
    finally:
        cases._load.cache_clear()


# -- training faults (issue: the port must also learn like the reference) ------------------------

def _torch_training():
    import models_torch.losses as losses
    import models_torch.training as training

    return losses, training


def loss_stirling_term():
    """The full Poisson log-likelihood: + obs·log obs − obs + ½·log(2π·obs) where obs > 1 (what
    torch.nn.PoissonNLLLoss(full=True) adds)."""
    import math

    import torch

    losses, _ = _torch_training()

    def with_stirling(pred, obs):
        stirling = obs * torch.log(obs) - obs + 0.5 * torch.log(2 * math.pi * obs)
        return torch.mean(pred - obs * torch.log(pred) + torch.where(obs > 1, stirling, torch.zeros_like(obs)))

    return patched(losses, "poisson_nll", with_stirling)


def loss_sum_reduction():
    import torch

    losses, _ = _torch_training()
    return patched(losses, "poisson_nll", lambda pred, obs: torch.sum(pred - obs * torch.log(pred)))


def adam_epsilon_torch_default():
    _, training = _torch_training()

    def make(init):
        def init_eps(self, cfg):
            init(self, dataclasses.replace(cfg, epsilon=1e-8))
        return init_eps

    return _wrap(training.Adam, "__init__", make)


def log_scale_frozen():
    package, _, _, _ = _torch()

    def make(build):
        def frozen(cfg, weights, **kw):
            model = build(cfg, weights, **kw)
            model.log_scale.requires_grad_(False)
            return model
        return frozen

    return _wrap(package, "build", make)


def mae_weight_ignored():
    losses, _ = _torch_training()

    def make(total):
        def nll_only(trace, cfg):
            return total(trace, cfg.replace(mae_weight=0.0))
        return nll_only

    return _wrap(losses, "losses", make)
