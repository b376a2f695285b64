"""The physics as Keras layers on TensorFlow tensors, channels-last.

A flat stack is (B·C, H, W, 1): group b's patch c at row b·C + c. Offsets (B, 1, 2, C) with
axis 2 = [x, y] = [column, row] in pixels.
"""

import math

import keras
import numpy as np
import tensorflow as tf

EPS = 1e-3


def to_flat(x):
    """(B, H, W, C) → (B·C, H, W, 1)."""
    b, h, w, c = tf.unstack(tf.shape(x))
    return tf.reshape(tf.transpose(x, (0, 3, 1, 2)), (b * c, h, w, 1))


def from_flat(x, c):
    """(B·C, H, W, 1) → (B, H, W, C)."""
    k, h, w = tf.unstack(tf.shape(x))[:3]
    return tf.transpose(tf.reshape(x, (k // c, c, h, w)), (0, 2, 3, 1))


def flat_offsets(offsets):
    """(B, 1, 2, C) → (B·C, 2)."""
    return tf.reshape(tf.transpose(offsets[:, 0], (0, 2, 1)), (-1, 2))


def _shift_axis(x, shift, axis):
    """x (K, H, W) moved by +shift (K,) pixels along axis 1 (rows) or 2 (columns): bilinear, zeros
    coming in from outside."""
    n = x.shape[axis]
    k = tf.floor(-shift)
    frac = tf.cast(-shift - k, x.dtype)[:, None, None]
    base = tf.range(n)[None, :] + tf.cast(k, tf.int32)[:, None]

    def take(idx):
        inside = tf.cast((idx >= 0) & (idx < n), x.dtype)
        got = tf.gather(x, tf.clip_by_value(idx, 0, n - 1), axis=axis, batch_dims=1)
        return got * (inside[:, :, None] if axis == 1 else inside[:, None, :])

    return (1 - frac) * take(base) + frac * take(base + 1)


def shift(images, offsets):
    """Each flat image (K, H, W, 1) moved by +offsets (K, 2) = (dx, dy)."""
    if images.dtype.is_complex:
        return tf.complex(shift(tf.math.real(images), offsets), shift(tf.math.imag(images), offsets))
    x = images[..., 0]
    x = _shift_axis(x, offsets[:, 1], 1)
    return _shift_axis(x, offsets[:, 0], 2)[..., None]


def pad_to(images, size):
    p = (size - images.shape[1]) // 2
    return tf.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))


def crop(images, n):
    p = (images.shape[1] - n) // 2
    return images[:, p:p + n, p:p + n, :]


def window(n):
    """1 on the central n/2 × n/2 window."""
    w = np.zeros((n, n), dtype=np.float64)
    w[n // 4: n // 4 + n // 2, n // 4: n // 4 + n // 2] = 1
    return w


@keras.saving.register_keras_serializable(package="kport")
class IntensityScale(keras.layers.Layer):
    """x / exp(log_scale) on the way in, × exp(log_scale) on the way out: one trainable weight."""

    def __init__(self, initial=0.0, **kwargs):
        super().__init__(**kwargs)
        self.initial = float(initial)
        self.log_scale = self.add_weight(shape=(), initializer="zeros", name="log_scale")
        self.log_scale.assign(self.initial)  # (a Constant initializer would round it to float32)

    def call(self, x, out=False):
        s = tf.cast(tf.exp(self.log_scale), x.dtype)
        return x * s if out else x / s

    def get_config(self):
        return {**super().get_config(), "initial": self.initial}


@keras.saving.register_keras_serializable(package="kport")
class ToComplex(keras.layers.Layer):
    def call(self, amp, phase):
        return tf.complex(amp * tf.cos(phase), amp * tf.sin(phase))


@keras.saving.register_keras_serializable(package="kport")
class Merge(keras.layers.Layer):
    """The canvas (B, M, M, 1) from the flat patches: each placed at −offset, normalised by the
    coverage of the central windows; without `big`, the one patch zero-padded."""

    def __init__(self, size, big, **kwargs):
        super().__init__(**kwargs)
        self.size, self.big = int(size), bool(big)

    def call(self, flat, offsets):
        if not self.big:
            return pad_to(flat, self.size)
        c = offsets.shape[-1]
        moved = -flat_offsets(tf.cast(offsets, tf.float64))
        canvas = tf.reduce_sum(from_flat(shift(pad_to(flat, self.size), moved), c), axis=-1, keepdims=True)
        n = flat.shape[1]
        cover = tf.ones_like(tf.math.real(flat)) * tf.constant(window(n)[None, :, :, None], dtype=flat.dtype.real_dtype)
        weight = tf.reduce_sum(from_flat(shift(pad_to(cover, self.size), moved), c), axis=-1, keepdims=True)
        return canvas / tf.cast(weight + EPS, canvas.dtype)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "big": self.big}


@keras.saving.register_keras_serializable(package="kport")
class Extract(keras.layers.Layer):
    """The canvas seen from every position: repeated C times, moved by +offset, centre crop."""

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        self.n = int(n)

    def call(self, canvas, offsets):
        c = offsets.shape[-1]
        stack = to_flat(tf.repeat(canvas, c, axis=-1))
        return crop(shift(stack, flat_offsets(tf.cast(offsets, tf.float64))), self.n)

    def get_config(self):
        return {**super().get_config(), "n": self.n}


@keras.saving.register_keras_serializable(package="kport")
class Illuminate(keras.layers.Layer):
    """object × probe; the probe is this layer's (non-trainable) weight, set from the data."""

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        self.n = int(n)
        self.probe_re = self.add_weight(shape=(n, n), initializer="zeros", trainable=False, name="probe_re")
        self.probe_im = self.add_weight(shape=(n, n), initializer="zeros", trainable=False, name="probe_im")

    def call(self, obj):
        probe = tf.complex(tf.cast(self.probe_re, obj.dtype.real_dtype), tf.cast(self.probe_im, obj.dtype.real_dtype))
        return obj * probe[None, :, :, None]

    def get_config(self):
        return {**super().get_config(), "n": self.n}


@keras.saving.register_keras_serializable(package="kport")
class FarField(keras.layers.Layer):
    """fftshift(|FFT(ψ)|), orthonormal, over the image axes."""

    def call(self, psi):
        n = psi.shape[1]
        f = tf.signal.fft2d(tf.transpose(psi, (0, 3, 1, 2))) / tf.cast(n, psi.dtype)
        return tf.transpose(tf.signal.fftshift(tf.abs(f), axes=(-2, -1)), (0, 2, 3, 1))


@keras.saving.register_keras_serializable(package="kport")
def pi_tanh(x):
    return math.pi * tf.tanh(x)
