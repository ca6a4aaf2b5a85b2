"""``--impl SPEC``: parse ``package.module:NAME`` or ``path/to/file.py:NAME`` and load the object."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType


class SpecError(ValueError):
    """A SPEC that cannot name anything: the user's typo, reported as a usage error."""


class LoadError(Exception):
    """The user's code could not be loaded: reported as an error row, with this message."""


@dataclass(frozen=True)
class ImplSpec:
    text: str  # as the user wrote it
    target: str  # a dotted module name or a path to a .py file
    attr: str  # the name inside it; may be dotted (Class.method)

    @property
    def is_path(self) -> bool:
        return self.target.endswith(".py") or "/" in self.target or "\\" in self.target


def parse_spec(text: str) -> ImplSpec:
    target, sep, attr = text.strip().rpartition(":")
    if not sep or not target or not attr:
        raise SpecError(f"malformed implementation {text!r}; write package.module:NAME or path/to/file.py:NAME")
    if not all(part.isidentifier() for part in attr.split(".")):
        raise SpecError(f"malformed implementation {text!r}: {attr!r} is not a Python name")
    return ImplSpec(text.strip(), target, attr)


def load_object(spec: ImplSpec) -> object:
    """Import the module (or file) and return the named object; LoadError says what went wrong."""
    # user code may import TensorFlow before normcheck's adapter does: keep its C++ log quiet
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    module = _import_path(spec) if spec.is_path else _import_module(spec)
    obj: object = module
    for part in spec.attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LoadError(f"{spec.target} has no attribute {spec.attr!r}") from None
    return obj


def _import_module(spec: ImplSpec) -> ModuleType:
    if str(Path.cwd()) not in sys.path and "" not in sys.path:
        # the project's own packages, after everything else: a module of the project named like
        # a library (pandas.py) must not replace the library for normcheck or the frameworks
        sys.path.append(str(Path.cwd()))
    try:
        return importlib.import_module(spec.target)
    except ModuleNotFoundError as e:
        if e.name and spec.target.startswith(e.name):
            raise LoadError(f"cannot import {spec.target}: no module named {e.name!r}") from None
        raise LoadError(f"cannot import {spec.target}: {_describe(e)}") from None
    except BaseException as e:  # anything the user's module raises while it is imported
        if isinstance(e, KeyboardInterrupt):
            raise
        raise LoadError(f"cannot import {spec.target}: {_describe(e)}") from None


def _import_path(spec: ImplSpec) -> ModuleType:
    path = Path(spec.target).expanduser().resolve()
    if not path.is_file():
        raise LoadError(f"cannot import {spec.target}: no such file")
    # A file inside a package is imported as part of it, so its relative imports work.
    root, parts = path.parent, [path.stem]
    while (root / "__init__.py").is_file():
        parts.insert(0, root.name)
        root = root.parent
    name = ".".join(parts)
    if str(root) not in sys.path:
        sys.path.append(str(root))  # last, as above
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() == path:
            return loaded
        if len(parts) == 1:  # a file named like a module already imported (json.py): keep both
            name = f"normcheck_impl_{path.stem}"
    try:
        if len(parts) > 1:
            return importlib.import_module(name)
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:  # not a .py file: no loader takes it
            raise ImportError("no loader for this kind of file; give a .py file")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        return module
    except KeyboardInterrupt:
        raise
    except BaseException as e:
        raise LoadError(f"cannot import {spec.target}: {_describe(e)}") from None


def _describe(e: BaseException) -> str:
    if isinstance(e, SyntaxError):
        return f"SyntaxError: {e.msg} (line {e.lineno})"
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
