"""The U-Net half of the forward model in plain numpy: encoder, two decoders and their last
stage, built from a `ForwardConfig` and neutral weights read by canonical name.

Layout: channels-last (B, H, W, C) throughout, kernels as stored (kh, kw, in, out); computed in
float64. Written from the formulas ('same' 3×3 conv as a sum over shifted windows, max-pool as a
reshape, nearest ×2 as a repeat), sharing no code with either framework.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from parity.inputs import data
from parity.config import ForwardConfig
from parity.inputs.weights import PAD_OBJECT_OUTER, decoder_filters, encoder_filters, head_branches


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # split by sign so that exp never overflows
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + eˣ) with TensorFlow's float64 thresholds (x itself above −log(eps)−2, eˣ below
    log(eps)+2), the function the reference computes."""
    threshold = math.log(np.finfo(np.float64).eps) + 2.0
    mid = np.log1p(np.exp(np.clip(x, threshold, -threshold)))
    return np.where(x > -threshold, x, np.where(x < threshold, np.exp(x), mid))


def amp_activation(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """Activation of the amplitude decoder: sigmoid | swish (x·σ(x)) | softplus | relu."""
    return {"sigmoid": _sigmoid, "swish": lambda x: x * _sigmoid(x), "softplus": _softplus,
            "relu": lambda x: np.maximum(x, 0.0)}[name]


def phase_activation(x: np.ndarray) -> np.ndarray:
    """Activation of the phase decoder: π·tanh(x), phase in (−π, π)."""
    return math.pi * np.tanh(x)


def centre_window_mask(N: int) -> np.ndarray:
    """(N, N): 1 inside the central N/2 window, 0 outside (geometry from parity.inputs.data)."""
    return data.centre_window_mask(N)


class Conv3x3:
    """conv 3×3 'same', stride 1, + bias, optional relu: (B,H,W,Cin) → (B,H,W,Cout).
    out[b,h,w,o] = Σ_{i,j,c} pad(x)[b,h+i,w+j,c] · K[i,j,c,o] + bias[o], zero padding of 1."""

    def __init__(self, weights: Mapping[str, np.ndarray], name: str, relu: bool):
        self.name, self.relu = name, relu
        self.kernel = np.asarray(weights[f"{name}.kernel"], dtype=np.float64)
        self.bias = np.asarray(weights[f"{name}.bias"], dtype=np.float64)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        B, H, W, C = x.shape
        padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        windows = sliding_window_view(padded, (3, 3), axis=(1, 2))  # (B,H,W,Cin,3,3)
        # one matrix product (B·H·W, 9·Cin) × (9·Cin, Cout) in (i, j, c) order: BLAS, not einsum's loops
        columns = windows.transpose(0, 1, 2, 4, 5, 3).reshape(B * H * W, 9 * C)
        out = (columns @ self.kernel.reshape(9 * C, -1)).reshape(B, H, W, -1) + self.bias
        return np.maximum(out, 0.0) if self.relu else out

    def state(self) -> dict[str, np.ndarray]:
        return {f"{self.name}.kernel": self.kernel, f"{self.name}.bias": self.bias}


def max_pool(x: np.ndarray) -> np.ndarray:
    """2×2 max-pool, stride 2 (even sizes need no padding): (B,H,W,C) → (B,H/2,W/2,C)."""
    B, H, W, C = x.shape
    return x.reshape(B, H // 2, 2, W // 2, 2, C).max(axis=(2, 4))


def upsample_nearest(x: np.ndarray) -> np.ndarray:
    """Nearest ×2: each pixel copied into a 2×2 block: (B,H,W,C) → (B,2H,2W,C)."""
    return x.repeat(2, axis=1).repeat(2, axis=2)


class ConvPoolBlock:
    """[conv3×3 relu, conv3×3 relu, maxpool 2×2]: (B,H,W,Cin) → (B,H/2,W/2,F)."""

    def __init__(self, weights, name: str):
        self.convs = [Conv3x3(weights, f"{name}.conv{i}", True) for i in range(2)]

    def __call__(self, x):
        for conv in self.convs:
            x = conv(x)
        return max_pool(x)


class ConvUpBlock:
    """[conv3×3 relu, conv3×3 relu, nearest upsample ×2]: (B,H,W,Cin) → (B,2H,2W,F)."""

    def __init__(self, weights, name: str):
        self.convs = [Conv3x3(weights, f"{name}.conv{i}", True) for i in range(2)]

    def __call__(self, x):
        for conv in self.convs:
            x = conv(x)
        return upsample_nearest(x)


class Encoder:
    """`encoder.out`: ConvPoolBlocks, filters nfs·[32,64,128] at N=64: (B,N,N,C) → (B,N/8,N/8,F)."""

    def __init__(self, cfg: ForwardConfig, weights):
        self.blocks = [ConvPoolBlock(weights, f"encoder.block{i}") for i in range(len(encoder_filters(cfg)))]

    def __call__(self, x):
        for block in self.blocks:
            x = block(x)
        return x


class DecoderHead:
    """Decoder last stage (docs/design.md §2.3), → (B,N,N,Co).

    pad_object: x1 = act(conv1(f[..., :-4])) at N/2, zero-padded N/4 on every side; with
    probe_big also x2 = swish(conv2(up(f[..., -4:]))) · border_mask, output x1 + x2.
    Without pad_object: act(conv2(up(f))) at full N.
    """

    def __init__(self, cfg: ForwardConfig, weights, prefix: str, act):
        self.cfg, self.act = cfg, act
        use_conv1, use_up = head_branches(cfg)
        self.conv1 = Conv3x3(weights, f"{prefix}.conv1", False) if use_conv1 else None
        self.up = ConvUpBlock(weights, f"{prefix}.up") if use_up else None
        self.conv2 = Conv3x3(weights, f"{prefix}.conv2", False) if use_up else None
        self.border = 1.0 - centre_window_mask(cfg.N)[None, :, :, None]

    def __call__(self, features):
        N = self.cfg.N
        if not self.cfg.pad_object:
            return self.act(self.conv2(self.up(features)))
        x1 = self.act(self.conv1(features[..., :-PAD_OBJECT_OUTER]))
        q = N // 4
        x1 = np.pad(x1, ((0, 0), (q, q), (q, q), (0, 0)))
        if self.up is None:
            return x1
        x2 = self.conv2(self.up(features[..., -PAD_OBJECT_OUTER:]))
        return x1 + x2 * _sigmoid(x2) * self.border


class Decoder:
    """`decoder.amp` / `decoder.phase`: ConvUpBlocks (filters nfs·[64,32] at N=64), then the
    DecoderHead: (B,N/8,N/8,F) → (B,N,N,Co)."""

    def __init__(self, cfg: ForwardConfig, weights, prefix: str, act):
        self.blocks = [ConvUpBlock(weights, f"{prefix}.block{i}") for i in range(len(decoder_filters(cfg)))]
        self.head = DecoderHead(cfg, weights, f"{prefix}.head", act)

    def __call__(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def conv_layers(*parts) -> list[Conv3x3]:
    """Every Conv3x3 inside the given encoder/decoders, for reading the weights back."""
    found = []
    for part in parts:
        for block in part.blocks:
            found.extend(block.convs)
        head = getattr(part, "head", None)
        if head is not None:
            found.extend(c for c in (head.conv1, head.conv2) if c is not None)
            if head.up is not None:
                found.extend(head.up.convs)
    return found
