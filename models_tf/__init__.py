"""TensorFlow/Keras reference forward model (docs/design.md §2). Mirrors `models_torch` file for file."""

import os
import sys

# Keep TensorFlow's C++ start-up chatter out of the parity report (errors still show).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The reference runs TensorFlow's plain Eigen kernels: oneDNN's custom ops reorder float sums
# between builds and CPUs. Must be set before TensorFlow is imported; recorded in provenance.
ONEDNN_OPTS = ("unknown: tensorflow was imported before models_tf" if "tensorflow" in sys.modules
               else os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0"))

from models_tf.model import ForwardModel, ModelError, build, load  # noqa: E402

__all__ = ["ForwardModel", "ModelError", "build", "load"]

# what this backend's models can do beyond the forward paths (parity.backends.CAPABILITIES)
CAPABILITIES = frozenset({"gradients", "adam_steps", "teacher_forcing"})
