"""numpy's backend under a package name of its own, for tests/test_remote.py: a package the test
process has not imported, so that a backend of it runs in its child process. Its models add
`steps`, a generator that can raise part-way (as a backend's `train_steps` can), and `counter`,
a value that does not pickle."""

import threading

from models_numpy import CAPABILITIES, ModelError
from models_numpy import build as _build

__all__ = ["CAPABILITIES", "ModelError", "build", "load"]


class Model:
    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def steps(self, count: int, fail_at: int = -1):
        for k in range(count):
            if k == fail_at:
                raise ModelError(f"step {k} failed")
            yield {"step": k}

    def counter(self):
        return Counter()


class Counter:
    """A value that does not pickle (it holds a lock): it stays in the child."""

    def __init__(self):
        self.lock, self.count = threading.Lock(), 0

    def next(self) -> int:
        with self.lock:
            self.count += 1
            return self.count


def build(cfg, weights, device: str = "cpu", **state):
    return Model(_build(cfg, weights, device=device, **state))


def load(path, device: str = "cpu"):
    raise ModelError(f"not a checkpoint of this test backend: {path}")
