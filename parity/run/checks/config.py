"""The config check, first in the pipeline (docs/design.md §10): the settings each model actually
computes with (its effective config, `parity.backends.effective`) against the config the run asked
for — the model each backend built, the one its own checkpoint loaded back into (save → load: a
loader that rebuilds the model from its defaults) and, for a case from a trained checkpoint, the
model that checkpoint loaded into. A drifted setting is the root cause of the divergences after
it, so the verdict leads with it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from parity.backends import get_backend
from parity.backends.effective import differences, effective_config, not_read
from parity.run.checks.base import Check, _status
from parity.run.record import BackendRaised
from parity.run.results import CheckResult


@dataclass
class ModelConfig:
    """One model's effective config against the asked one."""

    what: str  # "the training model", "the reloaded inference model", "the checkpoint's model (FILE)"
    declared: Optional[dict]  # None: the model declares none, or there is no such model
    drift: list = field(default_factory=list)  # (field, the model's value, asked)
    why_not: str = ""  # why it was not read

    def line(self) -> str:
        return "; ".join(f"{self.what} has {name}={mine!r} (asked: {asked!r})" for name, mine, asked in self.drift)

    def to_dict(self) -> dict:
        return {"model": self.what, "declared": self.declared,
                "differences": [{"field": f, "model": m, "asked": a} for f, m, a in self.drift]}


@dataclass
class ConfigCheck:
    backend: str
    models: list  # ModelConfig
    unread: list  # fields no model of this backend declares

    @property
    def passed(self) -> bool:
        return not any(m.drift for m in self.models)

    def describe(self) -> str:
        if not self.passed:
            return "; ".join(m.line() for m in self.models if m.drift)
        read = [m.what for m in self.models if m.declared is not None]
        tail = f" ({len(self.unread)} field(s) not read: {', '.join(self.unread)})" if self.unread else ""
        skipped = "".join(f"; {m.what} not read: {m.why_not}" for m in self.models if m.why_not)
        verb = "computes" if len(read) == 1 else "compute"
        return f"{' and '.join(read)} {verb} with the asked config{tail}{skipped}"

    def to_dict(self) -> dict:
        return {"backend": self.backend, "passed": self.passed, "not_read": self.unread,
                "models": [m.to_dict() for m in self.models]}


def _declared(ctx, name: str, model) -> Optional[dict]:
    return ctx.call(name, "effective_config", effective_config, model)  # a field ForwardConfig lacks: wiring


class ConfigAgreement(Check):
    name = "config"

    def backends(self, ctx):
        return ctx.backends

    def run(self, ctx, name):
        side, backend = ctx[name], get_backend(name)
        found = [ModelConfig("the training model", _declared(ctx, name, side.model))]
        if found[0].declared is None:
            return [self.not_run(name, f"{name} declares no effective config (an adapter: give config=)")]
        if ctx.request.checkpoints and backend.checkpoints:
            try:
                loaded = ctx.reload(name)
            except BackendRaised:  # the checkpoint check reports the raise, once
                found.append(ModelConfig("the reloaded inference model", None,
                                         why_not=f"its save or load raised (see checkpoint {name} → {name})"))
            else:
                found.append(ModelConfig("the reloaded inference model", _declared(ctx, name, loaded)))
        ckpt = ctx.inputs.case.checkpoint
        if ckpt is not None and ckpt.backend == name:
            trained = ckpt.read(ctx.cfg, ctx.dtype)
            found.append(ModelConfig(f"the checkpoint's model ({ckpt.path.name})", trained.config))
        for model in found:
            model.drift = differences(ctx.cfg, model.declared) if model.declared is not None else []
        unread = sorted(set.intersection(*(set(not_read(m.declared)) for m in found if m.declared is not None)))
        check = ConfigCheck(name, found, unread)
        return [CheckResult(self.name, name, _status(check.passed), check.describe(), check)]
