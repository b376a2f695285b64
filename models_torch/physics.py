"""The differentiable physics half of the forward model (PyTorch port), docs/design.md §2.4–2.5.

Images are (B, H, W, C) here too (channels-last, as the trace), offsets (B, 1, 2, C) with
axis 2 = [x, y] = [column, row].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from parity.config import ForwardConfig
from models_torch.network import centre_window_mask

MERGE_EPS = 0.001  # canvas = Σ patches / (Σ masks + 0.001), upstream's normaliser


def interpolation_matrix(shift: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear 1-D resampling matrix for moving content by +shift, zero outside.

    shift (B, C) → R (B, C, size, size) with R[o, i] = (1−f)·[i = o+k] + f·[i = o+k+1],
    k = floor(−shift), f = −shift − k; so (R·v)[o] = v(o − shift) bilinearly, 0 off the edge.
    """
    k = torch.floor(-shift)
    f = -shift - k
    o = torch.arange(size, dtype=shift.dtype, device=shift.device)[:, None]
    i = torch.arange(size, dtype=shift.dtype, device=shift.device)[None, :]
    d = i - o - k[..., None, None]
    near = (d == 0.0).to(shift.dtype)
    far = (d == 1.0).to(shift.dtype)
    return (1.0 - f)[..., None, None] * near + f[..., None, None] * far


def translate(images: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Move each (b, c) image's content by +(dx, dy): out = R_y · img · R_xᵀ (separable
    zero-padded bilinear). images (B,H,W,C) real or complex; offsets (B,1,2,C)."""
    H, W = images.shape[1], images.shape[2]
    ry = interpolation_matrix(offsets[:, 0, 1, :], H)  # (B,C,H,H)
    rx = interpolation_matrix(offsets[:, 0, 0, :], W)  # (B,C,W,W)

    def apply(real: torch.Tensor) -> torch.Tensor:
        x = real.permute(0, 3, 1, 2)  # (B,C,H,W)
        x = torch.matmul(torch.matmul(ry, x), rx.transpose(-1, -2))
        return x.permute(0, 2, 3, 1)

    if images.is_complex():  # real and imaginary parts translated alike
        return torch.complex(apply(images.real), apply(images.imag))
    return apply(images)


def pad_to(images: torch.Tensor, M: int) -> torch.Tensor:
    """Zero-pad (B,N,N,C) symmetrically to (B,M,M,C)."""
    p = (M - images.shape[1]) // 2
    return F.pad(images, (0, 0, p, p, p, p))


def crop_centre(images: torch.Tensor, N: int) -> torch.Tensor:
    """Centre N×N crop of (B,M,M,C)."""
    p = (images.shape[1] - N) // 2
    return images[:, p:p + N, p:p + N, :]


def object_patches(amp: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """`object.patches` = amp·exp(i·phase): (B,N,N,Co) real ×2 → complex."""
    return torch.complex(amp * torch.cos(phase), amp * torch.sin(phase))


def object_canvas(patches: torch.Tensor, offsets: torch.Tensor, cfg: ForwardConfig) -> torch.Tensor:
    """`object.canvas` (B,M,M,1). object_big: Σ_c T(pad(patch_c), −off_c) /
    (Σ_c T(pad(centre mask), −off_c) + 0.001), each group on its own canvas; else pad to M."""
    M = cfg.padded_size
    if not cfg.object_big:
        return pad_to(patches, M)
    num = translate(pad_to(patches, M), -offsets).sum(dim=3, keepdim=True)
    mask = (centre_window_mask(cfg.N, offsets.dtype, offsets.device)[None, :, :, None]
            * torch.ones_like(patches.real))
    den = translate(pad_to(mask, M), -offsets).sum(dim=3, keepdim=True) + MERGE_EPS
    # divide real and imaginary parts by the real normaliser (not a complex division)
    return torch.complex(num.real / den, num.imag / den)


def object_trimmed(canvas: torch.Tensor, cfg: ForwardConfig) -> torch.Tensor:
    """`object.trimmed`: centre N×N of the canvas, (B,N,N,1)."""
    return crop_centre(canvas, cfg.N)


def object_extracted(canvas: torch.Tensor, offsets: torch.Tensor, cfg: ForwardConfig) -> torch.Tensor:
    """`object.extracted`: canvas repeated C times, channel c moved by +off_c, centre N×N:
    (B,M,M,1) → (B,N,N,C)."""
    return crop_centre(translate(canvas.repeat_interleave(cfg.C, dim=3), offsets), cfg.N)


def illuminate(extracted: torch.Tensor, probe: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """`probe.illuminated` = P_eff · extracted (· M_hard if probe_mask): (B,N,N,C) complex."""
    p = probe if mask is None else probe * mask.to(probe.dtype)
    return extracted * p[None, :, :, None]


def diffraction_amplitude(psi: torch.Tensor) -> torch.Tensor:
    """`diffraction.amplitude` = fftshift(|FFT_ortho(ψ)|) over H, W: (B,N,N,C) → real."""
    # orthonormal: the unnormalised FFT divided by sqrt(H·W), spelled the same in both backends
    norm = math.sqrt(psi.shape[1] * psi.shape[2])
    amp = torch.abs(torch.fft.fft2(psi, dim=(1, 2), norm="backward") / norm)
    return torch.fft.fftshift(amp, dim=(1, 2))


def scale_diffraction(amplitude: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """`diffraction.scaled` = exp(log_scale)·amplitude."""
    return torch.exp(log_scale) * amplitude


def intensity(scaled: torch.Tensor) -> torch.Tensor:
    """`diffraction.intensity` = scaled²."""
    return torch.square(scaled)
