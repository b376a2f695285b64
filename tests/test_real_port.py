"""A real port from the outside, as its author would use the harness.

tests/real_port/ptyport is a PyTorch PtychoPINN-style model written without the harness in mind
(its own config and parameter names, channels-first, module-level physics functions, the phase
decoder called through `.forward()`, a (B, M, M) canvas, 1/s multiplied in, single precision at
N=128, unused parameters, no canvas at gridsize 1, a checkpoint folder of its own and its own
inference entry). tests/real_port/ptyport_parity.py wraps it with the public adapter API only.
Its deliberate bugs are switched on by PTYPORT_BUG (physics, checkpoint, config, newkey, crash, canvas) and a
mis-wired tap by PTYPORT_TAP=submodule; PTYPORT_INFER=patches makes its inference entry stop at the
patches (the stitching and the crop done outside the model, as many inference scripts do). In process here; through an entry point in a pytester
project in the last test.
"""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from parity.adapters import map_weights
from parity.backends import register
from parity.inputs.cases import get_case
from parity.config import ForwardConfig
from parity.run.engine import RunRequest, run_case
from parity.plugin.devices import require_backend
from parity.run.results import (ERROR, EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_PASSED, EXIT_RAISED, FAILED, NOT_RUN,
                            PASSED)
from parity.inputs.weights import init_weights
from parity.stages import STAGE_INPUTS
from tests.distributions import fake_distribution, run_user_tests

PORT = Path(__file__).resolve().parent / "real_port"
sys.path.insert(0, str(PORT))


def _pp():
    """tests/real_port/ptyport_parity, imported when a test runs: it imports torch, which collecting
    this file need not (every xdist worker collects every file before the first test starts)."""
    import ptyport_parity

    return ptyport_parity


@pytest.fixture
def ptyport_run(monkeypatch, clean_registry, parity_ref):
    """ptyport (with the named bug, or none) against the session's reference on one case."""
    require_backend(parity_ref)

    def run(case="gs2-big", bug=None, tap=None, infer=None, **kwargs):  # case: a name, or a Case
        for var, value in (("PTYPORT_BUG", bug), ("PTYPORT_TAP", tap), ("PTYPORT_INFER", infer)):
            if value:
                monkeypatch.setenv(var, value)
            else:
                monkeypatch.delenv(var, raising=False)
        register(_pp().backend())
        # the reference is never patched: its model and traces come from the process's cache
        request = RunRequest(dtype="float64", ref=parity_ref, candidates=("ptyport",), reuse=(parity_ref,), **kwargs)
        return run_case(get_case(case) if isinstance(case, str) else case, request)

    return run


def _states(result) -> dict:
    return {(r.check, r.label or r.backend): r.status for r in result.results if r.backend == "ptyport"}


def test_the_port_agrees_and_gets_every_check_its_adapter_allows(ptyport_run, parity_ref):
    result = ptyport_run(grad=True, train_steps=1)
    assert result.passed and result.exit_code == EXIT_PASSED, result.report()
    states = _states(result)
    for key in [("config", "ptyport"), ("forward", "ptyport"), ("paths", "ptyport"), ("checkpoint", "ptyport → ptyport"),
                ("cross-checkpoint", f"{parity_ref} → ptyport"), ("cross-checkpoint", f"ptyport → {parity_ref}"),
                ("golden", "ptyport")]:
        assert states[key] == PASSED, (key, result.report())
    training = next(r for r in result.results if r.check == "training")
    assert training.status == NOT_RUN and "ptyport takes no optimizer steps" in training.summary
    config = next(r for r in result.results if r.check == "config" and r.backend == "ptyport")
    assert config.detail.unread == ["mae_weight", "nll_weight", "nphotons", "probe_scale"]  # listed, not assumed
    assert config.summary.endswith("(4 field(s) not read: mae_weight, nll_weight, nphotons, probe_scale)")
    forward = result.comparisons["ptyport"]
    assert all(s.provided for s in forward.stages)  # every one of the 14 stages, tapped or derived
    assert max(s.rel_error for s in forward.stages) < 1e-12
    assert "ptyport: reconstructing 8 groups" in result.output["ptyport"]  # captured, not interleaved
    if parity_ref == "tensorflow":  # numpy computes no gradients
        gradients = result.gradients["ptyport"]
        assert states[("gradients", "ptyport")] == PASSED
        missing = {s.stage for s in gradients.comparison.stages if not s.provided}
        assert missing == {"loss.nll", "loss.mae", "grad.log_scale"}  # ptyport's loss is one number; 1/s a buffer


