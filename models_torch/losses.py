"""The training losses (PyTorch port), docs/design.md §11.

Both compare the model's predicted diffraction with the observed one, s·X = `input.diffraction`:
  loss.nll  = mean(pred − obs·log pred), pred = `diffraction.intensity`, obs = (s·X)²
  loss.mae  = mean|`diffraction.scaled` − s·X|
  loss      = nll_weight·loss.nll + mae_weight·loss.mae
Means run over every element (B, N, N, C), as the reference's Keras reduction. Each term is a
scalar tensor of the model's dtype.
"""

from __future__ import annotations

import torch

from parity.config import ForwardConfig


def poisson_nll(pred: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
    """mean(pred − obs·log pred), without the Stirling term (torch.nn.PoissonNLLLoss's default
    `full=False` would match too; written out so the formula is visible). (B,N,N,C) ×2 → scalar."""
    return torch.mean(pred - obs * torch.log(pred))


def mae(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean|pred − target|: (B,N,N,C) ×2 → scalar."""
    return torch.mean(torch.abs(pred - target))


def losses(trace: dict, cfg: ForwardConfig) -> dict[str, torch.Tensor]:
    """{"loss", "loss.nll", "loss.mae"} from a training-path trace of tensors."""
    observed = trace["input.diffraction"]
    nll = poisson_nll(trace["diffraction.intensity"], torch.square(observed))
    mean_abs = mae(trace["diffraction.scaled"], observed)
    return {"loss": cfg.nll_weight * nll + cfg.mae_weight * mean_abs, "loss.nll": nll, "loss.mae": mean_abs}
