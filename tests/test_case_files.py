"""The user's own cases from a TOML case file (`--case-file`): read, checked key by key before any
model is built, and run like the built-ins."""

import json

import pytest

from parity.cli import main
from parity.config import ForwardConfig
from parity.inputs.casefile import CASE_KEYS, WEIGHT_KEYS, CaseFileError, chosen_cases, load_case_file
from parity.inputs.cases import case_names, get_case
from parity.inputs.fixture import FIXTURE_PATH

TWO_CASES = """
[[case]]
name = "lab-thin"
description = "half the filters: a config no built-in case has"
data = "scan.npz"
groups = 4
first_seed = 3
[case.config]
gridsize = 2
object_big = true
n_filters_scale = 1
[case.weights]
seed = 5
scheme = "glorot"

[[case]]
name = "gs1"
overrides = true
[case.config]
gridsize = 1
object_big = false
"""


@pytest.fixture
def case_file(tmp_path):
    (tmp_path / "scan.npz").write_bytes(FIXTURE_PATH.read_bytes())
    path = tmp_path / "cases.toml"
    path.write_text(TWO_CASES)
    return path


def test_a_case_file_is_read_into_cases_with_paths_relative_to_it(case_file):
    thin, gs1 = load_case_file(case_file, builtin=case_names())
    assert thin.config == ForwardConfig(gridsize=2, object_big=True, n_filters_scale=1)
    assert (thin.n_groups, thin.first_seed, thin.weight_seed, thin.weight_scheme) == (4, 3, 5, "glorot")
    assert thin.data == case_file.parent / "scan.npz" and thin.case_set == "file"
    assert gs1.config == get_case("gs1").config and gs1.weight_seed == 0  # the file's, not the built-in's 11
    # alone without --cases; with a set, after it, the override in the built-in's place
    assert [c.name for c in chosen_cases(None, None, [case_file])] == ["lab-thin", "gs1"]
    chosen = chosen_cases(None, "default", [case_file])
    assert [c.name for c in chosen] == [*case_names("default"), "lab-thin"] and chosen[0] == gs1
    assert chosen_cases(["lab-thin"], None, [case_file]) == [thin]


def test_parity_check_runs_a_case_file(case_file, tmp_path, capsys):
    code = main(["check", "--case-file", str(case_file), "--case", "lab-thin", "--ref", "numpy", "--dtype", "float64",
                 "--no-figures", "--out", str(tmp_path / "out")], reuse=("numpy", "torch"))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "[1/1] lab-thin float64 ... PASS (no golden)" in out
    assert f"data lab-thin: {case_file.parent / 'scan.npz'};" in out  # the header names the case's own scan
    assert "not run: the shipped goldens hold the built-in cases; a case file's case is compared with the goldens " \
           "of --goldens DIR" in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [r["case"] for r in summary["runs"]] == ["lab-thin"]
    main(["cases", "--case-file", str(case_file)])
    table = capsys.readouterr().out
    row = next(line.split() for line in table.splitlines() if line.startswith("lab-thin "))
    assert row[:8] == ["lab-thin", "file", "64", "2", "True", "False", "4", "78"] and "half the filters" in table


