"""A minimal reproduction of each origin (docs/design.md §12): the smallest slice of the batch on
which the candidate's stage, fed the reference's inputs, still fails; those inputs and both
outputs as an NPZ; and a short standalone script that recomputes the stage on every backend
installed where it runs and prints each one's local error.

The slice: the groups first (the worst element's group alone, if the stage still fails on it),
then, for the stages that treat each channel on its own, the worst element's channel alone, then,
for the stages that are pointwise in space, a window of CROP × CROP pixels around the worst element.
An adapter computes a stage through a whole forward call of the user's model: its reproduction
keeps the whole batch (written beside the inputs). numpy only; the backends are called through the
models the run built.
"""

from __future__ import annotations

import io
import json
from dataclasses import fields
from pathlib import Path
from typing import Optional

import numpy as np

from parity.run.compare import compare_stage
from parity.files import write_atomic
from parity.stages import STAGE_INPUTS

# stages whose every channel is computed from the same channel of their inputs alone
PER_CHANNEL = {"probe.illuminated", "diffraction.amplitude", "diffraction.scaled", "diffraction.intensity"}
# stages whose every pixel is computed from the same pixel of their inputs alone (and no state
# shaped like the image, as the probe of probe.illuminated is)
POINTWISE = {"scaled_input", "object.patches", "diffraction.scaled", "diffraction.intensity"}
CROP = 8
SCRIPT = "repro.py"
DATA = "repro.npz"


def _select(inputs: dict, groups: list[int], channel: Optional[int], crop: Optional[tuple]) -> dict:
    out = {}
    for name, array in inputs.items():
        array = np.asarray(array)[groups]
        if channel is not None:
            array = array[..., [channel]]
        if crop is not None:
            array = array[:, crop[0]:crop[1], crop[2]:crop[3]]
        out[name] = np.ascontiguousarray(array)
    return out


