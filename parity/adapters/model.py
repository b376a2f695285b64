"""`AdapterModel`: a user's model behind the parity model interface, read through its taps, the
same for every framework; `Framework`: what differs between frameworks (how to reach a submodule,
hook it, read its parameters and gradients, make a tensor like the model's); `adapter_backend`:
the Backend of an adapter, its capabilities following from what the user gave."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from parity.adapters.taps import AdapterSpec, Derived, Tap, _check_fired, _wrapped_function
from parity.adapters.weights import _to_numpy, neutral_weights
from parity.backends import Backend
from parity.run.results import CannotForce, WiringError
from parity.stages import INFER_STAGES, STAGE_INPUTS, TRAIN_STAGES


@dataclass(frozen=True)
class Framework:
    """How an adapter reaches into one framework's models."""

    name: str  # the framework a Backend reports ("torch", "tensorflow")
    submodule: Callable[[Any, str], Any]  # (model, dotted path) -> the submodule or layer
    hook: Callable[[Any, bool, Callable], Any]  # (submodule, pre, sink) -> a context manager; see AdapterModel._trace
    params: Callable[[Any], Mapping[str, Any]]  # model -> {parameter name: tensor}
    gradients: Callable[[Any, Callable[[], dict]], tuple]  # (model, terms) -> (terms, {parameter name: gradient})
    as_like: Callable[[np.ndarray, Any], Any]  # (array, the model's value) -> a tensor like it
    no_grad: Callable[[], Any] = contextlib.nullcontext


