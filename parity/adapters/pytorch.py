"""`torch_backend`: an existing torch model as a parity backend."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np

from parity.adapters.model import Framework, adapter_backend
from parity.adapters.taps import AdapterSpec, Derived, Tap
from parity.backends import Backend


def _torch_submodule(model, path: str):
    return model if path in ("", ".") else model.get_submodule(path)


@contextlib.contextmanager
def _torch_hook(module, pre: bool, sink) -> Iterator[None]:
    # what the sink returns, if not None, replaces the module's inputs or output (teacher forcing)
    if pre:
        handle = module.register_forward_pre_hook(lambda mod, args: sink(None, args))
    else:
        handle = module.register_forward_hook(lambda mod, args, out: sink(out, args))
    try:
        yield
    finally:
        handle.remove()


def _torch_like(array: np.ndarray, like):
    """`array` as a tensor of `like`'s dtype on its device."""
    import torch

    from parity.run.results import CannotForce

    if not isinstance(like, torch.Tensor):
        raise CannotForce(f"the port's value there is a {type(like).__name__}, not a tensor")
    if np.iscomplexobj(array) and not like.is_complex():
        raise CannotForce(f"the reference's value is complex, the port's {like.dtype}: give the tap a transform "
                          f"and its inverse")
    return torch.from_numpy(array).to(device=like.device, dtype=like.dtype)


def torch_backend(name: str, make_model: Callable[[Any, Mapping[str, np.ndarray], str], Any],
                  run: Callable[[Any, Any, Any], Any], taps: Sequence[Tap] | Callable[[Any], Sequence[Tap]],
                  derived: Sequence[Derived] = (), devices: tuple[str, ...] = ("cpu", "cuda"), *,
                  run_infer: Optional[Callable[[Any, Any, Any], Any]] = None,
                  mapping: Optional[Callable[[Any], Mapping[str, tuple[str, str]]]] = None,
                  get_state: Optional[Callable[[Any], Mapping[str, Any]]] = None,
                  set_state: Optional[Callable[[Any, Mapping[str, Any]], None]] = None,
                  save: Optional[Callable[[Any, Any], Any]] = None,
                  load: Optional[Callable[[Any, Any, str], Any]] = None,
                  loss: Optional[Callable[[Any, Any, Any], Any]] = None,
                  config: Optional[Mapping[str, str] | Callable[[Any], Mapping[str, Any]]] = None) -> Backend:
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
    (gradients, read from the parameters and mapped back through `mapping`); `config` — the
    model's effective config in ForwardConfig names, `{"offset": "cfg.step", ...}` (attribute paths
    on the model) or a callable model -> {field: value} (the config check)."""
    from models_torch import device as torch_device

    spec = AdapterSpec(name, run, taps, derived, run_infer, mapping, get_state, loss, save, config)
    return adapter_backend(spec, _framework(), make_model, devices, torch_device.configure, set_state=set_state,
                           load=load)


def _torch_gradients(model, terms: Callable[[], dict]) -> tuple[dict, dict]:
    """The loss terms and each parameter's gradient, by parameter name."""
    model.zero_grad(set_to_none=True)
    losses = terms()
    losses["loss"].backward()
    grads = {k: v.grad for k, v in model.named_parameters() if v.grad is not None}
    model.zero_grad(set_to_none=True)
    return losses, grads


def _framework() -> Framework:
    import torch

    return Framework("torch", _torch_submodule, _torch_hook, params=lambda model: model.state_dict(),
                     gradients=_torch_gradients, as_like=_torch_like, no_grad=torch.no_grad)
