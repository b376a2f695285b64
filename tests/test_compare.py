import numpy as np
import pytest

from parity.run.compare import compare_stage, compare_traces, relative_error
from parity.run.tolerances import ToleranceError, load_profile


def _trace(**stages):
    return {k.replace("_", "."): v for k, v in stages.items()}


def test_relative_error_and_stats_on_a_hand_made_pair():
    ref = np.zeros((2, 3, 3, 2))
    ref[1, 2, 0, 1] = 4.0
    other = ref.copy()
    other[0, 1, 2, 1] = 0.002  # |Δ| = 0.002, rel = 0.002 / 4 = 5e-4
    s = compare_stage("object.canvas", ref, other, 1e-3)
    assert s.passed and s.rel_error == pytest.approx(5e-4) and s.max_abs == pytest.approx(0.002)
    assert s.mean_abs == pytest.approx(0.002 / ref.size) and s.budget_used == pytest.approx(0.5)
    assert s.worst_at == {"group": 0, "channel": 1, "row": 1, "col": 2}
    assert s.n_over == 0 and s.n_elements == 36
    f = compare_stage("object.canvas", ref, other, 1e-4)
    assert not f.passed and f.n_over == 1 and f.budget_used == pytest.approx(5.0)
    assert "exceeds tolerance" in f.message
    assert relative_error(ref, other) == pytest.approx(5e-4)


def test_missing_shape_dtype_and_nan_rules():
    a = np.ones((1, 2, 2, 1), np.float32)
    assert "not provided by torch (present in tf only)" in compare_stage("x", a, None, 1, "tf", "torch").message
    assert "shape mismatch" in compare_stage("x", a, np.ones((1, 2, 2, 2), np.float32), 1).message
    assert "dtype mismatch" in compare_stage("x", a, a.astype(np.float64), 1).message
    nan = a.copy()
    nan[0, 1, 1, 0] = np.nan
    s = compare_stage("x", a, nan, 1e9, "tf", "torch")
    assert not s.passed and "tf has 0 NaN/Inf, torch has 1" in s.message  # never zeroed out
    both = compare_stage("x", nan, nan.copy(), 1e-12)
    assert both.passed and "identical places" in both.message


def test_first_divergence_follows_forward_order_not_size():
    base = {s: np.ones((1, 4, 4, 1)) for s in ("input.diffraction", "encoder.out", "decoder.amp")}
    other = {k: v.copy() for k, v in base.items()}
    other["decoder.amp"] *= 2.0  # big error downstream
    other["encoder.out"] *= 1.001  # small error upstream
    result = compare_traces(base, other, 1e-6)
    assert [s.stage for s in result.stages] == ["input.diffraction", "encoder.out", "decoder.amp"]
    assert result.first_divergence.stage == "encoder.out" and result.worst.stage == "encoder.out"
    extra = dict(other, **{"debug.extra": np.zeros(1)})
    r2 = compare_traces(base, extra, 1e-6)
    assert r2.stages[-1].stage == "debug.extra" and not r2.stages[-1].passed


def test_tolerance_profiles_and_longest_glob(tmp_path):
    assert load_profile("cpu", "float64").for_stage("object.canvas") == 1e-12
    assert load_profile("cuda", "float32").for_stage("diffraction.scaled") == 1e-5
    path = tmp_path / "tol.toml"
    path.write_text('[agreement.cpu.float32]\n"*" = 1e-5\n"object.*" = 1e-4\n"object.canvas" = 1e-3\n')
    prof = load_profile("cpu", "float32", path=path)
    assert (prof.for_stage("input.offsets"), prof.for_stage("object.trimmed"),
            prof.for_stage("object.canvas")) == (1e-5, 1e-4, 1e-3)
    with pytest.raises(ToleranceError, match="key 'agreement.cuda.float64' missing"):
        load_profile("cuda", "float64", path=path)
    path.write_text('[agreement.cpu.float32]\n"*" = "tight"\n')
    with pytest.raises(ToleranceError, match=r"key 'agreement.cpu.float32.\"\*\"' must be a finite number"):
        load_profile("cpu", "float32", path=path)
    path.write_text("[[[ not toml")
    with pytest.raises(ToleranceError, match="cannot read the tolerance file"):
        load_profile("cpu", "float32", path=path)


def test_norm_metric_sees_the_tensor_not_its_worst_element():
    """metric="norm" (weights after Adam steps) judges ‖Δ‖₂/‖ref‖₂: one element of 10,000 off by
    1e-3 of max|ref| is 1e-3 element-wise but ≈ 1e-5 in norm; every element off by 1e-3 is 1e-3
    either way."""
    ref = np.ones(10_000)
    one = ref.copy()
    one[17] += 1e-3
    assert compare_stage("w", ref, one, 1e-4).rel_error == pytest.approx(1e-3)
    lone = compare_stage("w", ref, one, 1e-4, metric="norm")
    assert lone.passed and lone.rel_error == pytest.approx(1e-5)
    every = compare_stage("w", ref, ref * (1 + 1e-3), 1e-4, metric="norm")
    assert not every.passed and every.rel_error == pytest.approx(1e-3)
    assert "‖Δ‖₂/‖ref‖₂" in every.message and "10000 of 10000 elements over" in every.message
    with pytest.raises(ValueError, match="metric must be one of"):
        compare_stage("w", ref, ref, 1e-4, metric="mean")


