"""What patches a model package (parity.recorded.sources.patched_names), told as a digest:

`patch_signature(package)` is "" for the package as its sources make it; for a patched one, a
digest of what replaced each patched name (the replacing function's file, line, defaults and
closure, recursively; a constant's value), so that a fault's numbers are filed apart from the
clean port's and from every other fault's; None where a replacement cannot be digested (it closes
over an object whose state Python cannot see, a tensor, or over a list or dict it may fill as it
runs, a spy counting calls): such a package is computed live and never stored. numpy only.
"""

from __future__ import annotations

import functools
import hashlib
import sys
import types
from pathlib import Path
from typing import Optional

from parity.recorded.sources import patched_names


def patch_signature(package: str) -> Optional[str]:
    names = patched_names(package)
    if not names:
        return ""
    parts = []
    for dotted in sorted(names):
        module, _, name = dotted.rpartition(".")
        value = vars(sys.modules[module])[name]
        if isinstance(value, type) and value.__module__ == module:  # its methods replaced
            digest = {k: _digest(v, 0) for k, v in sorted(vars(value).items()) if _is_code(v)}
        else:
            digest = _digest(value, 0)
        if digest is None or (isinstance(digest, dict) and None in digest.values()):
            return None
        parts.append(f"{dotted}={digest}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _is_code(value) -> bool:
    return isinstance(value, (types.FunctionType, staticmethod, classmethod, property))


_SCALARS = (type(None), bool, int, float, complex, str, bytes)
_DEPTH = 6  # closures of closures: deep enough for a wrapper of a wrapper


def _digest(value, depth: int) -> Optional[str]:
    """A stable text for what `value` computes, or None where it cannot be told."""
    if depth > _DEPTH:
        return None
    if isinstance(value, _SCALARS):
        return f"{type(value).__name__}:{value!r}"
    if isinstance(value, (tuple, list, frozenset, set)):
        inner = [_digest(v, depth + 1) for v in (sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value)]
        return None if None in inner else f"{type(value).__name__}({','.join(inner)})"
    if isinstance(value, dict):
        inner = [(repr(k), _digest(v, depth + 1)) for k, v in sorted(value.items(), key=lambda kv: repr(kv[0]))]
        return None if any(d is None for _, d in inner) else "dict(" + ",".join(f"{k}:{d}" for k, d in inner) + ")"
    if isinstance(value, types.ModuleType):
        return f"module:{value.__name__}"
    if isinstance(value, (staticmethod, classmethod)):
        return _digest(value.__func__, depth + 1)
    if isinstance(value, property):
        return _digest(value.fget, depth + 1)
    if isinstance(value, types.FunctionType):
        return _digest_function(value, depth)
    if isinstance(value, types.MethodType):
        inner = [_digest(value.__func__, depth + 1), _digest(value.__self__, depth + 1)]
        return None if None in inner else f"method:{inner[0]}@{inner[1]}"
    if isinstance(value, type):
        file = sys.modules.get(value.__module__)
        return f"class:{value.__module__}.{value.__qualname__}@{_file_sha(getattr(file, '__file__', None))}"
    if isinstance(value, types.BuiltinFunctionType):
        return f"builtin:{getattr(value, '__module__', None)}.{value.__qualname__}"
    if type(value).__module__ == "numpy" and hasattr(value, "tobytes"):
        return f"array:{value.dtype.str}{value.shape}:{hashlib.sha256(value.tobytes()).hexdigest()}"
    if _plain(value):  # a decorator's context manager: its class and fields
        fields = _digest(dict(vars(value)), depth + 1)
        return None if fields is None else f"obj:{_digest(type(value), depth)}{fields}"
    return None


_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class defined in Python, not in C


def _plain(value) -> bool:
    """An object whose whole state is its __dict__: every class of it defined in Python (a
    tensor's data lives in C, outside its __dict__)."""
    return hasattr(value, "__dict__") and all(c.__flags__ & _HEAPTYPE for c in type(value).__mro__[:-1])


def _digest_function(fn: types.FunctionType, depth: int) -> Optional[str]:
    code = fn.__code__
    parts = [f"fn:{code.co_filename}:{code.co_firstlineno}:{fn.__qualname__}@{_file_sha(code.co_filename)}"]
    cells = [c.cell_contents for c in fn.__closure__ or ()]
    if any(isinstance(c, (list, dict, set, bytearray)) for c in cells):
        return None  # state the function changes as it runs (a spy counting calls): not a constant to file by
    for extra in (fn.__defaults__, fn.__kwdefaults__, cells):
        inner = _digest(extra, depth + 1)
        if inner is None:
            return None
        parts.append(inner)
    return "|".join(parts)


@functools.lru_cache(maxsize=None)
def _file_sha(path: Optional[str]) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except (OSError, TypeError):
        return "unreadable"
