"""Device selection and determinism flags for TensorFlow (docs/design.md §8), applied explicitly."""

from __future__ import annotations

_APPLIED: dict[str, object] = {}


class DeviceError(RuntimeError):
    """The requested device is not available."""


def configure(device: str = "cpu") -> dict[str, object]:
    """Apply the determinism flags once and return the TF device name and flags for provenance.

    cuda: TF32 off, op determinism on, memory growth on; raises DeviceError without a GPU.
    """
    import tensorflow as tf

    import models_tf

    if device not in ("cpu", "cuda"):
        raise DeviceError(f"device must be 'cpu' or 'cuda', got {device!r}")
    gpus = tf.config.list_physical_devices("GPU")
    if device == "cuda" and not gpus:
        raise DeviceError("CUDA was requested but TensorFlow sees no GPU "
                          "(install the 'cuda' extra on a machine with an NVIDIA driver)")
    if not _APPLIED:
        for gpu in gpus:  # pragma: no cover - GPU only; CI machines have none
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:  # already initialised: growth can no longer be changed
                pass
        tf.config.experimental.enable_tensor_float_32_execution(False)
        tf.config.experimental.enable_op_determinism()
        _APPLIED.update({
            "tf_tf32": False, "tf_op_determinism": True, "tf_memory_growth": bool(gpus),
            "tf_enable_onednn_opts": models_tf.ONEDNN_OPTS,
        })
    return {"tf_device": "/GPU:0" if device == "cuda" else "/CPU:0", **_APPLIED}
