"""`parity make-fixture`: the shipped fly001-format fixture, generated reproducibly.

Synthetic object (smooth amplitude and phase), a zone-plate-like probe (square pupil with a
defocus phase, unit energy) about as wide as fly001's real probe, fly-scan raster positions with
small jitter at fly001's spacing, Poisson counts at fly001's level (mean ≈ 108 counts per pixel),
stored as float32 amplitude. The NPZ is written with fixed zip timestamps so that a re-run
reproduces it bit for bit.

Why the probe and the object look as they do: a parity case can only see an input bug (a port
that reads the wrong pattern of a group, or the channels in another order) when the patterns of
different scan positions differ. With a probe that fills the whole window, every pattern averages
the same object area and they all look alike; fly001's real probe has an RMS radius of ≈ 12 px
(93 % of its energy within r < 16 px at N = 64), and the object has real contrast.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models_numpy import physics as oracle
from parity.resources import FIXTURES_ROOT

FIXTURE_DIR = FIXTURES_ROOT / "fly001"
FIXTURE_PATH = FIXTURE_DIR / "fly001_small.npz"
# The N=128 cases need 128×128 patterns: a second, smaller scan (`parity make-fixture --N 128`).
FIXTURE_N128_PATH = FIXTURE_DIR / "fly001_small_n128.npz"


@dataclass(frozen=True)
class FixtureSpec:
    N: int = 64
    rows: int = 16
    cols: int = 16
    spacing: float = 1.8  # px between points; fly001: ~165 px span / sqrt(10,304) points ≈ 1.63
    origin: float = 33.0  # fly001's scan starts at x, y ≈ 33 px
    jitter_along: float = 0.25  # px, fly-scan motion along a row
    jitter_across: float = 0.05  # px, row-to-row wobble
    object_size: int = 128
    mean_counts: float = 108.0  # fly001's mean counts per pixel
    # radians of quadratic pupil phase at the pupil edge: 7.5 gives an RMS probe radius of
    # ≈ 11.6 px at N=64, fly001's real probe has ≈ 11.9 px
    defocus: float = 7.5
    pupil_half_width: int = 12  # px half-width of the square pupil in Fourier space
    seed: int = 1001

    @property
    def object_margin(self) -> int:
        """Object array index = scan pixel + margin: large enough that every N×N window (and
        its one-pixel bilinear border) lies inside the object."""
        return max(16, self.N // 2 + 4 - int(self.origin))

    @classmethod
    def for_N(cls, N: int) -> "FixtureSpec":
        """The shipped spec for detector size N: 16×16 points at N=64; at N=128 an 8×8 scan
        (enough for every N=128 case, under 2 MB) on an object large enough for its windows."""
        if N == 64:
            return cls()
        if N == 128:
            return cls(N=128, rows=8, cols=8, object_size=192)
        raise ValueError(f"no fixture spec for N={N}; use 64 or 128")


def synthetic_object(spec: FixtureSpec) -> np.ndarray:
    """Smooth complex object: amplitude in ≈[0.35, 1.0], phase in [−1, 1] rad, one blob."""
    n = spec.object_size
    y, x = np.mgrid[0:n, 0:n] / n
    amp = 0.65 + 0.3 * np.sin(2 * np.pi * 2.3 * x) * np.cos(2 * np.pi * 1.7 * y)
    amp += 0.05 * np.exp(-((x - 0.45) ** 2 + (y - 0.4) ** 2) / 0.01)
    phase = 0.8 * np.sin(2 * np.pi * (1.1 * x + 0.6 * y)) + 0.2 * np.cos(2 * np.pi * 3.1 * y)
    return amp * np.exp(1j * phase)


def synthetic_probe(spec: FixtureSpec) -> np.ndarray:
    """Zone-plate-like probe: inverse FFT of a square pupil with a defocus phase; Σ|P|² = 1."""
    N = spec.N
    k = np.arange(N) - N // 2
    ky, kx = np.meshgrid(k, k, indexing="ij")
    pupil = ((np.abs(kx) <= spec.pupil_half_width) & (np.abs(ky) <= spec.pupil_half_width))
    rho2 = (kx ** 2 + ky ** 2) / spec.pupil_half_width ** 2
    field = pupil * np.exp(1j * spec.defocus * rho2)
    probe = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(field), norm="ortho"))
    return probe / np.sqrt(np.sum(np.abs(probe) ** 2))


def scan_positions(spec: FixtureSpec, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """Row-major raster (fly scan: continuous motion along x), jittered; pixels, x = column."""
    r, c = np.mgrid[0:spec.rows, 0:spec.cols]
    x = spec.origin + c * spec.spacing + rng.normal(0, spec.jitter_along, r.shape)
    y = spec.origin + r * spec.spacing + rng.normal(0, spec.jitter_across, r.shape)
    return x.ravel(), y.ravel()


def simulate(spec: FixtureSpec = FixtureSpec(), probe: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Simulate the scan; `probe` (N×N complex) replaces the synthetic probe when given."""
    rng = np.random.RandomState(spec.seed)
    obj = synthetic_object(spec)
    probe = synthetic_probe(spec) if probe is None else np.asarray(probe, dtype=np.complex128)
    x, y = scan_positions(spec, rng)
    n, N, half = x.size, spec.N, spec.N // 2
    # Cut each patch with the exact sub-pixel shift: translate the object so that (x, y) lands
    # on the centre of an N×N window (the oracle's bilinear translation, content moves by +off).
    patches = np.empty((n, N, N), dtype=np.complex128)
    for i in range(n):
        ix, iy = int(np.floor(x[i])), int(np.floor(y[i]))
        oy, ox = iy + spec.object_margin, ix + spec.object_margin  # scan pixel -> object array index
        if oy + half + 1 > obj.shape[0] or ox + half + 1 > obj.shape[1]:
            raise ValueError(f"FixtureSpec: object_size={spec.object_size} is too small for this scan at N={N}")
        window = obj[oy - half - 1: oy + half + 1, ox - half - 1: ox + half + 1]
        shift = np.array([ix - x[i], iy - y[i]]).reshape(1, 1, 2, 1)
        moved = oracle.translate(window[None, :, :, None], shift)[0, :, :, 0]
        patches[i] = moved[1:-1, 1:-1]
    psi = patches * probe[None]
    intensity = np.abs(np.fft.fftshift(np.fft.fft2(psi, norm="ortho"), axes=(1, 2))) ** 2
    intensity *= spec.mean_counts / intensity.mean()
    counts = rng.poisson(intensity)
    return {
        "diffraction": np.sqrt(counts.astype(np.float64)).astype(np.float32),
        "xcoords": x.astype(np.float64),
        "ycoords": y.astype(np.float64),
        "probeGuess": probe.astype(np.complex64),
        "objectGuess": obj.astype(np.complex64),
        "scan_index": np.arange(n, dtype=np.int64),
    }


