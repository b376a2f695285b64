"""Adapters: turn an existing implementation into a parity backend without rewriting it.

A port rarely has the reference's structure, so an adapter says, stage by stage, where the value
lives in the user's model and how to read it:

- `Tap(stage, "encoder")` — the output of the submodule at that dotted path (a forward hook);
  `pre=True` taps its input instead (a forward pre-hook); `pick=0` takes one element of a tuple;
- `Tap(stage, "mypkg.physics:merge", function=True)` — a module-level function, wrapped for the
  duration of one forward call and restored afterwards;
- `layout="BCHW"` converts channels-first to the trace's channels-last; `squeeze=(1,)` drops an
  extra singleton axis;
- `Derived(stage, fn)` — a stage the model never materialises but that follows from tapped ones
  (e.g. intensity = scaled²), fn(trace, cfg);
- `map_weights` — the neutral weights (canonical names, Keras layout) → the user's parameter
  names, with a transposition rule per tensor; reports unmapped and left-over parameters.

Stages neither tapped nor derived are declared not provided: the comparison lists them as
"not provided by <name>", never a silent pass. `torch_backend(...)` and `keras_backend(...)`
return a `parity.backends.Backend`; register it with `parity.backends.register` or through the
entry-point group `ptycho_parity.backends`.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np

from parity.backends import Backend
from parity.stages import INFER_STAGES, TRAIN_STAGES
from parity.weights import WeightError

# how a neutral (Keras-layout) tensor becomes the user's tensor
TRANSPOSE_RULES = {
    "same": None,
    "keras_conv_to_torch": (3, 2, 0, 1),  # (kh, kw, in, out) -> (out, in, kh, kw)
    "keras_dense_to_torch": (1, 0),  # (in, out) -> (out, in)
}


@dataclass(frozen=True)
class Tap:
    """Where a stage's value lives in the user's model, and how to read it."""

    stage: str
    target: str  # dotted submodule path, or "module.path:function" with function=True
    function: bool = False
    pre: bool = False  # a submodule's input instead of its output
    pick: Optional[int] = None  # one element of a tuple output
    arg: int = 0  # with pre=True: which positional input
    layout: str = "BHWC"  # or "BCHW" (converted to channels-last)
    squeeze: tuple[int, ...] = ()  # singleton axes to drop before the layout conversion

    def convert(self, value: Any) -> np.ndarray:
        if self.pick is not None:
            value = value[self.pick]
        array = _to_numpy(value)
        if self.squeeze:
            array = np.squeeze(array, axis=self.squeeze)
        if self.layout == "BCHW":
            array = np.moveaxis(array, 1, -1)
        elif self.layout != "BHWC":
            raise ValueError(f"tap {self.stage}: layout must be 'BHWC' or 'BCHW', got {self.layout!r}")
        return np.ascontiguousarray(array)


@dataclass(frozen=True)
class Derived:
    """A stage computed from other (tapped or derived) stages: fn(trace, cfg) -> array."""

    stage: str
    fn: Callable[[Mapping[str, np.ndarray], Any], np.ndarray]


@dataclass
class WeightMapping:
    state: dict
    unmapped: list[str] = field(default_factory=list)  # canonical names with no user parameter
    leftover: list[str] = field(default_factory=list)  # user parameters nothing was mapped to
    misshaped: list[str] = field(default_factory=list)

    def check(self) -> "WeightMapping":
        problems = []
        if self.unmapped:
            problems.append(f"unmapped {len(self.unmapped)}: {', '.join(self.unmapped)}")
        if self.leftover:
            problems.append(f"left over {len(self.leftover)}: {', '.join(self.leftover)}")
        if self.misshaped:
            problems.append(f"mis-shaped {len(self.misshaped)}: {'; '.join(self.misshaped)}")
        if problems:
            raise WeightError("weight mapping — " + " | ".join(problems))
        return self


def map_weights(weights: Mapping[str, np.ndarray], mapping: Mapping[str, tuple[str, str]],
                target_shapes: Mapping[str, tuple[int, ...]]) -> WeightMapping:
    """canonical name → (user parameter name, rule in TRANSPOSE_RULES). Every problem is listed:
    canonical names without a user parameter, user parameters left without a value, shapes that
    do not fit after the transposition."""
    out = WeightMapping(state={})
    for canonical, value in weights.items():
        if canonical not in mapping:
            out.unmapped.append(canonical)
            continue
        user, rule = mapping[canonical]
        if rule not in TRANSPOSE_RULES:
            raise ValueError(f"{canonical}: unknown rule {rule!r}; known: {', '.join(TRANSPOSE_RULES)}")
        axes = TRANSPOSE_RULES[rule]
        array = np.asarray(value) if axes is None else np.transpose(value, axes)
        want = tuple(target_shapes.get(user, ()))
        if user not in target_shapes:
            out.unmapped.append(f"{canonical} -> {user} (no such parameter)")
        elif array.shape != want:
            out.misshaped.append(f"{canonical} -> {user}: {array.shape} vs {want}")
        else:
            out.state[user] = np.ascontiguousarray(array)
    out.leftover = sorted(set(target_shapes) - set(out.state) - {u for u, _ in mapping.values()})
    return out


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch
        return value.detach().cpu().numpy()
    if hasattr(value, "numpy"):  # TensorFlow
        return value.numpy()
    return np.asarray(value)


def _resolve_function(target: str):
    module_name, _, attr = target.partition(":")
    if not attr:
        raise ValueError(f"function tap {target!r}: write it as 'module.path:function'")
    return importlib.import_module(module_name), attr


@contextlib.contextmanager
def _wrapped_function(target: str, sink: Callable[[Any, tuple], None]) -> Iterator[None]:
    """Replace module.function by a wrapper that reports every call, for one forward pass."""
    module, attr = _resolve_function(target)
    original = getattr(module, attr)

    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        sink(result, args)
        return result

    setattr(module, attr, wrapper)
    try:
        yield
    finally:
        setattr(module, attr, original)


class AdapterModel:
    """A user's model behind the parity model interface (forward_train / forward_infer)."""

    def __init__(self, name: str, model: Any, run: Callable[[Any, Any, Any], Any], cfg, taps: Sequence[Tap],
                 derived: Sequence[Derived], submodule: Callable[[Any, str], Any], hook: Callable):
        self.backend, self.model, self.run, self.cfg = name, model, run, cfg
        self.taps, self.derived, self._submodule, self._hook = list(taps), list(derived), submodule, hook

    def _trace(self, batch, stages: Sequence[str]) -> dict[str, np.ndarray]:
        seen: dict[str, np.ndarray] = {}
        with contextlib.ExitStack() as stack:
            for tap in self.taps:
                def sink(value, args, tap=tap):
                    seen[tap.stage] = tap.convert(args[tap.arg] if tap.pre else value)
                if tap.function:
                    stack.enter_context(_wrapped_function(tap.target, sink))
                else:
                    stack.enter_context(self._hook(self._submodule(self.model, tap.target), tap.pre, sink))
            self.run(self.model, batch, self.cfg)
        for item in self.derived:
            seen[item.stage] = np.asarray(item.fn(seen, self.cfg))
        return {s: seen[s] for s in stages if s in seen}

    def forward_train(self, batch) -> dict[str, np.ndarray]:
        return self._trace(batch, TRAIN_STAGES)

    def forward_infer(self, batch) -> dict[str, np.ndarray]:
        return self._trace(batch, INFER_STAGES)


