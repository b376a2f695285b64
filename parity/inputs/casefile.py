"""Case files: the user's own cases, read from TOML (docs/cases.md, "Your own cases").

```toml
[[case]]
name = "lab-n64"
description = "our detector, our config"
data = "scans/run42.npz"      # a fly001-format NPZ, relative to this file (default: the shipped fixture)
groups = 8
first_seed = 0
[case.config]                 # ForwardConfig fields; the rest take ForwardConfig's defaults
gridsize = 2
object_big = true
[case.weights]
seed = 3                      # or, trained: checkpoint = "ckpt/model.pt" and backend = "torch"
scheme = "informative"
```

Every problem is one line naming the file, the case and the key (a `CaseFileError`: bad input,
exit 2); nothing is run before the whole file has been read. `CASE_KEYS` and `WEIGHT_KEYS` are the
reference the docs show.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any, Optional, Sequence

from parity.config import ConfigError, ForwardConfig
from parity.errors import UsageError
from parity.inputs.cases import Case, case_names, cases_in, get_case
from parity.inputs.fixture import FIXTURE_N128_PATH, FIXTURE_PATH
from parity.inputs.trained import Checkpoint
from parity.inputs.weights import DEFAULT_SCHEME, WEIGHT_SCHEMES as SCHEMES

# key: (type, default, what it is) — the reference of a [[case]] table
CASE_KEYS: dict[str, tuple[type, Any, str]] = {
    "name": (str, None, "the case's name (letters, digits, . _ -); required"),
    "description": (str, "", "one line for `parity cases` and the report"),
    "data": (str, None, "a fly001-format NPZ, relative to the case file (default: the shipped fixture)"),
    "groups": (int, 8, "how many groups of the scan to take, spread over it as the built-in cases are"),
    "first_seed": (int, 0, "the first scan index the groups are spread from"),
    "overrides": (bool, False, "true: this case replaces the built-in case of the same name"),
    "config": (dict, {}, "ForwardConfig fields (`parity cases` shows the built-ins'); the rest take the defaults"),
    "weights": (dict, {}, "neutral random weights (`seed`, `scheme`) or a trained model (`checkpoint`, `backend`)"),
}
WEIGHT_KEYS: dict[str, tuple[type, Any, str]] = {
    "seed": (int, 0, "the weight seed"),
    "scheme": (str, DEFAULT_SCHEME, f"how the weights are drawn: {' or '.join(SCHEMES)}"),
    "checkpoint": (str, None, "a trained model (file or folder, relative to the case file) in place of a seed: "
                              "its weights and state (log_scale, probe) go to every backend"),
    "backend": (str, "torch", "the backend whose own load() reads the checkpoint and whose weight mapping "
                              "turns it into neutral weights (`parity backends`)"),
}
_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


class CaseFileError(UsageError):
    """A case file that cannot be used: one line naming the file, the case and the key."""


def _type_name(kind: type) -> str:
    return {str: "a string", int: "an integer", bool: "true or false", dict: "a table"}[kind]


def _checked(entry: dict, keys: dict, where: str, prefix: str = "") -> dict:
    """The entry's values with their defaults, every key known and of its type."""
    unknown = sorted(set(entry) - set(keys))
    if unknown:
        raise CaseFileError(f"{where}: unknown key {prefix}{unknown[0]} (known: {', '.join(keys)})")
    out = {}
    for key, (kind, default, _) in keys.items():
        value = entry.get(key, default)
        wrong = value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool)))
        if wrong:
            raise CaseFileError(f"{where}: key {prefix}{key} must be {_type_name(kind)}, got {value!r}")
        out[key] = value
    return out


def _config(values: dict, where: str) -> ForwardConfig:
    fields = {f.name for f in dataclasses.fields(ForwardConfig) if f.init}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise CaseFileError(f"{where}: unknown key config.{unknown[0]} (ForwardConfig has no such field)")
    try:
        return ForwardConfig(**values)
    except (ConfigError, TypeError, ValueError) as exc:
        raise CaseFileError(f"{where}: key config: {exc}") from None


def _checkpoint(given: dict, weights: dict, path: Path, where: str) -> Optional[Checkpoint]:
    """The case's trained checkpoint, where `weights.checkpoint` names one (not with a seed)."""
    from parity.backends import BackendError, get_backend

    if weights["checkpoint"] is None:
        if "backend" in given:
            raise CaseFileError(f"{where}: key weights.backend names who reads a checkpoint; give weights.checkpoint")
        return None
    both = sorted({"seed", "scheme"} & set(given))
    if both:
        raise CaseFileError(f"{where}: key weights.{both[0]}: a case's weights come from a seed or from "
                            f"weights.checkpoint, not both")
    try:
        get_backend(weights["backend"])
    except BackendError as exc:
        raise CaseFileError(f"{where}: key weights.backend: {exc}") from None
    file = (path.parent / weights["checkpoint"]).resolve()
    if not file.exists():
        raise CaseFileError(f"{where}: key weights.checkpoint: no such file or folder {file}")
    return Checkpoint(file, weights["backend"], where=where)


