"""Both backends behind one small interface, so every model test runs against each of them."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType
from typing import Callable

import numpy as np

from parity.inputs.cases import get_case


@dataclass(frozen=True)
class Backend:
    name: str
    package: ModuleType
    physics: ModuleType
    to_tensor: Callable[[np.ndarray], object]
    to_numpy: Callable[[object], np.ndarray]

    def build(self, *args, **kwargs):
        return self.package.build(*args, **kwargs)


@lru_cache(maxsize=None)
def backend(name: str) -> Backend:
    if name == "tf":
        from parity.plugin.devices import require_backend

        require_backend("tensorflow")  # skipped, with the package named, where it is not installed
        pkg = importlib.import_module("models_tf")  # first: it sets TensorFlow's env before import
        import tensorflow as tf

        return Backend("tf", pkg, importlib.import_module("models_tf.physics"),
                       tf.constant, lambda t: t.numpy())
    if name == "numpy":
        return Backend("numpy", importlib.import_module("models_numpy"), importlib.import_module("models_numpy.physics"),
                       np.asarray, np.asarray)
    import torch

    pkg = importlib.import_module("models_torch")
    return Backend("torch", pkg, importlib.import_module("models_torch.physics"),
                   lambda a: torch.from_numpy(np.ascontiguousarray(a)), lambda t: t.numpy())


REGISTERED = {"tf": "tensorflow", "torch": "torch", "numpy": "numpy"}  # a Backend's name -> the registered one's


def case_run(backend_name: str, case_name: str, dtype: str):
    """The process's run of a default case on the CPU (`parity.run.cache.cached_run`): the one the
    parity tests of the case use, so a model test of the case computes no forward pass of its own.
    Its model is the registered backend's, so in a session with the reference cache its numbers
    are the backend's own, replayed bit for bit where its sources and inputs have not changed."""
    from parity.run.cache import cached_run

    return cached_run(get_case(case_name), REGISTERED[backend_name], "cpu", dtype)


def case_trace(backend_name: str, case_name: str, dtype: str) -> dict[str, np.ndarray]:
    """forward_train trace of a default case (`case_run`)."""
    return case_run(backend_name, case_name, dtype).train
