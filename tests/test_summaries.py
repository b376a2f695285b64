"""Summaries on tiny arrays whose statistics are computed by hand in the comments."""

import json

import numpy as np
import pytest

from parity.config import ForwardConfig
from parity.goldens.summaries import canvas_stats, diffraction_stats, offset_stats, patch_stats


def test_patch_stats_by_hand():
    # one group, 2x2 pixels, one channel: amplitudes 1, 2, 3, 6 (phase 0 or pi on some)
    patches = np.array([1, -2, 3j, 6], dtype=np.complex128).reshape(1, 2, 2, 1)
    s = patch_stats({"object.patches": patches})
    assert s["global_mean"] == pytest.approx(3.0)  # (1+2+3+6)/4
    # ddof=1: ((−2)² + (−1)² + 0² + 3²) / 3 = 14/3
    assert s["global_std"] == pytest.approx(np.sqrt(14 / 3))
    assert s["var_zero_mean"] == pytest.approx(14 / 4)  # mean of squared deviations from the h,w mean
    assert s["per_patch"] == [pytest.approx({"mean": 3.0, "std": np.sqrt(14 / 3), "min": 1.0, "max": 6.0})]
    assert s["amplitude_range"] == [1.0, 6.0]
    assert s["phase_range"] == pytest.approx([0.0, np.pi])


def test_var_zero_mean_removes_each_patch_mean():
    # two constant patches at different levels: global spread, but zero within each patch
    patches = np.concatenate([np.full((1, 3, 3, 1), 1e-3), np.full((1, 3, 3, 1), 5.0)]).astype(np.complex64)
    s = patch_stats({"object.patches": patches})
    assert s["var_zero_mean"] == pytest.approx(0.0, abs=1e-12) and s["global_std"] > 2
    assert len(s["per_patch"]) == 2 and s["per_patch"][1]["std"] == pytest.approx(0.0)


def test_collapse_is_visible_at_a_glance():
    rng = np.random.RandomState(0)
    healthy = rng.normal(0.002228, 0.003905, size=(4, 8, 8, 4)).astype(np.complex64)
    collapsed = healthy * 1e-9
    h, c = patch_stats({"object.patches": healthy}), patch_stats({"object.patches": collapsed})
    assert h["var_zero_mean"] > 1e-6
    assert c["var_zero_mean"] == pytest.approx(1e-18 * h["var_zero_mean"], rel=1e-4)  # scales as amp²


def test_canvas_stats_by_hand():
    cfg = ForwardConfig(gridsize=1, object_big=False, max_position_jitter=0)  # M = 64
    canvas = np.zeros((2, 64, 64, 1), np.complex128)
    canvas[0, 10, 20, 0] = 2.0  # group 0: one pixel -> centre of mass (10, 20)
    canvas[1, 30, 40, 0] = 1.0j  # group 1: (30, 40), phase pi/2
    s = canvas_stats({"object.canvas": canvas}, cfg)
    assert s["M"] == 64 and s["shape"] == [2, 64, 64, 1]
    assert s["covered_fraction"] == pytest.approx(2 / (2 * 64 * 64))
    assert s["centre_of_mass"] == pytest.approx([20.0, 30.0])  # mean over groups
    assert s["amplitude"]["max"] == 2.0 and s["amplitude"]["mean"] == pytest.approx(3 / (2 * 64 * 64))
    assert s["phase"]["max"] == pytest.approx(np.pi / 2)


def test_offset_stats_by_hand():
    off = np.array([[1.5, -1.5, 0.5, -0.5], [2.0, 2.0, -2.0, -2.0]]).reshape(1, 1, 2, 4)
    s = offset_stats({"input.offsets": off})
    assert s["shape"] == [1, 1, 2, 4] and s["unique_count"] == 6  # ±0.5, ±1.5, ±2
    assert s["axes"]["x"] == {"min": -1.5, "max": 1.5, "mean": 0.0}
    assert s["axes"]["y"] == {"min": -2.0, "max": 2.0, "mean": 0.0}
    assert s["std"] == pytest.approx(np.sqrt((2.25 * 2 + 0.25 * 2 + 4 * 4) / 8))
    assert s["values"] == [[[[1.5, -1.5, 0.5, -0.5], [2.0, 2.0, -2.0, -2.0]]]]
    json.dumps(s)


def test_diffraction_stats_parseval():
    psi = np.zeros((1, 4, 4, 1), np.complex128)
    psi[0, 0, 0, 0] = 2.0  # |FFT_ortho| of a point of value 2 on 4x4: flat 2/4 = 0.5
    amp = np.full((1, 4, 4, 1), 0.5)
    s = diffraction_stats({"probe.illuminated": psi, "diffraction.amplitude": amp,
                           "diffraction.intensity": (3 * amp) ** 2})
    assert s["parseval_residual"] == pytest.approx(0.0, abs=1e-15)  # 16 * 0.25 = 4 = |2|²
    assert s["intensity"]["mean"] == pytest.approx(2.25)
    s2 = diffraction_stats({"probe.illuminated": psi, "diffraction.amplitude": amp * 1.1,
                            "diffraction.intensity": amp})
    assert s2["parseval_residual"] == pytest.approx(0.21)
