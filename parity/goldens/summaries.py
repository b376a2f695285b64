"""Summaries of a trace (docs/design.md §7): the golden content, numpy only, identical for either backend.

Every function takes a trace (stage name → array) and returns plain JSON-serialisable values.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from parity.config import ForwardConfig

PER_PATCH_GROUPS = 4
OFFSET_DECIMALS = 6
PARSEVAL_DECIMALS = 9


def _f(x) -> float:
    return float(x)


def _stats(a: np.ndarray) -> dict[str, float]:
    a = np.asarray(a, dtype=np.float64)
    return {"min": _f(a.min()), "max": _f(a.max()), "mean": _f(a.mean()), "std": _f(a.std())}


# Golden keys that are angles (radians): compared modulo 2π (parity.goldens.store), so that a
# phase at the ±π branch cut — a saturated phase decoder of trained weights — reads as one value.
ANGLE_KEYS = ("patch_stats.phase_range.0", "patch_stats.phase_range.1", "canvas.phase.mean", "canvas.phase.min",
              "canvas.phase.max")


def _phase_stats(z: np.ndarray) -> dict[str, float]:
    """Phase statistics that do not jump at the ±π branch cut: the amplitude-weighted circular
    mean μ = angle(Σ z); min and max of the phases measured from μ (angle(z·e^(−iμ)) ∈ (−π, π],
    plus μ), over the pixels with non-zero amplitude (a zero has no phase); the circular standard
    deviation sqrt(−2 ln R), R = |Σ z| / Σ |z| (0 for a single phase). Near-zero amplitudes, whose
    phase is rounding, weigh nothing in the mean and the spread."""
    z = np.asarray(z).astype(np.complex128).ravel()
    z = z[np.abs(z) > 0]
    if z.size == 0:
        return {"min": 0.0, "max": 0.0, "mean": 0.0, "std": 0.0}
    total = z.sum()
    mean = float(np.angle(total))
    around = np.angle(z * np.exp(-1j * mean))
    resultant = min(1.0, float(abs(total) / np.abs(z).sum()))
    std = float(np.sqrt(-2.0 * np.log(resultant))) if resultant > 0 else float("inf")
    return {"min": _f(mean + around.min()), "max": _f(mean + around.max()), "mean": mean, "std": std}


def patch_stats(trace: Mapping[str, np.ndarray]) -> dict:
    """On |object.patches| (B,N,N,Co), as the original instrumentation logged them:
    global_mean, global_std (ddof=1), var_zero_mean = mean((|a| − mean_hw |a|)²), per_patch
    {mean, std (ddof=1), min, max} for the first 4 groups, amplitude_range, phase_range (measured
    from the circular mean phase: `_phase_stats`)."""
    patches = np.asarray(trace["object.patches"])
    amp = np.abs(patches).astype(np.float64)
    centred = amp - amp.mean(axis=(1, 2), keepdims=True)
    per_patch = [{"mean": _f(g.mean()), "std": _f(g.std(ddof=1)), "min": _f(g.min()), "max": _f(g.max())}
                 for g in amp[:PER_PATCH_GROUPS]]
    phase = _phase_stats(patches)
    return {
        "global_mean": _f(amp.mean()),
        "global_std": _f(amp.std(ddof=1)),
        "var_zero_mean": _f(np.mean(centred ** 2)),
        "per_patch": per_patch,
        "amplitude_range": [_f(amp.min()), _f(amp.max())],
        "phase_range": [phase["min"], phase["max"]],
    }


def canvas_stats(trace: Mapping[str, np.ndarray], cfg: ForwardConfig) -> dict:
    """object.canvas (B,M,M,1): M, shape, amplitude {min,max,mean,std}, phase {min,max,mean,std}
    (circular: `_phase_stats`), the fraction of
    canvas pixels with non-zero content, and the amplitude-weighted centre of mass [row, col]
    (mean over groups)."""
    canvas = np.asarray(trace["object.canvas"])[..., 0]
    amp = np.abs(canvas).astype(np.float64)
    rows, cols = np.mgrid[0:canvas.shape[1], 0:canvas.shape[2]]
    weights = amp.sum(axis=(1, 2))
    safe = np.where(weights > 0, weights, 1.0)
    com_r = (amp * rows).sum(axis=(1, 2)) / safe
    com_c = (amp * cols).sum(axis=(1, 2)) / safe
    return {
        "M": cfg.padded_size,
        "shape": list(np.asarray(trace["object.canvas"]).shape),
        "amplitude": _stats(amp),
        "phase": _phase_stats(canvas),
        "covered_fraction": _f(np.mean(amp > 0)),
        "centre_of_mass": [_f(com_r.mean()), _f(com_c.mean())],
    }


def offset_stats(trace: Mapping[str, np.ndarray]) -> dict:
    """input.offsets (B,1,2,C): shape, unique_count (of rounded values), std, per-axis
    min/max/mean for x (axis 0 of dim 2) and y, and the values rounded to 1e-6."""
    off = np.asarray(trace["input.offsets"], dtype=np.float64)
    rounded = np.round(off, OFFSET_DECIMALS)
    # rounded like the values: the per-axis mean is 0 by construction, and its last-bit noise
    # (≈1e-15) would otherwise be a golden number no tolerance can judge
    axes = {name: {stat: _f(np.round(getattr(off[:, 0, i], stat)(), OFFSET_DECIMALS) + 0.0)
                   for stat in ("min", "max", "mean")} for i, name in enumerate(("x", "y"))}
    return {
        "shape": list(off.shape),
        "unique_count": int(np.unique(rounded).size),
        "std": _f(off.std()),
        "axes": axes,
        "values": (rounded + 0.0).tolist(),  # + 0.0 turns -0.0 into 0.0 for stable JSON
    }


def diffraction_stats(trace: Mapping[str, np.ndarray]) -> dict:
    """Stats of diffraction.amplitude and .intensity, and the relative Parseval residual
    |Σ amplitude² − Σ |ψ|²| / Σ |ψ|² over the batch, rounded to 1e-9: rounding noise (1e-16 in
    float64, 1e-7 in float32) reads as 0, a broken FFT normalisation does not."""
    amp = np.asarray(trace["diffraction.amplitude"], dtype=np.float64)
    psi = np.asarray(trace["probe.illuminated"]).astype(np.complex128)
    energy = float(np.sum(np.abs(psi) ** 2))
    residual = abs(float(np.sum(amp ** 2)) - energy) / energy if energy > 0 else 0.0
    return {
        "amplitude": _stats(amp),
        "intensity": _stats(np.asarray(trace["diffraction.intensity"])),
        "parseval_residual": round(residual, PARSEVAL_DECIMALS) + 0.0,
    }


SECTION_STAGES = {
    "patch_stats": ("object.patches",),
    "canvas": ("object.canvas",),
    "offsets": ("input.offsets",),
    "diffraction": ("diffraction.amplitude", "diffraction.intensity", "probe.illuminated"),
}


def summarise(trace: Mapping[str, np.ndarray], cfg: ForwardConfig) -> dict:
    """Every summary whose stages the trace provides (infer traces have no diffraction stages; a
    backend that lacks a stage lacks its section, which a golden comparison then reports)."""
    makers = {"patch_stats": lambda: patch_stats(trace), "canvas": lambda: canvas_stats(trace, cfg),
              "offsets": lambda: offset_stats(trace), "diffraction": lambda: diffraction_stats(trace)}
    return {section: makers[section]() for section, stages in SECTION_STAGES.items()
            if all(stage in trace for stage in stages)}
