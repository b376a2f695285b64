"""One backend's run of one case, outside the pipeline: the devices of a run, the provenance it
records, and `BackendRun` (both paths of one backend, what the per-process cache keeps and the
pytest fixtures hand out). The backends are imported lazily, never at module top level."""

from __future__ import annotations

import datetime
import functools
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from parity import __version__
from parity.backends import configure_all, get_backend
from parity.config import ForwardConfig
from parity.goldens.summaries import summarise
from parity.inputs.cases import Case, digests_of, run_digests


class DeviceUnavailable(ValueError):
    """The run asked for a device this machine does not have."""


def backend_devices(ref: str, candidates: Sequence[str], device: str = "cpu",
                    ref_device: Optional[str] = None) -> dict[str, str]:
    """Where each backend of a run computes: the candidates on `device`, the reference on
    `ref_device` (default: the CPU, the usual setup being the reference on the CPU and the port on
    the GPU). A CPU-only candidate (numpy) stays on the CPU; a `ref_device` is taken as named
    (configuring a CPU-only reference for CUDA then says it cannot)."""
    return {ref: ref_device or "cpu",
            **{name: get_backend(name).device_for(device) for name in candidates if name != ref}}


def require_device(devices: Mapping[str, str]) -> dict[str, object]:
    """Check each backend's device (name -> device) and apply its determinism flags
    (docs/design.md §9); a framework that is not installed is BackendUnavailable."""
    try:
        return configure_all(devices)
    except RuntimeError as exc:  # each backend's DeviceError
        raise DeviceUnavailable(str(exc)) from None


@functools.lru_cache(maxsize=1)
def _git_commit() -> Optional[str]:  # one `git` call per process, not one per run
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None  # not a git checkout (an installed copy)
    return done.stdout.strip() or None


def provenance(device: str, devices: Mapping[str, str], dtype: str, flags: dict) -> dict:
    """Where a result came from; recorded, never compared. Framework versions of the backends and
    the device of each (`device`: the run's, the candidates' in a comparison)."""
    versions = {get_backend(name).framework: get_backend(name).version() for name in devices}
    return {"ptycho_parity": __version__, "python": platform.python_version(),
            "numpy": np.__version__, **versions,
            "device": device, "devices": dict(devices), "dtype": dtype, "flags": flags,
            "machine": platform.machine(),
            "git_commit": _git_commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


@dataclass
class BackendRun:
    """One backend's run of one case: both paths, their summaries and the input digests. The
    inference path runs on first use of `infer` (a test that compares only the training path,
    such as the gate's forward of each extended case, does not pay for a second forward)."""

    case: str
    backend: str
    device: str
    dtype: str
    config: ForwardConfig
    train: dict = field(repr=False)
    summaries: dict  # the train path's summaries (the golden content)
    digests: dict  # {"inputs": {array: sha256}, "weights": sha256}
    provenance: dict
    model: object = field(default=None, repr=False)  # the built model, for checkpoints
    batch: object = field(default=None, repr=False)  # what `infer` and `gradients` run the model on
    _infer: Optional[dict] = field(default=None, repr=False)
    _gradients: Optional[tuple] = field(default=None, repr=False)

    @property
    def infer(self) -> dict:
        if self._infer is None:
            self._infer = self.model.forward_infer(self.batch)
        return self._infer

    @property
    def gradients(self) -> tuple:
        """(loss terms, gradients by tensor name) of the model at its weights, computed on first
        use and kept with the run (the gradient test and the golden read the same)."""
        if self._gradients is None:
            self._gradients = self.model.loss_and_gradients(self.batch)
        return self._gradients

    @property
    def label(self) -> str:
        return f"{self.backend} {self.device} {self.dtype}"


def run_backend(case: Case, backend: str, device: str = "cpu", dtype: str = "float64",
                data: Optional[str | Path] = None, inputs: Optional[tuple] = None) -> BackendRun:
    """Build `backend`'s model for `case` and run its training path (the inference path on first
    use of `BackendRun.infer`). `inputs`: the case's (config, weights, batch) in `dtype`, where
    built already (a run builds them once for every backend)."""
    flags = require_device({backend: device})
    cfg, weights, batch = inputs or case.inputs(dtype, data=data)
    state = case.state(dtype)  # a trained checkpoint's log_scale and probe
    digests = (digests_of(weights, batch, state) if inputs  # given inputs: not necessarily the case's
               else run_digests(case, dtype, data, weights, batch, state))
    model = get_backend(backend).build(cfg, weights, device=device, **state)
    train = model.forward_train(batch)
    return BackendRun(case=case.name, backend=backend, device=device, dtype=dtype, config=cfg,
                      train=train, batch=batch, summaries=summarise(train, cfg),
                      digests=digests,
                      provenance=provenance(device, {backend: device}, dtype, flags), model=model)
