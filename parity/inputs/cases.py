"""Named parity cases: a config, a data slice and a weight seed.

`Case.inputs(dtype)` builds everything a backend needs from the case's data slice and weight
seed: `(ForwardConfig, weights, Batch)`.

Two sets: `default` (the fast four that `make parity` and `pytest -k parity` run) and
`extended`, which drives every remaining config branch of the forward model (probe mask, no
object padding, N=128, each amplitude activation, probe_big at gridsize 1, a batch with
B·C ≥ 64, gridsize 3). `all` is both.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np

from parity.config import ForwardConfig
from parity.inputs.data import DataError, ScanData, digests, load_scan, make_batch
from parity.inputs.fixture import FIXTURE_N128_PATH, FIXTURE_PATH
from parity.inputs.trained import Checkpoint
from parity.inputs.weights import DEFAULT_SCHEME, digest as weights_digest, init_weights

CASE_SETS = ("default", "extended", "all")


def _bit_reverse(i: int, bits: int) -> int:
    return int(format(i, f"0{bits}b")[::-1], 2) if bits else 0


@dataclass(frozen=True)
class Case:
    name: str
    config: ForwardConfig
    description: str
    n_groups: int = 8
    first_seed: int = 0  # seeds: n_groups scan indices spread over the scan from here
    weight_seed: int = 0
    weight_scheme: str = DEFAULT_SCHEME
    case_set: str = "default"
    data: Path = FIXTURE_PATH  # the shipped fixture with this case's detector size
    checkpoint: Optional[Checkpoint] = None  # trained weights and state, in place of the seed's

    def seeds(self, n_points: int) -> np.ndarray:
        """Deterministic seed points, evenly spaced over the scan and taken in bit-reversed
        (van der Corput) order, so that every prefix — the first four groups the per-patch
        statistics and figures show — is spread over the whole scan, not bunched at its start.
        Integer arithmetic only."""
        bits = max(1, (self.n_groups - 1).bit_length())
        slots = 1 << bits
        span = n_points - self.first_seed
        if span < slots:
            raise ValueError(f"case {self.name}: scan has {n_points} points, needs at least "
                             f"{self.first_seed + slots} for {self.n_groups} distinct groups")
        order = np.array([_bit_reverse(i, bits) for i in range(self.n_groups)], dtype=np.int64)
        return self.first_seed + (order * span) // slots

    def weights(self, dtype: str = "float32") -> dict[str, np.ndarray]:
        if self.checkpoint is not None:
            return dict(self.checkpoint.read(self.config, dtype).weights)
        return {k: v.copy() for k, v in _seeded_weights(self.config, self.weight_seed, dtype, self.weight_scheme).items()}

    def state(self, dtype: str = "float32") -> dict:
        """The model state every backend is built with (`build(cfg, weights, **state)`): a trained
        checkpoint's `log_scale` and probe; none for seeded weights (each model starts from the
        config's scale and the batch's probe)."""
        return {} if self.checkpoint is None else dict(self.checkpoint.read(self.config, dtype).state)

    def weights_source(self) -> dict:
        """Where the weights come from, as the report's header and a golden's provenance name it."""
        if self.checkpoint is not None:
            return {"checkpoint": self.checkpoint.describe()}
        return {"seed": self.weight_seed, "scheme": self.weight_scheme}

    def inputs(self, dtype: str = "float32", data: Optional[str | Path] = None):
        """(ForwardConfig, weights, Batch) in `dtype`; `data` replaces the case's fixture."""
        scan = _load(str(data) if data is not None else str(self.data))
        try:
            seeds = self.seeds(scan.n_points)
        except ValueError as exc:  # a --data scan with too few points for this case
            raise DataError(scan.path, "diffraction", str(exc)) from None
        batch = make_batch(scan, self.config, seeds, dtype)
        return self.config, self.weights(dtype), batch


@lru_cache(maxsize=4)
def _seeded_weights(config: ForwardConfig, seed: int, dtype: str, scheme: str) -> dict[str, np.ndarray]:
    """Drawn once while a case's tests ask for them (they run case by case); callers get copies.
    Four kept, not every case's: the default and extended cases' weights in both dtypes are 411 MB,
    which a test process held to its end, and drawing one case's anew takes 20–40 ms."""
    return init_weights(config, seed, dtype, scheme=scheme)


@lru_cache(maxsize=4)
def _load(path: str) -> ScanData:
    return load_scan(path)


_BASE = ForwardConfig()
_BIG = _BASE.replace(gridsize=2, object_big=True, probe_big=False)


def _extended(name: str, config: ForwardConfig, description: str, weight_seed: int, **kw) -> Case:
    return Case(name, config, description, weight_seed=weight_seed, case_set="extended", **kw)


