"""The reference cache (`.parity-cache/`, docs/performance.md): the reference's numbers kept on
disk by fingerprint, so a test session whose reference sources, framework versions, thread
settings and inputs have not changed since the last one replays them instead of computing them.

`caching_backend(backend, root)` is the same backend under the same name whose models answer
`forward_train`, `forward_infer`, `loss_and_gradients`, `state` and `train_steps` from the cache
where stored, and compute (then store) them otherwise. Anything else asked of a model (`save`,
`stage`, `weights`, ...) and every `load` go to the live backend, built on first need: no check
changes, and a session whose checks need only cached numbers never imports the framework. Plain
NPZ and JSON; an unreadable file is computed again, an unwritable one left out (never a failure).

    ROOT/<backend>/<fingerprint>/backend.json               version, capabilities, flags per device
    ROOT/<backend>/<fingerprint>/<model>/<part>-<batch>.npz train, infer, gradients, state, steps-K-adam
A backend keeps its KEPT latest fingerprints (older ones, after an edit, are never read again).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import platform
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np

from parity.backends import CAPABILITIES, Backend
from parity.recorded.store import RecordError, read_json, source_key, write_arrays

SCHEMA = 1
KEPT = 2  # fingerprints kept per backend: the suite's two thread settings (xdist workers, one process)
# what decides a framework's float sums besides its sources and version (the pytest plugin sets
# the first three per xdist worker)
THREAD_SETTINGS = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "PARITY_NUM_THREADS", "OMP_NUM_THREADS",
                   "TF_ENABLE_ONEDNN_OPTS")


def _sha(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def backend_fingerprint(name: str) -> Optional[str]:
    """sha256 of what decides `name`'s numbers besides its inputs: its sources, the framework
    and numpy versions, the machine, the thread settings. None for a backend whose sources this
    package does not know (a user's adapter): such a backend is never cached."""
    from parity.goldens.fingerprint import _versions

    sources = source_key(name)
    if sources is None:
        return None
    return _sha({"schema": SCHEMA, "backend": name, "sources": sources, "versions": _versions(),
                 "machine": platform.machine(), "system": platform.system(), "cores": os.cpu_count(),
                 "threads": {k: os.environ.get(k) for k in THREAD_SETTINGS}})


def _read(path: Path) -> Optional[dict]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # absent, or cut short by a crash: computed again
        return None


def _write(path: Path, arrays: dict) -> None:
    """Atomically (two xdist workers or sessions may write the same entry); quietly not at all
    where the folder cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        write_arrays(tmp, arrays)  # uncompressed: zlib would cost the cold run more than the disk it saves
        os.replace(tmp, path)
    except OSError:
        pass


def _batch_key(batch) -> str:
    from parity.inputs.data import digests

    return _sha(digests(batch))[:20]


@dataclasses.dataclass(frozen=True)
class CachingBackend(Backend):
    """`live` under its own name, its models' numbers cached under `root` (module docstring)."""

    live: Optional[Backend] = None
    root: Optional[Path] = None

    # -- what the backend says of itself, stored once so that a warm session imports nothing --
    @property
    def folder(self) -> Path:
        return Path(self.root) / self.name / self.fingerprint[:24]

    def _info(self) -> dict:
        try:
            info = read_json(self.folder / "backend.json")
        except RecordError:  # none yet, or unreadable: asked of the live backend again
            info = {}
        return info if info.get("fingerprint") == self.fingerprint else {"fingerprint": self.fingerprint}

    def _remember(self, **values) -> None:
        info = {**self._info(), **values}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            os.utime(self.folder)  # its age: what `prune` keeps the latest by
            tmp = self.folder / f".backend.json.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(info, indent=1, sort_keys=True))
            os.replace(tmp, self.folder / "backend.json")
        except OSError:
            pass

    @property
    def fingerprint(self) -> str:
        return _fingerprints(self.name)

    def can(self, capability: str) -> bool:
        if capability not in CAPABILITIES:
            return self.live.can(capability)  # its error
        known = self._info().get("capabilities")
        if known is None:
            known = [c for c in CAPABILITIES if self.live.can(c)]
            self._remember(capabilities=known)
        return capability in known

    def version(self) -> str:
        known = self._info().get("version")
        if known is None:
            known = self.live.version()
            self._remember(version=known)
        return known

    def configure(self, device: str) -> dict:
        """The flags the live backend applies on `device`, as stored: the live configuration
        waits until a live model is built."""
        flags = self._info().get("flags", {})
        if device not in flags:
            flags = {**flags, device: self.live.configure(device)}
            self._remember(flags=flags)
        return dict(flags[device])

    def build(self, cfg, weights, device: str = "cpu", **state):
        return CachedModel(self, cfg, dict(weights), device, state)

    def load(self, path, device: str = "cpu", cfg=None):
        self.live.configure(device)
        return self.live.load(path, device=device, cfg=cfg)


_fingerprints = functools.lru_cache(maxsize=None)(backend_fingerprint)  # once per process: it reads the sources


class CachedModel:
    """A model of a CachingBackend: its forward paths, gradients, state and Adam steps from the
    cache where stored, the live model's (built on first need, with the state the replayed calls
    left) otherwise."""

    def __init__(self, backend: CachingBackend, cfg, weights: dict, device: str, state: dict):
        from parity.inputs.weights import digest

        self._backend, self.cfg, self._weights, self._device = backend, cfg, weights, device
        self._given = {k: v for k, v in state.items() if v is not None}
        key = _sha({"fingerprint": backend.fingerprint, "device": device, "config": cfg.to_dict(),
                    "weights": digest({**weights, **{f"state/{k}": np.asarray(v) for k, v in self._given.items()}})})
        self._folder = backend.folder / key[:32]
        self._model = None
        self._seen: Optional[str] = None  # the batch of the first replayed forward (it set the probe state)
        self._stepped = False  # Adam steps taken: the model's numbers are no longer its entry's
        self._pending_steps = None  # (batch, steps, adam) replayed: the live model takes them before use

    # -- the live model -----------------------------------------------------------------------
    def _live(self):
        if self._model is None:
            self._backend.live.configure(self._device)
            state = dict(self._given)
            stored = self._state_file(self._seen)
            if stored is not None:  # the state a replayed forward left (the probe a batch set)
                state = stored
            self._model = self._backend.live.build(self.cfg, self._weights, device=self._device, **state)
        if self._pending_steps is not None:
            batch, steps, adam = self._pending_steps
            self._pending_steps = None
            for _ in self._model.train_steps(batch, steps, adam):
                pass
        return self._model

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._live(), name)

    def _file(self, part: str, key: str) -> Path:
        return self._folder / f"{part}-{key}.npz"

    def _state_file(self, key: Optional[str]) -> Optional[dict]:
        stored = None if key is None else _read(self._file("state", key))
        if stored is None:
            return None
        return {"log_scale": float(stored["log_scale"]), "probe": stored.get("probe")}

    def _cached(self, part: str, batch, compute, pack=lambda v: v, unpack=lambda a: a):
        """`part` of `batch`: read from the entry, or computed by `compute(live model)` and
        stored with the state the live model then holds. After Adam steps: live, not stored."""
        if self._stepped:
            return compute(self._live())
        key = _batch_key(batch)
        arrays = _read(self._file(part, key))
        if arrays is not None:
            self._seen = self._seen or key
            return unpack(arrays)
        value = compute(self._live())
        _write(self._file(part, key), pack(value))
        state = self._model.state()
        _write(self._file("state", key), {"log_scale": np.asarray(state["log_scale"]),
                                          **({"probe": state["probe"]} if state.get("probe") is not None else {})})
        return value

    def forward_train(self, batch) -> dict:
        return dict(self._cached("train", batch, lambda m: m.forward_train(batch)))

    def forward_infer(self, batch) -> dict:
        return dict(self._cached("infer", batch, lambda m: m.forward_infer(batch)))

    def loss_and_gradients(self, batch):
        def pack(value):
            losses, grads = value
            return {**{f"loss/{k}": np.asarray(v) for k, v in losses.items()},
                    **{f"grad/{k}": np.asarray(v) for k, v in grads.items()}}

        def unpack(arrays):
            return ({k[5:]: float(v) for k, v in arrays.items() if k.startswith("loss/")},
                    {k[5:]: v for k, v in arrays.items() if k.startswith("grad/")})

        return self._cached("gradients", batch, lambda m: m.loss_and_gradients(batch), pack, unpack)

    def state(self) -> dict:
        stored = None if self._stepped or self._model is not None else self._state_file(self._seen)
        return stored if stored is not None else self._live().state()

    def train_steps(self, batch, steps: int, adam):
        """K Adam steps, replayed where stored; the live model then takes them when it is next
        needed (a trained model saved), so what it holds is what the steps left."""
        path = self._file(f"steps-{steps}-{_sha(adam.to_dict())[:12]}", _batch_key(batch))
        fresh, self._stepped = not self._stepped, True
        arrays = _read(path) if fresh else None
        if arrays is not None:
            self._pending_steps = (batch, steps, adam)
            return _replay(arrays, steps)
        return self._steps_stored(path if fresh else None, batch, steps, adam)

    def _steps_stored(self, path: Optional[Path], batch, steps: int, adam):
        out: dict = {}
        for k, record in enumerate(self._live().train_steps(batch, steps, adam)):
            out[f"{k}/loss"] = np.asarray(record["loss"])
            out.update({f"{k}/{name}": np.asarray(v) for name, v in record["tensors"].items()})
            yield record
        if path is not None and f"{steps - 1}/loss" in out:  # every step taken
            _write(path, out)


