"""What kport's users call after training: the patches from the model, stitched here."""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kport import physics


def patches_model(model):
    """The part of the model that gives the object patches (B, N, N, C)."""
    return keras.Model(model.inputs[0], model.get_layer("to_complex").output)


def reconstruct(model, diffraction, offsets, params):
    """The object (B, M, M) and its centre crop (B, N, N): patches from the model, merged by
    kport's own stitching."""
    patches = patches_model(model)(diffraction)
    size = params["N"] + (params["gridsize"] - 1) * params["offset"] + params["max_position_jitter"]
    merge = physics.Merge(size, params["object_big"], dtype=params["dtype"])
    canvas = merge(physics.to_flat(patches), tf.constant(offsets))
    return np.asarray(canvas)[..., 0], np.asarray(physics.crop(canvas, params["N"]))[..., 0]


def save(model, path):
    path = Path(f"{path}.keras")
    model.save(path)
    return path


def load(path):
    return keras.models.load_model(path)
