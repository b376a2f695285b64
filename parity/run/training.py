"""Training parity, framework-free (docs/design.md §11): the optimizer's hyper-parameters, the
backward order of the trainable tensors, and the comparison of losses and gradients (K Adam
steps: `parity.run.adam_steps`).

The backends compute; this module only names, orders and judges (numpy only):
  - `loss_and_gradients(batch)` on a model → ({"loss", "loss.nll", "loss.mae"}: float,
    {"log_scale" | canonical weight name: gradient in the neutral (Keras) layout});
  - `train_steps(batch, steps, adam)` → an iterator of K records (the loss before the step and
    every trainable tensor after it), each step taken as its record is read.
Tolerance keys: `loss`, `loss.nll`, `loss.mae`, `grad.<tensor>`, `train.loss`, `train.<tensor>`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

import numpy as np

from parity.run.compare import StageComparison, TraceComparison, compare_traces
from parity.config import ForwardConfig
from parity.run.tolerances import ToleranceProfile
from parity.inputs.weights import weight_specs

LOSS_TERMS = ("loss", "loss.nll", "loss.mae")
LOG_SCALE = "log_scale"


@dataclass(frozen=True)
class AdamConfig:
    """Adam as the reference trains (Keras' defaults, upstream's learning rate), in Keras' form:
        alpha_t = lr·sqrt(1 − beta_2^t) / (1 − beta_1^t)
        m ← m + (g − m)(1 − beta_1);  v ← v + (g² − v)(1 − beta_2)
        w ← w − alpha_t·m / (sqrt(v) + epsilon)
    epsilon is added to sqrt(v) *before* bias correction; torch.optim.Adam adds its eps after it,
    so the port writes Keras' update out rather than using torch.optim.Adam. Keras also rounds the
    learning rate and the betas of the bias correction to float32 even for float64 weights; the
    port does the same (models_torch.training.Adam)."""

    learning_rate: float = 1e-3
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7  # Keras' default; torch's default is 1e-8

    def to_dict(self) -> dict:
        return {"learning_rate": self.learning_rate, "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon}


def trainable_names(cfg: ForwardConfig) -> list[str]:
    """Every trainable tensor in backward order, from the loss towards the input: `log_scale`
    (it scales the predicted diffraction, right before the loss), then the weights from the last
    layer of the phase decoder back to the first conv of the encoder."""
    return [LOG_SCALE, *reversed(list(weight_specs(cfg)))]


def as_arrays(values: Mapping, prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}{k}": np.asarray(v) for k, v in values.items() if v is not None}


def gradient_trace(losses: Mapping[str, float], grads: Mapping[str, Optional[np.ndarray]]) -> dict[str, np.ndarray]:
    """One backend's loss terms and gradients as one trace keyed by tolerance key."""
    return {**{k: np.asarray(v) for k, v in losses.items()}, **as_arrays(grads, "grad.")}


def gradient_order(cfg: ForwardConfig) -> list[str]:
    return [*LOSS_TERMS, *(f"grad.{n}" for n in trainable_names(cfg))]


@dataclass
class GradientCheck:
    """Loss terms and every gradient of one candidate against the reference, in backward order;
    a differing loss is arbitrated by the numpy backend's loss, a differing gradient by central
    differences of that loss."""

    candidate: str
    comparison: TraceComparison
    numpy_losses: Optional[dict] = None  # numpy's loss terms, where a loss term differed and numpy was asked
    blame: Optional[dict] = None  # {"blame": backend | "both" | None, "verdict": text}
    common_factor: Optional[dict] = None  # {"factor", "spread", "tensors"}: every gradient scaled alike

    @property
    def passed(self) -> bool:
        return self.comparison.passed

    @property
    def first_divergence(self) -> Optional[StageComparison]:
        return self.comparison.first_divergence

    def describe(self) -> str:
        first = self.first_divergence
        skipped = [s for s in self.comparison.stages if not s.provided]
        if first is None and skipped and len(skipped) == len(self.comparison.stages):
            return f"gradients {self.comparison.ref_name} vs {self.candidate}: {skipped[0].message}"
        if first is None:
            worst = self.comparison.worst
            return (f"gradients {self.comparison.ref_name} vs {self.candidate}: loss and every gradient agree"
                    + (f" (worst {worst.stage}: {worst.rel_error:.2e})" if worst and worst.rel_error is not None else "")
                    + (f"; not provided by {self.candidate}: {', '.join(s.stage for s in skipped)}" if skipped else ""))
        text = f"gradients {self.comparison.ref_name} vs {self.candidate}: first divergence (backward order) at {first.stage}: {first.message}"
        if self.common_factor:
            c = self.common_factor
            text += (f"; every gradient of {self.candidate} is {self.comparison.ref_name}'s × {c['factor']:.4g} "
                     f"(spread {c['spread']:.1e} over {c['tensors']} tensors): the loss is normalised differently "
                     f"(a mean where the other sums, another scale), not a bug of the backward pass")
        if self.blame:
            text += f"; {self.blame['verdict']}"
        return text

    def to_dict(self) -> dict:
        first = self.first_divergence
        return {"candidate": self.candidate, "passed": self.passed,
                "first_divergence": first.stage if first else None,
                "numpy_losses": self.numpy_losses, "blame": self.blame, "common_factor": self.common_factor,
                "tensors": [s.to_dict() for s in self.comparison.stages]}


