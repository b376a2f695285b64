import numpy as np
import pytest

from parity.config import ForwardConfig
from parity.inputs.data import (DataError, digests, effective_probe, group, group_indices,
                         hard_probe_mask, load_scan, make_batch, normalisation_factor)


def test_valid_scan_loads(write_npz, small_scan_arrays):
    scan = load_scan(write_npz(**small_scan_arrays))
    assert scan.n_points == 16 and scan.N == 64 and scan.diffraction.dtype == np.float64
    assert scan.probe.dtype == np.complex128 and not scan.counts_converted


def test_diff3d_alias(write_npz, small_scan_arrays):
    arrays = dict(small_scan_arrays)
    arrays["diff3d"] = arrays.pop("diffraction")
    np.testing.assert_array_equal(load_scan(write_npz(**arrays)).diffraction,
                                  small_scan_arrays["diffraction"].astype(np.float64))


def test_uint16_counts_are_converted_through_float64(write_npz, small_scan_arrays):
    arrays = dict(small_scan_arrays)
    counts = np.full(arrays["diffraction"].shape, 300, dtype=np.uint16)
    counts[0, 0, 0] = 65535  # 65535² overflows uint16; √ must still be exact
    arrays["diffraction"] = counts
    scan = load_scan(write_npz(**arrays))
    assert scan.counts_converted
    assert scan.diffraction[0, 0, 0] == np.sqrt(65535.0)
    assert scan.diffraction[0, 0, 1] == np.sqrt(300.0)
    assert np.all(scan.diffraction ** 2 <= 65535.0 + 1e-6)


def _bad(arrays, **changes):
    out = dict(arrays)
    for key, value in changes.items():
        if value is None:
            out.pop(key)
        else:
            out[key] = value
    return out


BAD_FILES = [
    (lambda a: _bad(a, diffraction=None), "diffraction", "missing"),
    (lambda a: _bad(a, xcoords=None), "xcoords", "missing"),
    (lambda a: _bad(a, probeGuess=None), "probeGuess", "missing"),
    (lambda a: _bad(a, diffraction=a["diffraction"][0]), "diffraction", "must have shape"),
    (lambda a: _bad(a, diffraction=a["diffraction"][:, :, :32]), "diffraction", "must be square"),
    (lambda a: _bad(a, diffraction=a["diffraction"][:0], xcoords=a["xcoords"][:0],
                    ycoords=a["ycoords"][:0]), "diffraction", "empty"),
    (lambda a: _bad(a, probeGuess=a["probeGuess"][:32, :32]), "probeGuess", "must have shape (64, 64)"),
    (lambda a: _bad(a, ycoords=a["ycoords"][:-1]), "ycoords", "has 15 positions"),
    (lambda a: _bad(a, xcoords=a["xcoords"][:, None]), "xcoords", "must have shape (n,)"),
    (lambda a: _bad(a, xcoords=np.where(np.arange(16) == 3, np.nan, a["xcoords"])), "xcoords", "NaN/Inf"),
    (lambda a: _bad(a, diffraction=np.where(np.arange(64) == 5, np.inf, a["diffraction"])),
     "diffraction", "NaN/Inf"),
    (lambda a: _bad(a, probeGuess=np.where(np.eye(64) > 0, np.nan, a["probeGuess"])), "probeGuess", "NaN/Inf"),
    (lambda a: _bad(a, diffraction=-a["diffraction"]), "diffraction", "negative"),
    (lambda a: _bad(a, diffraction=a["diffraction"].astype(np.complex64)), "diffraction", "real numbers"),
    (lambda a: _bad(a, probeGuess=np.zeros((64, 64), np.complex64)), "probeGuess", "all zeros"),
]


@pytest.mark.parametrize("make, key, message", BAD_FILES)
def test_bad_files_name_file_and_key(write_npz, small_scan_arrays, make, key, message):
    path = write_npz(**make(small_scan_arrays))
    with pytest.raises(DataError) as info:
        load_scan(path)
    text = str(info.value)
    assert text.startswith(f"{path}: key '{key}'") and message in text
    assert "\n" not in text


