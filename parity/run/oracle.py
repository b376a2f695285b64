"""Arbitration: a third opinion on the first stage where two backends disagree, from the numpy
backend (`models_numpy`), recomputed from each backend's own inputs to that stage through the
numpy model's own stage table (no second copy of the formulas here).
"""

from __future__ import annotations

import numpy as np

from parity.config import ForwardConfig
from parity.inputs.weights import init_weights
from parity.stages import STAGE_INPUTS


def _wide(a):
    a = np.asarray(a)
    return a.astype(np.complex128) if np.iscomplexobj(a) else a.astype(np.float64)


# the two stages that read only the batch (the models compute them outside their stage table)
INPUT_STAGES = {
    "input.diffraction": lambda cfg, batch: _wide(batch.diffraction) * cfg.intensity_scale,
    "input.offsets": lambda cfg, batch: _wide(batch.offsets),
}
NETWORK_STAGES = ("encoder.out", "decoder.amp", "decoder.phase")


def numpy_oracle(cfg: ForwardConfig, batch, weights=None):
    """The numpy model that recomputes stages, in float64, with the batch's probe as its state: the
    case's weights, or (without them) a stand-in set, under which the network stages have no
    opinion (`has_opinion`)."""
    from parity.backends import get_backend

    if weights is None:
        weights = init_weights(cfg, 0, "float64")
    # as registered: under the pytest plugin, numpy's stages replay from the reference cache
    return get_backend("numpy").build(cfg, {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()},
                                      probe=_wide(batch.probe))


def has_opinion(stage: str, weights=None) -> bool:
    """Whether numpy can recompute `stage`: every stage, the network's only with the case's weights."""
    return stage in STAGE_INPUTS and (weights is not None or stage not in NETWORK_STAGES)


def recompute(stage: str, trace, cfg: ForwardConfig, batch, oracle) -> np.ndarray:
    """`stage` from the trace's own inputs to it (parity.stages.STAGE_INPUTS), by the numpy model's
    own stage table (`models_numpy.model.STAGES`, what its forward paths run)."""
    if stage in INPUT_STAGES:
        return INPUT_STAGES[stage](cfg, batch)
    return _wide(oracle.stage(stage, {k: trace[k] for k in STAGE_INPUTS[stage]}, batch))


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b, equal_nan=True))


def arbitrate(stage: str, ref_trace, other_trace, cfg: ForwardConfig, batch, tolerance: float,
              ref_name: str = "tensorflow", other_name: str = "torch", weights=None) -> dict:
    """Third opinion on a stage where the backends disagree: recompute it with the numpy backend
    (models_numpy) from each backend's own inputs to that stage and say which backend disagrees
    with numpy. Network stages need the case's `weights`."""
    from parity.run.compare import relative_error

    if not has_opinion(stage, weights):
        return {"stage": stage, "oracle": False, "blame": None,
                "verdict": f"{stage} is a network stage: no numpy oracle (check weights and "
                           f"the layer conventions of {stage.split('.')[0]})"}
    oracle = numpy_oracle(cfg, batch, weights)
    inputs = STAGE_INPUTS[stage]  # what numpy reads of a trace (besides the batch)
    errors, answered = {}, None  # answered: (the inputs numpy was given, its answer)
    for name, trace in ((ref_name, ref_trace), (other_name, other_trace)):
        if stage not in trace or any(k not in trace for k in inputs):  # an input stage is missing here
            errors[name] = float("inf")
            continue
        # the same inputs as the side already recomputed (a network stage's numpy run costs a
        # forward): the same numpy answer
        if answered is not None and all(_same(trace[k], answered[0][k]) for k in inputs):
            want = answered[1]
        else:
            want = recompute(stage, trace, cfg, batch, oracle)
            answered = ({k: trace[k] for k in inputs}, want)
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
