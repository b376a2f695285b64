"""Stage-by-stage comparison of two traces (numpy only).

For each stage, in forward order: max|Δ|, relative error max|Δ|/max|ref|, mean|Δ|, the number
of elements over tolerance, the worst element's location (group, channel, row, col) and the
share of the tolerance budget used. A stage present on one side only, a shape or dtype
mismatch, or NaN/Inf on one side only is a failure with its own message; NaNs are never zeroed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from parity.stages import TRAIN_STAGES
from parity.run.tolerances import ToleranceProfile


@dataclass
class StageComparison:
    stage: str
    passed: bool
    message: str = ""
    tolerance: Optional[float] = None
    rel_error: Optional[float] = None
    max_abs: Optional[float] = None
    mean_abs: Optional[float] = None
    max_ref: Optional[float] = None
    n_over: Optional[int] = None
    n_elements: Optional[int] = None
    worst_at: Optional[dict] = None  # {"group", "channel", "row", "col"}
    budget_used: Optional[float] = None  # rel_error / tolerance; > 1 fails
    provided: bool = True  # False: a stage the candidate declares it does not implement
    overlap: Optional[dict] = None  # shapes differ: the comparison on the common centre
    # set by the origins check where the run diverges (parity.run.checks.origins)
    local_error: Optional[float] = None  # the stage computed from the reference's inputs
    amplification: Optional[float] = None  # rel_error / the largest rel_error of its inputs
    mark: Optional[str] = None  # origin | propagated | ok | not forced
    local_note: Optional[str] = None  # why there is no local error (an adapter that cannot force the stage)
    # the distribution of |Δ| / max|ref| over the elements: p50, p90, p99, max
    quantiles: Optional[dict] = None
    statistic: str = "max"  # what the tolerance bounds: the max of |Δ| / max|ref|, or a quantile of it
    noise: Optional[float] = None  # the stage's measured noise (`parity calibrate`), where calibrated

    @property
    def noise_ratio(self) -> Optional[float]:
        """rel_error as a multiple of the stage's measured noise (None where not calibrated, or
        where the measured noise is 0: an honest port is exact there)."""
        if not self.noise or self.rel_error is None:
            return None
        return self.rel_error / self.noise

    def in_noise(self) -> str:
        return noise_phrase(self.rel_error, self.noise)

    def to_dict(self) -> dict:
        return {**asdict(self), "noise_ratio": self.noise_ratio}


def noise_phrase(rel_error: Optional[float], noise: Optional[float]) -> str:
    """' = 30× the measured noise of this stage', ' where an honest port is exact', or '' where
    the stage is not calibrated (`noise`: the largest error `parity calibrate` measured for it)."""
    if noise is None or rel_error is None:
        return ""
    if noise == 0:
        return " where an honest port is exact" if rel_error else ""
    ratio = rel_error / noise
    return f" = {ratio:.2g}× the measured noise of this stage{', at the noise floor' if ratio <= 1 else ''}"


@dataclass
class TraceComparison:
    ref_name: str
    other_name: str
    stages: list[StageComparison] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.stages)

    @property
    def first_divergence(self) -> Optional[StageComparison]:
        """The first stage, in forward order, that fails."""
        return next((s for s in self.stages if not s.passed), None)

    @property
    def worst(self) -> Optional[StageComparison]:
        """The failing stage that comes first, else the stage with the largest budget share."""
        if not self.stages:
            return None
        if not self.passed:
            return self.first_divergence
        return max(self.stages, key=lambda s: s.budget_used or 0.0)

    def to_dict(self) -> dict:
        first = self.first_divergence
        return {"ref": self.ref_name, "other": self.other_name, "passed": self.passed,
                "first_divergence": first.stage if first else None,
                "stages": [s.to_dict() for s in self.stages]}


def relative_error(ref: np.ndarray, other: np.ndarray) -> float:
    """max|other − ref| / max|ref| (max|Δ| itself where ref is all zeros)."""
    diff = float(np.max(np.abs(np.asarray(other) - np.asarray(ref)), initial=0.0))
    scale = float(np.max(np.abs(ref), initial=0.0))
    return diff / scale if scale > 0 else diff


def location(shape: Sequence[int], flat_index: int) -> dict:
    """(group, channel, row, col) of an element of a (B, H, W, C) stage array."""
    idx = np.unravel_index(int(flat_index), tuple(shape))
    if len(idx) == 4:
        b, h, w, c = (int(i) for i in idx)
        return {"group": b, "channel": c, "row": h, "col": w}
    return {"index": [int(i) for i in idx]}


METRICS = ("max", "norm")
ULP_FLOOR = 4  # no stage fails by less than this many machine epsilons of its dtype, relative to max|ref|


def error_quantiles(delta: np.ndarray, scale: float) -> dict:
    """p50, p90, p99 and max of |Δ| / scale over the elements."""
    if delta.size == 0:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    rel = np.ravel(delta) / scale
    p50, p90, p99 = (float(q) for q in np.quantile(rel, (0.5, 0.9, 0.99)))
    return {"p50": p50, "p90": p90, "p99": p99, "max": float(rel.max())}


def compare_stage(stage: str, ref: Optional[np.ndarray], other: Optional[np.ndarray],
                  tolerance: float, ref_name: str = "reference", other_name: str = "other",
                  metric: str = "max", statistic: str = "max", noise: Optional[float] = None) -> StageComparison:
    """Compare one stage; never raises for bad data, it reports it. `metric`: "max" judges
    max|Δ|/max|ref| (every stage and gradient); "norm" judges ‖Δ‖₂/‖ref‖₂ (weights after Adam
    steps, where a few elements may part while the tensor as a whole tracks). `statistic`: with
    "max", which quantile of |Δ|/max|ref| the tolerance bounds (p99: a few elements may part,
    e.g. boundary pixels; `rel_error` stays the maximum)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if ref is None or other is None:
        missing = ref_name if ref is None else other_name
        present = other_name if ref is None else ref_name
        return StageComparison(stage, False, f"not provided by {missing} (present in {present} only)",
                               tolerance=tolerance)
    ref, other = np.asarray(ref), np.asarray(other)
    if ref.shape != other.shape:
        message = f"shape mismatch: {ref_name} {ref.shape} vs {other_name} {other.shape}"
        centre = common_centre(ref, other)
        if centre is None:
            return StageComparison(stage, False, message, tolerance=tolerance)
        inner = compare_stage(stage, *centre, tolerance, ref_name, other_name, metric, statistic)
        size = "×".join(str(n) for n in centre[0].shape[1:3])
        overlap = {"shape": list(centre[0].shape), "rel_error": inner.rel_error, "passed": inner.passed,
                   "message": inner.message}
        return StageComparison(stage, False, message + f"; on the common centre {size}: " + (
            inner.message or f"relative error {inner.rel_error:.2e}, within tolerance"), tolerance=tolerance,
            overlap=overlap)
    if ref.dtype != other.dtype:
        message = f"dtype mismatch: {ref_name} {ref.dtype} vs {other_name} {other.dtype}"
        if np.iscomplexobj(ref) != np.iscomplexobj(other):
            return StageComparison(stage, False, message, tolerance=tolerance)
        low = min(ref.dtype, other.dtype, key=lambda d: d.itemsize)  # the numbers, at the lower precision
        inner = compare_stage(stage, ref.astype(low), other.astype(low), tolerance, ref_name, other_name, metric,
                              statistic)
        inner.passed = False
        inner.message = (message + f"; compared at {low}: relative error {inner.rel_error:.2e} "
                         f"({'within' if inner.rel_error <= tolerance else 'over'} the tolerance {tolerance:.1e})")
        return inner
    bad_ref, bad_other = ~np.isfinite(ref), ~np.isfinite(other)
    if bad_ref.any() or bad_other.any():
        if not np.array_equal(bad_ref, bad_other):
            return StageComparison(
                stage, False,
                f"non-finite values differ: {ref_name} has {int(bad_ref.sum())} NaN/Inf, "
                f"{other_name} has {int(bad_other.sum())}", tolerance=tolerance,
                n_elements=int(ref.size))
    finite = ~bad_ref
    wide = np.complex128 if np.iscomplexobj(ref) else np.float64
    delta = np.where(finite, np.abs(other.astype(wide) - ref.astype(wide)), 0.0)
    abs_ref = np.where(finite, np.abs(ref.astype(wide)), 0.0)
    max_ref = float(np.max(abs_ref, initial=0.0))
    max_abs = float(np.max(delta, initial=0.0))
    if metric == "norm":
        norm_ref = float(np.linalg.norm(abs_ref))
        norm_delta = float(np.linalg.norm(delta))
        rel = norm_delta / norm_ref if norm_ref > 0 else norm_delta
        scale = norm_ref / np.sqrt(max(ref.size, 1)) if norm_ref > 0 else 1.0  # the RMS of ref
        what = "relative error ‖Δ‖₂/‖ref‖₂"
    else:
        rel = max_abs / max_ref if max_ref > 0 else max_abs
        scale = max_ref if max_ref > 0 else 1.0
        what = "relative error"
    # a few ulps of the dtype never fail a stage, whatever the tolerance says
    floor = ULP_FLOOR * float(np.finfo(ref.dtype).eps) if np.issubdtype(ref.dtype, np.inexact) else 0.0
    judged = max(tolerance, floor)
    n_over = int(np.sum(delta > judged * scale))
    quantiles = error_quantiles(delta, scale) if metric == "max" else None
    by_max = quantiles is None or statistic == "max"
    bounded = rel if by_max else quantiles[statistic]
    budget = bounded / tolerance if tolerance > 0 else (0.0 if bounded <= floor else float("inf"))
    passed = bounded <= judged
    what = what if by_max else f"{statistic} of the relative error"
    noted = noise_phrase(rel, noise) if by_max else ""
    message = "" if passed else (
        f"{what} {bounded:.3e}{noted + ',' if noted else ''} exceeds tolerance {tolerance:.1e} "
        f"({n_over} of {ref.size} elements over)")
    if bad_ref.any():
        message = (message + "; " if message else "") + f"{int(bad_ref.sum())} NaN/Inf at identical places on both sides"
    return StageComparison(
        stage, passed, message, tolerance=tolerance, rel_error=rel, max_abs=max_abs,
        mean_abs=float(np.mean(delta)) if delta.size else 0.0, max_ref=max_ref, n_over=n_over,
        n_elements=int(ref.size), worst_at=location(ref.shape, int(np.argmax(delta))) if delta.size else None,
        budget_used=budget, quantiles=quantiles, statistic=statistic, noise=noise)


