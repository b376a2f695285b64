import subprocess
import sys

from parity.cases import CASES, get_case
from parity.cli import main


def test_cases_table(capsys):
    assert main(["cases"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:6] == ["case", "gridsize", "object_big", "probe_big", "groups", "M"]
    rows = {line.split()[0]: line.split()[1:6] for line in out[2:]}
    assert rows == {
        "gs1": ["1", "False", "False", "8", "74"],
        "gs2-big": ["2", "True", "False", "8", "78"],
        "gs2-big-probebig": ["2", "True", "True", "8", "78"],
        "gs2-small": ["2", "False", "False", "8", "78"],
    }


def test_python_dash_m_entry_point():
    done = subprocess.run([sys.executable, "-m", "parity", "cases"], capture_output=True, text=True)
    assert done.returncode == 0 and "gs2-big-probebig" in done.stdout


def test_case_inputs_both_dtypes():
    case = get_case("gs2-big")
    for dtype in ("float32", "float64"):
        cfg, weights, batch = case.inputs(dtype)
        assert cfg is case.config and batch.diffraction.shape == (8, 64, 64, 4)
        assert batch.offsets.shape == (8, 1, 2, 4) and batch.diffraction.dtype.name == dtype
        assert {w.dtype.name for w in weights.values()} == {dtype}
    assert len({tuple(c.seeds(256)) for c in CASES}) == 1  # every case reads the same slice
    assert len(set(get_case("gs1").seeds(256))) == 8


def test_unknown_case():
    import pytest

    with pytest.raises(KeyError, match="known cases: gs1, gs2-big"):
        get_case("nope")


def test_bad_data_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"nope")
    assert main(["check", "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and "Traceback" not in err
