"""Checkpoints: a folder with the state dict and the config as JSON; and the inference entry."""

import json
import os
from pathlib import Path

import torch

from ptyport.model import PortConfig, PtyNet


def save(model, folder):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    if os.environ.get("PTYPORT_BUG") == "newkey":  # a newer version saves a buffer this loader does not know
        state["log_scale_delta"] = torch.zeros(())
    torch.save(state, folder / "weights.pt")
    (folder / "config.json").write_text(json.dumps(model.cfg.to_json()))
    return folder


def load(folder, device="cpu"):
    folder = Path(folder)
    cfg = PortConfig(**json.loads((folder / "config.json").read_text()))
    model = PtyNet(cfg)
    lenient = os.environ.get("PTYPORT_BUG") == "config"  # that older loader takes what fits, silently
    model.load_state_dict(torch.load(folder / "weights.pt", weights_only=True), strict=not lenient)
    return model.to(device)


@torch.no_grad()
def reconstruct_patches(model, diff):
    """The patches only (B, C, N, N): the scripts that call this stitch them themselves."""
    return model.patches(diff)


@torch.no_grad()
def reconstruct(model, diff, offsets):
    """What users call after training: the object (B, M, M) and its centre crop (B, N, N)."""
    print(f"ptyport: reconstructing {diff.shape[0]} groups")
    if os.environ.get("PTYPORT_BUG") == "scale":  # the scale of the config, not the one the model holds
        return model.obj(diff, offsets, inv_scale=1.0 / model.cfg.intensity_scale)
    return model.obj(diff, offsets)