def arbitrate_loss(ref_losses: Mapping[str, float], cand_losses: Mapping[str, float],
                   numpy_losses: Mapping[str, float], profile: ToleranceProfile, ref: str, cand: str) -> Optional[dict]:
    """Which side's loss agrees with numpy's, term by term; None when the two sides agree."""
    for term in LOSS_TERMS:
        if term not in cand_losses or term not in ref_losses:
            continue  # a term the candidate does not give (an adapter's loss): not provided
        tol = profile.for_stage(term)
        err_ref = rel_difference(numpy_losses[term], ref_losses[term])
        err_cand = rel_difference(numpy_losses[term], cand_losses[term])
        if rel_difference(ref_losses[term], cand_losses[term]) <= tol:
            continue
        ok_ref, ok_cand = err_ref <= tol, err_cand <= tol
        blame = cand if ok_ref and not ok_cand else ref if ok_cand and not ok_ref else "both"
        verdict = (f"numpy's {term} = {numpy_losses[term]:.12g} agrees with {ref} ({err_ref:.1e}) "
                   f"and not with {cand} ({err_cand:.1e}): {cand} is wrong" if blame == cand else
                   f"numpy's {term} = {numpy_losses[term]:.12g} agrees with {cand} ({err_cand:.1e}) "
                   f"and not with {ref} ({err_ref:.1e}): {ref} is wrong" if blame == ref else
                   f"numpy's {term} = {numpy_losses[term]:.12g} differs from both ({ref} {err_ref:.1e}, "
                   f"{cand} {err_cand:.1e})")
        return {"term": term, "blame": blame, "verdict": verdict,
                "numpy": numpy_losses[term], ref: ref_losses[term], cand: cand_losses[term]}
    return None


def rel_difference(ref: float, other: float) -> float:
    if not (math.isfinite(ref) and math.isfinite(other)):
        return 0.0 if ref == other else math.inf
    return abs(other - ref) / abs(ref) if ref != 0 else abs(other)


def directional_derivative(cfg: ForwardConfig, weights: Mapping[str, np.ndarray], log_scale: float, batch,
                           tensor: str, direction: np.ndarray, step: float,
                           probe: Optional[np.ndarray] = None) -> float:
    """d loss / dt of loss(tensor + t·direction) at t = 0 by central differences of the numpy
    backend's loss, in float64; `probe`: the model's probe state where it is not the batch's (a
    trained checkpoint's)."""
    import dataclasses

    from parity.backends import get_backend

    wide = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    batch = dataclasses.replace(batch, diffraction=np.asarray(batch.diffraction, dtype=np.float64),
                                offsets=np.asarray(batch.offsets, dtype=np.float64),
                                probe=np.asarray(batch.probe if probe is None else probe, dtype=np.complex128))

    def loss_at(t: float) -> float:
        if tensor == LOG_SCALE:
            w, ls = wide, log_scale + t * float(direction)
        else:
            w, ls = dict(wide, **{tensor: wide[tensor] + t * direction}), log_scale
        return get_backend("numpy").build(cfg, w, log_scale=ls).losses(batch)["loss"]

    return (loss_at(step) - loss_at(-step)) / (2 * step)


def arbitrate_gradient(cfg: ForwardConfig, weights: Mapping[str, np.ndarray], log_scale: float, batch, tensor: str,
                       ref_grad: Optional[np.ndarray], cand_grad: Optional[np.ndarray], ref: str, cand: str,
                       probe: Optional[np.ndarray] = None) -> dict:
    """Which side's gradient of `tensor` is right: both are projected on d = (ref − cand)/max|ref − cand|
    and compared with the numpy loss's central difference along d (two step sizes, so the
    difference's own error is known). A missing gradient counts as zero."""
    shape = np.shape(weights[tensor]) if tensor != LOG_SCALE else ()
    g_ref = np.zeros(shape) if ref_grad is None else np.asarray(ref_grad, dtype=np.float64)
    g_cand = np.zeros(shape) if cand_grad is None else np.asarray(cand_grad, dtype=np.float64)
    delta = g_ref - g_cand
    direction = delta / (np.max(np.abs(delta)) or 1.0)
    scale = float(np.max(np.abs(weights[tensor]))) if tensor != LOG_SCALE else abs(log_scale)
    h = 1e-5 * max(scale, 1e-3)
    fd = directional_derivative(cfg, weights, log_scale, batch, tensor, direction, h, probe)
    fd_half = directional_derivative(cfg, weights, log_scale, batch, tensor, direction, h / 2, probe)
    uncertainty = 2 * abs(fd - fd_half) + 1e-12 * abs(fd)
    p_ref, p_cand = float(np.sum(g_ref * direction)), float(np.sum(g_cand * direction))
    e_ref, e_cand = abs(p_ref - fd_half), abs(p_cand - fd_half)
    if abs(p_ref - p_cand) <= 3 * uncertainty:
        blame, verdict = None, (f"numpy's central difference along (ref − cand) ({fd_half:.6g} ± {uncertainty:.1g}) "
                                f"cannot tell {ref} ({p_ref:.6g}) from {cand} ({p_cand:.6g})")
    else:
        blame = cand if e_ref < e_cand else ref
        right = ref if blame == cand else cand
        verdict = (f"numpy's central difference of the loss along (ref − cand) is {fd_half:.6g} ± {uncertainty:.1g}: "
                   f"{right} gives {p_ref if right == ref else p_cand:.6g}, {blame} gives "
                   f"{p_cand if blame == cand else p_ref:.6g}: {blame} is wrong")
    return {"tensor": tensor, "blame": blame, "verdict": verdict, "numpy_directional": fd_half,
            "uncertainty": uncertainty, ref: p_ref, cand: p_cand}


