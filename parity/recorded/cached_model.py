"""The models of a caching backend (parity.recorded.cache): a built or a loaded model whose
numbers come from its cache entry where stored, and from the live model — built or loaded on
first need, with the state the replayed calls left — otherwise. What they replay: both forward
paths, the loss and gradients, the state, the weights, the effective config, a stage computed
from given inputs (the origins check), K Adam steps, and the checkpoint file `save` writes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from parity.recorded.entries import batch_key, read, sha, write
from parity.recorded.store import replay_steps, step_arrays


class CachedModel:
    """`make_live(state)` gives the live model (`state`: what a replayed forward left, or None);
    `known`: attributes known without it (a built model's `cfg` and `dtype`)."""

    def __init__(self, backend, folder: Path, make_live: Callable, device: str, known: Optional[dict] = None,
                 code: str = ""):
        self._backend, self._folder, self._make_live, self._device = backend, folder, make_live, device
        self._code = code  # the package's patch signature its entry was filed under
        self.__dict__.update(known or {})
        self._model = None
        self._seen: Optional[str] = None  # the batch of the first forward (it set the probe state)
        # Adam steps taken, or the live model built while its package was patched otherwise than
        # at build: its numbers are no longer its entry's
        self._diverged = False
        self._pending_steps = None  # (batch, steps, adam) replayed: the live model takes them before use

    def _live(self):
        if self._model is None:
            self._backend.live.configure(self._device)
            self._model = self._make_live(self._state_file(self._seen))
            self._diverged = self._diverged or not self._same_code()
        if self._pending_steps is not None:
            batch, steps, adam = self._pending_steps
            self._pending_steps = None
            for _ in self._model.train_steps(batch, steps, adam):
                pass
        return self._model

    def _same_code(self) -> bool:
        return self._backend.code() == self._code

    def _replayable(self) -> bool:
        """Whether the model's numbers are still its entry's (no Adam step, no new patch)."""
        return not self._diverged and self._same_code()

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._live(), name)

    def _file(self, part: str, key: str) -> Path:
        return self._folder / f"{part}-{key}.npz"

    def _state_file(self, key: Optional[str]) -> Optional[dict]:
        stored = None if key is None else read(self._file("state", key))
        return None if stored is None else {"log_scale": float(stored["log_scale"]), "probe": stored.get("probe")}

    def _cached(self, part: str, key: str, compute, pack=dict, unpack=dict, forward: bool = False):
        """`part` under `key`: read from the entry, or computed by `compute(live model)` and stored
        (a `forward` with the state the live model then holds). After Adam steps, or while the
        backend's package is patched otherwise than it was at build: live, not stored."""
        if not self._replayable():
            return compute(self._live())
        arrays = read(self._file(part, key))
        if arrays is None:
            value = compute(self._live())
            write(self._file(part, key), pack(value))
        if forward:
            self._seen = self._seen or key
            if arrays is None:
                state = self._model.state()
                write(self._file("state", key), {"log_scale": np.asarray(state["log_scale"]),
                                                 **({"probe": state["probe"]} if state.get("probe") is not None else {})})
        return value if arrays is None else unpack(arrays)

    def forward_train(self, batch) -> dict:
        return dict(self._cached("train", batch_key(batch), lambda m: m.forward_train(batch), forward=True))

    def forward_infer(self, batch) -> dict:
        return dict(self._cached("infer", batch_key(batch), lambda m: m.forward_infer(batch), forward=True))

    def losses(self, batch) -> dict:
        """The loss terms, as the live model gives them (python or numpy scalars)."""
        return self._cached("losses", batch_key(batch), lambda m: m.losses(batch),
                            lambda v: {k: np.asarray(x) for k, x in v.items()},
                            lambda a: {k: v[()] for k, v in a.items()}, forward=True)

    def loss_and_gradients(self, batch):
        def pack(value):
            losses, grads = value
            return {**{f"loss/{k}": np.asarray(v) for k, v in losses.items()},
                    **{f"grad/{k}": np.asarray(v) for k, v in grads.items()}}

        def unpack(arrays):
            return ({k[5:]: float(v) for k, v in arrays.items() if k.startswith("loss/")},
                    {k[5:]: v for k, v in arrays.items() if k.startswith("grad/")})

        return self._cached("gradients", batch_key(batch), lambda m: m.loss_and_gradients(batch), pack, unpack,
                            forward=True)

    def weights(self) -> dict:
        return dict(self._cached("weights", "model", lambda m: m.weights()))

    def effective_config(self):
        try:
            return self._cached("effective", "model", lambda m: m.effective_config(),
                                lambda v: {"json": np.asarray(json.dumps(v))}, lambda a: json.loads(str(a["json"])))
        except TypeError:  # values JSON cannot hold: not cached
            return self._live().effective_config()

    def stage(self, name: str, inputs, batch):
        """One stage from given inputs, keyed by the digests of the inputs it reads."""
        from parity.stages import STAGE_INPUTS

        used = STAGE_INPUTS.get(name) or sorted(inputs)
        key = sha({"stage": name, "batch": batch_key(batch), "state": self._seen,
                   "inputs": {k: _digest(inputs[k]) for k in used if k in inputs}})[:24]
        return self._cached(f"stage-{name}", key, lambda m: m.stage(name, inputs, batch),
                            lambda v: {"value": np.asarray(v)}, lambda a: a["value"])

    def state(self) -> dict:
        stored = None if not self._replayable() or self._model is not None else self._state_file(self._seen)
        return stored if stored is not None else self._live().state()

    def save(self, path):
        """The checkpoint file the live model writes, kept with the entry and copied where asked."""
        path = Path(path)
        stored = self._folder / f"checkpoint-{self._seen or 'unrun'}"
        if self._replayable() and stored.is_file():
            shutil.copyfile(stored, path)
            return path
        saved = Path(self._live().save(path))
        if self._replayable() and saved == path and saved.is_file():
            _copy(saved, stored)
        return saved

    def train_steps(self, batch, steps: int, adam):
        """K Adam steps, replayed where stored; the live model then takes them when it is next
        needed (a trained model saved), so what it holds is what the steps left."""
        path = self._file(f"steps-{steps}-{sha(adam.to_dict())[:12]}", batch_key(batch))
        fresh = self._replayable()
        self._diverged = True
        arrays = read(path) if fresh else None
        if arrays is not None:
            self._pending_steps = (batch, steps, adam)
            return replay_steps(arrays, steps)
        return self._steps_stored(path if fresh else None, batch, steps, adam)

    def _steps_stored(self, path: Optional[Path], batch, steps: int, adam):
        out: dict = {}
        for k, record in enumerate(self._live().train_steps(batch, steps, adam)):
            out.update(step_arrays(k, record))
            yield record
        if path is not None and f"{steps - 1}/loss" in out:  # every step taken
            write(path, out)


