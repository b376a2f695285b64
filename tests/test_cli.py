import subprocess
import sys

import pytest

from parity.inputs.cases import CASES, cases_in, get_case
from parity.cli import main
from parity.config import AMP_ACTIVATIONS


def test_cases_table(capsys):
    assert main(["cases"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:8] == ["case", "set", "N", "gridsize", "object_big", "probe_big", "groups", "M"]
    rows = {line.split()[0]: line.split()[1:8] for line in out[2:]}
    assert len(rows) == len(CASES)
    assert rows["gs1"] == ["default", "64", "1", "False", "False", "8", "74"]
    assert rows["gs2-big"] == ["default", "64", "2", "True", "False", "8", "78"]
    assert rows["gs2-big-probebig"] == ["default", "64", "2", "True", "True", "8", "78"]
    assert rows["gs2-small"] == ["default", "64", "2", "False", "False", "8", "78"]
    assert rows["gs2-big-n128"] == ["extended", "128", "2", "True", "False", "8", "142"]  # 128 + 4 + 10
    assert rows["gs3-big"] == ["extended", "64", "3", "True", "False", "8", "82"]  # 64 + 2·4 + 10


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
    default = [c for c in CASES if c.case_set == "default"]
    assert len({tuple(c.seeds(256)) for c in default}) == 1  # the default cases read the same slice
    assert len(set(get_case("gs1").seeds(256))) == 8


def test_seeds_spread_every_prefix_over_the_scan():
    # evenly spaced, taken in bit-reversed order: 0, 1/2, 1/4, 3/4, 1/8, ... of the scan
    assert get_case("gs1").seeds(256).tolist() == [0, 128, 64, 192, 32, 160, 96, 224]
    assert get_case("gs2-big-b16").seeds(256).tolist()[:4] == [0, 128, 64, 192]
    assert sorted(get_case("gs2-big-b16").seeds(256).tolist()) == list(range(0, 256, 16))
    with pytest.raises(ValueError, match="needs at least 16"):
        get_case("gs2-big-b16").seeds(12)


def test_case_sets_cover_every_config_branch():
    default, extended = cases_in("default"), cases_in("extended")
    assert [c.name for c in default] == ["gs1", "gs2-big", "gs2-big-probebig", "gs2-small"]
    assert cases_in("all") == default + extended and not set(default) & set(extended)
    configs = [c.config for c in extended]
    assert any(c.probe_mask for c in configs)
    assert any(not c.pad_object for c in configs)
    assert any(c.N == 128 for c in configs)
    assert {c.config.amp_activation for c in CASES} == set(AMP_ACTIVATIONS)
    assert any(c.probe_big and c.gridsize == 1 for c in configs)
    assert any(c.n_groups * c.config.C >= 64 for c in extended)
    assert any(c.gridsize == 3 for c in configs)
    with pytest.raises(KeyError, match="default, extended, all"):
        cases_in("most")




def test_unknown_case():
    with pytest.raises(KeyError, match="known cases: gs1, gs2-big"):
        get_case("nope")


def test_bad_data_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"nope")
    assert main(["check", "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and "Traceback" not in err


def test_negative_train_steps_is_one_line_exit_2(capsys):
    assert main(["check", "--case", "gs1", "--train-steps", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--train-steps must be >= 0" in err


@pytest.mark.full
def test_check_with_gradients_and_training_writes_both_sections(tmp_path, capsys):
    import json

    out = tmp_path / "report"
    assert main(["check", "--case", "gs1", "--dtype", "float64", "--grad", "--train-steps", "2",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "gradients tensorflow vs torch: loss and every gradient agree" in printed
    assert "training tensorflow vs torch, 2 Adam steps: track" in printed
    row = json.loads((out / "summary.json").read_text())["runs"][0]["candidates"]["torch"]
    assert row["gradients"]["passed"] and row["training"]["passed"] and row["training"]["steps"] == 2
    stats = json.loads((out / "gs1" / "stats.json").read_text())["float64"]
    assert [t["stage"] for t in stats["gradients"]["torch"]["tensors"]][:4] == ["loss", "loss.nll", "loss.mae",
                                                                               "grad.log_scale"]
    report = (out / "report.md").read_text()
    assert "Gradients (" in report and "Training — " in report and "training_float64.png" in report
    assert (out / "gs1" / "training_float64.png").stat().st_size > 10_000


def test_check_help_documents_every_exit_code(capsys):
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the description
    assert ("exit codes: 0 every check passed (or was not run, with its reason), 1 a divergence, "
            "2 bad input or adapter wiring (a tap that never fired), 3 a backend raised") in text