def common_centre(ref: np.ndarray, other: np.ndarray) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Both (B, H, W, C) arrays cropped to their common centre, where they have one: the same
    batch and channel sizes and spatial sizes that differ by an even number. Else None."""
    if ref.ndim != 4 or other.ndim != 4 or ref.shape[0] != other.shape[0] or ref.shape[3] != other.shape[3]:
        return None
    h, w = min(ref.shape[1], other.shape[1]), min(ref.shape[2], other.shape[2])
    if any((x.shape[1] - h) % 2 or (x.shape[2] - w) % 2 for x in (ref, other)):
        return None

    def crop(x):
        top, left = (x.shape[1] - h) // 2, (x.shape[2] - w) // 2
        return x[:, top:top + h, left:left + w, :]

    return crop(ref), crop(other)


def compare_traces(ref: Mapping[str, np.ndarray], other: Mapping[str, np.ndarray],
                   tolerances: ToleranceProfile | Mapping[str, float] | float,
                   ref_name: str = "reference", other_name: str = "other",
                   order: Sequence[str] = TRAIN_STAGES, not_provided: Sequence[str] = (),
                   metric: Callable[[str], str] = lambda stage: "max",
                   ref_not_provided: Sequence[str] = ()) -> TraceComparison:
    """Compare every stage in `order` plus any stage found on one side only (appended). Stages in
    `not_provided` (declared by the candidate as not implemented) or `ref_not_provided` (by the
    reference) are listed as such: they are not compared, and they are not hidden. A stage one side
    gives without having declared it missing on the other is a failure. `metric(stage)` picks each
    stage's metric."""
    names = [s for s in order if s in ref or s in other]
    names += sorted((set(ref) | set(other)) - set(names))
    out = TraceComparison(ref_name, other_name)
    for stage in names:
        for declared, trace, name in ((not_provided, other, other_name), (ref_not_provided, ref, ref_name)):
            if stage in declared and stage not in trace:
                out.stages.append(StageComparison(stage, True, f"not provided by {name}", provided=False))
                break
        else:
            profile = tolerances if isinstance(tolerances, ToleranceProfile) else None
            statistic = profile.statistic_for(stage) if profile else "max"
            out.stages.append(compare_stage(stage, ref.get(stage), other.get(stage), _tolerance(tolerances, stage),
                                            ref_name, other_name, metric(stage), statistic,
                                            profile.noise_for(stage) if profile and metric(stage) == "max" else None))
    return out


def _tolerance(tolerances, stage: str) -> float:
    if isinstance(tolerances, ToleranceProfile):
        return tolerances.for_stage(stage)
    if isinstance(tolerances, Mapping):
        return float(tolerances[stage])
    return float(tolerances)
