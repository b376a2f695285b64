"""The fly001 NPZ contract (docs/design.md §3): loading, validation, grouping, normalisation, batches.

Everything here is plain numpy. The arrays a backend sees come out of `make_batch` in the
canonical layout of docs/design.md §2: diffraction (B, N, N, C), offsets (B, 1, 2, C) with axis 2 =
[x, y] = [column, row].
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from parity.config import ForwardConfig
from parity.inputs.npz import DataError, _need_finite, _need_real_numeric, _open_npz, _read_array

DIFFRACTION_KEYS = ("diffraction", "diff3d")  # diff3d is the older upstream name
REQUIRED_KEYS = ("xcoords", "ycoords", "probeGuess")


@dataclass(frozen=True)
class ScanData:
    """One validated scan: amplitudes (n, N, N) float64, positions in pixels, the raw probe."""

    path: str
    diffraction: np.ndarray
    xcoords: np.ndarray
    ycoords: np.ndarray
    probe: np.ndarray
    object_guess: Optional[np.ndarray] = None
    scan_index: Optional[np.ndarray] = None
    counts_converted: bool = False  # True when the file held integer photon counts

    @property
    def n_points(self) -> int:
        return self.diffraction.shape[0]

    @property
    def N(self) -> int:
        return self.diffraction.shape[1]


@dataclass(frozen=True)
class Batch:
    """What a backend needs besides the weights, in the canonical layout.

    diffraction: (B, N, N, C) normalised amplitude X; offsets: (B, 1, 2, C) coords_relative;
    global_offsets: (B, 1, 2, 1) group centres; probe: (N, N) complex P_eff;
    group_indices: (B, C) scan-point indices of each group.
    """

    diffraction: np.ndarray
    offsets: np.ndarray
    global_offsets: np.ndarray
    probe: np.ndarray
    group_indices: np.ndarray
    norm_factor: float
    source: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def dtype(self) -> str:
        return str(self.diffraction.dtype)

    @property
    def size(self) -> int:
        return self.diffraction.shape[0]

    def select(self, rows: slice | Sequence[int]) -> "Batch":
        """A sub-batch of the given groups (same normalisation and probe)."""
        return Batch(self.diffraction[rows], self.offsets[rows], self.global_offsets[rows],
                     self.probe, self.group_indices[rows], self.norm_factor, self.source,
                     dict(self.meta))


def batch_problem(batch: Batch, cfg: ForwardConfig, dtype: str) -> Optional[str]:
    """Why a model of `cfg` in `dtype` cannot run `batch` (None when it can). Shared by both
    backends so that they refuse the same inputs with the same words."""
    if batch.diffraction.dtype.name != dtype:
        return (f"batch is {batch.diffraction.dtype} but the model is {dtype}; "
                f"build both in one dtype (no silent down-casts)")
    B = batch.diffraction.shape[0]
    want = (B, cfg.N, cfg.N, cfg.C)
    if batch.diffraction.shape != want:
        return f"batch.diffraction must be {want}, got {batch.diffraction.shape}"
    if batch.offsets.shape != (B, 1, 2, cfg.C):
        return f"batch.offsets must be {(B, 1, 2, cfg.C)}, got {batch.offsets.shape}"
    return None


# -- loading ----------------------------------------------------------------------------------

def load_scan(path: str | Path) -> ScanData:
    """Read and validate a fly001-format NPZ. Every problem is a `DataError` naming file and key."""
    path = Path(path)
    with _open_npz(path) as npz:
        keys = set(npz.files)

        def read(key: str) -> np.ndarray:
            return _read_array(npz, path, key)

        dkey = next((k for k in DIFFRACTION_KEYS if k in keys), None)
        if dkey is None:
            raise DataError(path, "diffraction", f"missing (file has keys {sorted(keys)})")
        for key in REQUIRED_KEYS:
            if key not in keys:
                raise DataError(path, key, f"missing (file has keys {sorted(keys)})")
        raw = read(dkey)
        xcoords, ycoords, probe = read("xcoords"), read("ycoords"), read("probeGuess")
        object_guess = read("objectGuess") if "objectGuess" in keys else None
        scan_index = read("scan_index") if "scan_index" in keys else None

    diffraction, converted = _diffraction_amplitude(path, dkey, raw)
    n, N = diffraction.shape[0], diffraction.shape[1]
    coords = []
    for key, arr in (("xcoords", xcoords), ("ycoords", ycoords)):
        _need_real_numeric(path, key, arr)
        if arr.ndim != 1:
            raise DataError(path, key, f"must have shape (n,), got {arr.shape}")
        if arr.shape[0] != n:
            raise DataError(path, key, f"has {arr.shape[0]} positions but '{dkey}' has {n} patterns")
        arr = arr.astype(np.float64)
        _need_finite(path, key, arr)
        coords.append(arr)
    if not (np.issubdtype(probe.dtype, np.number) and not np.issubdtype(probe.dtype, np.bool_)):
        raise DataError(path, "probeGuess", f"must be numeric (complex), got dtype {probe.dtype}")
    if probe.shape != (N, N):
        raise DataError(path, "probeGuess",
                        f"must have shape ({N}, {N}) to match the patterns, got {probe.shape}")
    probe = probe.astype(np.complex128)
    _need_finite(path, "probeGuess", probe)
    if not np.any(probe):
        raise DataError(path, "probeGuess", "is all zeros")
    if object_guess is not None:
        if object_guess.ndim != 2:
            raise DataError(path, "objectGuess", f"must be 2-D, got shape {object_guess.shape}")
        object_guess = object_guess.astype(np.complex128)
        _need_finite(path, "objectGuess", object_guess)
    if scan_index is not None and scan_index.shape != (n,):
        raise DataError(path, "scan_index", f"must have shape ({n},), got {scan_index.shape}")
    return ScanData(str(path), diffraction, coords[0], coords[1], probe, object_guess,
                    scan_index, converted)


def _diffraction_amplitude(path: Path, key: str, raw: np.ndarray) -> tuple[np.ndarray, bool]:
    _need_real_numeric(path, key, raw)
    if raw.ndim != 3:
        raise DataError(path, key, f"must have shape (n, N, N), got {raw.shape}")
    if raw.shape[0] == 0:
        raise DataError(path, key, "is empty (0 patterns)")
    if raw.shape[1] != raw.shape[2]:
        raise DataError(path, key, f"patterns must be square, got {raw.shape[1]}x{raw.shape[2]}")
    converted = bool(np.issubdtype(raw.dtype, np.integer))
    # Integer data are raw photon counts. Convert to float64 *before* the square root: squaring
    # or rooting a uint16 in its own dtype overflows silently (a real upstream bug).
    values = raw.astype(np.float64)
    _need_finite(path, key, values)
    if np.any(values < 0):
        raise DataError(path, key, f"has {int(np.sum(values < 0))} negative values")
    if not np.any(values):
        raise DataError(path, key, "is all zeros (no photons: nothing to normalise)")
    return (np.sqrt(values) if converted else values), converted


# -- grouping and normalisation ---------------------------------------------------------------

def group_indices(scan: ScanData, cfg: ForwardConfig, seeds: Sequence[int]) -> np.ndarray:
    """(B, C) scan indices of each group.

    gridsize 1: each seed is its own group. gridsize > 1: the C nearest neighbours of the seed,
    the seed itself excluded, ordered by (squared distance, index) — deterministic.
    """
    seeds = np.asarray(seeds, dtype=np.int64)
    if seeds.ndim != 1 or seeds.size == 0:
        raise ValueError("seeds must be a non-empty 1-D sequence of scan indices")
    if seeds.min() < 0 or seeds.max() >= scan.n_points:
        raise ValueError(f"seed indices must lie in [0, {scan.n_points}), got "
                         f"[{seeds.min()}, {seeds.max()}]")
    if cfg.C == 1:
        return seeds[:, None].copy()
    if scan.n_points - 1 < cfg.C:
        raise ValueError(f"{scan.path}: gridsize {cfg.gridsize} needs at least {cfg.C + 1} scan "
                         f"points, the file has {scan.n_points}")
    dx = scan.xcoords[seeds, None] - scan.xcoords[None, :]
    dy = scan.ycoords[seeds, None] - scan.ycoords[None, :]
    d2 = dx * dx + dy * dy
    d2[np.arange(seeds.size), seeds] = np.inf  # exclude the seed itself
    order = np.argsort(d2, axis=1, kind="stable")  # stable sort: ties broken by index
    return order[:, : cfg.C]


def group(scan: ScanData, cfg: ForwardConfig, seeds: Sequence[int]):
    """Group the scan: returns (indices (B,C), amplitudes (B,N,N,C), coords_offsets (B,1,2,1),
    coords_relative (B,1,2,C)), all float64. coords_relative = −(coords − group mean)."""
    if scan.N != cfg.N:
        raise DataError(scan.path, "diffraction",
                        f"patterns are {scan.N}x{scan.N} but the config has N={cfg.N}")
    idx = group_indices(scan, cfg, seeds)
    amps = np.transpose(scan.diffraction[idx], (0, 2, 3, 1))  # (B,C,N,N) -> (B,N,N,C)
    coords = np.stack([scan.xcoords[idx], scan.ycoords[idx]], axis=1)[:, None]  # (B,1,2,C)
    centre = coords.mean(axis=3, keepdims=True)
    return idx, amps, centre, -(coords - centre)


def normalisation_factor(amps: np.ndarray, N: int) -> float:
    """sqrt((N/2)² / mean over patterns of Σ_hw amp²), in float64 over the grouped set."""
    amps = np.asarray(amps, dtype=np.float64)
    energy = np.sum(amps * amps, axis=(1, 2))  # (B, C): per-pattern energy
    mean = float(np.mean(energy))
    if mean <= 0:
        raise ValueError("the grouped diffraction is all zeros; it cannot be normalised")
    return float(np.sqrt((N / 2) ** 2 / mean))


def hard_probe_mask(N: int) -> np.ndarray:
    """M_hard: 1 on the disk of radius N/4 over centred pixel coordinates (index − N/2 + 0.5)."""
    c = np.arange(N) - N / 2 + 0.5
    return ((c[:, None] ** 2 + c[None, :] ** 2) <= (N / 4) ** 2).astype(np.float64)


def centre_window_mask(N: int) -> np.ndarray:
    """(N, N): 1 inside the central N/2 window (rows and columns N/4 .. 3N/4), 0 outside —
    where a pad_object patch lives and what the merge normaliser counts."""
    m = np.zeros((N, N))
    m[N // 4: N // 4 + N // 2, N // 4: N // 4 + N // 2] = 1.0
    return m


def effective_probe(probe: np.ndarray, cfg: ForwardConfig) -> np.ndarray:
    """P_eff = P / (probe_scale · mean(|M_hard · P|)); complex128 (N, N)."""
    probe = np.asarray(probe, dtype=np.complex128)
    denom = cfg.probe_scale * np.mean(np.abs(hard_probe_mask(cfg.N) * probe))
    if denom == 0:
        raise ValueError("the probe is zero inside the hard mask; P_eff is undefined")
    return probe / denom


def make_batch(scan: ScanData, cfg: ForwardConfig, seeds: Sequence[int],
               dtype: str = "float32") -> Batch:
    """Group, normalise (float64), build P_eff, then cast once to `dtype` (float32|float64)."""
    real = _real_dtype(dtype)
    cplx = np.complex64 if real == np.float32 else np.complex128
    try:
        idx, amps, centre, relative = group(scan, cfg, seeds)
        factor = normalisation_factor(amps, cfg.N)
    except ValueError as exc:  # too few points for the grouping, all-zero groups: the file's fault
        raise _scan_error(scan, "diffraction", exc) from None
    try:
        probe = effective_probe(scan.probe, cfg)
    except ValueError as exc:
        raise _scan_error(scan, "probeGuess", exc) from None
    return Batch(
        diffraction=(amps * factor).astype(real),
        offsets=relative.astype(real),
        global_offsets=centre.astype(real),
        probe=probe.astype(cplx),
        group_indices=idx,
        norm_factor=factor,
        source=scan.path,
    )


def _scan_error(scan: ScanData, key: str, exc: ValueError) -> DataError:
    if isinstance(exc, DataError):
        return exc
    problem = str(exc).removeprefix(f"{scan.path}: ")
    return DataError(scan.path, key, f"{problem} ({scan.n_points} patterns of {scan.N}x{scan.N})")


def batches(scan: ScanData, cfg: ForwardConfig, seeds: Sequence[int], batch_size: int,
            dtype: str = "float32") -> Iterator[Batch]:
    """Batches of `batch_size` groups; normalisation is computed once over all the seeds."""
    full = make_batch(scan, cfg, seeds, dtype)
    for start in range(0, full.size, batch_size):
        yield full.select(slice(start, start + batch_size))


def _real_dtype(dtype: str):
    if str(dtype) not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return np.float32 if str(dtype) == "float32" else np.float64


def sha256(arr: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes (C order)."""
    arr = np.ascontiguousarray(arr)
    h = hashlib.sha256()
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def digests(batch: Batch) -> dict[str, str]:
    """sha256 per array of the batch (golden input digests)."""
    return {name: sha256(getattr(batch, name))
            for name in ("diffraction", "offsets", "global_offsets", "probe", "group_indices")}
