"""A recorded reference (`parity record`, `--ref recorded:DIR`): the reference's numbers made on
one machine, the port checked against them on another — without the reference's framework."""

import json
import shutil

import numpy as np
import pytest

from parity.cli import main
from parity.inputs.fixture import FIXTURE_PATH
from tests import tf_free


@pytest.fixture(scope="module")
def numpy_record(tmp_path_factory):
    """gs1 in float64 as the numpy reference computed it (no TensorFlow needed to make it)."""
    out = tmp_path_factory.mktemp("record") / "rec"
    assert main(["record", "--ref", "numpy", "--case", "gs1", "--dtype", "float64", "--out", str(out)]) == 0
    return out


def test_a_record_holds_plain_arrays_and_json(numpy_record):
    info = json.loads((numpy_record / "record.json").read_text())
    assert info["backend"] == "numpy" and info["cases"]["gs1"]["dtypes"] == ["float64"] and info["source_key"]
    entry = numpy_record / "gs1" / "float64"
    assert sorted(p.name for p in entry.iterdir()) == ["infer.npz", "meta.json", "reloaded.npz", "state.npz", "train.npz"]
    with np.load(entry / "train.npz", allow_pickle=False) as train:  # nothing to execute on loading
        assert "object.patches" in train.files and train["object.patches"].dtype == np.complex128


def test_a_port_checked_against_a_record_gets_every_check_the_record_can_feed(numpy_record, tmp_path, capsys):
    ref = f"recorded:{numpy_record}"
    code = main(["check", "--ref", ref, "--case", "gs1", "--dtype", "float64", "--no-figures",
                 "--out", str(tmp_path / "out")], reuse=("torch",))
    out = capsys.readouterr().out
    assert code == 0 and "[1/1] gs1 float64 ... PASS (" in out, out
    for line in (f"passed   config {ref}: the training model and the reloaded inference model compute with the "
                 f"asked config", "passed   forward torch: every stage agrees",
                 f"passed   checkpoint {ref} → {ref}: reloaded inference path matches the training path",
                 f"passed   cross-checkpoint {ref} → torch: reloaded inference path matches the training path",
                 f"not run  cross-checkpoint torch → {ref}: not run: the reference is recorded: it cannot load "
                 f"torch's checkpoint", f"passed   golden {ref}: matches gs1.json"):
        assert line in out, (line, out)


def _edited(record, tmp_path, edit):
    copy = tmp_path / "edited"
    shutil.copytree(record, copy)
    edit(copy)
    return copy


def _meta(folder, change):
    path = folder / "gs1" / "float64" / "meta.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


MISMATCHES = [
    ("another config", lambda f: _meta(f, lambda m: m["config"].update(offset=6)),
     "case gs1: recorded with another config (offset 6 → 4)"),
    ("other inputs", lambda f: _meta(f, lambda m: m["digests"]["inputs"].update(diffraction="0" * 64)),
     "case gs1 float64: the record was made from other inputs (diffraction differ: another scan, case "
     "definition or weights)"),
    ("other weights", lambda f: _meta(f, lambda m: m["digests"].update(weights="0" * 64)),
     "the record was made from other inputs (weights differ"),
    ("stale sources", lambda f: (f / "record.json").write_text(
        json.dumps(dict(json.loads((f / "record.json").read_text()), source_key="0" * 64))),
     ": stale: the sources of the numpy reference changed since the record was made"),
    ("not a record", lambda f: (f / "record.json").unlink(), ": not a record (no record.json"),
]


