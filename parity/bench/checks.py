"""The compute the gate's checks need besides its bare cost (`parity.bench.measure`), measured
in the same process, so that the gate's wall time can be set against everything it must compute
and not only against what every test needs.

The bare cost leaves out work that no test of the gate can skip without losing its check: the
inference path of each backend × default case × dtype (the paths tests), numpy's third opinion on
each default case (float64), each default case's checkpoint round trips and cross-checkpoints
(float64, the harness's `checkpoints_s`), and the gate's faults of the catalogue (each a build
and forward of the patched port, its checks and numpy's arbitration). `gate_checks_cost` adds
them to the gate's bare cost; the ratio of a gate run to it is what pytest, the workers and the
harness's bookkeeping add.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from parity.bench.clock import timed


def oracle_times(case_names: Sequence[str], ref: str, progress: Callable[[str], None]) -> list[dict]:
    """Per case, float64: one cold build and training forward of the numpy backend (what
    test_parity_numpy_matches_tensorflow_every_stage computes of numpy). Where numpy is the
    bench's reference `ref` (no TensorFlow) its forwards are in the bare cost and that test does
    not run: 0 s."""
    from parity.backends import get_backend
    from parity.inputs.cases import get_case

    if ref == "numpy":
        return [{"case": name, "build_s": 0.0, "forward_s": 0.0} for name in case_names]
    rows = []
    for name in case_names:
        cfg, weights, batch = get_case(name).inputs("float64")
        progress(f"  {name} float64 numpy (the third opinion)")
        build, model = timed(lambda: get_backend("numpy").build(cfg, weights))
        forward, _ = timed(lambda: model.forward_train(batch))
        rows.append({"case": name, "build_s": build, "forward_s": forward})
    return rows


def fault_times(ref: str, progress: Callable[[str], None]) -> list[dict]:
    """Per fault of the gate (`Fault.in_gate`): the seconds of `evaluate` against `ref`, whose
    run of the fault's case is computed before the clock starts (it is in the bare cost)."""
    from parity.faults.catalogue import CATALOGUE, DTYPE
    from parity.faults.evaluate import evaluate
    from parity.inputs.cases import get_case
    from parity.run.cache import cached_run

    rows = []
    for fault in (f for f in CATALOGUE if f.in_gate):
        cached_run(get_case(fault.case), ref, "cpu", DTYPE)
        progress(f"  fault {fault.name} ({fault.case})")
        seconds, observed = timed(lambda: evaluate(fault, ref=ref))
        rows.append({"fault": fault.name, "case": fault.case, "seconds": seconds, "caught": observed.caught})
    return rows


def gate_checks_cost(result: dict) -> Optional[float]:
    """The gate's bare cost plus: every default case's inference forwards (per backend × dtype),
    its numpy forward and its checkpoint checks (float64), and the gate's faults. None where any
    part was not measured."""
    from parity.inputs.cases import case_names

    default = set(case_names("default"))
    harness = [h for h in result.get("harness", []) if h["case"] in default]
    oracle = [r for r in result.get("oracle", []) if r["case"] in default]
    rows = [r for r in result.get("backends", []) if r["case"] in default]
    if (result.get("gate_bare_s") is None or not result.get("faults") or {h["case"] for h in harness} != default
            or {r["case"] for r in oracle} != default or any(r.get("infer_s") is None for r in rows)):
        return None
    return (result["gate_bare_s"] + sum(r["infer_s"] for r in rows)
            + sum(r["build_s"] + r["forward_s"] for r in oracle)
            + sum(h["checkpoints_s"] for h in harness) + sum(f["seconds"] for f in result["faults"]))
