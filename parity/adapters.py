"""Adapters: turn an existing implementation into a parity backend without rewriting it.

A port rarely has the reference's structure, so an adapter says, stage by stage, where the value
lives in the user's model and how to read it:

- `Tap(stage, "encoder")` — the output of the submodule at that dotted path (a forward hook);
  `pre=True` taps its input instead (a forward pre-hook); `pick=0` takes one element of a tuple;
- `Tap(stage, "mypkg.physics:merge", function=True)` — a module-level function, wrapped for the
  duration of one forward call and restored afterwards;
- `layout="BCHW"` converts channels-first to the trace's channels-last; `squeeze=(1,)` drops an
  extra singleton axis; `transform=fn` any other conversion (e.g. add the channel axis of a
  (B, M, M) canvas), applied last;
- `when=lambda cfg: ...` — a tap (or a `Derived`) that exists only for some configs (no canvas at
  gridsize 1); `calls=1` (the default) — how often the tap must fire in one forward call (None:
  at least once; `occurrence` picks which call's value is kept);
- `Derived(stage, fn)` — a stage the model never materialises but that follows from tapped ones
  (e.g. intensity = scaled²), fn(trace, cfg);
- `map_weights` — the neutral weights (canonical names, Keras layout) → the user's parameter
  names, with a transposition rule per tensor; reports unmapped and left-over parameters, and
  separately those declared `unused` (no neutral counterpart on purpose).

Wiring is checked before numbers: a tap that did not fire as often as declared, a tap whose
target does not exist or a derived stage whose inputs are missing is a `WiringError` (exit 2)
naming the tap, its target and the likely cause. Stages neither tapped nor derived are declared
not provided: the comparison lists them as "not provided by <name>", never a silent pass.
`torch_backend(...)` and `keras_backend(...)` return a `parity.backends.Backend`; register it
with `parity.backends.register` or through the entry-point group `ptycho_parity.backends`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np

from parity.backends import Backend
from parity.results import WiringError
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
    transform: Optional[Callable[[np.ndarray], np.ndarray]] = None  # any other conversion, applied last
    when: Optional[Callable[[Any], bool]] = None  # the configs the stage exists in (None: every one)
    calls: Optional[int] = 1  # how often it must fire per forward call (None: at least once)
    occurrence: int = 0  # which call's value is kept (0 the first, -1 the last)
    infer: bool = True  # False: the inference entry point (run_infer) does not pass through it

    def active(self, cfg) -> bool:
        return self.when is None or bool(self.when(cfg))

    def describe(self) -> str:
        kind = "function" if self.function else "submodule input" if self.pre else "submodule"
        return f"tap {self.stage!r} on {kind} {self.target!r}"

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
        if self.transform is not None:
            array = np.asarray(self.transform(array))
        return np.ascontiguousarray(array)


@dataclass(frozen=True)
class Derived:
    """A stage computed from other (tapped or derived) stages: fn(trace, cfg) -> array."""

    stage: str
    fn: Callable[[Mapping[str, np.ndarray], Any], np.ndarray]
    when: Optional[Callable[[Any], bool]] = None  # the configs the stage exists in (None: every one)

    def active(self, cfg) -> bool:
        return self.when is None or bool(self.when(cfg))


@dataclass
class WeightMapping:
    state: dict
    unmapped: list[str] = field(default_factory=list)  # canonical names with no user parameter
    leftover: list[str] = field(default_factory=list)  # user parameters nothing was mapped to
    misshaped: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)  # user parameters declared to have no counterpart

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
                target_shapes: Mapping[str, tuple[int, ...]], unused: Sequence[str] = ()) -> WeightMapping:
    """canonical name → (user parameter name, rule in TRANSPOSE_RULES). Every problem is listed:
    canonical names without a user parameter, user parameters left without a value, shapes that
    do not fit after the transposition. `unused`: names or globs of the user's parameters that
    have no neutral counterpart on purpose; they are listed apart, never as left over."""
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
    rest = sorted(set(target_shapes) - set(out.state) - {u for u, _ in mapping.values()})
    out.unused = [n for n in rest if any(fnmatch.fnmatchcase(n, pattern) for pattern in unused)]
    out.leftover = [n for n in rest if n not in out.unused]
    return out


def neutral_weights(state: Mapping[str, Any], mapping: Mapping[str, tuple[str, str]]) -> dict[str, np.ndarray]:
    """The inverse of `map_weights`: the user's tensors (by their names) back to canonical names
    in the neutral (Keras) layout."""
    out = {}
    for canonical, (user, rule) in mapping.items():
        if user not in state:
            continue
        array = _to_numpy(state[user])
        axes = TRANSPOSE_RULES[rule]
        out[canonical] = np.ascontiguousarray(array if axes is None else np.transpose(array, np.argsort(axes)))
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


@dataclass
class AdapterSpec:
    """Everything an adapter knows about a user's model besides how to build it (torch_backend)."""

    name: str
    run: Callable[[Any, Any, Any], Any]
    taps: Sequence[Tap] | Callable[[Any], Sequence[Tap]]
    derived: Sequence[Derived] = ()
    run_infer: Optional[Callable[[Any, Any, Any], Any]] = None
    mapping: Optional[Callable[[Any], Mapping[str, tuple[str, str]]]] = None
    get_state: Optional[Callable[[Any], Mapping[str, Any]]] = None
    loss: Optional[Callable[[Any, Any, Any], Any]] = None
    save: Optional[Callable[[Any, Any], Any]] = None

    def taps_for(self, cfg) -> list[Tap]:
        taps = self.taps(cfg) if callable(self.taps) else self.taps
        return [t for t in taps if t.active(cfg)]

    def stages_for(self, cfg) -> tuple[str, ...]:
        names = {t.stage for t in self.taps_for(cfg)} | {d.stage for d in self.derived if d.active(cfg)}
        return tuple(s for s in TRAIN_STAGES if s in names)

    def infer_stages_for(self, cfg) -> tuple[str, ...]:
        """The stages the inference path gives: every provided one up to object.trimmed, less
        the taps the user's own inference entry point does not pass."""
        off = {t.stage for t in self.taps_for(cfg) if not t.infer} if self.run_infer is not None else set()
        return tuple(s for s in self.stages_for(cfg) if s in INFER_STAGES and s not in off)


