"""The U-Net half of the forward model (TensorFlow/Keras reference): encoder, two decoders and
their last stage, built from a `ForwardConfig` and neutral weights loaded by canonical name.

Layout: channels-last (B, H, W, C) throughout, as upstream PtychoPINN.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import keras
import numpy as np
import tensorflow as tf

from parity.inputs import data
from parity.config import ForwardConfig
from parity.inputs.weights import (PAD_OBJECT_OUTER, decoder_filters, encoder_filters, head_branches)


def amp_activation(name: str) -> Callable[[tf.Tensor], tf.Tensor]:
    """Activation of the amplitude decoder: sigmoid | swish (x·σ(x)) | softplus | relu."""
    return {"sigmoid": tf.math.sigmoid, "swish": tf.nn.silu,
            "softplus": tf.math.softplus, "relu": tf.nn.relu}[name]


def phase_activation(x: tf.Tensor) -> tf.Tensor:
    """Activation of the phase decoder: π·tanh(x), phase in (−π, π)."""
    return math.pi * tf.math.tanh(x)


def centre_window_mask(N: int, dtype: str) -> tf.Tensor:
    """(N, N): 1 inside the central N/2 window, 0 outside (geometry from parity.inputs.data)."""
    return tf.constant(data.centre_window_mask(N), dtype=dtype)


class Conv3x3:
    """conv 3×3 'same', stride 1, + bias, optional relu: (B,H,W,Cin) → (B,H,W,Cout)."""

    def __init__(self, weights: Mapping[str, np.ndarray], name: str, relu: bool, dtype: str):
        kernel, bias = weights[f"{name}.kernel"], weights[f"{name}.bias"]
        self.name = name
        self.layer = keras.layers.Conv2D(kernel.shape[-1], 3, padding="same",
                                         activation="relu" if relu else None, dtype=dtype,
                                         name=name.replace(".", "__"))
        self.layer.build((None, None, None, kernel.shape[2]))
        self.layer.set_weights([kernel, bias])

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return self.layer(x)

    def variables(self) -> dict:
        """{canonical name: the layer's variable}, for gradients and optimizer steps."""
        return {f"{self.name}.kernel": self.layer.kernel, f"{self.name}.bias": self.layer.bias}

    def state(self) -> dict[str, np.ndarray]:
        kernel, bias = self.layer.get_weights()
        return {f"{self.name}.kernel": kernel, f"{self.name}.bias": bias}


class ConvPoolBlock:
    """[conv3×3 relu, conv3×3 relu, maxpool 2×2 'same']: (B,H,W,Cin) → (B,H/2,W/2,F)."""

    def __init__(self, weights, name: str, dtype: str):
        self.convs = [Conv3x3(weights, f"{name}.conv{i}", True, dtype) for i in range(2)]
        self.pool = keras.layers.MaxPooling2D(2, padding="same", dtype=dtype)

    def __call__(self, x):
        for conv in self.convs:
            x = conv(x)
        return self.pool(x)


class ConvUpBlock:
    """[conv3×3 relu, conv3×3 relu, nearest upsample ×2]: (B,H,W,Cin) → (B,2H,2W,F)."""

    def __init__(self, weights, name: str, dtype: str):
        self.convs = [Conv3x3(weights, f"{name}.conv{i}", True, dtype) for i in range(2)]
        self.up = keras.layers.UpSampling2D(2, interpolation="nearest", dtype=dtype)

    def __call__(self, x):
        for conv in self.convs:
            x = conv(x)
        return self.up(x)


class Encoder:
    """`encoder.out`: blocks of ConvPoolBlock, filters nfs·[32,64,128] at N=64:
    (B,N,N,C) → (B,N/8,N/8,F)."""

    def __init__(self, cfg: ForwardConfig, weights, dtype: str):
        self.blocks = [ConvPoolBlock(weights, f"encoder.block{i}", dtype)
                       for i in range(len(encoder_filters(cfg)))]

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

    def __init__(self, cfg: ForwardConfig, weights, prefix: str, act, dtype: str):
        self.cfg, self.act = cfg, act
        use_conv1, use_up = head_branches(cfg)
        self.conv1 = Conv3x3(weights, f"{prefix}.conv1", False, dtype) if use_conv1 else None
        self.up = ConvUpBlock(weights, f"{prefix}.up", dtype) if use_up else None
        self.conv2 = Conv3x3(weights, f"{prefix}.conv2", False, dtype) if use_up else None
        self.border = 1.0 - centre_window_mask(cfg.N, dtype)[None, :, :, None]

    def __call__(self, features):
        N = self.cfg.N
        if not self.cfg.pad_object:
            return self.act(self.conv2(self.up(features)))
        x1 = self.act(self.conv1(features[..., :-PAD_OBJECT_OUTER]))
        q = N // 4
        x1 = tf.pad(x1, [[0, 0], [q, q], [q, q], [0, 0]])
        if self.up is None:
            return x1
        x2 = tf.nn.silu(self.conv2(self.up(features[..., -PAD_OBJECT_OUTER:])))
        return x1 + x2 * self.border


class Decoder:
    """`decoder.amp` / `decoder.phase`: ConvUpBlocks (filters nfs·[64,32] at N=64), then the
    DecoderHead: (B,N/8,N/8,F) → (B,N,N,Co)."""

    def __init__(self, cfg: ForwardConfig, weights, prefix: str, act, dtype: str):
        self.blocks = [ConvUpBlock(weights, f"{prefix}.block{i}", dtype)
                       for i in range(len(decoder_filters(cfg)))]
        self.head = DecoderHead(cfg, weights, f"{prefix}.head", act, dtype)

    def __call__(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def conv_layers(*parts) -> list[Conv3x3]:
    """Every Conv3x3 inside the given encoder/decoders, for reading the weights back."""
    found = []
    for part in parts:
        blocks = list(part.blocks)
        head = getattr(part, "head", None)
        for block in blocks:
            found.extend(block.convs)
        if head is not None:
            found.extend(c for c in (head.conv1, head.conv2) if c is not None)
            if head.up is not None:
                found.extend(head.up.convs)
    return found
