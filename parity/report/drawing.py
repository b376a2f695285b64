"""What every figure of a run shares (matplotlib, files only): the backend, a panel with its
colour bar, the atomic PNG write, and the common centre of two images of different sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FIG_DPI = 100


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def panel(fig, ax, image, title, cmap="viridis", vmin=None, vmax=None, label=None):
    im = ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    cb.ax.tick_params(labelsize=7)
    if label:
        cb.set_label(label, fontsize=7)


def finite(a: np.ndarray) -> np.ndarray:
    return a[np.isfinite(a)]


def save_png(fig, path: Path) -> None:
    """Write the PNG atomically (drawn in memory, renamed into place), free the figure."""
    import io

    from parity.files import write_atomic

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FIG_DPI)
    write_atomic(path, buf.getvalue())
    pyplot().close(fig)


def finish(fig, title: str, path: Path, fontsize: int = 12) -> None:
    """Title, layout, write the PNG, free the figure."""
    fig.suptitle(title, fontsize=fontsize)
    fig.tight_layout()
    save_png(fig, path)


def centre_overlap(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """The common centre of two images (H, W) of different sizes, and a label saying so ("" when
    the shapes agree). Sizes whose difference is odd share no centre: ValueError."""
    if a.shape == b.shape:
        return a, b, ""
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    if (a.shape[0] - h) % 2 or (a.shape[1] - w) % 2 or (b.shape[0] - h) % 2 or (b.shape[1] - w) % 2:
        raise ValueError(f"shapes {a.shape} and {b.shape} share no centre")

    def crop(x):
        top, left = (x.shape[0] - h) // 2, (x.shape[1] - w) // 2
        return x[top:top + h, left:left + w]

    return crop(a), crop(b), f"centre overlap {h}×{w} only: shapes differ ({a.shape[0]}×{a.shape[1]} vs {b.shape[0]}×{b.shape[1]})"
