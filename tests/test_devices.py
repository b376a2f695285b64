"""A device per backend (the reference on the CPU, the port on the GPU is the usual setup) and
backends whose framework is not installed. The CUDA side itself needs a GPU machine; the logic
is checked here with the CPU on both sides and with devices named but not used."""

import pytest

from parity.backends import Backend, BackendError, BackendUnavailable, get_backend, register
from parity.inputs.cases import get_case
from parity.run.checks import gradient_checks
from parity.run.backend_run import DeviceUnavailable, backend_devices, require_device
from parity.run.engine import RunRequest, run_case
from parity.run.tolerances import load_profile


def test_candidates_take_the_device_the_reference_stays_on_the_cpu():
    assert backend_devices("tensorflow", ["torch", "numpy"], "cuda") == {
        "tensorflow": "cpu", "torch": "cuda", "numpy": "cpu"}  # numpy is CPU-only
    assert backend_devices("tensorflow", ["torch"], "cuda", ref_device="cuda") == {"tensorflow": "cuda",
                                                                                   "torch": "cuda"}
    assert backend_devices("numpy", ["torch"], "cuda") == {"numpy": "cpu", "torch": "cuda"}
    assert backend_devices("tensorflow", ["torch"]) == {"tensorflow": "cpu", "torch": "cpu"}


def test_a_cpu_only_reference_asked_for_cuda_is_one_line():
    with pytest.raises(BackendError, match="backend 'numpy' supports cpu, not 'cuda'"):
        require_device(backend_devices("numpy", ["torch"], "cpu", ref_device="cuda"))


def test_a_result_says_where_each_side_ran():
    result = run_case(get_case("gs1"), RunRequest(dtype="float64", ref="numpy", candidates=["torch"], use_golden=False,
                                 checkpoints=False))
    assert result.devices == {"numpy": "cpu", "torch": "cpu"} and result.where() == "numpy on cpu, torch on cpu"
    assert result.to_dict()["devices"] == result.devices == result.provenance["devices"]
    assert result.passed


def test_a_missing_framework_is_named_without_importing_it(clean_registry, capsys, tmp_path):
    from parity.cli import main

    ghost = Backend("ghost", "ghost_framework_nowhere", ("cpu",), package="models_numpy", install_hint="pip install it")
    register(ghost)
    assert ghost.missing() == ("backend 'ghost' needs the 'ghost_framework_nowhere' package, which is not "
                               "installed (pip install it)")
    assert get_backend("numpy").missing() is None and get_backend("torch").missing() is None
    with pytest.raises(BackendUnavailable):
        require_device({"ghost": "cpu"})
    assert main(["check", "--ref", "ghost", "--case", "gs1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"parity: error: {ghost.missing()}"]


def test_cuda_asked_for_without_cuda_names_the_port():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceUnavailable, match="CUDA was requested but torch"):
        require_device(backend_devices("numpy", ["torch"], "cuda"))


@pytest.mark.full
def test_a_reference_that_cannot_train_gives_the_port_elsewhere_itself_on_the_cpu():
    """numpy has no gradients: a port on another device is compared with itself on the CPU (the
    models here are built on the CPU; only the devices the check reads are named otherwise)."""
    case = get_case("gs1")
    cfg, weights, batch = case.inputs("float64")
    models = {name: get_backend(name).build(cfg, weights) for name in ("numpy", "torch")}
    results = {"torch": models["torch"].loss_and_gradients(batch)}
    profiles = {name: load_profile("cpu", "float64") for name in models}
    elsewhere = gradient_checks(models, results, batch, profiles, "numpy", ["torch"], weights,
                                devices={"numpy": "cpu", "torch": "cuda"})["torch"]
    assert elsewhere.comparison.ref_name == "torch on cpu" and elsewhere.passed
    assert elsewhere.describe().startswith("gradients torch on cpu vs torch: loss and every gradient agree")
    here = gradient_checks(models, results, batch, profiles, "numpy", ["torch"], weights,
                           devices={"numpy": "cpu", "torch": "cpu"})["torch"]
    assert here.describe() == ("gradients numpy vs torch: not run: the reference numpy computes no gradients and "
                               "torch runs on the CPU (on another device it is compared with itself on the CPU)")


def test_the_port_runs_with_torchs_deterministic_algorithms_and_says_so():
    """configure sets the flag `torch.use_deterministic_algorithms(True)` sets (without importing the
    compiler's configuration that call also sets), as an error, not a warning."""
    torch = pytest.importorskip("torch")
    from models_torch.device import configure

    torch.set_deterministic_debug_mode("default")  # off, as in a fresh process
    try:
        flags = configure("cpu")
        assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
        assert flags["torch_deterministic"] is True
    finally:
        torch.set_deterministic_debug_mode("error")  # as every configured model in this process left it
