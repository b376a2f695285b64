"""ptyport behind ptycho-parity: the whole adapter, written against the public API only.

Registered through the entry point `ptyport = ptyport_parity:backend` (see the test project).
"""

import math
import os

import numpy as np
import torch

from parity.adapters import Derived, Tap, map_weights, torch_backend

import ptyport
from ptyport import io

UNUSED = ("probe_refine",)  # reserved in ptyport, no counterpart in the neutral weights


def port_config(cfg, dtype="float64"):
    return ptyport.PortConfig(N=cfg.N, grid=cfg.gridsize, big_object=cfg.object_big, big_probe=cfg.probe_big,
                              pad_object=cfg.pad_object, probe_mask=cfg.probe_mask, activation=cfg.amp_activation,
                              step=cfg.offset, jitter=cfg.max_position_jitter, width=cfg.n_filters_scale,
                              intensity_scale=cfg.intensity_scale, dtype=dtype)


# --8<-- [start:config]
# the settings a ptyport model computes with, in ForwardConfig names: read from the model's own config
EFFECTIVE_CONFIG = {"N": "cfg.N", "gridsize": "cfg.grid", "object_big": "cfg.big_object", "probe_big": "cfg.big_probe",
                    "pad_object": "cfg.pad_object", "probe_mask": "cfg.probe_mask", "amp_activation": "cfg.activation",
                    "offset": "cfg.step", "max_position_jitter": "cfg.jitter", "n_filters_scale": "cfg.width",
                    "intensity_scale": "cfg.intensity_scale"}
# --8<-- [end:config]


def weight_mapping(cfg):
    """canonical name -> (ptyport parameter, transposition)."""
    conv = "keras_conv_to_torch"
    out = {}

    def pair(canonical, user):
        out[f"{canonical}.kernel"] = (f"{user}.weight", conv)
        out[f"{canonical}.bias"] = (f"{user}.bias", "same")

    for i in range({64: 3, 128: 4, 256: 5}[cfg.N]):
        pair(f"encoder.block{i}.conv0", f"enc.{i}.0")
        pair(f"encoder.block{i}.conv1", f"enc.{i}.2")
    for canonical, user in (("decoder_amp", "amp"), ("decoder_phase", "phs")):
        for i in range({64: 2, 128: 3, 256: 4}[cfg.N]):
            pair(f"{canonical}.block{i}.conv0", f"{user}.ups.{i}.0")
            pair(f"{canonical}.block{i}.conv1", f"{user}.ups.{i}.2")
        if cfg.pad_object:
            pair(f"{canonical}.head.conv1", f"{user}.final")
        if cfg.probe_big or not cfg.pad_object:
            pair(f"{canonical}.head.up.conv0", f"{user}.edge.0")
            pair(f"{canonical}.head.up.conv1", f"{user}.edge.2")
            pair(f"{canonical}.head.conv2", f"{user}.edge_out")
    return out


# --8<-- [start:make_model]
def make_model(cfg, weights, device):
    dtype = str(next(iter(weights.values())).dtype)
    model = ptyport.PtyNet(port_config(cfg, dtype))
    shapes = {k: tuple(v.shape) for k, v in model.named_parameters()}
    mapped = map_weights(weights, weight_mapping(cfg), shapes, unused=UNUSED).check()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in mapped.state.items()}, strict=False)
    return model.to(device)
# --8<-- [end:make_model]


def _inputs(model, batch, cfg):
    device = model.inv_scale.device
    diff = torch.from_numpy(np.ascontiguousarray(batch.diffraction.transpose(0, 3, 1, 2) * cfg.intensity_scale))
    offsets = torch.from_numpy(np.ascontiguousarray(batch.offsets[:, 0].transpose(0, 2, 1)))  # (B, C, 2)
    return diff.to(device), offsets.to(device), torch.from_numpy(batch.probe).to(device)


# --8<-- [start:run]
def run(model, batch, cfg):
    return model(*_inputs(model, batch, cfg))


def run_infer(model, batch, cfg):
    diff, offsets, _ = _inputs(model, batch, cfg)
    if os.environ.get("PTYPORT_INFER") == "patches":  # an entry that stops at the patches (stitched elsewhere)
        return io.reconstruct_patches(model, diff)
    return io.reconstruct(model, diff, offsets)