class AdapterModel:
    """A user's model behind the parity model interface (forward_train / forward_infer, and where
    the adapter says how: save, weights, state, loss_and_gradients), the same for every framework."""

    slices = False  # a stage is computed through a whole forward call: on the whole batch only

    def __init__(self, spec: AdapterSpec, model: Any, cfg, framework: Framework):
        self.spec, self.backend, self.model, self.cfg, self.framework = spec, spec.name, model, cfg, framework

    def _target(self, tap: Tap):
        try:
            return self.framework.submodule(self.model, tap.target)
        except (AttributeError, KeyError, IndexError, ValueError) as exc:
            raise WiringError(f"{self.backend}: {tap.describe()}: the model has no such submodule ({exc})") from None

    def _trace(self, batch, stages: Sequence[str], run: Callable, required: Sequence[str],
               force: Mapping[str, np.ndarray] = {}) -> dict[str, np.ndarray]:
        """One forward call, every active tap read; `force`: stage -> the reference's value, put in
        place of the port's where the tap reads it (the port's own value is still recorded)."""
        seen: dict[str, list] = {}
        forced: set[str] = set()
        taps = self.spec.taps_for(self.cfg)
        with contextlib.ExitStack() as stack:
            for tap in taps:
                def sink(value, args, tap=tap):
                    own = args[tap.arg] if tap.pre else value
                    seen.setdefault(tap.stage, []).append(own)
                    if tap.stage not in force or len(seen[tap.stage]) - 1 != tap.forced_call():
                        return None
                    forced.add(tap.stage)
                    new = tap.unconvert(force[tap.stage], own, self.framework.as_like)
                    return args[:tap.arg] + (new,) + args[tap.arg + 1:] if tap.pre else new
                if tap.function:
                    try:
                        stack.enter_context(_wrapped_function(tap.target, tap.pre, sink))
                    except (ImportError, AttributeError, ValueError) as exc:
                        raise WiringError(f"{self.backend}: {tap.describe()}: {exc}") from None
                else:
                    stack.enter_context(self.framework.hook(self._target(tap), tap.pre, sink))
            with self.framework.no_grad():
                run(self.model, batch, self.cfg)
        trace = {}
        if set(force) - forced:
            raise CannotForce(f"{self.backend}: the taps of {', '.join(sorted(set(force) - forced))} did not fire "
                              f"at the call whose value the trace keeps")
        for tap in taps:
            values = seen.get(tap.stage, [])
            if tap.stage in required:
                _check_fired(tap, len(values), self.backend)
            if values and -len(values) <= tap.occurrence < len(values):  # not every path calls it as often
                trace[tap.stage] = tap.convert(values[tap.occurrence])
        for item in self.spec.derived:
            if item.active(self.cfg) and item.stage in stages:
                try:
                    trace[item.stage] = np.asarray(item.fn(trace, self.cfg))
                except KeyError as exc:
                    raise WiringError(self._derived_misses(item, exc.args[0], run)) from None
        return {s: trace[s] for s in stages if s in trace}

    def _derived_misses(self, item: Derived, needed: str, run: Callable) -> str:
        """The wiring error of a derived stage whose input is not in the trace, with the advice that fits."""
        head = f"{self.backend}: derived stage {item.stage!r} needs {needed!r}"
        off_path = {t.stage for t in self.spec.taps_for(self.cfg) if not t.infer}
        if run is self.spec.run_infer and needed in off_path:
            return (f"{head}, which is not on the inference path (its tap has infer=False): give the Derived "
                    f"infer=False too")
        return f"{head}, which no tap provides for this config (give the Derived a when=)"

    def forward_train(self, batch) -> dict[str, np.ndarray]:
        return self._trace(batch, TRAIN_STAGES, self.spec.run, TRAIN_STAGES)

    def forward_infer(self, batch) -> dict[str, np.ndarray]:
        if self.spec.run_infer is None:
            return self._trace(batch, INFER_STAGES, self.spec.run, TRAIN_STAGES)
        on_path = self.spec.infer_stages_for(self.cfg)
        return self._trace(batch, on_path, self.spec.run_infer, on_path)

    def stage(self, name: str, inputs: Mapping[str, np.ndarray], batch) -> np.ndarray:
        """Stage `name` as the port computes it from the given values of the stages it reads
        (teacher forcing, for the stage-local error): one forward call in which each input's tap
        puts the given value in place of the port's, and `name`'s tap is read. A derived stage is
        its function of the given inputs. CannotForce where an input has no tap that can be forced."""
        derived, force = self._forcing(name, inputs)
        if derived is not None:
            return derived
        return self._trace(batch, (name,), self.spec.run, (name, *force), force=force)[name]

    def stages(self, wanted: Mapping[str, Mapping[str, np.ndarray]], batch) -> dict:
        """{stage: its value from its given inputs, or the CannotForce that says why it has none},
        for every stage of `wanted` ({stage: inputs}, the reference's values), in ONE forward call:
        every input of every stage is put in at once, so each stage still reads exactly the values
        it was given (what `stage` gives, one call per stage, where a stage reads only what it
        declares). A forward call is what an adapter's stage costs: the origins of a diverging port
        take one instead of one per stage. Where the taps to force do not all fire as asked, each
        stage is computed on its own (its own CannotForce says which)."""
        out, force = {}, {}
        for name, inputs in wanted.items():
            try:
                derived, needs = self._forcing(name, inputs)
            except CannotForce as exc:
                out[name] = exc
                continue
            if derived is not None:
                out[name] = derived
            else:
                force.update(needs)
        rest = [name for name in wanted if name not in out]
        if rest:
            try:
                trace = self._trace(batch, rest, self.spec.run, (*rest, *force), force=force)
            except CannotForce:  # the taps to force did not all fire as asked: each stage on its own
                trace = {}
                for name in rest:
                    try:
                        trace[name] = self.stage(name, wanted[name], batch)
                    except CannotForce as exc:
                        trace[name] = exc
            out.update({name: trace[name] for name in rest})
        return out

    def _forcing(self, name: str, inputs: Mapping[str, np.ndarray]):
        """(the derived stage's value, {}) or (None, {input: value to put in through its tap});
        CannotForce where `name` has no tap or an input cannot be put in."""
        derived = {d.stage: d for d in self.spec.derived if d.active(self.cfg)}
        taps = {t.stage: t for t in self.spec.taps_for(self.cfg)}
        if name in derived:
            try:
                return np.asarray(derived[name].fn(dict(inputs), self.cfg)), {}
            except KeyError as exc:
                raise CannotForce(f"{name} is derived from {exc.args[0]}, not from the stages it reads "
                                  f"({', '.join(STAGE_INPUTS[name])})") from None
        if name not in taps:
            raise CannotForce(f"no tap reads {name}")
        force = {}
        for key, value in inputs.items():
            if not STAGE_INPUTS.get(key):  # read from the batch: the same on both sides already
                continue
            if key not in taps:
                how = "derived" if key in derived else "not tapped"
                raise CannotForce(f"its input {key} is {how}: no value of the port's can be replaced by the "
                                  f"reference's")
            problem = taps[key].force_problem()
            if problem is not None:
                raise CannotForce(f"its input {key}: {problem}")
            force[key] = value
        return None, force

    # -- what the checkpoint and gradient checks need, where the adapter says how ---------------
    def save(self, path) -> Any:
        written = self.spec.save(self.model, path)
        return path if written is None else written

    def weights(self) -> dict[str, np.ndarray]:
        """The model's parameters as neutral weights, through the inverse of the weight mapping."""
        from parity.run.training import LOG_SCALE  # state (state()), not a weight, where the mapping names it

        mapping = {k: v for k, v in self.spec.mapping(self.cfg).items() if k != LOG_SCALE}
        return neutral_weights(self.framework.params(self.model), mapping)

    def state(self) -> dict:
        state = dict(self.spec.get_state(self.model))
        state.setdefault("probe", None)
        return state

    def effective_config(self) -> Optional[dict]:
        """The user's model's settings in ForwardConfig names, through the adapter's `config=`
        (None where it gives none: the config check is not run for it)."""
        from parity.backends.effective import read_declared

        return None if self.spec.config is None else read_declared(self.model, self.spec.config)

    def loss_and_gradients(self, batch):
        """(loss terms as floats, gradients by canonical name in the neutral layout) from the user's
        loss; only the tensors the weight mapping covers (and log_scale, when mapped) have one."""
        from parity.run.training import LOG_SCALE

        def terms():
            out = self.spec.loss(self.model, batch, self.cfg)
            return dict(out) if isinstance(out, Mapping) else {"loss": out}

        losses, grads = self.framework.gradients(self.model, terms)
        mapping = dict(self.spec.mapping(self.cfg)) if self.spec.mapping else {}
        out = neutral_weights(grads, {k: v for k, v in mapping.items() if k != LOG_SCALE})
        if LOG_SCALE in mapping and mapping[LOG_SCALE][0] in grads:
            out[LOG_SCALE] = _to_numpy(grads[mapping[LOG_SCALE][0]]).reshape(())
        return {k: float(_to_numpy(v)) for k, v in losses.items()}, out