def test_an_inference_entry_that_stops_at_the_patches_is_no_paths_difference(ptyport_run):
    """Canvas tap and crop declared off the inference path (infer=False): the paths check compares
    what both paths give and lists the rest with its reason; the forward check still compares the
    canvas and the crop (the training path reaches them), the checkpoint check the patches."""
    result = ptyport_run(infer="patches", checkpoints=True)
    assert result.passed and result.exit_code == EXIT_PASSED, result.report()
    paths = next(r for r in result.results if r.check == "paths" and r.backend == "ptyport")
    assert paths.status == PASSED and paths.detail == {"object.patches": True}, paths.summary
    assert paths.summary.endswith("not compared: object.canvas, object.trimmed (not on ptyport's inference path)")
    stages = {s.stage: s for s in result.comparisons["ptyport"].stages}
    assert stages["object.trimmed"].provided and stages["object.trimmed"].rel_error < 1e-12  # derived, train path
    reloaded = next(r for r in result.results if r.check == "checkpoint" and r.backend == "ptyport")
    assert [s.stage for s in reloaded.detail.comparison.stages] == ["scaled_input", "encoder.out", "decoder.amp",
                                                                    "decoder.phase", "object.patches"]


def test_a_derived_stage_of_a_stage_off_the_inference_path_is_told_to_stay_off_it(ptyport_run, monkeypatch):
    """The crop derived from the canvas but left on the inference path: a wiring error (exit 2)
    whose advice is the one that fits (infer=False), not `when=` (it has one)."""
    from parity.adapters import Derived

    on_path = [d if d.stage != "object.trimmed" else Derived(d.stage, d.fn, when=d.when)
               for d in _pp().DERIVED_PATCHES]
    monkeypatch.setattr(_pp(), "DERIVED_PATCHES", on_path)
    result = ptyport_run(infer="patches")
    assert result.exit_code == EXIT_BAD_INPUT, result.report()
    error = next(r for r in result.results if r.status == ERROR)
    assert error.summary == ("adapter wiring (ptyport forward_infer): ptyport: derived stage 'object.trimmed' needs "
                             "'object.canvas', which is not on the inference path (its tap has infer=False): give "
                             "the Derived infer=False too"), error.summary


def test_at_gridsize_1_the_port_has_no_canvas_and_says_so(ptyport_run):
    result = ptyport_run(case="gs1")
    assert result.passed, result.report()
    stages = {s.stage: s for s in result.comparisons["ptyport"].stages}
    assert not stages["object.canvas"].provided and stages["object.canvas"].message == "not provided by ptyport"
    assert stages["object.extracted"].provided and stages["object.extracted"].rel_error < 1e-12  # derived
    golden = next(r for r in result.results if r.check == "golden" and r.backend == "ptyport")
    assert "not compared: canvas" in golden.summary


def test_a_physics_bug_is_caught_and_blamed_on_the_port(ptyport_run, monkeypatch):
    from parity.adapters.model import AdapterModel

    forced, trace = [], AdapterModel._trace  # the forward calls that put the reference's values in
    monkeypatch.setattr(AdapterModel, "_trace", lambda self, *a, **k: forced.append(bool(k.get("force")))
                        or trace(self, *a, **k))
    result = ptyport_run(bug="physics")
    assert result.exit_code == EXIT_DIVERGED and result.verdict() == "DIVERGED"
    first = result.comparisons["ptyport"].first_divergence
    assert first.stage == "object.extracted"
    assert result.arbitrations["ptyport"]["blame"] == "ptyport"
    # teacher forcing through the taps: each stage of ptyport's fed the reference's inputs
    # (its canvas's transform undone by the tap's inverse), the bug found where it is born
    origins = next(r for r in result.results if r.check == "origins")
    assert origins.summary == "1 origin: object.extracted (ptyport; numpy agrees with tensorflow)".replace(
        "tensorflow", result.ref)
    marks = {s.stage: s.mark for s in result.comparisons["ptyport"].stages}
    assert [s for s, mark in marks.items() if mark != "ok"] == [
        "object.extracted", "probe.illuminated", "diffraction.amplitude", "diffraction.scaled",
        "diffraction.intensity"]
    assert marks["object.extracted"] == "origin" and marks["diffraction.amplitude"] == "propagated"
    stages = {s.stage: s for s in result.comparisons["ptyport"].stages}
    assert stages["probe.illuminated"].rel_error > 0.1 and stages["probe.illuminated"].local_error < 1e-12
    assert forced.count(True) == 1, "every stage's origin from one forward call of the port"


