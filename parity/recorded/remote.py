"""A backend run in a process of its own (docs/design.md §12): `OutOfProcess(backend)` is the same
backend under the same name whose `version`, `configure`, `build` and `load` run in a child
Python process that imports only that backend's framework; the models it gives are proxies whose
calls go there. The pytest plugin gives the reference this form when its framework is not the
port's, so that no test process holds TensorFlow and torch together (each settles near 1 GB).

Wire: one socket pair, pickled messages (our own processes, our own code: nothing read from a
file is unpickled). The child is `python -m parity.recorded.server`; it ends when its parent
closes the socket. A raise in the child is raised here as the same exception where it pickles
(a RuntimeError naming its type where not), with the child's frames in `remote_frames`, so a
failure still names the line that raised (parity.run.failures).

Where the backend's package is imported in this process (a test or a fault patched it), models
are built here instead: a patch made here must decide the numbers, and the child cannot see it.
numpy-free; never imports the backend's framework.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import pickle
import socket
import subprocess
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Optional

from parity.backends import Backend, backend_fields


class RemoteError(RuntimeError):
    """The child process could not be started or answered nothing (it died)."""


class Child:
    """The child process of one backend, started on first use."""

    def __init__(self, backend: Backend):
        self.name, self.package = backend.name, backend.package  # a package: see runs_apart
        self._described = json.dumps({"name": backend.name, "framework": backend.framework,
                                      "devices": list(backend.devices), "package": backend.package,
                                      "capabilities": None if backend.capabilities is None else sorted(backend.capabilities)})
        self._conn: Optional[Connection] = None
        self._process: Optional[subprocess.Popen] = None
        self.generation = 0  # which start of the child: a model lives only in the one that built it
        self.dropped: list[int] = []  # models let go of here, freed there with the next request

    def _start(self) -> Connection:
        mine, theirs = socket.socketpair()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "parity.recorded.server", self._described, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        except OSError as exc:
            mine.close()
            raise RemoteError(f"backend {self.name!r}: its process did not start ({exc})") from None
        finally:
            theirs.close()
        self._conn = Connection(mine.detach())
        self.generation += 1
        if self.generation == 1:
            atexit.register(self.close)
        return self._conn

    def request(self, op: str, oid: int, name: str = "", *args, generation: Optional[int] = None, **kwargs):
        """`op` ("call", "get") on object `oid` there (0: the backend; a model: the
        `generation` of the child that built it)."""
        if generation is not None and (generation != self.generation or self._conn is None):
            raise RemoteError(f"backend {self.name!r}: the process that held this model has ended; build it again")
        conn = self._conn or self._start()
        try:
            dropped, self.dropped = self.dropped, []
            conn.send_bytes(pickle.dumps((op, oid, name, args, kwargs, dropped)))
            kind, value = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError) as exc:
            self.close()
            raise RemoteError(f"backend {self.name!r}: its process ended without an answer ({exc!r})") from None
        except BaseException:  # interrupted between question and answer: the answer must not reach the next one
            self.close(kill=True)
            raise
        if kind == "raised":
            raise _exception(value)
        if kind == "object":
            return RemoteModel(self, value, self.generation)
        if kind == "items":
            return _replay(*value)
        return value

    def close(self, kill: bool = False) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            try:
                if kill:
                    self._process.kill()
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
            self._process = None


def _replay(items: list, raised):
    """A generator's records as the child collected them, then its raise if it raised."""
    yield from items
    if raised is not None:
        raise _exception(raised)


def _exception(sent: dict) -> BaseException:
    """The child's exception here. Its class is rebuilt only where its module is loaded here: a
    backend's own exception class (models_tf's ModelError) would import the framework, so it is a
    stand-in of the same name and module instead, which a report words the same way."""
    exc = None
    if sent["module"] in sys.modules and sent.get("pickled") is not None:
        try:
            exc = pickle.loads(sent["pickled"])
        except Exception:  # a class this process cannot rebuild
            exc = None
    if not isinstance(exc, BaseException):
        stand_in = type(sent["type"], (RuntimeError,), {"__module__": sent["module"]})
        exc = stand_in(sent["message"])
    try:
        exc.remote_frames = sent["frames"]  # (filename, lineno, name, line) innermost last
        exc.remote_traceback = sent["text"]
    except AttributeError:  # an exception type that takes no attributes: its text still says it
        pass
    return exc


