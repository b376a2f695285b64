"""A minimal reproduction of each origin (docs/design.md §12): the smallest slice of the batch on
which the candidate's stage, fed the reference's inputs, still fails; those inputs and both
outputs as an NPZ; and a short standalone script that recomputes the stage on every built-in
backend installed where it runs and prints each one's local error.

The slice: the groups first (the worst element's group alone, if the stage still fails on it),
then, for the stages that treat each channel on its own, the worst element's channel alone.
numpy only; the backends are called through the models the run built.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from parity.compare import compare_stage
from parity.stages import STAGE_INPUTS

# stages whose every channel is computed from the same channel of their inputs alone
PER_CHANNEL = {"probe.illuminated", "diffraction.amplitude", "diffraction.scaled", "diffraction.intensity"}
SCRIPT = "repro.py"
DATA = "repro.npz"


def _select(inputs: dict, groups: list[int], channel: Optional[int]) -> dict:
    out = {}
    for name, array in inputs.items():
        array = np.asarray(array)[groups]
        if channel is not None:
            array = array[..., [channel]]
        out[name] = np.ascontiguousarray(array)
    return out


def minimal_slice(stage: str, ref_model, cand_model, ref_trace: dict, batch, tolerance: float,
                  worst_at: Optional[dict], statistic: str = "max") -> tuple:
    """The smallest slice on which the candidate's stage still fails against the reference's,
    both fed the reference's inputs: (groups, channel or None, the sliced inputs, the reference's
    output, the candidate's output, their comparison), each output computed once."""
    inputs = {k: ref_trace[k] for k in STAGE_INPUTS[stage]}
    where = worst_at or {}

    def attempt(groups, channel):  # the batch gives the stages only the probe, the same for every slice
        sliced = _select(inputs, groups, channel)
        want, got = ref_model.stage(stage, sliced, batch), cand_model.stage(stage, sliced, batch)
        return groups, channel, sliced, want, got, compare_stage(stage, want, got, tolerance, statistic=statistic)

    kept = None
    if "group" in where and batch.size > 1:
        tried = attempt([where["group"]], None)
        kept = tried if not tried[-1].passed else None
    groups = kept[0] if kept else list(range(batch.size))
    if stage in PER_CHANNEL and "channel" in where and ref_trace[stage].shape[-1] > 1:
        tried = attempt(groups, where["channel"])
        kept = tried if not tried[-1].passed else kept
    return kept or attempt(groups, None)


def write_repro(folder: Path, *, case: str, dtype: str, stage: str, ref: str, cand: str, ref_model, cand_model,
                ref_trace: dict, batch, tolerance: float, worst_at: Optional[dict], statistic: str = "max") -> Path:
    """Write `folder`/repro.npz and repro.py for one origin; returns the script's path."""
    groups, channel, inputs, want, got, local = minimal_slice(stage, ref_model, cand_model, ref_trace, batch,
                                                              tolerance, worst_at, statistic)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / DATA, **{f"input/{k}": v for k, v in inputs.items()},
             **{f"output/{ref}": want, f"output/{cand}": got}, probe=np.asarray(batch.probe))
    meta = {"case": case, "dtype": dtype, "stage": stage, "reference": ref, "candidate": cand, "groups": groups,
            "channel": channel, "tolerance": tolerance, "local_error": local.rel_error}
    (folder / "repro.json").write_text(json.dumps(meta, indent=1) + "\n")
    (folder / SCRIPT).write_text(_script(meta))
    return folder / SCRIPT


def _script(meta: dict) -> str:
    channel = "" if meta["channel"] is None else f", channel {meta['channel']}"
    return f'''"""Minimal reproduction: stage {meta['stage']} of case {meta['case']} ({meta['dtype']}), groups
{meta['groups']}{channel}, fed {meta['reference']}'s inputs. {meta['candidate']}'s output parted from
{meta['reference']}'s by {meta['local_error']:.3e} (relative, max|Δ|/max|ref|; tolerance {meta['tolerance']:.1e}).

Run: python {SCRIPT}    (needs numpy, ptycho-parity and the framework of each backend to try;
a backend whose framework is missing is skipped)
"""
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from parity.backends import get_backend
from parity.cases import get_case

HERE = Path(__file__).resolve().parent
META = json.loads((HERE / "repro.json").read_text())
DATA = np.load(HERE / "{DATA}")
inputs = {{k.split("/", 1)[1]: DATA[k] for k in DATA.files if k.startswith("input/")}}
reference = DATA["output/" + META["reference"]]
cfg, weights, _ = get_case(META["case"]).inputs(META["dtype"])  # the case's config and weights
batch = SimpleNamespace(probe=DATA["probe"])  # a stage reads only the probe from its batch
for name in dict.fromkeys([META["candidate"], META["reference"], "numpy"]):
    backend = get_backend(name)
    if backend.missing():
        print(f"{{name:12s}} skipped: {{backend.missing()}}")
        continue
    out = backend.build(cfg, weights).stage(META["stage"], inputs, batch)
    scale = float(np.max(np.abs(reference)))
    error = float(np.max(np.abs(out - reference))) / scale if scale else float(np.max(np.abs(out - reference)))
    print(f"{{name:12s}} {{META['stage']}} local error against {{META['reference']}}: {{error:.3e}}")
'''
