"""PyTorch port of the forward model (docs/design.md §2). Mirrors `models_tf` file for file."""

from models_torch.model import ForwardModel, ModelError, build, load

__all__ = ["ForwardModel", "ModelError", "build", "load"]
