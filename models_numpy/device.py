"""Device selection for the numpy backend: the CPU only, nothing to configure."""

from __future__ import annotations


class DeviceError(RuntimeError):
    """The requested device is not available."""


def configure(device: str = "cpu") -> dict[str, object]:
    """numpy runs on the CPU; anything else is one clear error."""
    if device != "cpu":
        raise DeviceError(f"the numpy backend runs on the CPU only, got device {device!r}")
    import numpy as np

    return {"numpy_device": "cpu", "numpy": np.__version__}
