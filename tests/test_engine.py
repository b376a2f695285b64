"""The engine, arbitration and the `parity check` job end to end."""

import json

import numpy as np
import pytest

from parity.inputs.cases import get_case
from parity.cli import main
from parity.run.engine import RunRequest, run_case
from parity.run.oracle import arbitrate, numpy_oracle, recompute
from parity.stages import OBJECT_STAGES, TRAIN_STAGES
from tests.backends import case_trace


@pytest.fixture(scope="module")
def gs2_big():
    # nothing is patched here: both backends' models and traces from the process's cache
    return run_case(get_case("gs2-big"), RunRequest(dtype="float64", reuse=("tensorflow", "torch")))


def test_run_case_is_complete_and_json_serialisable(gs2_big):
    r = gs2_big
    assert r.passed and r.verdict() == "PASS" and r.arbitrations["torch"] is None
    assert [s.stage for s in r.comparisons["torch"].stages] == list(TRAIN_STAGES)
    assert set(r.path_checks) == {"tensorflow", "torch"}
    assert all(r.path_checks[b][s] for b in r.path_checks for s in OBJECT_STAGES)
    d = json.loads(json.dumps(r.to_dict()))
    assert d["digests"]["inputs"].keys() >= {"diffraction", "offsets", "probe"}
    assert len(d["digests"]["weights"]) == 64
    assert d["provenance"]["flags"]["tf_op_determinism"] is True
    assert d["provenance"]["dtype"] == "float64" and d["provenance"]["date"].endswith("+00:00")
    tf_stats = d["summaries"]["tensorflow"]["train"]["patch_stats"]
    torch_stats = d["summaries"]["torch"]["train"]["patch_stats"]
    assert tf_stats["var_zero_mean"] == pytest.approx(torch_stats["var_zero_mean"], rel=1e-10)
    assert d["summaries"]["torch"]["infer"]["patch_stats"] == torch_stats


def _perturbed(trace, stage, where, rel):
    out = dict(trace)
    arr = out[stage].copy()
    arr[where] += rel * np.abs(arr).max()
    out[stage] = arr
    return out


@pytest.mark.parametrize("stage", ["object.canvas", "object.extracted", "diffraction.amplitude", "scaled_input"])
def test_arbitration_blames_the_perturbed_side(stage):
    cfg, _, batch = get_case("gs2-big").inputs("float64")
    tf_trace, torch_trace = case_trace("tf", "gs2-big", "float64"), case_trace("torch", "gs2-big", "float64")
    where = (1, 30, 31, 0)
    bad_torch = arbitrate(stage, tf_trace, _perturbed(torch_trace, stage, where, 1e-6), cfg, batch, 1e-12)
    assert bad_torch["blame"] == "torch"
    assert bad_torch["verdict"] == f"torch disagrees with tensorflow and with numpy at {stage}"
    bad_tf = arbitrate(stage, _perturbed(tf_trace, stage, where, 1e-6), torch_trace, cfg, batch, 1e-12)
    assert bad_tf["blame"] == "tensorflow"


def test_arbitration_of_inherited_and_network_divergence():
    cfg, _, batch = get_case("gs2-big").inputs("float64")
    tf_trace, torch_trace = case_trace("tf", "gs2-big", "float64"), case_trace("torch", "gs2-big", "float64")
    # torch's canvas is off, and its later stages consistently follow from it
    drifted = _perturbed(torch_trace, "object.canvas", (0, 39, 39, 0), 1e-3)
    from models_numpy import physics as oracle

    drifted["object.extracted"] = oracle.object_extracted(drifted["object.canvas"], drifted["input.offsets"], cfg)
    verdict = arbitrate("object.extracted", tf_trace, drifted, cfg, batch, 1e-12)
    assert verdict["blame"] is None and "carried in from earlier stages" in verdict["verdict"]
    net = arbitrate("decoder.amp", tf_trace, torch_trace, cfg, batch, 1e-12)
    assert net["oracle"] is False and net["blame"] is None


