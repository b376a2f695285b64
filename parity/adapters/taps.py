"""Taps and derived stages: where each stage's value lives in a user's model, read during one
forward call, with the wiring checked before any number is compared."""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np

from parity.adapters.weights import _to_numpy
from parity.run.results import CannotForce, WiringError
from parity.stages import INFER_STAGES, TRAIN_STAGES


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
    inverse: Optional[Callable[[np.ndarray], np.ndarray]] = None  # undoes `transform`, for teacher forcing

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

    # -- teacher forcing: the reference's value put where the port's was ---------------------------
    def force_problem(self) -> Optional[str]:
        """Why the reference's value cannot be put in place of the port's here (None: it can)."""
        if self.transform is not None and self.inverse is None:
            return f"{self.describe()} has a transform and no inverse= that undoes it"
        if self.calls is None and self.occurrence < 0:
            return f"{self.describe()} fires an undeclared number of times (give calls=)"
        return None

    def forced_call(self) -> int:
        """Which call's value is replaced: the one whose value the trace keeps."""
        return self.occurrence if self.occurrence >= 0 else self.calls + self.occurrence

    def unconvert(self, array: np.ndarray, like: Any, as_like: Callable[[np.ndarray, Any], Any]) -> Any:
        """The inverse of `convert`: a canonical array back into the port's own value, shaped and
        typed as `like` (what the port computed there; `as_like` makes its framework's tensor)."""
        array = np.asarray(array)
        if self.transform is not None:
            array = np.asarray(self.inverse(array))
        if self.layout == "BCHW":
            array = np.moveaxis(array, -1, 1)
        if self.squeeze:
            array = np.expand_dims(array, self.squeeze)
        target = like[self.pick] if self.pick is not None else like
        if tuple(array.shape) != tuple(target.shape):
            raise CannotForce(f"{self.describe()}: the reference's value converts to shape {tuple(array.shape)}, "
                              f"the port's is {tuple(target.shape)}")
        value = as_like(np.ascontiguousarray(array), target)
        if self.pick is None:
            return value
        items = list(like)
        items[self.pick] = value
        return type(like)(items) if isinstance(like, tuple) else items


@dataclass(frozen=True)
class Derived:
    """A stage computed from other (tapped or derived) stages: fn(trace, cfg) -> array."""

    stage: str
    fn: Callable[[Mapping[str, np.ndarray], Any], np.ndarray]
    when: Optional[Callable[[Any], bool]] = None  # the configs the stage exists in (None: every one)
    infer: bool = True  # False: not on the inference entry point's path (it reads a tap with infer=False)

    def active(self, cfg) -> bool:
        return self.when is None or bool(self.when(cfg))


def _resolve_function(target: str):
    module_name, _, attr = target.partition(":")
    if not attr:
        raise ValueError(f"function tap {target!r}: write it as 'module.path:function'")
    return importlib.import_module(module_name), attr


def reporting(original: Callable, pre: bool, sink: Callable[[Any, tuple], Any]) -> Callable:
    """`original` wrapped so that every call reports its arguments (`pre`) or its result to `sink`;
    what the sink returns, if not None, replaces them (teacher forcing)."""
    def wrapper(*args, **kwargs):
        if pre:
            args = sink(None, args) or args
        result = original(*args, **kwargs)
        if not pre:
            replaced = sink(result, args)
            result = result if replaced is None else replaced
        return result

    return wrapper


@contextlib.contextmanager
def _wrapped_function(target: str, pre: bool, sink: Callable[[Any, tuple], Any]) -> Iterator[None]:
    """Replace module.function by a `reporting` wrapper, for one forward pass."""
    module, attr = _resolve_function(target)
    original = getattr(module, attr)
    setattr(module, attr, reporting(original, pre, sink))
    try:
        yield
    finally:
        setattr(module, attr, original)


@dataclass
class AdapterSpec:
    """Everything an adapter knows about a user's model besides how to build it (torch_backend, keras_backend)."""

    name: str
    run: Callable[[Any, Any, Any], Any]
    taps: Sequence[Tap] | Callable[[Any], Sequence[Tap]]
    derived: Sequence[Derived] = ()
    run_infer: Optional[Callable[[Any, Any, Any], Any]] = None
    mapping: Optional[Callable[[Any], Mapping[str, tuple[str, str]]]] = None
    get_state: Optional[Callable[[Any], Mapping[str, Any]]] = None
    loss: Optional[Callable[[Any, Any, Any], Any]] = None
    save: Optional[Callable[[Any, Any], Any]] = None
    # the model's effective config in ForwardConfig names: {field: dotted attribute path on the
    # user's model} or a callable model -> {field: value} (parity.backends.effective)
    config: Optional[Mapping[str, str] | Callable[[Any], Mapping[str, Any]]] = None

    def taps_for(self, cfg) -> list[Tap]:
        taps = self.taps(cfg) if callable(self.taps) else self.taps
        return [t for t in taps if t.active(cfg)]

    def stages_for(self, cfg) -> tuple[str, ...]:
        names = {t.stage for t in self.taps_for(cfg)} | {d.stage for d in self.derived if d.active(cfg)}
        return tuple(s for s in TRAIN_STAGES if s in names)

    def infer_stages_for(self, cfg) -> tuple[str, ...]:
        """The stages the inference path gives: every provided one up to object.trimmed, less
        the taps the user's own inference entry point does not pass."""
        off = set()
        if self.run_infer is not None:
            off = ({t.stage for t in self.taps_for(cfg) if not t.infer}
                   | {d.stage for d in self.derived if d.active(cfg) and not d.infer})
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
