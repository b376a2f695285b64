"""`keras_backend`: an existing Keras model as a parity backend, with everything `torch_backend`
has: taps on layers (their output, or with `pre=True` their input) and on module-level functions,
`Derived` stages, `run_infer`, a weight mapping, state, save/load in the user's format, a loss
with its gradients, and teacher forcing (a layer's value replaced by the reference's)."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np

from parity.adapters.model import Framework, adapter_backend
from parity.adapters.taps import AdapterSpec, Derived, Tap, reporting
from parity.backends import Backend

Layers = Mapping[str, str]  # stage -> layer name (or a dotted path of names into nested models)


class _ModelInput:
    """One of a functional model's inputs, tapped by its Input layer's name: an Input layer is
    never called, so the model's own call is hooked and the input picked from its arguments."""

    def __init__(self, model, index: int):
        self.model, self.index = model, index


def _keras_layer(model, path: str):
    """The layer at a dotted path of layer names ("": the model itself)."""
    import keras

    if path in ("", "."):
        return model
    layer = model
    for part in path.split("."):
        layer = layer.get_layer(part)
    if isinstance(layer, keras.layers.InputLayer) and layer.output in model.inputs:
        return _ModelInput(model, [t is layer.output for t in model.inputs].index(True))
    return layer


@contextlib.contextmanager
def _replaced_call(layer, call: Callable) -> Iterator[None]:
    had = "call" in vars(layer)
    previous = vars(layer).get("call")
    layer.call = call
    try:
        yield
    finally:
        if had:
            layer.call = previous
        else:
            del layer.call


def _keras_hook(target, pre: bool, sink) -> contextlib.AbstractContextManager:
    """For one forward call: each call of the layer reports its input (`pre`) or output to `sink`;
    what the sink returns, if not None, replaces it (teacher forcing)."""
    import keras

    if isinstance(target, _ModelInput):
        original = target.model.call

        def model_call(inputs, *args, **kwargs):  # the Input layer's output is the model's input
            flat = list(keras.tree.flatten(inputs))
            if pre:
                new = sink(None, (flat[target.index],))
                new = None if new is None else new[0]
            else:
                new = sink(flat[target.index], ())
            if new is not None:
                flat[target.index] = new
                inputs = keras.tree.pack_sequence_as(inputs, flat)
            return original(inputs, *args, **kwargs)

        return _replaced_call(target.model, model_call)
    return _replaced_call(target, reporting(target.call, pre, sink))


def _keras_like(array: np.ndarray, like):
    """`array` as a tensor of `like`'s dtype."""
    import keras

    from parity.run.results import CannotForce

    if not hasattr(like, "dtype") or not hasattr(like, "shape"):
        raise CannotForce(f"the model's value there is a {type(like).__name__}, not a tensor")
    dtype = keras.backend.standardize_dtype(like.dtype)
    if np.iscomplexobj(array) and "complex" not in dtype:
        raise CannotForce(f"the reference's value is complex, the model's {dtype}: give the tap a transform "
                          f"and its inverse")
    return keras.ops.convert_to_tensor(array, dtype=dtype)


def _keras_gradients(model, terms: Callable[[], dict]) -> tuple[dict, dict]:
    """The loss terms and each trainable weight's gradient, by the weight's path."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        losses = terms()
    variables = list(model.trainable_weights)
    grads = tape.gradient(losses["loss"], variables)
    return losses, {v.path: g for v, g in zip(variables, grads) if g is not None}


def _framework() -> Framework:
    return Framework("tensorflow", _keras_layer, _keras_hook, params=lambda model: {w.path: w for w in model.weights},
                     gradients=_keras_gradients, as_like=_keras_like)


def layer_taps(layers: Layers | Callable[[Any], Layers], layout: Mapping[str, str] = {}) -> Callable[[Any], list[Tap]]:
    """Taps on layers' outputs from {stage: layer name} (or a callable of the config giving it, for
    auto-named layers whose names change with the config)."""
    def taps(cfg) -> list[Tap]:
        names = layers(cfg) if callable(layers) else layers
        return [Tap(stage, name, layout=layout.get(stage, "BHWC")) for stage, name in names.items()]

    return taps


def keras_backend(name: str, make_model: Callable[[Any, Mapping[str, np.ndarray], str], Any],
                  inputs: Optional[Callable[[Any, Any], Any]] = None,
                  layers: Layers | Callable[[Any], Layers] = {}, layout: Mapping[str, str] = {},
                  derived: Sequence[Derived] = (), *,
                  run: Optional[Callable[[Any, Any, Any], Any]] = None,
                  taps: Sequence[Tap] | Callable[[Any], Sequence[Tap]] = (),
                  run_infer: Optional[Callable[[Any, Any, Any], Any]] = None,
                  mapping: Optional[Callable[[Any], Mapping[str, tuple[str, str]]]] = None,
                  get_state: Optional[Callable[[Any], Mapping[str, Any]]] = None,
                  set_state: Optional[Callable[[Any, Mapping[str, Any]], None]] = None,
                  save: Optional[Callable[[Any, Any], Any]] = None,
                  load: Optional[Callable[[Any, Any, str], Any]] = None,
                  loss: Optional[Callable[[Any, Any, Any], Any]] = None,
                  config: Optional[Mapping[str, str] | Callable[[Any], Mapping[str, Any]]] = None,
                  devices: tuple[str, ...] = ("cpu", "cuda")) -> Backend:
    """A backend for an existing Keras model (functional or subclassed), as `torch_backend` is for
    torch. Required: `make_model(cfg, weights, device)` builds it with the neutral weights (e.g.
    through `map_weights` onto the weights' paths); how to call it — `run(model, batch, cfg)`, or
    `inputs(batch, cfg)` giving what `model(...)` is called with; where each stage lives —
    `layers` ({stage: layer name}, or a callable of the config: auto-generated names such as
    `max_pooling2d_2` change with N) and/or `taps` (Tap objects on layer names, with everything a
    torch tap has: `pre=`, `transform=`/`inverse=`, `when=`, `infer=`, function taps).
    Each optional argument switches on the checks that need it, as for `torch_backend`:
    `run_infer`, `save`/`load` (the user's format: a `.keras` file, weights + config),
    `mapping(cfg)` (canonical name -> (weight path, rule)) with `get_state` and `set_state`,
    `loss(model, batch, cfg)` (gradients read back through the mapping), `config` (the model's
    effective config: attribute paths or a callable, the config check). Teacher forcing works
    on layers called in eager mode, so origins are computed as for a torch port."""
    if run is None:
        if inputs is None:
            raise TypeError(f"keras_backend {name!r}: give run(model, batch, cfg) or inputs(batch, cfg)")

        def run(model, batch, cfg):
            return model(inputs(batch, cfg), training=False)

    by_layer = layer_taps(layers, layout)

    def all_taps(cfg) -> list[Tap]:
        return [*by_layer(cfg), *(taps(cfg) if callable(taps) else taps)]

    from models_tf import device as tf_device

    spec = AdapterSpec(name, run, all_taps, derived, run_infer, mapping, get_state, loss, save, config)
    return adapter_backend(spec, _framework(), make_model, devices, tf_device.configure, set_state=set_state,
                           load=load)
