"""ptycho-parity: forward-parity regression harness (TensorFlow reference vs PyTorch port).

The core is plain numpy; TensorFlow and torch are imported only inside their own packages.
"""

__version__ = "0.1.0"