DEFAULT_CASES: list[Case] = [
    Case("gs1", _BASE.replace(gridsize=1, object_big=False),
         "gridsize 1, one patch per group, canvas = zero-padded patch", weight_seed=11),
    Case("gs2-big", _BIG,
         "gridsize 2, object_big: four patches merged onto one canvas", weight_seed=12),
    Case("gs2-big-probebig", _BIG.replace(probe_big=True),
         "gridsize 2, object_big, probe_big border branch (x1 + masked x2)", weight_seed=13),
    Case("gs2-small", _BASE.replace(gridsize=2, object_big=False),
         "gridsize 2, single object patch extracted at four offsets", weight_seed=14),
]
EXTENDED_CASES: list[Case] = [
    _extended("gs2-big-probemask", _BIG.replace(probe_mask=True),
              "probe_mask: the illuminated field is cut by the hard disk of radius N/4", 21),
    _extended("gs2-big-nopad", _BIG.replace(pad_object=False),
              "pad_object off: the decoders' up branch fills the whole N×N patch", 22),
    _extended("gs2-big-n128", _BIG.replace(N=128),
              "N=128: four encoder and three decoder blocks, 128×128 fixture", 23,
              data=FIXTURE_N128_PATH),
    _extended("gs2-big-swish", _BIG.replace(amp_activation="swish"), "amplitude activation swish", 24),
    _extended("gs2-big-softplus", _BIG.replace(amp_activation="softplus"),
              "amplitude activation softplus", 25),
    _extended("gs2-big-relu", _BIG.replace(amp_activation="relu"), "amplitude activation relu", 26),
    _extended("gs1-probebig", _BASE.replace(gridsize=1, object_big=False, probe_big=True),
              "probe_big at gridsize 1: the border branch with a single channel", 27),
    _extended("gs2-big-b16", _BIG,
              "16 groups, B·C = 64: every group still merged onto its own canvas", 28, n_groups=16),
    _extended("gs3-big", _BASE.replace(gridsize=3, object_big=True),
              "gridsize 3: nine patches per group merged onto one canvas (M = 82)", 29),
    _extended("gs2-big-mae", _BIG.replace(mae_weight=1.0),
              "training loss Poisson NLL + MAE (mae_weight 1): the MAE term and its gradient", 30),
]
CASES: list[Case] = DEFAULT_CASES + EXTENDED_CASES


def case_names(case_set: str = "all") -> list[str]:
    return [c.name for c in cases_in(case_set)]


def cases_in(case_set: str) -> list[Case]:
    """The cases of a set: default, extended or all."""
    if case_set not in CASE_SETS:
        raise KeyError(f"unknown case set {case_set!r}; choose one of {', '.join(CASE_SETS)}")
    return list(CASES) if case_set == "all" else [c for c in CASES if c.case_set == case_set]


def get_case(name: str) -> Case:
    for case in CASES:
        if case.name == name:
            return case
    raise KeyError(f"unknown case {name!r}; known cases: {', '.join(case_names())}")


def format_case_table(cases: list[Case] = CASES) -> str:
    header = ("case", "set", "N", "gridsize", "object_big", "probe_big", "groups", "M", "description")
    rows = [(c.name, c.case_set, str(c.config.N), str(c.config.gridsize), str(c.config.object_big),
             str(c.config.probe_big), str(c.n_groups), str(c.config.padded_size), c.description)
            for c in cases]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *map(line, rows)])


def case_digests(case: Case, dtype: str, data: Optional[str | Path] = None) -> dict:
    """sha256 of every input array and of the weights (and trained state) of `case` in `dtype`
    (once per process for a case's own scan, as its inputs are read)."""
    if data is not None:
        return _case_digests(case, dtype, data)
    kept = _own_scan_digests(case, dtype)
    return {"inputs": dict(kept["inputs"]), "weights": kept["weights"]}


def run_digests(case: Case, dtype: str, data, weights: dict, batch, state: Optional[dict]) -> dict:
    """The digests of inputs a run holds already: from the per-process memo for the case's own
    scan, hashed from the arrays in hand for any other."""
    return digests_of(weights, batch, state) if data is not None else case_digests(case, dtype)


def _case_digests(case: Case, dtype: str, data: Optional[str | Path] = None) -> dict:
    _, weights, batch = case.inputs(dtype, data=data)
    return digests_of(weights, batch, case.state(dtype))


_own_scan_digests = lru_cache(maxsize=64)(_case_digests)


def digests_of(weights: dict, batch, state: Optional[dict] = None) -> dict:
    """{"inputs": {array: sha256}, "weights": sha256}: what a golden's digests hold. A trained
    state (log_scale, probe) counts with the weights: the same weights with another scale are
    other inputs."""
    own = {f"state/{k}": np.asarray(v) for k, v in (state or {}).items()}
    return {"inputs": digests(batch), "weights": weights_digest({**weights, **own})}
