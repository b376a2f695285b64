"""The fault catalogue (parity/faults/catalogue.py): every porting bug, injected into one backend, must
make the parity check fail, be blamed on the expected first stage and, where the numpy oracle
covers that stage, on the backend it was injected into. One test id per fault."""

import pytest

from parity.faults.evaluate import evaluate
from parity.faults.catalogue import CATALOGUE
from parity.plugin.devices import require_backend

pytestmark = pytest.mark.parity


# the gate keeps the forward, checkpoint and data faults (Fault.in_gate), the full tier every one
FAULTS = [pytest.param(f, id=f.name, marks=[] if f.in_gate else [pytest.mark.full]) for f in CATALOGUE]


@pytest.mark.parametrize("fault", FAULTS)
def test_parity_fault_is_caught_and_blamed(fault, parity_ref):
    """Against the session's reference (--parity-ref). With one that cannot train (numpy), the
    gradient faults are caught by the TensorFlow-made golden instead, and the Adam fault cannot be
    judged (skipped, saying why)."""
    require_backend(parity_ref)
    observed = evaluate(fault, ref=parity_ref)
    if observed.not_applicable:
        pytest.skip(f"{fault.name}: {observed.detail}")
    assert observed.caught, f"{fault.name}: not caught ({observed.detail})"
    assert observed.where == fault.expected_where(observed.ref_trains), observed
    assert observed.stage == fault.expected_stage, observed
    if fault.expected_blame is not None:
        assert observed.blame == fault.expected_blame, observed
    assert observed.matches(fault)


def test_parity_fault_catalogue_covers_the_listed_bug_classes():
    names = {f.name for f in CATALOGUE}
    assert len(names) == len(CATALOGUE) >= 15
    for needed in ("merge-translation-sign", "offsets-xy-swapped", "canvas-no-jitter-buffer", "merge-no-epsilon",
                   "merge-no-centre-mask", "missing-fftshift", "fft-norm-backward", "intensity-scale-inverted",
                   "log-scale-not-restored", "amp-activation-silu", "kernel-axes-swapped", "channels-axes-confused",
                   "probe-conjugated", "probe-mask-on", "object-big-flipped", "uint16-squared-before-cast",
                   "heads-swapped", "avg-pool-for-max-pool", "loss-stirling-term", "loss-sum-reduction",
                   "adam-epsilon-1e-8", "log-scale-frozen", "mae-weight-ignored"):
        assert needed in names


def test_parity_fault_injection_leaves_the_port_clean(parity_ref):
    """After a fault's block, the port is itself again: the same case passes."""
    from parity.inputs.cases import get_case
    from parity.run.engine import RunRequest, run_case
    from parity.faults.catalogue import get_fault

    with get_fault("merge-translation-sign").inject():
        pass
    require_backend(parity_ref)
    request = RunRequest(dtype="float64", use_golden=False, checkpoints=False, ref=parity_ref, reuse=(parity_ref,))
    assert run_case(get_case("gs1"), request).comparisons["torch"].passed  # the port built afresh