def sent_exception(exc: BaseException) -> dict:
    """What the child sends of `exc` (the inverse of `_exception`)."""
    try:
        pickled = pickle.dumps(exc)
    except Exception:
        pickled = None
    frames = [(f.filename, f.lineno, f.name, f.line) for f in traceback.extract_tb(exc.__traceback__)]
    return {"pickled": pickled, "type": type(exc).__qualname__, "module": type(exc).__module__,
            "message": str(exc), "frames": frames,
            "text": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))}


class RemoteModel:
    """A model living in the child: attribute reads and method calls go there."""

    def __init__(self, child: Child, oid: int, generation: int):
        self._child, self._oid, self._generation = child, oid, generation

    def _ask(self, op: str, *args, **kwargs):
        return self._child.request(op, self._oid, *args, generation=self._generation, **kwargs)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if _patched(self._child.package):
            raise RemoteError(f"backend {self._child.name!r}: its package was patched in this process after this "
                              "model was built in the backend's own process, which cannot see the patch; "
                              "build the model after patching")
        answer = self._ask("get", name)
        if isinstance(answer, RemoteModel):  # a value that does not pickle: it stays there too
            return answer
        kind, value = answer
        if kind == "callable":
            return lambda *args, **kwargs: self._ask("call", name, *args, **kwargs)
        return value

    def __del__(self):
        # no request from here: a collection can run between another request's question and answer
        if self._child.generation == self._generation:
            self._child.dropped.append(self._oid)


@dataclasses.dataclass(frozen=True)
class OutOfProcess(Backend):
    """`live` under its own name, run in a child process (module docstring)."""

    live: Optional[Backend] = None
    child: Optional[Child] = dataclasses.field(default=None, compare=False, repr=False)

    def _here(self) -> bool:
        """Whether the models are built in this process: it holds the backend's package, or
        patched a harness module the package reads (a patch made here decides their numbers)."""
        return self.live.package in sys.modules or _patched(self.live.package)

    def can(self, capability: str) -> bool:
        return self.live.can(capability) if self._here() else self.child.request("call", 0, "can", capability)

    def version(self) -> str:
        return self.live.version() if self._here() else self.child.request("call", 0, "version")

    def configure(self, device: str) -> dict:
        return self.live.configure(device) if self._here() else self.child.request("call", 0, "configure", device)

    def build(self, cfg, weights, device: str = "cpu", **state):
        if self._here():
            self.live.configure(device)  # an earlier configure may have gone to the child
            return self.live.build(cfg, weights, device=device, **state)
        return self.child.request("call", 0, "build", cfg, dict(weights), device=device, **state)

    def load(self, path, device: str = "cpu", cfg=None):
        if self._here():
            self.live.configure(device)
            return self.live.load(path, device=device, cfg=cfg)
        return self.child.request("call", 0, "load", str(path), device=device, cfg=cfg)


def runs_apart(backend: Backend) -> bool:
    """Whether `backend` can run in a process of its own: one the child can make from its name,
    framework, devices and package alone (a package's build, load and device.configure: the
    built-ins), not one of functions given in this process (an adapter)."""
    return (os.name == "posix"  # the child gets its socket by file descriptor (pass_fds)
            and bool(backend.package) and all(getattr(backend, f) is None
                                              for f in ("build_fn", "load_fn", "configure_fn", "version_fn")))


def out_of_process(backend: Backend) -> OutOfProcess:
    """`backend` run in a child process of its own (started when first needed)."""
    if not runs_apart(backend):
        raise ValueError(f"backend {backend.name!r}: only a package backend runs in a process of its own")
    return OutOfProcess(**backend_fields(backend), live=backend, child=Child(backend))


def _patched(package: str) -> bool:
    """Whether anything the package's source key covers is patched in this process: the names
    alone decide it (their digest, `patch_signature`, is what the reference cache files by)."""
    from parity.recorded.sources import patched_names

    return bool(patched_names(package))


def pid_of(backend: Backend) -> Optional[int]:
    """The child's process id where it has started (tests, the bench)."""
    process = getattr(getattr(backend, "child", None), "_process", None)
    return None if process is None else process.pid

