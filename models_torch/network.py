"""The U-Net half of the forward model (PyTorch port): encoder, two decoders and their last
stage, built from a `ForwardConfig` and neutral weights loaded by canonical name.

Layout: channels-first (B, C, H, W) inside; the model returns the trace channels-last.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from parity.inputs import data
from parity.config import ForwardConfig
from parity.inputs.weights import (PAD_OBJECT_OUTER, decoder_filters, encoder_filters, head_branches)

_TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + eˣ) with TensorFlow's thresholds (x itself above −log(eps)−2, eˣ below
    log(eps)+2), not torch's threshold=20, so both backends compute the same function."""
    threshold = math.log(torch.finfo(x.dtype).eps) + 2.0
    return torch.where(x > -threshold, x,
                       torch.where(x < threshold, torch.exp(x), torch.log1p(torch.exp(x))))


def amp_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Activation of the amplitude decoder: sigmoid | swish (x·σ(x)) | softplus | relu."""
    return {"sigmoid": torch.sigmoid, "swish": F.silu, "softplus": softplus, "relu": F.relu}[name]


def phase_activation(x: torch.Tensor) -> torch.Tensor:
    """Activation of the phase decoder: π·tanh(x), phase in (−π, π)."""
    return math.pi * torch.tanh(x)


def centre_window_mask(N: int, dtype: torch.dtype, device=None) -> torch.Tensor:
    """(N, N): 1 inside the central N/2 window, 0 outside (geometry from parity.inputs.data)."""
    return torch.tensor(data.centre_window_mask(N), dtype=dtype, device=device)


def convolve_per_sample(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """`conv(x)` one sample of the batch at a time: (B,Cin,H,W) → (B,Cout,H,W). On the CPU a
    float64 convolution (oneDNN has no float64 kernel) unfolds its whole batch into one buffer of
    B·9·Cin·H·W values (im2col: 151 MB for 8 samples of 64 channels at 64×64) and computes each
    sample's product from it; one sample at a time it computes the same products from a buffer B
    times smaller. With one thread (a test worker's) the forward is bit for bit the whole batch's;
    with more, each product is split between the threads otherwise and a stage moves by up to
    7e-15 of its largest value (gs1 and gs2-big, 2 threads). Measured on 2 cores, one process,
    gs2-big: a forward and a loss-and-gradients peaked at 840–846 MB before, 614–683 MB after; a
    20-sample forward at 1018–1195 MB before, 618–670 MB after, in 0.77 s instead of 1.05 s. The
    weight gradients sum the samples in another order: they move by ≈ 1e-15 relative."""
    if x.shape[0] <= 1:
        return conv(x)
    return torch.cat([conv(sample) for sample in x.split(1)])


class Conv3x3(nn.Module):
    """conv 3×3 'same', stride 1, + bias, optional relu: (B,Cin,H,W) → (B,Cout,H,W)."""

    def __init__(self, weights: Mapping[str, np.ndarray], name: str, relu: bool, dtype: str):
        super().__init__()
        kernel, bias = weights[f"{name}.kernel"], weights[f"{name}.bias"]
        self.name, self.relu = name, relu
        # TF 'same' for a 3x3 stride-1 kernel pads 1 on every side: torch padding=1
        # no random initialisation to overwrite: the given weights are copied in below
        self.conv = nn.utils.skip_init(nn.Conv2d, kernel.shape[2], kernel.shape[3], 3, padding=1,
                                       dtype=_TORCH_DTYPES[dtype])
        with torch.no_grad():
            # Keras kernel (kh, kw, in, out) -> torch (out, in, kh, kw)
            self.conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))))
            self.conv.bias.copy_(torch.from_numpy(np.asarray(bias)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = convolve_per_sample(self.conv, x) if x.dtype == torch.float64 and x.device.type == "cpu" else self.conv(x)
        return F.relu(x) if self.relu else x

    def variables(self) -> dict[str, nn.Parameter]:
        """{canonical name: parameter}; the kernel is (out, in, kh, kw), see `to_keras_layout`."""
        return {f"{self.name}.kernel": self.conv.weight, f"{self.name}.bias": self.conv.bias}

    def state(self) -> dict[str, np.ndarray]:
        kernel = self.conv.weight.detach().cpu().numpy().transpose(2, 3, 1, 0)
        return {f"{self.name}.kernel": np.ascontiguousarray(kernel),
                f"{self.name}.bias": self.conv.bias.detach().cpu().numpy()}


class ConvPoolBlock(nn.Module):
    """[conv3×3 relu, conv3×3 relu, maxpool 2×2 'same']: (B,Cin,H,W) → (B,F,H/2,W/2)."""

    def __init__(self, weights, name: str, dtype: str):
        super().__init__()
        self.convs = nn.ModuleList([Conv3x3(weights, f"{name}.conv{i}", True, dtype) for i in range(2)])

    def forward(self, x):
        for conv in self.convs:
            x = conv(x)
        # TF max-pool 2x2 'same' on an even size needs no padding: equal to torch's plain pool
        return F.max_pool2d(x, 2)


class ConvUpBlock(nn.Module):
    """[conv3×3 relu, conv3×3 relu, nearest upsample ×2]: (B,Cin,H,W) → (B,F,2H,2W)."""

    def __init__(self, weights, name: str, dtype: str):
        super().__init__()
        self.convs = nn.ModuleList([Conv3x3(weights, f"{name}.conv{i}", True, dtype) for i in range(2)])

    def forward(self, x):
        for conv in self.convs:
            x = conv(x)
        # nearest x2 = each pixel copied into a 2x2 block, as Keras UpSampling2D
        return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


class Encoder(nn.Module):
    """`encoder.out`: blocks of ConvPoolBlock, filters nfs·[32,64,128] at N=64:
    (B,C,N,N) → (B,F,N/8,N/8)."""

    def __init__(self, cfg: ForwardConfig, weights, dtype: str):
        super().__init__()
        self.blocks = nn.ModuleList([ConvPoolBlock(weights, f"encoder.block{i}", dtype)
                                     for i in range(len(encoder_filters(cfg)))])

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


class DecoderHead(nn.Module):
    """Decoder last stage (docs/design.md §2.3), → (B,Co,N,N).

    pad_object: x1 = act(conv1(f[:, :-4])) at N/2, zero-padded N/4 on every side; with
    probe_big also x2 = swish(conv2(up(f[:, -4:]))) · border_mask, output x1 + x2.
    Without pad_object: act(conv2(up(f))) at full N.
    """

    def __init__(self, cfg: ForwardConfig, weights, prefix: str, act, dtype: str):
        super().__init__()
        self.cfg, self.act = cfg, act
        use_conv1, use_up = head_branches(cfg)
        self.conv1 = Conv3x3(weights, f"{prefix}.conv1", False, dtype) if use_conv1 else None
        self.up = ConvUpBlock(weights, f"{prefix}.up", dtype) if use_up else None
        self.conv2 = Conv3x3(weights, f"{prefix}.conv2", False, dtype) if use_up else None
        self.register_buffer("border", 1.0 - centre_window_mask(cfg.N, _TORCH_DTYPES[dtype])[None, None],
                             persistent=False)

    def forward(self, features):
        N = self.cfg.N
        if not self.cfg.pad_object:
            return self.act(self.conv2(self.up(features)))
        x1 = self.act(self.conv1(features[:, :-PAD_OBJECT_OUTER]))
        q = N // 4
        x1 = F.pad(x1, (q, q, q, q))
        if self.up is None:
            return x1
        x2 = F.silu(self.conv2(self.up(features[:, -PAD_OBJECT_OUTER:])))
        return x1 + x2 * self.border


class Decoder(nn.Module):
    """`decoder.amp` / `decoder.phase`: ConvUpBlocks (filters nfs·[64,32] at N=64), then the
    DecoderHead: (B,F,N/8,N/8) → (B,Co,N,N)."""

    def __init__(self, cfg: ForwardConfig, weights, prefix: str, act, dtype: str):
        super().__init__()
        self.blocks = nn.ModuleList([ConvUpBlock(weights, f"{prefix}.block{i}", dtype)
                                     for i in range(len(decoder_filters(cfg)))])
        self.head = DecoderHead(cfg, weights, f"{prefix}.head", act, dtype)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def conv_layers(*parts) -> list[Conv3x3]:
    """Every Conv3x3 inside the given encoder/decoders, for reading the weights back."""
    return [m for part in parts for m in part.modules() if isinstance(m, Conv3x3)]
