import math

import pytest

from parity.config import ConfigError, ForwardConfig


def test_defaults_are_ptychopinn_values():
    cfg = ForwardConfig()
    assert (cfg.N, cfg.gridsize, cfg.n_filters_scale, cfg.offset, cfg.max_position_jitter) == (64, 2, 2, 4, 10)
    assert cfg.object_big and cfg.pad_object and not cfg.probe_big and not cfg.probe_mask
    assert cfg.amp_activation == "sigmoid" and cfg.nphotons == 1e9 and cfg.probe_scale == 4.0
    assert (cfg.nll_weight, cfg.mae_weight) == (1.0, 0.0)  # upstream trains on the Poisson NLL alone


def test_derived_properties():
    cfg = ForwardConfig()
    assert cfg.C == 4 and cfg.Co == 4 and cfg.padded_size == 78
    assert ForwardConfig(gridsize=1, object_big=False).padded_size == 74
    assert ForwardConfig(object_big=False).Co == 1
    # s = sqrt(1e9) / 32 = 988.2117688...
    assert cfg.intensity_scale == pytest.approx(988.2117688026186, rel=1e-15)
    assert round(cfg.intensity_scale, 2) == 988.21
    assert cfg.log_scale == pytest.approx(math.log(988.2117688026186))
    assert ForwardConfig(intensity_scale=5.0).intensity_scale == 5.0


def test_replace_rederives_a_derived_scale_but_keeps_a_given_one():
    assert ForwardConfig().replace(nphotons=1e6).intensity_scale == pytest.approx(1000 / 32)
    assert ForwardConfig(intensity_scale=7.0).replace(nphotons=1e6).intensity_scale == 7.0


def test_round_trip_dict():
    for cfg in (ForwardConfig(), ForwardConfig(N=128, gridsize=1, intensity_scale=3.5, amp_activation="swish")):
        again = ForwardConfig.from_dict(cfg.to_dict())
        assert again == cfg and again.intensity_scale_given == cfg.intensity_scale_given
    assert ForwardConfig().to_dict()["intensity_scale"] is None


@pytest.mark.parametrize("changes, knob", [
    ({"N": 96}, "N"),
    ({"N": 64.0}, "N"),
    ({"gridsize": 0}, "gridsize"),
    ({"amp_activation": "tanh"}, "amp_activation"),
    ({"n_filters_scale": 0}, "n_filters_scale"),
    ({"offset": -1}, "offset"),
    ({"nphotons": 0}, "nphotons"),
    ({"nphotons": float("nan")}, "nphotons"),
    ({"probe_scale": -4.0}, "probe_scale"),
    ({"intensity_scale": float("inf")}, "intensity_scale"),
    ({"object_big": 1}, "object_big"),
    ({"nll_weight": -1.0}, "nll_weight"),
    ({"mae_weight": float("nan")}, "mae_weight"),
    ({"mae_weight": True}, "mae_weight"),
])
def test_bad_values_name_the_knob(changes, knob):
    with pytest.raises(ConfigError, match=f"ForwardConfig.{knob}="):
        ForwardConfig(**changes)


def test_odd_padding_is_refused():
    with pytest.raises(ConfigError, match="M-N = 13, which is odd"):
        ForwardConfig(offset=3)


def test_unknown_dict_key():
    with pytest.raises(ConfigError, match="unknown keys"):
        ForwardConfig.from_dict({"N": 64, "gridsize_typo": 2})
