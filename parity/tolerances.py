"""The reviewed tolerance file (`fixtures/tolerances.toml`): glob keys, profiles per device × dtype."""

from __future__ import annotations

import fnmatch
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, TypeVar

from parity.resources import FIXTURES_ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TOLERANCE_PATH = FIXTURES_ROOT / "tolerances.toml"
T = TypeVar("T")


class ToleranceError(ValueError):
    """The tolerance file is unreadable or lacks a profile; the message names file and key."""


@dataclass(frozen=True)
class ToleranceProfile:
    """Stage-glob → allowed relative error; the longest matching glob wins."""

    name: str
    rules: Mapping[str, float]

    def for_stage(self, stage: str) -> float:
        return longest_match(self.name, self.rules, stage, "stage")


def longest_match(profile: str, rules: Mapping[str, T], key: str, what: str) -> T:
    """The value of the longest glob in `rules` that matches `key`."""
    matches = [p for p in rules if fnmatch.fnmatchcase(key, p)]
    if not matches:
        raise ToleranceError(f"tolerance profile {profile!r} has no pattern matching {what} {key!r}")
    return rules[max(matches, key=len)]


def read_tolerance_file(path: str | Path = TOLERANCE_PATH) -> dict:
    """The parsed tolerance file; an unreadable one is one ToleranceError naming it."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ToleranceError(f"{path}: cannot read the tolerance file ({exc})") from None


def load_profile(device: str, dtype: str, kind: str = "agreement",
                 path: str | Path = TOLERANCE_PATH) -> ToleranceProfile:
    """The `[kind.device.dtype]` table of the tolerance file."""
    data = read_tolerance_file(path)
    key = f"{kind}.{device}.{dtype}"
    table = data.get(kind, {}).get(device, {}).get(dtype)
    if not isinstance(table, dict) or not table:
        raise ToleranceError(f"{path}: key '{key}' missing (no tolerances for {device} {dtype})")
    for pattern, value in table.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ToleranceError(f"{path}: key '{key}.\"{pattern}\"' must be a finite number >= 0, got {value!r}")
    return ToleranceProfile(key, {k: float(v) for k, v in table.items()})
