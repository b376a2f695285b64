"""Backends and their registry. The engine knows backends only through here.

A backend is a name, its framework and version, the devices it supports, `configure(device)`
(returns the precision/determinism flags it applied), `build(cfg, weights, device, **state)` → a
model with `forward_train(batch)`, `forward_infer(batch)`, `save(path)`, `weights()`, `state()`,
and `load(path, device)`. Built-ins: `tensorflow` (the reference), `torch` (the port), `numpy`
(the framework-free third opinion). Other packages register theirs under the entry-point group
`ptycho_parity.backends`; the entry point names a `Backend` or a no-argument callable returning
one.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field, fields
from typing import Callable, Mapping, Optional

ENTRY_POINT_GROUP = "ptycho_parity.backends"
# What a backend's models can do beyond the forward paths, declared once per backend (`Backend.
# capabilities`, or a built-in package's CAPABILITIES); a check that needs one reads it from here.
CAPABILITIES = {
    "gradients": "model.loss_and_gradients(batch): the loss terms and the gradient of every weight",
    "partial_gradients": "its loss gives only some terms and its mapping only some tensors (an adapter)",
    "adam_steps": "model.train_steps(batch, steps, adam): K optimizer steps",
    "teacher_forcing": "model.stage(name, inputs, batch): one stage from given inputs (the origins check)",
}


class BackendError(ValueError):
    """An unknown backend, or one that cannot be loaded; one line naming it."""


class BackendUnavailable(BackendError):
    """A known backend whose framework is not installed here (say TensorFlow on a torch-only GPU
    runner); one line naming the missing package."""


@dataclass(frozen=True)
class Backend:
    name: str
    framework: str
    devices: tuple[str, ...]
    package: Optional[str] = None  # a module with build/load and a `device.configure` (built-ins)
    build_fn: Optional[Callable] = field(default=None, repr=False)
    load_fn: Optional[Callable] = field(default=None, repr=False)
    configure_fn: Optional[Callable] = field(default=None, repr=False)
    version_fn: Optional[Callable[[], str]] = field(default=None, repr=False)
    # (variable, value) pairs its framework reads once, when it is imported, that decide its
    # numbers: each is set before the framework is imported, unless the user set it
    # (`set_framework_env`); a framework someone else imported first got what the process had
    framework_env: tuple[tuple[str, str], ...] = ()
    # capabilities (docs/design.md §10); the checks a backend lacks one for read "not run: why".
    # The stages it computes (None: all; or a callable of the config, for stages that exist only
    # in some configs); the others read "not provided by <name>".
    stages: Optional[tuple[str, ...] | Callable] = None
    checkpoints: bool = True  # save/load: the round-trip check
    neutral_out: bool = True  # a loaded model gives weights() and state() (its checkpoint crosses)
    builds_from_state: bool = True  # build(cfg, weights, probe=, log_scale=) (another's checkpoint crosses in)
    install_hint: str = ""  # how to get the framework where it is missing (built-ins)
    recorded: bool = False  # a record replayed (parity.recorded): no framework to import, no live model

    # the stages its inference path gives (None: every provided stage up to object.trimmed); an
    # adapter whose own inference entry point passes fewer taps says so here
    infer_stages: Optional[Callable] = None
    # which of CAPABILITIES its models have; None: what its `package` declares (CAPABILITIES
    # there), or none for a backend without a package
    capabilities: Optional[frozenset] = None

    def can(self, capability: str) -> bool:
        """Whether this backend's models have `capability` (a key of CAPABILITIES), as declared."""
        if capability not in CAPABILITIES:
            raise ValueError(f"unknown capability {capability!r}; known: {', '.join(CAPABILITIES)}")
        declared = self.capabilities
        if declared is None:
            declared = (getattr(self._module(), "CAPABILITIES", frozenset()) if self.package is not None
                        else frozenset())
        return capability in declared

    def trains(self) -> bool:
        """Loss, gradients and optimizer steps: what the training checks and a golden's gradients need."""
        return self.can("gradients") and self.can("adam_steps")

    def stages_for(self, cfg=None) -> Optional[tuple[str, ...]]:
        return self.stages(cfg) if callable(self.stages) else self.stages

    def infer_stages_for(self, cfg=None) -> tuple[str, ...]:
        from parity.stages import INFER_STAGES

        if self.infer_stages is not None:
            return tuple(self.infer_stages(cfg))
        missing = set(self.not_provided(cfg))
        return tuple(s for s in INFER_STAGES if s not in missing)

    def not_provided(self, cfg=None) -> tuple[str, ...]:
        from parity.stages import TRAIN_STAGES

        stages = self.stages_for(cfg)
        return () if stages is None else tuple(s for s in TRAIN_STAGES if s not in stages)

    def missing(self) -> Optional[str]:
        """Why this backend cannot run here (its framework is not installed), or None. Looks the
        framework up without importing it."""
        if self.recorded or importlib.util.find_spec(self.framework) is not None:
            return None
        return (f"backend {self.name!r} needs the {self.framework!r} package, which is not installed"
                + (f" ({self.install_hint})" if self.install_hint else ""))

    def require(self) -> "Backend":
        """This backend, or BackendUnavailable naming the missing package."""
        reason = self.missing()
        if reason:
            raise BackendUnavailable(reason)
        return self

    def device_for(self, asked: str) -> str:
        """The device this backend runs on when `asked` is the run's device: a CPU-only backend
        (numpy) stays on the CPU."""
        return "cpu" if self.devices == ("cpu",) else asked

    def _module(self, suffix: str = ""):
        return importlib.import_module(self.package + suffix)

    def version(self) -> str:
        if self.version_fn is not None:
            return self.version_fn()
        return importlib.import_module(self.framework).__version__

    def configure(self, device: str) -> dict:
        """Check `device` and apply the backend's flags; raises RuntimeError without it."""
        if self.configure_fn is not None:
            return self.configure_fn(device)
        return self._module(".device").configure(device)

    def build(self, cfg, weights, device: str = "cpu", **state):
        if self.build_fn is not None:
            return self.build_fn(cfg, weights, device=device, **state)
        return self._module().build(cfg, weights, device=device, **state)

    def load(self, path, device: str = "cpu", cfg=None):
        """A saved model back; `cfg` is the run's config, for loaders (adapters) that want it."""
        if self.load_fn is not None:
            return self.load_fn(path, cfg=cfg, device=device)
        if self.package is None:
            raise BackendError(f"backend {self.name!r} has no loader")
        return self._module().load(path, device=device)