def write_npz_reproducibly(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like np.savez_compressed, but with fixed zip timestamps (np.savez stamps the clock), and
    atomic (built in memory, then renamed into place)."""
    from parity.files import write_atomic

    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=9)
    write_atomic(path, zipped.getvalue())


README_TEMPLATE = """# fly001-format fixture (`{name}`)

Generated by this project, not measured: `parity make-fixture` writes this file and this README.
Re-running the command reproduces the NPZ bit for bit (tested in `tests/test_fixture.py`).

How it was made (`parity/inputs/fixture.py`, spec `{spec}`):
- **Object**: synthetic {osize}×{osize} complex field, smooth sinusoidal amplitude in ≈[0.35, 1.0]
  with one Gaussian bump, smooth phase in ≈[−1, 1] rad (stored as `objectGuess`).
- **Probe**: zone-plate-like: inverse orthonormal FFT of a square pupil (half-width
  {pupil} px in Fourier space) with a defocus phase of {defocus} rad at the pupil edge, normalised to unit
  energy Σ|P|² = 1, {N}×{N} (stored as `probeGuess`); RMS radius {probe_rms:.1f} px (fly001's real
  probe: ≈ 11.9 px at N = 64, i.e. 0.19·N), so patterns of different positions see different object areas.
- **Positions**: fly-scan raster of {rows}×{cols} = {n} points, row-major, spacing {spacing} px
  (fly001: ≈165 px span over 10,304 points ≈ 1.6 px), starting at {origin} px like fly001, with Gaussian
  jitter σ = {ja} px along the rows and {jc} px across; x = column, y = row (`xcoords`, `ycoords`).
- **Diffraction**: ψ = P · O(bilinear sub-pixel patch at each position); I = |fftshift(FFT_ortho ψ)|²
  scaled to a mean of {mc} counts per pixel (fly001's level); Poisson counts drawn from
  `numpy.random.RandomState({seed})` (after the jitter draws); stored as float32 amplitude
  √counts under `diffraction` (shape {shape}).

Measured on the written file: mean counts per pixel {mean_counts:.2f}; x ∈ [{xmin:.2f}, {xmax:.2f}] px,
y ∈ [{ymin:.2f}, {ymax:.2f}] px; {size} bytes.
"""


def probe_rms_radius(probe: np.ndarray) -> float:
    """RMS radius in pixels of |P|² about the window centre (index − N/2 + 0.5)."""
    intensity = np.abs(probe) ** 2
    c = np.arange(probe.shape[0]) - probe.shape[0] / 2 + 0.5
    r2 = c[:, None] ** 2 + c[None, :] ** 2
    return float(np.sqrt(np.sum(intensity * r2) / np.sum(intensity)))


def make_fixture(out: Path = FIXTURE_PATH, spec: FixtureSpec = FixtureSpec(),
                 probe_path: Path | None = None) -> Path:
    """Write the fixture NPZ and its README. With `probe_path` (an NPZ with key probeGuess),
    simulate with that probe instead: for manual `--data` checks, never for the shipped file."""
    from parity.files import write_atomic

    if probe_path is not None and is_shipped(out):
        from parity.errors import UsageError

        raise UsageError(f"--probe {probe_path}: a fixture made with another probe is for manual --data checks "
                         f"and never replaces the shipped {out}; name where to write it with --out FILE.npz")
    probe = None
    if probe_path is not None:
        from parity.inputs.npz import load_probe

        probe = load_probe(probe_path, spec.N)  # numeric, (N, N), finite, not all zeros
    arrays = simulate(spec, probe)
    write_npz_reproducibly(out, arrays)
    d = arrays["diffraction"].astype(np.float64)
    readme = README_TEMPLATE.format(
        name=out.name, spec=spec, osize=spec.object_size, pupil=spec.pupil_half_width, defocus=spec.defocus,
        N=spec.N, rows=spec.rows, cols=spec.cols, n=spec.rows * spec.cols, spacing=spec.spacing,
        origin=spec.origin, ja=spec.jitter_along, jc=spec.jitter_across, mc=spec.mean_counts,
        seed=spec.seed, shape=d.shape, probe_rms=probe_rms_radius(arrays["probeGuess"]), mean_counts=float(np.mean(d ** 2)),
        xmin=arrays["xcoords"].min(), xmax=arrays["xcoords"].max(),
        ymin=arrays["ycoords"].min(), ymax=arrays["ycoords"].max(), size=out.stat().st_size)
    if probe_path is not None:
        readme = readme.replace("- **Probe**: zone-plate-like", f"- **Probe**: taken from `{probe_path}` "
                                "(key probeGuess), NOT the synthetic one. The synthetic would be: zone-plate-like")
    write_atomic(readme_path(out, probe_path), readme)
    return out


def is_shipped(path: Path) -> bool:
    """True for the shipped fixtures' paths (or their README)."""
    shipped = {FIXTURE_PATH, FIXTURE_N128_PATH, FIXTURE_DIR / "README.md"}
    return Path(path).resolve() in {p.resolve() for p in shipped}


def readme_path(out: Path, probe_path: Path | None = None) -> Path:
    """README.md beside the shipped-name fixture; `<stem>.README.md` beside any other file."""
    if probe_path is None and out.name == FIXTURE_PATH.name:
        return out.parent / "README.md"
    return out.parent / f"{out.stem}.README.md"
