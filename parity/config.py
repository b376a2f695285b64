"""`ForwardConfig`: the single source of truth for every knob of the forward model (docs/design.md §2).

Both backends take a `ForwardConfig` explicitly; neither has defaults of its own. The defaults
below are PtychoPINN's TensorFlow values.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

SUPPORTED_N = (64, 128, 256)
AMP_ACTIVATIONS = ("sigmoid", "swish", "softplus", "relu")


class ConfigError(ValueError):
    """A `ForwardConfig` knob has a value the forward model cannot use."""


@dataclass(frozen=True)
class ForwardConfig:
    N: int = 64
    gridsize: int = 2
    n_filters_scale: int = 2
    object_big: bool = True
    probe_big: bool = False
    pad_object: bool = True
    probe_mask: bool = False
    amp_activation: str = "sigmoid"
    offset: int = 4
    max_position_jitter: int = 10
    nphotons: float = 1e9
    probe_scale: float = 4.0
    # None means "derived": sqrt(nphotons) / (N/2). After construction this attribute always
    # holds the resolved value; `intensity_scale_given` remembers whether it was derived.
    intensity_scale: Optional[float] = None
    intensity_scale_given: bool = field(init=False, repr=False, compare=False)
    # Training loss = nll_weight·PoissonNLL + mae_weight·MAE (docs/design.md §11); upstream's
    # defaults train on the Poisson NLL alone.
    nll_weight: float = 1.0
    mae_weight: float = 0.0

    def __post_init__(self) -> None:
        given = self.intensity_scale is not None
        object.__setattr__(self, "intensity_scale_given", given)
        self._validate()
        if not given:
            object.__setattr__(self, "intensity_scale", math.sqrt(self.nphotons) / (self.N / 2))

    # -- validation ---------------------------------------------------------------------------
    def _validate(self) -> None:
        def need(ok: bool, knob: str, msg: str) -> None:
            if not ok:
                raise ConfigError(f"ForwardConfig.{knob}={getattr(self, knob)!r}: {msg}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        for knob in ("object_big", "probe_big", "pad_object", "probe_mask"):
            need(isinstance(getattr(self, knob), bool), knob, "must be True or False")
        need(is_int(self.N) and self.N in SUPPORTED_N, "N", f"must be one of {SUPPORTED_N}")
        need(is_int(self.gridsize) and self.gridsize >= 1, "gridsize", "must be an integer >= 1")
        need(is_int(self.n_filters_scale) and self.n_filters_scale >= 1, "n_filters_scale",
             "must be an integer >= 1")
        need(self.amp_activation in AMP_ACTIVATIONS, "amp_activation",
             f"must be one of {AMP_ACTIVATIONS}")
        need(is_int(self.offset) and self.offset >= 0, "offset", "must be an integer >= 0")
        need(is_int(self.max_position_jitter) and self.max_position_jitter >= 0,
             "max_position_jitter", "must be an integer >= 0")
        need(_positive_finite(self.nphotons), "nphotons", "must be a finite number > 0")
        need(_positive_finite(self.probe_scale), "probe_scale", "must be a finite number > 0")
        for knob in ("nll_weight", "mae_weight"):
            value = getattr(self, knob)
            need(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                 and value >= 0, knob, "must be a finite number >= 0")
        if self.intensity_scale is not None:
            need(_positive_finite(self.intensity_scale), "intensity_scale",
                 "must be None (derived) or a finite number > 0")
        pad = self.padded_size - self.N
        if pad % 2:
            raise ConfigError(
                f"ForwardConfig: padded size M = N + (gridsize-1)*offset + max_position_jitter = "
                f"{self.padded_size} gives M-N = {pad}, which is odd; the canvas must pad N "
                f"symmetrically (change offset or max_position_jitter)")

    # -- derived quantities -------------------------------------------------------------------
    @property
    def C(self) -> int:
        """Channels per group: gridsize²."""
        return self.gridsize ** 2

    @property
    def Co(self) -> int:
        """Object channels out of the decoders: C when object_big, else 1."""
        return self.C if self.object_big else 1

    @property
    def padded_size(self) -> int:
        """Canvas size M = N + (gridsize-1)·offset + max_position_jitter."""
        return self.N + (self.gridsize - 1) * self.offset + self.max_position_jitter

    @property
    def log_scale(self) -> float:
        """Initial value of the models' `log_scale` state: log(intensity_scale)."""
        return math.log(self.intensity_scale)

    # -- (de)serialisation --------------------------------------------------------------------
    def replace(self, **changes: Any) -> "ForwardConfig":
        """Like `dataclasses.replace`, but a derived intensity_scale is derived again."""
        if not self.intensity_scale_given and "intensity_scale" not in changes:
            changes["intensity_scale"] = None
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        if not self.intensity_scale_given:
            out["intensity_scale"] = None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ForwardConfig":
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"ForwardConfig: unknown keys {unknown}")
        return cls(**data)


def _positive_finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
