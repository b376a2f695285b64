"""The differentiable physics half of the forward model (TensorFlow reference), docs/design.md §2.4–2.5.

Images are (B, H, W, C), offsets (B, 1, 2, C) with axis 2 = [x, y] = [column, row].
"""

from __future__ import annotations

import tensorflow as tf

from parity.config import ForwardConfig
from models_tf.network import centre_window_mask

MERGE_EPS = 0.001  # canvas = Σ patches / (Σ masks + 0.001), upstream's normaliser


def interpolation_matrix(shift: tf.Tensor, size: int) -> tf.Tensor:
    """Bilinear 1-D resampling matrix for moving content by +shift, zero outside.

    shift (B, C) → R (B, C, size, size) with R[o, i] = (1−f)·[i = o+k] + f·[i = o+k+1],
    k = floor(−shift), f = −shift − k; so (R·v)[o] = v(o − shift) bilinearly, 0 off the edge.
    """
    k = tf.floor(-shift)
    f = -shift - k
    o = tf.range(size, dtype=shift.dtype)[:, None]
    i = tf.range(size, dtype=shift.dtype)[None, :]
    d = i - o - k[..., None, None]
    near = tf.cast(tf.equal(d, 0.0), shift.dtype)
    far = tf.cast(tf.equal(d, 1.0), shift.dtype)
    return (1.0 - f)[..., None, None] * near + f[..., None, None] * far


def translate(images: tf.Tensor, offsets: tf.Tensor) -> tf.Tensor:
    """Move each (b, c) image's content by +(dx, dy): out = R_y · img · R_xᵀ (separable
    zero-padded bilinear). images (B,H,W,C) real or complex; offsets (B,1,2,C)."""
    H, W = images.shape[1], images.shape[2]
    ry = interpolation_matrix(offsets[:, 0, 1, :], H)  # (B,C,H,H)
    rx = interpolation_matrix(offsets[:, 0, 0, :], W)  # (B,C,W,W)

    def apply(real: tf.Tensor) -> tf.Tensor:
        x = tf.transpose(real, [0, 3, 1, 2])  # (B,C,H,W)
        x = tf.linalg.matmul(tf.linalg.matmul(ry, x), rx, transpose_b=True)
        return tf.transpose(x, [0, 2, 3, 1])

    if images.dtype.is_complex:  # real and imaginary parts translated alike
        return tf.complex(apply(tf.math.real(images)), apply(tf.math.imag(images)))
    return apply(images)


def pad_to(images: tf.Tensor, M: int) -> tf.Tensor:
    """Zero-pad (B,N,N,C) symmetrically to (B,M,M,C)."""
    p = (M - images.shape[1]) // 2
    return tf.pad(images, [[0, 0], [p, p], [p, p], [0, 0]])


def crop_centre(images: tf.Tensor, N: int) -> tf.Tensor:
    """Centre N×N crop of (B,M,M,C)."""
    p = (images.shape[1] - N) // 2
    return images[:, p:p + N, p:p + N, :]


def object_patches(amp: tf.Tensor, phase: tf.Tensor) -> tf.Tensor:
    """`object.patches` = amp·exp(i·phase): (B,N,N,Co) real ×2 → complex."""
    return tf.complex(amp * tf.math.cos(phase), amp * tf.math.sin(phase))


def object_canvas(patches: tf.Tensor, offsets: tf.Tensor, cfg: ForwardConfig) -> tf.Tensor:
    """`object.canvas` (B,M,M,1). object_big: Σ_c T(pad(patch_c), −off_c) /
    (Σ_c T(pad(centre mask), −off_c) + 0.001), each group on its own canvas; else pad to M."""
    M = cfg.padded_size
    if not cfg.object_big:
        return pad_to(patches, M)
    real = offsets.dtype
    num = tf.reduce_sum(translate(pad_to(patches, M), -offsets), axis=3, keepdims=True)
    mask = centre_window_mask(cfg.N, real.name)[None, :, :, None] * tf.ones_like(tf.math.real(patches))
    den = tf.reduce_sum(translate(pad_to(mask, M), -offsets), axis=3, keepdims=True) + MERGE_EPS
    # divide real and imaginary parts by the real normaliser (not a complex division)
    return tf.complex(tf.math.real(num) / den, tf.math.imag(num) / den)


def object_trimmed(canvas: tf.Tensor, cfg: ForwardConfig) -> tf.Tensor:
    """`object.trimmed`: centre N×N of the canvas, (B,N,N,1)."""
    return crop_centre(canvas, cfg.N)


def object_extracted(canvas: tf.Tensor, offsets: tf.Tensor, cfg: ForwardConfig) -> tf.Tensor:
    """`object.extracted`: canvas repeated C times, channel c moved by +off_c, centre N×N:
    (B,M,M,1) → (B,N,N,C)."""
    return crop_centre(translate(tf.repeat(canvas, cfg.C, axis=3), offsets), cfg.N)


def illuminate(extracted: tf.Tensor, probe: tf.Tensor, mask: tf.Tensor | None) -> tf.Tensor:
    """`probe.illuminated` = P_eff · extracted (· M_hard if probe_mask): (B,N,N,C) complex."""
    p = probe if mask is None else probe * tf.cast(mask, probe.dtype)
    return extracted * p[None, :, :, None]


def diffraction_amplitude(psi: tf.Tensor) -> tf.Tensor:
    """`diffraction.amplitude` = fftshift(|FFT_ortho(ψ)|) over H, W: (B,N,N,C) → real."""
    x = tf.transpose(psi, [0, 3, 1, 2])
    # orthonormal: the unnormalised FFT divided by sqrt(H·W), spelled the same in both backends
    norm = tf.cast(tf.sqrt(float(x.shape[-1] * x.shape[-2])), x.dtype)
    amp = tf.math.abs(tf.signal.fft2d(x) / norm)
    amp = tf.signal.fftshift(amp, axes=[-2, -1])
    return tf.transpose(amp, [0, 2, 3, 1])


def scale_diffraction(amplitude: tf.Tensor, log_scale: tf.Tensor) -> tf.Tensor:
    """`diffraction.scaled` = exp(log_scale)·amplitude."""
    return tf.exp(log_scale) * amplitude


def intensity(scaled: tf.Tensor) -> tf.Tensor:
    """`diffraction.intensity` = scaled²."""
    return tf.square(scaled)
