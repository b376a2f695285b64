"""Trained weights: a case's weights and model state read from a checkpoint by the named
backend's own `load()`, and turned into neutral weights and state through that backend's mapping
(`model.weights()`, `model.state()`), so that every backend of a run is built from them as from a
seed's weights. numpy here; the backend (and its framework) is imported only when read.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from parity.errors import UsageError


class CheckpointError(UsageError):
    """A case's checkpoint that cannot be used: one line naming the case file, the case and the key."""


@dataclass(frozen=True)
class Checkpoint:
    """Where a case's trained weights come from: `path` (a file or a folder), read by `backend`.
    `where`: the case file and case, for the error lines."""

    path: Path
    backend: str
    where: str = ""

    def digest(self) -> str:
        """sha256 of the checkpoint's bytes (every file of a folder, by relative name), read once
        per version of the file (the header, the golden's provenance and fingerprint ask for it)."""
        files = sorted(p for p in self.path.rglob("*") if p.is_file()) if self.path.is_dir() else [self.path]
        return _digest(self.path, tuple((p, p.stat().st_mtime_ns, p.stat().st_size) for p in files))

    def describe(self) -> dict:
        """What the report's header and a golden's provenance name: file, backend, digest."""
        return {"file": str(self.path), "backend": self.backend, "sha256": self.digest()}

    def read(self, cfg, dtype: str) -> "Trained":
        """The checkpoint's neutral weights (cast to `dtype`) and state; CheckpointError, one line,
        where it cannot be read or does not fit the network of `cfg`."""
        stat = self.path.stat() if self.path.exists() else None
        return _read(self, cfg, dtype, stat.st_mtime_ns if stat else None)


@dataclass(frozen=True)
class Trained:
    weights: Mapping[str, np.ndarray]
    state: Mapping[str, Any]  # {"log_scale": float, "probe": complex array} (only what it holds)
    config: Optional[Mapping[str, Any]]  # the loaded model's effective config, where it declares one


_COMPLEX = {"float32": np.complex64, "float64": np.complex128}


@lru_cache(maxsize=8)
def _digest(root: Path, files: tuple) -> str:
    h = hashlib.sha256()
    for p, _, _ in files:
        h.update(str(p.relative_to(root) if root.is_dir() else p.name).encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()


@lru_cache(maxsize=8)
def _read(ckpt: Checkpoint, cfg, dtype: str, mtime: Optional[int]) -> Trained:
    from parity.backends import BackendError, get_backend
    from parity.inputs.weights import WeightError, validate_weights
    from parity.backends.effective import effective_config

    where = f"{ckpt.where}: key weights.checkpoint" if ckpt.where else f"{ckpt.path}"
    if mtime is None:
        raise CheckpointError(f"{where}: no such file or folder {ckpt.path}")
    try:
        backend = get_backend(ckpt.backend).require()
    except BackendError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    if not backend.checkpoints or not backend.neutral_out:
        raise CheckpointError(f"{where}: backend {ckpt.backend!r} cannot give a checkpoint's weights out "
                              f"(it needs load, a weight mapping and get_state)")
    try:
        model = backend.load(ckpt.path, device="cpu", cfg=cfg)
        weights, state = model.weights(), dict(model.state())
    except Exception as exc:  # noqa: BLE001 - the user's loader: its failure is this input's problem
        text = " ".join(str(exc).split())
        raise CheckpointError(f"{where}: {ckpt.backend} could not load {ckpt.path}: "
                              f"{exc.__class__.__name__}: {text}") from None
    try:
        validate_weights(cfg, weights)
    except WeightError as exc:
        raise CheckpointError(f"{where}: {ckpt.path}: {exc}") from None
    out = {k: np.asarray(v, dtype=dtype) for k, v in weights.items()}
    kept = {"log_scale": float(state["log_scale"])} if state.get("log_scale") is not None else {}
    if state.get("probe") is not None:
        kept["probe"] = np.asarray(state["probe"], dtype=_COMPLEX[dtype])
    return Trained(out, kept, effective_config(model))
