"""kport behind ptycho-parity: the whole adapter, written against the public API only
(`keras_backend`). Registered through the entry point `kport = kport_parity:backend` in the test
project; in process in tests/test_keras_port.py."""

import math

import numpy as np

from parity.adapters import Derived, Tap, keras_backend, map_weights

import kport
from kport import inference
from kport import model as network


def params(cfg, dtype):
    """kport's params dict from the harness's config."""
    return {"N": cfg.N, "gridsize": cfg.gridsize, "object_big": cfg.object_big, "probe_big": cfg.probe_big,
            "pad_object": cfg.pad_object, "n_filters_scale": cfg.n_filters_scale, "offset": cfg.offset,
            "max_position_jitter": cfg.max_position_jitter, "intensity_scale": cfg.intensity_scale,
            "amp_activation": cfg.amp_activation, "dtype": dtype}


def _numbered(kind, k):
    return kind if k == 0 else f"{kind}_{k}"


# --8<-- [start:mapping]
def conv_layers(cfg):
    """canonical conv -> kport's layer, in the order kport makes them (Keras-style numbering, so a
    decoder's names depend on how many encoder blocks N asks for)."""
    order = []
    for i in range(len(network.ENCODER[cfg.N])):
        order += [f"encoder.block{i}.conv0", f"encoder.block{i}.conv1"]
    for dec in ("decoder_amp", "decoder_phase"):
        for i in range(len(network.DECODER[cfg.N])):
            order += [f"{dec}.block{i}.conv0", f"{dec}.block{i}.conv1"]
        if cfg.pad_object:
            order.append(f"{dec}.head.conv1")
        if cfg.probe_big or not cfg.pad_object:
            order += [f"{dec}.head.up.conv0", f"{dec}.head.up.conv1", f"{dec}.head.conv2"]
    return {canonical: _numbered("conv2d", k) for k, canonical in enumerate(order)}


def weight_mapping(cfg):
    """canonical name -> (kport weight path, transposition): Keras layouts on both sides."""
    out = {"log_scale": ("intensity_scale/log_scale", "same")}  # state, with a gradient
    for canonical, layer in conv_layers(cfg).items():
        out[f"{canonical}.kernel"] = (f"{layer}/kernel", "same")
        out[f"{canonical}.bias"] = (f"{layer}/bias", "same")
    return out


def make_model(cfg, weights, device):
    dtype = str(next(iter(weights.values())).dtype)
    model = kport.build(params(cfg, dtype))
    shapes = {w.path: tuple(w.shape) for w in model.weights}
    mapped = map_weights(weights, weight_mapping(cfg), shapes, unused=("illuminate/*",)).check()
    for w in model.weights:
        if w.path in mapped.state:
            w.assign(mapped.state[w.path])
    return model
# --8<-- [end:mapping]


# --8<-- [start:run]
def counts(batch, cfg):  # kport is fed measured amplitudes in counts; the scale layer divides them out
    return batch.diffraction * np.asarray(cfg.intensity_scale, batch.diffraction.dtype)


def run(model, batch, cfg):
    network.set_probe(model, batch.probe)
    return model([counts(batch, cfg), batch.offsets], training=False)


def run_infer(model, batch, cfg):  # the patches from the model, stitched by kport outside it
    network.set_probe(model, batch.probe)
    return inference.reconstruct(model, counts(batch, cfg), batch.offsets, params(cfg, model.dtype))
# --8<-- [end:run]


# --8<-- [start:taps]
def taps(cfg):
    c, grid = cfg.gridsize ** 2, cfg.gridsize > 1

    def from_flat(x):  # kport's flat stack (B·C, N, N, 1) -> (B, N, N, C)
        return x[..., 0].reshape(-1, c, *x.shape[1:3]).transpose(0, 2, 3, 1)

    def to_flat(x):
        return x.transpose(0, 3, 1, 2).reshape(-1, *x.shape[1:3], 1)

    flat = {"transform": from_flat, "inverse": to_flat}
    head = "border" if cfg.pad_object and cfg.probe_big else "zero_padding2d" if cfg.pad_object else "activation"
    return [
        Tap("input.diffraction", "diffraction", infer=False),  # the inference entry calls a sub-model
        Tap("input.offsets", "offsets", infer=False),
        Tap("scaled_input", "conv2d", pre=True),
        Tap("encoder.out", _numbered("max_pooling2d", len(network.ENCODER[cfg.N]) - 1)),
        Tap("decoder.amp", _numbered(head, 0)),
        Tap("decoder.phase", _numbered(head, 1)),
        Tap("object.patches", "to_complex"),
        Tap("object.canvas", "merge", infer=False, when=lambda c: grid),  # gridsize 1: the patch is lit as it is
        Tap("object.extracted", "extract", when=lambda c: grid, **flat),
        Tap("probe.illuminated", "illuminate", **flat),
        Tap("diffraction.amplitude", "far_field", **flat),
        # the shared scale layer: its second call scales the amplitude back to counts
        Tap("diffraction.scaled", "intensity_scale", calls=2, occurrence=1, **flat),
    ]
# --8<-- [end:taps]


def _centre(t, cfg):
    canvas = t["object.canvas"]
    p = (canvas.shape[1] - cfg.N) // 2
    return canvas[:, p:p + cfg.N, p:p + cfg.N]


DERIVED = [
    Derived("object.trimmed", _centre, infer=False, when=lambda cfg: cfg.gridsize > 1),  # cropped outside kport
    Derived("object.extracted", lambda t, cfg: t["object.patches"], when=lambda cfg: cfg.gridsize == 1),
    Derived("diffraction.intensity", lambda t, cfg: t["diffraction.scaled"] ** 2),
]


def get_state(model):
    return {"log_scale": float(model.get_layer("intensity_scale").log_scale.numpy())}


def set_state(model, state):
    model.get_layer("intensity_scale").log_scale.assign(state["log_scale"])


# --8<-- [start:config]
def effective_config(model):
    """What a kport model computes with, read from its layers (kport keeps no params with the
    model): the detector size and channels from its input, object_big from its merge layer, the
    width from its first conv, the decoder head from the layers it has. The offset and the jitter
    are summed into the canvas size, so they are not read (listed by the config check)."""
    n, channels = model.inputs[0].shape[1], model.inputs[0].shape[3]
    names = {layer.name for layer in model.layers}
    out = {"N": n, "gridsize": math.isqrt(channels),
           "n_filters_scale": model.get_layer("conv2d").filters // network.ENCODER[n][0],
           "pad_object": "zero_padding2d" in names or "border" in names, "probe_big": "border" in names}
    if "merge" in names:  # at gridsize 1 the one patch is lit as it is: no merge, object_big not read
        out["object_big"] = model.get_layer("merge").big
    return out
# --8<-- [end:config]


def loss(model, batch, cfg):
    network.set_probe(model, batch.probe)
    return network.loss(model, counts(batch, cfg), batch.offsets)


# --8<-- [start:backend]
def backend():
    return keras_backend("kport", make_model, run=run, taps=taps, derived=DERIVED, run_infer=run_infer,
                         mapping=weight_mapping, get_state=get_state, set_state=set_state,
                         save=lambda model, path: inference.save(model, path),
                         load=lambda path, cfg, device: inference.load(path), loss=loss, config=effective_config)
# --8<-- [end:backend]
