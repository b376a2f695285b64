"""A user's own torch port of the encoder, written in its own style (an nn.Sequential with its own
layer names, channels-first, raw diffraction in), and the adapter that makes it a parity backend.
Used by tests/test_adapters.py in process and, through an entry point, from a pytester project.
MYPORT_BUG=avgpool swaps its max-pooling for average pooling: a deliberate porting bug."""

import os

import numpy as np
import torch
from torch import nn

from parity.adapters import Derived, Tap, map_weights, torch_backend
from parity.inputs.weights import encoder_filters


def to_channels_first(x: torch.Tensor) -> torch.Tensor:
    """The port's own input step, a plain module-level function (tapped by wrapping it)."""
    return x.permute(0, 3, 1, 2)


class MyEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        pool = nn.AvgPool2d if os.environ.get("MYPORT_BUG") == "avgpool" else nn.MaxPool2d
        layers, cin = [], cfg.C
        for f in encoder_filters(cfg):
            layers += [nn.Conv2d(cin, f, 3, padding=1), nn.ReLU(), nn.Conv2d(f, f, 3, padding=1), nn.ReLU(), pool(2)]
            cin = f
        self.features = nn.Sequential(*layers)

    def forward(self, x):
        return self.features(x)


def weight_mapping(cfg):
    """canonical name -> (this port's parameter, rule): conv i of block b is features.{5b + 2i}."""
    mapping = {}
    for b in range(len(encoder_filters(cfg))):
        for i in range(2):
            mine = f"features.{5 * b + 2 * i}"
            mapping[f"encoder.block{b}.conv{i}.kernel"] = (f"{mine}.weight", "keras_conv_to_torch")
            mapping[f"encoder.block{b}.conv{i}.bias"] = (f"{mine}.bias", "same")
    return mapping


def make_model(cfg, weights, device):
    model = MyEncoder(cfg).to(dtype=torch.float64 if next(iter(weights.values())).dtype == np.float64
                              else torch.float32)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    encoder_only = {k: v for k, v in weights.items() if k.startswith("encoder.")}
    mapped = map_weights(encoder_only, weight_mapping(cfg), shapes).check()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in mapped.state.items()})
    return model.to(device)


def run(model, batch, cfg):
    # this port takes the normalised diffraction as it is: the reference's s·X / exp(log s)
    x = torch.from_numpy(np.ascontiguousarray(batch.diffraction))
    return model(to_channels_first(x))


def backend():
    return torch_backend(
        "my-port", make_model, run,
        taps=[Tap("scaled_input", f"{__name__}:to_channels_first", function=True, arg=0, pre=True),
              Tap("encoder.out", "features", layout="BCHW")],
        # never materialised by this port: the reference's input.diffraction is s·X
        derived=[Derived("input.diffraction", lambda t, cfg: t["scaled_input"] * cfg.intensity_scale)])
