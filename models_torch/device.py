"""Device selection and determinism flags for torch (docs/design.md §8), applied explicitly."""

from __future__ import annotations

import os


# threads torch's CPU kernels may use; read here, in the process that runs the model, and
# inherited by any process it starts, so a fresh process computes with the same split of work
THREADS_VARIABLE = "PARITY_NUM_THREADS"


class DeviceError(RuntimeError):
    """The requested device is not available."""


def configure(device: str = "cpu") -> dict[str, object]:
    """Check the device and apply the determinism flags; return them for provenance.

    cuda: TF32 off for matmul and cuDNN, deterministic algorithms on (CUBLAS_WORKSPACE_CONFIG
    set before the first cuBLAS call), cuDNN benchmark off. Raises DeviceError without CUDA.
    With PARITY_NUM_THREADS set, torch's CPU kernels use that many threads.
    """
    import torch

    if device not in ("cpu", "cuda"):
        raise DeviceError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"CUDA was requested but torch {torch.__version__} sees no CUDA device "
                          f"(CPU-only build or no driver)")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    # torch.use_deterministic_algorithms(True) sets this same runtime flag and also imports the
    # compiler's configuration to set its own (≈ 1.1 s per process); nothing here is compiled
    torch.set_deterministic_debug_mode("error")
    threads = os.environ.get(THREADS_VARIABLE)
    if threads:  # a share of the cores (the pytest plugin sets it for each xdist worker)
        if not threads.isdigit() or int(threads) < 1:
            raise DeviceError(f"{THREADS_VARIABLE} must be a positive integer, got {threads!r}")
        torch.set_num_threads(int(threads))
    flags: dict[str, object] = {
        "torch_device": device, "torch_tf32": False, "torch_deterministic": True,
        "cublas_workspace_config": os.environ["CUBLAS_WORKSPACE_CONFIG"], "torch_threads": torch.get_num_threads(),
    }
    if device == "cuda":  # pragma: no cover - GPU only; CI machines have none
        flags["cuda_device_name"] = torch.cuda.get_device_name(0)
    return flags
