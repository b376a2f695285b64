"""The bench's one clock: the seconds a call takes, and what it returned."""

from __future__ import annotations

import time
from typing import Callable


def timed(fn: Callable) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value
