"""Every backend × dtype on the chosen device against the golden JSON of its case: input
digests exactly, the summaries (patch_stats, canvas, offsets, diffraction) under the golden
tolerance profile of that device and dtype (fixtures/tolerances.toml)."""

import pytest

pytestmark = pytest.mark.parity


def test_parity_golden(parity_target, parity_run, parity_golden):
    case, backend, device, dtype = parity_target
    parity_golden(parity_run(case, backend, dtype, device))


def _reproduce_cases():
    from parity.inputs.cases import case_names

    names = case_names("all")
    return [pytest.param(c, marks=[] if c == "gs2-big" else [pytest.mark.full]) for c in names]


@pytest.mark.parametrize("case", _reproduce_cases())
def test_parity_golden_reproduces_from_the_reference(case, tmp_path, parity_run):
    """How goldens are made cannot change unseen: the case's golden recomputed by the very function
    `parity refresh` calls (`recipe.reference_golden`: no fingerprint trusted, this process's own
    float64 CPU reference run, shared with the other tests through the run cache), written and read
    back as `parity refresh` does, matches the committed one — digests exactly, every summary under
    the golden profile. The gate does it for one case, the full tier for every case."""
    from parity.goldens import recipe, store as goldens
    from parity.inputs.cases import get_case
    from parity.plugin.devices import require_backend

    require_backend(goldens.REFERENCE[0])
    if parity_run.data is not None:
        pytest.skip("goldens hold the shipped fixture's results")
    path = tmp_path / f"{case}.json"
    goldens.write_atomic(path, goldens.dumps(recipe.reference_golden(get_case(case))))
    made, committed = goldens.load_golden(path), goldens.load_golden(goldens.golden_path(case))
    assert made["digests"] == committed["digests"]
    result = goldens.compare_golden(committed, made["summaries"], made["digests"]["float64"], "float64",
                                    goldens.load_golden_profile(*goldens.REFERENCE[1:]), run="recomputed")
    assert result.passed, result.message(goldens.golden_path(case))
    assert sorted(goldens.flatten(made["summaries"])) == sorted(goldens.flatten(committed["summaries"]))
