"""Physics of the forward model, as module-level functions on channels-first tensors.

images (B, C, H, W); offsets (B, C, 2) as [x, y] = [column, row] in pixels; a canvas (B, M, M).
"""

import math
import os

import torch
import torch.nn.functional as F

EPS_MERGE = 1e-3


def to_complex(amp, phase):
    """amp · e^{i·phase}: (B, C, N, N) × 2 → complex."""
    return torch.complex(amp * torch.cos(phase), amp * torch.sin(phase))


def _shift_axis(x, shift, axis):
    """Content of x (B, C, H, W) moved by +shift (B, C) pixels along `axis`, bilinear, zeros
    coming in from outside."""
    n = x.shape[axis]
    k = torch.floor(-shift)
    frac = (-shift - k)[..., None, None]
    base = torch.arange(n, device=x.device)[None, None, :] + k.long()[..., None]

    def take(idx):
        inside = ((idx >= 0) & (idx < n)).to(x.dtype)
        idx = idx.clamp(0, n - 1)
        if axis == 2:
            gathered = torch.gather(x, 2, idx[..., :, None].expand(-1, -1, -1, x.shape[3]))
            return gathered * inside[..., :, None]
        gathered = torch.gather(x, 3, idx[..., None, :].expand(-1, -1, x.shape[2], -1))
        return gathered * inside[..., None, :]

    return (1 - frac) * take(base) + frac * take(base + 1)


def shift(images, offsets):
    """Move each (b, c) image by +offsets[b, c] (dx, dy); complex images part by part."""
    if images.is_complex():
        return torch.complex(shift(images.real, offsets), shift(images.imag, offsets))
    rows = _shift_axis(images, offsets[..., 1], 2)
    return _shift_axis(rows, offsets[..., 0], 3)


def pad_centre(images, size):
    p = (size - images.shape[-1]) // 2
    return F.pad(images, (p, p, p, p))


def window(n, dtype, device=None):
    """1 on the central n/2 × n/2 window, 0 elsewhere."""
    w = torch.zeros(n, n, dtype=dtype, device=device)
    w[n // 4: n // 4 + n // 2, n // 4: n // 4 + n // 2] = 1
    return w


def merge(patches, offsets, size, big):
    """The canvas (B, M, M): every patch placed at −offset and normalised by the coverage."""
    if not big:
        return pad_centre(patches[:, 0], size)
    canvas = shift(pad_centre(patches, size), -offsets).sum(dim=1)
    n = patches.shape[-1]
    cover = window(n, offsets.dtype, offsets.device).expand(patches.shape[0], patches.shape[1], n, n)
    weight = shift(pad_centre(cover, size), -offsets).sum(dim=1) + EPS_MERGE
    return canvas / weight


def trim(canvas, n):
    """Centre n × n of a (B, M, M) canvas."""
    p = (canvas.shape[-1] - n) // 2
    return canvas[:, p:p + n, p:p + n]


def extract(canvas, offsets, n):
    """(B, M, M) → (B, C, n, n): the canvas seen from each position (+offset), centre crop."""
    stack = canvas[:, None].expand(-1, offsets.shape[1], -1, -1)
    if os.environ.get("PTYPORT_BUG") == "physics":
        offsets = -offsets  # the sign convention of the merge, used here by mistake
    moved = shift(stack, offsets)
    p = (canvas.shape[-1] - n) // 2
    return moved[..., p:p + n, p:p + n]


def disk(n, dtype):
    c = torch.arange(n, dtype=torch.float64) - n / 2 + 0.5
    return ((c[:, None] ** 2 + c[None, :] ** 2) <= (n / 4) ** 2).to(dtype)


def illuminate(obj, probe, masked):
    p = probe * disk(probe.shape[-1], probe.real.dtype).to(probe.device) if masked else probe
    return obj * p


def far_field(psi, single=False):
    """fftshift(|FFT(ψ)|), orthonormal, over the last two axes; in single precision if asked
    (the big detectors, where memory counts)."""
    if os.environ.get("PTYPORT_BUG") == "crash":
        grid = torch.linspace(0, 1, psi.shape[-1], dtype=torch.float64)
        psi = psi.to(torch.complex64) @ grid.to(torch.complex128)  # mixes precisions: raises
    if single:
        psi = psi.to(torch.complex64)
    amp = torch.fft.fft2(psi, norm="ortho").abs()
    return torch.fft.fftshift(amp, dim=(-2, -1))


def rescale(amplitude, inv_scale):
    """Detector counts from the unit-normalised amplitude."""
    return amplitude / inv_scale


def poisson(pred, observed):
    return torch.mean(pred - observed * torch.log(pred))


def pi_tanh(x):
    return math.pi * torch.tanh(x)
