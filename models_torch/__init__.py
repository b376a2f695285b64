"""PyTorch port of the forward model (docs/design.md §2). Mirrors `models_tf` file for file."""

from models_torch.model import ForwardModel, ModelError, build, load

__all__ = ["ForwardModel", "ModelError", "build", "load"]

# what this backend's models can do beyond the forward paths (parity.backends.CAPABILITIES)
CAPABILITIES = frozenset({"gradients", "adam_steps", "teacher_forcing"})
