"""Per-process memory of parity runs: each (case, backend, device, dtype, data) is built and run
once while it is in use, and dropped when newer runs push it out (docs/design.md §12).

The pytest plugin's `parity_run` and `run_case(reuse=...)` (the fault catalogue's reference side)
draw from the same cache, so a case's reference model is built once per process, not once per
test. numpy only; the backends are imported by `parity.run.engine` when a run is computed.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Callable, Optional

RUNS_KEPT = 6  # one case's three backends × two dtypes: the tests run case by case


class LruCache:
    """At most `size` values, the least recently used dropped first (bounds a process's memory:
    a case's runs are not needed once its tests are done)."""

    def __init__(self, size: int):
        self.size = size
        self._values: OrderedDict[tuple, object] = OrderedDict()

    def get(self, key: tuple, compute: Callable[[], object]):
        if key in self._values:
            self._values.move_to_end(key)
            return self._values[key]
        value = compute()
        self._values[key] = value
        while len(self._values) > self.size:
            self._values.popitem(last=False)
        return value

    def drop(self, stale: Callable[[tuple, object], bool]) -> None:
        """Drop every (key, value) for which `stale` is true."""
        for key in [k for k, v in self._values.items() if stale(k, v)]:
            del self._values[key]

    def __len__(self) -> int:
        return len(self._values)


_RUNS = LruCache(RUNS_KEPT)


def cached_run(case, backend: str, device: str, dtype: str, data: Optional[str | Path] = None, inputs=None):
    """The process's `parity.run.backend_run.BackendRun` of `case` (a Case) on `backend`, computed on first
    use. Keyed by the case itself (its config, data and seeds), the backend object registered under
    that name, the device, dtype and data, so a test's own case or backend never gets another's run.
    `inputs`: the case's (config, weights, batch) in `dtype` where the caller has built them already."""
    from parity.backends import get_backend
    from parity.run.backend_run import run_backend

    registered = get_backend(backend)
    _RUNS.drop(_of_a_replaced_backend)
    key = (case, backend, id(registered), device, dtype, None if data is None else str(data))
    # the backend object is kept with its run: while the run is kept, no other object takes its id
    return _RUNS.get(key, lambda: (registered, run_backend(case, backend, device, dtype, data=data, inputs=inputs)))[1]


def _of_a_replaced_backend(key: tuple, value: tuple) -> bool:
    """A run of a backend that is no longer registered under its name (one a test registered and
    its registry dropped, one registered anew) is never asked for again: it is dropped, not left
    to age out holding its model and traces (a Keras reference's kept 250 MB in a test worker)."""
    from parity.backends import BackendError, get_backend

    try:
        return get_backend(key[1]) is not value[0]
    except BackendError:
        return True
