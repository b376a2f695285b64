"""Golden JSON files: one per case, the summaries of the float64 CPU reference run (numpy only).

Kept apart, as in syrupy: the *serializer* (`build_golden`, `dumps`, `load_golden`), the
*comparator* (`compare_golden`, under a `GoldenProfile` from the tolerance file) and the
*storage* (`golden_path`, `write_atomic`). The pytest plugin feeds them to pytest-regressions'
regression check; `parity refresh` uses them directly.

A golden holds: `schema`, `case`, the case's `config`, `digests` (per dtype: sha256 of every input
array and of the weights, compared exactly), `summaries` (patch_stats, canvas, offsets,
diffraction; compared under tolerances; `gradients` — loss terms and gradient norms — compared when
the run computed them) and `provenance` (recorded, never compared).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

from parity.files import plain, write_atomic  # noqa: F401 (write_atomic: the goldens' storage writes through it)
from parity.goldens.summaries import ANGLE_KEYS
from parity.resources import FIXTURES_ROOT
from parity.run.tolerances import TOLERANCE_PATH, ToleranceError, longest_match, read_tolerance_file, table_at

SCHEMA = 1
GOLDEN_DIR = FIXTURES_ROOT / "goldens"
SECTIONS = ("patch_stats", "canvas", "offsets", "diffraction")
# Compared when the run computed it (`parity check --grad`, the gradient tests): the loss terms and
# each gradient's L2 norm of the reference, so a change that alters both backends alike is caught.
OPTIONAL_SECTIONS = ("gradients",)
REFERENCE = ("tensorflow", "cpu", "float64")  # the run a golden records: backend, device, dtype


class GoldenError(ValueError):
    """A golden file is unreadable or malformed; the message names the file and the key."""


# -- serializer ---------------------------------------------------------------------------------

def _refuse(value: float):
    raise GoldenError(f"a golden value is {value}: summaries must be finite")


def build_golden(case_name: str, config: Mapping, digests: Mapping[str, Mapping],
                 summaries: Mapping, provenance: Mapping) -> dict:
    """The golden of one case. `digests`: dtype → {"inputs": {array: sha256}, "weights": sha256}."""
    return {"schema": SCHEMA, "case": case_name, "config": dict(config),
            "digests": {k: dict(v) for k, v in digests.items()},
            "summaries": {k: summaries[k] for k in (*SECTIONS, *OPTIONAL_SECTIONS) if k in summaries},
            "provenance": dict(provenance)}


def dumps(golden: Mapping) -> str:
    """Sorted keys, one item per line, floats as Python's shortest round-trip repr."""
    return json.dumps(plain(golden, nonfinite=_refuse), indent=1, sort_keys=True, allow_nan=False) + "\n"


