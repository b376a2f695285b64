"""The reference cache (`.parity-cache/`, docs/plugin.md): the reference's numbers kept on disk by
fingerprint, so a test session whose reference sources, framework versions, thread settings and
inputs have not changed since the last one replays them instead of computing them.

`caching_backend(backend, root)` is the same backend under the same name whose models
(parity.recorded.cached_model) answer from the cache where an entry is stored and compute, then
store, otherwise: both forward paths, loss and gradients, state, weights, effective config, a
stage from given inputs, Adam steps, the checkpoint `save` writes and the model `load` reads.
Anything else goes to the live model, built on first need: no check changes, and a session whose
checks need only stored numbers never imports the framework. Plain NPZ and JSON
(parity.recorded.entries); an unreadable file is computed again, an unwritable one left out.

    ROOT/<backend>/<fingerprint>/backend.json                  version, capabilities, flags per device
    ROOT/<backend>/<fingerprint>/<model>/<part>-<key>.npz      a built model's entry
    ROOT/<backend>/<fingerprint>/loaded-<checkpoint>/...       a loaded model's, with the checkpoint
A backend keeps its KEPT latest fingerprints (older ones, after an edit, are never read again).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
from pathlib import Path
from typing import Optional


from parity.backends import BUILTIN, CAPABILITIES, Backend, backend_fields
from parity.recorded.entries import sha
from parity.recorded.store import RecordError, read_json, source_key

SCHEMA = 1
KEPT = 2  # fingerprints kept per backend: the suite's two thread settings (xdist workers, one process)
# what decides a framework's float sums besides its sources and version: the thread settings (the
# pytest plugin sets the first four for its xdist workers; numpy's BLAS reads OPENBLAS_NUM_THREADS)
# and what each built-in backend's framework reads at import (Backend.framework_env)
THREAD_SETTINGS = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "PARITY_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                   "OMP_NUM_THREADS", *(name for b in BUILTIN.values() for name, _ in b.framework_env))


def backend_fingerprint(name: str) -> Optional[str]:
    """sha256 of what decides `name`'s numbers besides its inputs: its sources, the framework
    and numpy versions, the machine, the thread settings. None for a backend whose sources this
    package does not know (a user's adapter): such a backend is never cached."""
    from parity.goldens.fingerprint import _versions

    sources = source_key(name)
    if sources is None:
        return None
    return sha({"schema": SCHEMA, "backend": name, "sources": sources, "versions": _versions(),
                 "machine": platform.machine(), "system": platform.system(), "cores": os.cpu_count(),
                 "threads": {k: os.environ.get(k) for k in THREAD_SETTINGS}})


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

    def code(self) -> Optional[str]:
        """What the live backend's package computes besides its sources: "" as they make it, a
        digest of what replaced its patched functions, methods or constants (a fault injected, a
        test's monkeypatch), None where that cannot be digested — computed live, never stored
        (parity.recorded.patches.patch_signature)."""
        from parity.recorded.patches import patch_signature

        return patch_signature(self.live.package) if self.live.package else ""

    def build(self, cfg, weights, device: str = "cpu", **state):
        from parity.recorded.cached_model import built_model

        return built_model(self, cfg, dict(weights), device, state)

    def load(self, path, device: str = "cpu", cfg=None):
        from parity.recorded.cached_model import loaded_model

        return loaded_model(self, Path(path), device, cfg)


_fingerprints = functools.lru_cache(maxsize=None)(backend_fingerprint)  # once per process: it reads the sources


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
    cached = CachingBackend(**backend_fields(backend), live=backend, root=Path(root))
    prune(cached.folder.parent, cached.folder.name)
    return cached
