"""The child process of an out-of-process backend (parity.recorded.remote):
`python -m parity.recorded.server BACKEND FD` serves the backend BACKEND describes (JSON: its
name, framework, devices, package, capabilities) over the socket FD until its parent closes it.
Object 0 is the backend; a model `build` or `load` gives, and any value that does not pickle, is
kept here under a number and used through the parent's proxy."""

from __future__ import annotations

import inspect
import pickle
import socket
import sys
from multiprocessing.connection import Connection

from parity.recorded.remote import sent_exception


_NOTHING = object()


def answer(objects: dict, op: str, oid: int, name: str, args: tuple, kwargs: dict, dropped: list):
    """(reply, value): the reply to one request — ("value", v), ("object", number), ("items",
    (records, raised)); a `get` of a method is ("value", ("callable", None)), of a value ("value",
    ("value", v)) — and the value to keep here instead where the reply does not pickle."""
    for number in dropped:  # models the parent let go of
        objects.pop(number, None)
    target = objects[oid]
    if op == "get":
        value = getattr(target, name)
        return ("value", ("callable", None)) if callable(value) else ("value", ("value", value)), value
    value = getattr(target, name)(*args, **kwargs)
    if oid == 0 and name in ("build", "load"):
        return keep(objects, value), _NOTHING
    if inspect.isgenerator(value):
        items, raised = [], None
        try:
            for item in value:
                items.append(item)
        except Exception as exc:
            raised = sent_exception(exc)
        return ("items", (items, raised)), _NOTHING
    return ("value", value), value


def keep(objects: dict, value):
    number = objects["next"]  # never reused: a number the parent still holds names one object
    objects["next"], objects[number] = number + 1, value
    return "object", number


def pickled(objects: dict, reply, value) -> bytes:
    """The reply as sent (pickled once: forward results are large), or the value kept here and
    its number sent where it does not pickle."""
    try:
        return pickle.dumps(reply)
    except Exception:
        if value is _NOTHING:
            raise
        return pickle.dumps(keep(objects, value))


def _write_probe(backend: str) -> None:
    """Under `parity bench`: this process's peak RSS beside its test process's (parity.bench.probe)."""
    import os

    from parity.bench.probe import write_record

    # several a worker: each named by its pid too, so that none overwrites another's peak
    write_record(f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-{backend}-{os.getpid()}")


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
            payload = pickled(objects, *answer(objects, *request))
        except Exception as exc:
            payload = pickle.dumps(("raised", sent_exception(exc)))
        conn.send_bytes(payload)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
