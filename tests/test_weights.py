import numpy as np
import pytest

from parity.config import ForwardConfig
from parity.inputs.weights import (WeightError, digest, init_weights, load_weights, parameter_count,
                            save_weights, validate_weights, weight_specs)


@pytest.mark.parametrize("probe_big, expected", [(False, 2_257_000), (True, 2_340_208)])
def test_upstream_parameter_counts(probe_big, expected):
    cfg = ForwardConfig(N=64, gridsize=2, object_big=True, n_filters_scale=2, probe_big=probe_big)
    assert parameter_count(weight_specs(cfg)) == expected
    assert parameter_count(init_weights(cfg, 0)) == expected


def test_names_and_shapes_default_config():
    specs = weight_specs(ForwardConfig())
    assert specs["encoder.block0.conv0.kernel"] == (3, 3, 4, 64)
    assert specs["encoder.block2.conv1.kernel"] == (3, 3, 256, 256)
    assert specs["decoder_amp.block0.conv0.kernel"] == (3, 3, 256, 128)
    assert specs["decoder_phase.block1.conv1.bias"] == (64,)
    assert specs["decoder_amp.head.conv1.kernel"] == (3, 3, 60, 4)  # features[..., :-4]
    assert not any(".head.up." in k or ".head.conv2" in k for k in specs)
    assert len(specs) == 2 * (6 + 2 * (4 + 1))  # (kernel, bias) per conv


def test_names_and_shapes_probe_big_and_no_pad_object():
    big = weight_specs(ForwardConfig(probe_big=True))
    assert big["decoder_amp.head.up.conv0.kernel"] == (3, 3, 4, 64)  # features[..., -4:]
    assert big["decoder_phase.head.conv2.kernel"] == (3, 3, 64, 4)
    nopad = weight_specs(ForwardConfig(pad_object=False, object_big=False))
    assert "decoder_amp.head.conv1.kernel" not in nopad
    assert nopad["decoder_amp.head.up.conv0.kernel"] == (3, 3, 64, 64)
    assert nopad["decoder_amp.head.conv2.kernel"] == (3, 3, 64, 1)


@pytest.mark.parametrize("N, enc, dec, up", [(128, [32, 64, 128, 256], [256, 128, 64], 32),
                                             (256, [16, 32, 64, 128, 256], [512, 256, 128, 64], 16)])
def test_filters_for_larger_N(N, enc, dec, up):
    specs = weight_specs(ForwardConfig(N=N, probe_big=True))
    assert [specs[f"encoder.block{i}.conv1.bias"][0] for i in range(len(enc))] == enc
    assert [specs[f"decoder_amp.block{i}.conv1.bias"][0] for i in range(len(dec))] == dec
    assert specs["decoder_amp.head.up.conv1.bias"] == (up,)


def test_glorot_uniform_and_zero_bias():
    w = init_weights(ForwardConfig(), seed=3, dtype="float64", scheme="glorot")
    k = w["encoder.block1.conv1.kernel"]  # fan_in = fan_out = 9*128
    limit = np.sqrt(6 / (2 * 9 * 128))
    assert np.abs(k).max() <= limit and np.abs(k).max() > 0.95 * limit
    assert abs(k.std() - limit / np.sqrt(3)) < 0.01 * limit  # uniform(-l, l) std = l/sqrt(3)
    assert all(not v.any() for n, v in w.items() if n.endswith(".bias"))
    # first draw comes from RandomState(3) directly: the stream is the contract
    first = np.random.RandomState(3).uniform(-np.sqrt(6 / (9 * 4 + 9 * 64)), np.sqrt(6 / (9 * 4 + 9 * 64)),
                                             size=(3, 3, 4, 64))
    np.testing.assert_array_equal(w["encoder.block0.conv0.kernel"], first)
    w32 = init_weights(ForwardConfig(), seed=3, scheme="glorot")
    assert w32["encoder.block0.conv0.kernel"].dtype == np.float32
    np.testing.assert_array_equal(w32["encoder.block0.conv0.kernel"], first.astype(np.float32))


