"""The files of a cache entry (parity.recorded.cache): plain NPZ, written atomically, read as
absent when damaged. numpy only."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np

from parity.recorded.store import write_arrays


def sha(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def read(path: Path) -> Optional[dict]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # absent, or cut short by a crash: computed again
        return None


def write(path: Path, arrays: dict) -> None:
    """Atomically (two xdist workers or sessions may write the same entry); quietly not at all
    where the folder cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        write_arrays(tmp, arrays)  # uncompressed: zlib would cost the cold run more than the disk it saves
        os.replace(tmp, path)
    except OSError:
        pass


def batch_key(batch) -> str:
    from parity.inputs.data import digests

    return sha(digests(batch))[:20]