def test_check_end_to_end_writes_every_file(tmp_path, capsys):
    out = tmp_path / "report"
    md = tmp_path / "summary.md"
    code = main(["check", "--case", "gs1", "--dtype", "float32", "--out", str(out), "--summary-md", str(md)],
                reuse=("tensorflow", "torch"))  # nothing is patched: both runs may come from the process's cache
    text = capsys.readouterr().out
    assert code == 0
    assert "[1/1] gs1 float32 ... PASS" in text and "1/1 runs agree" in text
    folder = out / "gs1"
    for name in ("stats.json", "canvas.json", "offsets.json", "patches_amplitude_float32.png",
                 "patches_phase_float32.png", "canvas_float32.png", "diffraction_float32.png"):
        assert (folder / name).is_file(), name
    stats = json.loads((folder / "stats.json").read_text())
    assert stats["float32"]["verdict"] == "PASS" and len(stats["float32"]["stages"]) == 14
    assert json.loads((out / "summary.json").read_text())["passed"] is True
    report = (out / "report.md").read_text()
    assert "![patches_amplitude_float32](gs1/patches_amplitude_float32.png)" in report
    assert md.read_text().startswith("| case | dtype | worst stage")

    import matplotlib.image as mpimg

    for png in folder.glob("*.png"):
        h, w = mpimg.imread(png).shape[:2]
        assert 300 <= h <= 1400 and 700 <= w <= 2000, (png.name, h, w)


def test_check_exit_1_on_divergence_names_stage_and_side(tmp_path, capsys, monkeypatch):
    import models_torch.physics as torch_physics

    honest = torch_physics.object_canvas

    def shifted_canvas(patches, offsets, cfg):  # an injected port bug: a tiny extra shift
        return honest(patches, offsets + 1e-3, cfg)

    monkeypatch.setattr(torch_physics, "object_canvas", shifted_canvas)
    code = main(["check", "--case", "gs2-big", "--dtype", "float64", "--no-figures", "--out", str(tmp_path)],
                reuse=("tensorflow",))  # only the port is patched
    text = capsys.readouterr().out
    assert code == 1
    assert "DIVERGED" in text
    assert "first divergence at object.canvas: torch disagrees with tensorflow and with numpy at object.canvas" in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["passed"] is False and summary["runs"][0]["worst_stage"] == "object.canvas"


