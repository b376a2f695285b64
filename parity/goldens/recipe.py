"""The recipe of a golden: the float64 CPU reference run's summaries, the loss terms and gradient
norms, the digests of both dtypes, its provenance and fingerprint. `parity refresh`, the plugin's
golden fixture and the gate's golden tests all make goldens through `golden_of`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from parity.inputs.cases import Case, case_digests
from parity.run.backend_run import BackendRun
from parity.backends import get_backend
from parity.goldens.fingerprint import fingerprint, inputs_key
from parity.goldens.store import REFERENCE, build_golden
from parity.run.training import gradient_summary


def reference_golden(case: Case, data: Optional[str | Path] = None) -> dict:
    """The golden of `case`: the float64 CPU TensorFlow run's summaries, digests of both dtypes.
    What `parity refresh` writes and what the gate recomputes; the run comes from this process's
    cache (`parity.run.cache`: computed on first use), so a test that already ran the reference
    pays nothing for it."""
    from parity.run.cache import cached_run

    backend, device, dtype = REFERENCE
    return golden_of(cached_run(case, backend, device, dtype, data), case, data)


def golden_of(run: BackendRun, case: Case, data: Optional[str | Path] = None, gradients: bool = True) -> dict:
    """The golden a run would write: its summaries plus (with `gradients`) the loss terms and
    gradient norms of its model, the digests of both dtypes and its provenance (with, for the
    reference run, the fingerprint `parity.goldens.fingerprint` checks)."""
    summaries = dict(run.summaries)
    if gradients and get_backend(run.backend).trains():
        summaries["gradients"] = gradient_summary(*run.gradients)
    all_digests = {d: case_digests(case, d, data) for d in ("float32", "float64")}
    made = dict(run.provenance, backend=run.backend)
    if case.checkpoint is not None:  # trained weights: the golden names the checkpoint they came from
        made["weights"] = case.weights_source()
    golden = build_golden(case.name, case.config.to_dict(), all_digests, summaries, made)
    if (run.backend, run.device, run.dtype) == REFERENCE and gradients:  # what `parity refresh` may trust
        golden["provenance"]["fingerprint"] = fingerprint(golden, inputs_key(case, data, all_digests))
    return golden
