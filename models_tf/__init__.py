"""TensorFlow/Keras reference forward model (docs/design.md §2). Mirrors `models_torch` file for file."""

import os
import sys

# Keep TensorFlow's C++ start-up chatter out of the parity report (errors still show).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The reference runs TensorFlow's plain Eigen kernels (its backend's framework_env: oneDNN's custom
# ops reorder float sums between builds and CPUs). Must be set before TensorFlow is imported (the
# pytest plugin sets it in every test process); recorded in provenance.
if "tensorflow" not in sys.modules:
    from parity.backends import BUILTIN, set_framework_env

    set_framework_env([BUILTIN["tensorflow"]])
ONEDNN_OPTS = os.environ.get("TF_ENABLE_ONEDNN_OPTS") or "unknown: tensorflow was imported before models_tf"

from models_tf.model import ForwardModel, ModelError, build, load  # noqa: E402

__all__ = ["ForwardModel", "ModelError", "build", "load"]

# what this backend's models can do beyond the forward paths (parity.backends.CAPABILITIES)
CAPABILITIES = frozenset({"gradients", "adam_steps", "teacher_forcing"})