BAD = [
    ("not toml", "[[case]\n", "not a TOML file"),
    ("no case", "x = 1\n", "unknown key x (a case file holds [[case]] tables only)"),
    ("unknown key", '[[case]]\nname = "a"\nsize = 3\n', "case a: unknown key size (known: name, description"),
    ("wrong type", '[[case]]\nname = "a"\ngroups = "8"\n', "case a: key groups must be an integer, got '8'"),
    ("bool for int", '[[case]]\nname = "a"\nfirst_seed = true\n', "case a: key first_seed must be an integer"),
    ("no name", '[[case]]\ngroups = 8\n', "case #1: key name must be letters, digits"),
    ("unknown field", '[[case]]\nname = "a"\n[case.config]\nNN = 64\n',
     "case a: unknown key config.NN (ForwardConfig has no such field)"),
    ("invalid config", '[[case]]\nname = "a"\n[case.config]\ngridsize = 0\n', "case a: key config: ForwardConfig.gridsize=0"),
    ("weights key", '[[case]]\nname = "a"\n[case.weights]\nsed = 1\n', "case a: unknown key weights.sed (known: seed"),
    ("scheme", '[[case]]\nname = "a"\n[case.weights]\nscheme = "he"\n',
     "case a: key weights.scheme must be informative or glorot, got 'he'"),
    ("missing data", '[[case]]\nname = "a"\ndata = "nowhere.npz"\n', "case a: key data: no such file"),
    ("N without a fixture", '[[case]]\nname = "a"\n[case.config]\nN = 256\n',
     "case a: key data: the shipped fixtures hold N=64 and N=128 patterns; give a scan for N=256"),
    ("built-in name", '[[case]]\nname = "gs2-big"\n',
     "case gs2-big: key name: 'gs2-big' is a built-in case (say overrides = true to replace it)"),
    ("twice", '[[case]]\nname = "a"\n[[case]]\nname = "a"\n', "case a: key name: a second case named 'a' in this file"),
    ("groups", '[[case]]\nname = "a"\ngroups = 0\n', "case a: key groups must be >= 1, got 0"),
    ("seed and checkpoint", '[[case]]\nname = "a"\n[case.weights]\nseed = 1\ncheckpoint = "m.pt"\n',
     "case a: key weights.seed: a case's weights come from a seed or from weights.checkpoint, not both"),
    ("backend alone", '[[case]]\nname = "a"\n[case.weights]\nbackend = "torch"\n',
     "case a: key weights.backend names who reads a checkpoint; give weights.checkpoint"),
    ("missing checkpoint", '[[case]]\nname = "a"\n[case.weights]\ncheckpoint = "none.pt"\n',
     "case a: key weights.checkpoint: no such file or folder"),
    ("unknown backend", '[[case]]\nname = "a"\n[case.weights]\ncheckpoint = "cases.toml"\nbackend = "jax"\n',
     "case a: key weights.backend: unknown backend 'jax'"),
]


