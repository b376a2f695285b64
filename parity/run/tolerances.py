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


STATISTICS = ("max", "p99", "p90", "p50")  # what a tolerance may bound: a quantile of |Δ| / max|ref|


@dataclass(frozen=True)
class ToleranceProfile:
    """Stage-glob → allowed relative error; the longest matching glob wins. A rule bounds the
    maximum of |Δ| / max|ref| unless it names another statistic (`statistics`)."""

    name: str
    rules: Mapping[str, float]
    statistics: Mapping[str, str] = None  # glob -> "p99", ... where a rule names one
    noise: Mapping[str, float] = None  # stage -> the largest error `parity calibrate` measured for it

    def noise_for(self, stage: str):
        """The stage's measured noise (an honest port's largest error), or None where not calibrated."""
        return (self.noise or {}).get(stage)

    def for_stage(self, stage: str) -> float:
        return longest_match(self.name, self.rules, stage, "stage")

    def statistic_for(self, stage: str) -> str:
        """The statistic the stage's rule bounds ("max" unless the rule names another)."""
        rules = {p: (self.statistics or {}).get(p, "max") for p in self.rules}
        return longest_match(self.name, rules, stage, "stage")


def longest_match(profile: str, rules: Mapping[str, T], key: str, what: str) -> T:
    """The value of `key` itself where `rules` names it (a calibrated stage), else of the longest
    glob that matches it."""
    if key in rules:
        return rules[key]
    matches = [p for p in rules if fnmatch.fnmatchcase(key, p)]
    if not matches:
        raise ToleranceError(f"tolerance profile {profile!r} has no pattern matching {what} {key!r}")
    return rules[max(matches, key=len)]


_PARSED: dict[tuple, dict] = {}  # (path, mtime, size) -> the parsed file: read once per process


def read_tolerance_file(path: str | Path = TOLERANCE_PATH) -> dict:
    """The parsed tolerance file (parsed once per process while the file is unchanged; callers
    only read it); an unreadable one is one ToleranceError naming it."""
    path = Path(path)
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        if key not in _PARSED:
            _PARSED[key] = tomllib.loads(path.read_text())
        return _PARSED[key]
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ToleranceError(f"{path}: cannot read the tolerance file ({exc})") from None


def table_at(data: dict, path: str | Path, key: str) -> dict:
    """The table at dotted `key` ({} where a level is missing); a level that is not a table (a
    number where `[kind.device.dtype]` wants one) is one ToleranceError naming file and key."""
    table, walked = data, []
    for part in key.split("."):
        walked.append(part)
        table = table.get(part, {})
        if not isinstance(table, dict):
            raise ToleranceError(f"{path}: key '{'.'.join(walked)}' must be a table, got {table!r}")
    return table


def load_profile(device: str, dtype: str, kind: str = "agreement",
                 path: str | Path = TOLERANCE_PATH) -> ToleranceProfile:
    """The `[kind.device.dtype]` table of the tolerance file; for agreement, with the per-stage
    bounds of `[calibrated.device.dtype]` (exact stage names: they beat any glob) and the
    measured noise of `[noise.device.dtype]`, where `parity calibrate --write` wrote them."""
    key = f"{kind}.{device}.{dtype}"
    data = read_tolerance_file(path)
    table = table_at(data, path, key)
    if not table:
        raise ToleranceError(f"{path}: key '{key}' missing (no tolerances for {device} {dtype})")
    rules, statistics = {}, {}
    extra = table_at(data, path, f"calibrated.{device}.{dtype}") if kind == "agreement" else {}
    noise_key = f"noise.{device}.{dtype}"
    noise = {stage: _number(value, f"{path}: key '{noise_key}.\"{stage}\"'")
             for stage, value in (table_at(data, path, noise_key) if kind == "agreement" else {}).items()}
    for pattern, value in {**table, **extra}.items():
        where = f"{path}: key '{f'calibrated.{device}.{dtype}' if pattern in extra else key}.\"{pattern}\"'"
        if isinstance(value, dict):  # { p99 = 1e-10 }: the statistic it bounds, named
            if len(value) != 1 or next(iter(value)) not in STATISTICS:
                raise ToleranceError(f"{where} must be a number or one of {{ {' | '.join(STATISTICS)} = number }}, "
                                     f"got {value!r}")
            (statistic, value), = value.items()
            statistics[pattern] = statistic
        rules[pattern] = _number(value, where)
    return ToleranceProfile(key, rules, statistics, noise)


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ToleranceError(f"{where} must be a finite number >= 0, got {value!r}")
    return float(value)
