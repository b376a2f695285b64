"""Checkpoints: each backend's own round trip (save, load into a fresh model, its inference path
against the in-memory training path: the seed's bug) and the reference's checkpoint crossing
into each candidate and back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from parity.backends import get_backend
from parity.run.checks.base import Check, _provided, _status
from parity.run.compare import TraceComparison, compare_traces
from parity.run.results import FAILED, CheckResult
from parity.stages import INFER_STAGES


@dataclass
class CheckpointCheck:
    """A model saved, loaded back into a fresh object (`saved` → `loaded_by`), its inference path
    compared stage by stage with the saved model's in-memory training path."""

    saved: str  # the backend whose checkpoint was written
    loaded_by: str  # the backend that loaded it (the same one, or the other through neutral weights)
    comparison: TraceComparison

    @property
    def direction(self) -> str:
        return f"{self.saved} → {self.loaded_by}"

    @property
    def passed(self) -> bool:
        return self.comparison.passed

    @property
    def first_stage(self) -> Optional[str]:
        first = self.comparison.first_divergence
        return first.stage if first else None

    def describe(self, prefix: bool = True) -> str:
        head = f"checkpoint {self.direction}: " if prefix else ""
        if self.passed:
            return head + "reloaded inference path matches the training path"
        first = self.comparison.first_divergence
        return (head + f"the reloaded inference path parts from the in-memory training path at {self.first_stage}"
                + (f" ({first.message})" if first and first.message else ""))

    def to_dict(self) -> dict:
        worst = self.comparison.worst
        return {"saved": self.saved, "loaded_by": self.loaded_by, "direction": self.direction,
                "passed": self.passed, "first_divergence": self.first_stage,
                "worst_stage": worst.stage if worst else None,
                "worst_rel_error": worst.rel_error if worst else None,
                "stages": [st.to_dict() for st in self.comparison.stages]}


class CheckpointRoundTrip(Check):
    """Save, load into a fresh model on the same device, compare its inference path with the
    in-memory training path (the seed's bug: a checkpoint that loses the intensity scale)."""

    name = "checkpoint"

    def __init__(self, candidates_only: bool = False):
        self.candidates_only = candidates_only  # the fault catalogue judges only the port's own round trip

    def backends(self, ctx):
        return list(ctx.candidates) if self.candidates_only else ctx.backends

    def run(self, ctx, name):
        backend = get_backend(name)
        if not ctx.request.checkpoints:
            return [self.not_run(name, "checkpoints are off for this run", f"{name} → {name}")]
        if not backend.checkpoints:
            return [self.not_run(name, f"{name} has no save/load", f"{name} → {name}")]
        side = ctx[name]
        ctx.reload(name)
        side.reloaded = infer = ctx.call(name, "forward_infer after load", side.loaded.forward_infer, ctx.batch)
        order = list(backend.infer_stages_for(ctx.cfg))
        check = CheckpointCheck(name, name, compare_traces(
            {s: side.train[s] for s in order if s in side.train}, infer, side.profile,
            f"{name} train", f"{name} reloaded", order=order))
        return [CheckResult(self.name, name, _status(check.passed), check.describe(prefix=False), check, label=check.direction)]


def _misfit(cfg, weights) -> str:
    """What keeps `weights` from fitting the network of `cfg` (missing, extra, mis-shaped tensors
    with their shapes), or ""."""
    from parity.inputs.weights import WeightError, validate_weights

    try:
        validate_weights(cfg, weights)
    except WeightError as exc:
        return str(exc).removeprefix("weights do not match the network of this config — ")
    return ""


class CrossCheckpoint(Check):
    """The reference's checkpoint handed, as neutral weights + state, to the candidate, and the
    candidate's to the reference; each loaded side's inference path against the saving side's
    training path."""

    name = "cross-checkpoint"
    after = ("checkpoint",)  # hands on the models the round trip loaded

    def run(self, ctx, cand):
        out = []
        for saved, loaded_by in ((ctx.ref, cand), (cand, ctx.ref)):
            label = f"{saved} → {loaded_by}"
            why = self._why_not(ctx, saved, loaded_by)
            if why:
                out.append(self.not_run(cand, why, label))
                continue
            source = ctx[saved].loaded
            weights = ctx.call(saved, "weights() of the loaded model", source.weights)
            misfit = _misfit(ctx.cfg, weights)
            if misfit:  # the finding (a loader that rebuilt another network), not a raise of the other side
                out.append(CheckResult(self.name, cand, FAILED, f"{saved}'s reloaded model does not fit the network "
                                       f"of this config, so {loaded_by} cannot load it: {misfit}", label=label))
                continue
            state = ctx.call(saved, "state() of the loaded model", source.state)
            port = ctx.call(loaded_by, f"build from {saved}'s checkpoint", get_backend(loaded_by).build, ctx.cfg,
                            weights, probe=state.get("probe"), log_scale=state["log_scale"],
                            device=ctx[loaded_by].device)
            infer = ctx.call(loaded_by, f"forward_infer from {saved}'s checkpoint", port.forward_infer, ctx.batch)
            order = [s for s in _provided(ctx, saved, INFER_STAGES)
                     if s in get_backend(loaded_by).infer_stages_for(ctx.cfg)]
            check = CheckpointCheck(saved, loaded_by, compare_traces(
                {s: ctx[saved].train[s] for s in order}, {s: infer[s] for s in order if s in infer},
                ctx[cand].profile, f"{saved} train", f"{loaded_by} from {saved}'s checkpoint", order=order))
            out.append(CheckResult(self.name, cand, _status(check.passed), check.describe(prefix=False), check, label=label))
        return out

    @staticmethod
    def _why_not(ctx, saved: str, loaded_by: str) -> str:
        if not ctx.request.checkpoints:
            return "checkpoints are off for this run"
        if not get_backend(saved).checkpoints:
            return f"{saved} has no save/load"
        if ctx[saved].loaded is None:  # its own round trip raised, or did not run
            return f"{saved}'s own checkpoint was not loaded (see checkpoint {saved} → {saved})"
        if not get_backend(saved).neutral_out:
            return f"{saved} gives no neutral weights out (no weight mapping)"
        if get_backend(loaded_by).recorded:
            return f"the reference is recorded: it cannot load {saved}'s checkpoint"
        if not get_backend(loaded_by).builds_from_state:
            return f"{loaded_by} cannot be built from another backend's state (no set_state)"
        return ""
