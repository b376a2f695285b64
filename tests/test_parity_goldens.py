"""Every backend × dtype on the chosen device against the golden JSON of its case: input
digests exactly, the summaries (patch_stats, canvas, offsets, diffraction) under the golden
tolerance profile of that device and dtype (fixtures/tolerances.toml)."""

import pytest

pytestmark = pytest.mark.parity


def test_parity_golden(parity_target, parity_run, parity_golden):
    case, backend, device, dtype = parity_target
    parity_golden(parity_run(case, backend, dtype, device))