def test_one_forward_call_gives_every_stage_what_a_call_of_its_own_gives(parity_ref, clean_registry, monkeypatch):
    """Teacher forcing through the taps puts every stage's inputs in at once (what the origins check
    asks for): one forward call of the port gives each stage bit for bit what a call of its own
    gives (each reads only its inputs). Where the forced taps do not all fire together, `stages`
    computes each stage by a call of its own."""
    from parity.adapters.model import AdapterModel
    from parity.backends import get_backend
    from parity.run.cache import cached_run
    from parity.run.results import CannotForce

    require_backend(parity_ref)
    monkeypatch.setenv("PTYPORT_BUG", "physics")
    register(_pp().backend())
    case = get_case("gs2-big")
    cfg, weights, batch = case.inputs("float64")
    model = get_backend("ptyport").build(cfg, weights)
    ref = cached_run(case, parity_ref, "cpu", "float64").train
    wanted = {s: {k: ref[k] for k in STAGE_INPUTS[s]} for s in ("object.patches", "object.canvas",
                                                                  "object.extracted", "probe.illuminated",
                                                                  "diffraction.amplitude")}
    calls, trace = [], AdapterModel._trace
    monkeypatch.setattr(AdapterModel, "_trace", lambda self, *a, **k: calls.append(1) or trace(self, *a, **k))
    together = model.stages(wanted, batch)
    assert len(calls) == 1

    def not_together(self, batch, stages, *a, **k):  # as where forcing one tap stops another firing
        calls.append(1)
        if len(stages) > 1:
            raise CannotForce("the taps of object.canvas did not fire at the call whose value the trace keeps")
        return trace(self, batch, stages, *a, **k)

    monkeypatch.setattr(AdapterModel, "_trace", not_together)
    apart = model.stages(wanted, batch)  # the one call refused, then `stage` for each
    assert len(calls) == 1 + 1 + len(wanted)
    for name in wanted:
        np.testing.assert_array_equal(together[name], apart[name], err_msg=name)


def test_a_canvas_of_another_size_is_an_origin_with_a_reproduction(ptyport_run, tmp_path):
    """ptyport's canvas without the jitter margin: the canvas is the origin (its shape, not a
    number, parts from the reference's), the stages that read it cannot be fed the reference's
    canvas, and the reproduction says the shapes differ."""
    result = ptyport_run(bug="canvas", repro_dir=tmp_path)
    stages = {s.stage: s for s in result.comparisons["ptyport"].stages}
    assert stages["object.canvas"].mark == "origin" and stages["object.canvas"].local_error is None
    assert "shape mismatch" in stages["object.canvas"].local_note
    assert stages["object.extracted"].mark == "not forced"
    assert stages["object.extracted"].local_note == (f"its input object.canvas has shape (8, 78, 78, 1) in "
                                                     f"{result.ref}, (8, 68, 68, 1) in ptyport")
    origins = next(r for r in result.results if r.check == "origins")
    assert origins.summary.startswith("1 origin: object.canvas (ptyport")
    script = tmp_path / "gs2-big-float64-ptyport-object.canvas" / "repro.py"
    assert "ptyport's output parted from" in script.read_text() and "in shape." in script.read_text()


