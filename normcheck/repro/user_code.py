"""The lines of a reproducer that load the user's implementation (``--impl``, and ``--backward``)
the way normcheck does: a file by its path (as part of its package when its folder is one), a
module by its name with the project folder on the path. Paths are written relative to the
reproducer's folder when both lie in the project folder, else absolute."""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from normcheck.user.spec import SpecError, parse_spec

ATTRIBUTE = '''\
def attribute(module, name):
    """``name`` (possibly dotted) inside ``module``."""
    obj = module
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj
'''

LOAD_FILE = '''\
def load_file(path, name):
    """``name`` from the Python file at ``path`` (relative to this script's folder), imported as
    normcheck imports it: as part of its package when its folder is one."""
    path = (Path(__file__).parent / path).resolve()
    root, parts = path.parent, [path.stem]
    while (root / "__init__.py").is_file():
        parts.insert(0, root.name)
        root = root.parent
    sys.path.append(str(root))
    if len(parts) > 1:
        return attribute(importlib.import_module(".".join(parts)), name)
    module_name = path.stem if path.stem not in sys.modules else f"repro_impl_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return attribute(module, name)
'''

LOAD_MODULE = '''\
def load_module(project, module, name):
    """``name`` from the module named ``module``, the project folder (relative to this script's
    folder) on the path after everything else, as normcheck puts the current folder."""
    sys.path.append(str((Path(__file__).parent / project).resolve()))
    return attribute(importlib.import_module(module), name)
'''


# (import lines, code defining IMPL and BACKWARD)
Loader = tuple[tuple[str, ...], str]


@dataclass(frozen=True)
class Location:
    """Where an implementation is: a file (``target`` a path) or a module (``target`` a dotted name)."""

    is_path: bool
    target: str
    attr: str


def locate(value: Any) -> Location | str:
    """Where ``value`` (a SPEC string, or the object the Python API was given) is, or why a
    script cannot import it."""
    if isinstance(value, str):
        try:
            spec = parse_spec(value)
        except SpecError as e:
            return str(e)
        return Location(spec.is_path, spec.target, spec.attr)
    qualname = getattr(value, "__qualname__", None)
    if qualname is None or "<locals>" in qualname or "<lambda>" in qualname:
        return f"{qualname or type(value).__name__} is not defined at the top level of a module"
    if getattr(value, "__module__", None) == "__main__":
        return f"{qualname} is defined in the running script (__main__), which a reproducer cannot import"
    try:
        path = inspect.getfile(value)
    except TypeError:
        return f"{qualname} has no source file"
    return Location(True, path, qualname)


def _written_path(path: Path, directory: Path, project: Path) -> str:
    """``path`` as the script names it: relative to ``directory`` when both are in ``project``."""
    inside = all(p.is_relative_to(project) for p in (path, directory))
    return os.path.relpath(path, directory) if inside else str(path)


def loader(impl: Any, backward: Any, directory: Path, project: Path) -> Loader | str:
    """The lines defining ``IMPL`` (and ``BACKWARD`` when given), or why a script cannot import them."""
    directory, project = directory.resolve(), project.resolve()
    lines = []
    helpers = [ATTRIBUTE]
    for name, value in (("IMPL", impl), ("BACKWARD", backward)):
        if value is None:
            continue
        where = locate(value)
        if isinstance(where, str):
            return where
        if where.is_path:
            target = _written_path((project / Path(where.target).expanduser()).resolve(), directory, project)
            lines.append(f"{name} = load_file({target!r}, {where.attr!r})")
            helper = LOAD_FILE
        else:
            folder = _written_path(project, directory, project)
            lines.append(f"{name} = load_module({folder!r}, {where.target!r}, {where.attr!r})")
            helper = LOAD_MODULE
        if helper not in helpers:
            helpers.append(helper)
    code = "\n\n\n".join(h.strip("\n") for h in helpers) + "\n\n\n" + "\n".join(lines)
    return ("import importlib", "import importlib.util"), code
