"""What the harness says about each fault of the catalogue (`parity.faults.catalogue`): the fault's case
run with the fault injected into the port, against a reference (`tensorflow`, or `numpy` where
TensorFlow is missing), and the first check that caught it, the stage it blamed and the side.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from parity.backends import get_backend
from parity.faults.catalogue import DTYPE, TRAIN_STEPS, Fault


@dataclass
class Observation:
    fault: str
    caught: bool
    where: str  # which check caught it
    stage: Optional[str]
    blame: Optional[str]
    rel_error: Optional[float]
    detail: str
    ref_trains: bool = True  # False: the reference computes no gradients (numpy)

    @property
    def not_applicable(self) -> bool:
        """The check that catches this fault cannot run with this reference (numpy cannot train)."""
        return self.where == "not run"

    def matches(self, fault: Fault) -> bool:
        return (self.caught and self.where == fault.expected_where(self.ref_trains)
                and self.stage == fault.expected_stage
                and (fault.expected_blame is None or self.blame == fault.expected_blame))



def _evaluated_checks() -> tuple:
    """The checks whose results `evaluate` reads: forward, the port's own checkpoint round trip
    (the faults sit in the port: the reference's round trip and the cross-backend ones come after
    it in the report and add nothing to the verdict), gradients, training. No inference path runs
    for a fault, and no origins are traced (find_origins does that)."""
    from parity.run.checks import CheckpointRoundTrip
    from parity.run.pipeline import PIPELINE

    return tuple(CheckpointRoundTrip(candidates_only=True) if c.name == "checkpoint" else c for c in PIPELINE
                 if c.name in ("forward", "checkpoint", "gradients", "training"))


def uint16_fixture(directory: Path) -> Path:
    """The shipped fixture with its diffraction as raw uint16 counts (amplitude², exact)."""
    from parity.inputs.fixture import FIXTURE_PATH, write_npz_reproducibly

    with np.load(FIXTURE_PATH) as npz:
        arrays = {k: npz[k] for k in npz.files}
    counts = np.round(arrays["diffraction"].astype(np.float64) ** 2)
    assert counts.max() < 65536
    arrays["diffraction"] = counts.astype(np.uint16)
    path = Path(directory) / "fly001_small_uint16.npz"
    write_npz_reproducibly(path, arrays)
    return path


def _evaluate_data_fault(fault: Fault, ref: str) -> Observation:
    """Golden made by `ref` (float64, CPU) from the correct loader on raw counts, then the faulty
    loader's inputs compared with it: the digests must say which inputs changed."""
    from parity.inputs.cases import get_case
    from parity.goldens.recipe import golden_of
    from parity.inputs.cases import case_digests
    from parity.run.backend_run import run_backend
    from parity.goldens.store import compare_golden, load_golden_profile

    case = get_case(fault.case)
    with tempfile.TemporaryDirectory(prefix="parity-fault-") as tmp:
        data = uint16_fixture(Path(tmp))
        # only its digests are compared here: no gradients
        golden = golden_of(run_backend(case, ref, "cpu", DTYPE, data=data), case, data, gradients=False)
        with fault.inject():
            digests = case_digests(case, DTYPE, data)
        result = compare_golden(golden, golden["summaries"], digests, DTYPE, load_golden_profile("cpu", DTYPE),
                                run="data")
    caught = bool(result.inputs_changed)
    return Observation(fault.name, caught, "golden", "input digests" if caught else None, None, None,
                       f"inputs changed: {', '.join(result.inputs_changed)}" if caught else "digests match")


def evaluate(fault: Fault, ref: str = "tensorflow") -> Observation:
    """Run the fault's case with the fault injected into the port, compared with `ref`; report
    what the harness caught first (the data fault: against a golden `ref` makes)."""
    from parity.inputs.cases import get_case
    from parity.run.engine import RunRequest, run_case

    if fault.where == "golden":
        if get_backend(ref).recorded:  # its golden would need the reference run on the raw-count scan
            return Observation(fault.name, False, "not run", None, None, None,
                               "the reference is recorded: it cannot run on the raw-count scan this fault needs")
        return _evaluate_data_fault(fault, ref)
    checks = _evaluated_checks()
    if fault.where in ("gradients", "training") and not _trains(ref, fault.case):
        return _evaluate_without_trainer(fault, ref)
    with fault.inject():
        # the reference is never patched: its model and traces come from the process's cache
        request = RunRequest(device="cpu", dtype=DTYPE, use_golden=False, checkpoints=fault.where == "checkpoint",
                             grad=fault.where == "gradients",
                             train_steps=TRAIN_STEPS if fault.where == "training" else 0, ref=ref, reuse=(ref,),
                             checks=checks)
        result = run_case(get_case(fault.case), request)
    for error in result.errors:  # the injected port raised: caught, at the check that called it
        return Observation(fault.name, True, error.check, None, error.backend, None, error.summary)
    cand = result.candidates[0]
    first = result.comparisons[cand].first_divergence
    arbitration = result.arbitrations.get(cand) or {}
    if first is not None:
        # no relative error for a shape or NaN mismatch: its message says what differs
        return Observation(fault.name, True, "forward", first.stage, arbitration.get("blame"), first.rel_error,
                           first.message if first.rel_error is None else arbitration.get("verdict", first.message))
    for check in result.checkpoints:
        if not check.passed:
            failed = check.comparison.first_divergence
            return Observation(fault.name, True, "checkpoint", check.first_stage, check.saved,
                               failed.rel_error, check.describe())
    for check in result.gradients.values():
        if not check.passed:
            failed = check.first_divergence
            return Observation(fault.name, True, "gradients", failed.stage, (check.blame or {}).get("blame"),
                               failed.rel_error, check.describe())
    for check in result.training.values():
        if not check.passed:
            step, failed = check.first_divergence
            # the step is what a catalogue entry predicts; the tensor is named in the detail
            return Observation(fault.name, True, "training", f"step {step}", None, failed.rel_error,
                               f"{check.describe()} (tensor {failed.stage})")
    return Observation(fault.name, False, "", None, None, None, "not caught")