def test_a_stage_whose_input_cannot_be_forced_says_why(ptyport_run, monkeypatch):
    """Without the inverse of the canvas tap's transform the reference's canvas cannot be put in:
    the stages that read it have no local error, and the verdict says they may be origins."""
    taps = _pp().taps
    monkeypatch.setattr(_pp(), "taps", lambda cfg: [
        replace(t, inverse=None) if t.stage == "object.canvas" else t for t in taps(cfg)])
    result = ptyport_run(bug="physics")
    stages = {s.stage: s for s in result.comparisons["ptyport"].stages}
    why = "its input object.canvas: tap 'object.canvas' on function 'ptyport.physics:merge' has a transform and no inverse="
    for name in ("object.trimmed", "object.extracted"):
        assert stages[name].mark == "not forced" and stages[name].local_note.startswith(why)
        assert stages[name].local_error is None
    origins = next(r for r in result.results if r.check == "origins")
    assert origins.status == FAILED
    assert origins.summary.startswith("no origin found; not forced, so possibly origins too: object.extracted (")


def test_a_checkpoint_that_loses_the_intensity_scale_is_the_seed_scenario(ptyport_run):
    """The training path is healthy; only saved -> loaded inference collapses — and the config
    check names the cause first: the reloaded model holds the default scale, not the asked one."""
    result = ptyport_run(bug="checkpoint")
    states = _states(result)
    assert states[("forward", "ptyport")] == PASSED and states[("paths", "ptyport")] == PASSED
    assert result.verdict() == "CONFIG DIFFERS" and result.exit_code == EXIT_DIVERGED
    asked = get_case("gs2-big").config.intensity_scale
    assert result.headline() == (f"CONFIG DIFFERS: config ptyport: the reloaded inference model has "
                                 f"intensity_scale=1.0 (asked: {asked!r})")
    assert states[("checkpoint", "ptyport → ptyport")] == FAILED
    round_trip = next(c for c in result.checkpoints if c.direction == "ptyport → ptyport")
    assert round_trip.first_stage == "scaled_input"
    train = result.summaries["ptyport"]["train"]["patch_stats"]["var_zero_mean"]
    reloaded = result.summaries["ptyport"]["reloaded"]["patch_stats"]["var_zero_mean"]
    assert abs(reloaded - train) > 0.1 * train


@pytest.fixture(scope="module")
def trained_case(tmp_path_factory):
    """gs2-big from a torch checkpoint after one Adam step (its log_scale moved off the config's by
    ≈ the learning rate, 1e-3: nine orders over float64's agreement), read through a case file as
    a user's trained model is."""
    from parity.backends import get_backend
    from parity.inputs.casefile import load_case_file
    from parity.run.training import AdamConfig

    folder = tmp_path_factory.mktemp("trained")
    cfg, weights, batch = get_case("gs2-big").inputs("float64")
    model = get_backend("torch").build(cfg, weights)
    for _ in model.train_steps(batch, 1, AdamConfig()):
        pass
    model.save(folder / "model.pt")
    (folder / "cases.toml").write_text('[[case]]\nname = "trained"\n[case.config]\ngridsize = 2\n'
                                       '[case.weights]\ncheckpoint = "model.pt"\nbackend = "torch"\n')
    return load_case_file(folder / "cases.toml")[0]


def test_a_port_reading_the_configs_scale_passes_on_seeded_weights_and_fails_on_trained_ones(ptyport_run,
                                                                                              trained_case):
    """With seeded weights a model's log_scale is the config's, so an inference entry that divides
    by the config's scale instead of the model's (PTYPORT_BUG=scale) passes every check. From a
    trained checkpoint (log_scale moved by Adam) the same port fails: its inference path parts from
    its training path at the first stage the scale enters. Without the bug the trained case passes."""
    from parity.run.pipeline import PIPELINE

    trained_scale = trained_case.state("float64")["log_scale"]
    assert abs(trained_scale - trained_case.config.log_scale) > 1e-4  # the state the check is about moved
    checks = tuple(c for c in PIPELINE if c.name in ("config", "forward", "paths", "checkpoint"))  # what it reaches
    seeded = ptyport_run(bug="scale", checks=checks)
    assert seeded.passed, seeded.report()
    caught = ptyport_run(trained_case, bug="scale", checks=checks)
    states = _states(caught)
    assert states[("config", "ptyport")] == PASSED and states[("forward", "ptyport")] == PASSED
    assert states[("paths", "ptyport")] == FAILED and states[("checkpoint", "ptyport → ptyport")] == FAILED
    paths = next(r for r in caught.results if r.check == "paths" and r.backend == "ptyport")
    assert paths.summary == "forward_infer differs at object.patches, object.canvas, object.trimmed"
    round_trip = next(c for c in caught.checkpoints if c.direction == "ptyport → ptyport")
    assert round_trip.first_stage == "scaled_input", caught.report()
    fixed = ptyport_run(trained_case, checks=checks)
    assert fixed.passed, fixed.report()