# -- PyTorch ------------------------------------------------------------------------------------

def _torch_submodule(model, path: str):
    return model if path in ("", ".") else model.get_submodule(path)


@contextlib.contextmanager
def _torch_hook(module, pre: bool, sink) -> Iterator[None]:
    if pre:
        handle = module.register_forward_pre_hook(lambda mod, args: sink(None, args))
    else:
        handle = module.register_forward_hook(lambda mod, args, out: sink(out, args))
    try:
        yield
    finally:
        handle.remove()


def torch_backend(name: str, make_model: Callable[[Any, Mapping[str, np.ndarray], str], Any],
                  run: Callable[[Any, Any, Any], Any], taps: Sequence[Tap], derived: Sequence[Derived] = (),
                  devices: tuple[str, ...] = ("cpu", "cuda")) -> Backend:
    """A backend for an existing torch model. `make_model(cfg, weights, device)` builds it with the
    neutral weights (e.g. through `map_weights`); `run(model, batch, cfg)` calls it the way its
    own code does — the input convention lives there, once."""
    import torch

    def build(cfg, weights, device="cpu", **state):
        model = make_model(cfg, weights, device)

        def run_no_grad(m, batch, c):
            with torch.no_grad():
                return run(m, batch, c)

        return AdapterModel(name, model, run_no_grad, cfg, taps, derived, _torch_submodule, _torch_hook)

    from models_torch import device as torch_device

    return Backend(name, "torch", devices, build_fn=build, configure_fn=torch_device.configure,
                   stages=tuple(s for s in TRAIN_STAGES if s in {t.stage for t in taps} | {d.stage for d in derived}),
                   checkpoints=False)


# -- Keras --------------------------------------------------------------------------------------

def keras_backend(name: str, make_model: Callable[[Any, Mapping[str, np.ndarray], str], Any],
                  inputs: Callable[[Any, Any], Any], layers: Mapping[str, str], layout: Mapping[str, str] = {},
                  derived: Sequence[Derived] = ()) -> Backend:
    """A backend for an existing Keras functional model: a sub-model that outputs the named
    layers' outputs (stage → layer name); `inputs(batch, cfg)` gives what the model is called with."""

    def build(cfg, weights, device="cpu", **state):
        import keras

        model = make_model(cfg, weights, device)
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
                    seen[item.stage] = np.asarray(item.fn(seen, cfg))
                return {s: seen[s] for s in wanted if s in seen}

            def forward_train(self, batch):
                return self._trace(batch, TRAIN_STAGES)

            def forward_infer(self, batch):
                return self._trace(batch, INFER_STAGES)

        return KerasModel()

    from models_tf import device as tf_device

    return Backend(name, "tensorflow", ("cpu", "cuda"), build_fn=build, configure_fn=tf_device.configure,
                   stages=tuple(s for s in TRAIN_STAGES if s in set(layers) | {d.stage for d in derived}),
                   checkpoints=False)