def _window(at: dict, shape: tuple) -> tuple[int, int, int, int]:
    """CROP × CROP pixels around (row, col), inside an image of `shape` (B, H, W, C)."""
    bounds = []
    for centre, size in ((at["row"], shape[1]), (at["col"], shape[2])):
        start = min(max(centre - CROP // 2, 0), max(size - CROP, 0))
        bounds += [start, min(start + CROP, size)]
    return tuple(bounds)


def minimal_slice(stage: str, ref_model, cand_model, ref_trace: dict, batch, tolerance: float,
                  worst_at: Optional[dict], statistic: str = "max") -> tuple:
    """The smallest slice on which the candidate's stage still fails against the reference's,
    both fed the reference's inputs: (groups, channel or None, crop or None, the sliced inputs,
    the reference's output, the candidate's output, their comparison), each output computed once."""
    inputs = {k: ref_trace[k] for k in STAGE_INPUTS[stage]}
    where = worst_at or {}
    sliceable = getattr(ref_model, "slices", True) and getattr(cand_model, "slices", True)

    def attempt(groups, channel, crop=None):  # the batch gives the stages only the probe, the same for every slice
        sliced = _select(inputs, groups, channel, crop)
        want, got = ref_model.stage(stage, sliced, batch), cand_model.stage(stage, sliced, batch)
        return (groups, channel, crop, sliced, want, got,
                compare_stage(stage, want, got, tolerance, statistic=statistic))

    kept = None
    if sliceable and "group" in where and batch.size > 1:
        tried = attempt([where["group"]], None)
        kept = tried if not tried[-1].passed else None
    groups = kept[0] if kept else list(range(batch.size))
    channel = None
    if sliceable and stage in PER_CHANNEL and "channel" in where and ref_trace[stage].shape[-1] > 1:
        tried = attempt(groups, where["channel"])
        kept = tried if not tried[-1].passed else kept
        channel = kept[1] if kept else None
    shape = ref_trace[stage].shape
    if sliceable and stage in POINTWISE and "row" in where and min(shape[1:3]) > CROP:
        tried = attempt(groups, channel, _window(where, shape))
        kept = tried if not tried[-1].passed else kept
    return kept or attempt(groups, None)


def write_repro(folder: Path, *, case, dtype: str, stage: str, ref: str, cand: str, ref_model, cand_model,
                ref_trace: dict, batch, tolerance: float, worst_at: Optional[dict], statistic: str = "max") -> Path:
    """Write `folder`/repro.npz, repro.json and repro.py for one origin; returns the script's path.
    `case`: the Case; its config and weight seed travel in repro.json (a trained case's weights
    and state in repro.npz), so the script rebuilds the models without knowing the case by name
    (a case file's case too)."""
    groups, channel, crop, inputs, want, got, local = minimal_slice(stage, ref_model, cand_model, ref_trace, batch,
                                                                    tolerance, worst_at, statistic)
    folder.mkdir(parents=True, exist_ok=True)
    whole = len(groups) == batch.size and channel is None and crop is None
    # a reproduction on the whole batch carries the batch (an adapter's forward call reads all of it)
    arrays = {f"batch/{f.name}": getattr(batch, f.name) for f in fields(batch)
              if isinstance(getattr(batch, f.name), np.ndarray)} if whole else {}
    if case.checkpoint is not None:  # trained weights and state travel with the reproduction
        arrays.update({f"weights/{k}": v for k, v in case.weights(dtype).items()})
        arrays.update({f"state/{k}": np.asarray(v) for k, v in case.state(dtype).items()})
    npz = io.BytesIO()
    np.savez(npz, **{f"input/{k}": v for k, v in inputs.items()},
             **{f"output/{ref}": want, f"output/{cand}": got}, probe=np.asarray(batch.probe), **arrays)
    write_atomic(folder / DATA, npz.getvalue())
    meta = {"case": case.name, "config": case.config.to_dict(),
            "weights": case.weights_source(), "dtype": dtype, "stage": stage, "reference": ref, "candidate": cand, "groups": groups,
            "channel": channel, "crop": None if crop is None else list(crop), "whole_batch": whole,
            "norm_factor": float(batch.norm_factor), "tolerance": tolerance, "local_error": local.rel_error}
    write_atomic(folder / "repro.json", json.dumps(meta, indent=1) + "\n")
    write_atomic(folder / SCRIPT, _script(meta))
    return folder / SCRIPT


def _script(meta: dict) -> str:
    where = f"groups {meta['groups']}"
    where += "" if meta["channel"] is None else f", channel {meta['channel']}"
    where += "" if meta["crop"] is None else ", rows {}:{}, columns {}:{}".format(*meta["crop"])
    parted = ("in shape" if meta["local_error"] is None
              else f"by\n{meta['local_error']:.3e} (relative, max|Δ|/max|ref|; tolerance {meta['tolerance']:.1e})")
    return f'''"""Minimal reproduction: stage {meta['stage']} of case {meta['case']} ({meta['dtype']}), {where},
fed {meta['reference']}'s inputs. {meta['candidate']}'s output parted from {meta['reference']}'s {parted}.

Run: python {SCRIPT}    (needs numpy, ptycho-parity and the framework of each backend to try;
a backend whose framework is missing is skipped; a port behind an adapter is tried where its
adapter is installed, through its entry point)
"""
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from parity.backends import BackendError, get_backend
from parity.config import ForwardConfig
from parity.inputs.data import Batch
from parity.inputs.weights import init_weights

HERE = Path(__file__).resolve().parent
META = json.loads((HERE / "repro.json").read_text())
DATA = np.load(HERE / "{DATA}")
inputs = {{k.split("/", 1)[1]: DATA[k] for k in DATA.files if k.startswith("input/")}}
reference = DATA["output/" + META["reference"]]
cfg = ForwardConfig.from_dict(META["config"])  # the case's config and weights, as the run had them
state = {{k.split("/", 1)[1]: DATA[k] for k in DATA.files if k.startswith("state/")}}
if "checkpoint" in META["weights"]:  # a trained model's weights and state, saved beside
    weights = {{k.split("/", 1)[1]: DATA[k] for k in DATA.files if k.startswith("weights/")}}
    state = {{k: (float(v) if k == "log_scale" else v) for k, v in state.items()}}
else:
    weights = init_weights(cfg, META["weights"]["seed"], META["dtype"], scheme=META["weights"]["scheme"])
if META["whole_batch"]:  # the run's whole batch: an adapter calls the user's model on all of it
    batch = Batch(**{{k.split("/", 1)[1]: DATA[k] for k in DATA.files if k.startswith("batch/")}},
                  norm_factor=META["norm_factor"])
else:
    batch = SimpleNamespace(probe=DATA["probe"])  # a stage reads only the probe from its batch
for name in dict.fromkeys([META["candidate"], META["reference"], "numpy"]):
    try:
        backend = get_backend(name)
    except BackendError as exc:
        print(f"{{name:12s}} skipped: {{exc}} (install its adapter's entry point, or register(backend()) "
              f"before this loop; then backend.build(cfg, weights).stage(stage, inputs, batch))")
        continue
    if backend.missing():
        print(f"{{name:12s}} skipped: {{backend.missing()}}")
        continue
    out = backend.build(cfg, weights, **state).stage(META["stage"], inputs, batch)
    if out.shape != reference.shape:
        print(f"{{name:12s}} {{META['stage']}} has shape {{out.shape}}, {{META['reference']}}'s {{reference.shape}}")
        continue
    scale = float(np.max(np.abs(reference)))
    error = float(np.max(np.abs(out - reference))) / scale if scale else float(np.max(np.abs(out - reference)))
    print(f"{{name:12s}} {{META['stage']}} local error against {{META['reference']}}: {{error:.3e}}")
'''
