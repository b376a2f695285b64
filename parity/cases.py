"""Named parity cases: a config, a data slice and a weight seed (DESIGN §3).

`Case.inputs(dtype)` builds everything a backend needs from the case's data slice and weight
seed: `(ForwardConfig, weights, Batch)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np

from parity.config import ForwardConfig
from parity.data import Batch, ScanData, load_scan, make_batch
from parity.fixture import FIXTURE_PATH
from parity.weights import init_weights


@dataclass(frozen=True)
class Case:
    name: str
    config: ForwardConfig
    description: str
    n_groups: int = 8
    first_seed: int = 0  # seeds: n_groups scan indices spread evenly from here over the scan
    weight_seed: int = 0

    def seeds(self, n_points: int) -> np.ndarray:
        """Evenly spread, deterministic seed points (integer arithmetic, no float rounding)."""
        if n_points <= self.first_seed:
            raise ValueError(f"case {self.name}: scan has {n_points} points, needs > {self.first_seed}")
        span = n_points - self.first_seed
        return self.first_seed + (np.arange(self.n_groups) * span) // self.n_groups

    def inputs(self, dtype: str = "float32", data: Optional[str | Path] = None):
        """(ForwardConfig, weights, Batch) in `dtype`; `data` replaces the shipped fixture."""
        scan = _load(str(data) if data is not None else str(FIXTURE_PATH))
        batch = make_batch(scan, self.config, self.seeds(scan.n_points), dtype)
        return self.config, init_weights(self.config, self.weight_seed, dtype), batch


@lru_cache(maxsize=4)
def _load(path: str) -> ScanData:
    return load_scan(path)


_BASE = ForwardConfig()
CASES: list[Case] = [
    Case("gs1", _BASE.replace(gridsize=1, object_big=False),
         "gridsize 1, one patch per group, canvas = zero-padded patch", weight_seed=11),
    Case("gs2-big", _BASE.replace(gridsize=2, object_big=True, probe_big=False),
         "gridsize 2, object_big: four patches merged onto one canvas", weight_seed=12),
    Case("gs2-big-probebig", _BASE.replace(gridsize=2, object_big=True, probe_big=True),
         "gridsize 2, object_big, probe_big border branch (x1 + masked x2)", weight_seed=13),
    Case("gs2-small", _BASE.replace(gridsize=2, object_big=False),
         "gridsize 2, single object patch extracted at four offsets", weight_seed=14),
]


def case_names() -> list[str]:
    return [c.name for c in CASES]


def get_case(name: str) -> Case:
    for case in CASES:
        if case.name == name:
            return case
    raise KeyError(f"unknown case {name!r}; known cases: {', '.join(case_names())}")


def format_case_table(cases: list[Case] = CASES) -> str:
    header = ("case", "gridsize", "object_big", "probe_big", "groups", "M", "description")
    rows = [(c.name, str(c.config.gridsize), str(c.config.object_big), str(c.config.probe_big),
             str(c.n_groups), str(c.config.padded_size), c.description) for c in cases]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *map(line, rows)])