def set_framework_env(backends, environ=os.environ) -> None:
    """Each backend's `framework_env` into `environ`, unless set there already (the user's choice
    stands). Where its framework is imported later, by whatever code imports it first, it
    computes as its backend expects: the pytest plugin does this in every test process before
    any test runs (a user's Keras reference imported first would otherwise give the built-in
    reference TensorFlow's defaults). A framework imported already read what the process had:
    left as it is, so that what the environment says of it stays true (models_tf's provenance)."""
    for backend in backends:
        if backend.framework in sys.modules:
            continue
        for name, value in backend.framework_env:
            environ.setdefault(name, value)


def backend_fields(backend: Backend) -> dict:
    """`backend`'s Backend fields, without those of a wrapper around it (a caching or an
    out-of-process backend is the same backend under the same name, with fields of its own)."""
    return {f.name: getattr(backend, f.name) for f in fields(Backend)}


BUILTIN: dict[str, Backend] = {
    # oneDNN's custom ops reorder float sums between builds and CPUs: the reference runs TensorFlow's
    # plain Eigen kernels
    "tensorflow": Backend("tensorflow", "tensorflow", ("cpu", "cuda"), package="models_tf",
                          framework_env=(("TF_ENABLE_ONEDNN_OPTS", "0"),),
                          install_hint="install the package with its 'cpu' or 'cuda' extra, or use --ref numpy"),
    "torch": Backend("torch", "torch", ("cpu", "cuda"), package="models_torch"),
    "numpy": Backend("numpy", "numpy", ("cpu",), package="models_numpy"),
}
_DISCOVERED: dict[str, Backend] = {}
_BROKEN: dict[str, str] = {}  # entry-point name -> why it cannot be loaded
_SCANNED = False  # the entry points are loaded once per process, a broken one included


def _entry_points():
    from importlib.metadata import entry_points

    return entry_points(group=ENTRY_POINT_GROUP)


def discover() -> dict[str, Backend]:
    """Built-ins and every installed third-party backend that loads, by name. One that does not
    load is kept in `broken()` with its error and fails only a run that asks for it: a broken
    third-party package must not hide the others."""
    global _SCANNED
    if not _SCANNED:
        _SCANNED = True
        _BROKEN.clear()
        for ep in _entry_points():
            if ep.name in BUILTIN:
                continue
            try:
                obj = ep.load()
                backend = obj() if callable(obj) and not isinstance(obj, Backend) else obj
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - a sys.exit() at import must not end every command
                _BROKEN[ep.name] = f"{ep.value} cannot be loaded: {exc.__class__.__name__}: {exc}"
                continue
            if not isinstance(backend, Backend):
                _BROKEN[ep.name] = f"{ep.value} is not a parity.backends.Backend"
                continue
            _DISCOVERED[ep.name] = backend
    return {**BUILTIN, **_DISCOVERED}


def broken() -> dict[str, str]:
    """Entry points that failed to load: name -> why."""
    discover()
    return {name: why for name, why in _BROKEN.items() if name not in _DISCOVERED}


def register(backend: Backend) -> None:
    """Add a backend in this process (tests, notebooks); entry points do it for installed ones."""
    discover()
    _DISCOVERED[backend.name] = backend


def get_backend(name: str) -> Backend:
    known = discover()
    if name not in known and name in _BROKEN:
        raise BackendError(f"backend {name!r}: {_BROKEN[name]}")
    if name not in known:
        raise BackendError(f"unknown backend {name!r}; installed: {', '.join(sorted(known))}")
    return known[name]


def configure_all(devices: Mapping[str, str]) -> dict:
    """Configure each backend (name -> device) for its device; the union of their flags. A
    backend whose framework is missing is BackendUnavailable, before any is configured."""
    backends = {name: get_backend(name).require() for name in devices}
    flags: dict = {}
    for name, device in devices.items():
        if device not in backends[name].devices:
            raise BackendError(f"backend {name!r} supports {', '.join(backends[name].devices)}, not {device!r}")
        flags.update(backends[name].configure(device))
    return flags
