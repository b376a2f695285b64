"""What a built-in model package's numbers come from, read without importing it (numpy only):

- `source_key(package)`: sha256 of its files and of every `parity.*` module they import, directly
  or through one another (the config, the batch geometry, the weight layout): an edit to any of
  them is another key.
- `patched_names(package)`: the names of its imported modules whose live value is not the one
  its own source binds: a function or method replaced from outside (a fault injected, a test's
  monkeypatch), a constant set to another value.
  What replaced them is digested by parity.recorded.patches.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import inspect
import sys
import types
from pathlib import Path
from typing import Optional


def source_key(package: str) -> Optional[str]:
    files = _source_files(package)
    if files is None:
        return None
    h = hashlib.sha256()
    for name, path in files:
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _package_files(package: str) -> Optional[list[Path]]:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return sorted(p for d in spec.submodule_search_locations for p in Path(d).glob("*.py"))
    return [Path(spec.origin)] if spec.origin and spec.origin.endswith(".py") else None


def _source_files(package: str) -> Optional[list[tuple[str, Path]]]:
    """(display name, path) of the package's files, then of the parity modules they reach."""
    own = _package_files(package)
    if not own:
        return None
    files = [(p.name, p) for p in own]
    seen, todo = set(), [p for p in own]
    while todo:
        for module in sorted(_parity_imports(todo.pop())):
            if module in seen:
                continue
            seen.add(module)
            for path in _module_file(module) or []:
                files.append((module, path))
                todo.append(path)
    return files


def _module_file(module: str) -> Optional[list[Path]]:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a parent that does not import cleanly: left out
        return None
    origin = spec.origin if spec else None
    return [Path(origin)] if origin and origin.endswith(".py") else None


def _parity_imports(path: Path) -> set[str]:
    """The parity.* modules a file imports, at top level or inside functions."""
    out = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and _is_parity(node.module or ""):
            out.add(node.module)
            if importlib.util.find_spec(node.module).submodule_search_locations is not None:
                for alias in node.names:  # `from parity.inputs import data`: the module data
                    if _module_file(f"{node.module}.{alias.name}"):
                        out.add(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if _is_parity(a.name))
    return out


def _is_parity(module: str) -> bool:
    return module == "parity" or module.startswith("parity.")


@functools.lru_cache(maxsize=None)
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_bytes(), filename=str(path))


# -- patches --------------------------------------------------------------------------------------

def patched_names(package: str) -> list[str]:
    """`module.name` for each patched binding of the package's modules imported so far (none
    imported: none patched), and of the parity modules its source key covers (the port reads
    the batch geometry through them)."""
    out = []
    for name in _modules_of(package, len(sys.modules)) + _harness_modules(package):
        module = sys.modules.get(name)
        if getattr(module, "__file__", None):
            out += [f"{name}.{k}" for k in _patched_in(module)]
    return out


@functools.lru_cache(maxsize=16)
def _harness_modules(package: str) -> tuple[str, ...]:
    return tuple(name for name, path in _source_files(package) or [] if not name.endswith(".py"))


@functools.lru_cache(maxsize=16)
def _modules_of(package: str, count: int) -> tuple[str, ...]:
    """The package's modules among sys.modules (looked up again when its size changes: a
    framework's thousands of modules are not scanned on every call)."""
    return tuple(n for n in list(sys.modules) if n == package or n.startswith(package + "."))


def _patched_in(module: types.ModuleType) -> list[str]:
    path = module.__file__
    live = vars(module)
    out = []
    for name, (kind, expected) in _bindings(path, module.__name__).items():
        if name not in live:
            continue
        value = live[name]
        if kind == "def" and not _own_function(value, path):
            out.append(name)
        elif kind == "class" and not _own_class(value, path, module.__name__, expected):
            out.append(name)
        elif kind == "literal" and not (type(value) is type(expected) and value == expected):
            out.append(name)
        elif kind == "import" and value is not _imported(*expected):
            out.append(name)
        elif kind == "table" and not all(_own_function(v, path) for v in _members(value)
                                         if isinstance(v, types.FunctionType)):
            out.append(name)
    return out


def _own_function(value, path: str) -> bool:
    if not isinstance(value, types.FunctionType):
        return False
    filename = value.__code__.co_filename
    return filename == path or Path(filename) == Path(path)


def _own_class(value, path: str, module: str, methods: dict) -> bool:
    """The class the module defines, each method its body defines still its own (what
    dataclasses generate is left alone; a decorated method, `@torch.no_grad()`, is judged by
    the function it wraps)."""
    if not isinstance(value, type) or value.__module__ != module:
        return False
    for name, decorated in methods.items():
        attr = vars(value).get(name)
        attr = attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
        attr = attr.fget if isinstance(attr, property) else attr
        attr = inspect.unwrap(attr) if decorated and callable(attr) else attr
        if not _own_function(attr, path):
            return False
    return True


def _members(value) -> list:
    if isinstance(value, dict):
        return list(value.values())
    return list(value) if isinstance(value, (list, set, tuple, frozenset)) else []


_MISSING = object()


def _imported(module: str, attr: str):
    """What `from module import attr` binds now (a submodule, or the module's attribute)."""
    source = sys.modules.get(module)
    value = getattr(source, attr, _MISSING) if source is not None else _MISSING
    return sys.modules.get(f"{module}.{attr}", _MISSING) if value is _MISSING else value


@functools.lru_cache(maxsize=None)
def _bindings(path: str, module: str) -> dict[str, tuple[str, object]]:
    """The module's top-level names and what its source binds them to: a def, a class, a
    literal, an import, or a dict (whose functions must be the module's own)."""
    out: dict[str, tuple[str, object]] = {}
    package = module if Path(path).name == "__init__.py" else module.rpartition(".")[0]
    for node in _tree(Path(path)).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out[node.name] = ("def", None)
        elif isinstance(node, ast.ClassDef):
            out[node.name] = ("class", {n.name: bool(n.decorator_list) for n in node.body
                                        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))})
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                out[alias.asname or alias.name] = ("import", (base, alias.name))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    out[target.id] = _assigned(node.value)
    for node in ast.walk(_tree(Path(path))):  # state the module's own functions rebind (`global x`)
        if isinstance(node, ast.Global):
            for name in node.names:
                out.pop(name, None)
    return out


def _assigned(value: ast.expr) -> tuple[str, object]:
    """A constant (a number, a string, a tuple of them) is compared by value; a dict, list or set
    is state the module may fill in place: only its functions are checked."""
    if isinstance(value, (ast.Dict, ast.List, ast.Set)):
        return "table", None
    try:
        return "literal", ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return "other", None
