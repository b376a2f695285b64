"""A record as the reference: `--ref recorded:DIR` (`--parity-ref recorded:DIR`). Its "model"
replays what the recorded reference computed for the same config, weights and batch — found by
their digests, never by a case's name — so every check reads it as it reads a live reference:
forward, paths, its own checkpoint round trip (the recorded reloaded path), the golden, and,
where recorded, gradients and Adam steps. What needs the live reference (its model built from a
candidate's checkpoint, a stage computed from given inputs) is not run, with the reason. Nothing
here imports the recorded reference's framework.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np

from parity.backends import Backend, register
from parity.config import ForwardConfig
from parity.inputs.data import digests
from parity.recorded.store import Record, RecordError, entry_dir, replay_steps

PREFIX = "recorded:"
_SAVED: dict = {}  # checkpoint pointer -> the weights of the model that wrote it (this process)


class RecordMismatch(RecordError):
    """The run's inputs are not those the record was made from."""


def _state_arrays(probe=None, log_scale=None) -> dict:
    out = {}
    if log_scale is not None:
        out["state/log_scale"] = np.asarray(log_scale)
    if probe is not None:
        out["state/probe"] = np.asarray(probe)
    return out


class RecordedModel:
    """The recorded reference's model for one (case, dtype) entry."""

    def __init__(self, record: Record, case: str, dtype: str, meta: dict, weights: dict, reloaded: bool = False):
        self.record, self.case, self.dtype, self.meta, self.reloaded = record, case, dtype, meta, reloaded
        self._weights = weights
        self.cfg = ForwardConfig.from_dict(meta["config"])

    def _check_batch(self, batch) -> None:
        want, got = self.meta["digests"]["inputs"], digests(batch)
        differ = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
        if differ:
            raise RecordMismatch(f"{self.record.folder}: case {self.case} {self.dtype}: the batch is not the one "
                                 f"recorded ({', '.join(differ)} differ: another scan or case definition)")

    def _part(self, part: str) -> dict:
        path = entry_dir(self.record.folder, self.case, self.dtype) / f"{part}.npz"
        if not path.is_file():
            raise RecordError(f"{self.record.folder}: case {self.case} {self.dtype}: no {part} recorded")
        return self.record.arrays(self.case, self.dtype, part)

    def forward_train(self, batch) -> dict:
        self._check_batch(batch)
        return self._part("train")

    def forward_infer(self, batch) -> dict:
        self._check_batch(batch)
        return self._part("reloaded" if self.reloaded else "infer")

    def save(self, path) -> Path:
        """A pointer to this entry: what `load` reads back into the recorded reloaded model. The
        weights it was built with stay in this process (`_SAVED`): a record holds no weights (the
        case makes them; their digest is checked), and the recorded round trip shows the
        reference's checkpoint keeps them."""
        path = Path(path)
        path.write_text(json.dumps({"record": str(self.record.folder), "case": self.case, "dtype": self.dtype}))
        _SAVED[str(path)] = self._weights
        while len(_SAVED) > 8:  # the latest few: a load follows its save within one run
            _SAVED.pop(next(iter(_SAVED)))
        return path

    def weights(self) -> dict:
        return dict(self._weights)

    def state(self) -> dict:
        has_probe = (entry_dir(self.record.folder, self.case, self.dtype) / "state.npz").is_file()
        return {"log_scale": float(self.meta["log_scale"]), "probe": self._part("state")["probe"] if has_probe else None}

    def effective_config(self) -> Optional[dict]:
        return self.meta.get("effective_config")

    def loss_and_gradients(self, batch):
        self._check_batch(batch)
        if "losses" not in self.meta:
            raise RecordError(f"{self.record.folder}: case {self.case} {self.dtype}: no gradients recorded "
                              f"(record with --grad)")
        return dict(self.meta["losses"]), self._part("gradients")

    def train_steps(self, batch, steps: int, adam):
        self._check_batch(batch)
        recorded = self.meta.get("steps", 0)
        if steps > recorded:
            raise RecordError(f"{self.record.folder}: case {self.case} {self.dtype}: {recorded} Adam steps recorded, "
                              f"{steps} asked (record with --train-steps {steps})")
        if adam.to_dict() != self.record.info.get("adam"):
            raise RecordError(f"{self.record.folder}: recorded with Adam {self.record.info.get('adam')}, asked "
                              f"{adam.to_dict()}")
        yield from replay_steps(self._part("steps"), steps)


