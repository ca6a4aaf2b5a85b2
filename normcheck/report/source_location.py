"""Where a user implementation is defined, found without running it: the file a SPEC names
(``path/to/file.py:NAME`` or ``package.module:NAME``) and the line of NAME's ``def``, ``class`` or
assignment, read with ``ast``.

The user's code is untrusted and runs only in worker processes: nothing here imports it (a
module is looked up on sys.path as files, its parent packages are not imported either), and a
file is only read when it is a regular file of reasonable size.
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MAX_SOURCE_BYTES = 10_000_000  # larger files are not read: no one's norm layer is that long


@dataclass(frozen=True)
class SourceLocation:
    path: Path  # absolute, symlinks resolved
    line: int | None  # 1-based line of the definition; None when the file holds no such name


def locate(spec: str, search_path: Sequence[str] | None = None, cwd: Path | None = None) -> SourceLocation | None:
    """The definition ``spec`` names, or None when its file cannot be found or read.

    A path is taken relative to ``cwd`` (default: the current directory); a module is looked for
    in each folder of ``search_path`` (default: sys.path), then in ``cwd``, as the worker that
    imports it does (it appends the current directory to sys.path).
    """
    from normcheck.user.spec import SpecError, parse_spec

    try:
        parsed = parse_spec(spec)
    except SpecError:
        return None
    here = Path.cwd() if cwd is None else cwd
    if parsed.is_path:
        path: Path | None = _absolute(Path(parsed.target).expanduser(), here)
    else:
        path = module_file(parsed.target, sys.path if search_path is None else search_path, here)
    if path is None:
        return None
    tree = _parse(path)
    if tree is None:
        return None
    return SourceLocation(path, definition_line(tree, parsed.attr))


def module_file(module: str, search_path: Sequence[str], cwd: Path) -> Path | None:
    """The file of the dotted ``module`` (``a/b.py`` or ``a/b/__init__.py``) in the first folder of
    ``search_path`` (then ``cwd``) that has one; None when none does (a compiled or zipped module)."""
    parts = module.split(".")
    if not all(p.isidentifier() for p in parts):
        return None
    folders = [*search_path, str(cwd)]
    for entry in folders:
        folder = _absolute(Path(entry or "."), cwd)  # "" on sys.path: the current directory
        base = folder.joinpath(*parts)
        for candidate in (base.with_name(base.name + ".py"), base / "__init__.py"):
            if _readable(candidate):
                return candidate.resolve()
    return None


def definition_line(tree: ast.Module, attr: str) -> int | None:
    """The line binding ``attr`` (``NAME`` or ``Class.method``) at the top level of ``tree``: the
    ``def``/``class`` line (decorators excluded), an assignment or an import; the last binding
    wins, as when the module runs. For ``Class.method`` not found in the class body (inherited),
    the class's line."""
    body: list[ast.stmt] | None = tree.body
    line = None
    for name in attr.split("."):
        if body is None:
            break
        node = _last_binding(body, name)
        if node is None:
            break
        line = node.lineno
        body = node.body if isinstance(node, ast.ClassDef) else None
    return line


def display_path(path: Path, workspace: str | None, cwd: Path | None = None) -> str:
    """``path`` relative to ``workspace`` (GITHUB_WORKSPACE, the repository root GitHub resolves
    annotation paths against) when inside it, else relative to ``cwd`` when inside that, else
    absolute; with forward slashes."""
    real = Path(os.path.realpath(path))
    for root in (workspace, Path.cwd() if cwd is None else cwd):
        if not root:
            continue
        try:
            return real.relative_to(os.path.realpath(root)).as_posix()
        except ValueError:
            continue
    return real.as_posix()


def _absolute(path: Path, cwd: Path) -> Path:
    return path if path.is_absolute() else cwd / path


def _readable(path: Path) -> bool:
    """A regular file (not a FIFO or a device, which could block or never end) of sane size."""
    try:
        return path.is_file() and path.stat().st_size <= MAX_SOURCE_BYTES
    except OSError:
        return False


def _parse(path: Path) -> ast.Module | None:
    if not _readable(path):
        return None
    try:
        return ast.parse(path.read_bytes(), filename=str(path))  # bytes: the coding cookie applies
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _last_binding(body: list[ast.stmt], name: str) -> ast.stmt | None:
    """The last statement of ``body`` (looking into if/try/with/for/while blocks, not into
    functions or classes) that binds ``name``."""
    found = None
    for node in body:
        if _binds(node, name):
            found = node
        for block in _blocks(node):
            inner = _last_binding(block, name)
            if inner is not None:
                found = inner
    return found


def _blocks(node: ast.stmt) -> list[list[ast.stmt]]:
    if isinstance(node, ast.If | ast.For | ast.AsyncFor | ast.While):
        return [node.body, node.orelse]
    if isinstance(node, ast.With | ast.AsyncWith):
        return [node.body]
    if isinstance(node, ast.Try | ast.TryStar):
        return [node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody]
    return []


def _binds(node: ast.stmt, name: str) -> bool:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return node.name == name
    if isinstance(node, ast.Assign):
        return any(_target_binds(t, name) for t in node.targets)
    if isinstance(node, ast.AnnAssign):  # a bare annotation binds nothing
        return node.value is not None and _target_binds(node.target, name)
    if isinstance(node, ast.Import | ast.ImportFrom):
        return any((alias.asname or alias.name.partition(".")[0]) == name for alias in node.names)
    return False


def _target_binds(target: ast.expr, name: str) -> bool:
    if isinstance(target, ast.Name):
        return target.id == name
    if isinstance(target, ast.Tuple | ast.List):
        return any(_target_binds(t, name) for t in target.elts)
    if isinstance(target, ast.Starred):
        return _target_binds(target.value, name)
    return False
