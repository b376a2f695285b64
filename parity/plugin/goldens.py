"""The parity plugin's golden fixture, `parity_golden(run)`: a BackendRun against its case's
golden through pytest-regressions' check (so `--force-regen` / `--regen-all` rewrite the
reference's golden), a missing golden a failure, nothing written under CI. Registered by
`parity.plugin.pytest_plugin`, which imports it."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def parity_golden(request, pytestconfig, tmp_path):
    """`parity_golden(run)`: compare a BackendRun with its case's golden (digests exactly,
    summaries under the tolerance profile of its device × dtype). The reference run (tensorflow,
    cpu, float64) goes through pytest-regressions' check, so `--force-regen` / `--regen-all`
    rewrite the golden from it; a missing golden fails and leaves `<case>.obtained.json` beside
    it. Nothing is written when CI is set."""

    def check(run) -> None:
        __tracebackhide__ = True
        _check_golden(request, pytestconfig, tmp_path, run)

    return check


def _check_golden(request, config, tmp_path, run) -> None:
    __tracebackhide__ = True
    from pytest_regressions.common import perform_regression_check

    from parity.goldens import store as goldens
    from parity.goldens.recipe import golden_of
    from parity.plugin.fixtures import goldens_dir, session_case

    directory = goldens_dir(config)
    path = goldens.golden_path(run.case, directory)
    is_reference = (run.backend, run.device, run.dtype) == goldens.REFERENCE
    regen = config.getoption("force_regen") or config.getoption("regen_all")
    ci = goldens.in_ci()
    data = config.getoption("parity_data")

    def obtained_golden() -> dict:
        return golden_of(run, session_case(config, run.case), data)

    if not path.exists():
        if is_reference and regen and not ci:
            pass  # pytest-regressions writes it below and fails once, as it always does
        else:
            if ci:
                pytest.fail(f"golden missing: {path} (CI is set: nothing written; generate it with "
                            f"`parity refresh --new` outside CI and commit it)", pytrace=False)
            obtained = goldens.obtained_path(run.case, directory)
            if is_reference:
                goldens.write_atomic(obtained, goldens.dumps(obtained_golden()))
                how = (f"wrote what this run obtained to {obtained}; accept it with "
                       f"`pytest -k parity --force-regen` or `parity refresh --new`")
            else:
                how = "generate it with `parity refresh --new` (the float64 CPU tensorflow run)"
            pytest.fail(f"golden missing: {path}; {how}", pytrace=False)
    from parity.run.tolerances import ToleranceError

    try:
        if path.exists():
            goldens.load_golden(path)  # a corrupt golden: one line, and it is never rewritten
        profile = goldens.load_golden_profile(run.device, run.dtype)
    except (goldens.GoldenError, ToleranceError) as exc:
        pytest.fail(str(exc), pytrace=False)

    def check_fn(obtained_file: Path, expected_file: Path) -> None:
        __tracebackhide__ = True
        result = goldens.compare_golden(goldens.load_golden(expected_file), run.summaries, run.digests,
                                        run.dtype, profile, run=run.label)
        if not result.passed:
            message = result.message(expected_file)
            dump = config.getoption("parity_dump")
            if dump:
                folder = Path(dump) / run.case
                stem = f"{run.backend}-{run.device}-{run.dtype}"
                goldens.write_atomic(folder / f"golden-{stem}.obtained.json", goldens.dumps(obtained_golden()))
                goldens.write_atomic(folder / f"golden-{stem}.mismatches.txt", message + "\n")
            raise AssertionError(message)

    if not is_reference or ci:
        if path.exists():
            check_fn(tmp_path / "unused", path)  # compare only: nothing to write
        return
    perform_regression_check(
        datadir=tmp_path, original_datadir=path.parent, request=request, check_fn=check_fn,
        dump_fn=lambda filename: goldens.write_atomic(filename, goldens.dumps(obtained_golden())),
        extension=".json", fullpath=path, obtained_filename=tmp_path / f"{run.case}.obtained.json")

