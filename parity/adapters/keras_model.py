"""`keras_backend`: an existing Keras functional model as a parity backend."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from parity.adapters.taps import Derived, Tap
from parity.backends import Backend
from parity.stages import INFER_STAGES, TRAIN_STAGES


def keras_backend(name: str, make_model: Callable[[Any, Mapping[str, np.ndarray], str], Any],
                  inputs: Callable[[Any, Any], Any], layers: Mapping[str, str], layout: Mapping[str, str] = {},
                  derived: Sequence[Derived] = (), *, save: Optional[Callable[[Any, Any], Any]] = None,
                  load: Optional[Callable[[Any, Any, str], Any]] = None) -> Backend:
    """A backend for an existing Keras functional model: a sub-model that outputs the named
    layers' outputs (stage → layer name); `inputs(batch, cfg)` gives what the model is called with.
    `save(model, path)` and `load(path, cfg, device) -> model`, in the user's own format, switch on
    the checkpoint round trip."""

    def adapt(model, cfg):
        import keras

        stages = list(layers)
        probe = keras.Model(inputs=model.inputs, outputs=[model.get_layer(layers[s]).output for s in stages])
        taps = [Tap(s, layers[s], layout=layout.get(s, "BHWC")) for s in stages]

        class KerasModel:
            backend = name

            def _trace(self, batch, wanted):
                x = inputs(batch, cfg)
                outs = probe(x if isinstance(x, (list, tuple, dict)) else [x])  # the model's input structure
                outs = outs if isinstance(outs, (list, tuple)) else [outs]
                seen = {tap.stage: tap.convert(out) for tap, out in zip(taps, outs)}
                for item in derived:
                    if item.active(cfg):
                        seen[item.stage] = np.asarray(item.fn(seen, cfg))
                return {s: seen[s] for s in wanted if s in seen}

            def forward_train(self, batch):
                return self._trace(batch, TRAIN_STAGES)

            def forward_infer(self, batch):
                return self._trace(batch, INFER_STAGES)

            def save(self, path):
                written = save(model, path)
                return path if written is None else written

        return KerasModel()

    def build(cfg, weights, device="cpu", **state):
        return adapt(make_model(cfg, weights, device), cfg)

    from models_tf import device as tf_device

    return Backend(name, "tensorflow", ("cpu", "cuda"), build_fn=build, configure_fn=tf_device.configure,
                   load_fn=(lambda path, cfg=None, device="cpu": adapt(load(path, cfg, device), cfg)) if load else None,
                   stages=tuple(s for s in TRAIN_STAGES if s in set(layers) | {d.stage for d in derived}),
                   checkpoints=save is not None and load is not None, neutral_out=False, builds_from_state=False,
                   capabilities=frozenset())