# --8<-- [end:run]


def loss(model, batch, cfg):
    return ptyport.model.loss(model, *_inputs(model, batch, cfg))


def load(path, cfg, device):
    return io.load(path, device)


def get_state(model):
    return {"log_scale": -math.log(float(model.inv_scale))}


def set_state(model, state):
    model.inv_scale.fill_(math.exp(-state["log_scale"]))


def _offsets(x):  # (B, C, 2) -> (B, 1, 2, C)
    return x.transpose(0, 2, 1)[:, None]


def _channel(x):  # a (B, M, M) canvas -> (B, M, M, 1)
    return x[..., None]


def _no_channel(x):  # and back, where the harness puts the reference's canvas in place of ptyport's
    return x[..., 0]


def taps(cfg):
    grid = cfg.gridsize > 1
    stitched = os.environ.get("PTYPORT_INFER") != "patches"  # the inference entry merges the patches
    # --8<-- [start:phase]
    phase = (Tap("decoder.phase", "phs", layout="BCHW") if os.environ.get("PTYPORT_TAP") == "submodule"
             else Tap("decoder.phase", "ptyport.physics:to_complex", function=True, pre=True, arg=1, layout="BCHW"))
    # --8<-- [end:phase]
    return [
        # the model's own inputs; its inference entry (io.reconstruct) does not call the model itself
        Tap("input.diffraction", "", pre=True, arg=0, layout="BCHW", infer=False),
        Tap("input.offsets", "", pre=True, arg=1, transform=_offsets, infer=False),
        Tap("scaled_input", "enc", pre=True, layout="BCHW"),
        # --8<-- [start:taps]
        Tap("encoder.out", "enc", layout="BCHW"),
        Tap("decoder.amp", "amp", layout="BCHW"),
        phase,
        Tap("object.patches", "ptyport.physics:to_complex", function=True, layout="BCHW"),
        Tap("object.canvas", "ptyport.physics:merge", function=True, transform=_channel, inverse=_no_channel, when=lambda c: grid,
            infer=stitched),
        # --8<-- [end:taps]
        *([Tap("object.trimmed", "ptyport.physics:trim", function=True, transform=_channel, inverse=_no_channel,
               when=lambda c: grid)] if stitched else []),
        Tap("object.extracted", "ptyport.physics:extract", function=True, layout="BCHW", when=lambda c: grid),
        Tap("probe.illuminated", "ptyport.physics:illuminate", function=True, layout="BCHW"),
        Tap("diffraction.amplitude", "ptyport.physics:far_field", function=True, layout="BCHW"),
        Tap("diffraction.scaled", "ptyport.physics:rescale", function=True, layout="BCHW"),
    ]


DERIVED = [
    # --8<-- [start:derived]
    Derived("diffraction.intensity", lambda t, cfg: t["diffraction.scaled"] ** 2),
    # --8<-- [end:derived]
    # at gridsize 1 ptyport illuminates the patch itself: that is the extracted object
    Derived("object.extracted", lambda t, cfg: t["object.patches"], when=lambda cfg: cfg.gridsize == 1),
]


def _centre(t, cfg):  # what a script that stitches the patches itself crops: the canvas's centre N × N
    canvas = t["object.canvas"]
    p = (canvas.shape[1] - cfg.N) // 2
    return canvas[:, p:p + cfg.N, p:p + cfg.N]


# with PTYPORT_INFER=patches the inference entry gives the patches; the crop is outside the model
DERIVED_PATCHES = [*DERIVED, Derived("object.trimmed", _centre, when=lambda cfg: cfg.gridsize > 1, infer=False)]


# --8<-- [start:backend]
def backend():
    derived = DERIVED_PATCHES if os.environ.get("PTYPORT_INFER") == "patches" else DERIVED
    return torch_backend("ptyport", make_model, run, taps, derived, run_infer=run_infer,
                         mapping=weight_mapping, get_state=get_state, set_state=set_state,
                         save=lambda model, path: io.save(model, path), load=load, loss=loss,
                         config=EFFECTIVE_CONFIG)
# --8<-- [end:backend]
