"""The training losses (numpy, float64), docs/design.md §11: the third opinion on the loss value.

Both compare the model's predicted diffraction with the observed one, s·X = `input.diffraction`:
  loss.nll  = mean(pred − obs·log pred), pred = `diffraction.intensity`, obs = (s·X)²
  loss.mae  = mean|`diffraction.scaled` − s·X|
  loss      = nll_weight·loss.nll + mae_weight·loss.mae
Means run over every element (B, N, N, C). Each term is a Python float.
"""

from __future__ import annotations

import numpy as np

from parity.config import ForwardConfig


def poisson_nll(pred: np.ndarray, obs: np.ndarray) -> float:
    """mean(pred − obs·log pred), without the Stirling term. (B,N,N,C) ×2 → scalar."""
    return float(np.mean(pred - obs * np.log(pred)))


def mae(pred: np.ndarray, target: np.ndarray) -> float:
    """mean|pred − target|: (B,N,N,C) ×2 → scalar."""
    return float(np.mean(np.abs(pred - target)))


def losses(trace: dict, cfg: ForwardConfig) -> dict[str, float]:
    """{"loss", "loss.nll", "loss.mae"} from a training-path trace (computed in float64)."""
    observed = np.asarray(trace["input.diffraction"], dtype=np.float64)
    nll = poisson_nll(np.asarray(trace["diffraction.intensity"], dtype=np.float64), np.square(observed))
    mean_abs = mae(np.asarray(trace["diffraction.scaled"], dtype=np.float64), observed)
    return {"loss": cfg.nll_weight * nll + cfg.mae_weight * mean_abs, "loss.nll": nll, "loss.mae": mean_abs}