def test_save_load_round_trip_and_digest(tmp_path):
    cfg = ForwardConfig()
    w = init_weights(cfg, 0)
    save_weights(tmp_path / "w.npz", w)
    back = load_weights(tmp_path / "w.npz", cfg)
    assert back.keys() == w.keys() and digest(back) == digest(w)
    for k in w:
        np.testing.assert_array_equal(back[k], w[k])
    changed = dict(w)
    changed["decoder_phase.head.conv1.bias"] = w["decoder_phase.head.conv1.bias"].copy()
    changed["decoder_phase.head.conv1.bias"][2] = 1e-7
    assert digest(changed) != digest(w)
    assert digest(init_weights(cfg, 1)) != digest(w)


def test_validation_lists_every_problem_at_once():
    cfg = ForwardConfig()
    w = init_weights(cfg, 0)
    del w["encoder.block0.conv0.bias"], w["decoder_amp.block1.conv0.kernel"]
    w["decoder_amp.head.conv2.kernel"] = np.zeros((3, 3, 64, 4), np.float32)
    w["encoder.block2.conv1.kernel"] = np.zeros((3, 3, 256, 255), np.float32)
    with pytest.raises(WeightError) as info:
        validate_weights(cfg, w)
    msg = str(info.value)
    for needle in ("missing 2", "encoder.block0.conv0.bias", "decoder_amp.block1.conv0.kernel",
                   "extra 1", "decoder_amp.head.conv2.kernel", "mis-shaped 1",
                   "encoder.block2.conv1.kernel: expected (3, 3, 256, 256), got (3, 3, 256, 255)"):
        assert needle in msg


def test_mixed_dtypes_refused():
    cfg = ForwardConfig()
    w = init_weights(cfg, 0)
    w["encoder.block0.conv0.bias"] = w["encoder.block0.conv0.bias"].astype(np.float64)
    with pytest.raises(WeightError, match="float32 or all float64"):
        validate_weights(cfg, w)


def test_corrupt_weight_file(tmp_path):
    bad = tmp_path / "w.npz"
    bad.write_text("garbage")
    with pytest.raises(WeightError, match="not a readable weight NPZ"):
        load_weights(bad)


def test_informative_scheme_gains_and_biases():
    """Kernel std = limit/√3 with variance gain²/fan_in: He (2/fan_in) behind a relu, the first
    conv lifted by 1/0.5² for the contract's input RMS of 1/2, LeCun (1/fan_in) for the amplitude
    head, 1/((2π)²·fan_in) for the phase head; biases U(−0.1, 0.1)."""
    cfg = ForwardConfig(probe_big=True)
    w = init_weights(cfg, seed=5, dtype="float64")
    expected_var = {
        "encoder.block0.conv0.kernel": 2 / (9 * 4) / 0.25,
        "encoder.block2.conv1.kernel": 2 / (9 * 256),
        "decoder_amp.block1.conv0.kernel": 2 / (9 * 128),
        "decoder_phase.head.up.conv1.kernel": 2 / (9 * 64),
        "decoder_amp.head.conv1.kernel": 1 / (9 * 60),
        "decoder_amp.head.conv2.kernel": 1 / (9 * 64),
        "decoder_phase.head.conv1.kernel": 1 / (9 * 60) / (2 * np.pi) ** 2,
    }
    for name, var in expected_var.items():
        k = w[name]
        limit = np.sqrt(3 * var)
        assert np.abs(k).max() <= limit and np.abs(k).max() > 0.9 * limit, name
        if k.size > 1000:
            assert abs(k.std() - np.sqrt(var)) < 0.05 * np.sqrt(var), name
    for name, b in w.items():
        if name.endswith(".bias"):
            assert np.count_nonzero(b) == b.size and np.abs(b).max() <= 0.1, name
    # the stream is the contract: the first kernel is RandomState(5)'s first draw
    lim0 = np.sqrt(3 * expected_var["encoder.block0.conv0.kernel"])
    np.testing.assert_array_equal(w["encoder.block0.conv0.kernel"],
                                  np.random.RandomState(5).uniform(-lim0, lim0, size=(3, 3, 4, 64)))


def test_schemes_are_reproducible_and_distinct():
    cfg = ForwardConfig()
    a, b = init_weights(cfg, 7), init_weights(cfg, 7)
    assert digest(a) == digest(b)
    assert digest(a) != digest(init_weights(cfg, 7, scheme="glorot"))
    with pytest.raises(ValueError, match="weight scheme must be one of"):
        init_weights(cfg, 7, scheme="kaiming")
