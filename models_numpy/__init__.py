"""The forward model in plain numpy: a framework-free third opinion at every stage. Mirrors
`models_tf` and `models_torch` file for file."""

from models_numpy.model import ForwardModel, ModelError, build, load

__all__ = ["ForwardModel", "ModelError", "build", "load"]

# what this backend's models can do beyond the forward paths (parity.backends.CAPABILITIES)
CAPABILITIES = frozenset({"teacher_forcing"})