def _replay(arrays: dict, steps: int):
    for k in range(steps):
        yield {"loss": float(arrays[f"{k}/loss"]),
               "tensors": {key.split("/", 1)[1]: v for key, v in arrays.items()
                           if key.startswith(f"{k}/") and key != f"{k}/loss"}}


def live_backend(backend: Backend) -> Backend:
    """The backend itself, not its caching stand-in."""
    return backend.live if isinstance(backend, CachingBackend) else backend


def prune(folder: Path, keep: str, kept: int = KEPT) -> None:
    """Remove the entries of all but the `kept` latest fingerprints under a backend's `folder`
    (`keep`, this process's, always stays)."""
    import shutil

    try:
        others = sorted((p for p in folder.iterdir() if p.is_dir() and p.name != keep),
                        key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return
    for old in others[kept - 1:]:
        shutil.rmtree(old, ignore_errors=True)


def caching_backend(backend: Backend, root: str | Path) -> Optional[CachingBackend]:
    """`backend` with its numbers cached under `root`, or None where it cannot be cached (a
    backend whose sources this package does not know, or a record). Prunes the backend's older
    fingerprints."""
    backend = live_backend(backend)
    if backend.recorded or _fingerprints(backend.name) is None:
        return None
    fields = {f.name: getattr(backend, f.name) for f in dataclasses.fields(Backend)}
    cached = CachingBackend(**fields, live=backend, root=Path(root))
    prune(cached.folder.parent, cached.folder.name)
    return cached
