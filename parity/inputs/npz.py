"""Reading NPZ files safely (numpy only): never unpickling, an NPY header checked against the
bytes the file holds before anything is read, and every problem one `DataError` naming the file
and the key. The fly001 contract on top of it is `parity.inputs.data`."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Optional

import numpy as np


class DataError(ValueError):
    """A data file breaks the NPZ contract. The message names the file and the key."""

    def __init__(self, path: str | Path, key: Optional[str], problem: str):
        self.path, self.key, self.problem = str(path), key, problem
        where = f"{self.path}: key '{key}'" if key else self.path
        super().__init__(f"{where}: {problem}")


def _open_npz(path: Path):
    """The NpzFile of `path` (never unpickling), or a DataError naming the file."""
    if not path.is_file():
        raise DataError(path, None, "no such file")
    if not zipfile.is_zipfile(path):
        raise DataError(path, None, "not an NPZ file (no zip archive inside)")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(path, None, f"not a readable NPZ file ({exc.__class__.__name__}: {exc})")


def _read_array(npz, path: Path, key: str) -> np.ndarray:
    """One array of an NPZ, after checking its header against the bytes the file holds: a header
    that claims a huge shape is refused before any memory is taken for it, and an array of Python
    objects (pickled data) is named as such, never loaded."""
    member = key if key in npz.zip.namelist() else f"{key}.npy"
    try:
        size = npz.zip.getinfo(member).file_size
        with npz.zip.open(member) as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                shape, dtype = None, None  # a newer format: numpy reads (and checks) it below
            offset = fh.tell()
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(path, key, f"cannot be read ({exc})")
    if dtype is not None:
        if dtype.hasobject:
            raise DataError(path, key, f"holds Python objects (dtype {dtype}), i.e. pickled data, which parity "
                                       f"never loads; store a numeric array")
        claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if claimed != size - offset:
            raise DataError(path, key, f"its header claims shape {tuple(shape)} of {dtype} ({claimed} bytes) "
                                       f"but the file holds {size - offset} bytes for it")
    try:
        return np.asarray(npz[key])
    except (ValueError, OSError, MemoryError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(path, key, f"cannot be read ({exc.__class__.__name__}: {exc})")


def load_probe(path: str | Path, N: int, key: str = "probeGuess") -> np.ndarray:
    """The (N, N) complex128 probe stored under `key` of an NPZ (`parity make-fixture --probe`):
    numeric, finite, not all zeros; every problem a DataError naming file and key."""
    path = Path(path)
    with _open_npz(path) as npz:
        if key not in npz.files:
            raise DataError(path, key, f"missing (file has keys {sorted(npz.files)})")
        probe = _read_array(npz, path, key)
    if not np.issubdtype(probe.dtype, np.number) or np.issubdtype(probe.dtype, np.bool_):
        raise DataError(path, key, f"must be numeric (complex), got dtype {probe.dtype}")
    if probe.shape != (N, N):
        raise DataError(path, key, f"must have shape ({N}, {N}), got {probe.shape}")
    probe = probe.astype(np.complex128)
    _need_finite(path, key, probe)
    if not np.any(probe):
        raise DataError(path, key, "is all zeros")
    return probe


def _need_real_numeric(path: Path, key: str, arr: np.ndarray) -> None:
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise DataError(path, key, f"must be real numbers, got dtype {arr.dtype}")


def _need_finite(path: Path, key: str, arr: np.ndarray) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(path, key, f"has {int(bad.sum())} NaN/Inf values (first at index {first})")
