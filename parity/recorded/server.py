"""The child process of an out-of-process backend (parity.recorded.remote):
`python -m parity.recorded.server BACKEND FD` serves the backend BACKEND describes (JSON: its
name, framework, devices, package, capabilities) over the socket FD until its parent closes it. Object 0 is the backend; a model `build` or `load` gives, and any
value that does not pickle, is kept here under a number and used through the parent's proxy."""

from __future__ import annotations

import inspect
import pickle
import socket
import sys
from multiprocessing.connection import Connection

from parity.recorded.remote import sent_exception


def answer(objects: dict, op: str, oid: int, name: str, args: tuple, kwargs: dict, dropped: list):
    """The reply to one request: ("value", v), ("object", number), ("items", (records, raised));
    a `get` of a method is ("value", ("callable", None)), of a value ("value", ("value", v))."""
    for number in dropped:  # models the parent let go of
        objects.pop(number, None)
    target = objects[oid]
    if op == "get":
        value = getattr(target, name)
        if callable(value):
            return "value", ("callable", None)
        return _sent(objects, value, lambda v: ("value", ("value", v)))
    value = getattr(target, name)(*args, **kwargs)
    if oid == 0 and name in ("build", "load"):
        return _keep(objects, value)
    if inspect.isgenerator(value):
        items, raised = [], None
        try:
            for item in value:
                items.append(item)
        except Exception as exc:
            raised = sent_exception(exc)
        return "items", (items, raised)
    return _sent(objects, value, lambda v: ("value", v))


def _keep(objects: dict, value):
    number = objects["next"]  # never reused: a number the parent still holds names one object
    objects["next"], objects[number] = number + 1, value
    return "object", number


def _sent(objects: dict, value, wrap):
    """`wrap(value)` to send, or `value` kept here where it does not pickle."""
    try:
        pickle.dumps(value)
    except Exception:
        return _keep(objects, value)
    return wrap(value)


def _write_probe(backend: str) -> None:
    """Under `parity bench`: this process's peak RSS beside its test process's (parity.bench.probe)."""
    import json
    import os
    from pathlib import Path

    from parity.bench.probe import ENV, peak_rss_mb_of_this_process

    folder = os.environ.get(ENV)
    if folder:
        process = f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-{backend}-{os.getpid()}"
        record = {"process": process, "pid": os.getpid(), "peak_rss_mb": peak_rss_mb_of_this_process(),
                  "first_result_at": None, "first_run_at": None}
        Path(folder, f"{process}-{os.getpid()}.json").write_text(json.dumps(record))


def serve(described: str, fd: int) -> None:
    import json

    from parity.backends import Backend

    fields = json.loads(described)
    capabilities = fields.pop("capabilities")
    backend = Backend(**{**fields, "devices": tuple(fields["devices"]),
                         "capabilities": None if capabilities is None else frozenset(capabilities)})
    conn = Connection(socket.socket(fileno=fd).detach())
    objects = {0: backend, "next": 1}
    while True:
        try:
            request = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):  # the parent closed it, or ended
            _write_probe(backend.name)
            return
        try:
            reply = answer(objects, *request)
        except Exception as exc:
            reply = ("raised", sent_exception(exc))
        conn.send_bytes(pickle.dumps(reply))


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