def test_a_shape_mismatch_is_also_compared_on_the_common_centre():
    ref = np.zeros((2, 8, 8, 1))
    ref[:, 3:5, 3:5, 0] = 2.0
    ref[:, 0, 0, 0] = 5.0  # outside the candidate's smaller frame: not in the centre comparison
    other = ref[:, 2:6, 2:6, :].copy()
    other[1, 1, 2, 0] += 0.02  # |Δ| = 0.02 against max|ref centre| = 2: 1e-2
    s = compare_stage("object.canvas", ref, other, 1e-3, "tf", "port")
    assert not s.passed and s.message.startswith("shape mismatch: tf (2, 8, 8, 1) vs port (2, 4, 4, 1); on the common centre 4×4")
    assert s.overlap["shape"] == [2, 4, 4, 1] and s.overlap["rel_error"] == pytest.approx(1e-2)
    assert s.overlap["passed"] is False
    odd = compare_stage("x", ref, np.zeros((2, 5, 5, 1)), 1e-3)
    assert odd.overlap is None and "common centre" not in odd.message  # 8 - 5 is odd: no shared centre


def test_a_dtype_mismatch_is_compared_at_the_lower_precision():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(1, 4, 4, 2)) + 1j * rng.normal(size=(1, 4, 4, 2))
    port = ref.astype(np.complex64)
    s = compare_stage("object.patches", ref, port, 1e-6, "tf", "port")
    assert not s.passed  # a stage of the wrong dtype never passes
    assert s.message.startswith("dtype mismatch: tf complex128 vs port complex64; compared at complex64: ")
    assert s.rel_error == 0.0 and "(within the tolerance 1.0e-06)" in s.message  # equal once both are single
    shifted = compare_stage("object.patches", ref, (ref * 1.01).astype(np.complex64), 1e-6)
    assert shifted.rel_error == pytest.approx(0.01, rel=1e-5) and "over the tolerance" in shifted.message


def test_error_quantiles_count_and_the_ulp_floor():
    """Per stage the distribution of |Δ| / max|ref| (p50, p90, p99, max) and the count over the
    tolerance; a difference of a few ulps never fails, whatever the tolerance."""
    ref = np.full((1, 10, 10, 1), 2.0)
    other = ref.copy()
    other.flat[:5] += 2e-3  # 5 of 100 elements off by 1e-3 relative, the rest exact
    s = compare_stage("object.canvas", ref, other, 1e-4)
    assert not s.passed and s.n_over == 5
    assert s.quantiles["p50"] == 0.0 and s.quantiles["p90"] == 0.0
    assert s.quantiles["p99"] == pytest.approx(1e-3) and s.quantiles["max"] == pytest.approx(1e-3)
    one_ulp = np.nextafter(ref, 3.0)
    assert compare_stage("object.canvas", ref, one_ulp, 0.0).passed  # 1 ulp against a zero tolerance
    assert not compare_stage("object.canvas", ref, ref * (1 + 1e-14), 1e-15).passed  # ≈ 45 ulps: over
    assert compare_stage("x", ref.astype(np.float32), np.nextafter(ref.astype(np.float32), np.float32(3)), 0.0).passed


def test_a_tolerance_may_bound_a_quantile_instead_of_the_maximum(tmp_path):
    """`"object.canvas" = { p99 = 1e-6 }`: a few elements (under 1 %) may part by more; the
    maximum is still reported. A malformed rule is one error naming the key."""
    path = tmp_path / "tol.toml"
    path.write_text('[agreement.cpu.float64]\n"*" = 1e-12\n"object.canvas" = { p99 = 1e-6 }\n')
    profile = load_profile("cpu", "float64", path=path)
    assert profile.statistic_for("object.canvas") == "p99" and profile.statistic_for("encoder.out") == "max"
    ref = np.ones((1, 20, 20, 1))
    edge = ref.copy()
    edge[0, 0, :3, 0] += 1e-3  # 3 of 400 elements (0.75 %) part at the border
    trace = lambda a: {"object.canvas": a, "encoder.out": a}  # noqa: E731
    result = compare_traces(trace(ref), trace(edge), profile)
    canvas, encoder = result.stages[:2] if result.stages[0].stage == "object.canvas" else result.stages[::-1]
    assert canvas.passed and canvas.rel_error == pytest.approx(1e-3) and canvas.statistic == "p99"
    assert not encoder.passed and encoder.statistic == "max"
    wide = ref.copy()
    wide[0, :2, :, 0] += 1e-3  # 40 of 400 (10 %): the p99 is over too
    over = compare_stage("object.canvas", ref, wide, 1e-6, statistic="p99")
    assert not over.passed and over.message.startswith("p99 of the relative error")
    path.write_text('[agreement.cpu.float64]\n"*" = { p42 = 1e-6 }\n')
    with pytest.raises(ToleranceError, match=r'agreement.cpu.float64."\*"'):
        load_profile("cpu", "float64", path=path)
