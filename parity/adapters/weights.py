"""The neutral weights onto a user's parameters and back: names, transpositions, every problem
listed at once."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from parity.inputs.weights import WeightError
from parity.run.results import WiringError


class MappingError(WeightError, WiringError):
    """A weight mapping that does not fit the user's model (unmapped, left over, mis-shaped): the
    adapter's wiring (exit 2), every problem listed."""


# how a neutral (Keras-layout) tensor becomes the user's tensor
TRANSPOSE_RULES = {
    "same": None,
    "keras_conv_to_torch": (3, 2, 0, 1),  # (kh, kw, in, out) -> (out, in, kh, kw)
    "keras_dense_to_torch": (1, 0),  # (in, out) -> (out, in)
}


@dataclass
class WeightMapping:
    state: dict
    unmapped: list[str] = field(default_factory=list)  # canonical names with no user parameter
    leftover: list[str] = field(default_factory=list)  # user parameters nothing was mapped to
    misshaped: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)  # user parameters declared to have no counterpart

    def check(self) -> "WeightMapping":
        problems = []
        if self.unmapped:
            problems.append(f"unmapped {len(self.unmapped)}: {', '.join(self.unmapped)}")
        if self.leftover:
            problems.append(f"left over {len(self.leftover)}: {', '.join(self.leftover)}")
        if self.misshaped:
            problems.append(f"mis-shaped {len(self.misshaped)}: {'; '.join(self.misshaped)}")
        if problems:
            raise MappingError("weight mapping — " + " | ".join(problems))
        return self


def map_weights(weights: Mapping[str, np.ndarray], mapping: Mapping[str, tuple[str, str]],
                target_shapes: Mapping[str, tuple[int, ...]], unused: Sequence[str] = ()) -> WeightMapping:
    """canonical name → (user parameter name, rule in TRANSPOSE_RULES). Every problem is listed:
    canonical names without a user parameter, user parameters left without a value, shapes that
    do not fit after the transposition. `unused`: names or globs of the user's parameters that
    have no neutral counterpart on purpose; they are listed apart, never as left over."""
    out = WeightMapping(state={})
    for canonical, value in weights.items():
        if canonical not in mapping:
            out.unmapped.append(canonical)
            continue
        user, rule = mapping[canonical]
        if rule not in TRANSPOSE_RULES:
            raise ValueError(f"{canonical}: unknown rule {rule!r}; known: {', '.join(TRANSPOSE_RULES)}")
        axes = TRANSPOSE_RULES[rule]
        array = np.asarray(value) if axes is None else np.transpose(value, axes)
        want = tuple(target_shapes.get(user, ()))
        if user not in target_shapes:
            out.unmapped.append(f"{canonical} -> {user} (no such parameter)")
        elif array.shape != want:
            out.misshaped.append(f"{canonical} -> {user}: {array.shape} vs {want}")
        else:
            out.state[user] = np.ascontiguousarray(array)
    rest = sorted(set(target_shapes) - set(out.state) - {u for u, _ in mapping.values()})
    out.unused = [n for n in rest if any(fnmatch.fnmatchcase(n, pattern) for pattern in unused)]
    out.leftover = [n for n in rest if n not in out.unused]
    return out


def neutral_weights(state: Mapping[str, Any], mapping: Mapping[str, tuple[str, str]]) -> dict[str, np.ndarray]:
    """The inverse of `map_weights`: the user's tensors (by their names) back to canonical names
    in the neutral (Keras) layout."""
    out = {}
    for canonical, (user, rule) in mapping.items():
        if user not in state:
            continue
        array = _to_numpy(state[user])
        axes = TRANSPOSE_RULES[rule]
        out[canonical] = np.ascontiguousarray(array if axes is None else np.transpose(array, np.argsort(axes)))
    return out


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch
        return value.detach().cpu().numpy()
    if hasattr(value, "numpy"):  # TensorFlow
        return value.numpy()
    return np.asarray(value)
