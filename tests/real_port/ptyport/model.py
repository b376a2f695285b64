"""The network: an encoder, an amplitude and a phase decoder, and the physics around them."""

import os
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ptyport import physics

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class PortConfig:
    N: int = 64
    grid: int = 2
    big_object: bool = True
    big_probe: bool = False
    pad_object: bool = True
    probe_mask: bool = False
    activation: str = "sigmoid"
    step: int = 4
    jitter: int = 10
    width: int = 2
    intensity_scale: float = 1.0
    dtype: str = "float32"

    @property
    def channels(self):
        return self.grid * self.grid

    @property
    def canvas(self):
        if os.environ.get("PTYPORT_BUG") == "canvas":  # upstream's size: no margin for the jitter
            return self.N + (self.grid - 1) * self.step
        return self.N + (self.grid - 1) * self.step + self.jitter

    def to_json(self):
        out = asdict(self)
        if os.environ.get("PTYPORT_BUG") == "checkpoint":
            out.pop("intensity_scale")  # "derived from the photon count": the checkpoint drops it
        if os.environ.get("PTYPORT_BUG") == "config":
            out.pop("pad_object")  # an older schema: the loader rebuilds the model with the default
        return out


def _block(cin, cout, dtype, tail):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, dtype=dtype), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, padding=1, dtype=dtype), nn.ReLU(), tail)


ACTIVATIONS = {"sigmoid": torch.sigmoid, "swish": nn.functional.silu, "relu": torch.relu,
               "softplus": nn.functional.softplus}


class Decoder(nn.Module):
    def __init__(self, cfg, cin, activation):
        super().__init__()
        dtype = DTYPES[cfg.dtype]
        sizes = {64: [64, 32], 128: [128, 64, 32], 256: [256, 128, 64, 32]}[cfg.N]
        layers = []
        for f in sizes:
            layers.append(_block(cin, cfg.width * f, dtype, nn.Upsample(scale_factor=2, mode="nearest")))
            cin = cfg.width * f
        self.ups = nn.Sequential(*layers)
        out = cfg.channels if cfg.big_object else 1
        self.cfg, self.activation = cfg, activation
        self.final = nn.Conv2d(cin - 4, out, 3, padding=1, dtype=dtype) if cfg.pad_object else None
        if cfg.big_probe or not cfg.pad_object:
            up = cfg.width * (2048 // cfg.N)
            self.edge = _block(4 if cfg.pad_object else cin, up, dtype, nn.Upsample(scale_factor=2, mode="nearest"))
            self.edge_out = nn.Conv2d(up, out, 3, padding=1, dtype=dtype)
        else:
            self.edge = None
        self.register_buffer("outside", 1 - physics.window(cfg.N, dtype), persistent=False)

    def forward(self, h):
        h = self.ups(h)
        if not self.cfg.pad_object:
            return self.activation(self.edge_out(self.edge(h)))
        q = self.cfg.N // 4
        x = nn.functional.pad(self.activation(self.final(h[:, :-4])), (q, q, q, q))
        if self.edge is not None:
            x = x + nn.functional.silu(self.edge_out(self.edge(h[:, -4:]))) * self.outside
        return x


class PtyNet(nn.Module):
    def __init__(self, cfg: PortConfig):
        super().__init__()
        self.cfg = cfg
        dtype = DTYPES[cfg.dtype]
        sizes = {64: [32, 64, 128], 128: [16, 32, 64, 128], 256: [8, 16, 32, 64, 128]}[cfg.N]
        blocks, cin = [], cfg.channels
        for f in sizes:
            blocks.append(_block(cin, cfg.width * f, dtype, nn.MaxPool2d(2)))
            cin = cfg.width * f
        self.enc = nn.Sequential(*blocks)
        self.amp = Decoder(cfg, cin, ACTIVATIONS[cfg.activation])
        self.phs = Decoder(cfg, cin, physics.pi_tanh)
        # reserved for probe refinement, which is not in this model yet
        self.probe_refine = nn.Parameter(torch.zeros(8, dtype=dtype))
        # x_model = x_measured / s, written as a multiplication by 1/s
        persistent = os.environ.get("PTYPORT_BUG") != "checkpoint"
        self.register_buffer("inv_scale", torch.tensor(1.0 / cfg.intensity_scale, dtype=dtype),
                             persistent=persistent)

    def patches(self, diff, inv_scale=None):
        """diff (B, C, N, N) measured amplitudes (in counts) → the object patches (B, C, N, N);
        `inv_scale`: 1/s other than the model's own."""
        h = self.enc(diff * (self.inv_scale if inv_scale is None else inv_scale))
        amp = self.amp(h)
        phase = self.phs.forward(h)
        return physics.to_complex(amp, phase)

    def obj(self, diff, offsets, inv_scale=None):
        """diff (B, C, N, N) measured amplitudes (in counts), offsets (B, C, 2) → the object."""
        patches = self.patches(diff, inv_scale)
        if self.cfg.grid == 1:  # one position: the patch is the object
            return patches, patches
        canvas = physics.merge(patches, offsets, self.cfg.canvas, self.cfg.big_object)
        return canvas, physics.trim(canvas, self.cfg.N)

    def forward(self, diff, offsets, probe):
        canvas, _ = self.obj(diff, offsets)
        seen = canvas if self.cfg.grid == 1 else physics.extract(canvas, offsets, self.cfg.N)
        psi = physics.illuminate(seen, probe, self.cfg.probe_mask)
        amplitude = physics.far_field(psi, single=self.cfg.N >= 128)
        return physics.rescale(amplitude, self.inv_scale)


def loss(model, diff, offsets, probe):
    """Poisson negative log-likelihood of the measured intensities (no Stirling term)."""
    pred = model(diff, offsets, probe) ** 2
    return physics.poisson(pred, diff ** 2)