def _check_fired(tap: Tap, fired: int, name: str) -> None:
    if fired == 0:
        hint = (" A submodule called through `.forward(...)` bypasses module hooks: tap the function it "
                "calls (function=True) or the caller instead." if not tap.function else
                " The model may call the function through another name (`from module import function` binds "
                "it before the tap wraps it): tap the name the model's code looks up.")
        raise WiringError(f"{name}: {tap.describe()} never fired during the forward call.{hint}")
    if tap.calls is not None and fired != tap.calls:
        raise WiringError(f"{name}: {tap.describe()} fired {fired} times, declared calls={tap.calls} "
                          f"(give calls=None and an occurrence if it is meant to fire more than once)")


class AdapterModel:
    """A user's model behind the parity model interface (forward_train / forward_infer, and where
    the adapter says how: save, weights, state, loss_and_gradients)."""

    def __init__(self, spec: AdapterSpec, model: Any, cfg, submodule: Callable[[Any, str], Any], hook: Callable,
                 no_grad: Callable[[], Any] = contextlib.nullcontext):
        self.spec, self.backend, self.model, self.cfg = spec, spec.name, model, cfg
        self._submodule, self._hook, self._no_grad = submodule, hook, no_grad
        self.partial_gradients = True  # tensors the mapping does not cover read "not provided"

    def _target(self, tap: Tap):
        try:
            return self._submodule(self.model, tap.target)
        except (AttributeError, KeyError, IndexError) as exc:
            raise WiringError(f"{self.backend}: {tap.describe()}: the model has no such submodule ({exc})") from None

    def _trace(self, batch, stages: Sequence[str], run: Callable, required: Sequence[str]) -> dict[str, np.ndarray]:
        seen: dict[str, list] = {}
        taps = self.spec.taps_for(self.cfg)
        with contextlib.ExitStack() as stack:
            for tap in taps:
                def sink(value, args, tap=tap):
                    seen.setdefault(tap.stage, []).append(args[tap.arg] if tap.pre else value)
                if tap.function:
                    try:
                        stack.enter_context(_wrapped_function(tap.target, sink))
                    except (ImportError, AttributeError, ValueError) as exc:
                        raise WiringError(f"{self.backend}: {tap.describe()}: {exc}") from None
                else:
                    stack.enter_context(self._hook(self._target(tap), tap.pre, sink))
            with self._no_grad():
                run(self.model, batch, self.cfg)
        trace = {}
        for tap in taps:
            values = seen.get(tap.stage, [])
            if tap.stage in required:
                _check_fired(tap, len(values), self.backend)
            if values:
                trace[tap.stage] = tap.convert(values[tap.occurrence])
        for item in self.spec.derived:
            if item.active(self.cfg) and item.stage in stages:
                try:
                    trace[item.stage] = np.asarray(item.fn(trace, self.cfg))
                except KeyError as exc:
                    raise WiringError(f"{self.backend}: derived stage {item.stage!r} needs {exc.args[0]!r}, which "
                                      f"no tap provides for this config (give the Derived a when=)") from None
        return {s: trace[s] for s in stages if s in trace}

    def forward_train(self, batch) -> dict[str, np.ndarray]:
        return self._trace(batch, TRAIN_STAGES, self.spec.run, TRAIN_STAGES)

    def forward_infer(self, batch) -> dict[str, np.ndarray]:
        if self.spec.run_infer is None:
            return self._trace(batch, INFER_STAGES, self.spec.run, TRAIN_STAGES)
        return self._trace(batch, INFER_STAGES, self.spec.run_infer, self.spec.infer_stages_for(self.cfg))

    # -- what the checkpoint and gradient checks need, where the adapter says how ---------------
    def save(self, path) -> Any:
        written = self.spec.save(self.model, path)
        return path if written is None else written

    def weights(self) -> dict[str, np.ndarray]:
        """The model's parameters as neutral weights, through the inverse of the weight mapping."""
        return neutral_weights(self.model.state_dict(), self.spec.mapping(self.cfg))

    def state(self) -> dict:
        state = dict(self.spec.get_state(self.model))
        state.setdefault("probe", None)
        return state


