"""The user's own parity tests of ptyport, as its author writes them once the adapter is installed
(run in a pytester project by tests/test_real_port.py; shown in the documentation)."""

# --8<-- [start:tests]
import pytest

pytestmark = pytest.mark.parity


@pytest.mark.parametrize("case", ["gs1", "gs2-big"])
def test_parity_ptyport(parity_check, case):
    result = parity_check(case, "ptyport", grad=True)
    assert result.passed, result.report()
# --8<-- [end:tests]
