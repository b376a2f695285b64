"""Golden fingerprints: whether a golden can be trusted without running the reference again
(docs/design.md §12).

A golden's `provenance.fingerprint` is the sha256 of everything that decides its content — the
reference backend's source files, the harness modules that compute summaries, digests and golden
tolerances, the framework and numpy versions, the case's config and input/weight digests (and a
trained case's checkpoint file) — and of the golden's own config, digests and summaries as written. `parity refresh --dry-run` (and
`--failing`/`--new`) re-run the reference only where the fingerprint no longer matches: a changed
source, version or input, a hand-edited golden, or a golden written before fingerprints. numpy
only; nothing here imports a framework.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import platform
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

# harness modules whose code decides a golden's numbers (besides the reference backend itself)
HARNESS_MODULES = ("inputs/cases", "config", "inputs/data", "inputs/npz", "inputs/weights", "goldens/summaries", "stages",
                   "run/engine", "goldens/store", "run/training")
REFERENCE_PACKAGE = "models_tf"
VERSIONED = ("tensorflow", "tensorflow-cpu", "keras")


def _package_sources(package: str) -> list[Path]:
    spec = importlib.util.find_spec(package)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"cannot find the package {package!r}")
    return sorted(p for d in spec.submodule_search_locations for p in Path(d).glob("*.py"))


def _versions() -> dict[str, Optional[str]]:
    out: dict[str, Optional[str]] = {"numpy": np.__version__, "python": ".".join(platform.python_version_tuple()[:2])}
    for name in VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def inputs_key(case, data: Optional[str | Path] = None, digests: Optional[Mapping] = None) -> str:
    """sha256 of what decides the golden of `case`: sources, versions, config, input digests
    (`digests`: dtype → the case's digests, where the caller has them already)."""
    from parity import __file__ as parity_init
    from parity.inputs.cases import case_digests
    from parity.run.tolerances import TOLERANCE_PATH

    h = hashlib.sha256()
    here = Path(parity_init).parent
    for path in [*_package_sources(REFERENCE_PACKAGE), *(here / f"{m}.py" for m in HARNESS_MODULES),
                 Path(TOLERANCE_PATH)]:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    payload = {"versions": _versions(), "config": case.config.to_dict(),
               "digests": digests or {d: case_digests(case, d, data) for d in ("float32", "float64")}}
    if case.checkpoint is not None:  # the trained weights' file itself, as well as what was read from it
        payload["checkpoint"] = case.checkpoint.digest()
    h.update(json.dumps(payload, sort_keys=True).encode())
    return h.hexdigest()


def _content(golden: Mapping) -> bytes:
    """The golden's content as its file holds it (written and read back the same way)."""
    from parity.goldens.store import dumps

    return dumps({k: golden.get(k) for k in ("case", "config", "digests", "summaries")}).encode()


def fingerprint(golden: Mapping, key: str) -> str:
    """The fingerprint a golden with this content, made from inputs `key`, carries."""
    return hashlib.sha256(key.encode() + b"\0" + _content(golden)).hexdigest()


def matches(golden: Mapping, key: str) -> bool:
    """True when `golden` was written by this code, these versions and inputs, and is unedited."""
    provenance = golden.get("provenance")
    stored = provenance.get("fingerprint") if isinstance(provenance, dict) else None
    return isinstance(stored, str) and stored == fingerprint(golden, key)
