"""Both backends against independent oracles (numpy formulas, hand-built arrays, physics laws).

Every test runs once per backend: the TensorFlow reference and the torch port have the same
contract, so they get the same tests.
"""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from models_numpy import physics as oracle
from parity.inputs.cases import case_names, get_case
from parity.config import ForwardConfig
from parity.stages import INFER_STAGES, OBJECT_STAGES, TRAIN_STAGES
from parity.inputs.weights import init_weights, parameter_count
from tests.backends import backend, case_run, case_trace

BACKENDS = [pytest.param("tf", marks=pytest.mark.tensorflow), "torch"]
CASE_NAMES = case_names("default")  # unit tests: the fast set; the parity tests take --parity-cases


@pytest.fixture(params=BACKENDS)
def be(request):
    return backend(request.param)


def _shapes(cfg, B):
    N, C, Co, M = cfg.N, cfg.C, cfg.Co, cfg.padded_size
    img, obj = (B, N, N, C), (B, N, N, Co)
    return {"input.diffraction": img, "input.offsets": (B, 1, 2, C), "scaled_input": img,
            "encoder.out": (B, N // 8, N // 8, 256), "decoder.amp": obj, "decoder.phase": obj,
            "object.patches": obj, "object.canvas": (B, M, M, 1), "object.trimmed": (B, N, N, 1),
            "object.extracted": img, "probe.illuminated": img, "diffraction.amplitude": img,
            "diffraction.scaled": img, "diffraction.intensity": img}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_every_stage_shape_and_dtype(be, case_name, dtype):
    cfg = get_case(case_name).config
    trace = case_trace(be.name, case_name, dtype)
    assert list(trace) == list(TRAIN_STAGES)
    complex_dtype = "complex64" if dtype == "float32" else "complex128"
    for stage, shape in _shapes(cfg, 8).items():
        assert trace[stage].shape == shape, stage
        want = complex_dtype if stage.startswith(("object.", "probe.")) else dtype
        assert trace[stage].dtype.name == want, stage
        assert np.all(np.isfinite(trace[stage])), stage


@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_parameter_count_and_weights_read_back(be, case_name):
    cfg, weights, _ = get_case(case_name).inputs("float32")
    model = be.build(cfg, weights)
    back = model.weights()
    assert parameter_count(back) == parameter_count(weights)
    assert back.keys() == weights.keys()
    for k in weights:
        np.testing.assert_array_equal(back[k], weights[k], err_msg=k)


# -- translation ---------------------------------------------------------------------------

def _translate(be, images, offsets):
    return be.to_numpy(be.physics.translate(be.to_tensor(images), be.to_tensor(offsets)))


def _delta(H=9, W=9, r=4, c=4):
    img = np.zeros((1, H, W, 1))
    img[0, r, c, 0] = 1.0
    return img


def test_translate_integer_moves(be):
    right = _translate(be, _delta(), np.array([1.0, 0.0]).reshape(1, 1, 2, 1))
    assert right[0, 4, 5, 0] == 1.0 and right.sum() == 1.0  # (1, 0): one column right
    down = _translate(be, _delta(), np.array([0.0, 2.0]).reshape(1, 1, 2, 1))
    assert down[0, 6, 4, 0] == 1.0 and down.sum() == 1.0  # (0, 2): two rows down
    gone = _translate(be, _delta(), np.array([-5.0, 0.0]).reshape(1, 1, 2, 1))
    assert not gone.any()  # moved off the edge: zero padding, no wrap-around


def test_translate_fractional_gives_exact_bilinear_weights(be):
    out = _translate(be, _delta(), np.array([0.5, 0.25]).reshape(1, 1, 2, 1))[0, :, :, 0]
    expected = np.zeros((9, 9))
    expected[4, 4], expected[4, 5] = 0.75 * 0.5, 0.75 * 0.5  # rows: 1−0.25 at r, 0.25 at r+1
    expected[5, 4], expected[5, 5] = 0.25 * 0.5, 0.25 * 0.5  # cols: 0.5 each
    np.testing.assert_array_equal(out, expected)


def test_translate_matches_numpy_formula_float64(be):
    rng = np.random.RandomState(5)
    images = rng.normal(size=(3, 20, 20, 4)) + 1j * rng.normal(size=(3, 20, 20, 4))
    offsets = rng.uniform(-6, 6, size=(3, 1, 2, 4))
    offsets[0, 0, :, 0] = [2.0, -3.0]  # an integer shift among the fractional ones
    got = _translate(be, images, offsets)
    want = oracle.translate(images, offsets)
    assert np.max(np.abs(got - want)) / np.max(np.abs(want)) <= 1e-12


# -- merge -----------------------------------------------------------------------------------

def _merge(be, patches, offsets, cfg):
    return be.to_numpy(be.physics.object_canvas(be.to_tensor(patches), be.to_tensor(offsets), cfg))


def test_merge_of_four_centre_patches(be):
    cfg = ForwardConfig()  # N=64, M=78
    patches = np.zeros((1, 64, 64, 4), np.complex128)
    patches[0, 16:48, 16:48, :] = 1.0  # all-ones, confined to the central N/2 window
    offsets = np.array([[2, 2], [-2, 2], [2, -2], [-2, -2]], float).T.reshape(1, 1, 2, 4)
    canvas = _merge(be, patches, offsets, cfg)[0, :, :, 0]
    assert canvas.shape == (78, 78)
    # patch c is placed at −offset_c: its window is rows/cols 7+16−dy .. 7+48−dy (canvas pad 7)
    np.testing.assert_allclose(canvas[39, 39], 4 / 4.001, rtol=1e-14)  # all four cover
    np.testing.assert_allclose(canvas[22, 22], 1 / 1.001, rtol=1e-14)  # only (+2,+2) patch covers
    assert canvas[0, 0] == 0 and canvas[77, 77] == 0 and canvas[39, 3] == 0  # outside every patch
    np.testing.assert_allclose(canvas, oracle.object_canvas(patches, offsets, cfg)[0, :, :, 0], rtol=0, atol=1e-14)


def test_merge_amplifies_border_content_but_stays_finite(be):
    cfg = ForwardConfig(probe_big=True)
    patches = np.zeros((1, 64, 64, 4), np.complex128)
    patches[0, 2, 2, :] = 1.0  # probe_big-style content outside the central window
    offsets = np.zeros((1, 1, 2, 4))
    canvas = _merge(be, patches, offsets, cfg)
    assert np.all(np.isfinite(canvas))
    np.testing.assert_allclose(canvas[0, 9, 9, 0], 4 / 0.001, rtol=1e-12)  # ~1000x per patch


# -- diffraction and scale ---------------------------------------------------------------------

def test_parseval_and_point_object(be):
    rng = np.random.RandomState(1)
    psi = rng.normal(size=(2, 64, 64, 4)) + 1j * rng.normal(size=(2, 64, 64, 4))
    amp = be.to_numpy(be.physics.diffraction_amplitude(be.to_tensor(psi)))
    np.testing.assert_allclose((amp ** 2).sum(axis=(1, 2)), (np.abs(psi) ** 2).sum(axis=(1, 2)), rtol=1e-12)
    point = np.zeros((1, 64, 64, 1), np.complex128)
    point[0, 10, 37, 0] = 3.0 - 4.0j  # |.| = 5
    flat = be.to_numpy(be.physics.diffraction_amplitude(be.to_tensor(point)))
    np.testing.assert_allclose(flat, 5.0 / 64, rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_intensity_scale(be, dtype):
    trace = case_trace(be.name, "gs2-big", dtype)
    s = ForwardConfig().intensity_scale
    assert round(s, 2) == 988.21
    rtol = 1e-6 if dtype == "float32" else 1e-13
    np.testing.assert_allclose(trace["diffraction.scaled"], s * trace["diffraction.amplitude"], rtol=rtol)
    np.testing.assert_allclose(trace["scaled_input"] * s, trace["input.diffraction"], rtol=rtol)
    np.testing.assert_allclose(trace["diffraction.intensity"], trace["diffraction.scaled"] ** 2, rtol=rtol)
    _, _, batch = get_case("gs2-big").inputs(dtype)
    np.testing.assert_allclose(trace["input.diffraction"], batch.diffraction * s, rtol=rtol)


# -- paths, batches, state ----------------------------------------------------------------------

@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_infer_object_stages_equal_train(be, case_name):
    run = case_run(be.name, case_name, "float32")
    infer, train = run.infer, run.train
    assert list(infer) == list(INFER_STAGES)
    for stage in INFER_STAGES:
        np.testing.assert_array_equal(infer[stage], train[stage], err_msg=stage)
    assert set(OBJECT_STAGES) <= set(infer)


def test_groups_do_not_mix_whatever_the_batch_size(be):
    # upstream merged every group of a batch onto one canvas once B·C >= 64
    case = get_case("gs2-big")
    cfg = case.config
    from parity.inputs.data import load_scan, make_batch
    from parity.inputs.fixture import FIXTURE_PATH

    scan = load_scan(FIXTURE_PATH)
    big = make_batch(scan, cfg, np.arange(0, 200, 10), "float64")  # B = 20, B·C = 80
    model = be.build(cfg, init_weights(cfg, 3, "float64"))
    full = model.forward_train(big)
    for b in (0, 7, 19):
        one = model.forward_train(big.select([b]))
        for stage in TRAIN_STAGES:
            np.testing.assert_allclose(one[stage][0], full[stage][b], rtol=0,
                                       atol=1e-12 * max(1.0, np.abs(full[stage]).max()), err_msg=stage)


def test_the_torch_ports_float64_convolution_per_sample_is_the_whole_batchs_bit_for_bit(monkeypatch):
    """models_torch convolves float64 batches on the CPU one sample at a time (a smaller im2col
    buffer): with one thread each sample's output must be exactly what the whole-batch
    convolution gives it, and the port's layers must take that path."""
    backend("torch")  # skipped where torch is not installed
    import torch
    from models_torch import network

    conv = torch.nn.Conv2d(64, 32, 3, padding=1, dtype=torch.float64)
    x = torch.randn(5, 64, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # a test worker's; with more, the threads split each product otherwise
        with torch.no_grad():
            assert torch.equal(network.convolve_per_sample(conv, x), conv(x))
    finally:
        torch.set_num_threads(threads)
    layer = network.Conv3x3(init_weights(get_case("gs2-big").config, 3, "float64"), "encoder.block0.conv1",
                            relu=False, dtype="float64")
    calls, original = [], network.convolve_per_sample
    monkeypatch.setattr(network, "convolve_per_sample", lambda c, t: calls.append(t.shape[0]) or original(c, t))
    channels = layer.conv.in_channels
    with torch.no_grad():
        layer(torch.zeros(4, channels, 8, 8, dtype=torch.float64))
        layer.float()(torch.zeros(4, channels, 8, 8))  # float32: oneDNN's kernel, the whole batch at once
    assert calls == [4]


def test_no_global_state_between_models(be):
    cfg_a, w_a, batch_a = get_case("gs2-big").inputs("float32")
    first = be.build(cfg_a, w_a).forward_train(batch_a)
    cfg_b, w_b, batch_b = get_case("gs1").inputs("float64")
    other = cfg_b.replace(amp_activation="relu", nphotons=1e6)
    be.build(other, w_b).forward_train(batch_b)
    again = be.build(cfg_a, w_a).forward_train(batch_a)
    for stage in TRAIN_STAGES:
        np.testing.assert_array_equal(first[stage], again[stage], err_msg=stage)


@pytest.mark.full
@pytest.mark.processes
def test_save_then_load_in_a_fresh_process_gives_the_same_trace(be, tmp_path):
    cfg, weights, batch = get_case("gs2-big-probebig").inputs("float64")
    # a drifted log_scale must survive the round trip (upstream lost it on save)
    cfg = cfg.replace(intensity_scale=321.5)
    model = be.build(cfg, weights)
    trace = model.forward_train(batch)
    ckpt = model.save(tmp_path / f"model-{be.name}.ckpt")
    np.savez(tmp_path / "trace.npz", **trace)
    script = textwrap.dedent(f"""
        import numpy as np
        from parity.inputs.cases import get_case
        from parity.stages import TRAIN_STAGES
        import {be.package.__name__} as backend
        model = backend.load({str(ckpt)!r})
        assert model.cfg.intensity_scale == 321.5, model.cfg
        _, _, batch = get_case("gs2-big-probebig").inputs("float64")
        trace = model.forward_train(batch)
        ref = np.load({str(tmp_path / 'trace.npz')!r})
        for stage in TRAIN_STAGES:
            assert np.array_equal(trace[stage], ref[stage]), stage
        print("identical", len(TRAIN_STAGES))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "identical 14" in done.stdout


def test_loaded_state_wins_over_config(be, tmp_path):
    """log_scale is state: a model whose state drifted from its config shows it in scaled_input."""
    cfg, weights, batch = get_case("gs1").inputs("float64")
    model = be.build(cfg, weights)
    if be.name == "tf":
        model.log_scale.assign(model.log_scale.numpy() + np.log(2.0))
    else:
        import torch

        with torch.no_grad():  # log_scale is a trainable parameter
            model.log_scale += np.log(2.0)
    trace = model.forward_train(batch)
    np.testing.assert_allclose(trace["scaled_input"] * 2, trace["input.diffraction"] / cfg.intensity_scale, rtol=1e-12)
    back = be.package.load(model.save(tmp_path / "drifted.ckpt"))
    np.testing.assert_array_equal(back.forward_train(batch)["scaled_input"], trace["scaled_input"])


def test_torch_takes_its_thread_share_from_the_environment(monkeypatch):
    """PARITY_NUM_THREADS (set by the plugin for each xdist worker, inherited by the processes a
    test starts) sizes torch's CPU thread pool when a model is configured; a bad value is one line."""
    import torch

    from models_torch.device import DeviceError, configure

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("PARITY_NUM_THREADS", "1")
        assert configure("cpu")["torch_threads"] == torch.get_num_threads() == 1
        monkeypatch.setenv("PARITY_NUM_THREADS", "two")
        with pytest.raises(DeviceError, match="PARITY_NUM_THREADS must be a positive integer, got 'two'"):
            configure("cpu")
    finally:
        torch.set_num_threads(before)
