"""The parity pytest plugin, loaded by the root conftest: markers, the case-set option and the
`parity_case` parametrisation.

A test that takes an argument named `parity_case` runs once per case of the set chosen with
`--parity-cases default|extended|all` (default: default), with the case name as its id, so
`-k gs2-big-n128` still selects one case.
"""

CASE_SET_OPTION = "--parity-cases"


def pytest_addoption(parser):
    group = parser.getgroup("parity", "ptycho-parity")
    group.addoption(CASE_SET_OPTION, dest="parity_cases", choices=("default", "extended", "all"),
                    default="default",
                    help="which parity cases the parity tests run: the fast default four, the "
                         "extended set that covers every config branch, or all (default: default)")


def pytest_configure(config):
    config.addinivalue_line("markers", "parity: backend-agreement and golden tests (`pytest -k parity`)")
    config.addinivalue_line("markers", "cuda: needs a CUDA device; skipped where there is none")


def pytest_generate_tests(metafunc):
    if "parity_case" in metafunc.fixturenames:
        from parity.cases import case_names

        names = case_names(metafunc.config.getoption("parity_cases"))
        metafunc.parametrize("parity_case", names, ids=names)