def _find(record: Record, cfg, weights, state: dict) -> tuple[str, str, dict]:
    """The entry recorded for this config and these weights (and trained state)."""
    from parity.inputs.weights import digest, weights_dtype

    dtype = weights_dtype(weights)
    key = digest({**weights, **state})
    for case, entry_dtype in record.entries():
        if entry_dtype != dtype:
            continue
        meta = record.meta(case, entry_dtype)
        if meta["digests"]["weights"] == key and meta["config"] == cfg.to_dict():
            return case, dtype, meta
    raise RecordMismatch(f"{record.folder}: no recorded run of this config and these {dtype} weights "
                         f"(recorded: {', '.join(f'{c} {d}' for c, d in record.entries())})")


@lru_cache(maxsize=8)
def recorded_backend(name: str) -> Backend:
    """The Backend `recorded:DIR` names (one per folder and process)."""
    record = Record.open(name[len(PREFIX):])

    def build(cfg, weights, device="cpu", probe=None, log_scale=None, **_):
        return RecordedModel(record, *_find(record, cfg, weights, _state_arrays(probe, log_scale)), weights)

    def load(path, device="cpu", cfg=None):
        pointer = json.loads(Path(path).read_text())
        meta = record.meta(pointer["case"], pointer["dtype"])
        return RecordedModel(record, pointer["case"], pointer["dtype"], meta, _SAVED.get(str(path), {}), reloaded=True)

    capabilities = {"gradients"} if record.info.get("gradients") else set()
    if record.info.get("train_steps"):
        capabilities.add("adam_steps")
    return Backend(name, "recorded", ("cpu",), build_fn=build, load_fn=load, configure_fn=lambda device: {},
                   version_fn=lambda: f"{record.info.get('framework')} {record.info.get('version')} (recorded)",
                   builds_from_state=False, capabilities=frozenset(capabilities), recorded=True)


def register_reference(name: str) -> None:
    """Where `name` is `recorded:DIR`, register the record's backend under it, so that
    `get_backend(name)` finds it (the CLI and the pytest plugin, before any backend is looked up);
    any other name is left to the registry. RecordError where DIR is not a record."""
    if name.startswith(PREFIX):
        register(recorded_backend(name))


def check_entries(name: str, cases, dtypes, data=None, grad: bool = False, train_steps: int = 0) -> None:
    """Before any model is built: every case and dtype of the run is in the record `name` names,
    with the same config and inputs, and the reference's sources are those it was recorded from.
    Else RecordError, one line naming the folder, the case and what differs (exit 2)."""
    from parity.inputs.cases import digests_of
    from parity.recorded.store import source_key

    record = Record.open(name[len(PREFIX):])
    folder, entries = record.folder, record.entries()
    recorded_key, here_key = record.info.get("source_key"), source_key(record.backend)
    if recorded_key and here_key and recorded_key != here_key:
        raise RecordError(f"{folder}: stale: the sources of the {record.backend} reference changed since the record "
                          f"was made ({record.info.get('date')}); record again with `parity record --ref "
                          f"{record.backend} --out {folder}`")
    for case in cases:
        for dtype in dtypes:
            if (case.name, dtype) not in entries:
                raise RecordError(f"{folder}: no record of case {case.name} in {dtype} (recorded: "
                                  f"{', '.join(f'{c} {d}' for c, d in entries)}); record it with `parity record "
                                  f"--case {case.name} --out {folder}`")
            meta = record.meta(case.name, dtype)
            lacking = ("gradients (record it with --grad)" if grad and "losses" not in meta else
                       f"{train_steps} Adam steps (record it with --train-steps {train_steps})"
                       if train_steps > meta.get("steps", 0) else "")
            if lacking:
                raise RecordError(f"{folder}: case {case.name} {dtype}: the record holds no {lacking}")
            asked = case.config.to_dict()
            changed = [f"{k} {meta['config'].get(k)!r} → {v!r}" for k, v in asked.items() if meta["config"].get(k) != v]
            if changed:
                raise RecordError(f"{folder}: case {case.name}: recorded with another config ({', '.join(changed)})")
            _, weights, batch = case.inputs(dtype, data=data)
            have, want = digests_of(weights, batch, case.state(dtype)), meta["digests"]
            differ = sorted(k for k in set(want["inputs"]) | set(have["inputs"])
                            if want["inputs"].get(k) != have["inputs"].get(k))
            differ += ["weights"] if want["weights"] != have["weights"] else []
            if differ:
                raise RecordError(f"{folder}: case {case.name} {dtype}: the record was made from other inputs "
                                  f"({', '.join(differ)} differ: another scan, case definition or weights)")
