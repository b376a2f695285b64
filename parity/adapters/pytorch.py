"""`torch_backend`: an existing torch model as a parity backend."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np

from parity.adapters.taps import AdapterModel, AdapterSpec, Derived, Tap
from parity.adapters.weights import _to_numpy, neutral_weights
from parity.backends import Backend


def _loss_and_gradients(adapter: AdapterModel, batch):
    """(loss terms as floats, gradients by canonical name in the neutral layout) from the user's
    loss; only the tensors the weight mapping covers (and log_scale, when mapped) have one."""
    from parity.run.training import LOG_SCALE

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
        adapter = AdapterModel(spec, model, cfg, _torch_submodule, _torch_hook, no_grad=torch.no_grad,
                               as_like=_torch_like)
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
                   builds_from_state=set_state is not None,
                   capabilities=frozenset({"teacher_forcing", "partial_gradients", *(["gradients"] if loss else [])}))
