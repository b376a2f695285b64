"""The point of the project: the torch port computes what the TensorFlow reference computes.

Per case (--parity-cases), dtype (--parity-dtype) and stage, the port on --parity-device, the
reference (--parity-ref: tensorflow, or numpy where TensorFlow is not installed) on
--parity-ref-device; the id's last part says where each side ran. Relative error
max|Δ| / max|reference| within the reviewed tolerance profile (fixtures/tolerances.toml:
float64 ≤ 1e-12, float32 ≤ 1e-5). Runs come from the plugin's per-process cache.
"""

import numpy as np
import pytest

from parity.inputs.cases import case_names, get_case
from parity.run.compare import compare_traces
from parity.stages import INFER_STAGES, TRAIN_STAGES
from parity.run.tolerances import load_profile

pytestmark = pytest.mark.parity


def _report(result) -> str:
    return "\n".join(f"{s.stage:24s} rel={s.rel_error} tol={s.tolerance} {s.message}" for s in result.stages)


@pytest.mark.parity_first  # the gate's cheapest, most discriminating check: each case starts with it
def test_parity_torch_matches_reference_every_stage(parity_case, parity_dtype, parity_sides, parity_record):
    """Judged by the route `parity check` takes (its pipeline's forward check, the profile of the
    port's device), on this process's cached runs."""
    record = parity_record(parity_case, parity_dtype)
    assert record.devices == {parity_sides.ref: parity_sides.ref_device, "torch": parity_sides.port_device}
    result = record.comparisons["torch"]
    assert [s.stage for s in result.stages] == list(TRAIN_STAGES)
    assert record.passed, f"{parity_sides}: {record.report()}\n{_report(result)}"


@pytest.mark.parametrize("case", case_names("extended"))
def test_parity_extended_case_forward_float64(case, parity_sides, parity_record):
    """Every config branch in the gate: one float64 forward comparison of each extended case (probe
    mask, no object padding, N=128, the other activations, gridsize 3, ...), through the pipeline's
    forward check. The full tier runs every check on them (--parity-cases all)."""
    record = parity_record(case, "float64")
    result = record.comparisons["torch"]
    assert [s.stage for s in result.stages] == list(TRAIN_STAGES)
    assert record.passed, f"{parity_sides}: {record.report()}\n{_report(result)}"


def test_parity_numpy_matches_tensorflow_every_stage(parity_case, parity_run):
    """The framework-free third opinion (models_numpy) computes what the reference computes, network
    included, at every stage (float64, CPU: the tolerance of 1e-12)."""
    ref, third = parity_run(parity_case, "tensorflow", "float64", "cpu"), parity_run(parity_case, "numpy", "float64", "cpu")
    result = compare_traces(ref.train, third.train, load_profile("cpu", "float64"), "tensorflow", "numpy")
    assert [s.stage for s in result.stages] == list(TRAIN_STAGES)
    assert result.passed, f"first divergence: {result.first_divergence.stage}\n{_report(result)}"


def test_parity_infer_path_matches_train_path_across_backends(parity_case, parity_dtype, parity_sides, parity_run,
                                                               parity_device_name):
    ref, port = parity_run(parity_case, parity_sides.ref, parity_dtype), parity_run(parity_case, "torch", parity_dtype)
    result = compare_traces(ref.infer, port.infer, load_profile(parity_device_name, parity_dtype),
                            ref.label, port.label, order=list(INFER_STAGES))
    assert result.passed, _report(result)
    for run in (ref, port):  # one implementation of the object stages serves both paths
        for stage in INFER_STAGES:
            np.testing.assert_array_equal(run.infer[stage], run.train[stage], err_msg=f"{run.label} {stage}")


@pytest.mark.parametrize("case", ["gs2-big"])  # the id names the case: it runs with gs2-big's tests, on its runs
def test_parity_harness_sees_a_real_divergence(case, parity_run, parity_ref):
    """Guard against a comparison that cannot fail: perturb one torch stage by 1e-9 relative."""
    ref = parity_run(case, parity_ref, "float64", "cpu").train
    other = dict(parity_run(case, "torch", "float64", "cpu").train)
    canvas = other["object.canvas"].copy()
    canvas[3, 40, 41, 0] += 1e-9 * np.abs(canvas).max()
    other["object.canvas"] = canvas
    result = compare_traces(ref, other, load_profile("cpu", "float64"), parity_ref, "torch")
    assert not result.passed and result.first_divergence.stage == "object.canvas"
    assert result.first_divergence.worst_at == {"group": 3, "channel": 0, "row": 40, "col": 41}


@pytest.mark.cuda
def test_parity_cuda_torch_matches_reference_and_torch_cpu(parity_case, parity_dtype, parity_sides, parity_run):
    gpu = parity_run(parity_case, "torch", parity_dtype, "cuda").train
    profile = load_profile("cuda", parity_dtype)
    ref = parity_run(parity_case, parity_sides.ref, parity_dtype)  # on --parity-ref-device
    result = compare_traces(ref.train, gpu, profile, ref.label, "torch-cuda")
    assert result.passed, _report(result)
    cpu = compare_traces(parity_run(parity_case, "torch", parity_dtype, "cpu").train, gpu, profile,
                         "torch-cpu", "torch-cuda")
    assert cpu.passed, _report(cpu)


@pytest.mark.parametrize("backend_name", ["tensorflow", "torch"], ids=["gs2-big-b16-tensorflow", "gs2-big-b16-torch"])
def test_parity_large_batch_merges_every_group_on_its_own_canvas(backend_name, parity_run):
    """B·C ≥ 64 (gs2-big-b16: 16 groups × 4): upstream's layer merged every group of such a
    batch onto one canvas. Here each group's object stages must equal that group run alone (the
    case's CPU runs, shared with its forward test: the training path, whose object stages are the
    inference path's)."""
    case = get_case("gs2-big-b16")
    cfg, _, batch = case.inputs("float64")
    assert batch.size * cfg.C >= 64
    run = parity_run(case.name, backend_name, "float64", "cpu")
    model, full = run.model, run.train
    for g in (0, 7, batch.size - 1):
        alone = model.forward_train(batch.select([g]))
        for stage in ("object.canvas", "object.trimmed"):
            scale = np.abs(alone[stage]).max()
            np.testing.assert_allclose(full[stage][g:g + 1], alone[stage], rtol=0, atol=1e-12 * scale,
                                       err_msg=f"{backend_name} {stage} group {g}")