@pytest.mark.parametrize("label, text, line", BAD, ids=[b[0] for b in BAD])
def test_every_problem_of_a_case_file_is_one_line_naming_file_case_and_key(label, text, line, tmp_path, capsys):
    path = tmp_path / "cases.toml"
    path.write_text(text)
    with pytest.raises(CaseFileError) as caught:
        load_case_file(path, builtin=case_names())
    assert str(caught.value).startswith(f"{path}: ") and line in str(caught.value), str(caught.value)
    code = main(["check", "--case-file", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and line in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()  # nothing run, nothing written


def test_a_missing_case_file_is_one_line(tmp_path, capsys):
    assert main(["cases", "--case-file", str(tmp_path / "none.toml")]) == 2
    assert f"{tmp_path / 'none.toml'}: cannot read the case file" in capsys.readouterr().err


def test_the_reference_of_case_file_keys_is_generated_into_the_docs():
    from pathlib import Path

    from parity.docgen import generate

    text = generate((Path(__file__).resolve().parents[1] / "docs" / "own-model.md").read_text())
    for key, (kind, default, what) in [*CASE_KEYS.items(), *((f"weights.{k}", v) for k, v in WEIGHT_KEYS.items())]:
        assert f"| `{key}` | " in text and what.split(" (")[0] in text, key
    assert "| `groups` | integer | `8` |" in text and "| `overrides` | boolean | `false` |" in text
    assert "| `weights.checkpoint` | string | — |" in text and "| `weights.backend` | string | `'torch'` |" in text


def _torch_checkpoint(path, case="gs1", steps=0):
    """A torch model of a built-in case saved in torch's own format, after `steps` Adam steps."""
    from parity.backends import get_backend
    from parity.run.training import AdamConfig

    cfg, weights, batch = get_case(case).inputs("float64")
    model = get_backend("torch").build(cfg, weights)
    for _ in model.train_steps(batch, steps, AdamConfig()):
        pass
    return model.save(path)


def test_a_checkpoint_that_does_not_fit_the_config_is_one_line_with_the_tensors(tmp_path, capsys):
    """gs1's network (gridsize 1, one object channel) read for a gridsize-2 object_big case: the
    misfit is named, tensor by tensor, before any model of the run is built."""
    _torch_checkpoint(tmp_path / "gs1.pt")
    (tmp_path / "cases.toml").write_text('[[case]]\nname = "a"\n[case.config]\ngridsize = 2\n'
                                         '[case.weights]\ncheckpoint = "gs1.pt"\n')
    code = main(["check", "--case-file", str(tmp_path / "cases.toml"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"parity: error: {tmp_path / 'cases.toml'}: case a: key weights.checkpoint: "
                          f"{tmp_path / 'gs1.pt'}: weights do not match the network of this config — mis-shaped "), err
    assert "encoder.block0.conv0.kernel: expected (3, 3, 4, 64), got (3, 3, 1, 64)" in err
    assert not (tmp_path / "out").exists()


def test_a_trained_checkpoint_is_every_backends_weights_and_state(tmp_path, capsys):
    """torch's checkpoint after an Adam step: its weights and its log_scale (moved off the
    config's) go to every backend; the header names the file and its digest; the digests differ
    from the seeded case's; and the whole pipeline agrees."""
    from parity.inputs.cases import digests_of

    _torch_checkpoint(tmp_path / "trained.pt", steps=1)
    (tmp_path / "cases.toml").write_text('[[case]]\nname = "gs1-trained"\n[case.config]\ngridsize = 1\n'
                                         'object_big = false\n[case.weights]\ncheckpoint = "trained.pt"\n')
    case = load_case_file(tmp_path / "cases.toml")[0]
    state, seeded = case.state("float64"), get_case("gs1")
    assert abs(state["log_scale"] - case.config.log_scale) > 1e-4 and state["probe"].dtype == "complex128"
    _, weights, batch = case.inputs("float64")
    assert digests_of(weights, batch, state)["weights"] != digests_of(*seeded.inputs("float64")[1:])["weights"]
    code = main(["check", "--case-file", str(tmp_path / "cases.toml"), "--ref", "numpy", "--dtype", "float64",
                 "--no-figures", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0, out
    digest = case.checkpoint.digest()
    assert (f"  gs1-trained: trained weights and state from {tmp_path / 'trained.pt'} (read by torch, "
            f"sha256 {digest[:12]})") in out
    assert "[1/1] gs1-trained float64 ... PASS (no golden)" in out
    assert "passed   config torch: the training model and the reloaded inference model and the checkpoint's " \
           "model (trained.pt) compute with the asked config" in out


USER_TEST = '''
import pytest

pytestmark = pytest.mark.parity


def test_parity_lab_thin(parity_check):
    result = parity_check("lab-thin", "torch", ref="numpy", checkpoints=False)
    assert result.passed and result.case == "lab-thin" and result.config.n_filters_scale == 1, result.report()
'''


def _user_project(pytester, case_file):
    (pytester.path / "cases.toml").write_text(case_file.read_text())
    (pytester.path / "scan.npz").write_bytes(FIXTURE_PATH.read_bytes())
    pytester.makepyfile(test_user=USER_TEST)


@pytest.mark.full  # in processes of their own: torch cannot be imported twice into one
@pytest.mark.processes
def test_pytest_takes_case_files_from_the_ini_and_the_option_and_fails_a_bad_one_in_one_line(case_file, pytester):
    """`parity_check("lab-thin", ...)` as for a built-in case, the case file named in the ini
    (relative to it) or with --parity-case-file."""
    _user_project(pytester, case_file)
    run = lambda *args: pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist", *args)  # noqa: E731
    pytester.makeini("[pytest]\nparity_case_file = cases.toml\n")
    run().assert_outcomes(passed=1)
    pytester.makeini("[pytest]\n")
    run("--parity-case-file", str(pytester.path / "cases.toml")).assert_outcomes(passed=1)
    (pytester.path / "bad.toml").write_text('[[case]]\nname = "lab-thin"\ngroups = "8"\n')
    bad = run("--parity-case-file", str(pytester.path / "bad.toml"))
    bad.assert_outcomes(failed=1)
    bad.stdout.fnmatch_lines(["*bad.toml: case lab-thin: key groups must be an integer, got '8'*"])
    assert "Traceback" not in bad.stdout.str()


def test_goldens_for_a_case_file_are_made_into_a_folder_of_yours_and_compared(case_file, tmp_path, capsys):
    """`parity refresh --case-file F --goldens DIR` writes the file's goldens from the float64 CPU
    reference; `parity check --case-file F --goldens DIR` compares with them. The shipped goldens
    are never the target."""
    from parity.plugin.devices import require_backend

    require_backend("tensorflow")  # goldens are made by the TensorFlow reference
    goldens = tmp_path / "goldens"
    goldens.mkdir()
    assert main(["refresh", "--case-file", str(case_file), "--case", "lab-thin"]) == 2
    assert "--case-file: name the folder for your cases' goldens with --goldens DIR" in capsys.readouterr().err
    assert main(["refresh", "--case-file", str(case_file), "--case", "lab-thin", "--goldens", str(goldens)]) == 0
    assert sorted(p.name for p in goldens.iterdir()) == ["lab-thin.json"]
    capsys.readouterr()
    code = main(["check", "--case-file", str(case_file), "--case", "lab-thin", "--goldens", str(goldens), "--ref", "numpy",
                 "--dtype", "float64", "--no-figures", "--out", str(tmp_path / "out")], reuse=("numpy", "torch"))
    out = capsys.readouterr().out
    assert code == 0 and "[1/1] lab-thin float64 ... PASS (" in out and "passed   golden torch: matches lab-thin.json" in out


OWN_MODEL_TEST = '''
import pytest

pytestmark = pytest.mark.parity


@pytest.mark.parametrize("case", ["lab-gs3-small", "lab-trained"])
def test_parity_own_model(parity_check, case):
    result = parity_check(case, "torch", dtype="float64")
    assert result.passed, result.report()
    golden = [r for r in result.results if r.check == "golden"]
    assert golden and all(r.status == "passed" for r in golden), result.report()  # the user's own goldens
'''


@pytest.mark.full  # the walk-through of docs/own-model.md, end to end; pytest in a process of its own
@pytest.mark.processes
def test_the_five_commands_of_check_your_own_model(tmp_path, pytester, capsys):
    """A seeded case with a config no built-in has and a case from a trained torch checkpoint:
    `parity cases`, `parity check`, `parity refresh --goldens`, `--dry-run` and `pytest -k parity`
    with the case file and the goldens named in the ini — as docs/own-model.md tells it."""
    from parity.plugin.devices import require_backend

    require_backend("tensorflow")  # the reference that makes goldens
    project = pytester.path
    (project / "ckpt").mkdir()
    _torch_checkpoint(project / "ckpt" / "model.pt", case="gs2-big", steps=2)
    (project / "cases.toml").write_text(
        '[[case]]\nname = "lab-gs3-small"\n[case.config]\ngridsize = 3\nobject_big = false\noffset = 5\n'
        '[case.weights]\nseed = 7\n\n'
        '[[case]]\nname = "lab-trained"\n[case.config]\ngridsize = 2\n[case.weights]\ncheckpoint = "ckpt/model.pt"\n')
    cases, goldens = str(project / "cases.toml"), str(project / "goldens")
    assert main(["cases", "--case-file", cases]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[-2:]] == ["lab-gs3-small", "lab-trained"]
    assert main(["check", "--case-file", cases, "--dtype", "float64", "--no-figures", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "2/2 runs agree" in out and "lab-trained: trained weights and state from " in out, out
    (project / "goldens").mkdir()
    assert main(["refresh", "--case-file", cases, "--goldens", goldens]) == 0
    assert "refresh: 2 case(s): 2 new; 2 golden(s) written" in capsys.readouterr().out
    assert main(["refresh", "--case-file", cases, "--goldens", goldens, "--dry-run"]) == 0
    assert "refresh: 2 case(s): 2 unchanged; dry run: 0 golden(s) would be written" in capsys.readouterr().out
    provenance = json.loads((project / "goldens" / "lab-trained.json").read_text())["provenance"]
    assert provenance["weights"]["checkpoint"]["file"] == str(project / "ckpt" / "model.pt")
    pytester.makeini("[pytest]\nparity_case_file = cases.toml\nparity_goldens = goldens\n")
    pytester.makepyfile(test_own_model=OWN_MODEL_TEST)
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist", "-k", "parity").assert_outcomes(passed=2)
