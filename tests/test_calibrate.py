"""Calibrated tolerances (parity.calibrate): the shipped float32 CPU bounds hold for the honest port
on weight seeds the calibration never saw, catch a port whose intensity scale is rounded where
the flat 1e-5 could not, and verdicts state errors as multiples of the measured noise."""

import math
import shutil

import pytest

from parity.backends import get_backend
from parity.calibrate.propose import bound, marks, round_up
from parity.cli import main
from parity.inputs.cases import case_names, get_case
from parity.run.compare import compare_traces
from parity.run.tolerances import TOLERANCE_PATH, ToleranceError, load_profile

HELD_OUT = (100, 101)  # the shipped calibration used weight seeds 0, 1, 2


def _traces(case, port_log_scale=None):
    cfg, weights, batch = case.inputs("float32")
    ref = get_backend("tensorflow").build(cfg, weights).forward_train(batch)
    port = get_backend("torch").build(cfg, weights, log_scale=port_log_scale).forward_train(batch)
    return ref, port


@pytest.mark.full
@pytest.mark.parametrize("name", case_names("all"))
def test_the_honest_port_passes_every_case_in_float32_on_held_out_seeds(name, parity_run):
    import dataclasses

    parity_run(name, "tensorflow", "float32")  # skips where TensorFlow is missing; sets the threads
    profile = load_profile("cpu", "float32")
    for seed in HELD_OUT:
        ref, port = _traces(dataclasses.replace(get_case(name), weight_seed=seed))
        comparison = compare_traces(ref, port, profile, "tensorflow", "torch")
        assert comparison.passed, f"seed {seed}: {comparison.first_divergence.message}"
        assert all(s.noise is not None for s in comparison.stages)  # every stage calibrated


@pytest.mark.parametrize("name", case_names("default"))
def test_the_default_cases_pass_in_float32_on_a_held_out_seed(name, parity_run):
    import dataclasses

    parity_run(name, "tensorflow", "float32")
    ref, port = _traces(dataclasses.replace(get_case(name), weight_seed=HELD_OUT[0]))
    comparison = compare_traces(ref, port, load_profile("cpu", "float32"), "tensorflow", "torch")
    assert comparison.passed, comparison.first_divergence.message


def test_a_port_with_its_intensity_scale_rounded_fails_in_float32_at_scaled_input(parity_run):
    parity_run("gs1", "tensorflow", "float32")
    case = get_case("gs1")
    rounded = round(case.config.intensity_scale, 2)
    assert rounded != case.config.intensity_scale
    ref, port = _traces(case, port_log_scale=math.log(rounded))
    comparison = compare_traces(ref, port, load_profile("cpu", "float32"), "tensorflow", "torch")
    first = comparison.first_divergence
    assert first is not None and first.stage == "scaled_input", first
    assert "where an honest port is exact, exceeds tolerance" in first.message
    # the flat bound it replaced passed it on every stage
    assert compare_traces(ref, port, 1e-5, "tensorflow", "torch").passed


def test_verdicts_state_the_error_as_a_multiple_of_the_measured_noise(parity_run):
    parity_run("gs1", "tensorflow", "float32")
    ref, port = _traces(get_case("gs1"))
    profile = load_profile("cpu", "float32")
    comparison = compare_traces(ref, port, profile, "tensorflow", "torch")
    stage = next(s for s in comparison.stages if s.stage == "decoder.phase")
    assert stage.noise == profile.noise_for("decoder.phase") > 0
    assert stage.noise_ratio == pytest.approx(stage.rel_error / stage.noise)
    assert f"= {stage.noise_ratio:.2g}× the measured noise of this stage" in stage.in_noise()
    assert stage.to_dict()["noise_ratio"] == stage.noise_ratio
    # float64 is not calibrated: no ratio, no phrase
    assert load_profile("cpu", "float64").noise_for("decoder.phase") is None


def test_bounds_are_the_factor_times_the_measured_max_rounded_up_never_below_four_ulps():
    assert round_up(8.12e-6) == pytest.approx(8.2e-6) and round_up(8.2e-6) == pytest.approx(8.2e-6)
    assert bound(2.03e-6, "float32", 4.0) == pytest.approx(8.2e-6)
    assert bound(0.0, "float32", 4.0) == pytest.approx(4.8e-7)  # 4 × 2^-23 = 4.77e-7, rounded up
    profile = load_profile("cpu", "float32")
    assert profile.for_stage("scaled_input") == pytest.approx(4.8e-7)  # the exact name beats the "*" glob
    assert profile.for_stage("grad.encoder.conv0.kernel") == 5e-2  # gradients: the reviewed glob


def test_calibrate_dry_run_prints_the_table_and_the_diff_and_write_replaces_its_own_block(tmp_path, capsys, parity_run):
    parity_run("gs1", "tensorflow", "float32")
    tolerances = tmp_path / "tolerances.toml"
    shutil.copy(TOLERANCE_PATH, tolerances)
    before = tolerances.read_text()
    args = ["calibrate", "--case", "gs1", "--seeds", "1", "--first-seed", "7", "--tolerances", str(tolerances)]
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["stage", "max", "p99", "median", "ref/f64", "bound", "now", "proposed",
                                           "worst", "at"]
    assert "gs1 seed 7" in out and f"+++ {tolerances} (proposed)" in out
    assert tolerances.read_text() == before  # a dry run writes nothing
    assert main([*args, "--write"]) == 0
    written = tolerances.read_text()
    start, end = marks("cpu", "float32")
    assert written.count(start) == 1 and written.count(end) == 1 and "weight seeds 7." in written
    assert written.split(start)[0] == before.split(start)[0]  # the reviewed part untouched
    assert load_profile("cpu", "float32", path=tolerances).noise_for("decoder.phase") > 0


def test_a_bad_noise_value_is_one_line_naming_the_file_and_key(tmp_path):
    bad = tmp_path / "tolerances.toml"
    bad.write_text(TOLERANCE_PATH.read_text().replace('[noise.cpu.float32]\n', '[noise.cpu.float32]\n"x" = -1\n', 1))
    with pytest.raises(ToleranceError, match=r"tolerances.toml: key 'noise.cpu.float32.\"x\"' must be a finite "
                                             r"number >= 0, got -1$"):
        load_profile("cpu", "float32", path=bad)