def load_case_file(path: str | Path, builtin: Sequence[str] = ()) -> list[Case]:
    """The cases of one case file (`parity.inputs.cases.Case`, case set "file"). `builtin`: the
    built-in names a case may only take with `overrides = true`."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as exc:
        raise CaseFileError(f"{path}: cannot read the case file ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CaseFileError(f"{path}: not a TOML file: {exc}") from None
    extra = sorted(set(doc) - {"case"})
    if extra:
        raise CaseFileError(f"{path}: unknown key {extra[0]} (a case file holds [[case]] tables only)")
    entries = doc.get("case")
    if not isinstance(entries, list) or not entries:
        raise CaseFileError(f"{path}: no [[case]] table")
    cases, seen = [], set()
    for i, entry in enumerate(entries, 1):
        where = f"{path}: case {entry.get('name') if isinstance(entry.get('name'), str) else f'#{i}'}"
        values = _checked(entry, CASE_KEYS, where)
        name = values["name"]
        if not name or not _NAME.match(name):
            raise CaseFileError(f"{where}: key name must be letters, digits, '.', '_' or '-', got {name!r}")
        if name in seen:
            raise CaseFileError(f"{where}: key name: a second case named {name!r} in this file")
        if name in builtin and not values["overrides"]:
            raise CaseFileError(f"{where}: key name: {name!r} is a built-in case (say overrides = true to replace it)")
        seen.add(name)
        cfg = _config(values["config"], where)
        weights = _checked(values["weights"], WEIGHT_KEYS, where, prefix="weights.")
        checkpoint = _checkpoint(values["weights"], weights, path, where)
        if weights["scheme"] not in SCHEMES:
            raise CaseFileError(f"{where}: key weights.scheme must be {' or '.join(SCHEMES)}, got {weights['scheme']!r}")
        for key in ("groups", "first_seed"):
            if values[key] < (1 if key == "groups" else 0):
                raise CaseFileError(f"{where}: key {key} must be >= {1 if key == 'groups' else 0}, got {values[key]}")
        if values["data"] is None:
            if cfg.N not in (64, 128):
                raise CaseFileError(f"{where}: key data: the shipped fixtures hold N=64 and N=128 patterns; "
                                    f"give a scan for N={cfg.N}")
            data = FIXTURE_N128_PATH if cfg.N == 128 else FIXTURE_PATH
        else:
            data = (path.parent / values["data"]).resolve()
            if not data.is_file():
                raise CaseFileError(f"{where}: key data: no such file {data}")
        cases.append(Case(name, cfg, values["description"] or f"from {path.name}", n_groups=values["groups"],
                          first_seed=values["first_seed"], weight_seed=weights["seed"],
                          weight_scheme=weights["scheme"], case_set="file", data=data, checkpoint=checkpoint))
    return cases


def chosen_cases(names: Optional[Sequence[str]], case_set: Optional[str],
                 case_files: Sequence[str | Path] = (), default_set: str = "default") -> list[Case]:
    """The cases a command was given: `--case` (each once: a repeated name runs once; a case
    file's case by its name too), else the set `--cases` names (`default_set` when not given) —
    with the cases of each `--case-file` (parity.inputs.casefile) after them, or alone when
    neither `--case` nor `--cases` was given. A file's case that overrides a built-in takes its
    place. An unknown name or a bad case file is a UsageError (one line, exit 2)."""
    own = [c for f in case_files for c in load_case_file(f, builtin=case_names())]
    by_name = {c.name: c for c in own}
    if len(by_name) < len(own):
        twice = next(c.name for c in own if sum(o.name == c.name for o in own) > 1)
        raise UsageError(f"--case-file: the case {twice!r} is in more than one case file")
    if names:
        try:
            return [by_name[n] if n in by_name else get_case(n) for n in dict.fromkeys(names)]
        except KeyError as exc:
            raise UsageError(exc.args[0]) from None
    if own and case_set is None:
        return own
    chosen = [by_name.get(c.name, c) for c in cases_in(case_set or default_set)]
    return chosen + [c for c in own if c not in chosen]
