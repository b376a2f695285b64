"""The effective config of a model: the settings it actually computes with, in `ForwardConfig`
names, as the model itself holds them (a loaded model's come from its checkpoint, not from the
run). A backend's model declares it with `effective_config() -> {field: value}`; an adapter maps
the user's own names with `config=` (a mapping field -> dotted attribute path on the user's model,
or a callable model -> {field: value}). Fields a model does not declare are "not read" — listed,
never taken as agreeing. numpy only.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Optional

from parity.config import ForwardConfig
from parity.errors import WiringError


class EffectiveConfigError(WiringError):
    """An effective config that names a field ForwardConfig does not have (adapter wiring, exit 2)."""


def config_fields() -> tuple[str, ...]:
    """The fields a config check compares: every ForwardConfig field a user sets."""
    return tuple(f.name for f in dataclasses.fields(ForwardConfig) if f.init)


def values_of(cfg: ForwardConfig) -> dict[str, Any]:
    """Every field's value as the model computes with it (a derived intensity scale resolved)."""
    return {name: getattr(cfg, name) for name in config_fields()}


def effective_config(model) -> Optional[dict[str, Any]]:
    """What `model.effective_config()` declares, checked to be ForwardConfig fields; None where the
    model declares nothing."""
    declare = getattr(model, "effective_config", None)
    if declare is None:
        return None
    values = declare()
    if values is None:
        return None
    unknown = sorted(set(values) - set(config_fields()))
    if unknown:
        raise EffectiveConfigError(f"effective config names {', '.join(unknown)}, which ForwardConfig does not have "
                                   f"(known: {', '.join(config_fields())})")
    return dict(values)


def read_declared(model, declared: Mapping[str, str] | Callable[[Any], Mapping[str, Any]]) -> dict[str, Any]:
    """An adapter's `config=` applied to the user's model: a callable's result, or each field's
    dotted attribute path read (`{"offset": "cfg.step"}` reads model.cfg.step)."""
    if callable(declared):
        return dict(declared(model))
    out = {}
    for name, path in declared.items():
        value = model
        for part in path.split("."):
            value = getattr(value, part)
        out[name] = value
    return out


def _same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=0.0)
    return a == b


def differences(asked: ForwardConfig, effective: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, the model's value, the asked value) of every declared field that differs."""
    want = values_of(asked)
    return [(name, effective[name], want[name]) for name in config_fields()
            if name in effective and not _same(effective[name], want[name])]


def not_read(effective: Mapping[str, Any]) -> list[str]:
    return [name for name in config_fields() if name not in effective]