def compare_gradients(cfg: ForwardConfig, ref: tuple, cand: tuple, profile: ToleranceProfile,
                      ref_name: str, cand_name: str,
                      numpy_losses: Optional[Callable[[], Mapping[str, float]]] = None,
                      arbiter: Optional[dict] = None, partial: bool = False) -> GradientCheck:
    """`ref`/`cand`: (losses, grads) as `loss_and_gradients` returns them. `numpy_losses()` gives
    the numpy backend's loss terms, asked only where a loss term differs (a numpy forward pass of
    the case). `arbiter` ({"weights", "log_scale", "batch"} and, for a trained case, "probe": the
    model state the loss is taken at) lets the numpy backend's central differences judge a
    differing gradient.
    `partial`: the candidate (an adapter) gives only some terms and tensors; the others read "not
    provided"."""
    cand_trace = gradient_trace(*cand)
    missing = [k for k in gradient_order(cfg) if k not in cand_trace] if partial else []
    comparison = compare_traces(gradient_trace(*ref), cand_trace, profile, ref_name, cand_name,
                                order=gradient_order(cfg), not_provided=missing)
    blame, asked = None, None
    first = comparison.first_divergence
    if first is not None and first.stage in LOSS_TERMS and numpy_losses is not None:
        asked = dict(numpy_losses())
        blame = arbitrate_loss(ref[0], cand[0], asked, profile, ref_name, cand_name)
    elif first is not None and first.stage.startswith("grad.") and arbiter is not None:
        tensor = first.stage.removeprefix("grad.")
        blame = arbitrate_gradient(cfg, arbiter["weights"], arbiter["log_scale"], arbiter["batch"], tensor,
                                   ref[1].get(tensor), cand[1].get(tensor), ref_name, cand_name, arbiter.get("probe"))
    factor = common_factor(ref[1], cand[1]) if not comparison.passed else None
    return GradientCheck(cand_name, comparison, asked, blame, factor)


FACTOR_SPREAD = 1e-3  # how far apart the per-tensor factors may be to be one common factor


def common_factor(ref: Mapping[str, np.ndarray], cand: Mapping[str, np.ndarray]) -> Optional[dict]:
    """{"factor", "spread", "tensors"} where every gradient the two share (at least two, non-zero)
    is the reference's times one factor other than 1: each tensor's least-squares factor within
    FACTOR_SPREAD of their median, and the tensor equal to factor × the reference's within it too.
    None otherwise."""
    factors = []
    for name in sorted(set(ref) & set(cand)):
        r, c = (np.asarray(a, dtype=np.float64) for a in (ref[name], cand[name]))
        if r.shape != c.shape or not np.any(r) or not np.all(np.isfinite(c)):
            return None
        f = float(np.vdot(r, c) / np.vdot(r, r))
        if np.max(np.abs(c - f * r)) > FACTOR_SPREAD * np.max(np.abs(c)):
            return None
        factors.append(f)
    if len(factors) < 2:
        return None
    median = float(np.median(factors))
    spread = max(abs(f / median - 1) for f in factors) if median else float("inf")
    if spread > FACTOR_SPREAD or abs(median - 1) <= FACTOR_SPREAD:
        return None
    return {"factor": median, "spread": spread, "tensors": len(factors)}


def gradient_summary(losses: Mapping[str, float], grads: Mapping[str, np.ndarray]) -> dict:
    """What a golden keeps of a gradient run: the loss terms and each gradient's L2 norm."""
    return {"loss": {k.replace("loss.", "") if k != "loss" else "total": float(v) for k, v in losses.items()},
            "grad_norm": {k: float(np.linalg.norm(np.asarray(g, dtype=np.float64)))
                          for k, g in grads.items() if g is not None}}
