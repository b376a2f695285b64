"""Both backends refuse the same bad inputs with the same clear words (a port that silently
down-casts or runs on a device it does not have breaks parity as surely as a wrong formula)."""

import json

import numpy as np
import pytest

from parity.inputs.cases import get_case
from tests.backends import backend

pytestmark = pytest.mark.parity


@pytest.fixture(params=[pytest.param("tf", marks=pytest.mark.tensorflow), "torch", "numpy"])
def be(request):
    return backend(request.param)


def test_parity_no_silent_down_cast(be):
    cfg, w64, batch64 = get_case("gs1").inputs("float64")
    _, w32, batch32 = get_case("gs1").inputs("float32")
    with pytest.raises(be.package.ModelError, match="batch is float64 but the model is float32"):
        be.build(cfg, w32).forward_train(batch64)
    with pytest.raises(be.package.ModelError, match="dtype='float32' but the weights are float64"):
        be.build(cfg, w64, dtype="float32")


def test_parity_probe_of_the_wrong_shape_or_dtype(be):
    cfg, w32, batch32 = get_case("gs1").inputs("float32")
    with pytest.raises(be.package.ModelError, match=r"probe must be \(64, 64\), got \(32, 32\)"):
        be.build(cfg, w32, probe=batch32.probe[:32, :32])
    with pytest.raises(be.package.ModelError, match="probe is complex128 but the model is float32"):
        be.build(cfg, w32, probe=batch32.probe.astype(np.complex128))


def test_parity_bad_checkpoints(be, tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(be.package.ModelError, match="not a models_"):
        be.package.load(bad)
    cfg, weights, _ = get_case("gs1").inputs("float32")
    good = be.build(cfg, weights).save(tmp_path / "good.ckpt")
    if be.name in ("tf", "numpy"):  # an NPZ: rewrite its metadata and its state in place
        with np.load(good) as npz:
            arrays = {k: npz[k] for k in npz.files}
        for key, value, needle in (("meta", json.dumps({"format": "other/9"}), "checkpoint format 'other/9'"),
                                   ("state/log_scale", np.nan, "'state/log_scale' is not finite")):
            changed = dict(arrays, **{key: np.asarray(value)})
            with open(tmp_path / "changed.ckpt", "wb") as fh:
                np.savez(fh, **changed)
            with pytest.raises(be.package.ModelError, match=needle):
                be.package.load(tmp_path / "changed.ckpt")
    else:
        import torch

        blob = torch.load(good, weights_only=True)
        for change, needle in (({"format": "other/9"}, "checkpoint format 'other/9'"),
                               ({"state_dict": {**blob["state_dict"], "log_scale": torch.tensor(float("nan"))}},
                                "'log_scale' is not finite"),
                               ({"state_dict": {k: v for k, v in blob["state_dict"].items() if k != "log_scale"}},
                                "state_dict does not match the saved config")):
            torch.save({**blob, **change}, tmp_path / "changed.ckpt")
            with pytest.raises(be.package.ModelError, match=needle):
                be.package.load(tmp_path / "changed.ckpt")


def test_parity_unknown_device_and_cuda_without_cuda(be):
    cfg, weights, _ = get_case("gs1").inputs("float32")
    if be.name == "numpy":  # the CPU only, and it says so
        for device in ("tpu", "cuda"):
            with pytest.raises(RuntimeError, match=f"the numpy backend runs on the CPU only, got device '{device}'"):
                be.build(cfg, weights, device=device)
        return
    with pytest.raises(RuntimeError, match="device must be 'cpu' or 'cuda', got 'tpu'"):
        be.build(cfg, weights, device="tpu")
    if be.name == "tf":
        import tensorflow as tf

        has_gpu = bool(tf.config.list_physical_devices("GPU"))
    else:
        import torch

        has_gpu = torch.cuda.is_available()
    if has_gpu:
        pytest.skip("a GPU is present: the CUDA refusal cannot be shown here")
    with pytest.raises(RuntimeError, match="CUDA was requested but"):
        be.build(cfg, weights, device="cuda")


@pytest.mark.parametrize("problem", ["missing", "misshaped"])
def test_parity_checkpoint_with_a_bad_weight_tensor(be, tmp_path, problem):
    """A checkpoint whose weights lack a tensor or carry one of the wrong shape: one error that
    names the file and the tensor, from either backend."""
    cfg, weights, _ = get_case("gs1").inputs("float32")
    good = be.build(cfg, weights).save(tmp_path / "good.ckpt")
    name = "encoder.block1.conv0.kernel"
    if be.name in ("tf", "numpy"):
        with np.load(good) as npz:
            arrays = {k: npz[k] for k in npz.files}
        key = f"weights/{name}"
        if problem == "missing":
            del arrays[key]
        else:
            arrays[key] = arrays[key][:, :, :, :-1]
        with open(tmp_path / "bad.ckpt", "wb") as fh:
            np.savez(fh, **arrays)
    else:
        import torch

        blob = torch.load(good, weights_only=True)
        key = "encoder.blocks.1.convs.0.conv.weight"
        if problem == "missing":
            del blob["state_dict"][key]
        else:
            blob["state_dict"][key] = blob["state_dict"][key][:-1]
        torch.save(blob, tmp_path / "bad.ckpt")
    with pytest.raises((be.package.ModelError, ValueError)) as info:
        be.package.load(tmp_path / "bad.ckpt")
    text = str(info.value)
    assert str(tmp_path / "bad.ckpt") in text and "\n" not in text
    assert (key if be.name == "torch" else name) in text