@pytest.mark.full  # the script runs in a process of its own
def test_a_reproduction_from_a_trained_case_carries_its_weights_and_state(ptyport_run, trained_case, tmp_path):
    """The seed would rebuild other weights: a trained case's reproduction saves the weights and
    the state (log_scale, probe) it ran with, and its script builds the models from them."""
    result = ptyport_run(trained_case, bug="physics", repro_dir=tmp_path)
    assert result.verdict() == "DIVERGED"
    folder = tmp_path / "trained-float64-ptyport-object.extracted"
    meta = json.loads((folder / "repro.json").read_text())
    assert meta["weights"]["checkpoint"]["file"] == str(trained_case.checkpoint.path)
    with np.load(folder / "repro.npz") as saved:
        assert float(saved["state/log_scale"]) == trained_case.state("float64")["log_scale"]
        weights = trained_case.weights("float64")
        assert all(np.array_equal(saved[f"weights/{k}"], v) for k, v in weights.items())
    done = subprocess.run([sys.executable, "repro.py"], cwd=folder, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    numpy_line = next(line for line in done.stdout.splitlines() if line.startswith("numpy"))
    assert float(numpy_line.rsplit(" ", 1)[1]) < 1e-12, done.stdout  # numpy agrees with the reference's output


@pytest.mark.full  # an extended case's reference run of its own
def test_a_loader_that_drops_a_config_field_is_named_by_the_config_check_and_leads_the_verdict(ptyport_run,
                                                                                                 parity_ref):
    """ptyport's checkpoint forgets pad_object, so its loader rebuilds the default network (another
    decoder head) and loads what fits. The config check names the field and both values, and the
    verdict leads with it (the divergences after it are its consequence); the round trip still
    parts at the first stage the head changes; the reloaded model cannot cross into the reference,
    which is a *failed* cross-checkpoint that names the tensors, not a raise. With the field read
    back (no bug) every one of these passes (test_the_port_agrees_and_gets_every_check_its_adapter_allows)."""
    result = ptyport_run(case="gs2-big-nopad", bug="config")
    states = _states(result)
    assert states[("forward", "ptyport")] == PASSED and states[("paths", "ptyport")] == PASSED
    assert result.exit_code == EXIT_DIVERGED and result.verdict() == "CONFIG DIFFERS", result.report()
    config = next(r for r in result.results if r.check == "config" and r.backend == "ptyport")
    assert config.summary == "the reloaded inference model has pad_object=True (asked: False)"
    assert [(m.what, m.drift) for m in config.detail.models] == [
        ("the training model", []), ("the reloaded inference model", [("pad_object", True, False)])]
    assert next(r for r in result.results if r.check == "config" and r.backend == parity_ref).status == PASSED
    round_trip = next(c for c in result.checkpoints if c.direction == "ptyport → ptyport")
    assert round_trip.first_stage == "decoder.amp"
    cross = next(r for r in result.results if r.check == "cross-checkpoint" and r.label == f"ptyport → {parity_ref}")
    assert cross.status == FAILED and cross.failure is None
    assert cross.summary.startswith(f"ptyport's reloaded model does not fit the network of this config, so "
                                    f"{parity_ref} cannot load it: missing 12: decoder_amp.head.up.conv0.kernel")
    assert states[("cross-checkpoint", f"{parity_ref} → ptyport")] == PASSED
    assert result.headline() == ("CONFIG DIFFERS: config ptyport: the reloaded inference model has pad_object=True "
                                 "(asked: False)")
    assert result.report().splitlines()[0].endswith(result.headline())


def test_a_tap_on_a_submodule_called_through_forward_is_a_wiring_error(ptyport_run):
    result = ptyport_run(tap="submodule")
    assert result.exit_code == EXIT_BAD_INPUT and result.verdict() == "WIRING ERROR"
    error = next(r for r in result.results if r.status == ERROR)
    assert error.check == "forward" and error.failure.kind == "wiring"
    assert "tap 'decoder.phase' on submodule 'phs' never fired" in error.summary
    assert "`.forward(...)` bypasses module hooks" in error.summary
    assert all(r.status == NOT_RUN for r in result.results if r.backend == "ptyport" and r is not error)


def test_a_crash_inside_the_port_is_a_verdict_with_its_file_and_line(ptyport_run):
    result = ptyport_run(bug="crash")
    assert result.exit_code == EXIT_RAISED and result.verdict() == "BACKEND RAISED"
    failure = result.errors[0].failure
    assert failure.type == "RuntimeError" and failure.during == "ptyport forward_train"
    source = (PORT / "ptyport" / "physics.py").read_text().splitlines()
    line = next(i for i, text in enumerate(source, 1) if "mixes precisions: raises" in text)
    assert failure.where == f"{PORT / 'ptyport' / 'physics.py'}:{line} in far_field"


def test_a_raise_inside_a_library_names_the_users_line_and_keeps_the_whole_message(ptyport_run):
    """ptyport's strict loader meets a key a newer save wrote: torch raises in load_state_dict. The
    error names ptyport's own line (torch's frame beneath it), keeps the message's second line —
    the whole diagnosis — on the console, and the cross-checkpoint says truly why it did not run."""
    result = ptyport_run(bug="newkey")
    assert result.exit_code == EXIT_RAISED and result.verdict() == "BACKEND RAISED"
    error = result.errors[0]
    failure = error.failure
    assert (error.check, error.backend, failure.during) == ("checkpoint", "ptyport", "ptyport load")
    source = (PORT / "ptyport" / "io.py").read_text().splitlines()
    line = next(i for i, text in enumerate(source, 1) if "strict=not lenient" in text)
    assert failure.where == f"{PORT / 'ptyport' / 'io.py'}:{line} in load"
    assert "torch/nn/modules/module.py:" in failure.beneath and failure.beneath.endswith("in load_state_dict")
    assert 'Unexpected key(s) in state_dict: "log_scale_delta".' in failure.more()[0]
    assert 'Unexpected key(s) in state_dict: "log_scale_delta".' in result.report()  # the console shows it
    assert result.headline().startswith("BACKEND RAISED: checkpoint ptyport: ptyport load raised "
                                        "RuntimeError: Error(s) in loading state_dict for PtyNet:")
    cross = next(r for r in result.results if r.check == "cross-checkpoint" and r.label.startswith("ptyport →"))
    assert cross.summary == "not run: ptyport's own checkpoint was not loaded (see checkpoint ptyport → ptyport)"


@pytest.mark.full  # a gradient run of its own; the unit test of the factor is the gate's (test_parity_training)
def test_a_loss_normalised_differently_is_named_as_such(ptyport_run, monkeypatch, parity_ref):
    """Every gradient larger by one factor points at the loss's normalisation, and the report says
    so (the first divergence, at the loss, stays what it is)."""
    if parity_ref != "tensorflow":
        pytest.skip("the numpy reference computes no gradients")
    own = _pp().loss
    monkeypatch.setattr(_pp(), "loss", lambda model, batch, cfg: own(model, batch, cfg) * 64.0)
    result = ptyport_run(grad=True)
    check = result.gradients["ptyport"]
    assert not check.passed and check.first_divergence.stage == "loss", check.describe()
    factor = check.common_factor
    assert factor["factor"] == pytest.approx(64.0, rel=1e-9) and factor["spread"] < 1e-9
    assert factor["tensors"] == len([s for s in check.comparison.stages if s.stage.startswith("grad.") and s.provided])
    assert "every gradient of ptyport is tensorflow's × 64 (spread" in check.describe()
    assert "the loss is normalised differently" in result.headline()


def test_a_weight_mapping_that_does_not_fit_is_adapter_wiring_with_every_misfit(ptyport_run, monkeypatch):
    """A transposition rule forgotten on two kernels: map_weights(...).check() names both, with
    their shapes; that is the adapter's wiring (exit 2), not the port raising (exit 3)."""
    own = _pp().weight_mapping

    def mapping(cfg):
        out = own(cfg)
        for key in ("encoder.block0.conv0.kernel", "decoder_amp.block1.conv1.kernel"):
            out[key] = (out[key][0], "same")
        return out

    monkeypatch.setattr(_pp(), "weight_mapping", mapping)
    result = ptyport_run()
    assert result.exit_code == EXIT_BAD_INPUT and result.verdict() == "WIRING ERROR", result.report()
    error = next(r for r in result.results if r.status == ERROR)
    assert (error.check, error.backend, error.failure.kind) == ("forward", "ptyport", "wiring")
    assert error.failure.type == "MappingError"
    assert error.summary == ("adapter wiring (ptyport build): weight mapping — mis-shaped 2: "
                             "encoder.block0.conv0.kernel -> enc.0.0.weight: (3, 3, 4, 64) vs (64, 4, 3, 3); "
                             "decoder_amp.block1.conv1.kernel -> amp.ups.1.2.weight: (3, 3, 64, 64) vs (64, 64, 3, 3)")


def test_parameters_without_a_counterpart_are_declared_unused_not_left_over():
    import ptyport

    cfg = ForwardConfig()
    model = ptyport.PtyNet(_pp().port_config(cfg))
    shapes = {k: tuple(v.shape) for k, v in model.named_parameters()}
    weights = init_weights(cfg, 0, "float64")
    mapping = _pp().weight_mapping(cfg)
    assert map_weights(weights, mapping, shapes).leftover == ["probe_refine"]
    declared = map_weights(weights, mapping, shapes, unused=["probe_*"]).check()
    assert declared.unused == ["probe_refine"] and declared.leftover == []


def test_neutral_weights_come_back_out_through_the_inverse_mapping(ptyport_run, clean_registry):
    cfg, weights, _ = get_case("gs2-big").inputs("float64")
    register(_pp().backend())
    from parity.backends import get_backend

    model = get_backend("ptyport").build(cfg, weights)
    out = model.weights()
    assert out.keys() == weights.keys()
    assert all(np.array_equal(out[k], weights[k]) for k in weights)


def test_a_trained_checkpoint_of_the_port_is_read_through_its_own_load_and_mapping(clean_registry, tmp_path):
    """A case's checkpoint in ptyport's own format (a folder), read by backend = "ptyport": its
    loader, then the inverse weight mapping and get_state give the neutral weights and the state
    every backend of the run is built with; weights of another network are one line naming them."""
    from parity.backends import get_backend
    from parity.inputs.trained import Checkpoint, CheckpointError

    cfg, weights, _ = get_case("gs2-big").inputs("float64")
    register(_pp().backend())
    model = get_backend("ptyport").build(cfg, weights, log_scale=cfg.log_scale + 0.25)  # a learned scale
    model.save(tmp_path / "ckpt")
    trained = Checkpoint(tmp_path / "ckpt", "ptyport").read(cfg, "float64")
    assert trained.weights.keys() == weights.keys()
    assert all(np.array_equal(trained.weights[k], weights[k]) for k in weights)
    assert trained.state == {"log_scale": pytest.approx(cfg.log_scale + 0.25, rel=1e-12)}
    assert trained.config["pad_object"] is True and trained.config["offset"] == cfg.offset  # read from the model
    with pytest.raises(CheckpointError, match="weights do not match the network of this config — "):
        Checkpoint(tmp_path / "ckpt", "ptyport").read(get_case("gs1").config, "float64")


def _project(tmp_path: Path) -> dict:
    return fake_distribution(tmp_path, "ptyport-parity", "ptyport = ptyport_parity:backend", paths=[PORT],
                             drop=["PTYPORT_BUG", "PTYPORT_TAP"])


USER_TEST = (PORT / "user_tests.py").read_text()


@pytest.mark.full
@pytest.mark.processes
def test_the_port_through_its_entry_point_with_pytest_and_parity_check(pytester, tmp_path):
    require_backend("tensorflow")  # the user's test and `parity check` use the default reference
    env = _project(tmp_path)
    run_user_tests(pytester, env, USER_TEST, passed=2, drop=["PTYPORT_BUG", "PTYPORT_TAP"])

    parity = Path(sys.executable).with_name("parity")

    def check(out: str, *args, **variables):
        return subprocess.run([str(parity), "check", "--candidate", "ptyport", "--dtype", "float64",
                               "--out", str(tmp_path / out), *args], capture_output=True, text=True,
                              env=dict(env, **variables), timeout=600)

    agree = check("agree", "--case", "gs1", "--grad", "--no-figures")
    assert agree.returncode == 0, agree.stdout[-3000:] + agree.stderr[-2000:]
    assert "tensorflow on cpu (reference) vs ptyport on cpu" in agree.stdout
    assert "passed   gradients ptyport" in agree.stdout and "passed   checkpoint ptyport → ptyport" in agree.stdout

    # the canvas of another size: a verdict, the report and its figures, never a crash
    canvas = check("canvas", "--case", "gs2-big", PTYPORT_BUG="canvas")
    assert canvas.returncode == 1, canvas.stdout[-3000:] + canvas.stderr[-2000:]
    assert "shape mismatch: tensorflow (8, 78, 78, 1) vs ptyport (8, 68, 68, 1)" in canvas.stdout
    report = (tmp_path / "canvas" / "report.md").read_text()
    assert "on the common centre 68×68" in report and "![canvas_float64](gs2-big/canvas_float64.png)" in report
    assert (tmp_path / "canvas" / "gs2-big" / "canvas_float64.png").stat().st_size > 10_000

    diverge = check("diverge", "--case", "gs2-small", "--no-figures", PTYPORT_BUG="physics")
    wiring = check("wiring", "--case", "gs1", "--no-figures", PTYPORT_TAP="submodule")
    crash = check("crash", "--case", "gs1", "--no-figures", PTYPORT_BUG="crash")
    assert (diverge.returncode, wiring.returncode, crash.returncode) == (1, 2, 3), (
        diverge.stdout[-1500:], wiring.stdout[-1500:], crash.stdout[-1500:])
    assert "ptyport disagrees with tensorflow and with numpy" in diverge.stdout
    for line in ("failed   forward ptyport: first divergence at object.extracted: ptyport disagrees with tensorflow "
                 "and with numpy at object.extracted",  # both lines as docs/own-port.md shows them
                 "failed   origins ptyport: 1 origin: object.extracted (ptyport; numpy agrees with tensorflow)"):
        assert line in diverge.stdout, diverge.stdout[-3000:]
    # its reproduction, run in the user's environment (the adapter installed): the port's own
    # stage from the reference's inputs, through its adapter, fails by the run's local error
    script = tmp_path / "diverge" / "gs2-small" / "repro" / "gs2-small-float64-ptyport-object.extracted" / "repro.py"
    meta = json.loads(script.with_name("repro.json").read_text())
    assert meta["whole_batch"] and meta["crop"] is None
    repro = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                           env=dict(env, PTYPORT_BUG="physics"))
    assert repro.returncode == 0, repro.stdout + repro.stderr
    assert f"ptyport      object.extracted local error against tensorflow: {meta['local_error']:.3e}" in repro.stdout
    assert "tap 'decoder.phase' on submodule 'phs' never fired" in wiring.stdout
    assert "Traceback" not in crash.stdout + crash.stderr
    assert "ptyport forward_train raised RuntimeError" in crash.stdout and "physics.py:" in crash.stdout
    crash_report = (tmp_path / "crash" / "report.md").read_text()
    assert "BACKEND RAISED" in crash_report and "Traceback (most recent call last)" in crash_report


@pytest.mark.full  # N=128, the longest case; the gate's dtype mismatch: tests/test_compare.py
def test_where_the_port_computes_in_single_precision_it_is_compared_at_it(ptyport_run):
    """At N=128 ptyport takes its FFT in complex64 even in a float64 run: the stage is reported as
    a dtype mismatch *and* compared at float32, where it agrees to float32 rounding."""
    result = ptyport_run(case="gs2-big-n128", checkpoints=False, use_golden=False)
    first = result.comparisons["ptyport"].first_divergence
    assert first.stage == "diffraction.amplitude" and result.exit_code == EXIT_DIVERGED
    assert first.message.startswith("dtype mismatch: tensorflow float64 vs ptyport float32; compared at float32")
    assert 1e-9 < first.rel_error < 1e-6  # float32 rounding, not a bug
    stages = {s.stage: s for s in result.comparisons["ptyport"].stages}
    assert all(stages[s].passed for s in ("encoder.out", "object.canvas", "probe.illuminated"))  # before the FFT