@pytest.mark.parametrize("label, edit, line", MISMATCHES, ids=[m[0] for m in MISMATCHES])
def test_a_record_that_does_not_match_the_run_is_one_line_and_exit_2(numpy_record, tmp_path, capsys, label, edit,
                                                                      line):
    folder = _edited(numpy_record, tmp_path, edit)
    code = main(["check", "--ref", f"recorded:{folder}", "--case", "gs1", "--dtype", "float64",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and line in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert str(folder) in err and not (tmp_path / "out").exists()  # nothing run


def test_a_case_or_dtype_not_recorded_and_another_scan_are_refused(numpy_record, tmp_path, capsys):
    ref = f"recorded:{numpy_record}"
    assert main(["check", "--ref", ref, "--case", "gs2-big", "--dtype", "float64", "--out", str(tmp_path / "a")]) == 2
    assert (f"{numpy_record}: no record of case gs2-big in float64 (recorded: gs1 float64); record it with "
            f"`parity record --case gs2-big --out {numpy_record}`") in capsys.readouterr().err
    assert main(["check", "--ref", ref, "--case", "gs1", "--dtype", "float32", "--out", str(tmp_path / "b")]) == 2
    assert "no record of case gs1 in float32" in capsys.readouterr().err
    scan = tmp_path / "scan.npz"
    with np.load(FIXTURE_PATH) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["diffraction"] = arrays["diffraction"] * 1.01
    np.savez(scan, **arrays)
    assert main(["check", "--ref", ref, "--case", "gs1", "--dtype", "float64", "--data", str(scan),
                 "--out", str(tmp_path / "c")]) == 2
    assert "the record was made from other inputs (diffraction differ" in capsys.readouterr().err


def test_a_record_takes_more_entries_of_the_same_reference_and_refuses_another(numpy_record, tmp_path, capsys):
    folder = _edited(numpy_record, tmp_path, lambda f: None)
    assert main(["record", "--ref", "numpy", "--case", "gs1", "--dtype", "float32", "--out", str(folder)]) == 0
    assert json.loads((folder / "record.json").read_text())["cases"]["gs1"]["dtypes"] == ["float64", "float32"]
    capsys.readouterr()
    assert main(["record", "--ref", "torch", "--case", "gs1", "--out", str(folder)]) == 2
    assert f"--out {folder}: holds a record of another reference; record into a new folder" in capsys.readouterr().err
    # gradients the record does not hold: refused before any model is built, saying how to record them
    assert main(["check", "--ref", f"recorded:{folder}", "--case", "gs1", "--dtype", "float64", "--grad",
                 "--out", str(tmp_path / "out")]) == 2
    assert (f"{folder}: case gs1 float64: the record holds no gradients (record it with --grad)"
            in capsys.readouterr().err)


def test_record_never_writes_into_a_folder_of_yours(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["record", "--ref", "numpy", "--case", "gs1", "--out", str(tmp_path)]) == 2
    assert "holds files that are not a record" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / "record.json").exists()


FAULT_SCRIPT = """
import sys
from parity.backends import register
from parity.faults.catalogue import get_fault
from parity.inputs.cases import get_case
from parity.recorded.backend import recorded_backend
from parity.run.engine import RunRequest, run_case

ref = "recorded:" + sys.argv[1]
register(recorded_backend(ref))
with get_fault("merge-translation-sign").inject():
    result = run_case(get_case("gs2-big"), RunRequest(dtype="float64", ref=ref, candidates=("torch",)))
first = result.comparisons["torch"].first_divergence
print(result.verdict(), first.stage, result.arbitrations["torch"]["blame"], "tensorflow" in sys.modules)
"""


@pytest.mark.full  # a TensorFlow record, then two processes without TensorFlow
@pytest.mark.processes
def test_tensorflows_numbers_check_a_port_where_tensorflow_cannot_be_imported(tmp_path, capsys):
    """Recorded by TensorFlow here; checked in a Python where `import tensorflow` fails: the port
    agrees with TensorFlow's numbers, and an injected merge bug is caught at object.canvas with
    numpy agreeing with the record (the port blamed)."""
    from parity.plugin.devices import require_backend

    require_backend("tensorflow")
    record = tmp_path / "rec"
    assert main(["record", "--case", "gs2-big", "--dtype", "float64", "--out", str(record)]) == 0
    assert json.loads((record / "record.json").read_text())["framework"] == "tensorflow"
    env = tf_free.make(tmp_path / "site")
    done = tf_free.run(env, "-m", "parity", "check", "--ref", f"recorded:{record}", "--case", "gs2-big", "--dtype",
                       "float64", "--no-figures", "--out", str(tmp_path / "out"))
    assert done.returncode == 0 and "1/1 runs agree" in done.stdout, done.stdout + done.stderr
    (tmp_path / "fault.py").write_text(FAULT_SCRIPT)
    fault = tf_free.run(env, str(tmp_path / "fault.py"), str(record))
    assert fault.returncode == 0, fault.stderr
    assert fault.stdout.split() == ["DIVERGED", "object.canvas", "torch", "False"], fault.stdout
