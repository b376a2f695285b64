"""The point of the project: the torch port computes what the TensorFlow reference computes.

Per case (the set chosen with --parity-cases), dtype and stage: relative error
max|Δ| / max|reference| within the reviewed tolerance profile (fixtures/tolerances.toml:
float64 ≤ 1e-12, float32 ≤ 1e-5).
"""

import numpy as np
import pytest

from parity.cases import get_case
from parity.compare import compare_traces
from parity.stages import TRAIN_STAGES
from parity.tolerances import load_profile
from tests.backends import backend, case_trace

pytestmark = pytest.mark.parity


def _report(result) -> str:
    return "\n".join(f"{s.stage:24s} rel={s.rel_error} tol={s.tolerance} {s.message}" for s in result.stages)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_parity_torch_matches_tensorflow_every_stage(parity_case, dtype):
    case_name = parity_case
    profile = load_profile("cpu", dtype)
    result = compare_traces(case_trace("tf", case_name, dtype), case_trace("torch", case_name, dtype),
                            profile, "tensorflow", "torch")
    assert [s.stage for s in result.stages] == list(TRAIN_STAGES)
    assert result.passed, f"first divergence: {result.first_divergence.stage}\n{_report(result)}"
    assert profile.for_stage("decoder.amp") == (1e-12 if dtype == "float64" else 1e-5)


def test_parity_infer_path_matches_train_path_across_backends(parity_case):
    cfg, weights, batch = get_case(parity_case).inputs("float64")
    tf_infer = backend("tf").build(cfg, weights).forward_infer(batch)
    torch_infer = backend("torch").build(cfg, weights).forward_infer(batch)
    result = compare_traces(tf_infer, torch_infer, load_profile("cpu", "float64"), "tensorflow", "torch",
                            order=list(tf_infer))
    assert result.passed, _report(result)


def test_parity_harness_sees_a_real_divergence():
    """Guard against a comparison that cannot fail: perturb one torch stage by 1e-9 relative."""
    ref = case_trace("tf", "gs2-big", "float64")
    other = dict(case_trace("torch", "gs2-big", "float64"))
    canvas = other["object.canvas"].copy()
    canvas[3, 40, 41, 0] += 1e-9 * np.abs(canvas).max()
    other["object.canvas"] = canvas
    result = compare_traces(ref, other, load_profile("cpu", "float64"), "tensorflow", "torch")
    assert not result.passed and result.first_divergence.stage == "object.canvas"
    assert result.first_divergence.worst_at == {"group": 3, "channel": 0, "row": 40, "col": 41}


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_parity_cuda_torch_matches_tensorflow(parity_case, dtype):
    case_name = parity_case
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cfg, weights, batch = get_case(case_name).inputs(dtype)
    gpu = backend("torch").build(cfg, weights, device="cuda").forward_train(batch)
    result = compare_traces(case_trace("tf", case_name, dtype), gpu, load_profile("cuda", dtype),
                            "tensorflow", "torch-cuda")
    assert result.passed, _report(result)
    cpu = compare_traces(case_trace("torch", case_name, dtype), gpu, load_profile("cuda", dtype),
                         "torch-cpu", "torch-cuda")
    assert cpu.passed, _report(cpu)


@pytest.mark.parametrize("backend_name", ["tf", "torch"])
def test_parity_large_batch_merges_every_group_on_its_own_canvas(backend_name):
    """B·C ≥ 64 (gs2-big-b16: 16 groups × 4): upstream's layer merged every group of such a
    batch onto one canvas. Here each group's object stages must equal that group run alone."""
    case = get_case("gs2-big-b16")
    cfg, weights, batch = case.inputs("float64")
    assert batch.size * cfg.C >= 64
    model = backend(backend_name).build(cfg, weights)
    full = model.forward_infer(batch)
    for g in (0, 7, batch.size - 1):
        alone = model.forward_infer(batch.select([g]))
        for stage in ("object.canvas", "object.trimmed"):
            scale = np.abs(alone[stage]).max()
            np.testing.assert_allclose(full[stage][g:g + 1], alone[stage], rtol=0, atol=1e-12 * scale,
                                       err_msg=f"{backend_name} {stage} group {g}")