def load_golden(path: str | Path) -> dict:
    """Read and validate a golden; any problem is one GoldenError naming the file and the key."""
    path = Path(path)
    try:
        golden = json.loads(path.read_text())
    except FileNotFoundError:
        raise GoldenError(f"{path}: golden missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GoldenError(f"{path}: cannot read the golden ({exc})") from None
    except json.JSONDecodeError as exc:
        raise GoldenError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(golden, dict):
        raise GoldenError(f"{path}: a golden must be a JSON object, got {type(golden).__name__}")
    if golden.get("schema") != SCHEMA or isinstance(golden.get("schema"), bool):
        raise GoldenError(f"{path}: key 'schema' is {golden.get('schema')!r}, this version reads schema {SCHEMA} "
                          f"(regenerate with `parity refresh`)")
    for key, kind in (("case", str), ("config", dict), ("digests", dict), ("summaries", dict)):
        if key not in golden:
            raise GoldenError(f"{path}: key '{key}' missing")
        if not isinstance(golden[key], kind):
            raise GoldenError(f"{path}: key '{key}' must be a {kind.__name__}, got {type(golden[key]).__name__}")
    for section in SECTIONS:
        if not isinstance(golden["summaries"].get(section), dict):
            raise GoldenError(f"{path}: key 'summaries.{section}' missing or not an object")
    for dtype, entry in golden["digests"].items():
        if not (isinstance(entry, dict) and isinstance(entry.get("inputs"), dict)
                and isinstance(entry.get("weights"), str)):
            raise GoldenError(f"{path}: key 'digests.{dtype}' must hold 'inputs' (object) and 'weights' (string)")
    if not isinstance(golden.get("provenance", {}), dict):
        raise GoldenError(f"{path}: key 'provenance' must be an object, got {_kind(golden['provenance'])} "
                          f"(repair with `parity refresh --failing`)")
    for dtype, entry in golden["digests"].items():
        for name, digest in entry["inputs"].items():
            if not isinstance(digest, str):
                raise GoldenError(f"{path}: key 'digests.{dtype}.inputs.{name}' must be a string, got {digest!r}")
    for key, value in flatten(golden["summaries"]).items():
        if not isinstance(value, (int, float, str)) or isinstance(value, bool):
            raise GoldenError(f"{path}: key 'summaries.{key}' must be a number, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            # Infinity would allow any result (its tolerance rel * inf is inf) and NaN none
            raise GoldenError(f"{path}: key 'summaries.{key}' is {json.dumps(value)}: golden values must be "
                              f"finite (repair with `parity refresh --failing`)")
    return golden


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts and lists → {"a.b.0.c": leaf}; the keys tolerance globs and messages use."""
    out: dict[str, Any] = {}
    _flatten_into(out, tree, prefix)
    return out


def _flatten_into(out: dict[str, Any], tree: Any, prefix: str) -> None:
    # one dict filled in place: merging each subtree's dict into its parent's copied every leaf once per level
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        out[prefix] = tree
        return
    for k, v in items:
        _flatten_into(out, v, f"{prefix}.{k}" if prefix else str(k))


# -- comparator ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Allowance:
    rel: float = 0.0
    abs: float = 0.0

    def allowed(self, golden: float) -> float:
        return max(self.rel * abs(golden), self.abs)


@dataclass(frozen=True)
class GoldenProfile:
    """Summary-key glob → Allowance, from `[golden.<device>.<dtype>]`; the longest glob wins."""

    name: str
    rules: Mapping[str, Allowance]
    # key -> its Allowance: a golden has a few hundred keys, each matched against every glob once
    _matched: dict = field(default_factory=dict, init=False, compare=False, repr=False)

    def for_key(self, key: str) -> Allowance:
        if key not in self._matched:
            self._matched[key] = longest_match(self.name, self.rules, key, "summary key")
        return self._matched[key]


def load_golden_profile(device: str, dtype: str, path: str | Path = TOLERANCE_PATH) -> GoldenProfile:
    key = f"golden.{device}.{dtype}"
    table = table_at(read_tolerance_file(path), path, key)
    if not table:
        raise ToleranceError(f"{path}: key '{key}' missing (no golden tolerances for {device} {dtype})")
    rules = {}
    for pattern, value in table.items():
        ok = isinstance(value, dict) and set(value) <= {"rel", "abs"} and value and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
            for v in value.values())
        if not ok:
            raise ToleranceError(f"{path}: key '{key}.\"{pattern}\"' must be a table like "
                                 f"{{ rel = 1e-6, abs = 1e-9 }} of finite numbers >= 0, got {value!r}")
        rules[pattern] = Allowance(float(value.get("rel", 0.0)), float(value.get("abs", 0.0)))
    return GoldenProfile(key, rules)


@dataclass(frozen=True)
class KeyMismatch:
    key: str
    golden: Any
    obtained: Any
    difference: Optional[float]
    allowed: Optional[float]

    def row(self) -> str:
        if self.difference is None:
            return f"  {self.key}: golden {self.golden!r}, obtained {self.obtained!r}"
        return (f"  {self.key}: golden {self.golden!r}, obtained {self.obtained!r}, "
                f"difference {self.difference:.3g}, allowed {self.allowed:.3g}")


@dataclass
class GoldenResult:
    case: str
    run: str  # e.g. "torch cpu float32"
    inputs_changed: list[str] = field(default_factory=list)
    mismatches: list[KeyMismatch] = field(default_factory=list)
    compared: int = 0

    @property
    def passed(self) -> bool:
        return not self.inputs_changed and not self.mismatches

    def message(self, golden_file: str | Path) -> str:
        lines = []
        if self.inputs_changed:
            lines.append(f"inputs changed: {', '.join(self.inputs_changed)} ({self.case}, {self.run}: "
                         f"the digests in {golden_file} no longer match the case's inputs)")
        if self.mismatches:
            lines.append(f"{self.case} ({self.run}): {len(self.mismatches)} of {self.compared} summary keys "
                         f"out of tolerance against {golden_file}:")
            lines += [m.row() for m in self.mismatches]
        return "\n".join(lines) if lines else f"{self.case} ({self.run}): matches {golden_file}"


def compare_golden(golden: Mapping, summaries: Mapping, digests: Mapping, dtype: str,
                   profile: GoldenProfile, run: str = "", sections: Optional[Sequence[str]] = None) -> GoldenResult:
    """Digests of `dtype` exactly, then every summary key under `profile`. `sections`: only these
    summary sections (a backend that provides only some stages; the caller reports the rest)."""
    result = GoldenResult(case=str(golden.get("case")), run=run)
    want = golden["digests"].get(dtype)
    if want is None:
        result.inputs_changed.append(f"no {dtype} digests in the golden")
    else:
        for name in sorted(set(want["inputs"]) | set(digests["inputs"])):
            if want["inputs"].get(name) != digests["inputs"].get(name):
                result.inputs_changed.append(name)
        if want["weights"] != digests["weights"]:
            result.inputs_changed.append("weights")
    sections = [*(SECTIONS if sections is None else sections), *(k for k in OPTIONAL_SECTIONS if k in summaries)]
    expected = flatten({k: golden["summaries"][k] for k in sections if k in golden["summaries"]})
    obtained = flatten({k: summaries[k] for k in sections if k in summaries})  # missing: every key reported
    for key in sorted(set(expected) | set(obtained)):
        g, o = expected.get(key), obtained.get(key)
        result.compared += 1
        if key not in obtained or key not in expected:
            result.mismatches.append(KeyMismatch(key, g, o, None, None))
        elif _is_number(g) and _is_number(o) and not (isinstance(g, int) and isinstance(o, int)):
            diff = abs(float(o) - float(g))
            if key in ANGLE_KEYS:  # π and −π are one phase
                diff = abs(math.remainder(diff, 2 * math.pi))
            allowed = profile.for_key(key).allowed(float(g))
            if not diff <= allowed:  # NaN fails too
                result.mismatches.append(KeyMismatch(key, g, o, diff, allowed))
        elif g != o:  # shapes, counts, sizes: exact
            result.mismatches.append(KeyMismatch(key, g, o, None, None))
    return result


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# -- storage ------------------------------------------------------------------------------------

def golden_path(case_name: str, directory: str | Path | None = None) -> Path:
    return Path(directory or GOLDEN_DIR) / f"{case_name}.json"


def obtained_path(case_name: str, directory: str | Path | None = None) -> Path:
    return Path(directory or GOLDEN_DIR) / f"{case_name}.obtained.json"


def in_ci() -> bool:
    """CI (any non-empty value but 0/false) never writes goldens."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def iter_goldens(directory: str | Path | None = None) -> Iterator[Path]:
    return iter(sorted(p for p in Path(directory or GOLDEN_DIR).glob("*.json") if not p.name.endswith(".obtained.json")))
