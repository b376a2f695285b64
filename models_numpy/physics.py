"""The physics half of the forward model in plain numpy (docs/design.md §2.4–2.5): the third
opinion the harness arbitrates with.

Written directly from the formulas (loops over the four bilinear neighbours, no matrices), so it
shares no code path with either framework backend. Images (B, H, W, C), offsets (B, 1, 2, C)
with axis 2 = [x, y] = [column, row]; float64/complex128 unless given float32/complex64.
"""

from __future__ import annotations

import numpy as np

from parity.config import ForwardConfig
from parity.inputs.data import centre_window_mask

MERGE_EPS = 0.001  # the merge normaliser: canvas = Σ patches / (Σ masks + 0.001)


def translate(images: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Move the content of each (b, c) image by +(dx, dy) = offsets[b, 0, :, c].

    out[r, col] = Σ over the 4 neighbours of (r − dy, col − dx) of the bilinear weight times
    the pixel, neighbours outside the image contributing 0. images (B,H,W,C) real or complex,
    offsets (B,1,2,C) or (B,1,2,1) (broadcast over C).
    """
    images = np.asarray(images)
    B, H, W, C = images.shape
    offsets = np.broadcast_to(np.asarray(offsets, dtype=np.float64), (B, 1, 2, C))
    out = np.zeros_like(images)
    rows, cols = np.arange(H), np.arange(W)
    for b in range(B):
        for c in range(C):
            dx, dy = offsets[b, 0, 0, c], offsets[b, 0, 1, c]
            ky, kx = np.floor(-dy), np.floor(-dx)
            fy, fx = -dy - ky, -dx - kx
            img = images[b, :, :, c]
            acc = np.zeros((H, W), dtype=images.dtype)
            for ry, wy in ((0, 1 - fy), (1, fy)):
                for rx, wx in ((0, 1 - fx), (1, fx)):
                    src_r = rows + int(ky) + ry
                    src_c = cols + int(kx) + rx
                    ok_r = (src_r >= 0) & (src_r < H)
                    ok_c = (src_c >= 0) & (src_c < W)
                    part = np.zeros((H, W), dtype=images.dtype)
                    part[np.ix_(ok_r, ok_c)] = img[np.ix_(src_r[ok_r], src_c[ok_c])]
                    acc = acc + (wy * wx) * part
            out[b, :, :, c] = acc
    return out


def pad_to(images: np.ndarray, M: int) -> np.ndarray:
    """Zero-pad (B,N,N,C) symmetrically to (B,M,M,C)."""
    p = (M - images.shape[1]) // 2
    return np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))


def crop_centre(images: np.ndarray, N: int) -> np.ndarray:
    """Centre N×N crop of (B,M,M,C)."""
    p = (images.shape[1] - N) // 2
    return images[:, p:p + N, p:p + N, :]


def object_patches(amp: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """`object.patches` = amp·exp(i·phase)."""
    return amp * np.exp(1j * phase)


def object_canvas(patches: np.ndarray, offsets: np.ndarray, cfg: ForwardConfig) -> np.ndarray:
    """object_big: Σ_c T(pad(patch_c), −off_c) / (Σ_c T(pad(mask), −off_c) + 0.001);
    else zero-pad the single patch to M. Returns (B, M, M, 1)."""
    M = cfg.padded_size
    if not cfg.object_big:
        return pad_to(patches, M)
    B, N, _, C = patches.shape
    neg = -np.asarray(offsets, dtype=np.float64)
    num = translate(pad_to(patches, M), neg).sum(axis=3, keepdims=True)
    masks = np.broadcast_to(centre_window_mask(N)[None, :, :, None], (B, N, N, C))
    den = translate(pad_to(masks.astype(np.float64), M), neg).sum(axis=3, keepdims=True)
    return num / (den + MERGE_EPS)


def object_trimmed(canvas: np.ndarray, cfg: ForwardConfig) -> np.ndarray:
    """`object.trimmed`: centre N×N of the canvas, (B,N,N,1)."""
    return crop_centre(canvas, cfg.N)


def object_extracted(canvas: np.ndarray, offsets: np.ndarray, cfg: ForwardConfig) -> np.ndarray:
    """Repeat the canvas C times, translate channel c by +off_c, centre-crop N."""
    rep = np.repeat(canvas, cfg.C, axis=3)
    return crop_centre(translate(rep, offsets), cfg.N)


def illuminate(extracted: np.ndarray, probe: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """`probe.illuminated` = P_eff · extracted (· M_hard if probe_mask): (B,N,N,C) complex."""
    p = np.asarray(probe) if mask is None else np.asarray(probe) * mask
    return extracted * p[None, :, :, None]


def diffraction_amplitude(psi: np.ndarray) -> np.ndarray:
    """fftshift(|FFT_ortho(ψ)|) over the two image axes."""
    f = np.fft.fft2(psi, axes=(1, 2), norm="ortho")
    return np.fft.fftshift(np.abs(f), axes=(1, 2))


def scale_diffraction(amplitude: np.ndarray, log_scale: float) -> np.ndarray:
    """`diffraction.scaled` = exp(log_scale)·amplitude."""
    return np.exp(log_scale) * amplitude


def intensity(scaled: np.ndarray) -> np.ndarray:
    """`diffraction.intensity` = scaled²."""
    return scaled ** 2