def adapter_backend(spec: AdapterSpec, framework: Framework, make_model: Callable, devices: tuple[str, ...],
                    configure: Callable, *, set_state: Optional[Callable] = None,
                    load: Optional[Callable] = None) -> Backend:
    """The Backend of an adapter, whatever its framework: what it can do follows from what the
    user gave (save and load: checkpoints; mapping and get_state: neutral weights out; set_state:
    built from another backend's state; loss: gradients), declared once here."""

    def adapt(model, cfg) -> AdapterModel:
        return AdapterModel(spec, model, cfg, framework)

    def build(cfg, weights, device="cpu", probe=None, log_scale=None, **state):
        model = make_model(cfg, weights, device)
        if log_scale is not None:  # another backend's checkpoint crossing in
            set_state(model, {"log_scale": log_scale, "probe": probe})
        return adapt(model, cfg)

    def load_adapted(path, cfg=None, device="cpu"):
        return adapt(load(path, cfg, device), cfg)

    return Backend(spec.name, framework.name, devices, build_fn=build, configure_fn=configure,
                   load_fn=load_adapted if load is not None else None, stages=spec.stages_for,
                   infer_stages=spec.infer_stages_for,
                   checkpoints=spec.save is not None and load is not None,
                   neutral_out=spec.mapping is not None and spec.get_state is not None,
                   builds_from_state=set_state is not None,
                   capabilities=frozenset({"teacher_forcing", "partial_gradients", *(["gradients"] if spec.loss else [])}))