@pytest.mark.parametrize("argv, needle", [
    (["check", "--case", "nope"], "unknown case 'nope'"),
    (["check", "--device", "cuda"], "CUDA was requested but"),
])
def test_check_exit_2_on_bad_input(tmp_path, capsys, argv, needle):
    try:
        import torch

        if "cuda" in argv and torch.cuda.is_available():
            pytest.skip("a GPU is present")
    except ImportError:
        pass
    code = main(argv + ["--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_check_exit_2_on_bad_data_file(tmp_path, capsys, small_scan_arrays):
    arrays = dict(small_scan_arrays)
    arrays["ycoords"] = arrays["ycoords"][:-2]
    path = tmp_path / "short.npz"
    np.savez(path, **arrays)
    assert main(["check", "--data", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{path}: key 'ycoords'" in err and err.count("\n") == 1


def test_check_on_other_data(tmp_path, capsys, small_scan_arrays):
    path = tmp_path / "other.npz"
    np.savez(path, **small_scan_arrays)
    assert main(["check", "--case", "gs2-small", "--dtype", "float64", "--data", str(path), "--no-figures",
                 "--out", str(tmp_path / "r")]) == 0
    stats = json.loads((tmp_path / "r" / "gs2-small" / "stats.json").read_text())
    assert stats["float64"]["verdict"] == "PASS (no golden)"  # goldens hold the shipped data only
    # --no-figures: every JSON file and the report, no PNG
    assert sorted(p.name for p in (tmp_path / "r" / "gs2-small").iterdir()) == ["canvas.json", "offsets.json",
                                                                                "stats.json"]
    assert "![" not in (tmp_path / "r" / "report.md").read_text()


@pytest.mark.full
def test_check_with_data_skips_cases_of_another_detector_size(tmp_path, capsys):
    from parity.inputs.fixture import FIXTURE_N128_PATH

    assert main(["check", "--cases", "all", "--dtype", "float64", "--data", str(FIXTURE_N128_PATH),
                 "--no-figures", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert f"skipping gs1: it needs N=64, {FIXTURE_N128_PATH} has 128x128 patterns" in out
    assert "[1/1] gs2-big-n128 float64 ... PASS" in out


def test_check_with_data_that_fits_no_chosen_case(tmp_path, capsys):
    from parity.inputs.fixture import FIXTURE_N128_PATH

    assert main(["check", "--data", str(FIXTURE_N128_PATH), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "every chosen case needs N=[64]" in err


def test_check_compares_each_backend_with_the_golden(tmp_path, capsys):
    from parity.goldens.store import golden_path

    golden = json.loads(golden_path("gs1").read_text())
    golden["summaries"]["patch_stats"]["global_std"] *= 1.5
    golden["digests"]["float64"]["inputs"]["probe"] = "0" * 64
    (tmp_path / "gs1.json").write_text(json.dumps(golden))
    code = main(["check", "--case", "gs1", "--dtype", "float64", "--goldens", str(tmp_path), "--no-figures",
                 "--out", str(tmp_path / "r")], reuse=("tensorflow", "torch"))  # nothing patched: both from the cache
    out = capsys.readouterr().out
    assert code == 1 and "GOLDEN DIFFERS" in out
    assert "inputs changed: probe (gs1, torch cpu float64" in out and "patch_stats.global_std: golden" in out
    stats = json.loads((tmp_path / "r" / "gs1" / "stats.json").read_text())["float64"]
    assert stats["golden"]["passed"] is False and len(stats["golden"]["messages"]) == 2  # both backends
    assert "**Golden differs**" in (tmp_path / "r" / "report.md").read_text()


def test_check_with_a_corrupt_golden_is_one_line(tmp_path, capsys):
    (tmp_path / "gs1.json").write_text("{")
    assert main(["check", "--case", "gs1", "--dtype", "float64", "--goldens", str(tmp_path), "--no-figures",
                 "--out", str(tmp_path / "r")]) == 2  # the case still runs (the other checks), its figures aside
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gs1.json: not valid JSON" in err and "Traceback" not in err


def test_run_case_reuses_only_the_backends_it_is_told_to():
    """`reuse=("tensorflow",)`: the reference's model and traces come from the process cache (the
    same objects on a second call), the candidate is built afresh each time."""
    from parity.run.cache import cached_run

    case = get_case("gs1")
    first = run_case(case, RunRequest(dtype="float64", use_golden=False, checkpoints=False, reuse=("tensorflow",)))
    second = run_case(case, RunRequest(dtype="float64", use_golden=False, checkpoints=False, reuse=("tensorflow",)))
    assert first.passed and second.passed
    assert first.traces["tensorflow"] is second.traces["tensorflow"] is cached_run(case, "tensorflow", "cpu",
                                                                                     "float64").train
    assert first.traces["torch"] is not second.traces["torch"]
    fresh = run_case(case, RunRequest(dtype="float64", use_golden=False, checkpoints=False))
    assert fresh.traces["tensorflow"] is not first.traces["tensorflow"]
    assert fresh.summaries["tensorflow"] == first.summaries["tensorflow"]


def test_a_figure_that_cannot_be_drawn_is_said_in_the_report(gs2_big, tmp_path, monkeypatch):
    from parity.report import dump, figures
    from parity.report.markdown import write_report

    def broken(result, path):
        raise ValueError("cannot draw this")

    def quick(result, path):  # the others stand in for real figures (test_check_end_to_end_writes_every_file draws them)
        path.write_bytes(b"\x89PNG")

    for kind in figures.FIGURES:
        monkeypatch.setitem(figures.FIGURES, kind, quick)
    monkeypatch.setitem(figures.FIGURES, "canvas", broken)
    drawn = dump.dump_case(gs2_big, tmp_path)
    assert [d for d in drawn if isinstance(d, str)] == [
        "figure canvas_float64.png could not be drawn: ValueError: cannot draw this"]
    assert any(not isinstance(d, str) and d.name == "diffraction_float64.png" for d in drawn)  # the others are
    report = write_report([gs2_big], tmp_path, {(gs2_big.case, gs2_big.dtype): drawn}).read_text()
    assert "*figure canvas_float64.png could not be drawn: ValueError: cannot draw this*" in report


def test_arbitration_recomputes_once_where_both_sides_feed_the_stage_the_same_inputs(monkeypatch):
    """numpy's answer depends only on the stage's inputs: where both sides hold the same, it is
    computed once (a network stage costs a numpy forward); where they differ, once per side."""
    import models_numpy.model

    cfg, _, batch = get_case("gs2-big").inputs("float64")
    tf_trace = case_trace("tf", "gs2-big", "float64")
    drifted = _perturbed(tf_trace, "object.canvas", (0, 39, 39, 0), 1e-3)
    drifted["object.trimmed"] = recompute("object.trimmed", drifted, cfg, batch, numpy_oracle(cfg, batch))
    calls = []
    honest = models_numpy.model.STAGES["object.trimmed"]
    monkeypatch.setitem(models_numpy.model.STAGES, "object.trimmed", lambda *a: calls.append(1) or honest(*a))
    wrong = dict(tf_trace, **{"object.trimmed": tf_trace["object.trimmed"] * 1.01})
    verdict = arbitrate("object.trimmed", tf_trace, wrong, cfg, batch, 1e-12)
    assert verdict["blame"] == "torch" and len(calls) == 1
    verdict = arbitrate("object.trimmed", tf_trace, drifted, cfg, batch, 1e-12)
    assert verdict["blame"] is None and len(calls) == 3  # other inputs: numpy asked again


def test_what_a_backend_writes_to_stderr_and_its_warnings_land_in_its_output(clean_registry):
    """A port's stderr and warnings are its output (report.md), not lines between the progress."""
    import os
    import sys
    import warnings

    import models_numpy
    from parity.backends import Backend, register

    class Noisy:
        def __init__(self, model):
            self.model = model

        def forward_train(self, batch):
            print("noisy: to stderr", file=sys.stderr)
            warnings.warn("noisy: a deprecated call", DeprecationWarning)
            os.write(2, b"noisy: native code's log\n")  # as TensorFlow's C++ logging writes
            return self.model.forward_train(batch)

        def forward_infer(self, batch):
            return self.model.forward_infer(batch)

    register(Backend("noisy", "numpy", ("cpu",), configure_fn=lambda device: {},
                     build_fn=lambda cfg, w, device="cpu", **kw: Noisy(models_numpy.build(cfg, w, device=device))))
    result = run_case(get_case("gs1"), RunRequest(dtype="float64", ref="numpy", candidates=("noisy",),
                                                  use_golden=False, checkpoints=False))
    assert result.passed, result.report()
    lines = result.output["noisy"].splitlines()
    assert lines[:2] == ["noisy: to stderr", "noisy: native code's log"]
    assert lines[2].endswith("DeprecationWarning: noisy: a deprecated call") and "test_engine.py" in lines[2]
    assert "noisy printed 4 line(s) during the run" in result.report()


def test_a_reference_that_raises_is_reported_under_the_reference_once(clean_registry):
    """The reference's own failure is written under the reference, once, however many candidates;
    the candidates read why they were not compared."""
    from parity.backends import Backend, register

    def build(cfg, weights, device="cpu", **state):
        raise ValueError("the reference rejects these weights")

    register(Backend("broken-ref", "numpy", ("cpu",), configure_fn=lambda device: {}, build_fn=build))
    result = run_case(get_case("gs1"), RunRequest(dtype="float64", ref="broken-ref", candidates=("torch", "numpy"),
                                                  use_golden=False, checkpoints=False, reuse=("torch", "numpy")))
    assert result.exit_code == 3 and [(r.check, r.backend) for r in result.errors] == [("forward", "broken-ref")]
    assert result.headline() == ("BACKEND RAISED: forward broken-ref: broken-ref build raised ValueError: the reference "
                                 f"rejects these weights at {__file__}:{build.__code__.co_firstlineno + 1} in build")
    others = [r for r in result.of("forward") if r.backend == "numpy"]
    assert others[0].summary == "not run: broken-ref raised (in build; see the forward check)"
    from parity.report.dump import worst_line

    assert worst_line(result) == "torch: not compared (broken-ref raised); numpy: not run"
