"""The NPZ checkpoint format shared by the TensorFlow reference and the numpy backend (the torch
port keeps torch's own `state_dict` format): config (JSON), weights by canonical name, and the
model state (`log_scale`, probe). Numpy only; each backend builds its model from what this reads.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional

import numpy as np

from parity.config import ForwardConfig


@dataclass
class NpzCheckpoint:
    config: ForwardConfig
    dtype: str
    weights: dict
    log_scale: float
    probe: Optional[np.ndarray]


def write_npz_checkpoint(path: str | Path, fmt: str, cfg: ForwardConfig, dtype: str,
                         weights: Mapping[str, np.ndarray], log_scale: float,
                         probe: Optional[np.ndarray]) -> Path:
    """One .npz: `meta` (format, config, dtype), `weights/<name>`, `state/log_scale`, `state/probe`."""
    path = Path(path)
    arrays = {f"weights/{k}": np.asarray(v) for k, v in weights.items()}
    arrays["state/log_scale"] = np.asarray(log_scale)
    if probe is not None:
        arrays["state/probe"] = np.asarray(probe)
    arrays["meta"] = np.asarray(json.dumps({"format": fmt, "config": cfg.to_dict(), "dtype": dtype}))
    with open(path, "wb") as fh:  # a file handle keeps np.savez from appending '.npz'
        np.savez(fh, **arrays)
    return path


def read_npz_checkpoint(path: str | Path, fmt: str, error: Callable[[str], Exception],
                        package: str) -> NpzCheckpoint:
    """Read and check a checkpoint; every problem is `error("<path>: …")`, one line."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            weights = {k[len("weights/"):]: npz[k] for k in npz.files if k.startswith("weights/")}
            log_scale = float(npz["state/log_scale"])
            probe = npz["state/probe"] if "state/probe" in npz.files else None
    except (OSError, ValueError, KeyError) as exc:
        raise error(f"{path}: not a {package} checkpoint ({exc})") from None
    if meta.get("format") != fmt:
        raise error(f"{path}: checkpoint format {meta.get('format')!r}, expected {fmt!r}")
    if not math.isfinite(log_scale):
        raise error(f"{path}: key 'state/log_scale' is not finite")
    return NpzCheckpoint(ForwardConfig.from_dict(meta["config"]), meta["dtype"], weights, log_scale, probe)
