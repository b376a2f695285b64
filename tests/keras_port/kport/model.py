"""The network, built with the functional API. Layers are numbered in the order they are made,
as Keras numbers its own (`conv2d_7`): which number a decoder's first conv gets depends on how
many encoder blocks N asks for."""

import math

import keras
import tensorflow as tf

from kport import physics

PARAMS = {"N": 64, "gridsize": 2, "object_big": True, "probe_big": False, "pad_object": True,
          "n_filters_scale": 2, "offset": 4, "max_position_jitter": 10, "intensity_scale": 1.0,
          "amp_activation": "sigmoid", "dtype": "float32"}

ENCODER = {64: [32, 64, 128], 128: [16, 32, 64, 128], 256: [8, 16, 32, 64, 128]}
DECODER = {64: [64, 32], 128: [128, 64, 32], 256: [256, 128, 64, 32]}
OUTER = 4  # channels the probe_big branch reads


@keras.saving.register_keras_serializable(package="kport")
class ToFlat(keras.layers.Layer):
    def call(self, x):
        return physics.to_flat(x)


@keras.saving.register_keras_serializable(package="kport")
class Border(keras.layers.Layer):
    """x1 + swish(x2) outside the central window (the probe_big border)."""

    def call(self, x1, x2):
        outside = 1 - tf.constant(physics.window(x1.shape[1])[None, :, :, None], dtype=x1.dtype)
        return x1 + x2 * tf.sigmoid(x2) * outside


class _Namer:
    """Names layers as Keras would: conv2d, conv2d_1, ... in the order they are made."""

    def __init__(self):
        self.counts = {}

    def __call__(self, kind):
        k = self.counts.get(kind, 0)
        self.counts[kind] = k + 1
        return kind if k == 0 else f"{kind}_{k}"


def _conv(h, filters, name, dtype, activation=None):
    return keras.layers.Conv2D(filters, 3, padding="same", activation=activation, name=name("conv2d"),
                               dtype=dtype)(h)


def _decoder(h, p, name, activation, channels):
    dtype, n, width = p["dtype"], p["N"], p["n_filters_scale"]
    for f in DECODER[n]:
        h = _conv(h, width * f, name, dtype, "relu")
        h = _conv(h, width * f, name, dtype, "relu")
        h = keras.layers.UpSampling2D(2, name=name("up_sampling2d"), dtype=dtype)(h)
    act = keras.layers.Activation(activation, name=name("activation"), dtype=dtype)
    up_filters = width * (2048 // n)

    def border_branch(x):
        x = _conv(x, up_filters, name, dtype, "relu")
        x = _conv(x, up_filters, name, dtype, "relu")
        x = keras.layers.UpSampling2D(2, name=name("up_sampling2d"), dtype=dtype)(x)
        return _conv(x, channels, name, dtype)

    if not p["pad_object"]:
        return act(border_branch(h))
    x1 = act(_conv(h[..., :-OUTER], channels, name, dtype))
    x1 = keras.layers.ZeroPadding2D(n // 4, name=name("zero_padding2d"), dtype=dtype)(x1)
    if not p["probe_big"]:
        return x1
    return Border(name=name("border"), dtype=dtype)(x1, border_branch(h[..., -OUTER:]))


def build(params=None):
    """The training model: inputs [diffraction (B, N, N, C), offsets (B, 1, 2, C)] → the scaled
    diffraction amplitude as a flat stack (B·C, N, N, 1)."""
    p = {**PARAMS, **(params or {})}
    n, c, dtype = p["N"], p["gridsize"] ** 2, p["dtype"]
    channels = c if p["object_big"] else 1
    size = n + (p["gridsize"] - 1) * p["offset"] + p["max_position_jitter"]
    name = _Namer()
    diffraction = keras.Input((n, n, c), name="diffraction", dtype=dtype)
    offsets = keras.Input((1, 2, c), name="offsets", dtype="float64")
    scale = physics.IntensityScale(math.log(p["intensity_scale"]), name="intensity_scale", dtype=dtype)
    h = scale(diffraction)
    for f in ENCODER[n]:
        h = _conv(h, p["n_filters_scale"] * f, name, dtype, "relu")
        h = _conv(h, p["n_filters_scale"] * f, name, dtype, "relu")
        h = keras.layers.MaxPooling2D(2, name=name("max_pooling2d"), dtype=dtype)(h)
    amp = _decoder(h, p, name, p["amp_activation"], channels)
    phase = _decoder(h, p, name, physics.pi_tanh, channels)
    patches = physics.ToComplex(name="to_complex", dtype=dtype)(amp, phase)
    flat = ToFlat(name="to_flat", dtype=dtype)(patches)
    canvas = physics.Merge(size, p["object_big"], name="merge", dtype=dtype)(flat, offsets)
    # at gridsize 1 the one patch is what the probe lights
    seen = physics.Extract(n, name="extract", dtype=dtype)(canvas, offsets) if p["gridsize"] > 1 else flat
    psi = physics.Illuminate(n, name="illuminate", dtype=dtype)(seen)
    amplitude = physics.FarField(name="far_field", dtype=dtype)(psi)
    return keras.Model([diffraction, offsets], scale(amplitude, out=True), name="kport")


def set_probe(model, probe):
    """The probe (N, N) complex, held by the illumination layer."""
    layer = model.get_layer("illuminate")
    layer.probe_re.assign(probe.real)
    layer.probe_im.assign(probe.imag)


def loss(model, diffraction, offsets):
    """Poisson negative log-likelihood of the measured intensities, summed over the pixels and
    averaged over the groups (kport's own normalisation)."""
    c = offsets.shape[-1]
    pred = physics.from_flat(model([diffraction, offsets]), c) ** 2
    observed = tf.cast(diffraction, pred.dtype) ** 2
    return tf.reduce_sum(pred - observed * tf.math.log(pred)) / tf.cast(tf.shape(pred)[0], pred.dtype)
