import numpy as np
import pytest

from parity.inputs.data import load_scan
from parity.inputs.fixture import (FIXTURE_N128_PATH, FIXTURE_PATH, FixtureSpec, make_fixture, probe_rms_radius,
                            synthetic_probe)


def test_shipped_fixture_is_reproduced_bit_for_bit(tmp_path):
    out = make_fixture(tmp_path / "fly001_small.npz")
    assert out.read_bytes() == FIXTURE_PATH.read_bytes()
    assert (tmp_path / "README.md").read_text() == (FIXTURE_PATH.parent / "README.md").read_text().replace(
        str(FIXTURE_PATH.stat().st_size), str(out.stat().st_size))


def test_shipped_fixture_meets_the_contract():
    assert FIXTURE_PATH.stat().st_size <= 2_000_000
    scan = load_scan(FIXTURE_PATH)
    assert scan.n_points >= 128 and scan.N == 64
    with np.load(FIXTURE_PATH) as raw:
        assert raw["diffraction"].dtype == np.float32
        counts = raw["diffraction"].astype(np.float64) ** 2
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)  # amplitudes are √(integer counts)
    assert 100 < counts.mean() < 116  # fly001's ≈ 108 counts per pixel
    steps = np.diff(scan.xcoords.reshape(16, 16), axis=1)
    assert 1.2 < np.median(steps) < 2.2  # fly001 spacing ~1.6-2 px
    obj = np.abs(scan.object_guess)
    assert obj.std() > 0.05 and np.angle(scan.object_guess).std() > 0.1  # not constant


def test_probe_is_unit_energy_zone_plate_like():
    p = synthetic_probe(FixtureSpec())
    assert np.sum(np.abs(p) ** 2) == pytest.approx(1.0, rel=1e-12)
    pupil = np.abs(np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(p), norm="ortho")))
    inside = pupil[32 - 12: 32 + 13, 32 - 12: 32 + 13]
    assert np.allclose(inside, inside.mean(), rtol=1e-6)  # flat square aperture
    assert pupil.sum() == pytest.approx(inside.sum(), rel=1e-9)  # nothing outside it
    assert np.angle(p).std() > 0.5  # defocus: a non-trivial phase


def test_n128_fixture_is_reproduced_by_its_command(tmp_path):
    from parity.cli import main

    out = tmp_path / FIXTURE_N128_PATH.name
    assert main(["make-fixture", "--N", "128", "--out", str(out)]) == 0
    assert out.read_bytes() == FIXTURE_N128_PATH.read_bytes()
    assert FIXTURE_N128_PATH.stat().st_size <= 2_000_000
    scan = load_scan(FIXTURE_N128_PATH)
    assert scan.N == 128 and scan.n_points == 64


def test_probe_is_about_as_wide_as_fly001s():
    """fly001's probe has an RMS radius of ≈ 11.9 px at N=64 (0.19·N); a probe that fills the
    window would make every pattern see the same object area."""
    for N in (64, 128):
        radius = probe_rms_radius(synthetic_probe(FixtureSpec.for_N(N)))
        assert 0.16 * N < radius < 0.22 * N


def test_patterns_of_distant_positions_differ():
    scan = load_scan(FIXTURE_PATH)
    energy = np.sum(scan.diffraction.astype(np.float64) ** 2, axis=(1, 2))
    assert (energy.max() - energy.min()) / energy.mean() > 0.1  # the object's contrast shows
