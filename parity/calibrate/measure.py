"""What `parity calibrate` measures (docs/tolerances-origin.md): per stage, the disagreement of
honest implementations over many inputs — the port against the reference in the calibrated
dtype (what a bound judges) and the reference against its own float64 oracle (its rounding, for
context) — for every case and several weight seeds. numpy only; backends are imported lazily."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

WIDER = {np.dtype("float32"): np.float64, np.dtype("complex64"): np.complex128}


@dataclass
class StageNoise:
    """One stage's measured relative errors (max|Δ|/max|ref|), one per (case, seed)."""

    stage: str
    port: list[float] = field(default_factory=list)  # the candidate against the reference
    oracle: list[float] = field(default_factory=list)  # the reference against its float64 oracle
    worst: str = ""  # the case and seed of the largest port error

    def stats(self, values: Optional[Sequence[float]] = None) -> dict:
        values = np.asarray(self.port if values is None else values, dtype=float)
        if values.size == 0:
            return {"max": None, "p99": None, "median": None, "runs": 0}
        return {"max": float(values.max()), "p99": float(np.quantile(values, 0.99)),
                "median": float(np.median(values)), "runs": int(values.size)}


def rel_error(ref: np.ndarray, other: np.ndarray) -> float:
    """max|Δ|/max|ref| in the wider of the two dtypes (the agreement check's measure)."""
    ref, other = np.asarray(ref), np.asarray(other)
    wide = np.complex128 if np.iscomplexobj(ref) or np.iscomplexobj(other) else np.float64
    delta = np.abs(other.astype(wide) - ref.astype(wide))
    scale = float(np.max(np.abs(ref.astype(wide)), initial=0.0))
    worst = float(np.max(delta, initial=0.0))
    return worst / scale if scale > 0 else worst


def widened(value):
    """An array, a Batch or a dict of arrays with every float32/complex64 array in float64/complex128."""
    if isinstance(value, np.ndarray):
        return value.astype(WIDER[value.dtype]) if value.dtype in WIDER else value
    if isinstance(value, dict):
        return {k: widened(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value):
        return dataclasses.replace(value, **{f.name: widened(getattr(value, f.name)) for f in dataclasses.fields(value)
                                             if isinstance(getattr(value, f.name), np.ndarray)})
    return value


def _trace(model, batch, grad: bool) -> dict:
    from parity.run.training import gradient_trace

    out = dict(model.forward_train(batch))
    if grad:
        out.update(gradient_trace(*model.loss_and_gradients(batch)))
    return out


def measure_run(case, seed: int, dtype: str, device: str, ref: str, cand: str, grad: bool) -> dict:
    """{key: (port error, oracle error)} of one case with weight seed `seed`: every stage (and
    with `grad` the loss terms and gradients). The oracle is the reference in float64 on the same
    weights and batch, widened exactly (what the calibrated dtype's rounding is measured against)."""
    from parity.backends import get_backend

    case = dataclasses.replace(case, weight_seed=seed) if case.checkpoint is None else case
    cfg, weights, batch = case.inputs(dtype)
    state = case.state(dtype)
    ref_trace = _trace(get_backend(ref).build(cfg, weights, device="cpu", **state), batch, grad)
    cand_trace = _trace(get_backend(cand).build(cfg, weights, device=device, **state), batch, grad)
    oracle = {}
    if dtype != "float64":
        oracle = _trace(get_backend(ref).build(cfg, widened(weights), device="cpu", **widened(state)), widened(batch),
                        grad)
    return {k: (rel_error(ref_trace[k], cand_trace[k]) if k in cand_trace else None,
                rel_error(oracle[k], ref_trace[k]) if k in oracle else None) for k in ref_trace}


def measure(cases: Sequence, seeds: Sequence[int], dtype: str = "float32", device: str = "cpu",
            ref: str = "tensorflow", cand: str = "torch", grad: bool = False,
            progress: Callable[[str], None] = lambda line: None) -> dict[str, StageNoise]:
    """Every case × weight seed (a trained case: its checkpoint's weights, once); per key, the
    errors over the runs, in the order the reference gives them."""
    out: dict[str, StageNoise] = {}
    for case in cases:
        for seed in (seeds if case.checkpoint is None else seeds[:1]):
            progress(f"  {case.name}, weight seed {seed}")
            for key, (port, oracle) in measure_run(case, seed, dtype, device, ref, cand, grad).items():
                noise = out.setdefault(key, StageNoise(key))
                if port is not None:
                    if not noise.port or port > max(noise.port):
                        noise.worst = f"{case.name} seed {seed}"
                    noise.port.append(port)
                if oracle is not None:
                    noise.oracle.append(oracle)
    return out