def test_unreadable_and_absent_files(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip file")
    with pytest.raises(DataError, match=f"{junk}: not an NPZ file"):
        load_scan(junk)
    with pytest.raises(DataError, match="no such file"):
        load_scan(tmp_path / "absent.npz")


def test_pattern_size_must_match_config(write_npz, small_scan_arrays):
    scan = load_scan(write_npz(**small_scan_arrays))
    with pytest.raises(DataError, match="config has N=128"):
        make_batch(scan, ForwardConfig(N=128), [0])


def _brute_force_neighbours(x, y, seed, k):
    """Independent oracle: sort (distance², index) tuples in pure Python."""
    d = [((x[j] - x[seed]) ** 2 + (y[j] - y[seed]) ** 2, j) for j in range(len(x)) if j != seed]
    return [j for _, j in sorted(d)[:k]]


def test_grouping_matches_brute_force_and_is_deterministic(write_npz, small_scan_arrays):
    scan = load_scan(write_npz(**small_scan_arrays))
    cfg = ForwardConfig()
    seeds = [0, 5, 10, 15]
    idx = group_indices(scan, cfg, seeds)
    for row, s in zip(idx, seeds):
        assert list(row) == _brute_force_neighbours(scan.xcoords, scan.ycoords, s, 4)
        assert s not in row
    np.testing.assert_array_equal(idx, group_indices(scan, cfg, seeds))


def test_ties_broken_by_index(write_npz, small_scan_arrays):
    arrays = dict(small_scan_arrays)
    # a perfect grid: point 5 of a 4x4 grid has four neighbours at distance 1 -> 1, 4, 6, 9
    gx, gy = np.meshgrid(np.arange(4.0), np.arange(4.0))
    arrays["xcoords"], arrays["ycoords"] = gx.ravel() + 40, gy.ravel() + 40
    scan = load_scan(write_npz(**arrays))
    assert list(group_indices(scan, ForwardConfig(), [5])[0]) == [1, 4, 6, 9]


def test_group_offsets_are_zero_mean_relative_coords(write_npz, small_scan_arrays):
    scan = load_scan(write_npz(**small_scan_arrays))
    idx, amps, centre, rel = group(scan, ForwardConfig(), [0, 7, 12])
    assert rel.shape == (3, 1, 2, 4) and centre.shape == (3, 1, 2, 1) and amps.shape == (3, 64, 64, 4)
    np.testing.assert_allclose(rel.mean(axis=3), 0, atol=1e-12)
    for b in range(3):
        for c in range(4):
            j = idx[b, c]
            assert rel[b, 0, 0, c] == pytest.approx(-(scan.xcoords[j] - scan.xcoords[idx[b]].mean()))
            assert rel[b, 0, 1, c] == pytest.approx(-(scan.ycoords[j] - scan.ycoords[idx[b]].mean()))
            np.testing.assert_array_equal(amps[b, :, :, c], scan.diffraction[j])


def test_gridsize1_groups_are_single_points(write_npz, small_scan_arrays):
    scan = load_scan(write_npz(**small_scan_arrays))
    idx, amps, centre, rel = group(scan, ForwardConfig(gridsize=1, object_big=False), [3, 4])
    assert idx.tolist() == [[3], [4]] and np.all(rel == 0)
    assert centre[0, 0, 0, 0] == scan.xcoords[3]


def test_normalisation_gives_mean_energy_1024(write_npz, small_scan_arrays):
    scan = load_scan(write_npz(**small_scan_arrays))
    for dtype in ("float32", "float64"):
        batch = make_batch(scan, ForwardConfig(), list(range(16)), dtype)
        assert batch.diffraction.dtype == np.dtype(dtype)
        energy = np.sum(batch.diffraction.astype(np.float64) ** 2, axis=(1, 2))
        assert energy.mean() == pytest.approx(1024.0, rel=1e-6 if dtype == "float32" else 1e-12)
    amps = np.ones((2, 4, 4, 1)) * 3.0
    # Σ_hw 9 = 144 per pattern; factor = sqrt(4 / 144) = 1/6 for N=4
    assert normalisation_factor(amps, 4) == pytest.approx(1 / 6)


def test_hard_mask_and_effective_probe():
    mask = hard_probe_mask(64)
    c = np.arange(64) - 31.5
    assert mask.sum() == sum(1 for i in c for j in c if i * i + j * j <= 256)
    assert mask[32, 32] == 1 and mask[0, 0] == 0 and mask[32, 32 + 16] == 0 and mask[32, 32 + 15] == 1
    rng = np.random.RandomState(0)
    probe = rng.normal(size=(64, 64)) + 1j * rng.normal(size=(64, 64))
    for scale in (4.0, 2.5):
        p_eff = effective_probe(probe, ForwardConfig(probe_scale=scale))
        assert np.mean(np.abs(mask * p_eff)) == pytest.approx(1 / scale, rel=1e-12)


def test_digests_are_per_array_and_change_with_content(write_npz, small_scan_arrays):
    scan = load_scan(write_npz(**small_scan_arrays))
    a = make_batch(scan, ForwardConfig(), [0, 1])
    b = make_batch(scan, ForwardConfig(), [0, 2])
    da, db = digests(a), digests(b)
    assert set(da) == {"diffraction", "offsets", "global_offsets", "probe", "group_indices"}
    assert da == digests(make_batch(scan, ForwardConfig(), [0, 1]))
    assert da["diffraction"] != db["diffraction"] and da["probe"] == db["probe"]


def test_batches_share_one_normalisation(write_npz, small_scan_arrays):
    from parity.inputs.data import batches

    scan = load_scan(write_npz(**small_scan_arrays))
    cfg = ForwardConfig()
    whole = make_batch(scan, cfg, list(range(10)), "float64")
    parts = list(batches(scan, cfg, list(range(10)), 4, "float64"))
    assert [p.size for p in parts] == [4, 4, 2]
    assert {p.norm_factor for p in parts} == {whole.norm_factor}
    np.testing.assert_array_equal(np.concatenate([p.diffraction for p in parts]), whole.diffraction)
    np.testing.assert_array_equal(np.concatenate([p.group_indices for p in parts]), whole.group_indices)


@pytest.mark.parametrize("make, key, message", BAD_FILES)
def test_bad_files_through_the_cli_are_one_line_exit_2(write_npz, small_scan_arrays, make, key, message,
                                                       tmp_path, capsys):
    from parity.cli import main

    path = write_npz(**make(small_scan_arrays))
    assert main(["check", "--case", "gs1", "--data", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}: key '{key}'" in err and message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # failed before anything was written
