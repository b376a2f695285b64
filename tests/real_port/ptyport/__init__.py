"""ptyport: a PyTorch PtychoPINN-style model written on its own, before ptycho-parity existed.

It stands for a user's port in the harness's tests: its own config, its own parameter names,
channels-first tensors, a canvas without a channel axis, module-level physics functions, its own
checkpoint format and inference entry point. It knows nothing of `parity`.
"""

from ptyport.model import PortConfig, PtyNet  # noqa: F401