def find_origins(origin_case, ref: str = "tensorflow", repro_dir=None) -> tuple:
    """Run an OriginCase (its faults injected into the port) through the forward and origins
    checks, with a minimal reproduction of each origin under `repro_dir` if given: (the run's
    CaseResult, the origins found as (stage, blame), in forward order)."""
    from parity.inputs.cases import get_case
    from parity.run.checks import ForwardAgreement, OriginsCheck
    from parity.run.engine import RunRequest, run_case

    with origin_case.inject():
        request = RunRequest(device="cpu", dtype=DTYPE, use_golden=False, checkpoints=False, ref=ref, reuse=(ref,),
                             checks=(ForwardAgreement(), OriginsCheck()), repro_dir=repro_dir)
        result = run_case(get_case(origin_case.case), request)
    found = tuple((o["stage"], o["blame"]) for o in result.origins.get(result.candidates[0], []))
    return result, found


def _trains(ref: str, case: str) -> bool:
    return get_backend(ref).trains()


def _golden_stage(key: str) -> str:
    """A golden key of the gradient summary as the stage a gradient comparison names:
    `gradients.loss.nll` → `loss`, `gradients.grad_norm.log_scale` → `grad.log_scale`."""
    parts = key.split(".")
    if len(parts) >= 3 and parts[0] == "gradients" and parts[1] == "loss":
        return "loss"
    if len(parts) >= 3 and parts[0] == "gradients" and parts[1] == "grad_norm":
        return "grad." + ".".join(parts[2:])
    return key


def _evaluate_without_trainer(fault: Fault, ref: str) -> Observation:
    """A reference that computes no gradients (numpy) cannot be compared with the port's; the
    port's loss terms and gradient norms are judged by the golden (made by the TensorFlow
    reference). Adam steps have no such judge: that fault is not applicable here."""
    from parity.inputs.cases import get_case
    from parity.run.engine import RunRequest, run_case

    if fault.where == "training":
        return Observation(fault.name, False, "not run", None, None, None,
                           f"the reference {ref} cannot train: Adam steps need --ref tensorflow "
                           f"(or the port on another device, compared with itself on the CPU)", ref_trains=False)
    with fault.inject():
        request = RunRequest(device="cpu", dtype=DTYPE, checkpoints=False, grad=True, ref=ref, reuse=(ref,))
        result = run_case(get_case(fault.case), request)
    for name, golden in result.golden.items():
        if not golden.passed and golden.mismatches:
            # the loss comes first, as in a gradient comparison's backward order
            first = min(golden.mismatches, key=lambda m: _golden_stage(m.key) != "loss")
            return Observation(fault.name, True, "golden", _golden_stage(first.key), name, first.difference,
                               first.row().strip(), ref_trains=False)
    return Observation(fault.name, False, "", None, None, None, "not caught", ref_trains=False)


def format_table(rows: list[tuple[Fault, Observation]], markdown: bool) -> str:
    header = ("fault", "case", "caught by", "stage blamed", "side blamed", "rel. error at that stage", "as expected")
    body = []
    for fault, obs in rows:
        side = obs.blame or ("— (both: data)" if obs.where == "golden" else "—")
        err = (f"{obs.rel_error:.2e}" if obs.rel_error is not None
               else obs.detail if obs.where == "forward" else "—")
        body.append((fault.name, fault.case, obs.where or "nothing", obs.stage or "—", side, err,
                     "yes" if obs.matches(fault) else "n/a: " + obs.detail if obs.not_applicable else "NO"))
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(f"`{c}`" if i in (0, 3) and c != "—" else c for i, c in enumerate(r)) + " |"
                  for r in body]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    fmt = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(header), fmt(tuple("-" * w for w in widths)), *map(fmt, body)])
