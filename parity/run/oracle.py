"""Arbitration: a third opinion on the first stage where two backends disagree, from the numpy
backend (`models_numpy`), recomputed from each backend's own inputs to that stage.
"""

from __future__ import annotations

import numpy as np

from models_numpy import physics
from parity.config import ForwardConfig
from parity.inputs.data import hard_probe_mask
from parity.stages import STAGE_INPUTS


# -- arbitration: recompute a physics stage from a backend's own inputs ------------------------

def _wide(a):
    a = np.asarray(a)
    return a.astype(np.complex128) if np.iscomplexobj(a) else a.astype(np.float64)


def _mask(cfg: ForwardConfig):
    return hard_probe_mask(cfg.N) if cfg.probe_mask else None


# stage -> function(trace, cfg, batch, net) giving that stage from the trace's own inputs to it;
# `net` is the numpy model of the case's weights (None: the network stages have no opinion)
RECOMPUTE = {
    "input.diffraction": lambda t, cfg, b, net: _wide(b.diffraction) * cfg.intensity_scale,
    "input.offsets": lambda t, cfg, b, net: _wide(b.offsets),
    "scaled_input": lambda t, cfg, b, net: _wide(t["input.diffraction"]) / cfg.intensity_scale,
    "encoder.out": lambda t, cfg, b, net: net.encoder(_wide(t["scaled_input"])),
    "decoder.amp": lambda t, cfg, b, net: net.decoder_amp(_wide(t["encoder.out"])),
    "decoder.phase": lambda t, cfg, b, net: net.decoder_phase(_wide(t["encoder.out"])),
    "object.patches": lambda t, cfg, b, net: physics.object_patches(_wide(t["decoder.amp"]), _wide(t["decoder.phase"])),
    "object.canvas": lambda t, cfg, b, net: physics.object_canvas(_wide(t["object.patches"]),
                                                                  _wide(t["input.offsets"]), cfg),
    "object.trimmed": lambda t, cfg, b, net: physics.object_trimmed(_wide(t["object.canvas"]), cfg),
    "object.extracted": lambda t, cfg, b, net: physics.object_extracted(_wide(t["object.canvas"]),
                                                                        _wide(t["input.offsets"]), cfg),
    "probe.illuminated": lambda t, cfg, b, net: physics.illuminate(_wide(t["object.extracted"]), _wide(b.probe),
                                                                   _mask(cfg)),
    "diffraction.amplitude": lambda t, cfg, b, net: physics.diffraction_amplitude(_wide(t["probe.illuminated"])),
    "diffraction.scaled": lambda t, cfg, b, net: physics.scale_diffraction(_wide(t["diffraction.amplitude"]),
                                                                           cfg.log_scale),
    "diffraction.intensity": lambda t, cfg, b, net: physics.intensity(_wide(t["diffraction.scaled"])),
}
NETWORK_STAGES = ("encoder.out", "decoder.amp", "decoder.phase")


def numpy_network(cfg: ForwardConfig, weights):
    """The numpy model of the case's weights, in float64: the oracle of the network stages."""
    import models_numpy

    return models_numpy.build(cfg, {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()})


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b, equal_nan=True))


def arbitrate(stage: str, ref_trace, other_trace, cfg: ForwardConfig, batch, tolerance: float,
              ref_name: str = "tensorflow", other_name: str = "torch", weights=None) -> dict:
    """Third opinion on a stage where the backends disagree: recompute it with the numpy backend
    (models_numpy) from each backend's own inputs to that stage and say which backend disagrees
    with numpy. Network stages need the case's `weights`."""
    from parity.run.compare import relative_error

    net = numpy_network(cfg, weights) if weights is not None else None
    if stage not in RECOMPUTE or (stage in NETWORK_STAGES and net is None):
        return {"stage": stage, "oracle": False, "blame": None,
                "verdict": f"{stage} is a network stage: no numpy oracle (check weights and "
                           f"the layer conventions of {stage.split('.')[0]})"}
    inputs = STAGE_INPUTS[stage]  # what RECOMPUTE reads of a trace (besides the batch)
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
            want = RECOMPUTE[stage](trace, cfg, batch, net)
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