def _digest(array) -> str:
    array = np.ascontiguousarray(array)
    return hashlib.sha256(f"{array.dtype.str}|{array.shape}|".encode() + array.tobytes()).hexdigest()


def _copy(source: Path, target: Path) -> None:
    """Atomically, quietly not at all where the folder cannot be written."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except OSError:
        pass


def built_model(backend, cfg, weights: dict, device: str, state: dict):
    """The model `build(cfg, weights, device, **state)` makes, keyed by all of them and by what
    patches its package (the live model itself where they cannot be told)."""
    from parity.inputs.weights import digest, weights_dtype

    code = backend.code()
    if code is None:
        backend.live.configure(device)
        return backend.live.build(cfg, weights, device=device, **state)
    given = {k: v for k, v in state.items() if v is not None}
    key = sha({"fingerprint": backend.fingerprint, "code": code, "device": device, "config": cfg.to_dict(),
               "weights": digest({**weights, **{f"state/{k}": np.asarray(v) for k, v in given.items()}})})
    return CachedModel(backend, backend.folder / key[:32],
                       lambda stored: backend.live.build(cfg, weights, device=device, **(stored or given)), device,
                       known={"cfg": cfg, "dtype": weights_dtype(weights)}, code=code)


def loaded_model(backend, path: Path, device: str, cfg):
    """The model `load(path)` gives, keyed by the checkpoint file's bytes. Loaded live the first
    time (a checkpoint that does not load raises here, as the live backend's would), from the
    entry's copy of the file when a replay needs it later (the run's own file may be gone)."""
    code = backend.code()
    if not path.is_file() or code is None:  # a checkpoint folder, or patches that cannot be told: not cached
        backend.live.configure(device)
        return backend.live.load(path, device=device, cfg=cfg)
    key = sha({"fingerprint": backend.fingerprint, "code": code, "device": device,
               "config": None if cfg is None else cfg.to_dict(), "checkpoint": hashlib.sha256(path.read_bytes()).hexdigest()})
    folder = backend.folder / f"loaded-{key[:26]}"
    copy = folder / f"checkpoint{path.suffix}"
    live = None
    if not copy.is_file():
        backend.live.configure(device)
        live = backend.live.load(path, device=device, cfg=cfg)
        _copy(path, copy)
        _remember_loaded(folder / "loaded.npz", live)
    model = CachedModel(backend, folder, lambda stored: backend.live.load(copy, device=device, cfg=cfg), device,
                        known=_loaded_known(folder / "loaded.npz"), code=code)
    model._model = live
    return model


def _remember_loaded(path: Path, live) -> None:
    """The loaded model's config and dtype (what a check asks before any number)."""
    try:
        write(path, {"cfg": np.asarray(json.dumps(live.cfg.to_dict())), "dtype": np.asarray(str(live.dtype))})
    except (AttributeError, TypeError):  # a model without them: asked of the live model
        pass


def _loaded_known(path: Path) -> dict:
    from parity.config import ForwardConfig

    stored = read(path)
    if stored is None:
        return {}
    return {"cfg": ForwardConfig.from_dict(json.loads(str(stored["cfg"]))), "dtype": str(stored["dtype"])}
