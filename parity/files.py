"""What the harness writes, and where it may write it (numpy-free, framework-free).

Two rules, kept here so that every writer follows them:

- **Atomic**: every file is written to a temporary file beside it and renamed into place
  (`write_atomic`): a reader, a crash or a full disk sees the old file or the new one, never a
  truncated one.
- **Only inside what it made**: a run's output folder (`RunFolder`) is marked by a manifest
  (`.parity-run.json`) that lists every file the run wrote. A later run removes only those files;
  a folder that holds files the harness did not write is refused unless the user says `--force`
  (and even then nothing of theirs is deleted). One run per folder at a time (a lock).
"""

from __future__ import annotations

import datetime
import errno
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

MANIFEST = ".parity-run.json"
LOCK = ".parity-run.lock"
TOOL = "ptycho-parity"
RUNNING, COMPLETE, INTERRUPTED, FAILED = "running", "complete", "interrupted", "failed"
OWN = (MANIFEST, LOCK)  # the run folder's own bookkeeping: never listed, never removed


class OutputRefused(ValueError):
    """The harness will not write into this folder (files it did not write, another run in it)."""


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write `data` via a temporary file in the same folder and a rename: a reader (or a crash)
    sees the old file or the new one, never a truncated one. The folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; these are ordinary files
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _naming(exc, path) from None
        raise
    return path


def _naming(exc: OSError, path: Path) -> OSError:
    """`exc` with the file it was about: a write into an open file (a full disk) names none."""
    return exc if exc.filename else OSError(exc.errno, exc.strerror or str(exc), str(path))


def plain(value: Any, nonfinite: Callable[[float], Any] = str) -> Any:
    """`value` as plain JSON types: dict keys as strings, tuples as lists, numpy scalars as Python
    numbers; a non-finite float goes through `nonfinite` (a report keeps it as the string "nan";
    a golden refuses it by raising)."""
    if isinstance(value, dict):
        return {str(k): plain(v, nonfinite) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, nonfinite) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return plain(value.item(), nonfinite)
    if isinstance(value, float) and not math.isfinite(value):
        return nonfinite(value)
    return value


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def read_manifest(folder: str | Path) -> Optional[dict]:
    """The manifest of a run folder, or None where there is none (or it is not one of ours)."""
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("tool") != TOOL or not isinstance(data.get("files"), list):
        return None
    return data


def _older_report(folder: Path) -> bool:
    """A report folder written before run folders had a manifest (report.md and summary.json)."""
    try:
        return (folder / "report.md").read_text(errors="replace").startswith("# ptycho-parity report")
    except OSError:
        return False


class RunFolder:
    """The output folder of one `parity check`: refused where it holds files the harness did not
    write (unless `force`), locked for the run, cleared of the previous run's files only, and
    described by a manifest whose `state` says whether the run finished."""

    def __init__(self, root: str | Path, command: str, force: bool = False):
        self.root = Path(root)
        self.command = command
        self.force = force
        self._lock_fd: Optional[int] = None
        self._foreign: set[str] = set()  # files that were there before and are not ours
        self.manifest: dict = {}

    # -- opening -----------------------------------------------------------------------------

    def open(self) -> "RunFolder":
        """Check, lock and clear the folder; raises OutputRefused with one line."""
        root = self.root
        shown = str(root) or "."
        if root.exists() and not root.is_dir():
            raise OutputRefused(f"{shown}: --out must be a folder, and this is a file")
        previous = read_manifest(root) if root.is_dir() else None
        if root.is_dir() and previous is None:
            entries = sorted(p.name for p in root.iterdir())
            if entries and not self.force:
                listed = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
                older = (" (it looks like the report of an older parity, which kept no list of its files: "
                         "remove it yourself)" if _older_report(root) else "")
                raise OutputRefused(f"{shown}: --out holds files parity did not write ({listed}){older}; choose an "
                                    f"empty or new folder, or pass --force to write into it (nothing of yours "
                                    f"is deleted)")
        root.mkdir(parents=True, exist_ok=True)
        self._lock()
        previous = read_manifest(root)  # again, under the lock: another run may have just finished
        mine = set(previous["files"]) if previous else set()
        self._remove(mine)
        self._foreign = {rel for rel in self._walk() if rel not in OWN}
        self.manifest = {"tool": TOOL, "command": self.command, "state": RUNNING, "pid": os.getpid(),
                         "started": _now(), "finished": None, "files": []}
        self._save()
        return self

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # not a POSIX system: no lock, the rest still holds
            return
        path = self.root / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise OutputRefused(f"{self.root or '.'}: another parity run is writing to this folder "
                                    f"(pid {holder}); wait for it or choose another --out") from None
            raise
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        except OSError as exc:
            os.close(fd)
            raise _naming(exc, path) from None
        self._lock_fd = fd

    def _inside(self, rel: str) -> Optional[Path]:
        """`root/rel` where it is a plain file inside the folder (no `..`, no link out), else None."""
        path = self.root / rel
        try:
            if path.is_symlink() or not path.is_file():
                return None
            path.resolve().relative_to(self.root.resolve())
        except (OSError, ValueError):
            return None
        return path

    def _remove(self, files: set[str]) -> None:
        """Delete the previous run's files (only those), then the folders they leave empty."""
        folders = set()
        for rel in sorted(files):
            if rel in OWN:
                continue
            path = self._inside(rel)
            if path is not None:
                path.unlink()
                folders.update(p for p in path.parents if p != self.root and self.root in p.parents)
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()  # only an empty one: a user's file keeps its folder
            except OSError:
                pass

    def _walk(self) -> list[str]:
        out = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
            for name in filenames:
                out.append(Path(dirpath, name).relative_to(self.root).as_posix())
        return out

    # -- while running -----------------------------------------------------------------------

    def record(self) -> None:
        """List in the manifest every file of the folder that this run wrote (everything that
        was not there, or not ours, before it started)."""
        self.manifest["files"] = sorted(rel for rel in self._walk()
                                        if rel not in self._foreign and rel not in OWN
                                        and not Path(rel).name.endswith(".tmp"))
        self._save()

    def _save(self) -> None:
        write_atomic(self.root / MANIFEST, json.dumps(self.manifest, indent=1, sort_keys=True) + "\n")

    def close(self, state: str) -> None:
        """Record the files and the final state (complete, interrupted, failed); release the lock."""
        try:
            self.manifest["state"] = state
            self.manifest["finished"] = _now()
            self.record()
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
