"""`parity refresh`: regenerate golden files from the float64 CPU reference run.

Modes: `failing` (goldens that are missing, corrupt or out of tolerance), `all` (every case run),
`new` (missing goldens only). Each golden is written atomically on its own; goldens of cases the
run does not cover are never touched; nothing is written under `CI` unless allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from parity.inputs.cases import Case
from parity.goldens.store import (GoldenError, compare_golden, dumps, flatten, golden_path, in_ci,
                            load_golden, load_golden_profile, write_atomic, REFERENCE, SECTIONS)

MODES = ("failing", "all", "new")
MAX_ROWS = 30  # per golden in the old → new table; the rest are counted


class RefreshRefused(ValueError):
    """The refresh may not write here (CI, or a golden folder inside an installed package)."""


@dataclass
class Planned:
    case: str
    path: Path
    status: str  # new | corrupt | inputs changed | out of tolerance | changed | unchanged | unchecked
    write: bool
    golden: dict = field(repr=False)
    changes: list[tuple[str, object, object]] = field(default_factory=list)  # key, old, new
    note: str = ""


def _changed_keys(old: dict, new: dict) -> list[tuple[str, object, object]]:
    """Every summary and digest key whose value differs (exactly), old → new."""
    def comparable(golden: dict) -> dict:
        return flatten({"summaries": {k: golden.get("summaries", {}).get(k) for k in SECTIONS},
                        "digests": golden.get("digests"), "config": golden.get("config")})

    before, after = comparable(old), comparable(new)
    return [(k, before.get(k), after.get(k)) for k in sorted(set(before) | set(after))
            if before.get(k) != after.get(k)]


def plan(cases: Sequence[Case], mode: str, goldens_dir: Optional[Path] = None,
         data: Optional[str | Path] = None,
         progress: Callable[[str], None] = lambda line: None, recompute: bool = False) -> list[Planned]:
    """Decide, per golden, what `mode` writes. The reference is run for every case, except — in
    the `failing` and `new` modes, unless `recompute` — where the golden's fingerprint shows that
    nothing that decides it has changed (parity.goldens.fingerprint): that golden is unchanged as it is."""
    from parity.goldens import recipe
    from parity.backends import BackendUnavailable, get_backend
    from parity.goldens.fingerprint import inputs_key, matches

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    profile = load_golden_profile(REFERENCE[1], REFERENCE[2])
    missing = get_backend(REFERENCE[0]).missing()  # TensorFlow not installed: goldens can be read, not made
    out = []
    for i, case in enumerate(cases, 1):
        path = golden_path(case.name, goldens_dir)
        try:
            old, unreadable = load_golden(path), None
        except GoldenError as exc:
            old, unreadable = None, exc
        if old is not None and mode != "all" and not recompute and matches(old, inputs_key(case, data)):
            progress(f"[{i}/{len(cases)}] {case.name}: fingerprint matches, not re-run")
            out.append(Planned(case.name, path, "unchanged", False, old,
                               note="fingerprint matches: same sources, versions, inputs and golden; not re-run"))
            continue
        if old is None and mode == "new" and path.exists():  # --new never writes over a file: no run needed
            progress(f"[{i}/{len(cases)}] {case.name}: corrupt, kept (--new writes only missing goldens)")
            out.append(Planned(case.name, path, "corrupt", False, {},
                               note=str(unreadable)))
            continue
        if missing:
            if mode == "all" or recompute or old is None:
                raise BackendUnavailable(f"{path}: cannot make this golden here: {missing}")
            progress(f"[{i}/{len(cases)}] {case.name}: fingerprint does not match this machine, reference not installed")
            out.append(Planned(case.name, path, "unchecked", False, old,
                               note=f"kept as it is: {missing}; its fingerprint names another set of versions "
                                    f"or sources, so only a machine with the reference can say whether it is current"))
            continue
        progress(f"[{i}/{len(cases)}] {case.name}: reference run ({' '.join(REFERENCE)}) ...")
        new = recipe.reference_golden(case, data=data)
        made = new["provenance"]  # what the run actually was, not what was asked for
        progress(f"[{i}/{len(cases)}] {case.name}: made by {made.get('backend')} on {made.get('device')} "
                 f"in {made.get('dtype')}")
        if old is None:  # (`missing` names the reference's absence: not reused for the file's)
            absent = not path.exists()
            status = "new" if absent else "corrupt"
            write = mode in ("all", "failing") or (mode == "new" and absent)
            out.append(Planned(case.name, path, status, write, new, note="" if absent else str(unreadable)))
            continue
        result = compare_golden(old, new["summaries"], new["digests"][REFERENCE[2]], REFERENCE[2], profile,
                                run=" ".join(REFERENCE))
        changes = _changed_keys(old, new)
        if result.inputs_changed:
            status = "inputs changed"
        elif result.mismatches:
            status = "out of tolerance"
        else:
            status = "changed" if changes else "unchanged"
        failing = status in ("inputs changed", "out of tolerance")
        write = mode == "all" or (mode == "failing" and failing)
        out.append(Planned(case.name, path, status, write, new, changes))
    return out


def apply(planned: Sequence[Planned], allow_ci: bool = False) -> list[Path]:
    """Write the planned goldens, one atomic replace each."""
    if in_ci() and not allow_ci:
        raise RefreshRefused("CI is set: goldens are never written in CI (pass --allow-ci to override)")
    written = []
    for item in planned:
        if item.write:
            write_atomic(item.path, dumps(item.golden))
            written.append(item.path)
    return written


def format_plan(planned: Sequence[Planned], dry_run: bool) -> str:
    """The per-key old → new table of every golden that changes, and a one-line summary."""
    lines = []
    for item in planned:
        verb = ("would write" if dry_run else "wrote") if item.write else "kept"
        lines.append(f"{item.case}: {item.status} — {verb} {item.path}")
        if item.note:
            lines.append(f"  ({item.note})")
        if item.changes and (item.write or item.status != "unchanged"):
            width = max(len(k) for k, _, _ in item.changes[:MAX_ROWS])
            lines.append(f"  {'key'.ljust(width)}  old → new")
            for key, old, new in item.changes[:MAX_ROWS]:
                lines.append(f"  {key.ljust(width)}  {old!r} → {new!r}")
            if len(item.changes) > MAX_ROWS:
                lines.append(f"  … and {len(item.changes) - MAX_ROWS} more keys")
    counts: dict[str, int] = {}
    for item in planned:
        counts[item.status] = counts.get(item.status, 0) + 1
    n_write = sum(item.write for item in planned)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    action = (f"dry run: {n_write} golden(s) would be written, nothing written" if dry_run
              else f"{n_write} golden(s) written")
    lines.append(f"refresh: {len(planned)} case(s): {summary}; {action}")
    return "\n".join(lines)
