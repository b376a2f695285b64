"""A plain numpy implementation of the physics stages of docs/design.md §2 — the third opinion.

Written directly from the formulas (loops over the four bilinear neighbours, no matrices), so it
shares no code path with either backend. Arrays use the canonical layout: images (B, H, W, C),
offsets (B, 1, 2, C) with axis 2 = [x, y] = [column, row].
"""

from __future__ import annotations

import numpy as np

from parity.config import ForwardConfig
from parity.data import centre_window_mask, hard_probe_mask

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
    """amp · exp(i·phase)."""
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
    return crop_centre(canvas, cfg.N)


def object_extracted(canvas: np.ndarray, offsets: np.ndarray, cfg: ForwardConfig) -> np.ndarray:
    """Repeat the canvas C times, translate channel c by +off_c, centre-crop N."""
    rep = np.repeat(canvas, cfg.C, axis=3)
    return crop_centre(translate(rep, offsets), cfg.N)


def illuminated(extracted: np.ndarray, probe: np.ndarray, cfg: ForwardConfig) -> np.ndarray:
    p = np.asarray(probe)
    if cfg.probe_mask:
        p = p * hard_probe_mask(cfg.N)
    return extracted * p[None, :, :, None]


def diffraction_amplitude(psi: np.ndarray) -> np.ndarray:
    """fftshift(|FFT_ortho(ψ)|) over the two image axes."""
    f = np.fft.fft2(psi, axes=(1, 2), norm="ortho")
    return np.fft.fftshift(np.abs(f), axes=(1, 2))


def scaled(amplitude: np.ndarray, scale: float) -> np.ndarray:
    return scale * amplitude


def intensity(scaled_amplitude: np.ndarray) -> np.ndarray:
    return scaled_amplitude ** 2


# -- arbitration: recompute a physics stage from a backend's own inputs ------------------------

def _wide(a):
    a = np.asarray(a)
    return a.astype(np.complex128) if np.iscomplexobj(a) else a.astype(np.float64)


# stage -> function(trace, cfg, batch) giving that stage from the trace's own inputs to it
RECOMPUTE = {
    "input.diffraction": lambda t, cfg, b: _wide(b.diffraction) * cfg.intensity_scale,
    "input.offsets": lambda t, cfg, b: _wide(b.offsets),
    "scaled_input": lambda t, cfg, b: _wide(t["input.diffraction"]) / cfg.intensity_scale,
    "object.patches": lambda t, cfg, b: object_patches(_wide(t["decoder.amp"]), _wide(t["decoder.phase"])),
    "object.canvas": lambda t, cfg, b: object_canvas(_wide(t["object.patches"]), _wide(t["input.offsets"]), cfg),
    "object.trimmed": lambda t, cfg, b: object_trimmed(_wide(t["object.canvas"]), cfg),
    "object.extracted": lambda t, cfg, b: object_extracted(_wide(t["object.canvas"]), _wide(t["input.offsets"]), cfg),
    "probe.illuminated": lambda t, cfg, b: illuminated(_wide(t["object.extracted"]), _wide(b.probe), cfg),
    "diffraction.amplitude": lambda t, cfg, b: diffraction_amplitude(_wide(t["probe.illuminated"])),
    "diffraction.scaled": lambda t, cfg, b: scaled(_wide(t["diffraction.amplitude"]), cfg.intensity_scale),
    "diffraction.intensity": lambda t, cfg, b: intensity(_wide(t["diffraction.scaled"])),
}


def arbitrate(stage: str, ref_trace, other_trace, cfg: ForwardConfig, batch, tolerance: float,
              ref_name: str = "tensorflow", other_name: str = "torch") -> dict:
    """Third opinion on a stage where the backends disagree: recompute it in numpy from each
    backend's own inputs to that stage and say which backend disagrees with numpy."""
    from parity.compare import relative_error

    if stage not in RECOMPUTE:
        return {"stage": stage, "oracle": False, "blame": None,
                "verdict": f"{stage} is a network stage: no numpy oracle (check weights and "
                           f"the layer conventions of {stage.split('.')[0]})"}
    errors = {}
    for name, trace in ((ref_name, ref_trace), (other_name, other_trace)):
        if stage not in trace:
            errors[name] = float("inf")
            continue
        try:
            want = RECOMPUTE[stage](trace, cfg, batch)
        except KeyError:  # an input stage is missing from this backend's trace
            errors[name] = float("inf")
            continue
        got = np.asarray(trace[stage])
        errors[name] = (relative_error(want, got) if got.shape == want.shape and np.all(np.isfinite(got))
                        else float("inf"))
    ok = {name: err <= tolerance for name, err in errors.items()}
    if ok[ref_name] and ok[other_name]:
        blame, verdict = None, (f"both backends agree with numpy at {stage} from their own inputs: "
                                f"the difference is carried in from earlier stages and amplified here")
    elif ok[ref_name]:
        blame, verdict = other_name, f"{other_name} disagrees with {ref_name} and with numpy at {stage}"
    elif ok[other_name]:
        blame, verdict = ref_name, f"{ref_name} disagrees with {other_name} and with numpy at {stage}"
    else:
        blame, verdict = "both", f"both {ref_name} and {other_name} disagree with numpy at {stage}"
    return {"stage": stage, "oracle": True, "blame": blame, "verdict": verdict,
            "oracle_rel_error": errors, "tolerance": tolerance}