def _loss_and_gradients(adapter: AdapterModel, batch):
    """(loss terms as floats, gradients by canonical name in the neutral layout) from the user's
    loss; only the tensors the weight mapping covers (and log_scale, when mapped) have one."""
    from parity.training import LOG_SCALE

    model, cfg = adapter.model, adapter.cfg
    model.zero_grad(set_to_none=True)
    terms = adapter.spec.loss(model, batch, cfg)
    terms = terms if isinstance(terms, Mapping) else {"loss": terms}
    terms["loss"].backward()
    params = dict(model.named_parameters())
    grads = {k: v.grad for k, v in params.items() if v.grad is not None}
    mapping = dict(adapter.spec.mapping(cfg)) if adapter.spec.mapping else {}
    out = neutral_weights(grads, {k: v for k, v in mapping.items() if k != LOG_SCALE})
    if LOG_SCALE in mapping and mapping[LOG_SCALE][0] in grads:
        out[LOG_SCALE] = _to_numpy(grads[mapping[LOG_SCALE][0]]).reshape(())
    model.zero_grad(set_to_none=True)
    return {k: float(_to_numpy(v)) for k, v in terms.items()}, out


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
                  run: Callable[[Any, Any, Any], Any], taps: Sequence[Tap] | Callable[[Any], Sequence[Tap]],
                  derived: Sequence[Derived] = (), devices: tuple[str, ...] = ("cpu", "cuda"), *,
                  run_infer: Optional[Callable[[Any, Any, Any], Any]] = None,
                  mapping: Optional[Callable[[Any], Mapping[str, tuple[str, str]]]] = None,
                  get_state: Optional[Callable[[Any], Mapping[str, Any]]] = None,
                  set_state: Optional[Callable[[Any, Mapping[str, Any]], None]] = None,
                  save: Optional[Callable[[Any, Any], Any]] = None,
                  load: Optional[Callable[[Any, Any, str], Any]] = None,
                  loss: Optional[Callable[[Any, Any, Any], Any]] = None) -> Backend:
    """A backend for an existing torch model. Required: `make_model(cfg, weights, device)` builds
    it with the neutral weights (e.g. through `map_weights`); `run(model, batch, cfg)` calls it the
    way its own code does — the input convention lives there, once; `taps` (a list, or a callable
    of the config). Each optional argument switches on the checks that need it:
    `run_infer(model, batch, cfg)` — the user's inference entry point, when it differs from
    training (train ↔ infer paths); `save(model, path)` and `load(path, cfg, device) -> model` in
    the user's own checkpoint format (checkpoint round trip); `mapping(cfg)` (canonical name ->
    (parameter, rule), as for `map_weights`) with `get_state(model) -> {"log_scale": float}`
    (the checkpoint crosses to the reference) and `set_state(model, state)` (the reference's
    crosses in); `loss(model, batch, cfg)` → a scalar tensor or {"loss", "loss.nll", "loss.mae"}
    (gradients, read from the parameters and mapped back through `mapping`)."""
    import torch

    spec = AdapterSpec(name, run, taps, derived, run_infer, mapping, get_state, loss, save)

    def adapt(model, cfg) -> AdapterModel:
        adapter = AdapterModel(spec, model, cfg, _torch_submodule, _torch_hook, no_grad=torch.no_grad)
        if loss is not None:
            adapter.loss_and_gradients = lambda batch: _loss_and_gradients(adapter, batch)
        return adapter

    def build(cfg, weights, device="cpu", probe=None, log_scale=None, **state):
        model = make_model(cfg, weights, device)
        if log_scale is not None:  # another backend's checkpoint crossing in
            set_state(model, {"log_scale": log_scale, "probe": probe})
        return adapt(model, cfg)

    def load_adapted(path, cfg=None, device="cpu"):
        return adapt(load(path, cfg, device), cfg)

    from models_torch import device as torch_device

    return Backend(name, "torch", devices, build_fn=build, configure_fn=torch_device.configure,
                   load_fn=load_adapted if load is not None else None, stages=spec.stages_for,
                   infer_stages=spec.infer_stages_for,
                   checkpoints=save is not None and load is not None,
                   neutral_out=mapping is not None and get_state is not None,
                   builds_from_state=set_state is not None)


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
                   checkpoints=False, neutral_out=False, builds_from_state=False)
