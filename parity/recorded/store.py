"""A record of a reference's numbers (docs/recorded.md): what `parity record` writes and
`--ref recorded:DIR` reads. Plain JSON and NPZ, never pickle — loading a record executes nothing.

    DIR/record.json                 who recorded (backend, framework, version, platform, date), the
                                    reference's source key, what was recorded (gradients, steps)
    DIR/<case>/<dtype>/meta.json    config, input and weight digests, state, effective config,
                                    loss terms, how many Adam steps
    DIR/<case>/<dtype>/train.npz    the training path, stage by stage
    DIR/<case>/<dtype>/infer.npz    the inference path
    DIR/<case>/<dtype>/reloaded.npz the inference path of the model saved and loaded back
    DIR/<case>/<dtype>/state.npz    its probe (its log_scale is in meta.json)
    DIR/<case>/<dtype>/gradients.npz  the gradient of every trainable tensor (with --grad)
    DIR/<case>/<dtype>/steps.npz    after each Adam step k: `k/loss`, `k/<tensor>` (with --train-steps)

numpy only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from parity.errors import UsageError

SCHEMA = 1
# the package whose sources decide a built-in reference's numbers (a record of another backend
# keeps no source key: its numbers are trusted as recorded, and the record says so)
SOURCE_PACKAGES = {"tensorflow": "models_tf", "numpy": "models_numpy", "torch": "models_torch"}


class RecordError(UsageError):
    """A record that cannot be used for this run: one line naming the folder, the case and what differs."""


def source_key(backend: str) -> Optional[str]:
    """sha256 of the sources of a built-in backend's package and of the parity modules it
    imports (parity.recorded.sources), found without importing it."""
    from parity.recorded.sources import source_key as package_key

    package = SOURCE_PACKAGES.get(backend)
    return package_key(package) if package else None


def entry_dir(folder: Path, case: str, dtype: str) -> Path:
    return Path(folder) / case / dtype


def write_arrays(path: Path, arrays: Mapping[str, Any], compress: bool = False) -> None:
    """`compress`: for traces, whose canvases are mostly zeros (≈ 60 % smaller); weights and
    gradients are random bits that zlib does not shrink."""
    with open(path, "wb") as fh:  # a handle keeps np.savez from appending '.npz'
        (np.savez_compressed if compress else np.savez)(fh, **{k: np.asarray(v) for k, v in arrays.items()})


def step_arrays(k: int, record: Mapping) -> dict[str, np.ndarray]:
    """Adam step k's record (`{"loss", "tensors"}`, what `train_steps` yields) as steps.npz holds it:
    `k/loss` and `k/<tensor>`."""
    return {f"{k}/loss": np.asarray(record["loss"]),
            **{f"{k}/{name}": np.asarray(v) for name, v in record["tensors"].items()}}


def replay_steps(arrays: Mapping[str, np.ndarray], steps: int):
    """The first `steps` records of steps.npz's arrays, as `train_steps` yields them."""
    for k in range(steps):
        yield {"loss": float(arrays[f"{k}/loss"]),
               "tensors": {key.split("/", 1)[1]: v for key, v in arrays.items()
                           if key.startswith(f"{k}/") and key != f"{k}/loss"}}


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise RecordError(f"{path}: not a readable record file ({exc})") from None


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise RecordError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise RecordError(f"{path}: not JSON ({exc})") from None


@dataclass(frozen=True)
class Record:
    """An opened record: its folder and record.json."""

    folder: Path
    info: dict
    _metas: dict = field(default_factory=dict, repr=False, compare=False)  # (case, dtype) -> meta.json, read once

    @classmethod
    def open(cls, folder: str | Path) -> "Record":
        folder = Path(folder)
        if not (folder / "record.json").is_file():
            raise RecordError(f"{folder}: not a record (no record.json; make one with `parity record --out {folder}`)")
        info = read_json(folder / "record.json")
        if info.get("schema") != SCHEMA:
            raise RecordError(f"{folder / 'record.json'}: key 'schema' is {info.get('schema')!r}, this parity reads {SCHEMA}")
        return cls(folder, info)

    @property
    def backend(self) -> str:
        return self.info["backend"]

    def entries(self) -> list[tuple[str, str]]:
        return [(case, dtype) for case, entry in self.info["cases"].items() for dtype in entry["dtypes"]]

    def meta(self, case: str, dtype: str) -> dict:
        """An entry's meta.json, read once per opened record (every build looks its entry up)."""
        if (case, dtype) not in self._metas:
            self._metas[case, dtype] = read_json(entry_dir(self.folder, case, dtype) / "meta.json")
        return self._metas[case, dtype]

    def arrays(self, case: str, dtype: str, part: str) -> dict[str, np.ndarray]:
        return read_arrays(entry_dir(self.folder, case, dtype) / f"{part}.npz")
